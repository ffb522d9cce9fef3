"""Typed experiment configuration: dataclasses, YAML loading, dotted overrides, validation.

No torch import here: `mtkit --help` and config errors stay fast.
"""

from __future__ import annotations

import dataclasses
import difflib
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from mtkit.errors import MtkitError


class ConfigError(MtkitError):
    """A config problem the user must fix; the message names the file/key and what was expected."""


@dataclass
class DataConfig:
    """Where the parallel text lives and how it is cleaned."""

    src_lang: str = "en"  # source language code; also the file suffix for `format: text`
    tgt_lang: str = "de"  # target language code
    format: Literal["text", "tsv", "csv", "jsonl", "parquet", "hub"] = "text"
    # text: a path prefix, read as PREFIX.src_lang / PREFIX.tgt_lang. Other formats: a file path.
    # hub: "NAME" or "NAME:SPLIT" (split defaults to train / validation / test).
    train: str | list[str] = "data/train"  # a list: several corpora, concatenated
    valid: str | None = "data/valid"  # None: carve `valid_size` pairs out of train
    test: str | None = "data/test"  # None: no test split (unless test_size/test_fraction carve one)
    valid_size: int = 1000  # pairs carved from train when `valid` is None
    prepared_dir: str = "prepared/demo"  # where the cleaned, encoded dataset is saved
    max_len: int = 100  # drop pairs with more tokens than this on either side
    max_ratio: float = 3.0  # drop pairs whose token-length ratio exceeds this
    num_proc: int = 1  # processes for datasets.map (encoding)
    # Columns for tsv/csv/jsonl/parquet/hub. tsv/csv: an int is a 0-based column and there is no
    # header; a name means the first row is a header. None: columns 0/1 for tsv/csv; for the
    # others the src_lang/tgt_lang keys, or a hub-style {"translation": {src_lang: .., ..}}.
    src_column: int | str | None = None
    tgt_column: int | str | None = None
    hub_config: str | None = None  # config name of a hub dataset (e.g. "de-en" for wmt14)
    valid_fraction: float = 0.0  # > 0: carve this share of train instead of valid_size pairs
    test_size: int = 0  # pairs carved from train as the test split when `test` is None
    test_fraction: float = 0.0  # > 0: carve this share of train as test instead of test_size
    seed: int = 1234  # shuffles carved splits; a fixed seed gives the same splits every time
    unicode_form: Literal["NFC", "NFKC", "none"] = "NFC"  # NFKC also folds compatibility chars
    normalize_whitespace: bool = True  # collapse runs of whitespace (tabs, \r, NBSP) to one space
    dedup: bool = True  # drop exact duplicate (src, tgt) pairs from train
    drop_same: bool = False  # drop train pairs whose source equals the target (untranslated)
    clean_eval: bool = False  # also filter valid/test by length/ratio/duplicates/same; False
    # keeps them whole so scores compare with other systems (over-long ids are truncated instead)
    strict: bool = False  # invalid UTF-8 or malformed rows are fatal instead of skipped + counted


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
    warmup_steps: int = 1000  # updates of linear warm-up from 0 to `lr`
    # After warm-up: inverse_sqrt decays as 1/sqrt(step) (the Transformer paper); cosine and
    # linear decay to `min_lr` at max_steps; constant stays at `lr`.
    schedule: Literal["inverse_sqrt", "cosine", "linear", "constant"] = "inverse_sqrt"
    min_lr: float = 0.0  # cosine/linear end here at max_steps; after warm-up lr stays above it
    accumulate: int = 1  # micro-batches per update: the update sees max_tokens * accumulate tokens
    betas: tuple[float, float] = (0.9, 0.98)
    adam_eps: float = 1e-9
    weight_decay: float = 0.0
    clip_norm: float = 1.0  # gradient-norm clipping; 0 disables
    label_smoothing: float = 0.1
    log_every: int = 50  # steps between progress lines
    valid_every: int = 500  # steps between validations
    valid_bleu_sentences: int = 200  # dev sentences greedily decoded for validation BLEU
    save_every: int = 0  # updates between checkpoints; 0 = at every validation
    keep_last: int = 5  # step_NNNNNN.pt files kept (oldest deleted); last.pt/best.pt always kept
    best_metric: Literal["bleu", "chrf", "loss"] = "bleu"  # picks best.pt and drives patience
    patience: int = 0  # stop after this many validations without improvement; 0 = never
    max_bad_steps: int = 5  # NaN/inf updates are skipped; this many in a row stops training
    compile: bool = False  # torch.compile the model (faster on GPUs; slow first steps)


LengthNorm = Literal["gnmt", "average", "none"]


