"""Typed conversion of parsed YAML values to the config's field types.

A value is checked against its field's type hint (Literal, unions, tuples, lists, scalars,
nested dataclasses); a mismatch is a ConfigError naming the dotted key, the expected type and
a short repr of what was given. Unknown keys are rejected with a "did you mean" suggestion.
"""

from __future__ import annotations

import dataclasses
import difflib
import reprlib
import types
import typing
from typing import Any, Literal, TypeVar, Union

from mtkit.config.schema import ConfigError

T = TypeVar("T")

_SCALARS: dict[Any, tuple[type, ...]] = {
    bool: (bool,),
    int: (int,),
    float: (int, float),
    str: (str,),
}

_REPR = reprlib.Repr()  # bounded work and length, even for a YAML alias bomb
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict = 2, 4, 4, 4
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 40


def short_repr(value: Any) -> str:
    """repr() cut to about 40 characters per item, 4 items and 2 levels deep."""
    return _REPR.repr(value)


def changed_fields(obj: Any, known: frozenset[str] | set[str]) -> list[tuple[str, Any, Any]]:
    """(name, value, default) of the fields of dataclass `obj` outside `known` that differ from
    their defaults (what an exporter that understands only `known` cannot carry over)."""
    defaults = type(obj)()
    return [
        (f.name, getattr(obj, f.name), getattr(defaults, f.name))
        for f in dataclasses.fields(obj)
        if f.name not in known and getattr(obj, f.name) != getattr(defaults, f.name)
    ]


def dataclass_from_dict(cls: type[T], data: dict[str, Any], prefix: str) -> T:
    """Build dataclass `cls` from a dict, rejecting unknown keys with a suggestion.

    `prefix` is the dotted path of `data` in the whole config ("" at the top), for messages.
    """
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


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the type hint `tp`; return it (ints widen to float)."""
    origin = typing.get_origin(tp)
    if _is_union(tp):
        for arg in typing.get_args(tp):
            try:
                return _convert(value, arg, key)
            except ConfigError:
                if _same_shape(value, arg):  # the member the value meant to be: its error
                    raise
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
        return dataclass_from_dict(tp, value, key)  # type: ignore[arg-type]
    raise ConfigError(f"{key}: unsupported type {tp!r}")  # pragma: no cover


def _same_shape(value: Any, tp: Any) -> bool:
    """A list for a list type, a mapping for a section: the error inside says more."""
    if isinstance(value, dict):
        return dataclasses.is_dataclass(tp)
    return isinstance(value, list) and typing.get_origin(tp) is list


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
    if dataclasses.is_dataclass(tp):
        names = ", ".join(f.name for f in dataclasses.fields(tp))
        return f"a mapping ({names})"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)
