"""Running a node process: one place for start-up errors, exit codes and a clean stop on Ctrl-C or SIGTERM.

SIGINT and SIGTERM only raise a flag; the node is then destroyed between callbacks, while the ROS context is
still valid, so no callback publishes into a dead context and files (bags, logs) are closed cleanly.
Exit codes: 0 done, 1 the node could not start (e.g. the robot is unreachable), 2 an invalid parameter,
or the node's own ``exit_code`` when it stops by itself.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from msdp.config import ConfigError


def run_node(
    name: str,
    make_node: Callable[[], Node],
    argv: list[str] | None = None,
    startup_errors: tuple[type[BaseException], ...] = (),
) -> int:
    """Create the node with ``make_node`` and spin it until a signal, or until it sets ``exit_code``."""
    rclpy.init(args=argv if argv is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)
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
