"""Property-based fuzzing of the two places users feed arbitrary text: configs and translation.

Configs: any YAML text, any dict, any `--set key=value` gives a valid config or a ConfigError,
never another exception. Translation: any lines (control characters, CR, NUL, emoji, unknown
scripts) give exactly one output line per input line and never an exception. Checkpoints: any
bytes give a checkpoint or a CheckpointError.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mtkit.checkpoint import CheckpointError, load_checkpoint
from mtkit.cli.main import app
from mtkit.config.load import config_from_dict, load_config
from mtkit.config.schema import ConfigError, ExperimentConfig
from mtkit.translation.output import interactive
from mtkit.translation.translator import Translator
from tests.tiny_checkpoint import write_tiny_run

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------- config


def _sections() -> dict[str, list[str]]:
    """Section name -> its keys; top-level scalar keys under ''."""
    out: dict[str, list[str]] = {"": []}
    hints = typing.get_type_hints(ExperimentConfig)
    for f in dataclasses.fields(ExperimentConfig):
        if dataclasses.is_dataclass(hints[f.name]):
            out[f.name] = [g.name for g in dataclasses.fields(hints[f.name])]
        else:
            out[""].append(f.name)
    return out


SECTIONS = _sections()
KEYS = list(SECTIONS[""]) + [f"{s}.{k}" for s, ks in SECTIONS.items() if s for k in ks]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.integers(),  # arbitrarily large: 10**400 does not fit a float
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["auto", "cpu", "bpe", "unigram", "pre", "relu", "text", "tsv", "3e-4"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=15))


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for dotted, value in flat.items():
        section, _, key = dotted.rpartition(".")
        if section and isinstance(raw.setdefault(section, {}), dict):
            raw[section][key] = value
        else:
            raw[dotted] = value
    return raw


def _valid_or_config_error(build: Any) -> None:
    try:
        cfg = build()
    except ConfigError as e:
        assert str(e) and "\n" not in str(e).strip()  # one line
    else:
        assert isinstance(cfg, ExperimentConfig)


@FUZZ
@given(st.dictionaries(keys, values, max_size=6))
def test_any_config_dict_is_valid_or_a_config_error(flat: dict[str, Any]) -> None:
    _valid_or_config_error(lambda: config_from_dict(_nest(flat)))


@FUZZ
@given(st.lists(st.tuples(keys, st.text(max_size=20)), max_size=4))
def test_any_overrides_are_valid_or_a_config_error(pairs: list[tuple[str, str]]) -> None:
    overrides = [f"{k}={v}" for k, v in pairs]
    _valid_or_config_error(lambda: load_config(None, overrides))


@FUZZ
@given(st.text(max_size=30))
def test_any_override_string_is_valid_or_a_config_error(text: str) -> None:
    _valid_or_config_error(lambda: load_config(None, [text]))


yaml_like = st.text(
    alphabet=st.sampled_from(list("model: d_ff\n -[]{}!&*#|>'\"0123456789.e,\t?%@`")), max_size=60
)


@FUZZ
@given(st.one_of(yaml_like, st.text(max_size=60)))
def test_any_yaml_text_is_valid_or_a_config_error(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    path = tmp_path_factory.mktemp("yaml") / "exp.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _valid_or_config_error(lambda: load_config(path))


def test_huge_integer_for_a_float_key_is_a_config_error() -> None:
    """YAML reads 1 followed by 400 zeros as an int; float() of it would overflow."""
    with pytest.raises(ConfigError, match=r"training\.lr"):
        load_config(None, ["training.lr=1" + "0" * 400])


# --------------------------------------------------------------------------- translate


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def translators(tmp_path_factory: pytest.TempPathFactory, run_dir: Path) -> list[Translator]:
    """A plain tiny model and one whose byte-fallback vocabulary can emit any byte (even \\n)."""
    bytes_run = write_tiny_run(tmp_path_factory.mktemp("bytes"), byte_fallback=True)
    return [Translator.load(run_dir, device="cpu"), Translator.load(bytes_run, device="cpu")]


# Any code point, control characters and lone surrogates (what surrogateescape makes of
# undecodable bytes, e.g. at the interactive prompt) included.
any_char = st.characters()
nasty = st.sampled_from(["\r", "\x00", "\t", "\x0b", "\x1b[31m", "\u2028", "\ufeff", "🙂", "漢"])
line = st.lists(st.one_of(st.text(any_char, max_size=10), nasty), max_size=5).map("".join)
lines = st.lists(line.map(lambda s: s.replace("\n", " ")), max_size=6)


@FUZZ
@given(batch=lines, greedy=st.booleans())
def test_translate_gives_one_line_per_input_line(
    translators: list[Translator], batch: list[str], greedy: bool
) -> None:
    for translator in translators:
        options = dataclasses.replace(translator.config.decoding, beam_size=1 if greedy else 2)
        out = translator.translate(batch, options)
        assert len(out) == len(batch)
        for source, text in zip(batch, out, strict=True):
            assert "\n" not in text and "\r" not in text
            if not source.strip():
                assert text == ""


def test_lone_surrogates_become_replacement_characters(translators: list[Translator]) -> None:
    translator = translators[0]
    out = translator.translate_full(["caf\udce9", "a \ud800"], translator.config.decoding)
    assert out[0].source == "caf\ufffd"  # the byte 0xe9 that surrogateescape had kept
    assert out[1].source.startswith("a \ufffd")
    assert all(t.source.encode("utf-8") and "\n" not in t.text for t in out)


def test_prompt_survives_a_line_that_is_not_utf8(
    translators: list[Translator], caplog: pytest.LogCaptureFixture
) -> None:
    typed: list[Any] = [UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "ok"]

    def read(prompt: str) -> str:
        if not typed:
            raise EOFError
        item = typed.pop(0)
        if isinstance(item, Exception):
            raise item
        return str(item)

    shown: list[str] = []
    translator = translators[0]
    assert interactive(translator, translator.config.decoding, read, shown.append) == 1
    assert len(shown) == 1 and "not valid UTF-8" in caplog.text


def test_a_decoded_newline_does_not_split_the_output(
    translators: list[Translator], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the target tokenizer decodes to, the output stays one line per input."""
    translator = translators[0]
    tgt = translator.tokenizers.tgt
    monkeypatch.setattr(tgt, "decode", lambda ids: ["a\nb\r\nc" for _ in ids])
    assert translator.translate(["x", "", "y"], translator.config.decoding) == [
        "a b  c",
        "",
        "a b  c",
    ]


