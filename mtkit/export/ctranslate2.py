"""`mtkit export`: a checkpoint -> a self-contained CTranslate2 folder.

mtkit's Transformer maps one to one onto CTranslate2's `TransformerSpec`:
- embeddings scaled by sqrt(d_model); sinusoidal positions written out as a table, because
  mtkit interleaves sin/cos (PE[:, 0::2] = sin, PE[:, 1::2] = cos) where CTranslate2's own
  table is [sin | cos] halves;
- each residual's LayerNorm (eps 1e-5) becomes the sublayer's `layer_norm`: applied before the
  sublayer for pre-norm, after the residual sum for post-norm; pre-norm stacks add the final
  encoder/decoder norms;
- q/k/v projections are fused (self-attention: [q; k; v], cross-attention: q and [k; v]);
- shared or tied matrices are stored once (CTranslate2 aliases equal variables).
Settings without an equivalent raise ExportError naming the setting.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, cast

import numpy as np
import yaml
from torch import Tensor, nn

import mtkit
from mtkit.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint
from mtkit.config.convert import changed_fields
from mtkit.config.load import config_to_dict
from mtkit.config.schema import ExperimentConfig, ModelConfig
from mtkit.data.tokenizer import TokenizerPair
from mtkit.errors import MtkitError
from mtkit.model.layers import DecoderLayer, EncoderLayer, MultiHeadAttention, Residual
from mtkit.model.transformer import Transformer
from mtkit.progress import QUIET, Progress
from mtkit.translation.ctranslate2_engine import (
    EXPORT_CONFIG,
    EXPORT_VERSION,
    SPECIAL_PIECES,
    ExportError,
    is_export,
    require_ctranslate2,
    vocabulary,
)
from mtkit.translation.restore import restore

logger = logging.getLogger(__name__)

LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default, used by every mtkit norm
SUPPORTED = {"norm": ("pre", "post"), "activation": ("relu", "gelu")}
# ModelConfig fields the converter understands; any other field must keep its default.
KNOWN_FIELDS = frozenset({
    "d_model", "n_heads", "encoder_layers", "decoder_layers", "d_ff", "dropout",
    "attention_dropout", "activation_dropout", "activation", "norm", "share_embeddings",
    "tie_output", "max_positions", "word_dropout",
})  # fmt: skip
QUANTIZATIONS = ("float32", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16",
                 "float16", "bfloat16")  # fmt: skip


def check_supported(cfg: ModelConfig) -> None:
    """Raise ExportError naming the first model setting CTranslate2 cannot run."""
    for name, allowed in SUPPORTED.items():
        value = getattr(cfg, name)
        if value not in allowed:
            raise ExportError(
                f"model.{name}={value!r} cannot be exported to CTranslate2 "
                f"(supported: {', '.join(allowed)})"
            )
    if changed := changed_fields(cfg, KNOWN_FIELDS):
        name, value, default = changed[0]
        raise ExportError(
            f"model.{name}={value!r} cannot be exported to CTranslate2 "
            f"(the exporter supports only its default, {default!r})"
        )


# --------------------------------------------------------------------------- weights


class _Weights:
    """Copies parameters into spec fields and remembers which ones it used."""

    def __init__(self) -> None:
        self.used: set[int] = set()

    def array(self, *tensors: Tensor) -> np.ndarray:
        """float32 numpy copy; several tensors are concatenated on dim 0 (fused projections)."""
        self.used.update(id(t) for t in tensors)
        arrays = [t.detach().float().cpu().numpy() for t in tensors]
        return np.ascontiguousarray(np.concatenate(arrays) if len(arrays) > 1 else arrays[0])

    def linear(self, spec: Any, *layers: nn.Linear) -> None:
        spec.weight = self.array(*(layer.weight for layer in layers))
        biases = [layer.bias for layer in layers]
        if all(b is not None for b in biases):
            spec.bias = self.array(*(b for b in biases if b is not None))
        elif any(b is not None for b in biases):
            raise ExportError("fused q/k/v projections must all have biases or none")

    def norm(self, spec: Any, norm: nn.Module) -> None:
        if not isinstance(norm, nn.LayerNorm) or norm.eps != LAYER_NORM_EPS:
            raise ExportError(
                f"unsupported normalisation layer {norm!r} (need LayerNorm, eps 1e-5)"
            )
        spec.gamma = self.array(norm.weight)
        spec.beta = self.array(norm.bias)

    def attention(
        self, spec: Any, attn: MultiHeadAttention, residual: Residual, *, self_attention: bool
    ) -> None:
        if self_attention:  # linear: [q; k; v], out
            self.linear(spec.linear[0], attn.q_proj, attn.k_proj, attn.v_proj)
        else:  # linear: q, [k; v], out
            self.linear(spec.linear[0], attn.q_proj)
            self.linear(spec.linear[1], attn.k_proj, attn.v_proj)
        self.linear(spec.linear[-1], attn.out_proj)
        self.norm(spec.layer_norm, residual.norm)

    def feed_forward(self, spec: Any, layer: EncoderLayer | DecoderLayer) -> None:
        self.linear(spec.linear_0, layer.ff.fc1)
        self.linear(spec.linear_1, layer.ff.fc2)
        self.norm(spec.layer_norm, layer.res_ff.norm)


def build_spec(model: Transformer, ct2: Any) -> Any:
    """A filled `ctranslate2.specs.TransformerSpec` holding `model`'s weights."""
    cfg = model.cfg
    check_supported(cfg)
    specs = ct2.specs
    act = specs.Activation.GELU if cfg.activation == "gelu" else specs.Activation.RELU
    spec = specs.TransformerSpec.from_config(
        (cfg.encoder_layers, cfg.decoder_layers), cfg.n_heads, pre_norm=cfg.norm == "pre",
        activation=act,
    )  # fmt: skip
    w = _Weights()
    positions = model.pe.float().cpu().numpy()  # (max_positions, d_model), mtkit's interleaving
    enc, dec = spec.encoder, spec.decoder
    enc.embeddings[0].weight = w.array(model.src_embed.weight)
    enc.position_encodings.encodings = positions
    for layer_spec, module in zip(enc.layer, model.encoder, strict=True):
        layer = cast(EncoderLayer, module)
        w.attention(layer_spec.self_attention, layer.self_attn, layer.res_attn, self_attention=True)
        w.feed_forward(layer_spec.ffn, layer)
    dec.embeddings.weight = w.array(model.tgt_embed.weight)
    dec.position_encodings.encodings = positions
    for layer_spec, module in zip(dec.layer, model.decoder, strict=True):
        d = cast(DecoderLayer, module)
        w.attention(layer_spec.self_attention, d.self_attn, d.res_self, self_attention=True)
        w.attention(layer_spec.attention, d.cross_attn, d.res_cross, self_attention=False)
        w.feed_forward(layer_spec.ffn, d)
    if cfg.norm == "pre":
        w.norm(enc.layer_norm, model.encoder_norm)
        w.norm(dec.layer_norm, model.decoder_norm)
    w.linear(dec.projection, model.out_proj)
    unused = [name for name, p in model.named_parameters() if id(p) not in w.used]
    if unused:
        raise ExportError(
            f"the CTranslate2 exporter does not map these weights: {', '.join(unused)}"
        )
    spec.config.layer_norm_epsilon = LAYER_NORM_EPS
    spec.config.add_source_eos = True  # mtkit sources end with EOS; decoding starts from BOS
    spec.config.unk_token, spec.config.bos_token, spec.config.eos_token = SPECIAL_PIECES[1:]
    spec.config.decoder_start_token = SPECIAL_PIECES[2]
    return spec


