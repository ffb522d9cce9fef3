"""Translate-level behaviour: order, empty lines, n-best, sampling, streaming, truncation,
output formats, attention dumps. Search itself is tested in test_search.py."""

from __future__ import annotations

import io
import json
import logging
import math
import re
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mtkit.config.load import load_config
from mtkit.config.schema import ConfigError, DecodingConfig
from mtkit.config.validate import validate_decoding
from mtkit.data.batching import pad
from mtkit.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from mtkit.files import InputFileError, read_lines
from mtkit.model.masks import pad_mask
from mtkit.model.transformer import Transformer
from mtkit.search.beam import beam_search
from mtkit.search.common import length_normaliser
from mtkit.translation.attention_dump import (
    AttentionError,
    AttentionWriter,
    plot_attention,
    read_attention,
)
from mtkit.translation.output import (
    format_translation,
    interactive,
    open_output,
    write_translations,
)
from mtkit.translation.results import Translation
from mtkit.translation.translator import (
    TranslationError,
    Translator,
    translate_nbest,
)
from tests.tiny_translator import DATA, head, make_translator

SOURCES = head(DATA / "test.en", 12)


@pytest.fixture(scope="module")
def translator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Translator]:
    yield make_translator(tmp_path_factory.mktemp("tiny"))


def opts(translator: Translator, **kw: Any) -> DecodingConfig:
    """The run's decoding config with `kw` replaced (as the CLI does with its flags)."""
    return replace(translator.config.decoding, **kw)


# --------------------------------------------------------------------------- batching, order


def test_batched_translation_matches_one_by_one(translator: Translator) -> None:
    options = opts(translator, beam_size=1, max_tokens=60)  # several batches
    together = translator.translate(SOURCES, options)
    alone = [translator.translate([s], options)[0] for s in SOURCES]
    assert together == alone


def test_empty_and_blank_lines_stay_empty(translator: Translator) -> None:
    lines = ["", SOURCES[0], "   ", SOURCES[1], ""]
    out = translator.translate(lines, opts(translator))
    assert len(out) == 5
    assert out[0] == out[2] == out[4] == ""
    assert out[1] and out[3]
    assert translator.translate([], opts(translator)) == []


# --------------------------------------------------------------------------- n-best, scores


def test_nbest_sorted_distinct_and_scored(translator: Translator) -> None:
    results = translator.translate_full(SOURCES[:4], opts(translator, beam_size=4, nbest=3))
    for t in results:
        assert len(t.nbest) == 3
        scores = [c.score for c in t.nbest]
        assert scores == sorted(scores, reverse=True)
        assert len({c.text for c in t.nbest}) == 3
        assert all(c.log_prob is not None and c.log_prob <= 0 for c in t.nbest)
        assert t.text == t.nbest[0].text
        assert t.seconds > 0


def test_nbest_hypotheses_are_distinct_token_sequences(translator: Translator) -> None:
    ids = [[*x, EOS_ID] for x in translator.tokenizers.src.encode(SOURCES[:5])]
    decoded = translate_nbest(
        translator.model, ids, opts(translator, beam_size=5, nbest=5), translator.device
    )
    for d in decoded:
        assert len({tuple(h.tokens) for h in d.hyps}) == 5


@pytest.mark.parametrize("norm", ["gnmt", "average", "none"])
def test_length_norm_ranks_by_the_chosen_normaliser(translator: Translator, norm: str) -> None:
    ids = [[*x, EOS_ID] for x in translator.tokenizers.src.encode(SOURCES[:3])]
    src = pad(ids)
    dec = DecodingConfig(
        beam_size=4,
        nbest=4,
        length_penalty=0.8,
        length_norm=norm,  # type: ignore[arg-type]
        max_len_a=0.5,
        max_len_b=4,
    )
    nbest = beam_search(
        translator.model, src, pad_mask(src, PAD_ID), dec, bos_id=BOS_ID, eos_id=EOS_ID
    )
    for hyps in nbest:
        for h in hyps:
            expected = h.log_prob / length_normaliser(len(h.tokens) + 1, 0.8, norm)
            assert math.isclose(h.score, expected, rel_tol=1e-5, abs_tol=1e-6)
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)


def test_greedy_with_no_repeat_ngram_uses_beam_code(translator: Translator) -> None:
    out = translator.translate_full(SOURCES[:4], opts(translator, beam_size=1, no_repeat_ngram=2))
    for t in out:
        pieces = translator.tokenizers.tgt.encode([t.text])[0]
        bigrams = list(zip(pieces, pieces[1:], strict=False))
        assert len(bigrams) == len(set(bigrams)) or not t.text


def test_min_len_is_respected(translator: Translator) -> None:
    options = opts(translator, beam_size=2, min_len=6, max_len_a=0.0, max_len_b=8)
    ids = [[*x, EOS_ID] for x in translator.tokenizers.src.encode(SOURCES[:4])]
    for d in translate_nbest(translator.model, ids, options, translator.device):
        assert 6 <= len(d.hyps[0].tokens) <= 8


