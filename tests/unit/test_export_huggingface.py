"""Hugging Face export: the Transformers model computes mtkit's logits and searches alike.

Every supported configuration (pre/post norm, relu/gelu, shared/separate embeddings and
vocabularies, tied/untied output) is exported, loaded back with `from_pretrained` (offline) and
compared: tokenizer ids, logits within 1e-4, and `generate()` outputs token for token against
mtkit's greedy and beam search (average and raw length normalisation, the two Transformers
computes; mtkit's per-sentence max length passed as benchmarks/compare_hf.py does).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from benchmarks.compare_hf import hf_search, max_logit_diff, mtkit_search
from mtkit.cli.main import app
from mtkit.config.schema import DecodingConfig
from mtkit.data.tokenizer import EOS_ID, TokenizerPair, train_tokenizers
from mtkit.export.hf_weights import ARCHITECTURES, UnsupportedExport, check_supported
from mtkit.export.huggingface import (
    INSTALL_HINT,
    export_huggingface,
    generation_settings,
    is_hf_export,
)
from mtkit.model.transformer import Transformer
from mtkit.translation.translator import Translator
from tests.tiny_checkpoint import write_tiny_run
from tests.unit.test_export import experiment, random_model, save_run, short_pairs

needs_transformers = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None,
    reason=f"transformers is not installed ({INSTALL_HINT})",
)
pytestmark = [
    # MarianTokenizer asks for sacremoses, which it uses for nothing mtkit's models need;
    # transformers 4.40 warns when greedy generate() meets the export's beam defaults.
    pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses:UserWarning"),
    pytest.mark.filterwarnings("ignore:.num_beams. is set to 1:UserWarning"),
]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Hub is never needed: exports load from their folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, TokenizerPair]:
    """Joint (True) and separate (False) sentencepiece models, 300 pieces each."""
    src, tgt = short_pairs(2000)
    out: dict[bool, TokenizerPair] = {}
    for joint in (True, False):
        directory = tmp_path_factory.mktemp(f"hf_spm_joint_{joint}")
        out[joint] = train_tokenizers(src, tgt, directory, experiment(joint).tokenizer, "en",
                                      "de", seed=1)  # fmt: skip
    return out


def eos_prone(model: Transformer) -> Transformer:
    """Soften the logits and tilt them towards EOS, so outputs end at mixed lengths (random
    weights otherwise run every hypothesis to the max length)."""
    final = model.decoder_norm if model.cfg.norm == "pre" else model.decoder[-1].res_ff.norm
    assert isinstance(final, torch.nn.LayerNorm)
    eos = model.out_proj.weight[EOS_ID].detach()  # (d_model,)
    with torch.no_grad():
        final.weight.mul_(0.1)
        final.bias.mul_(0.1).add_(eos / eos.dot(eos))  # + 1 on the EOS logit
    return model


def load(folder: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    return AutoTokenizer.from_pretrained(folder), AutoModelForSeq2SeqLM.from_pretrained(folder)


# --------------------------------------------------------------------------- conversion

CONVERSIONS: dict[str, tuple[bool, dict[str, Any]]] = {
    "pre-relu-shared-tied": (True, {"norm": "pre", "activation": "relu"}),
    "pre-gelu-shared-untied": (True, {"norm": "pre", "activation": "gelu", "tie_output": False}),
    "post-gelu-shared-tied": (True, {"norm": "post", "activation": "gelu"}),
    "post-relu-separate-embeddings-untied": (True, {"norm": "post", "share_embeddings": False,
                                                    "tie_output": False}),
    "post-gelu-two-vocabs-tied": (False, {"norm": "post", "activation": "gelu"}),
}  # fmt: skip
BASE = DecodingConfig(max_len_a=0.5, max_len_b=4, precision="float32")  # as transformers runs
SEARCHES = {
    "greedy": dataclasses.replace(BASE, beam_size=1),
    "beam-average": dataclasses.replace(BASE, beam_size=4, length_norm="average"),
    "beam-none": dataclasses.replace(BASE, beam_size=3, length_norm="none"),
}


@needs_transformers
@pytest.mark.parametrize("name", list(CONVERSIONS))
def test_conversion_matches_mtkit(
    name: str, tmp_path: Path, tokenizers: dict[bool, TokenizerPair]
) -> None:
    joint, model_keys = CONVERSIONS[name]
    cfg, tok = experiment(joint, **model_keys), tokenizers[joint]
    lines, refs = short_pairs(24)
    for variant, model in (("plain", random_model(cfg, tok)),
                           ("eos-prone", eos_prone(random_model(cfg, tok, seed=1)))):  # fmt: skip
        ckpt = save_run(tmp_path / f"{variant}.pt", cfg, tok, model)
        tokenizer, hf = load(export_huggingface(ckpt, tmp_path / variant))
        assert type(hf).__name__ == ARCHITECTURES[cfg.model.norm]
        assert hf.config.tie_word_embeddings == cfg.model.tie_output

        src = [[*ids, EOS_ID] for ids in tok.src.encode(lines)]
        assert tokenizer(lines).input_ids == src  # MarianTokenizer appends EOS, as mtkit does
        targets = tokenizer(text_target=refs).input_ids  # the target model and vocabulary
        assert targets == [[*ids, EOS_ID] for ids in tok.tgt.encode(refs)]
        assert max_logit_diff(model, hf, src, tok.tgt.encode(refs)) <= 1e-4, (name, variant)

        translator = Translator.load(ckpt, device="cpu")
        for search, options in SEARCHES.items():
            ours = mtkit_search(translator, lines, options)
            theirs = hf_search(hf, tokenizer, lines, options, cfg.model.max_positions)
            assert ours == theirs, (name, variant, search)
        texts = tokenizer.batch_decode(hf_search(hf, tokenizer, lines, SEARCHES["greedy"], 64),
                                       skip_special_tokens=True)  # fmt: skip
        assert texts == translator.translate(lines, SEARCHES["greedy"])


def test_unsupported_settings_are_named() -> None:
    base = experiment().model
    with pytest.raises(UnsupportedExport, match=r"model.share_embeddings=False .*model.norm='pre'"):
        check_supported(dataclasses.replace(base, norm="pre", share_embeddings=False))
    with pytest.raises(UnsupportedExport, match=r"model.activation='swiglu'.*relu, gelu"):
        check_supported(dataclasses.replace(base, activation="swiglu"))  # type: ignore[arg-type]
    with pytest.raises(UnsupportedExport, match=r"model.norm='sandwich'"):
        check_supported(dataclasses.replace(base, norm="sandwich"))  # type: ignore[arg-type]
    future = dataclasses.make_dataclass("Future", [("rotary", bool, False)], bases=(type(base),))
    check_supported(future())  # a setting the exporter does not know, left at its default
    with pytest.raises(UnsupportedExport, match=r"model.rotary=True"):
        check_supported(future(rotary=True))


def test_generation_settings_follow_the_decoding_section() -> None:
    beam = generation_settings(DecodingConfig(beam_size=5, length_norm="average"), 128)
    assert beam["num_beams"] == 5 and beam["length_penalty"] == 1.0
    assert beam["early_stopping"] == "never"  # mtkit's exact stopping rule
    fast = generation_settings(DecodingConfig(beam_size=5, early_stopping="heuristic"), 128)
    assert fast["early_stopping"] is False  # Transformers' heuristic: the same rule
    assert beam["decoder_start_token_id"] == 2 and beam["eos_token_id"] == 3
    assert beam["forced_eos_token_id"] == 3 and beam["suppress_tokens"] == [0, 2]
    assert beam["max_new_tokens"] == 128
    none = generation_settings(DecodingConfig(length_norm="none", min_len=2, no_repeat_ngram=3), 64)
    assert none["length_penalty"] == 0.0
    assert none["min_new_tokens"] == 2 and none["no_repeat_ngram_size"] == 3
    greedy = generation_settings(DecodingConfig(beam_size=1), 64)
    assert greedy["num_beams"] == 1 and greedy["early_stopping"] is False
    sampling = generation_settings(DecodingConfig(sampling=True, top_k=10, temperature=0.7), 64)
    assert sampling["do_sample"] and sampling["top_k"] == 10 and sampling["temperature"] == 0.7


# --------------------------------------------------------------------------- the folder


@needs_transformers
def test_export_folder_and_model_card(
    tmp_path: Path, tokenizers: dict[bool, TokenizerPair]
) -> None:
    cfg, tok = experiment(False, norm="post"), tokenizers[False]
    run = tmp_path / "run"
    run.mkdir()
    save_run(run / "best.pt", cfg, tok, random_model(cfg, tok))
    valid = {"kind": "valid", "step": 700, "loss": 2.5, "bleu": 21.25, "chrf": 48.5, "best": True}
    (run / "metrics.jsonl").write_text(json.dumps(valid) + "\n{truncated\n", encoding="utf-8")
    out = export_huggingface(run, tmp_path / "hf")
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "README.md",
            "source.spm", "target.spm", "vocab.json", "target_vocab.json",
            "tokenizer_config.json"} <= files  # fmt: skip
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "language:\n- en\n- de" in card and "MarianMTModel" in card
    assert "bleu 21.25" in card and "nrefs:1|case:mixed|eff:no|tok:13a" in card
    assert "separate vocabulary" in card and "parameters" in card
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["num_beams"] == cfg.decoding.beam_size


@needs_transformers
def test_a_failed_export_leaves_the_folder_as_it_was(
    tmp_path: Path, tokenizers: dict[bool, TokenizerPair], monkeypatch: pytest.MonkeyPatch
) -> None:
    import mtkit.export.huggingface as hf_export

    cfg, tok = experiment(), tokenizers[True]
    ckpt = save_run(tmp_path / "m.pt", cfg, tok, random_model(cfg, tok))
    out = export_huggingface(ckpt, tmp_path / "hf")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hf_export, "write_tokenizer", broken)
    for target in (tmp_path / "new", out):
        with pytest.raises(OSError):
            export_huggingface(ckpt, target, overwrite=True)
    assert not (tmp_path / "new").exists()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "m.pt"]  # no temp folders


# --------------------------------------------------------------------------- command line


def test_export_without_transformers_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = write_tiny_run(tmp_path / "run")
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    args = ["export", str(run), "--format", "huggingface", "-o", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: Hugging Face Transformers is not installed; install it with: {INSTALL_HINT}"
    ]
    assert not (tmp_path / "out").exists()


@needs_transformers
def test_cli_refusals_are_one_line_exit_2(
    tmp_path: Path, tokenizers: dict[bool, TokenizerPair]
) -> None:
    runner = CliRunner()
    cfg = experiment(False, norm="pre", share_embeddings=False)
    ckpt = save_run(tmp_path / "pre.pt", cfg, tokenizers[False],
                    random_model(cfg, tokenizers[False]))  # fmt: skip
    out = tmp_path / "out"
    cases = {
        "model.share_embeddings=False": [str(ckpt)],
        "--quantization applies to --format ctranslate2 only": [str(ckpt), "--quantization",
                                                                "int8"],
    }  # fmt: skip
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    cases["is not empty"] = [str(ckpt), "-o", str(tmp_path / "full"), "--overwrite"]
    cases["is a file, not a folder"] = [str(ckpt), "-o", str(tmp_path / "full" / "notes.txt")]
    for expected, given in cases.items():
        output = [] if "-o" in given else ["-o", str(out)]
        result = runner.invoke(app, ["export", *given, "--format", "huggingface", *output])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]
    assert not out.exists() and (tmp_path / "full" / "notes.txt").read_text() == "mine"


@needs_transformers
def test_cli_export_loads_with_transformers_and_translates_like_mtkit(tmp_path: Path) -> None:
    """mtkit export -> AutoTokenizer / AutoModelForSeq2SeqLM (offline) -> mtkit's output."""
    run = write_tiny_run(tmp_path / "run")  # decoding: beam 2, max length 4 for every line
    out = tmp_path / "hf"
    runner = CliRunner()
    args = ["export", str(run), "--format", "huggingface", "-o", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert is_hf_export(out) and f"exported to {out}" in result.output
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "--overwrite" in result.output
    result = runner.invoke(app, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output

    lines = ["the cat sees a dog", "a big red house walks", "green tree"]
    src, hyp = tmp_path / "src.en", tmp_path / "hyp.de"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = runner.invoke(app, ["translate", str(run), "-i", str(src), "-o", str(hyp), "--greedy"])
    assert result.exit_code == 0, result.output
    tokenizer, model = load(out)
    batch = tokenizer(lines, return_tensors="pt", padding=True)
    # the tiny run allows 4 tokens for every line; the export forces EOS after them, as mtkit
    greedy = model.generate(**batch, num_beams=1, max_new_tokens=5)  # (3, 1 + 4 + 1)
    expected = hyp.read_text(encoding="utf-8").splitlines()
    assert tokenizer.batch_decode(greedy, skip_special_tokens=True) == expected
    default = model.generate(**batch)  # generation_config.json: the run's beam of 2
    assert default.shape[0] == len(lines) and bool((default[:, 0] == 2).all())


@needs_transformers
@pytest.mark.skipif(
    importlib.util.find_spec("transformers") is not None
    and int(importlib.import_module("transformers").__version__.split(".")[0]) >= 5,
    reason="transformers 5 removed the translation pipeline",
)
def test_translation_pipeline(tmp_path: Path) -> None:
    from transformers import pipeline

    run = write_tiny_run(tmp_path / "run")
    out = export_huggingface(run, tmp_path / "hf")
    lines = ["the cat sees a dog", "green tree"]
    translator = pipeline("translation", model=str(out))  # type: ignore[call-overload]
    found = [r["translation_text"] for r in translator(lines, num_beams=1, max_new_tokens=5)]
    options = dataclasses.replace(Translator.load(run, device="cpu").config.decoding, beam_size=1)
    assert found == Translator.load(run, device="cpu").translate(lines, options)
