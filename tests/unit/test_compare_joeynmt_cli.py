"""The end-to-end JoeyNMT comparison's pure parts: the two configs, the parsing of JoeyNMT's log."""

from __future__ import annotations

from pathlib import Path

from benchmarks.bench_common import MODEL, VOCAB
from benchmarks.compare_joeynmt_cli import JOEY_EPOCH, joey_config, mtkit_config, parse_args
from mtkit.config.load import config_from_dict


def test_mtkit_side_validates_and_trains_the_benchmark_model_for_one_epoch(tmp_path: Path) -> None:
    cfg = config_from_dict(mtkit_config(parse_args([]), tmp_path))
    assert cfg.model.d_model == MODEL["d_model"]
    assert cfg.model.encoder_layers == cfg.model.decoder_layers == 3
    assert cfg.tokenizer.vocab_size == VOCAB
    assert cfg.training.max_epochs == 1
    assert cfg.training.valid_bleu_sentences == 0  # no decoding inside the timed epoch


def test_both_sides_describe_the_same_model(tmp_path: Path) -> None:
    args = parse_args([])
    ours = mtkit_config(args, tmp_path)["model"]
    theirs = joey_config(args, tmp_path, tmp_path / "spm.model")["model"]
    for side in ("encoder", "decoder"):
        layers = theirs[side]
        assert layers["hidden_size"] == ours["d_model"]
        assert layers["ff_size"] == ours["d_ff"]
        assert layers["num_heads"] == ours["n_heads"]
        assert layers["num_layers"] == ours[f"{side}_layers"]
        assert layers["dropout"] == ours["dropout"]
        assert layers["layer_norm"] == ours["norm"]
    assert theirs["tied_embeddings"] and theirs["tied_softmax"]


def test_reads_joeynmt_epoch_summary_line() -> None:
    line = (
        "2026-11-30 06:02:16,171 - INFO - joeynmt.training - Epoch   1, total training loss: "
        "59.60, num. of seqs: 1000, num. of tokens: 14248, 58.6569[sec]"
    )  # the format string of joeynmt 2.3's training.py
    m = JOEY_EPOCH.search(line)
    assert m is not None
    assert (int(m.group(1)), int(m.group(2)), float(m.group(3))) == (1000, 14248, 58.6569)
    assert JOEY_EPOCH.search(line.replace("Epoch   1", "Epoch   2")) is None