def test_sampling_is_seeded_and_gives_k_samples(translator: Translator) -> None:
    options = opts(translator, sampling=True, nbest=3, top_k=20, temperature=1.5)
    a = translator.translate_full(SOURCES[:4], options)
    b = translator.translate_full(SOURCES[:4], options)
    c = translator.translate_full(SOURCES[:4], replace(options, seed=99))
    assert [t.nbest for t in a] == [t.nbest for t in b]
    assert [t.nbest for t in a] != [t.nbest for t in c]
    for t in a:
        assert len(t.nbest) == 3
        assert [x.score for x in t.nbest] == sorted((x.score for x in t.nbest), reverse=True)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"nbest": 5, "beam_size": 2}, "nbest (5) must be at most the beam size (2)"),
        ({"beam_size": 0}, "beam_size: expected a positive number"),
        ({"length_norm": "bogus"}, "length_norm: expected one of gnmt, average, none"),
        ({"early_stopping": "never"}, "early_stopping: expected one of exact, heuristic"),
        ({"sampling": True, "top_p": 0.0}, "top_p: expected a value in (0, 1]"),
        ({"sampling": True, "temperature": 0.0}, "temperature: expected a positive number"),
        ({"min_len": -1}, "min_len: expected zero or more"),
    ],
)
def test_bad_overrides_are_rejected(
    translator: Translator, kw: dict[str, object], message: str
) -> None:
    """The command line's check: the config validator, its messages naming the bare keys."""
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        validate_decoding(opts(translator, **kw), prefix="")


def test_decoding_config_validates_new_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="decoding.nbest"):
        load_config(None, ["decoding.beam_size=2", "decoding.nbest=3"])
    with pytest.raises(ConfigError, match="decoding.length_norm"):
        load_config(None, ["decoding.length_norm=max"])
    with pytest.raises(ConfigError, match="decoding.top_p"):
        load_config(None, ["decoding.top_p=1.5"])
    cfg = load_config(None, ["decoding.sampling=true", "decoding.nbest=8", "decoding.beam_size=1"])
    assert cfg.decoding.nbest == 8


# --------------------------------------------------------------------------- streaming


def test_stream_yields_before_the_input_ends(translator: Translator) -> None:
    consumed: list[int] = []

    def lines() -> Iterator[str]:
        for i, line in enumerate(SOURCES):
            consumed.append(i)
            yield line + "\n"

    stream = translator.translate_stream(lines(), opts(translator, beam_size=1), chunk_size=4)
    first = next(stream)
    assert len(consumed) == 4  # one chunk read, nothing more
    rest = list(stream)
    assert len(consumed) == len(SOURCES)
    assert [first, *rest] == translator.translate(SOURCES, opts(translator, beam_size=1))


def test_writer_flushes_each_chunk(translator: Translator) -> None:
    class Recorder(io.StringIO):
        flushed: list[int] = []

        def flush(self) -> None:
            self.flushed.append(self.getvalue().count("\n"))

    out = Recorder()
    chunks = translator.stream(SOURCES[:7], opts(translator, beam_size=1), chunk_size=3)
    assert write_translations(chunks, out) == 7
    assert out.flushed == [3, 6, 7]


def test_truncation_warning_counts_lines(
    translator: Translator, caplog: pytest.LogCaptureFixture
) -> None:
    limit = translator.config.model.max_positions - 1
    long_line = " ".join(["Tom"] * (limit + 10))
    with caplog.at_level(logging.WARNING, logger="mtkit.translation.translator"):
        out = translator.translate_full([long_line, "Hi.", long_line], opts(translator))
    assert [t.truncated for t in out] == [True, False, True]
    assert f"2 input lines longer than {limit} tokens were truncated" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mtkit.translation.translator"):
        list(translator.translate_stream([long_line, "Hi.", long_line], opts(translator), 2))
    assert f"2 of 3 input lines were longer than {limit} tokens" in caplog.text


def test_input_files_split_on_newline_only(tmp_path: Path) -> None:
    """translate reads --input with the one line reader, `files.read_lines`."""
    path = tmp_path / "in.txt"
    path.write_bytes(b"a\r\nb\rc\n\nd")
    assert list(read_lines(path)) == ["a", "b\rc", "", "d"]
    path.write_bytes(b"ok\n\xff\n")
    with pytest.raises(InputFileError, match=r"in\.txt:2: invalid UTF-8"):
        list(read_lines(path))


def test_interactive_translates_each_line_until_eof(translator: Translator) -> None:
    typed = iter(["Hi.", "", "Tom is here."])
    prompts: list[str] = []
    written: list[str] = []

    def read(prompt: str) -> str:
        prompts.append(prompt)
        try:
            return next(typed)
        except StopIteration:
            raise EOFError from None

    n = interactive(translator, opts(translator, beam_size=1), read, written.append)
    assert n == 3 and len(prompts) == 4
    assert written == translator.translate(
        ["Hi.", "", "Tom is here."], opts(translator, beam_size=1)
    )


