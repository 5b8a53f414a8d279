"""The base every msdp node stands on: typed parameters, the vocabulary's QoS, diagnostics, and a clean stop.

``MsdpNode`` declares every field of the node's config dataclass as a ROS parameter (the dataclass is the one
source of defaults, ranges and docs), validates them with the same messages as a YAML file, and refuses a
parameter the node does not have -- a misspelt ``-p impedance.translational_stifness:=100.0`` or a typo in a
params file -- naming it and the nearest known name, instead of silently running on the default.

``run_node`` runs one node process. SIGINT and SIGTERM only raise a flag; the node is then destroyed between
callbacks, while the ROS context is still valid, so no callback publishes into a dead context and files (bags,
logs) are closed cleanly. Exit codes: 0 done, 1 the node could not start (e.g. the robot is unreachable),
2 an invalid parameter, or the node's own ``exit_code`` when it stops by itself.
"""

from __future__ import annotations

import importlib
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions

from msdp import vocabulary as vocab
from msdp.config import ConfigError, flatten, from_dict, unflatten, unknown_names

T = TypeVar("T")

# Parameters every rclpy node has, whatever its config.
BUILTIN_PARAMETERS = {"use_sim_time", "start_type_description_service"}

QOS = {
    vocab.SENSOR: qos_profile_sensor_data,
    vocab.RELIABLE: QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE),
    vocab.COMMAND: QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE),
    vocab.LATCHED: QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    ),
}
CLOCK_MISMATCH_S = 86_400.0  # stamps further than a day off mean two clocks, not a slow sensor
LEVELS = {"ok": DiagnosticStatus.OK, "warn": DiagnosticStatus.WARN, "error": DiagnosticStatus.ERROR}


def message_class(msgtype: str) -> Any:
    """The rclpy message class for a type name like ``sensor_msgs/msg/Image`` (ImportError if not installed)."""
    module, _, name = msgtype.replace("/", ".").rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise ImportError(f"the Python message type {msgtype} is not installed here") from None


def ros_message(msgtype: str, **fields: Any) -> Any:
    """The vocabulary's ``make`` for rclpy: arrays become what rclpy's fields take (bytes or lists)."""
    for name, value in fields.items():
        if isinstance(value, np.ndarray):
            fields[name] = value.tobytes() if value.dtype == np.uint8 else value.tolist()
    return message_class(msgtype)(**fields)


def _describe(meta: dict[str, Any]) -> str:
    parts = [meta.get("doc", "")]
    if "range" in meta:
        parts.append(f"allowed range [{meta['range'][0]}, {meta['range'][1]}]")
    if "choices" in meta:
        parts.append(f"one of {', '.join(meta['choices'])}")
    return "; ".join(p for p in parts if p)


class MsdpNode(Node):
    """A node with a typed, validated config (``self.config``) and the project's QoS and diagnostics."""

    def __init__(self, name: str, config_cls: type[T]):
        super().__init__(name)
        try:
            self.config = self._declare_config(config_cls)
        except ConfigError:
            super().destroy_node()
            raise
        self._diagnostics_pub = self.publisher(vocab.DIAGNOSTICS)

    def _declare_config(self, cls: type[T]) -> T:
        """Declare ``cls``'s fields as parameters (dotted names) and return the validated config.

        Types are checked by the config, not by rclpy (``dynamic_typing``), so ``2000`` is accepted for a
        float and every bad value gets the same message format as a bad YAML file.
        """
        names = []
        for name, (default, meta) in flatten(cls()).items():
            value = list(default) if isinstance(default, tuple) else default
            self.declare_parameter(name, value, ParameterDescriptor(description=_describe(meta), dynamic_typing=True))
            names.append(name)
        # rclpy keeps the values given for this node (-p, params files) in _parameter_overrides; no public API
        # lists them, and an override nobody declares is otherwise silently ignored.
        given = [name for name in self._parameter_overrides if name not in BUILTIN_PARAMETERS]
        unknown = unknown_names(given, names)
        if unknown:
            raise ConfigError(f"{unknown}; node '{self.get_name()}' has: {', '.join(names)}")
        return from_dict(cls, unflatten({name: self.get_parameter(name).value for name in names}))

    def publisher(self, topic: vocab.Topic, name: str | None = None) -> Any:
        return self.create_publisher(message_class(topic.msgtype), name or topic.name, QOS[topic.qos])

    def subscription(self, topic: vocab.Topic, callback: Callable[[Any], None], name: str | None = None) -> Any:
        return self.create_subscription(message_class(topic.msgtype), name or topic.name, callback, QOS[topic.qos])

    def now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def clock_hint(self, stamp_s: float) -> str:
        """Why a message can look hours old or in the future: it and this node run on different clocks (a
        simulated arm stamps with /clock). '' when the stamp is within a day of this node's clock."""
        offset = stamp_s - self.now_ns() * 1e-9
        if abs(offset) < CLOCK_MISMATCH_S:
            return ""
        sim_time = self.get_parameter("use_sim_time").value
        mine, theirs = (
            ("simulated time (/clock)", "wall time") if sim_time else ("wall time", "simulated time (/clock)")
        )
        fix = "run this node without use_sim_time" if sim_time else "run this node with use_sim_time:=true (--sim-time)"
        return f"stamps {abs(offset):.0f} s {'ahead of' if offset > 0 else 'behind'} this node's {mine}: " \
            f"the publisher seems to use {theirs}; {fix}"  # fmt: skip

    def publish_diagnostics(self, name: str, level: str, message: str, values: dict[str, str]) -> None:
        """One status on /diagnostics; ``level`` is ok, warn or error."""
        status = DiagnosticStatus(name=f"{self.get_name()}: {name}", hardware_id=self.get_name())
        status.level, status.message = LEVELS[level], message
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)


def run_node(
    name: str,
    make_node: Callable[[], Node],
    argv: list[str] | None = None,
    startup_errors: tuple[type[BaseException], ...] = (),
) -> int:
    """Create the node with ``make_node`` and spin it until a signal, or until it sets ``exit_code``."""
    args = argv if argv is not None else sys.argv
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except RuntimeError as exc:  # rclpy's RCLError: malformed --ros-args (e.g. '-p name:=' with no value)
        reason = str(exc).splitlines()[0].removeprefix("failed to initialize rcl: ").split(". Error:")[0]
        print(f"{name}: invalid ROS arguments: {reason}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        node = make_node()
    except ConfigError as exc:
        print(f"{name}: invalid parameter: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    except startup_errors as exc:
        print(f"{name}: cannot start: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 1
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not stop.is_set() and getattr(node, "exit_code", None) is None:
            executor.spin_once(timeout_sec=0.1)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    code = getattr(node, "exit_code", None)
    return 0 if code is None else code


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
