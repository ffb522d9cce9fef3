"""CTranslate2 export: the converted model computes what mtkit computes, and searches alike.

Random weights (every parameter perturbed, so a swapped LayerNorm gamma/beta or a misordered
q/k/v shows) check the conversion token by token; a small model trained here for a few hundred
steps checks the search mapping by BLEU (marked slow).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import random
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from mtkit.checkpoint import save_checkpoint
from mtkit.cli.main import app
from mtkit.config.load import config_from_dict, config_to_dict
from mtkit.config.schema import DecodingConfig, ExperimentConfig
from mtkit.data.batching import pad
from mtkit.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, TokenizerPair, train_tokenizers
from mtkit.export.ctranslate2 import build_spec, check_supported, export_ctranslate2
from mtkit.model.masks import pad_mask
from mtkit.model.transformer import Transformer, build_model
from mtkit.translation.ctranslate2_engine import (
    INSTALL_HINT,
    CT2Translator,
    ExportError,
    is_export,
    max_length,
    translate_pieces,
)
from mtkit.translation.translator import Translator
from tests.conftest import DATA

needs_ct2 = pytest.mark.skipif(
    importlib.util.find_spec("ctranslate2") is None,
    reason=f"ctranslate2 is not installed ({INSTALL_HINT})",
)


def short_pairs(n: int, max_words: int = 8) -> tuple[list[str], list[str]]:
    """The first `n` bundled training pairs with at most `max_words` words a side."""
    src = (DATA / "train.en").read_text(encoding="utf-8").splitlines()
    tgt = (DATA / "train.de").read_text(encoding="utf-8").splitlines()
    pairs = [(s, t) for s, t in zip(src, tgt, strict=True) if len(s.split()) <= max_words]
    pairs = [(s, t) for s, t in pairs if len(t.split()) <= max_words][:n]
    return [s for s, _ in pairs], [t for _, t in pairs]


def experiment(joint: bool = True, **model: Any) -> ExperimentConfig:
    raw: dict[str, Any] = {
        "data": {"max_len": 60},
        "tokenizer": {"vocab_size": 300, "joint": joint},
        "model": {
            "d_model": 32, "n_heads": 4, "encoder_layers": 2, "decoder_layers": 2, "d_ff": 64,
            "dropout": 0.0, "max_positions": 64, "share_embeddings": joint, **model,
        },
        "decoding": {"max_len_a": 0.5, "max_len_b": 4, "max_tokens": 500},
    }  # fmt: skip
    return config_from_dict(raw)


def save_run(path: Path, cfg: ExperimentConfig, tok: TokenizerPair, model: Transformer) -> Path:
    """A checkpoint with the keys Translator.load and export read."""
    save_checkpoint(path, {
        "config": config_to_dict(cfg),
        "model": model.state_dict(),
        "vocab": {"src": tok.src.vocab_size, "tgt": tok.tgt.vocab_size},
        "tokenizer": tok.model_files(),
    })  # fmt: skip
    return path


def random_model(cfg: ExperimentConfig, tok: TokenizerPair, seed: int = 0) -> Transformer:
    """Random weights with every parameter perturbed (LayerNorms, biases, the pad row too)."""
    torch.manual_seed(seed)
    model = build_model(cfg, tok.src.vocab_size, tok.tgt.vocab_size)
    with torch.no_grad():
        for p in model.parameters():  # shared tensors appear once, so tying survives
            p.add_(torch.randn_like(p) * 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, TokenizerPair]:
    """Joint (True) and separate (False) sentencepiece models, 300 pieces each."""
    src, tgt = short_pairs(2000)
    out: dict[bool, TokenizerPair] = {}
    for joint in (True, False):
        cfg = experiment(joint).tokenizer
        directory = tmp_path_factory.mktemp(f"spm_joint_{joint}")
        out[joint] = train_tokenizers(src, tgt, directory, cfg, "en", "de", seed=1)
    return out


def reference_log_probs(model: Transformer, src: list[int], tgt: list[int]) -> torch.Tensor:
    """mtkit's teacher-forced log-probs of tgt + EOS given src + EOS."""
    s = torch.tensor([[*src, EOS_ID]])  # (1, src_len)
    t = torch.tensor([[BOS_ID, *tgt]])  # (1, tgt_len)
    with torch.inference_mode():
        lp = model(s, pad_mask(s, PAD_ID), t).log_softmax(dim=-1)[0]  # (tgt_len, vocab)
    gold = torch.tensor([*tgt, EOS_ID])  # (tgt_len,)
    picked: torch.Tensor = lp[torch.arange(len(gold)), gold]  # (tgt_len,)
    return picked


