"""`mtkit export --format huggingface`: a checkpoint -> a folder `from_pretrained` loads.

The folder holds `config.json` + `model.safetensors` (MarianMTModel for post-norm runs,
PegasusForConditionalGeneration for pre-norm ones; see hf_weights), `generation_config.json`
with the run's decoding defaults, a `MarianTokenizer` over mtkit's own sentencepiece model(s)
(`source.spm`, `target.spm`, `vocab.json`, `tokenizer_config.json`), and a model card
(`README.md`). It is written into a temporary folder beside the output and renamed into place.
"""

from __future__ import annotations

import importlib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import mtkit
from mtkit.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint
from mtkit.config.schema import DecodingConfig, ExperimentConfig
from mtkit.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer, TokenizerPair
from mtkit.errors import MtkitError
from mtkit.export.hf_card import CardFacts, model_card
from mtkit.export.hf_weights import (
    ARCHITECTURES,
    UnsupportedExport,
    build_hf_model,
    check_supported,
)
from mtkit.files import fsync_dir, new_file_mode
from mtkit.model.masks import pad_mask
from mtkit.model.transformer import Transformer, num_parameters
from mtkit.search.strategy import uses_beam
from mtkit.translation.ctranslate2_engine import ExportError, vocabulary
from mtkit.translation.restore import restore

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'mtkit[hf]' (or: pip install transformers safetensors)"
MAX_LOGIT_DIFF = 1e-3  # the export refuses to write a model further than this from mtkit's
EXPORT_FILES = ("config.json", "model.safetensors")  # what marks an earlier export
# GNMT's penalty is approximated by length ** exponent with its slope at this many tokens. The
# best length is the typical output length: on Multi30k test2016 (outputs of 11.5 pieces on
# average, alpha 1.4) beam-5 outputs identical to mtkit's were 63% with the exponent alpha, 89%
# with the slope at 20 tokens, 93% at 15, 95% at 12.
GNMT_REFERENCE_LENGTH = 15


def require_transformers() -> Any:
    """The `transformers` module, or an ExportError saying how to install it."""
    try:
        return importlib.import_module("transformers")
    except ImportError:
        raise ExportError(
            f"Hugging Face Transformers is not installed; install it with: {INSTALL_HINT}"
        ) from None


def is_hf_export(path: Path) -> bool:
    """True for a folder that looks like an earlier `mtkit export --format huggingface`."""
    return all((Path(path) / name).is_file() for name in EXPORT_FILES)


def check_output(output: Path, overwrite: bool) -> None:
    """Refuse anything but a missing or empty folder, or an earlier export with --overwrite."""
    if not output.exists() or (output.is_dir() and not any(output.iterdir())):
        return
    if output.is_dir() and overwrite and is_hf_export(output):
        return
    if not output.is_dir():
        what = "is a file, not a folder"
    elif is_hf_export(output):
        what = "holds an earlier export; pass --overwrite to replace it"
    else:
        what = "is not empty (--overwrite replaces only an earlier Hugging Face export)"
    raise UnsupportedExport(f"{output}: output folder exists and {what}")


# --------------------------------------------------------------------------- pieces


def hf_length_penalty(options: DecodingConfig) -> float:
    """Transformers' exponent on the length for mtkit's length normalisation.

    average -> 1.0 and none -> 0.0 are exact. GNMT, ((5 + len) / 6) ** alpha, has no
    Transformers equivalent; len ** (alpha * L / (5 + L)) with L = GNMT_REFERENCE_LENGTH
    penalises a change of length near L tokens as GNMT does (the same ranking there, not
    everywhere).
    """
    if options.length_norm == "average":
        return 1.0
    if options.length_norm == "none":
        return 0.0
    factor = GNMT_REFERENCE_LENGTH / (5 + GNMT_REFERENCE_LENGTH)
    return round(float(options.length_penalty) * factor, 4)


def generation_settings(options: DecodingConfig, max_positions: int) -> dict[str, Any]:
    """`generation()` settings for mtkit's decoding `options` (and generation_config.json)."""
    settings: dict[str, Any] = {
        "decoder_start_token_id": BOS_ID, "bos_token_id": BOS_ID, "eos_token_id": EOS_ID,
        "pad_token_id": PAD_ID, "forced_eos_token_id": EOS_ID,  # EOS at the max length
        "suppress_tokens": [PAD_ID, BOS_ID],  # mtkit never generates them
        "max_new_tokens": max_positions,  # mtkit's cap: max_positions - 1 tokens, then EOS
    }  # fmt: skip
    one_path = {"num_beams": 1, "early_stopping": False, "length_penalty": 1.0}  # no beam flags
    if options.sampling:
        settings.update(do_sample=True, temperature=options.temperature, top_k=options.top_k,
                        top_p=options.top_p, **one_path)  # fmt: skip
    elif uses_beam(options):
        settings.update(do_sample=False, num_beams=options.beam_size,
                        early_stopping="never" if options.early_stopping == "exact" else False,
                        length_penalty=hf_length_penalty(options))  # fmt: skip
    else:
        settings.update(do_sample=False, **one_path)
    if options.no_repeat_ngram > 0:
        settings["no_repeat_ngram_size"] = options.no_repeat_ngram
    if options.min_len > 0:
        settings["min_new_tokens"] = options.min_len
    return settings


def piece_ids(tokenizer: Tokenizer) -> dict[str, int]:
    """vocab.json: piece -> id (ids 0-3 named <pad>, <unk>, <s>, </s>)."""
    pieces = vocabulary(tokenizer)
    if len(set(pieces)) != len(pieces):
        raise ExportError(f"{tokenizer.name}: a piece repeats a special token's name")
    return {piece: i for i, piece in enumerate(pieces)}


