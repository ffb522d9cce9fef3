"""Value checks the types alone cannot express: signs, ranges and keys that depend on each other.

`validate` runs once, when a config is built (load.config_from_dict); a failure is a ConfigError
naming the key, what was expected and what was given.
"""

from __future__ import annotations

import typing
from typing import Any

from mtkit.config.convert import short_repr
from mtkit.config.schema import (
    AttentionKernel,
    ConfigError,
    CorpusConfig,
    DataConfig,
    DecodingConfig,
    EarlyStopping,
    ExperimentConfig,
    LengthNorm,
    Precision,
    TrainingConfig,
)


def _check(cond: bool, key: str, expected: str, value: Any) -> None:
    if not cond:
        raise ConfigError(f"{key}: expected {expected}, got {short_repr(value)}")


def _check_choice(value: Any, choices: Any, key: str) -> None:
    """`value` must be one of the Literal type `choices`' values."""
    allowed = typing.get_args(choices)
    _check(value in allowed, key, f"one of {', '.join(allowed)}", value)


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
                 "patience", "rdrop_alpha"),
    "data": ("test_size",),
    "tokenizer": ("sampling_alpha",),
}  # fmt: skip
_FRACTIONS = {  # values in [0, 1)
    "model": ("dropout", "attention_dropout", "activation_dropout", "word_dropout"),
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
    _validate_name(cfg.name)
    m, tok, data = cfg.model, cfg.tokenizer, cfg.data
    heads = f"a multiple of model.n_heads ({m.n_heads})"
    _check(m.d_model % m.n_heads == 0, "model.d_model", heads, m.d_model)
    _check(m.d_model % 2 == 0, "model.d_model", "an even number (sinusoidal PE)", m.d_model)
    _check(tok.vocab_size >= 16, "tokenizer.vocab_size", "at least 16", tok.vocab_size)
    coverage = tok.character_coverage
    _check(0.0 < coverage <= 1.0, "tokenizer.character_coverage", "a value in (0, 1]", coverage)
    dropout = tok.type != "bpe" or tok.sampling_alpha < 1.0  # 1 would drop every BPE merge
    _check(dropout, "tokenizer.sampling_alpha", "less than 1 for bpe", tok.sampling_alpha)
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
    if data.bidirectional:
        _validate_bidirectional(data, tok.joint)
    if data.max_len + 2 > m.max_positions:
        raise ConfigError(
            f"data.max_len: expected at most model.max_positions - 2 ({m.max_positions - 2}), "
            f"got {data.max_len}"
        )


def _validate_name(name: str) -> None:
    """A run's name names it; where it goes is `run_dir`'s business (runs/<name> by default)."""
    plain = bool(name) and name.strip() == name and "\x00" not in name
    plain = plain and not any(sep in name for sep in ("/", "\\")) and ".." not in name
    if not plain or name == ".":
        raise ConfigError(
            f"name: expected a plain name (no '/', '\\' or '..'), got {short_repr(name)}; "
            "to put the run elsewhere set run_dir (e.g. --set run_dir=/data/runs/x)"
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
    # Literal types are not checked on the command line
    for name, choices in (
        ("length_norm", LengthNorm),
        ("early_stopping", EarlyStopping),
        ("precision", Precision),
        ("attention_kernel", AttentionKernel),
    ):
        _check_choice(getattr(dec, name), choices, prefix + name)
    if not dec.sampling and dec.nbest > dec.beam_size:
        raise ConfigError(
            f"{prefix}nbest ({dec.nbest}) must be at most the beam size ({dec.beam_size}); "
            f"use a beam of {dec.nbest} or more"
        )


def _validate_training(t: TrainingConfig) -> None:
    """Training keys that depend on each other."""
    _check(t.min_lr <= t.lr, "training.min_lr", f"at most training.lr ({t.lr})", t.min_lr)
    for name in ("init_keep_optimizer", "init_keep_schedule"):
        if getattr(t, name) and t.init_from is None:
            raise ConfigError(f"training.{name}: needs training.init_from (--init-from RUN)")
    if t.best_metric != "loss" and t.valid_bleu_sentences == 0:
        raise ConfigError(
            f"training.best_metric: '{t.best_metric}' needs training.valid_bleu_sentences > 0 "
            "(or set training.best_metric: loss)"
        )


def _validate_data(data: DataConfig) -> None:
    """Checks of the input/cleaning keys that need more than a sign or range."""
    carved = data.valid_fraction + data.test_fraction
    _check(carved < 1.0, "data.test_fraction", "less than 1 - data.valid_fraction", carved)
    trains = data.train_entries()
    _check(bool(trains), "data.train", "a path or a list of paths", data.train)
    for i, entry in enumerate(trains):
        key = f"data.train[{i}]" if isinstance(data.train, list) else "data.train"
        if isinstance(entry, CorpusConfig):
            _validate_corpus(entry, key)
        else:
            _check(bool(entry), key, "a path", entry)
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
    if data.strict and data.on_bad_row == "skip":
        raise ConfigError("data.on_bad_row: 'skip' contradicts data.strict: true; drop one of them")


def _validate_bidirectional(data: DataConfig, joint: bool) -> None:
    """Reversed pairs put target sentences on the source side: one vocabulary, no source tags."""
    if not joint:
        raise ConfigError(
            "data.bidirectional: needs tokenizer.joint: true (reversed pairs put target-language "
            "sentences on the source side)"
        )
    trains = data.train_entries()
    if any(isinstance(t, CorpusConfig) and t.tag is not None for t in trains):
        raise ConfigError(
            "data.bidirectional: cannot be combined with a tagged data.train corpus (a reversed "
            "pair would carry its source tag on the target side); drop the tag or the option"
        )


def _validate_corpus(corpus: CorpusConfig, key: str) -> None:
    """A `data.train` entry given as {path, tag, weight}."""
    _check(bool(corpus.path), f"{key}.path", "a path", corpus.path)
    _check(corpus.weight > 0, f"{key}.weight", "a positive number", corpus.weight)
    tag = corpus.tag
    ok = tag is None or bool(tag) and len(tag.split()) == 1 and tag.strip() == tag
    _check(ok, f"{key}.tag", "null or a word without spaces, e.g. '<BT>'", tag)
