"""Start franka-sim (a MuJoCo server speaking the libfranka protocol) on loopback, for tests and benches.

franka-sim lives in its own venv, ``.venv-franka-sim``, because it pins numpy 1.26 and mujoco < 3.3.
It is given this repo's mesh-free FR3 (``FR3_MJCF``) so it never downloads a model, runs with the
FCI's motion limits and communication constraints enforced (a torque-rate or 20-lost-cycles
violation aborts the motion, as on the robot), and without the gripper server.

Its CLI accepts ``--bind`` only together with ``--mobile-duo`` and otherwise listens on 0.0.0.0, so
the server is started through its Python API with an explicit loopback host instead. libfranka
always dials port 1337, so each server gets its own loopback address (127.0.0.1, else 127.0.0.2,
...) and parallel test runs do not collide.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from msdp_franka_driver.sim.fr3_model import standalone_arm_mjcf

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv-franka-sim"
PYTHON = VENV / "bin" / "python"
FCI_PORT = 1337  # fixed in libfranka
SETUP_HINT = (
    f"franka-sim is not installed in {VENV}: run `make env` (scripts/setup_env.sh), or by hand "
    f"`python3.11 -m venv {VENV} && {VENV}/bin/pip install franka-sim==1.1.7`"
)
# franka-sim reports link7 as O_T_EE, while libfranka's model (built from the fr3.urdf franka-sim
# serves) puts the end-effector Jacobian at the flange, 0.107 m further along link7's z axis.
EE_OFFSET = (0.0, 0.0, 0.107)

# Runs inside .venv-franka-sim. SIGTERM becomes KeyboardInterrupt so the server closes its sockets.
# A real-time priority, set before any thread starts so all of them inherit it, stands in for the
# robot's dedicated controller: without it, on a small machine, the parent's busy threads delay the
# simulated robot's state stream and the client's measured period shows the server's jitter.
_SERVER = """
import logging, os, signal, sys
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
priority = int(sys.argv[2])
if priority:
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        logging.info("franka-sim runs with SCHED_FIFO priority %d", priority)
    except OSError as exc:
        logging.warning("franka-sim runs without real-time priority (%s)", exc)
from franka_sim import FrankaSimServer
def _interrupt(*_):
    raise KeyboardInterrupt
signal.signal(signal.SIGTERM, _interrupt)
server = FrankaSimServer(host=sys.argv[1], enable_gripper=False,
                         enforce_motion_limits=True, enforce_comm_constraints=True)
try:
    server.start()
except KeyboardInterrupt:
    pass
finally:
    server.stop()
"""


@dataclass(frozen=True)
class FrankaSim:
    host: str  # the robot_ip to give libfranka
    log: Path  # the server's stdout and stderr
    pid: int


def require_franka_sim() -> None:
    """Skip the calling test if franka-sim is missing; in CI (CI=true) fail instead, since set-up installs it."""
    if PYTHON.exists():
        return
    import pytest

    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(SETUP_HINT)
    pytest.skip(SETUP_HINT)


def _free_loopback_host() -> str:
    for last in range(1, 255):
        host = f"127.0.0.{last}"
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, FCI_PORT))
            except OSError:
                continue
        return host
    raise RuntimeError(f"no loopback address has port {FCI_PORT} free")


def _accepts(host: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((host, FCI_PORT)) == 0


@contextlib.contextmanager
def franka_sim_server(timeout: float = 60.0, realtime_priority: int = 0) -> Iterator[FrankaSim]:
    """Run franka-sim until the block ends; its whole process group is killed on the way out, always.

    ``realtime_priority`` > 0 asks for SCHED_FIFO at that priority (best effort: without the
    privilege the server runs normally and says so in its log).
    """
    if not PYTHON.exists():
        raise RuntimeError(SETUP_HINT)
    with tempfile.TemporaryDirectory(prefix="franka-sim-") as tmp:
        model = Path(tmp) / "fr3.xml"
        model.write_text(standalone_arm_mjcf())
        log = Path(tmp) / "server.log"
        host = _free_loopback_host()
        env = dict(os.environ, FR3_MJCF=str(model), PYTHONUNBUFFERED="1")
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(PYTHON), "-c", _SERVER, host, str(realtime_priority)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group, so nothing it spawns outlives it
            )
        try:
            deadline = time.monotonic() + timeout
            while not _accepts(host):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"franka-sim did not start on {host}:{FCI_PORT} "
                        f"(exit code {process.poll()}); its log:\n{log.read_text(errors='replace')[-3000:]}"
                    )
                time.sleep(0.1)
            yield FrankaSim(host=host, log=log, pid=process.pid)
        finally:
            _kill_group(process)


def _kill_group(process: subprocess.Popen) -> None:
    """SIGTERM (the server closes its sockets), then SIGKILL for whatever is left of its group.

    The leader is reaped only at the very end: until then its pid, which is the group id, cannot be
    reused, so the SIGKILL can only reach processes this helper started.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        if os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            break
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