def write_tokenizer(tokenizers: TokenizerPair, cfg: ExperimentConfig, directory: Path) -> None:
    """MarianTokenizer files: both sentencepiece models, the piece -> id map(s), the config."""
    (directory / "source.spm").write_bytes(tokenizers.src.model_proto())
    (directory / "target.spm").write_bytes(tokenizers.tgt.model_proto())
    maps = {"vocab.json": tokenizers.src}
    if not tokenizers.joint:
        maps["target_vocab.json"] = tokenizers.tgt
    for name, tok in maps.items():
        text = json.dumps(piece_ids(tok), ensure_ascii=False, indent=1)
        (directory / name).write_text(text, encoding="utf-8")
    config = {
        "tokenizer_class": "MarianTokenizer", "source_lang": cfg.data.src_lang,
        "target_lang": cfg.data.tgt_lang, "separate_vocabs": not tokenizers.joint,
        "unk_token": "<unk>", "eos_token": "</s>", "pad_token": "<pad>",
        "model_max_length": cfg.model.max_positions,  # mtkit's source limit, EOS included
        "sp_model_kwargs": {},
    }  # fmt: skip
    text = json.dumps(config, ensure_ascii=False, indent=2) + "\n"
    (directory / "tokenizer_config.json").write_text(text, encoding="utf-8")


def logits_difference(model: Transformer, hf: Any, seed: int = 0) -> float:
    """Largest |logit difference| between mtkit and the converted model on a random batch
    (padded sources and targets, every position compared)."""
    gen = torch.Generator().manual_seed(seed)
    src_vocab, tgt_vocab = model.src_embed.num_embeddings, model.tgt_embed.num_embeddings
    length = min(12, model.max_positions - 1)
    src = torch.randint(4, src_vocab, (3, length), generator=gen)  # (3, src_len)
    tgt = torch.randint(4, tgt_vocab, (3, length), generator=gen)  # (3, tgt_len)
    src[:, -1], tgt[:, 0] = EOS_ID, BOS_ID
    src[1, length // 2 :] = PAD_ID  # a shorter source: padding must not matter
    src[1, length // 2 - 1] = EOS_ID
    with torch.inference_mode():
        ours = model(src, pad_mask(src, PAD_ID), tgt)  # (3, tgt_len, tgt_vocab)
        mask = (src != PAD_ID).long()  # (3, src_len)
        theirs = hf(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits
    return float((ours - theirs).abs().max())


# --------------------------------------------------------------------------- export


def export_huggingface(run: Path, output: Path, *, overwrite: bool = False) -> Path:
    """Write `output`/: a Transformers model, tokenizer, generation config and model card."""
    transformers = require_transformers()
    check_output(output, overwrite)
    ckpt = resolve_checkpoint(Path(run))
    state = load_checkpoint(ckpt)  # its errors already name the file
    try:
        cfg, tokenizers, model = restore(state)
    except MtkitError as e:  # one line naming the file, as Translator.load does
        raise CheckpointError(f"{ckpt}: {e}") from None
    check_supported(cfg.model)
    hf = build_hf_model(model.eval(), transformers)
    diff = logits_difference(model, hf)
    if not diff <= MAX_LOGIT_DIFF:
        raise ExportError(
            f"the converted model's logits differ from mtkit's by {diff:.2e} (more than "
            f"{MAX_LOGIT_DIFF}); nothing was written"
        )
    options = cfg.decoding
    settings = generation_settings(options, cfg.model.max_positions)
    if settings["num_beams"] > 1 and options.length_norm == "gnmt" and options.length_penalty:
        logger.warning(
            "Transformers has no GNMT length penalty: generation_config.json ranks beams by "
            "log-prob / length ** %s instead of / ((5 + length) / 6) ** %s, so some beam "
            "outputs will differ from mtkit's (decoding.length_norm average maps exactly)",
            settings["length_penalty"], options.length_penalty,
        )  # fmt: skip
    hf.generation_config = transformers.GenerationConfig(**settings)
    facts = CardFacts(
        cfg=cfg, architecture=ARCHITECTURES[cfg.model.norm], checkpoint=ckpt,
        train_state=dict(state.get("train_state") or {}), parameters=num_parameters(model),
        vocab=(tokenizers.src.vocab_size, tokenizers.tgt.vocab_size), generation=settings,
        logits_diff=diff,
        versions={"mtkit": mtkit.__version__, "transformers": transformers.__version__},
    )  # fmt: skip
    card = model_card(facts)

    def write(directory: Path) -> None:
        hf.save_pretrained(directory)
        write_tokenizer(tokenizers, cfg, directory)
        (directory / "README.md").write_text(card, encoding="utf-8")

    write_folder(output, write)
    logger.info(
        "exported %s to %s (%s, logits within %.1e of mtkit's)",
        ckpt, output, facts.architecture, diff,
    )  # fmt: skip
    return output


def write_folder(output: Path, write: Callable[[Path], None]) -> None:
    """`write` into a temporary folder beside `output`, then swap it in.

    A failure or interrupt removes the temporary folder and leaves `output` as it was; a
    replaced folder is moved aside first and restored if the final rename fails.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    old = tmp.with_name(f"{tmp.name}.old")
    try:
        write(tmp)
        _public(tmp)
        if output.exists():
            output.rename(old)
        try:
            tmp.rename(output)
        except BaseException:
            if old.exists():
                old.rename(output)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    fsync_dir(output.parent)


def _public(directory: Path) -> None:
    """The permissions a plain mkdir and open would give (mkdtemp makes folders 0o700)."""
    file_mode = new_file_mode(directory / ".no-such-file")  # 0o666 - umask
    for path in directory.iterdir():
        path.chmod(file_mode)
    directory.chmod(file_mode | (file_mode & 0o444) >> 2)  # readable -> also searchable