@dataclass
class DecodingConfig:
    """Inference defaults; every key can be overridden on the translate/evaluate command line.

    This one object travels from the YAML (or a checkpoint) and the CLI flags to the searches;
    `validate_decoding` checks it once.
    """

    beam_size: int = 5  # 1 means greedy search
    length_penalty: float = 1.0  # GNMT alpha: score / ((5 + len) / 6) ** alpha; 0 = raw log-prob
    # How beam search ranks finished hypotheses of different lengths (len counts EOS):
    # gnmt: log_prob / ((5 + len) / 6) ** length_penalty; average: log_prob / len (per-token
    # mean); none: raw log_prob, which favours short outputs.
    length_norm: LengthNorm = "gnmt"
    max_len_a: float = 1.5  # max output length = a * source length + b
    max_len_b: int = 10
    min_len: int = 0  # EOS is forbidden before this many output tokens
    no_repeat_ngram: int = 0  # > 0: beam search never repeats an n-gram of this size
    nbest: int = 1  # hypotheses per sentence (at most beam_size; samples when sampling)
    sampling: bool = False  # sample instead of searching (e.g. for back-translation)
    temperature: float = 1.0  # sampling: < 1 sharpens, > 1 flattens the distribution
    top_k: int = 0  # sampling: keep only the k most probable tokens; 0 keeps all
    top_p: float = 1.0  # sampling: keep the smallest set of tokens with this much mass
    seed: int = 1234  # sampling: the same seed and input give the same samples
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
        args = typing.get_args(tp)
        return f"a list of {len(args)} values (" + ", ".join(_type_name(a) for a in args) + ")"
    if typing.get_origin(tp) is list:
        return "a list of " + _type_name(typing.get_args(tp)[0])
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


