"""sentencepiece wrapper: special ids, round trips, save/load, embedding in checkpoints, errors."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import pytest

from mtkit.config.schema import ConfigError, TokenizerConfig
from mtkit.data.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    Tokenizer,
    TokenizerError,
    TokenizerPair,
    train_sentencepiece,
    train_tokenizers,
)
from mtkit.data.tokenizer_files import decode_file, encode_file

WORDS_EN = "the a cat dog sees runs house tree big small red green walks sleeps".split()
WORDS_DE = "der die das Katze Hund sieht läuft Haus Baum groß klein rot grün schläft".split()


def sentences(words: list[str], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) for _ in range(n)]


SRC = sentences(WORDS_EN, 200, 0)
TGT = sentences(WORDS_DE, 200, 1)


def tiny(**kw: object) -> TokenizerConfig:
    return TokenizerConfig(**{"vocab_size": 60, **kw})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def joint(tmp_path_factory: pytest.TempPathFactory) -> TokenizerPair:
    out = tmp_path_factory.mktemp("joint")
    return train_tokenizers(SRC, TGT, out, tiny(), "en", "de", seed=1)


def test_special_ids_are_fixed(joint: TokenizerPair) -> None:
    sp = joint.src._sp
    assert (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (PAD_ID, UNK_ID, BOS_ID, EOS_ID)
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
    assert joint.src.vocab_size == 60


def test_encode_has_no_bos_eos_and_round_trips(joint: TokenizerPair) -> None:
    ids = joint.src.encode(SRC[:20])
    assert all(i not in (PAD_ID, BOS_ID, EOS_ID) for seq in ids for i in seq)
    assert joint.src.decode(ids) == SRC[:20]


def test_few_lines_and_many_lines_encode_and_decode_alike(joint: TokenizerPair) -> None:
    """Few lines go one sentencepiece call per line, many lines one list call: same results."""
    many = SRC * 2  # 400 lines: the list call
    ids = joint.src.encode(many)
    assert [joint.src.encode(many[i : i + 3]) for i in range(0, 30, 3)] == [
        ids[i : i + 3] for i in range(0, 30, 3)
    ]
    assert joint.src.encode([]) == [] and joint.src.decode([]) == []
    assert joint.src.decode(ids) == many
    assert joint.src.decode(ids[:5]) == many[:5]
    assert [type(seq) for seq in joint.src.encode(many[:2])] == [list, list]


def test_decode_skips_pad_bos_eos(joint: TokenizerPair) -> None:
    (ids,) = joint.tgt.encode([TGT[0]])
    assert joint.tgt.decode([[BOS_ID, *ids, EOS_ID, PAD_ID, PAD_ID]]) == [TGT[0]]


def test_joint_pair_shares_one_model(joint: TokenizerPair, tmp_path: Path) -> None:
    assert joint.src is joint.tgt and joint.joint
    assert set(joint.model_files()) == {"spm.model"}
    joint.save(tmp_path)
    loaded = TokenizerPair.load(tmp_path)
    assert loaded.joint and loaded.src.encode(SRC[:5]) == joint.src.encode(SRC[:5])


def test_separate_models_save_load_and_embed(tmp_path: Path) -> None:
    pair = train_tokenizers(SRC, TGT, tmp_path / "a", tiny(joint=False), "en", "de")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["spm.src.model", "spm.tgt.model"]
    assert pair.src is not pair.tgt
    loaded = TokenizerPair.load(tmp_path / "a")
    assert loaded.tgt.encode(TGT[:5]) == pair.tgt.encode(TGT[:5])
    again = TokenizerPair.from_model_files(pair.model_files())
    assert again.src.encode(SRC[:5]) == pair.src.encode(SRC[:5])
    assert again.tgt.decode(pair.tgt.encode(TGT[:5])) == TGT[:5]


def test_unigram_and_file_input(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    path.write_text("\n".join(SRC) + "\n", encoding="utf-8")
    tok = train_sentencepiece(path, tiny(type="unigram", vocab_size=36), "source")
    assert tok.vocab_size == 36 and tok.decode(tok.encode(SRC[:3])) == SRC[:3]


def test_tokenizer_pickles(joint: TokenizerPair) -> None:
    copy = pickle.loads(pickle.dumps(joint.src))
    assert copy.encode(SRC[:3]) == joint.src.encode(SRC[:3])


@pytest.mark.parametrize("n", [50, 150])  # below and above sentencepiece's own sampling floor
def test_sampling_is_reproducible_and_bounded(tmp_path: Path, n: int) -> None:
    cfg = tiny(input_sentence_size=n, vocab_size=40)
    a = train_tokenizers(SRC, TGT, tmp_path / "a", cfg, "en", "de", seed=7)
    b = train_tokenizers(SRC, TGT, tmp_path / "b", cfg, "en", "de", seed=7)
    assert a.model_files() == b.model_files()
    full = train_tokenizers(SRC, TGT, tmp_path / "c", tiny(vocab_size=40), "en", "de", seed=7)
    assert full.model_files() != a.model_files()  # the sample, not the whole corpus, was used


def test_vocab_too_large_names_the_key_and_the_maximum(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tokenizer\.vocab_size: 5000 .* at most \d+"):
        train_tokenizers(SRC, TGT, tmp_path, tiny(vocab_size=5000), "en", "de")


def test_training_is_quiet(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    train_tokenizers(SRC[:50], TGT[:50], tmp_path, tiny(), "en", "de")
    assert capfd.readouterr().err == ""


def test_load_missing_and_corrupt(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="nope.model: sentencepiece model not found"):
        Tokenizer.load(tmp_path / "nope.model")
    bad = tmp_path / "spm.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(TokenizerError, match="spm.model: not a valid sentencepiece model"):
        Tokenizer.load(bad)
    with pytest.raises(TokenizerError, match="no sentencepiece model found"):
        TokenizerPair.load(tmp_path / "empty")
    with pytest.raises(TokenizerError, match="missing spm.tgt.model"):
        TokenizerPair.from_model_files({"spm.src.model": b""})


def test_model_with_other_special_ids_is_rejected(tmp_path: Path) -> None:
    import io

    import sentencepiece as spm

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SRC), model_writer=out, vocab_size=30, minloglevel=2
    )
    with pytest.raises(TokenizerError, match="expected special ids"):
        Tokenizer(out.getvalue(), "default-ids")


def test_encode_and_decode_file_round_trip(joint: TokenizerPair, tmp_path: Path) -> None:
    text = tmp_path / "in.txt"
    text.write_text("\n".join(SRC[:30]) + "\n", encoding="utf-8")
    for as_ids in (False, True):
        enc, dec = tmp_path / f"enc{as_ids}", tmp_path / f"dec{as_ids}"
        assert encode_file(joint.src, text, enc, as_ids=as_ids, batch_lines=7) == 30
        first = enc.read_text(encoding="utf-8").splitlines()[0].split()
        assert all(t.isdigit() for t in first) == as_ids
        assert decode_file(joint.src, enc, dec, batch_lines=7) == 30
        assert dec.read_text(encoding="utf-8").splitlines() == SRC[:30]