# --------------------------------------------------------------------------- conversion

CONVERSIONS: dict[str, tuple[bool, dict[str, Any]]] = {
    "pre-relu-shared": (True, {"norm": "pre", "activation": "relu"}),
    "post-gelu-shared": (True, {"norm": "post", "activation": "gelu"}),
    "pre-gelu-untied": (True, {"share_embeddings": False, "tie_output": False,
                               "activation": "gelu"}),
    "post-relu-two-vocabs-tied": (False, {"norm": "post", "tie_output": True}),
    "pre-relu-two-vocabs-untied": (False, {"tie_output": False}),
}  # fmt: skip


@needs_ct2
@pytest.mark.parametrize("name", list(CONVERSIONS))
def test_conversion_matches_mtkit(
    name: str, tmp_path: Path, tokenizers: dict[bool, TokenizerPair]
) -> None:
    import ctranslate2

    joint, model_keys = CONVERSIONS[name]
    cfg, tok = experiment(joint, **model_keys), tokenizers[joint]
    model = random_model(cfg, tok)
    out = export_ctranslate2(save_run(tmp_path / "m.pt", cfg, tok, model), tmp_path / "ct2")
    vocab_files = ["shared_vocabulary.json"] if joint else ["source_vocabulary.json"]
    assert all((out / f).is_file() for f in vocab_files)

    # 1) token log-probs of reference translations (teacher forcing) agree
    src, tgt = short_pairs(8)
    engine = ctranslate2.Translator(str(out), device="cpu", intra_threads=1)
    scored = engine.score_batch(tok.src.encode_pieces(src), tok.tgt.encode_pieces(tgt))
    for s, t, result in zip(tok.src.encode(src), tok.tgt.encode(tgt), scored, strict=True):
        expected = reference_log_probs(model, s, t)
        assert torch.allclose(torch.tensor(result.log_probs), expected, atol=1e-4), name

    # 2) greedy search picks the same tokens
    lines = short_pairs(30)[0]
    # float32 on both sides (precision auto would pick bf16 on a CPU with native bf16)
    options = DecodingConfig(beam_size=1, max_len_a=0.5, max_len_b=4, precision="float32")
    ours = Translator.load(tmp_path / "m.pt", device="cpu").translate(lines, options)
    theirs = CT2Translator.load(out, device="cpu", threads=1).translate(lines, options)
    assert sum(a == b for a, b in zip(ours, theirs, strict=True)) >= 0.95 * len(lines)


@needs_ct2
def test_beam_and_options_follow_mtkit(
    tmp_path: Path, tokenizers: dict[bool, TokenizerPair]
) -> None:
    """Per-sentence max lengths, min length, n-best order; the best beams mostly agree."""
    cfg, tok = experiment(), tokenizers[True]
    model = random_model(cfg, tok, seed=1)
    out = export_ctranslate2(save_run(tmp_path / "m.pt", cfg, tok, model), tmp_path / "ct2")
    ours = Translator.load(tmp_path / "m.pt", device="cpu")
    theirs = CT2Translator.load(out, device="cpu", threads=1)
    options = dataclasses.replace(
        ours.config.decoding, beam_size=4, nbest=3, min_len=2, precision="float32"
    )
    sources = tok.src.encode_pieces(short_pairs(20)[0])
    found = translate_pieces(theirs.engine, sources, options, max_positions=64)
    for src, hyps in zip(sources, found, strict=True):
        limit = max_length(len(src) + 1, options, 64)
        assert len(hyps) == 3 and all(2 <= len(tokens) <= limit for tokens, _ in hyps)
        assert [score for _, score in hyps] == sorted((score for _, score in hyps), reverse=True)

    lines = ["", *short_pairs(20)[0], "   "]
    a, b = ours.translate_full(lines, options), theirs.translate_full(lines, options)
    assert b[0].nbest == [] and b[-1].nbest == [] and b[0].text == ""
    agree = sum(x.text == y.text for x, y in zip(a, b, strict=True))
    assert agree >= 0.8 * len(lines)  # random weights hit the max length, where beams may differ


