"""Typed, validated configuration: one dataclass per component, loaded from the YAML files in config/.

A dataclass may define ``check(prefix)`` for rules across fields (``prefix`` names its place in the tree).
Each numeric field may carry ``metadata={"range": (low, high)}`` and ``"doc"``; the same metadata
validates a YAML file, a dict of overrides and the ROS parameters a node declares, so an out-of-range
value is rejected with one message format everywhere: which parameter, what it got, what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


def param_range(low: float, high: float, doc: str = "") -> dict[str, Any]:
    """Field metadata: the closed interval a numeric value (or each element of a list) must lie in."""
    return {"range": (low, high), "doc": doc}


def _check_number(name: str, value: Any, spec: dict[str, Any]) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"parameter '{name}': expected a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"parameter '{name}': expected a finite number, got {value}")
    if "range" in spec:
        low, high = spec["range"]
        if not low <= value <= high:
            raise ConfigError(f"parameter '{name}': {value} is outside the allowed range [{low}, {high}]")
    return value


def _coerce(name: str, value: Any, annotation: Any, spec: dict[str, Any]) -> Any:
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value, prefix=f"{name}.")
    if annotation is float or annotation is int:
        number = _check_number(name, value, spec)
        if annotation is int:
            if number != int(number):
                raise ConfigError(f"parameter '{name}': expected an integer, got {value!r}")
            return int(number)
        return number
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"parameter '{name}': expected true or false, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"parameter '{name}': expected a string, got {value!r}")
        choices = spec.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"parameter '{name}': {value!r} is not one of {', '.join(choices)}")
        return value
    if origin is tuple:
        args = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"parameter '{name}': expected a list of {len(args)} numbers, got {value!r}")
        return tuple(_coerce(f"{name}[{i}]", v, a, spec) for i, (v, a) in enumerate(zip(value, args, strict=True)))
    raise ConfigError(f"parameter '{name}': unsupported type {annotation!r}")


def unknown_names(given: list[str], known: list[str]) -> str:
    """'' if every given name is known, else one phrase naming each unknown one and its nearest known name."""
    unknown = sorted(set(given) - set(known))
    if not unknown:
        return ""
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hints.append(f"'{name}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    return f"unknown parameter(s) {', '.join(hints)}"


def from_dict(cls: type[T], values: dict[str, Any] | None, prefix: str = "") -> T:
    """Build ``cls`` from a (nested) dict: unknown keys and bad values raise ConfigError."""
    if values is not None and not isinstance(values, dict):
        raise ConfigError(f"parameter '{prefix.rstrip('.') or cls.__name__}': expected a mapping, got {values!r}")
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    known = sorted(prefix + f.name for f in dataclasses.fields(cls))
    unknown = unknown_names([prefix + name for name in values], known)
    if unknown:
        raise ConfigError(f"{unknown}; known: {', '.join(known)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            kwargs[f.name] = _coerce(prefix + f.name, values[f.name], hints[f.name], dict(f.metadata))
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check is not None:
        check(prefix)
    return obj


def load_yaml(cls: type[T], path: str | Path, section: str | None = None) -> T:
    """Load ``cls`` from a YAML file (optionally one top-level section of it)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    if section is not None:
        data = data.get(section, {})
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def flatten(obj: Any, prefix: str = "") -> dict[str, tuple[Any, dict[str, Any]]]:
    """Dotted name -> (value, field metadata) for every leaf of a config dataclass (for ROS parameters)."""
    out: dict[str, tuple[Any, dict[str, Any]]] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, prefix=f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = (value, dict(f.metadata))
    return out


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """Inverse of the naming in :func:`flatten`: {'a.b': 1} -> {'a': {'b': 1}}."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        node = nested
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return nested


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain dict of a config dataclass (tuples as lists), for JSON sidecars and reports."""
    return _plain(dataclasses.asdict(obj))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
