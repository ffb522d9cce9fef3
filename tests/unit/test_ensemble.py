"""Ensembles: averaged probabilities, the KV cache, a model with itself, refusals."""

from __future__ import annotations

import math
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mtkit.cli.main import app
from mtkit.config.schema import DecodingConfig, ModelConfig
from mtkit.data.tokenizer import TokenizerPair, train_tokenizers
from mtkit.model.masks import pad_mask
from mtkit.model.transformer import Transformer
from mtkit.search.beam import beam_search
from mtkit.search.ensemble import Ensemble
from mtkit.search.greedy import greedy_search
from mtkit.translation.ctranslate2_engine import EXPORT_CONFIG, MODEL_FILE
from mtkit.translation.ensemble import load_ensemble
from mtkit.translation.translator import Translator
from tests.tiny_translator import DATA, head, make_translator, save, tiny_config

PAD, BOS, EOS, VOCAB = 0, 1, 2, 20
SENTENCES = ["The cat sleeps.", "I have a red house and a small dog.", "", "Tom is here."]


def model(seed: int, d_model: int = 16, layers: int = 2) -> Transformer:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        d_model=d_model, n_heads=2, encoder_layers=1, decoder_layers=layers, d_ff=32,
        max_positions=48,
    )  # fmt: skip
    return Transformer(cfg, VOCAB, VOCAB, pad_id=PAD).eval()


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    src = torch.randint(3, VOCAB, (3, 5), generator=torch.Generator().manual_seed(0))
    src[1, 3:] = PAD
    return src, pad_mask(src, PAD)


def test_step_log_probs_are_the_log_of_the_mean_probability(
    batch: tuple[torch.Tensor, torch.Tensor],
) -> None:
    a, b = model(0), model(1, d_model=24, layers=1)  # members of different shapes
    ens = Ensemble([a, b])
    src, mask = batch
    tokens = torch.full((3,), BOS)
    with torch.no_grad():
        cache = ens.init_cache(ens.encode(src, mask), mask)
        got = ens.decode_step(tokens, cache)  # (batch, vocab)
        pa = a.decode_step(tokens, a.init_cache(a.encode(src, mask), mask)).softmax(-1)
        pb = b.decode_step(tokens, b.init_cache(b.encode(src, mask), mask)).softmax(-1)
    torch.testing.assert_close(got, ((pa + pb) / 2).log())
    assert cache.position == 1 and len(cache.self_kv) == 3  # 2 + 1 layers, one KV each


@pytest.mark.parametrize("beam", [1, 3])
def test_cached_and_uncached_ensemble_search_agree(
    batch: tuple[torch.Tensor, torch.Tensor], beam: int
) -> None:
    ens = Ensemble([model(0), model(1, d_model=24, layers=1)])
    src, mask = batch
    dec = DecodingConfig(beam_size=beam, max_len_a=0.0, max_len_b=6)  # a short, fixed budget
    run = beam_search if beam > 1 else greedy_search
    cached = run(ens, src, mask, dec, bos_id=BOS, eos_id=EOS, use_cache=True)
    plain = run(ens, src, mask, dec, bos_id=BOS, eos_id=EOS, use_cache=False)
    flat_a = [h for hs in cached for h in (hs if isinstance(hs, list) else [hs])]
    flat_b = [h for hs in plain for h in (hs if isinstance(hs, list) else [hs])]
    assert [h.tokens for h in flat_a] == [h.tokens for h in flat_b]
    for x, y in zip(flat_a, flat_b, strict=True):
        assert math.isclose(x.log_prob, y.log_prob, rel_tol=1e-4, abs_tol=1e-4)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    translator = make_translator(tmp_path_factory.mktemp("run"))
    return save(translator).parent


@pytest.mark.parametrize("beam", [1, 4])
def test_an_ensemble_of_a_model_with_itself_is_that_model(run_dir: Path, beam: int) -> None:
    single = Translator.load(run_dir, device="cpu")
    double = load_ensemble([run_dir, run_dir / "best.pt"], device="cpu")
    assert isinstance(double.model, Ensemble)
    dec = replace(single.config.decoding, beam_size=beam, nbest=min(beam, 2))
    one, two = single.translate_full(SENTENCES, dec), double.translate_full(SENTENCES, dec)
    assert [t.text for t in one] == [t.text for t in two]
    for a, b in zip(one, two, strict=True):
        assert [c.text for c in a.nbest] == [c.text for c in b.nbest]
        for x, y in zip(a.nbest, b.nbest, strict=True):
            assert math.isclose(x.score, y.score, rel_tol=1e-5, abs_tol=1e-5)


def test_the_cli_translates_and_evaluates_with_an_ensemble(run_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.en"
    source.write_text("\n".join(SENTENCES) + "\n")
    single = CliRunner().invoke(app, ["translate", str(run_dir), "-i", str(source), "--greedy"])
    double = CliRunner().invoke(
        app, ["translate", str(run_dir), str(run_dir), "-i", str(source), "--greedy"]
    )
    assert single.exit_code == double.exit_code == 0, double.output
    assert single.stdout == double.stdout
    ref = tmp_path / "ref.de"
    ref.write_text("Die Katze schläft.\nIch habe ein Haus.\n\nTom ist hier.\n")
    report = CliRunner().invoke(
        app, ["evaluate", str(run_dir), str(run_dir), "--src", str(source), "--ref", str(ref),
              "--greedy", "-o", str(tmp_path / "hyp.de")],
    )  # fmt: skip
    assert report.exit_code == 0, report.output
    assert (tmp_path / "hyp.de").read_text() == single.stdout


def test_runs_with_different_tokenizers_are_refused(run_dir: Path, tmp_path: Path) -> None:
    other = make_translator(tmp_path / "other")  # the same sizes, another tokenizer
    other_run = save(replace(other, tokenizers=retrained(tmp_path))).parent
    result = CliRunner().invoke(app, ["translate", str(run_dir), str(other_run), "--greedy"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "different tokenizers" in lines[0]


def retrained(tmp_path: Path) -> TokenizerPair:
    """A tokenizer of the same size trained on other sentences: other bytes, other ids."""
    cfg = tiny_config().tokenizer
    src, tgt = head(DATA / "train.en", 600)[300:], head(DATA / "train.de", 600)[300:]
    return train_tokenizers(src, tgt, tmp_path / "spm2", cfg, "en", "de", seed=1)


def test_an_export_cannot_join_an_ensemble(run_dir: Path, tmp_path: Path) -> None:
    fake = tmp_path / "export"
    shutil.copytree(run_dir, fake)
    (fake / EXPORT_CONFIG).write_text("format: ctranslate2\n")
    (fake / MODEL_FILE).write_bytes(b"")
    result = CliRunner().invoke(app, ["translate", str(run_dir), str(fake)])
    assert result.exit_code == 2 and "not an export" in result.output