_SCALARS: dict[Any, tuple[type, ...]] = {
    bool: (bool,),
    int: (int,),
    float: (int, float),
    str: (str,),
}


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
    if tp is type(None) or origin is Literal:
        allowed = (None,) if tp is type(None) else typing.get_args(tp)
        if any(value is a or (type(value) is type(a) and value == a) for a in allowed):
            return value
        raise _type_error(key, value, tp)
    if origin in (tuple, list):
        return _convert_sequence(value, tp, key)
    if tp is float and isinstance(value, str):
        value = _yaml11_float(value)  # YAML 1.1 reads 3e-4 (no dot) as a string
    if tp in _SCALARS:
        is_bool = isinstance(value, bool)
        if isinstance(value, _SCALARS[tp]) and (is_bool == (tp is bool)):
            try:
                return float(typing.cast(float, value)) if tp is float else value
            except OverflowError:  # an int of hundreds of digits
                raise _type_error(key, value, tp) from None
        raise _type_error(key, value, tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of keys, got {short_repr(value)}")
        return _from_dict(tp, value, key)  # type: ignore[arg-type]
    raise ConfigError(f"{key}: unsupported type {tp!r}")  # pragma: no cover


def _yaml11_float(text: str) -> float | str:
    """'3e-4' as a float; any other string unchanged (so the type error shows it)."""
    try:
        return float(text) if any(c.isdigit() for c in text) else text
    except ValueError:
        return text


def _convert_sequence(value: Any, tp: Any, key: str) -> Any:
    """Tuples of fixed length and homogeneous lists."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is tuple:
        if isinstance(value, (list, tuple)) and len(value) == len(args):
            items = zip(value, args, strict=True)
            return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(items))
        raise _type_error(key, value, tp)
    if isinstance(value, list):
        return [_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    raise _type_error(key, value, tp)


def _type_error(key: str, value: Any, tp: Any) -> ConfigError:
    return ConfigError(f"{key}: expected {_type_name(tp)}, got {short_repr(value)}")


_REPR = reprlib.Repr()  # bounded work and length, even for a YAML alias bomb
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict = 2, 4, 4, 4
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 40


def short_repr(value: Any) -> str:
    """repr() cut to about 40 characters per item, 4 items and 2 levels deep."""
    return _REPR.repr(value)


def _from_dict(cls: type[T], data: dict[str, Any], prefix: str) -> T:
    """Build dataclass `cls` from a dict, rejecting unknown keys with a suggestion."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            shown = dotted if dotted.isprintable() else repr(dotted)[1:-1]  # one line
            raise ConfigError(f"unknown key '{shown}'{_suggest(str(key), names, prefix)}")
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
        raise ConfigError(f"{key}: expected {expected}, got {short_repr(value)}")


_POSITIVE = {
    "model": ("d_model", "n_heads", "d_ff", "max_positions", "encoder_layers", "decoder_layers"),
    "training": (
        "max_tokens",
        "max_steps",
        "log_every",
        "valid_every",
        "lr",
        "accumulate",
        "max_bad_steps",
    ),
    "data": ("max_len", "num_proc", "valid_size"),
    "tokenizer": ("vocab_size", "input_sentence_size"),
}
_NON_NEGATIVE = {
    "training": ("warmup_steps", "clip_norm", "max_epochs", "max_time", "threads",
                 "valid_bleu_sentences", "weight_decay", "min_lr", "save_every", "keep_last",
                 "patience"),
    "data": ("test_size",),
}  # fmt: skip
_FRACTIONS = {  # values in [0, 1)
    "model": ("dropout", "attention_dropout", "activation_dropout"),
    "training": ("label_smoothing",),
    "data": ("valid_fraction", "test_fraction"),
}


def validate(cfg: ExperimentConfig) -> None:
    """Reject values that type-check but cannot work (sizes, ratios, incompatible options)."""
    for section, names in _POSITIVE.items():
        for name in names:
            value = getattr(getattr(cfg, section), name)
            _check(value > 0, f"{section}.{name}", "a positive number", value)
    for section, names in _NON_NEGATIVE.items():
        for name in names:
            value = getattr(getattr(cfg, section), name)
            _check(value >= 0, f"{section}.{name}", "zero or more", value)
    for section, names in _FRACTIONS.items():
        for name in names:
            value = getattr(getattr(cfg, section), name)
            _check(0.0 <= value < 1.0, f"{section}.{name}", "a value in [0, 1)", value)
    m, tok, data = cfg.model, cfg.tokenizer, cfg.data
    heads = f"a multiple of model.n_heads ({m.n_heads})"
    _check(m.d_model % m.n_heads == 0, "model.d_model", heads, m.d_model)
    _check(m.d_model % 2 == 0, "model.d_model", "an even number (sinusoidal PE)", m.d_model)
    _check(tok.vocab_size >= 16, "tokenizer.vocab_size", "at least 16", tok.vocab_size)
    coverage = tok.character_coverage
    _check(0.0 < coverage <= 1.0, "tokenizer.character_coverage", "a value in (0, 1]", coverage)
    _check(data.max_ratio >= 1.0, "data.max_ratio", "at least 1.0", data.max_ratio)
    other = "a language different from data.src_lang"
    _check(data.src_lang != data.tgt_lang, "data.tgt_lang", other, data.tgt_lang)
    _validate_data(data)
    _validate_training(cfg.training)
    validate_decoding(cfg.decoding)
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


def validate_decoding(dec: DecodingConfig, prefix: str = "decoding.") -> None:
    """Reject decoding values search cannot honour: the one check of a DecodingConfig, for the
    config file and for command-line overrides alike. `prefix` starts each key in a message
    ("" on the command line, where the flags stand for the keys)."""
    for name in ("beam_size", "max_tokens", "nbest", "temperature"):
        value = getattr(dec, name)
        _check(value > 0, prefix + name, "a positive number", value)
    for name in ("length_penalty", "max_len_a", "max_len_b", "min_len", "no_repeat_ngram", "top_k"):
        value = getattr(dec, name)
        _check(value >= 0, prefix + name, "zero or more", value)
    _check(0.0 < dec.top_p <= 1.0, prefix + "top_p", "a value in (0, 1]", dec.top_p)
    norms = typing.get_args(LengthNorm)  # the type is not checked on the command line
    expected = f"one of {', '.join(norms)}"
    _check(dec.length_norm in norms, prefix + "length_norm", expected, dec.length_norm)
    if not dec.sampling and dec.nbest > dec.beam_size:
        raise ConfigError(
            f"{prefix}nbest ({dec.nbest}) must be at most the beam size ({dec.beam_size}); "
            f"use a beam of {dec.nbest} or more"
        )


def _validate_training(t: TrainingConfig) -> None:
    """Training keys that depend on each other."""
    _check(t.min_lr <= t.lr, "training.min_lr", f"at most training.lr ({t.lr})", t.min_lr)
    if t.best_metric != "loss" and t.valid_bleu_sentences == 0:
        raise ConfigError(
            f"training.best_metric: '{t.best_metric}' needs training.valid_bleu_sentences > 0 "
            "(or set training.best_metric: loss)"
        )


def _validate_data(data: DataConfig) -> None:
    """Checks of the input/cleaning keys that need more than a sign or range."""
    carved = data.valid_fraction + data.test_fraction
    _check(carved < 1.0, "data.test_fraction", "less than 1 - data.valid_fraction", carved)
    trains = data.train if isinstance(data.train, list) else [data.train]
    _check(bool(trains) and all(trains), "data.train", "a path or a list of paths", data.train)
    for name in ("src_column", "tgt_column"):
        v = getattr(data, name)
        ok = v is None or v != "" and not (isinstance(v, int) and v < 0)
        _check(ok, f"data.{name}", "a column name, a 0-based column number, or null", v)
        if data.format == "text":
            _check(v is None, f"data.{name}", "null for data.format: text", v)
    if type(data.src_column) is not type(data.tgt_column):
        raise ConfigError(
            "data.src_column/data.tgt_column: give both as names or both as numbers, or neither"
        )
    hub = data.hub_config
    _check(hub is None or data.format == "hub", "data.hub_config", "null unless format: hub", hub)


# --------------------------------------------------------------------------- loading


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split 'section.key=value' into (['section', 'key'], parsed YAML value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {text!r}: expected section.key=value")
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
                raise ConfigError(f"override {text!r}: {part!r} is not a section")
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