def register_vocabularies(spec: Any, tokenizers: TokenizerPair) -> None:
    """Source and target token strings (sentencepiece pieces, specials renamed)."""
    for side, tok in (("source", tokenizers.src), ("target", tokenizers.tgt)):
        tokens = vocabulary(tok)
        if len(set(tokens)) != len(tokens):
            raise ExportError(
                f"{tok.name}: a piece repeats one of {', '.join(SPECIAL_PIECES)}; CTranslate2 "
                "needs unique token strings"
            )
        if side == "source":
            spec.register_source_vocabulary(tokens)
        else:
            spec.register_target_vocabulary(tokens)


# --------------------------------------------------------------------------- export


def export_ctranslate2(
    run: Path,
    output: Path,
    *,
    quantization: str | None = None,
    force: bool = False,
    progress: Progress = QUIET,
) -> Path:
    """Write `output`/: CTranslate2 model, sentencepiece model(s), mtkit_export.yaml.

    `progress` counts its steps: read the checkpoint, convert, quantize, save.
    """
    quantization = quantization or "float32"
    if quantization not in QUANTIZATIONS:
        raise ExportError(
            f"--quantization: expected one of {', '.join(QUANTIZATIONS)}, got {quantization!r}"
        )
    ct2 = require_ctranslate2()
    _check_output(output, force)
    ckpt = resolve_checkpoint(Path(run))
    with progress.task("exporting to CTranslate2", total=4, unit="steps") as task:
        state = load_checkpoint(ckpt)  # its errors already name the file
        try:
            cfg, tokenizers, model = restore(state)
        except MtkitError as e:  # one line naming the file, as Translator.load does
            raise CheckpointError(f"{ckpt}: {e}") from None
        task.advance()
        spec = build_spec(model.eval(), ct2)
        register_vocabularies(spec, tokenizers)
        spec.validate()
        task.advance()
        spec.optimize(quantization=quantization)
        task.advance()
        _save(spec, tokenizers, _export_info(ckpt, cfg, tokenizers, quantization, ct2), output)
        task.advance()
    logger.info("exported %s to %s (CTranslate2, %s)", ckpt, output, quantization)
    return output