# --------------------------------------------------------------------------- formats, files


def test_formats(translator: Translator) -> None:
    results = translator.translate_full(["Hi.", ""], opts(translator, nbest=2))
    tsv = format_translation(results[0], "tsv", 0).splitlines()
    assert len(tsv) == 2
    for row in tsv:
        src, hyp, score = row.split("\t")
        assert src == "Hi." and hyp and float(score) <= 0
    assert format_translation(results[1], "tsv", 1) == "\t\t\n"
    moses = format_translation(results[0], "text", 7, nbest=True).splitlines()
    assert [line.split(" ||| ")[0] for line in moses] == ["7", "7"]
    assert format_translation(results[1], "text", 8, nbest=True) == "8 |||  ||| \n"
    assert format_translation(results[0], "text", 7) == results[0].text + "\n"
    record = json.loads(format_translation(results[0], "jsonl", 0))
    assert set(record) == {"index", "source", "translation", "nbest", "time", "truncated"}
    assert record["translation"] == record["nbest"][0]["text"]
    empty = json.loads(format_translation(results[1], "jsonl", 1))
    assert empty["translation"] == "" and empty["nbest"] == []
    one = translator.translate_full(["Hi."], opts(translator))[0]
    assert format_translation(one, "text", 0) == one.text + "\n"
    with pytest.raises(TranslationError, match="format"):
        format_translation(one, "xml", 0)


def test_open_output_leaves_no_partial_file(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), open_output(out) as f:
        f.write("half\n")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with open_output(out) as f:
        f.write("done\n")
    assert out.read_text() == "done\n"
    with open_output(None) as f:
        assert f is sys.stdout


# --------------------------------------------------------------------------- attention


def test_cross_attention_model_path_matches_forward(translator: Translator) -> None:
    model = translator.model
    assert isinstance(model, Transformer)
    src = pad([[5, 6, 7, EOS_ID], [8, EOS_ID]])
    mask = pad_mask(src, PAD_ID)
    tgt = torch.tensor([[BOS_ID, 9, 10], [BOS_ID, 11, 12]])
    with torch.no_grad():
        weights = model.cross_attention(src, mask, tgt)
        memory = model.encode(src, mask)
        layer = model._layers()[0]
        x = model.embed_tgt(tgt)
        causal = torch.ones(3, 3, dtype=torch.bool).tril()[None, None]
        plain = layer(x, memory, causal, mask[:, None, None, :])
        captured, w0 = layer.forward_with_cross_attention(x, memory, causal, mask[:, None, None, :])
    assert weights.shape == (2, 2, 2, 3, 4)  # (layers, batch, heads, tgt_len, src_len)
    torch.testing.assert_close(captured, plain)
    torch.testing.assert_close(w0, weights[0])
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 2, 3))
    assert bool((weights[:, 1, :, :, 2:] == 0).all())  # padding gets no attention


@pytest.mark.parametrize("suffix", [".jsonl", ".npz"])
def test_attention_dump_round_trip(translator: Translator, tmp_path: Path, suffix: str) -> None:
    results = translator.translate_full(
        ["Hi.", "", "Tom is here."], opts(translator), attention=True
    )
    path = tmp_path / f"att{suffix}"
    with AttentionWriter(path) as writer:
        writer.write(results[:1])
        writer.write(results[1:])
    for i in (0, 2):
        att = results[i].attention
        assert att is not None
        assert att.weights.shape == (len(att.target), len(att.source))
        assert att.source[-1] == att.target[-1] == "</s>"
        back = read_attention(path, i)
        assert back.source == att.source and back.target == att.target
        np.testing.assert_allclose(back.weights, att.weights, atol=1e-4)
        np.testing.assert_allclose(back.weights.sum(axis=1), 1.0, atol=1e-3)
    assert read_attention(path, 1).weights.size == 0
    with pytest.raises(AttentionError, match="no sentence 4"):
        read_attention(path, 3)


def test_plot_attention_writes_png(translator: Translator, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib (the `plot` extra) is not installed")
    att = translator.translate_full(["Tom is here."], opts(translator), attention=True)[0].attention
    assert att is not None
    out = tmp_path / "att.png"
    plot_attention(att, out, title="test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_attention_without_matplotlib_says_how_to_install(
    translator: Translator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    att = translator.translate_full(["Hi."], opts(translator), attention=True)[0].attention
    assert att is not None
    with pytest.raises(AttentionError, match=r"pip install 'mtkit\[plot\]'"):
        plot_attention(att, tmp_path / "x.png")


def test_translation_text_of_empty_line() -> None:
    assert Translation("").text == ""
