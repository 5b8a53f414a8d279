"""Helpers for tests that run real ROS 2 nodes: start node processes, and a probe node to talk to them.

Each test session has its own ROS_DOMAIN_ID with localhost-only discovery (see conftest.py), and every
process started here runs in its own process group that is killed on exit.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node


def run_in_own_group(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run a command that starts node processes in its process group; on a timeout the whole group is killed."""
    process = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"{' '.join(args)} did not finish in {timeout} s:\n{output[-5000:]}")
    return subprocess.CompletedProcess(args, process.returncode, output)


def wait_for_text(log: Path, text: str, timeout: float) -> None:
    """Until ``text`` shows in a node's log file (its start-up, or a state it reports)."""
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in {log} after {timeout} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that nothing listens on now (TCP by default, or ``socket.SOCK_DGRAM``)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def node_process(
    module: str, params: dict[str, object], log: Path, remaps: dict[str, str] | None = None
) -> Iterator[subprocess.Popen]:
    """Run ``python -m module --ros-args -p k:=v ... -r from:=to ...``; output goes to ``log``; killed on exit."""
    args = [sys.executable, "-m", module, "--ros-args"]
    for key, value in params.items():
        args += ["-p", f"{key}:={value}"]
    for name, target in (remaps or {}).items():
        args += ["-r", f"{name}:={target}"]
    with open(log, "w") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=os.environ)
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


class Probe:
    """A test-side rclpy node with its own context, spun on demand."""

    def __init__(self, name: str = "probe"):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def spin_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            self.executor.spin_once(timeout_sec=0.02)
        return condition()

    def spin_for(self, seconds: float) -> None:
        self.spin_until(lambda: False, seconds)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
