"""Bad input through the CLI: one `error:` line naming the file/key/line, a non-zero exit, no
traceback and no half-written output; or a warning and a correct result where that is what a
user wants (stray carriage returns, a NUL byte, one absurdly long line, invalid UTF-8 on stdin).
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner, Result

from mtkit.checkpoint import load_checkpoint, save_checkpoint
from mtkit.cli.main import app
from mtkit.data.prepare import load_stats
from tests.tiny_checkpoint import (
    checkpoint_state,
    tiny_config,
    train_tiny_tokenizers,
    write_tiny_run,
)


def invoke(*args: str, input: str | bytes | None = None) -> Result:
    return CliRunner().invoke(app, list(args), input=input)


def assert_error(result: Result, *needles: str, code: int | None = None) -> str:
    """Exactly one `error: ...` line containing `needles`, a non-zero exit, no traceback."""
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # no uncaught error
    assert result.exit_code != 0 if code is None else result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def assert_ok(result: Result) -> None:
    assert result.exception is None, repr(result.exception)
    assert result.exit_code == 0, result.output


# --------------------------------------------------------------------------- config


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("yaml_text", "needles"),
    [
        ("model:\n  d_model: 32\n n_heads: 2\n", ["line 3", "invalid YAML"]),
        ("model: [1, 2\n", ["invalid YAML"]),
        ("name: !!python/object/apply:os.system ['touch PWNED']\n", ["invalid YAML"]),
        ("model:\n  d_modle: 32\n", ["unknown key 'model.d_modle'", "model.d_model"]),
        ("optimizer:\n  lr: 1\n", ["unknown key 'optimizer'"]),
        ("model:\n  d_model: big\n", ["model.d_model", "expected an integer", "'big'"]),
        ("training:\n  lr: [1]\n", ["training.lr", "expected a number"]),
        ("model:\n  n_heads: 0\n", ["model.n_heads", "positive"]),
        ("model:\n  d_ff: -8\n", ["model.d_ff", "positive", "-8"]),
        ("tokenizer:\n  vocab_size: 0\n", ["tokenizer.vocab_size"]),
        ("model:\n  d_model: 30\n  n_heads: 4\n", ["model.d_model", "multiple of model.n_heads"]),
        ("- a\n- b\n", ["expected a mapping"]),
    ],
)
def test_bad_config_is_one_line_exit_2(
    tmp_path: Path, yaml_text: str, needles: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = write(tmp_path / "exp.yaml", yaml_text)
    line = assert_error(invoke("prepare", str(config)), *needles, code=2)
    assert str(config) in line
    assert not (tmp_path / "PWNED").exists()  # the YAML tag constructed nothing


def test_bad_override_is_one_line_exit_2(make_config: Callable[..., Path]) -> None:
    config = make_config()
    assert_error(invoke("train", str(config), "--set", "model.d_model=-1"), "model.d_model", code=2)
    assert_error(invoke("train", str(config), "--set", "nonsense"), "section.key=value", code=2)


def test_config_that_is_not_utf8_or_not_a_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"name: caf\xe9\n")
    assert_error(invoke("prepare", str(bad)), "bad.yaml", "not valid UTF-8", code=2)
    assert_error(invoke("prepare", str(tmp_path)), "found a directory", code=2)
    assert_error(invoke("prepare", str(tmp_path / "nope.yaml")), "config file not found", code=2)


@pytest.mark.parametrize(
    ("vocab", "needles"),
    [
        (20, ["tokenizer.vocab_size", "smaller than the number of distinct characters"]),
        (50_000, ["tokenizer.vocab_size", "too large", "at most"]),
    ],
)
def test_vocabulary_that_does_not_fit_the_corpus(
    tmp_path: Path, make_config: Callable[..., Path], vocab: int, needles: list[str]
) -> None:
    config = make_config(tokenizer={"vocab_size": vocab})
    assert_error(invoke("prepare", str(config)), *needles, code=2)
    assert not (tmp_path / "prepared").exists()  # nothing half-built under the final name
    assert not list(tmp_path.glob(".prepared*"))


# --------------------------------------------------------------------------- data


def pair(directory: Path, name: str, src: bytes, tgt: bytes) -> str:
    """Write NAME.en / NAME.de; returns the prefix (the data.train value)."""
    (directory / f"{name}.en").write_bytes(src)
    (directory / f"{name}.de").write_bytes(tgt)
    return str(directory / name)


def test_missing_directory_and_empty_inputs(
    tmp_path: Path, tiny_corpus: Path, make_config: Callable[..., Path]
) -> None:
    config = make_config(data={"train": str(tmp_path / "nope")})
    assert_error(invoke("prepare", str(config)), "data.train", "file not found", "nope.en")
    (tmp_path / "dir.en").mkdir()
    config = make_config(data={"train": str(tmp_path / "dir")})
    assert_error(invoke("prepare", str(config)), "data.train", "dir.en is a directory")
    config = make_config(data={"train": pair(tmp_path, "empty", b"", b"")})
    assert_error(invoke("prepare", str(config)), "data.train", "empty.en is empty")
    config = make_config(data={"valid": pair(tmp_path, "blank", b"\n\n  \n", b"\n\n\n")})
    assert_error(invoke("prepare", str(config)), "data.valid", "no pairs left", "empty 3")
    assert not (tmp_path / "prepared").exists()


def test_unequal_line_counts_name_both_files(
    tmp_path: Path, tiny_corpus: Path, make_config: Callable[..., Path]
) -> None:
    src = (tiny_corpus / "train.en").read_bytes()
    tgt = (tiny_corpus / "train.de").read_bytes()
    prefix = pair(tmp_path, "uneven", src, tgt.split(b"\n", 1)[1])  # one line fewer
    line = assert_error(invoke("prepare", str(make_config(data={"train": prefix}))), "line-aligned")
    assert "uneven.en has 300 lines" in line and "uneven.de has 299" in line
    assert not (tmp_path / "prepared").exists()


def test_utf16_file_is_named(tmp_path: Path, make_config: Callable[..., Path]) -> None:
    text = "a small house\n" * 5
    prefix = pair(tmp_path, "wide", text.encode("utf-16"), text.encode("utf-8"))
    config = make_config(data={"train": prefix})
    assert_error(invoke("prepare", str(config)), "wide.en is UTF-16", "iconv")


def test_messy_but_usable_text_is_cleaned_and_stays_aligned(
    tmp_path: Path, tiny_corpus: Path, make_config: Callable[..., Path]
) -> None:
    """CRLF on one side, a stray CR, invalid UTF-8, a NUL byte and a 10 MB line: each is
    handled (kept, or dropped and counted with a warning) and the pairs stay aligned."""
    src = (tiny_corpus / "train.en").read_text(encoding="utf-8").splitlines()
    tgt = (tiny_corpus / "train.de").read_text(encoding="utf-8").splitlines()
    src_b = [s.encode() for s in src]
    tgt_b = [t.encode() for t in tgt]
    src_b[10] = b"bad \xff\xfe bytes"
    tgt_b[20] = b"nul \x00 byte"
    src_b[30] = src_b[30].replace(b" ", b" \r ", 1)  # a lone CR inside a line
    src_b.append(b"the " * 2_500_000)  # 10 MB, one line
    tgt_b.append(b"kurz")
    prefix = pair(
        tmp_path,
        "messy",
        b"\r\n".join(src_b) + b"\r\n",  # Windows line endings on the source side only
        b"\n".join(tgt_b) + b"\n",
    )
    valid_src = (tiny_corpus / "valid.en").read_bytes() + b"the " * 2_500_000 + b"\n"
    valid_tgt = (tiny_corpus / "valid.de").read_bytes() + b"kurz\n"
    valid = pair(tmp_path, "valid", valid_src, valid_tgt)
    config = make_config(data={"train": prefix, "valid": valid})
    result = invoke("prepare", str(config))
    assert_ok(result)
    splits = load_stats(tmp_path / "prepared")["splits"]
    assert splits["valid"]["kept"] == 41  # eval splits are kept whole; the long line truncated
    from datasets import load_from_disk

    encoded = load_from_disk(str(tmp_path / "prepared" / "encoded"))["valid"]
    assert len(encoded[40]["src_ids"]) == 60 + 1  # data.max_len + EOS
    assert "messy.en:11: invalid UTF-8" in result.stderr
    assert "messy.de:21: a NUL byte" in result.stderr
    stats = load_stats(tmp_path / "prepared")["splits"]["train"]
    assert stats["read"] == 301
    assert stats["dropped"]["invalid_utf8"] == 1 and stats["dropped"]["malformed"] == 1
    assert stats["dropped"]["too_long"] >= 1
    text = load_from_disk(str(tmp_path / "prepared" / "text"))["train"]
    pairs = dict(zip(text["src"], text["tgt"], strict=True))
    assert not any("\r" in s for s in text["src"])
    for i in (0, 31, 150, 299):  # every kept pair is still the pair it was
        if " ".join(src[i].split()) in pairs:
            assert pairs[" ".join(src[i].split())] == " ".join(tgt[i].split())
    assert max(len(s) for s in text["src"]) < 10_000


def test_tsv_rows_with_the_wrong_number_of_columns(
    tmp_path: Path, tiny_corpus: Path, make_config: Callable[..., Path]
) -> None:
    src = (tiny_corpus / "train.en").read_text(encoding="utf-8").splitlines()
    tgt = (tiny_corpus / "train.de").read_text(encoding="utf-8").splitlines()
    rows = [f"{s}\t{t}" for s, t in zip(src, tgt, strict=True)]
    rows[5] = "only one column"
    tsv = write(tmp_path / "train.tsv", "\n".join(rows) + "\n")
    data = {"format": "tsv", "train": str(tsv), "valid": None, "test": None, "valid_size": 20}
    line = assert_error(invoke("prepare", str(make_config(data=data))), "train.tsv:6")
    assert "1 column, expected 2" in line and "data.on_bad_row: skip" in line
    data["on_bad_row"] = "skip"
    result = invoke("prepare", str(make_config(data=data)))
    assert_ok(result)
    assert "train.tsv:6: 1 column, expected 2 (a tab inside a field?); dropping" in result.stderr
    assert load_stats(tmp_path / "prepared")["splits"]["train"]["dropped"]["bad_row"] == 1
    write(tsv, "only one column\n" + "\n".join(rows[6:]) + "\n")
    assert_error(invoke("prepare", str(make_config(data=data))), "train.tsv:1", "tsv columns")


# --------------------------------------------------------------------------- translate


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_run(tmp_path_factory.mktemp("run"))


def test_empty_and_blank_input(run_dir: Path) -> None:
    result = invoke("translate", str(run_dir), input="")
    assert_ok(result)
    assert result.stdout == ""
    result = invoke("translate", str(run_dir), input="\n  \n\t\n")
    assert_ok(result)
    assert result.stdout == "\n\n\n"


def test_unknown_characters_and_control_characters(run_dir: Path) -> None:
    lines = ["漢字 ☃☃ 🙂🙂", "\x00\x01\x7f", "a\rb", "\u200b\u2028", "the cat"]
    result = invoke("translate", str(run_dir), "--greedy", input="\n".join(lines) + "\n")
    assert_ok(result)
    assert len(result.stdout.split("\n")) == len(lines) + 1


def test_very_long_line_is_truncated_with_a_warning(run_dir: Path, tmp_path: Path) -> None:
    src = write(tmp_path / "long.en", "the cat sees a dog " * 5300 + "\nthe cat\n")  # 100k chars
    out = tmp_path / "out.de"
    result = invoke("translate", str(run_dir), "-i", str(src), "-o", str(out), "--greedy")
    assert_ok(result)
    assert "truncated" in result.stderr
    lines = out.read_text(encoding="utf-8").split("\n")
    assert len(lines) == 3 and lines[0] and lines[2] == ""


def test_invalid_utf8_on_stdin_is_replaced_with_a_warning(run_dir: Path) -> None:
    result = invoke("translate", str(run_dir), input=b"ok\nbad \xff\xfe line\nok\n")
    assert_ok(result)
    assert len(result.stdout.split("\n")) == 4
    assert "stdin line 2: invalid UTF-8" in result.stderr


def test_invalid_utf8_in_an_input_file_is_an_error_and_writes_nothing(
    run_dir: Path, tmp_path: Path
) -> None:
    src = tmp_path / "in.en"
    src.write_bytes(b"ok\n" * 3 + b"bad \xff\n")
    out = tmp_path / "out.de"
    assert_error(
        invoke("translate", str(run_dir), "-i", str(src), "-o", str(out)), "in.en:4: invalid UTF-8"
    )
    assert list(tmp_path.iterdir()) == [src]  # no out.de, no temp file


@pytest.mark.slow  # a real process and a real pipe (a few seconds to import torch)
def test_stdout_closed_early_is_quiet(run_dir: Path, tmp_path: Path) -> None:
    """`mtkit translate ... | head -1`: the broken pipe ends the run without a traceback."""
    src = write(tmp_path / "in.en", "the cat sees a dog\n" * 200)
    command = [sys.executable, "-m", "mtkit", "translate", str(run_dir), "-i", str(src)]
    command += ["--greedy", "--chunk-size", "10"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()  # the consumer goes away, like `head -1`
        err = proc.stderr.read().decode()
        code = proc.wait(timeout=120)
    assert first.strip()
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert code == 0


# --------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def state(run_dir: Path) -> dict[str, Any]:
    return load_checkpoint(run_dir / "best.pt")


def translate_with(path: Path) -> Result:
    return invoke("translate", str(path), input="the cat\n")


def test_truncated_random_and_empty_files(run_dir: Path, tmp_path: Path) -> None:
    data = (run_dir / "best.pt").read_bytes()
    cases = {
        "truncated.pt": data[: len(data) // 2],
        "random.pt": torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes(),
        "empty.pt": b"",
        "text.pt": b"hello, I am not a checkpoint\n",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        assert_error(translate_with(tmp_path / name), name, "not a readable checkpoint")


def test_checkpoint_of_another_architecture(state: dict[str, Any], tmp_path: Path) -> None:
    other = copy.deepcopy(state)
    other["config"]["model"]["d_model"] = 32
    save_checkpoint(tmp_path / "arch.pt", other)
    line = assert_error(translate_with(tmp_path / "arch.pt"), "arch.pt", "do not fit")
    assert "shape mismatch: src_embed.weight is [60, 16] in the file but [60, 32]" in line
    other = copy.deepcopy(state)
    other["config"]["model"]["encoder_layers"] = 2
    save_checkpoint(tmp_path / "deeper.pt", other)
    assert_error(translate_with(tmp_path / "deeper.pt"), "missing: encoder.1.")


def test_config_asking_for_a_huge_model_is_refused_before_allocating(
    state: dict[str, Any], tmp_path: Path
) -> None:
    """An edited config of d_model 65536 would need hundreds of GB; the weights say 16."""
    other = copy.deepcopy(state)
    other["config"]["model"].update(d_model=2**16, d_ff=2**18)
    save_checkpoint(tmp_path / "huge.pt", other)
    assert_error(translate_with(tmp_path / "huge.pt"), "[60, 16] in the file but [60, 65536]")


def test_checkpoint_of_another_vocabulary(state: dict[str, Any], tmp_path: Path) -> None:
    """Weights of a 60-piece vocabulary with an 80-piece tokenizer (e.g. files mixed up)."""
    tokenizers = train_tiny_tokenizers(tmp_path / "spm80", vocab_size=80)
    other = copy.deepcopy(state)
    other["tokenizer"] = tokenizers.model_files()
    other["vocab"] = {"src": 80, "tgt": 80}
    save_checkpoint(tmp_path / "vocab.pt", other)
    line = assert_error(translate_with(tmp_path / "vocab.pt"), "vocab.pt", "do not fit")
    assert "a vocabulary of 60/60 source/target pieces, the tokenizer has 80/80" in line
    other["vocab"] = {"src": 60, "tgt": 60}
    save_checkpoint(tmp_path / "sizes.pt", other)
    assert_error(translate_with(tmp_path / "sizes.pt"), "vocabulary sizes do not match")


def test_checkpoint_with_broken_parts(state: dict[str, Any], tmp_path: Path) -> None:
    cases: dict[str, tuple[str, Any, str]] = {
        "config.pt": ("config", {**state["config"], "model": {"d_model": -1}}, "embedded config"),
        "tok.pt": ("tokenizer", {"spm.model": b"not a model"}, "not a valid sentencepiece"),
        "weights.pt": ("model", {"src_embed.weight": 3}, "do not fit"),
        "foreign.pt": ("format_version", 99, "format 99 is not supported"),
    }
    for name, (key, value, needle) in cases.items():
        save_checkpoint(tmp_path / name, {**state, key: value})
        assert_error(translate_with(tmp_path / name), name, needle)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "plain.pt")
    assert_error(translate_with(tmp_path / "plain.pt"), "not an mtkit checkpoint")


def test_averaging_checkpoints_of_different_models(tmp_path: Path) -> None:
    tokenizers = train_tiny_tokenizers(tmp_path / "spm")
    for step, d_model in ((10, 16), (20, 32)):
        state = checkpoint_state(tiny_config(d_model=d_model), tokenizers)
        save_checkpoint(tmp_path / f"step_{step:06d}.pt", state)
    out = tmp_path / "avg.pt"
    line = assert_error(invoke("average", str(tmp_path), "--last", "2", "-o", str(out)))
    assert "src_embed.weight of shape [60, 16] but the last one [60, 32]" in line
    assert not out.exists()


class _Exploit:
    """Unpickling this calls open(path, "w"), i.e. creates a file: the side effect we watch."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def test_pickled_code_is_refused_not_run(state: dict[str, Any], tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    evil = {**state, "format_version": 1, "extra": _Exploit(marker)}
    torch.save(evil, tmp_path / "evil.pt")  # a valid torch zip file carrying the payload
    line = assert_error(translate_with(tmp_path / "evil.pt"), "evil.pt", "refused")
    assert "could run code" in line
    assert not marker.exists()
    import pickle

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(_Exploit(marker)))
    assert_error(translate_with(tmp_path / "evil.pkl"), "evil.pkl")
    assert not marker.exists()
    result = invoke("evaluate", str(tmp_path / "evil.pt"), "--src", "a", "--ref", "b")
    assert_error(result, "refused")
    assert not marker.exists()