@FUZZ
@given(st.lists(st.binary(max_size=30), max_size=5))
def test_cli_stdin_any_bytes_one_line_each(run_dir: Path, chunks: list[bytes]) -> None:
    """Raw bytes on stdin (invalid UTF-8, CR, NUL): exit 0, one output line per input line."""
    data = b"\n".join(c.replace(b"\n", b" ") for c in chunks)
    data += b"\n" if chunks else b""
    result = CliRunner().invoke(app, ["translate", str(run_dir), "--greedy"], input=data)
    assert result.exception is None, repr(result.exception)
    assert result.exit_code == 0
    assert result.stdout.count("\n") == len(chunks)


# --------------------------------------------------------------------------- checkpoints


@FUZZ
@given(data=st.data())
def test_any_bytes_are_a_checkpoint_or_a_checkpoint_error(
    run_dir: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    good = (run_dir / "best.pt").read_bytes()
    blob = data.draw(
        st.one_of(
            st.binary(max_size=2000),
            st.integers(0, len(good) - 1).map(lambda n: good[:n]),  # truncated
            st.tuples(st.integers(0, len(good) - 1), st.integers(0, 255)).map(
                lambda p: good[: p[0]] + bytes([p[1]]) + good[p[0] + 1 :]  # one byte changed
            ),
        )
    )
    path = tmp_path_factory.mktemp("ckpt") / "x.pt"
    path.write_bytes(blob)
    try:
        state = load_checkpoint(path)
    except CheckpointError as e:
        assert str(e).startswith(str(path))
    else:
        assert isinstance(state, dict)