def _export_info(
    ckpt: Path, cfg: ExperimentConfig, tokenizers: TokenizerPair, quantization: str, ct2: Any
) -> dict[str, Any]:
    """What mtkit_export.yaml says: versions, source checkpoint, languages, decoding, config."""
    return {
        "format": "ctranslate2",
        "export_version": EXPORT_VERSION,
        "quantization": quantization,
        "mtkit_version": mtkit.__version__,
        "ctranslate2_version": ct2.__version__,
        "exported_from": str(ckpt),
        "src_lang": cfg.data.src_lang,
        "tgt_lang": cfg.data.tgt_lang,
        "tokenizer": sorted(tokenizers.model_files()),
        "decoding": dataclasses.asdict(cfg.decoding),  # defaults for translate/evaluate
        "experiment": config_to_dict(cfg),  # the run's resolved config
    }


def _save(spec: Any, tokenizers: TokenizerPair, info: dict[str, Any], output: Path) -> None:
    """Write the export into a temporary folder beside `output`, then rename it into place."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        spec.save(str(tmp))
        tokenizers.save(tmp)
        text = yaml.safe_dump(info, sort_keys=False, allow_unicode=True)
        (tmp / EXPORT_CONFIG).write_text(text, encoding="utf-8")
        if output.exists():
            shutil.rmtree(output)
        tmp.rename(output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_output(output: Path, force: bool) -> None:
    """Refuse to overwrite anything but an empty folder, or an earlier export with --force."""
    if not output.exists() or (output.is_dir() and not any(output.iterdir())):
        return
    if force and is_export(output):
        return
    what = "an earlier export; pass --force to replace it" if is_export(output) else "not empty"
    raise ExportError(f"{output}: output folder exists and is {what}")