# --------------------------------------------------------------------------- output files


def test_failed_translation_leaves_no_output_file(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interruption after the first chunk: no out.de, no temp file, an old out.de intact."""
    from mtkit.translation.translator import Translator

    src = write(tmp_path / "in.en", "the cat\n" * 30)
    out = tmp_path / "out.de"
    real = Translator.translate_full
    calls = [0]

    def flaky(self: Translator, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Translator, "translate_full", flaky)
    cmd = ["translate", str(run_dir), "-i", str(src), "-o", str(out), "--chunk-size", "10"]
    result = invoke(*cmd)
    assert result.exit_code == 130 and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.en"]
    out.write_text("yesterday's work\n", encoding="utf-8")
    calls[0] = 0
    assert invoke(*cmd).exit_code == 2  # refused before translating: it exists
    assert invoke(*cmd, "--overwrite").exit_code == 130
    assert out.read_text(encoding="utf-8") == "yesterday's work\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.en", "out.de"]


def test_output_path_that_cannot_be_written(run_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    result = invoke("translate", str(run_dir), "-o", str(tmp_path / "taken"), input="the cat\n")
    assert_error(result, "taken")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_evaluate_failures_leave_no_hypothesis_file(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write(tmp_path / "test.en", "the cat\na dog\n")
    ref = write(tmp_path / "test.de", "die Katze\n")
    hyp = tmp_path / "hyp.de"
    args = ["evaluate", str(run_dir), "--src", str(src), "--ref", str(ref), "-o", str(hyp)]
    assert_error(invoke(*args), "test.de has 1 line but", "test.en has 2")
    assert not hyp.exists()
    write(ref, "die Katze\nein Hund\n")
    assert_error(invoke(*args, "--metrics", "bleu,blue"), "unknown metric 'blue'")
    assert_error(invoke(*args, "--tokenize", "13b"), "unknown sacreBLEU tokenizer '13b'")
    assert not hyp.exists()  # refused before translating anything
    write(ref, "die Katze\nein Hund\n")
    from mtkit.translation.translator import Translator

    def broken(self: Translator, *a: Any, **k: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(Translator, "translate_full", broken)
    assert invoke(*args).exit_code == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test.de", "test.en"]


def test_tiny_run_translates(run_dir: Path) -> None:
    """The fixture itself is sound: the bad-input tests above fail for the stated reason."""
    assert_ok(translate_with(run_dir))


def test_yaml_alias_bomb_is_a_short_error(tmp_path: Path) -> None:
    """Nested aliases expand to 9**7 strings; the error shows a bounded excerpt, quickly."""
    levels = ['&l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"&l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 7)]
    config = write(tmp_path / "bomb.yaml", f"data:\n  train: [{', '.join(levels)}]\n")
    line = assert_error(invoke("prepare", str(config)), "data.train", "expected a string", code=2)
    assert len(line) < 500


def test_outputs_get_the_permissions_a_plain_open_would(run_dir: Path, tmp_path: Path) -> None:
    """Atomic writes go through mkstemp (mode 0o600); the result must not end up private."""
    mask = os.umask(0o022)
    try:
        out = tmp_path / "out.de"
        assert_ok(invoke("translate", str(run_dir), "-o", str(out), input="the cat\n"))
        assert out.stat().st_mode & 0o777 == 0o644
        out.chmod(0o640)  # an existing file keeps its mode, as with open(path, "w")
        args = ("translate", str(run_dir), "-o", str(out), "--overwrite")
        assert_ok(invoke(*args, input="the cat\n"))
        assert out.stat().st_mode & 0o777 == 0o640
        save_checkpoint(tmp_path / "x.pt", {"config": {}, "model": {}})
        assert (tmp_path / "x.pt").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(mask)


# --------------------------------------------------------------------------- tokenizer


def test_tokenizer_commands_on_bad_input_write_nothing(run_dir: Path, tmp_path: Path) -> None:
    model = str(run_dir / "spm" / "spm.model")
    src = tmp_path / "in.txt"
    src.write_bytes(b"the cat\nbad \xff\n")
    out = tmp_path / "out.txt"
    assert_error(invoke("tokenizer", "encode", model, "-i", str(src), "-o", str(out)), "in.txt:2")
    write(src, "5 6\n7 99999\n")
    line = assert_error(invoke("tokenizer", "decode", model, "-i", str(src), "-o", str(out)))
    assert "in.txt:2: id out of range" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]  # no output, no temp file
    bogus = tmp_path / "bogus.model"
    bogus.write_bytes(b"\x00" * 64)
    result = invoke("tokenizer", "encode", str(bogus), "-i", str(src), "-o", str(out))
    assert_error(result, "bogus.model", "not a valid sentencepiece model")
