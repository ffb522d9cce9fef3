"""The back-translation recipe through the CLI (docs/training.md): a reverse run translates
target-language text, and a forward run trains on the real pairs plus the tagged synthetic ones."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import datasets
import pytest

from mtkit.data.prepare import load_stats
from mtkit.data.tokenizer import TokenizerPair
from tests.conftest import write_tiny_config
from tests.e2e.cli import SHORT
from tests.e2e.cli import succeed as invoke

pytestmark = pytest.mark.slow


def test_back_translated_pairs_join_training_with_a_tag(tmp_path: Path, tiny_corpus: Path) -> None:
    # 1. a de->en run on the same corpus
    (tmp_path / "rev").mkdir()
    reverse = write_tiny_config(
        tmp_path / "rev", tiny_corpus, data={"src_lang": "de", "tgt_lang": "en"}, training=SHORT
    )
    invoke("train", str(reverse))
    # 2. it back-translates German "monolingual" text (the test split's German side)
    bt = tmp_path / "bt"
    bt.mkdir()
    german = (tiny_corpus / "test.de").read_text(encoding="utf-8").splitlines()
    (bt / "mono.de").write_text("\n".join(german) + "\n", encoding="utf-8")
    invoke("translate", str(tmp_path / "rev" / "run"), "-i", str(bt / "mono.de"),
           "-o", str(bt / "mono.en"), "--beam", "2")  # fmt: skip
    english = (bt / "mono.en").read_text(encoding="utf-8").splitlines()
    assert len(english) == len(german)
    # 3. en->de on the real pairs plus the synthetic ones, tagged and taken twice
    (tmp_path / "fwd").mkdir()
    train = [str(tiny_corpus / "train"), {"path": str(bt / "mono"), "tag": "<BT>", "weight": 2.0}]
    forward = write_tiny_config(tmp_path / "fwd", tiny_corpus, data={"train": train},
                                training=SHORT)  # fmt: skip
    invoke("train", str(forward))
    prepared = tmp_path / "fwd" / "prepared"
    synthetic = load_stats(prepared)["splits"]["train"]["corpora"][1]
    assert synthetic["weight"] == 2.0 and synthetic["sampled"] == 2 * synthetic["pairs"] > 0
    src = list(datasets.load_from_disk(str(prepared / "text"))["train"]["src"])
    tagged = [s.removeprefix("<BT> ") for s in src if s.startswith("<BT> ")]
    assert 0 < len(tagged) <= synthetic["sampled"]  # minus pairs the token-length filters drop
    assert all(n % 2 == 0 for n in Counter(tagged).values())  # weight 2: every pair twice
    assert set(tagged) <= {line.strip() for line in english}
    assert "<BT>" in TokenizerPair.load(prepared).src.encode_pieces(["<BT> a house"])[0]
    result = invoke("evaluate", str(tmp_path / "fwd" / "run"), "--split", "test")
    assert "BLEU" in result.output
