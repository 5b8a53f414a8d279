"""ROS parameters from a typed config: declare every field with a descriptor, read them back validated.

The config dataclass stays the single source of defaults, ranges and docs; a node calls
``declare_config`` once and gets the validated object (or a ConfigError naming the parameter).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from rcl_interfaces.msg import ParameterDescriptor

from msdp.config import ConfigError, flatten, from_dict, unflatten

T = TypeVar("T")


def _describe(meta: dict[str, Any]) -> str:
    parts = [meta.get("doc", "")]
    if "range" in meta:
        parts.append(f"allowed range [{meta['range'][0]}, {meta['range'][1]}]")
    if "choices" in meta:
        parts.append(f"one of {', '.join(meta['choices'])}")
    return "; ".join(p for p in parts if p)


def declare_config(node: Any, cls: type[T]) -> T:
    """Declare ``cls``'s fields as parameters of ``node`` (dotted names) and return the validated config.

    Types are checked by the config, not by rclpy (``dynamic_typing``), so ``2000`` is accepted for a
    float and every bad value gets the same message format as a bad YAML file.
    """
    names = []
    for name, (default, meta) in flatten(cls()).items():
        value = list(default) if isinstance(default, tuple) else default
        node.declare_parameter(name, value, ParameterDescriptor(description=_describe(meta), dynamic_typing=True))
        names.append(name)
    values = {name: node.get_parameter(name).value for name in names}
    return from_dict(cls, unflatten(values))


def load_params_file(cls: type[T], path: str | Path, node_name: str) -> T:
    """Validate a ROS 2 parameter file's section for ``node_name`` (or ``/**``) as ``cls``."""
    path = Path(path)
    data = yaml.safe_load(path.read_text()) or {}
    for key in (node_name, f"/{node_name}", "/**"):
        if key in data:
            try:
                return from_dict(cls, data[key].get("ros__parameters", {}))
            except ConfigError as exc:
                raise ConfigError(f"{path}: {exc}") from exc
    raise ConfigError(f"{path}: no section for node '{node_name}' (expected '{node_name}: ros__parameters: ...')")