def test_unsupported_settings_are_named() -> None:
    with pytest.raises(ExportError, match=r"model.activation='swiglu'.*supported: relu, gelu"):
        check_supported(dataclasses.replace(experiment().model, activation="swiglu"))  # type: ignore[arg-type]
    with pytest.raises(ExportError, match=r"model.norm='sandwich'"):
        check_supported(dataclasses.replace(experiment().model, norm="sandwich"))  # type: ignore[arg-type]
    base = type(experiment().model)
    future = dataclasses.make_dataclass("Future", [("rotary", bool, False)], bases=(base,))
    check_supported(future())  # a setting the exporter does not know, left at its default
    with pytest.raises(ExportError, match=r"model.rotary=True"):
        check_supported(future(rotary=True))


@needs_ct2
def test_unmapped_weights_are_named(tokenizers: dict[bool, TokenizerPair]) -> None:
    import ctranslate2

    model = random_model(experiment(), tokenizers[True])
    model.gate = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ExportError, match="does not map these weights: gate"):
        build_spec(model, ctranslate2)


# --------------------------------------------------------------------------- command line


def test_export_without_ctranslate2_says_how_to_install(
    tmp_path: Path, tokenizers: dict[bool, TokenizerPair], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, tok = experiment(), tokenizers[True]
    ckpt = save_run(tmp_path / "m.pt", cfg, tok, random_model(cfg, tok))
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # import ctranslate2 -> ImportError
    result = CliRunner().invoke(app, ["export", str(ckpt), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: CTranslate2 is not installed; install it with: {INSTALL_HINT}"
    ]
    assert not (tmp_path / "out").exists()


@needs_ct2
def test_export_of_a_corrupt_checkpoint_names_it_once(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 not really a checkpoint" * 20)
    result = CliRunner().invoke(app, ["export", str(bad), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: ")
    assert lines[0].count(str(bad)) == 1
    assert not (tmp_path / "out").exists()


@needs_ct2
def test_cli_export_translate_evaluate(
    tmp_path: Path, tokenizers: dict[bool, TokenizerPair]
) -> None:
    cfg, tok = experiment(), tokenizers[True]
    ckpt = save_run(tmp_path / "m.pt", cfg, tok, random_model(cfg, tok))
    src, ref = tmp_path / "src.en", tmp_path / "ref.de"
    src_lines, ref_lines = short_pairs(12)
    src.write_text("\n".join(src_lines) + "\n", encoding="utf-8")
    ref.write_text("\n".join(ref_lines) + "\n", encoding="utf-8")
    out = tmp_path / "exported"
    runner = CliRunner()

    result = runner.invoke(app, ["export", str(ckpt), "--format", "ctranslate2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert is_export(out)
    result = runner.invoke(app, ["export", str(ckpt), "-o", str(out)])
    assert result.exit_code == 1 and "--force" in result.output
    result = runner.invoke(app, ["export", str(ckpt), "-o", str(out), "--quantization", "int4"])
    assert result.exit_code == 1 and "--quantization: expected one of" in result.output
    result = runner.invoke(app, ["export", str(ckpt), "-o", str(out), "--force"])
    assert result.exit_code == 0, result.output

    for engine, path in (("mtkit", ckpt), ("ct2", out)):
        hyp = tmp_path / f"{engine}.de"
        args = ["translate", str(path), "-i", str(src), "-o", str(hyp), "--greedy"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    assert (tmp_path / "ct2.de").read_text() == (tmp_path / "mtkit.de").read_text()

    args = ["evaluate", str(out), "--src", str(src), "--ref", str(ref), "--beam", "2", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert isinstance(report["scores"][0]["score"], float)
    assert (out / "src.model.beam2.lp1.0.hyp.de").is_file()  # next to the export's model.bin


# --------------------------------------------------------------------------- trained model


def train_small(cfg: ExperimentConfig, tok: TokenizerPair, pairs: Any, steps: int) -> Transformer:
    """A few hundred Adam steps of plain cross-entropy on length-sorted batches of 48 pairs."""
    torch.manual_seed(0)
    model = build_model(cfg, tok.src.vocab_size, tok.tgt.vocab_size).train()
    src = [[*ids, EOS_ID] for ids in tok.src.encode(pairs[0])]
    tgt = tok.tgt.encode(pairs[1])
    order = sorted(range(len(src)), key=lambda i: len(src[i]))
    batches = [order[i : i + 48] for i in range(0, len(order), 48)]
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    rng = random.Random(0)
    for _ in range(steps):
        batch = rng.choice(batches)
        s = pad([src[i] for i in batch])  # (batch, src_len)
        t_in = pad([[BOS_ID, *tgt[i]] for i in batch])  # (batch, tgt_len)
        t_out = pad([[*tgt[i], EOS_ID] for i in batch])  # (batch, tgt_len)
        logits = model(s, pad_mask(s, PAD_ID), t_in)  # (batch, tgt_len, vocab)
        loss = F.cross_entropy(logits.flatten(0, 1), t_out.flatten(), ignore_index=PAD_ID)
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    return model.eval()


@needs_ct2
@pytest.mark.slow
def test_trained_model_translates_alike(
    tmp_path: Path, tokenizers: dict[bool, TokenizerPair]
) -> None:
    """Greedy: >= 95% identical sentences; beam 5: BLEU within 0.5; int8: within 1.5 of fp32.

    Scored on 200 of the 2000 training pairs (a model this small only gets those partly right).
    """
    import ctranslate2
    import sacrebleu
    import sentencepiece as spm

    cfg = experiment(encoder_layers=1, decoder_layers=1, d_model=64, d_ff=128)
    tok, pairs = tokenizers[True], short_pairs(2000)
    ckpt = save_run(tmp_path / "m.pt", cfg, tok, train_small(cfg, tok, pairs, steps=250))
    for q in ("float32", "int8"):
        export_ctranslate2(ckpt, tmp_path / q, quantization=q)
    src, ref = pairs[0][:200], pairs[1][:200]
    mtkit = Translator.load(ckpt, device="cpu")
    engines = {
        q: CT2Translator.load(tmp_path / q, device="cpu", threads=1) for q in ("float32", "int8")
    }

    def bleu(hyps: list[str]) -> float:
        return float(sacrebleu.corpus_bleu(hyps, [ref]).score)

    greedy = dataclasses.replace(
        mtkit.config.decoding, beam_size=1, max_len_a=1.5, max_len_b=10, precision="float32"
    )  # float32 like the CTranslate2 export it is compared with
    ours, theirs = (
        mtkit.translate(src, greedy),
        engines["float32"].translate(src, greedy),
    )
    assert sum(a == b for a, b in zip(ours, theirs, strict=True)) >= 0.95 * len(src)

    beam = dataclasses.replace(greedy, beam_size=5)
    scores = {"mtkit": bleu(mtkit.translate(src, beam))}
    scores.update({q: bleu(e.translate(src, beam)) for q, e in engines.items()})
    assert scores["mtkit"] > 1.0, scores  # the model learned something
    assert abs(scores["float32"] - scores["mtkit"]) <= 0.5, scores
    assert abs(scores["int8"] - scores["float32"]) <= 1.5, scores

    # The README's plain CTranslate2 usage gives the greedy translations too.
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "float32" / "spm.model"))
    translator = ctranslate2.Translator(str(tmp_path / "float32"), device="cpu", intra_threads=1)
    results = translator.translate_batch(sp.encode(src[:20], out_type=str), beam_size=1)
    plain = [sp.decode(r.hypotheses[0]) for r in results]
    assert sum(a == b for a, b in zip(plain, theirs[:20], strict=True)) >= 19
