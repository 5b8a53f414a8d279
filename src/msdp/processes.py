"""Node processes started by one command, as a launch file would (the launch wheels are not a dependency):
``msdp collect-ros`` and ``msdp rehearse`` run their ROS graphs through a ``NodeGroup``.

Each node is ``python -m <module> --ros-args -p name:=value ...`` in this process's group, so Ctrl-C reaches
every node as it does under launch; closing the group stops them in reverse start order with SIGINT (a
recorder closes its bag), then SIGKILL after a timeout.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TextIO


class NodeDied(RuntimeError):
    """A node of the group exited before the job was done; the message names it and its exit code."""


def ros_args(params: dict[str, Any]) -> list[str]:
    """``--ros-args -p key:=value`` for each parameter (lists and tuples as YAML lists, booleans lowercase)."""

    def text(value: Any) -> str:
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, list | tuple):
            return "[" + ", ".join(text(v) for v in value) + "]"
        return str(value)

    args = ["--ros-args"]
    for key, value in params.items():
        args += ["-p", f"{key}:={text(value)}"]
    return args


class NodeGroup:
    """Started nodes by name; ``log_dir`` set: each node's output goes to ``<log_dir>/<name>.log``."""

    def __init__(self, log_dir: Path | None = None, env: dict[str, str] | None = None):
        self.log_dir, self.env = log_dir, env
        self.processes: dict[str, subprocess.Popen] = {}
        self.logs: list[TextIO] = []

    def start(self, name: str, module: str, params: dict[str, Any]) -> subprocess.Popen:
        output = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            output = open(self.log_dir / f"{name}.log", "a")  # noqa: SIM115 -- closed in close()
            self.logs.append(output)
        process = subprocess.Popen([sys.executable, "-m", module, *ros_args(params)], stdout=output,
                                   stderr=subprocess.STDOUT if output else None, env=self.env)  # fmt: skip
        self.processes[name] = process
        return process

    def check(self, *finished_ok: str) -> None:
        """NodeDied if a node has exited, except those named (which are expected to finish by themselves)."""
        for name, process in self.processes.items():
            if name not in finished_ok and process.poll() is not None:
                where = f"; see {self.log_dir / (name + '.log')}" if self.log_dir else ""
                raise NodeDied(f"node {name} exited with code {process.returncode}{where}")

    def wait(self, name: str, timeout: float | None = None, poll: float = 0.2) -> int:
        """Wait for node ``name`` to exit (its exit code), raising NodeDied if another node dies first and
        TimeoutError after ``timeout`` seconds."""
        process, deadline = self.processes[name], None if timeout is None else time.monotonic() + timeout
        while process.poll() is None:
            self.check(name)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"node {name} did not finish within {timeout:.0f} s")
            time.sleep(poll)
        return process.returncode

    def stop(self, name: str, timeout: float = 30.0) -> None:
        stop_process(self.processes.pop(name), timeout)

    def close(self) -> None:
        for name in reversed(list(self.processes)):
            self.stop(name)
        for log in self.logs:
            log.close()
        self.logs.clear()

    def __enter__(self) -> NodeGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stop_process(process: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGINT (what Ctrl-C sends), then SIGKILL if it has not exited within ``timeout``."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
