"""From a YAML file and `section.key=value` overrides to a validated ExperimentConfig, and back.

`load_config` reads the file, applies the overrides to the raw mapping, converts it to the
dataclasses of schema.py (convert.py) and validates it once (validate.py). `config_to_dict`
and `dump_config` give the resolved config's plain form, saved in the run directory and in
every checkpoint.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import yaml

from mtkit.config.convert import dataclass_from_dict
from mtkit.config.schema import ConfigError, ExperimentConfig
from mtkit.config.validate import validate


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


START_HINT = "start from configs/demo.yaml (copy it, then edit its data paths)"


def read_config_file(path: Path) -> dict[str, Any]:
    """An experiment YAML file's mapping; an empty file (no sections) is refused."""
    raw = read_yaml(path)
    if not raw:
        raise ConfigError(f"{path}: the config is empty; {START_HINT}")
    return raw


def check_required(raw: dict[str, Any], path: Path) -> None:
    """Keys without a useful default must be given: data.train (what to train on)."""
    data = raw.get("data")
    if not isinstance(data, dict) or "train" not in data:
        raise ConfigError(
            f"{path}: data.train: required (the training data: a path prefix, a file or a "
            f"hub dataset); {START_HINT}"
        )


def config_from_dict(raw: dict[str, Any]) -> ExperimentConfig:
    """Build and validate an ExperimentConfig from a plain dict."""
    cfg = dataclass_from_dict(ExperimentConfig, raw, "")
    validate(cfg)
    return cfg


def load_config(path: Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load YAML (or defaults when `path` is None), apply overrides, validate.

    A file must give data.train (and cannot be empty); the defaults alone are for the API.
    """
    raw = read_config_file(path) if path is not None else {}
    raw = apply_overrides(raw, overrides or [])
    try:
        cfg = config_from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path is not None else str(e)) from None
    if path is not None:
        check_required(raw, path)
    return cfg


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
