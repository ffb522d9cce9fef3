"""Typed experiment configuration: dataclasses, YAML loading, dotted overrides, validation.

No torch import here: `mtkit --help` and config errors stay fast.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml


class ConfigError(ValueError):
    """A config problem the user must fix; the message names the file/key and what was expected."""


@dataclass
class DataConfig:
    """Where the parallel text lives and how it is cleaned."""

    src_lang: str = "en"  # source language code; also the file suffix for `format: text`
    tgt_lang: str = "de"  # target language code
    format: Literal["text", "tsv", "csv", "jsonl", "parquet", "hub"] = "text"
    # text: a path prefix, read as PREFIX.src_lang / PREFIX.tgt_lang. Other formats: a file path.
    train: str = "data/train"
    valid: str | None = "data/valid"  # None: carve `valid_size` pairs out of train
    test: str | None = "data/test"  # None: no test split
    valid_size: int = 1000  # pairs carved from train when `valid` is None
    prepared_dir: str = "prepared/demo"  # where the cleaned, encoded dataset is saved
    max_len: int = 100  # drop pairs with more tokens than this on either side
    max_ratio: float = 3.0  # drop pairs whose token-length ratio exceeds this
    num_proc: int = 1  # processes for datasets.map (encoding)


@dataclass
class TokenizerConfig:
    """sentencepiece settings, trained on the training split only."""

    type: Literal["bpe", "unigram"] = "bpe"
    vocab_size: int = 8000  # per model; for a joint model, the shared vocabulary
    joint: bool = True  # one model for both languages (allows shared embeddings)
    character_coverage: float = 1.0  # 0.9995 for languages with large alphabets (ja, zh)
    byte_fallback: bool = False  # spell unknown characters as bytes instead of <unk>
    input_sentence_size: int = 1_000_000  # sample at most this many sentences to train


@dataclass
class ModelConfig:
    """Encoder-decoder Transformer size and wiring (defaults: a small 'base-like' model)."""

    d_model: int = 256  # width of every residual stream
    n_heads: int = 4  # attention heads; d_model must be divisible by it
    encoder_layers: int = 3
    decoder_layers: int = 3
    d_ff: int = 1024  # hidden width of the position-wise feed-forward block
    dropout: float = 0.1  # on embeddings and residual branches
    attention_dropout: float = 0.0  # on attention probabilities
    activation_dropout: float = 0.0  # after the feed-forward activation
    activation: Literal["relu", "gelu"] = "relu"
    norm: Literal["pre", "post"] = "pre"  # pre-norm trains stably without long warm-up
    share_embeddings: bool = True  # one embedding table for source and target (joint vocab only)
    tie_output: bool = True  # output projection shares the target embedding matrix
    max_positions: int = 1024  # longest sequence the positional table covers


@dataclass
class TrainingConfig:
    """Optimisation, schedule and bookkeeping."""

    seed: int = 1234
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["float32", "bfloat16", "float16"] = "float32"  # bf16/fp16 only pay on GPUs
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    max_tokens: int = 4096  # token budget per batch (source + target, padding included)
    max_steps: int = 10000  # optimizer updates; the run stops here
    max_epochs: int = 0  # 0 means no epoch limit
    max_time: float = 0.0  # wall-clock limit in minutes; 0 means none
    lr: float = 5e-4  # peak learning rate, reached at the end of warm-up
    warmup_steps: int = 1000  # linear warm-up, then inverse-square-root decay
    betas: tuple[float, float] = (0.9, 0.98)
    adam_eps: float = 1e-9
    weight_decay: float = 0.0
    clip_norm: float = 1.0  # gradient-norm clipping; 0 disables
    label_smoothing: float = 0.1
    log_every: int = 50  # steps between progress lines
    valid_every: int = 500  # steps between validations
    valid_bleu_sentences: int = 200  # dev sentences greedily decoded for validation BLEU


@dataclass
class DecodingConfig:
    """Inference defaults; every key can be overridden on the translate/evaluate command line."""

    beam_size: int = 5  # 1 means greedy search
    length_penalty: float = 1.0  # GNMT alpha: score / ((5 + len) / 6) ** alpha; 0 = raw log-prob
    max_len_a: float = 1.5  # max output length = a * source length + b
    max_len_b: int = 10
    max_tokens: int = 4000  # source-token budget per translation batch


@dataclass
class ExperimentConfig:
    """One experiment: the whole YAML file."""

    name: str = "experiment"  # run directory is runs/<name> unless run_dir is set
    run_dir: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)

    @property
    def run_path(self) -> Path:
        """Directory holding checkpoints, logs, metrics and the resolved config."""
        return Path(self.run_dir) if self.run_dir else Path("runs") / self.name


T = TypeVar("T")


# --------------------------------------------------------------------------- conversion


def _type_name(tp: Any) -> str:
    """Human-readable name of a type hint."""
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if _is_union(tp):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if typing.get_origin(tp) is tuple:
        return "a list of " + ", ".join(_type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return "a list of " + _type_name(typing.get_args(tp)[0])
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the type hint `tp`; return it (ints widen to float)."""
    origin = typing.get_origin(tp)
    if _is_union(tp):
        for arg in typing.get_args(tp):
            try:
                return _convert(value, arg, key)
            except ConfigError:
                continue
        raise _type_error(key, value, tp)
    if tp is type(None):
        if value is None:
            return None
        raise _type_error(key, value, tp)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise _type_error(key, value, tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, (list, tuple)) and len(value) == len(args):
            return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        raise _type_error(key, value, tp)
    if origin is list:
        (arg,) = typing.get_args(tp)
        if isinstance(value, list):
            return [_convert(v, arg, f"{key}[{i}]") for i, v in enumerate(value)]
        raise _type_error(key, value, tp)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(key, value, tp)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _type_error(key, value, tp)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _type_error(key, value, tp)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _type_error(key, value, tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of keys, got {value!r}")
        return _from_dict(tp, value, key)  # type: ignore[arg-type]
    raise ConfigError(f"{key}: unsupported type {tp!r}")  # pragma: no cover


def _type_error(key: str, value: Any, tp: Any) -> ConfigError:
    return ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def _from_dict(cls: type[T], data: dict[str, Any], prefix: str) -> T:
    """Build dataclass `cls` from a dict, rejecting unknown keys with a suggestion."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"unknown key '{dotted}'{_suggest(str(key), names, prefix)}")
        kwargs[key] = _convert(value, hints[key], dotted)
    return cls(**kwargs)


def _suggest(key: str, names: list[str], prefix: str) -> str:
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{prefix + '.' if prefix else ''}{close[0]}'?)"
    return f" (valid keys: {', '.join(names)})"


# --------------------------------------------------------------------------- validation


def _check(cond: bool, key: str, expected: str, value: Any) -> None:
    if not cond:
        raise ConfigError(f"{key}: expected {expected}, got {value!r}")


def validate(cfg: ExperimentConfig) -> None:
    """Reject values that type-check but cannot work (sizes, ratios, incompatible options)."""
    m, t, d, tok, data = cfg.model, cfg.training, cfg.decoding, cfg.tokenizer, cfg.data
    for section, obj in (("model", m), ("training", t), ("decoding", d), ("data", data)):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            positive = f.name in {
                "d_model", "n_heads", "d_ff", "max_positions", "max_tokens", "max_steps",
                "log_every", "valid_every", "beam_size", "max_len", "num_proc", "valid_size",
            }  # fmt: skip
            if positive:
                _check(value > 0, f"{section}.{f.name}", "a positive number", value)
    _check(m.encoder_layers >= 1, "model.encoder_layers", "at least 1", m.encoder_layers)
    _check(m.decoder_layers >= 1, "model.decoder_layers", "at least 1", m.decoder_layers)
    _check(
        m.d_model % m.n_heads == 0,
        "model.d_model",
        f"a multiple of model.n_heads ({m.n_heads})",
        m.d_model,
    )
    _check(m.d_model % 2 == 0, "model.d_model", "an even number (sinusoidal positions)", m.d_model)
    for name in ("dropout", "attention_dropout", "activation_dropout"):
        v = getattr(m, name)
        _check(0.0 <= v < 1.0, f"model.{name}", "a value in [0, 1)", v)
    _check(0.0 <= t.label_smoothing < 1.0, "training.label_smoothing", "a value in [0, 1)", t.label_smoothing)  # fmt: skip
    _check(t.lr > 0, "training.lr", "a positive number", t.lr)
    _check(t.warmup_steps >= 0, "training.warmup_steps", "zero or more", t.warmup_steps)
    _check(t.clip_norm >= 0, "training.clip_norm", "zero or more", t.clip_norm)
    _check(t.max_epochs >= 0, "training.max_epochs", "zero or more", t.max_epochs)
    _check(t.max_time >= 0, "training.max_time", "zero or more", t.max_time)
    _check(t.threads >= 0, "training.threads", "zero or more", t.threads)
    _check(t.valid_bleu_sentences >= 0, "training.valid_bleu_sentences", "zero or more", t.valid_bleu_sentences)  # fmt: skip
    _check(tok.vocab_size >= 16, "tokenizer.vocab_size", "at least 16", tok.vocab_size)
    _check(0.0 < tok.character_coverage <= 1.0, "tokenizer.character_coverage", "a value in (0, 1]", tok.character_coverage)  # fmt: skip
    _check(tok.input_sentence_size > 0, "tokenizer.input_sentence_size", "a positive number", tok.input_sentence_size)  # fmt: skip
    _check(data.max_ratio >= 1.0, "data.max_ratio", "at least 1.0", data.max_ratio)
    _check(data.src_lang != data.tgt_lang, "data.tgt_lang", "a language different from data.src_lang", data.tgt_lang)  # fmt: skip
    _check(d.length_penalty >= 0, "decoding.length_penalty", "zero or more", d.length_penalty)
    _check(d.max_len_a >= 0 and d.max_len_b >= 0, "decoding.max_len_a", "a non-negative a and b", (d.max_len_a, d.max_len_b))  # fmt: skip
    if m.share_embeddings and not tok.joint:
        raise ConfigError(
            "model.share_embeddings: needs tokenizer.joint: true (one vocabulary for both "
            "languages); set model.share_embeddings: false for separate vocabularies"
        )
    if data.max_len + 2 > m.max_positions:
        raise ConfigError(
            f"data.max_len: expected at most model.max_positions - 2 ({m.max_positions - 2}), "
            f"got {data.max_len}"
        )


# --------------------------------------------------------------------------- loading


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split 'section.key=value' into (['section', 'key'], parsed YAML value)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected section.key=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override '{text}': expected section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of the raw config dict with dotted overrides applied."""
    out: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = {}
                node[part] = child
            if not isinstance(child, dict):
                raise ConfigError(f"override '{text}': '{part}' is not a section")
            node = child
        node[parts[-1]] = value
    return out


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping safely; errors name the file and line."""
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    if not path.is_file():
        raise ConfigError(f"{path}: expected a YAML file, found a directory")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}:{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return data


def config_from_dict(raw: dict[str, Any]) -> ExperimentConfig:
    """Build and validate an ExperimentConfig from a plain dict."""
    cfg = _from_dict(ExperimentConfig, raw, "")
    validate(cfg)
    return cfg


def load_config(path: Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load YAML (or defaults when `path` is None), apply overrides, validate."""
    raw = read_yaml(path) if path is not None else {}
    raw = apply_overrides(raw, overrides or [])
    try:
        return config_from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path is not None else str(e)) from None


def config_to_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    """Plain-dict form (tuples as lists) suitable for YAML/JSON and checkpoints."""

    def plain(obj: Any) -> Any:
        if isinstance(obj, tuple):
            return [plain(v) for v in obj]
        if isinstance(obj, dict):
            return {k: plain(v) for k, v in obj.items()}
        return obj

    return typing.cast(dict[str, Any], plain(dataclasses.asdict(cfg)))


def dump_config(cfg: ExperimentConfig) -> str:
    """YAML text of the resolved config."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def model_config_from_dict(raw: dict[str, Any]) -> ModelConfig:
    """Rebuild a ModelConfig stored in a checkpoint."""
    return _from_dict(ModelConfig, raw, "model")
