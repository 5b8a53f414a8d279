"""Real Franka backend: the 1 kHz libfranka torque loop in its own OS process.

Why a process: the FCI expects a torque every millisecond and aborts the motion after 20 lost
cycles; a busy Python thread in the same interpreter (an rclpy executor, a policy) pushed the
loop's p99 period from 1.4 ms to 6.6 ms through the GIL. So ``LibfrankaArm.start()`` spawns the
loop (``multiprocessing`` "spawn" context, never a fork of a node with threads) and the two
sides share only plain memory:

- target and gains (parent -> loop) and robot state (loop -> parent) are seqlocks over shared
  doubles: the writer makes the sequence odd, writes, makes it even; a reader copies and keeps the
  copy only if the sequence was even and unchanged. The loop never waits: a target or gains torn by
  a concurrent write are simply picked up one cycle later. It reads into arrays it allocated at
  start, and takes each target, gains change and hand-guiding request once (by its id). (This
  relies on stores and loads staying in program order, which x86-64 guarantees; a weakly ordered
  CPU such as ARM would need memory barriers.)
- status words (phase, counters, stop and recover requests) each have a single writer;
  loop period and compute time go to ring buffers the parent turns into percentiles.

The parent stamps a target only with a sequence number; the loop stamps it with the robot's clock
on receipt, and the watchdog runs on that clock too, so a slow parent can never make a stale
target look fresh.
"""

from __future__ import annotations

import ctypes
import gc
import math
import multiprocessing as mp
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from msdp import vocabulary as vocab
from msdp.config import ConfigError, param_range
from msdp_franka_driver.backend import ArmSnapshot, gain_diagnostics
from msdp_franka_driver.control_law import (
    N_JOINTS,
    ArmState,
    CartesianImpedanceController,
    HandGuidingConfig,
    ImpedanceConfig,
    SafetyConfig,
    is_valid_target,
)
from msdp_franka_driver.pose import matrix_to_quat

REALTIME_MODES = ("enforce", "ignore")


@dataclass(frozen=True)
class LibfrankaConfig:
    """How to reach and configure the robot; gains and limits live in ImpedanceConfig / SafetyConfig."""

    robot_ip: str = field(default="172.16.0.2", metadata={"doc": "FCI address of the robot (the Control box)"})
    realtime: str = field(
        default="enforce",
        metadata={
            "choices": REALTIME_MODES,
            "doc": "enforce: refuse to run without a real-time kernel (the robot); ignore: any kernel (franka-sim)",
        },
    )
    collision_torque_thresholds: tuple[float, float, float, float, float, float, float] = field(
        default=(20.0, 20.0, 18.0, 18.0, 16.0, 14.0, 12.0),
        metadata=param_range(1.0, 100.0, "Nm per joint; above it the robot stops with a reflex"),
    )
    collision_force_thresholds: tuple[float, float, float, float, float, float] = field(
        default=(20.0, 20.0, 20.0, 25.0, 25.0, 25.0),
        metadata=param_range(1.0, 200.0, "N (x y z) and Nm (rx ry rz) at the end effector; above it a reflex"),
    )
    ee_offset: tuple[float, float, float] = field(
        default=(0.0, 0.0, 0.0),
        metadata=param_range(
            -0.5,
            0.5,
            "m, in the EE frame, from the reported O_T_EE to the point of the model's EE Jacobian; 0 on a real "
            "robot (set the TCP in Desk instead); (0, 0, 0.107) on franka-sim, which reports link7",
        ),
    )
    startup_timeout: float = field(
        default=10.0, metadata=param_range(0.5, 120.0, "s to wait for the first robot state (and for a recovery)")
    )

    def check(self, prefix: str = "") -> None:
        if not self.robot_ip.strip():
            raise ConfigError(f"parameter '{prefix}robot_ip': expected an address, got an empty string")
        if self.realtime not in REALTIME_MODES:
            raise ConfigError(
                f"parameter '{prefix}realtime': {self.realtime!r} is not one of {', '.join(REALTIME_MODES)}"
            )


@dataclass(frozen=True)
class LoopStats:
    """Health of the 1 kHz loop, over the last ``RING`` cycles (periods are wall clock, in the loop process)."""

    cycles: int
    period_p50_ms: float
    period_p99_ms: float
    period_max_ms: float
    compute_p99_ms: float  # from a state's arrival to the torque's departure
    lost_cycles: int  # robot-clock gaps: states the loop never saw
    command_success_rate: float  # the robot's own count of commands that arrived in time (0..1)
    aborts: int  # motions ended by an exception (reflex, limit violation, network)
    rejected_targets: int  # non-finite or malformed targets refused by set_target
    holding: bool
    hand_guiding: bool
    gains: tuple[float, ...]  # what the law uses this cycle (control_law.GAIN_NAMES order), ramping after a change
    last_error: str


RING = 1 << 16  # cycles of period history, about 65 s at 1 kHz

# Seqlock blocks: element 0 is the sequence, the payload follows.
_TARGET_ID, _TARGET_POS, _TARGET_QUAT = 1, slice(2, 5), slice(5, 9)
_TARGET_SIZE = 9
_GAINS_ID, _GAINS, _MODE_ID, _MODE = 1, slice(2, 6), 6, 7  # _MODE: 1 = hand guiding
_GAINS_SIZE = 8
_S_TIME = 1
_S_Q = slice(2, 9)
_S_DQ = slice(9, 16)
_S_TAU = slice(16, 23)
_S_POS = slice(23, 26)
_S_QUAT = slice(26, 30)
_S_WRENCH = slice(30, 36)
_S_HOLDING = 36
_S_HAND_GUIDING = 37
_S_GAINS = slice(38, 42)
_STATE_SIZE = 42

# Status words, one writer each (L = loop, P = parent).
_PHASE = 0  # L
_CYCLES = 1  # L
_LOST = 2  # L
_SUCCESS_RATE = 3  # L
_ABORTS = 4  # L
_SAMPLES = 5  # L: ring entries written so far
_STOP = 6  # P
_RECOVER_REQUEST = 7  # P: a counter; the loop answers each value once
_RECOVER_DONE = 8  # L: the request it answered last
_STATUS_SIZE = 9

STARTING, RUNNING, FAULT, STOPPED, FAILED = range(5)
_PHASE_NAMES = ("starting", "running", "fault", "stopped", "failed")
_MESSAGE_SIZE = 1024


def _doubles(raw: Any) -> np.ndarray:
    return np.frombuffer(raw, dtype=np.float64)


def _seqlock_read(block: np.ndarray) -> np.ndarray | None:
    """A consistent copy of the payload, or None if a write was in progress (try again later)."""
    seq = block[0]
    if seq % 2.0:
        return None
    payload = block.copy()
    return payload if block[0] == seq else None


def _seqlock_read_into(block: np.ndarray, out: np.ndarray) -> bool:
    """``_seqlock_read`` into a preallocated array (the loop's way: no allocation); False if torn."""
    seq = block[0]
    if seq % 2.0:
        return False
    out[:] = block
    return block[0] == seq


class _Shared:
    """The shared-memory blocks, created in the parent and handed to the spawned loop."""

    def __init__(self, ctx: mp.context.SpawnContext):
        self.raw = {
            "target": ctx.RawArray(ctypes.c_double, _TARGET_SIZE),
            "gains": ctx.RawArray(ctypes.c_double, _GAINS_SIZE),
            "state": ctx.RawArray(ctypes.c_double, _STATE_SIZE),
            "status": ctx.RawArray(ctypes.c_double, _STATUS_SIZE),
            "periods": ctx.RawArray(ctypes.c_double, RING),
            "compute": ctx.RawArray(ctypes.c_double, RING),
            "message": ctx.RawArray(ctypes.c_char, _MESSAGE_SIZE),
        }
        self.attach()

    def attach(self) -> None:
        self.target = _doubles(self.raw["target"])
        self.gains = _doubles(self.raw["gains"])
        self.state = _doubles(self.raw["state"])
        self.status = _doubles(self.raw["status"])
        self.periods = _doubles(self.raw["periods"])
        self.compute = _doubles(self.raw["compute"])

    def __getstate__(self) -> dict[str, Any]:
        return {"raw": self.raw}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.raw = state["raw"]
        self.attach()

    @property
    def message(self) -> str:
        return self.raw["message"].value.decode(errors="replace")

    @message.setter
    def message(self, text: str) -> None:
        self.raw["message"].value = text.encode()[: _MESSAGE_SIZE - 1]

    @property
    def phase(self) -> int:
        return int(self.status[_PHASE])


# ---------------------------------------------------------------------------------------------
# The loop process. Everything below runs in the spawned child; it imports pylibfranka itself.


class _TorqueLoop:
    def __init__(
        self,
        shared: _Shared,
        config: LibfrankaConfig,
        impedance: ImpedanceConfig,
        safety: SafetyConfig,
        hand_guiding: HandGuidingConfig,
    ):
        self.shared = shared
        self.config = config
        self.controller = CartesianImpedanceController(impedance, safety)
        self.hand_guiding = hand_guiding
        self.ee_offset = np.array(config.ee_offset)
        self.parent_pid = os.getppid()
        self.target = np.zeros(_TARGET_SIZE)  # the latest reads of the shared blocks
        self.gains = np.zeros(_GAINS_SIZE)
        self.seen_target = 0.0
        self.seen_gains = 0.0
        self.seen_mode = 0.0
        self.lost = 0

    def arm_state(self, state: Any) -> ArmState:
        pose = np.asarray(state.O_T_EE).reshape(4, 4).T  # libfranka matrices are column-major
        rot = pose[:3, :3]
        return ArmState(
            q=np.asarray(state.q),
            dq=np.asarray(state.dq),
            position=pose[:3, 3] + rot @ self.ee_offset,
            orientation=matrix_to_quat(rot),
            jacobian=np.asarray(self.model.zero_jacobian(state)).reshape(N_JOINTS, 6).T,
            bias_torque=np.asarray(self.model.coriolis(state)),  # the FCI compensates gravity itself
        )

    def publish(self, state: Any, arm: ArmState, holding: bool) -> None:
        block = self.shared.state
        block[0] += 1.0
        block[_S_TIME] = state.time.to_sec()
        block[_S_Q] = arm.q
        block[_S_DQ] = arm.dq
        block[_S_TAU] = state.tau_J
        block[_S_POS] = arm.position
        block[_S_QUAT] = arm.orientation
        # K_F_ext_hat_K: the robot's estimate of the external wrench on the stiffness frame K, expressed
        # in K (= the EE frame unless EE_T_K is set): the frame a wrist F/T sensor would report in.
        block[_S_WRENCH] = state.K_F_ext_hat_K
        block[_S_HOLDING] = float(holding)
        block[_S_HAND_GUIDING] = float(self.controller.hand_guiding is not None)
        block[_S_GAINS] = self.controller.ramp.value
        block[0] += 1.0

    def take_target(self, now: float) -> None:
        target = self.target
        if _seqlock_read_into(self.shared.target, target) and target[_TARGET_ID] != self.seen_target:
            self.seen_target = target[_TARGET_ID]
            self.controller.set_target(target[_TARGET_POS], target[_TARGET_QUAT], now)

    def take_gains(self) -> None:
        """New run-time gains, and a hand-guiding request, each applied once (the controller ramps them)."""
        gains = self.gains
        if not _seqlock_read_into(self.shared.gains, gains):
            return
        if gains[_GAINS_ID] != self.seen_gains:
            self.seen_gains = gains[_GAINS_ID]
            self.controller.set_gains(gains[_GAINS])
        if gains[_MODE_ID] != self.seen_mode:
            self.seen_mode = gains[_MODE_ID]
            self.controller.hand_guide(self.hand_guiding if gains[_MODE] else None)

    def end_hand_guiding(self) -> None:
        """A fault ends hand guiding (recovered, the arm holds with its gains); the state says so before the
        phase does, since no new robot state may come for a while."""
        self.controller.hand_guide(None)
        block = self.shared.state
        block[0] += 1.0
        block[_S_HAND_GUIDING] = 0.0
        block[0] += 1.0

    def connect(self, pylibfranka: Any) -> None:
        realtime = pylibfranka.RealtimeConfig.kEnforce
        if self.config.realtime == "ignore":
            realtime = pylibfranka.RealtimeConfig.kIgnore
        self.robot = pylibfranka.Robot(self.config.robot_ip, realtime)
        torque = list(self.config.collision_torque_thresholds)
        force = list(self.config.collision_force_thresholds)
        self.robot.set_collision_behavior(torque, torque, force, force)
        self.model = self.robot.load_model()

    def run_motion(self, pylibfranka: Any) -> None:
        """Hold the current pose and follow targets until a stop request (returns) or an error (raises)."""
        shared, status = self.shared, self.shared.status
        state = self.robot.read_once()
        arm = self.arm_state(state)
        self.take_gains()  # gains set while no motion ran (e.g. during a fault) apply from the start
        self.controller.reset(arm, np.asarray(state.tau_J_d))
        # A target written before this motion (e.g. before a fault) is stale: start by holding.
        target = _seqlock_read(shared.target)
        if target is not None:
            self.seen_target = target[_TARGET_ID]
        self.publish(state, arm, True)
        control = self.robot.start_torque_control()
        status[_PHASE] = RUNNING
        previous_wall = previous_time = None
        while True:
            state, _ = control.readOnce()
            wall = time.perf_counter()
            now = state.time.to_sec()
            arm = self.arm_state(state)
            self.take_gains()
            self.take_target(now)
            command = pylibfranka.Torques(self.controller.torque(arm, now).tolist())
            stop = status[_STOP] != 0.0
            command.motion_finished = stop
            control.writeOnce(command)
            done = time.perf_counter()

            self.publish(state, arm, self.controller.safety.holding)
            cycles = int(status[_CYCLES])
            status[_CYCLES] = cycles + 1
            status[_SUCCESS_RATE] = state.control_command_success_rate
            if previous_wall is not None:
                gap = round((now - previous_time) * 1000.0) - 1
                if gap > 0:
                    self.lost += gap
                    status[_LOST] = self.lost
                index = int(status[_SAMPLES])
                shared.periods[index % RING] = wall - previous_wall
                shared.compute[index % RING] = done - wall
                status[_SAMPLES] = index + 1
            previous_wall, previous_time = wall, now
            if stop:
                return
            if cycles % 256 == 0 and os.getppid() != self.parent_pid:
                status[_STOP] = 1.0  # orphaned: finish the motion on the next cycle and exit

    def wait_for_recovery(self) -> None:
        """After a fault: keep publishing the robot state (no motion runs) until the parent asks to recover.

        A successful recovery moves the phase to STARTING before answering, so the parent then waits
        for RUNNING (or a new FAULT, if the next motion is refused at once).
        """
        status = self.shared.status
        while status[_STOP] == 0.0 and os.getppid() == self.parent_pid:
            request = status[_RECOVER_REQUEST]
            if request != status[_RECOVER_DONE]:
                try:
                    self.robot.automatic_error_recovery()
                except Exception as exc:  # report any failure to the parent, stay in FAULT
                    self.shared.message = f"automatic error recovery failed: {type(exc).__name__}: {exc}"
                    status[_RECOVER_DONE] = request
                    continue
                status[_PHASE] = STARTING
                status[_RECOVER_DONE] = request
                return
            try:
                state = self.robot.read_once()  # paced by the robot's 1 kHz state stream
                self.publish(state, self.arm_state(state), True)
            except Exception:  # no state (e.g. the network is down): poll slowly until asked to act
                time.sleep(0.05)


def _loop_main(
    shared: _Shared,
    config: LibfrankaConfig,
    impedance: ImpedanceConfig,
    safety: SafetyConfig,
    hand_guiding: HandGuidingConfig,
) -> None:
    """Entry point of the loop process."""
    status = shared.status
    # SIGTERM (e.g. multiprocessing's exit handler for a daemon child) ends the motion cleanly instead of
    # leaving the robot without commands; Ctrl-C is the parent's to handle, not a random cycle's.
    signal.signal(signal.SIGTERM, lambda *_: status.__setitem__(_STOP, 1.0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import pylibfranka

    loop = _TorqueLoop(shared, config, impedance, safety, hand_guiding)
    try:
        loop.connect(pylibfranka)
    except Exception as exc:  # anything libfranka raises here means: no robot
        shared.message = f"cannot start libfranka for the robot at {config.robot_ip}: {type(exc).__name__}: {exc}"
        status[_PHASE] = FAILED
        return
    # The cycle allocates no reference cycles; a collector pass would cost milliseconds mid-cycle.
    gc.disable()
    while status[_STOP] == 0.0:
        try:
            loop.run_motion(pylibfranka)
        except Exception as exc:  # ControlException, NetworkException, ...: the motion is over
            status[_ABORTS] += 1.0
            shared.message = f"motion aborted: {type(exc).__name__}: {exc}"
            loop.end_hand_guiding()
            status[_PHASE] = FAULT
            loop.wait_for_recovery()
            if os.getppid() != loop.parent_pid:
                break
    status[_PHASE] = STOPPED


# ---------------------------------------------------------------------------------------------
# The parent side.


RETURN_TOLERANCE = 0.002  # m: ``reset`` is done this close to the start pose


class LibfrankaArm:
    """ArmBackend for a real Franka (or franka-sim): see the module docstring for the process model."""

    name = "libfranka"
    wrench_frame = vocab.TOOL_FRAME  # K_F_ext_hat_K is expressed in the stiffness frame K (the end effector's)

    def __init__(
        self,
        config: LibfrankaConfig,
        impedance: ImpedanceConfig,
        safety: SafetyConfig,
        hand_guiding: HandGuidingConfig | None = None,
    ):
        config.check()
        safety.check()
        self.config = config
        self.impedance = impedance
        self.safety = safety
        self.hand_guiding = hand_guiding or HandGuidingConfig()
        self._rejected = 0
        self._target_lock = threading.Lock()  # several parent threads may publish targets
        self._target_id = 0
        self._gains_lock = threading.Lock()
        self._gains_id = 0
        self._mode_id = 0
        self._shared: _Shared | None = None
        self._process: mp.process.BaseProcess | None = None
        self._start_pose: tuple[np.ndarray, np.ndarray] | None = None  # where ``reset`` returns the arm
        self._returning = False

    def __enter__(self) -> LibfrankaArm:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        """Spawn the loop, connect, and return once it holds the current pose (or raise, naming the robot).

        If the robot refuses the first motion (e.g. it is in a reflex), start returns with
        ``phase() == "fault"``; ``recover()`` clears that.
        """
        if self._process is not None:
            raise RuntimeError("LibfrankaArm.start(): the control loop is already running")
        ctx = mp.get_context("spawn")
        shared = _Shared(ctx)
        process = ctx.Process(
            target=_loop_main,
            args=(shared, self.config, self.impedance, self.safety, self.hand_guiding),
            name=f"libfranka-loop-{self.config.robot_ip}",
            daemon=True,
        )
        process.start()
        self._shared, self._process = shared, process
        deadline = time.monotonic() + self.config.startup_timeout
        while shared.phase == STARTING:
            if not process.is_alive():
                break
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(
                    f"libfranka backend: no state from the robot at {self.config.robot_ip} within "
                    f"{self.config.startup_timeout} s (is the FCI enabled and the address right?)"
                )
            time.sleep(0.01)
        if shared.phase not in (RUNNING, FAULT) or shared.state[0] == 0.0:
            reason = shared.message or f"the loop process exited with code {process.exitcode}"
            self.stop()
            raise RuntimeError(f"libfranka backend, robot at {self.config.robot_ip}: {reason}")
        start = self.snapshot()
        self._start_pose = (start.position.copy(), start.orientation.copy())

    @property
    def loop_pid(self) -> int | None:
        """The loop process' id (e.g. to pin it to a core or raise its priority from outside), None if stopped."""
        return None if self._process is None else self._process.pid

    def _require(self) -> _Shared:
        if self._shared is None:
            raise RuntimeError("LibfrankaArm: call start() first")
        return self._shared

    def advance(self, wall_seconds: float) -> list[ArmSnapshot]:
        """The arm runs by itself: its latest state. While returning to the start pose (``reset``), the start
        pose is streamed as the target, so the watchdog stays quiet, until the arm is there."""
        snapshot = self.snapshot()
        if self._returning:
            self._returning = np.linalg.norm(snapshot.position - self._start_pose[0]) > RETURN_TOLERANCE
            if self._returning:
                self._send_target(*self._start_pose)
        return [snapshot]

    def reset(self) -> str:
        """Move back to the pose the arm had at start-up, through the safety filter (speed and leash limits)."""
        self._require()
        self._returning = True
        position = ", ".join(f"{v:.3f}" for v in self._start_pose[0])
        return f"returning to the start pose ({position}) m"

    def set_target(self, position: np.ndarray, orientation: np.ndarray) -> bool:
        self._returning = False
        return self._send_target(position, orientation)

    def _send_target(self, position: np.ndarray, orientation: np.ndarray) -> bool:
        shared = self._require()
        with self._target_lock:
            # The loop's SafetyFilter applies the same rule; checking here lets set_target answer at once.
            if not is_valid_target(position, orientation):
                self._rejected += 1
                return False
            self._target_id += 1
            block = shared.target
            block[0] += 1.0
            block[_TARGET_POS] = position
            block[_TARGET_QUAT] = orientation
            block[_TARGET_ID] = self._target_id
            block[0] += 1.0
        return True

    def set_gains(self, impedance: ImpedanceConfig) -> None:
        shared = self._require()
        with self._gains_lock:
            self._gains_id += 1
            block = shared.gains
            block[0] += 1.0
            block[_GAINS] = impedance.gains()
            block[_GAINS_ID] = self._gains_id
            block[0] += 1.0

    def hand_guide(self, on: bool) -> str:
        """Hand the request to the loop and wait (a few cycles) until it reports the mode."""
        shared = self._require()
        if on and shared.phase != RUNNING:
            return f"cannot hand guide: the arm is stopped ({self.fault()})"
        self._returning = False
        with self._gains_lock:
            self._mode_id += 1
            block = shared.gains
            block[0] += 1.0
            block[_MODE] = float(on)
            block[_MODE_ID] = self._mode_id
            block[0] += 1.0
        deadline = time.monotonic() + 0.5
        while self.snapshot().hand_guiding != on:
            if time.monotonic() > deadline:
                return f"the control loop did not take the request within 0.5 s ({self.fault() or 'running'})"
            time.sleep(0.002)
        if on:
            return "hand guiding: the gains ramp down and the arm follows a hand; targets are ignored"
        return "hand guiding ended: holding the pose the arm is at, the gains ramp back up"

    def snapshot(self) -> ArmSnapshot:
        shared = self._require()
        deadline = time.monotonic() + 0.1
        while (data := _seqlock_read(shared.state)) is None:
            if time.monotonic() > deadline:
                raise RuntimeError("libfranka backend: the loop process stopped while writing the robot state")
            time.sleep(0)
        return ArmSnapshot(
            time=float(data[_S_TIME]),
            q=data[_S_Q],
            dq=data[_S_DQ],
            tau=data[_S_TAU],
            position=data[_S_POS],
            orientation=data[_S_QUAT],
            wrench=data[_S_WRENCH],
            holding=bool(data[_S_HOLDING]),
            hand_guiding=bool(data[_S_HAND_GUIDING]),
        )

    def loop_stats(self) -> LoopStats:
        shared = self._require()
        status = shared.status.copy()
        count = min(int(status[_SAMPLES]), RING)
        periods = shared.periods[:count] * 1000.0
        compute = shared.compute[:count] * 1000.0
        p50, p99, pmax = np.percentile(periods, (50, 99, 100)) if count else (math.nan,) * 3
        return LoopStats(
            cycles=int(status[_CYCLES]),
            period_p50_ms=float(p50),
            period_p99_ms=float(p99),
            period_max_ms=float(pmax),
            compute_p99_ms=float(np.percentile(compute, 99)) if count else math.nan,
            lost_cycles=int(status[_LOST]),
            command_success_rate=float(status[_SUCCESS_RATE]),
            aborts=int(status[_ABORTS]),
            rejected_targets=self._rejected,
            holding=bool(shared.state[_S_HOLDING]),
            hand_guiding=bool(shared.state[_S_HAND_GUIDING]),
            gains=tuple(shared.state[_S_GAINS].tolist()),
            last_error=shared.message if int(status[_ABORTS]) or shared.phase == FAILED else "",
        )

    def phase(self) -> str:
        """starting, running, fault (a motion was aborted: call recover()), stopped or failed."""
        phase = self._require().phase
        if self._process is not None and not self._process.is_alive() and phase != STOPPED:
            return "failed"  # the loop died without reporting (e.g. killed)
        return _PHASE_NAMES[phase]

    def fault(self) -> str:
        phase = self.phase()
        if phase == "running":
            return ""
        return f"{phase}: {self._require().message or 'no message from the loop'}"

    def diagnostics(self) -> dict[str, str]:
        stats = self.loop_stats()
        return {
            "phase": self.phase(),
            "period_p50_ms": f"{stats.period_p50_ms:.3f}",
            "period_p99_ms": f"{stats.period_p99_ms:.3f}",
            "period_max_ms": f"{stats.period_max_ms:.3f}",
            "lost_cycles": str(stats.lost_cycles),
            "command_success_rate": f"{stats.command_success_rate:.4f}",
            "aborts": str(stats.aborts),
            "rejected_targets": str(stats.rejected_targets),
            "last_error": stats.last_error,
            **gain_diagnostics(np.array(stats.gains)),
        }

    def recover(self) -> str:
        shared = self._require()
        if self._process is None or not self._process.is_alive():
            raise RuntimeError(f"libfranka backend: the control loop is not running ({shared.message})")
        if shared.phase != FAULT:
            return "no fault to recover from: the control loop is running"
        status = shared.status
        request = status[_RECOVER_REQUEST] + 1.0
        status[_RECOVER_REQUEST] = request
        deadline = time.monotonic() + self.config.startup_timeout
        while status[_RECOVER_DONE] != request or shared.phase == STARTING:
            if time.monotonic() > deadline or not self._process.is_alive():
                return f"recovery did not finish within {self.config.startup_timeout} s: {shared.message}"
            time.sleep(0.005)
        if shared.phase == RUNNING:
            return "recovered; holding the current pose"
        return shared.message

    def stop(self) -> None:
        """Finish the motion (the loop sends motion_finished), then join; terminate only if it hangs."""
        process, shared = self._process, self._shared
        if process is None or shared is None:
            return
        shared.status[_STOP] = 1.0
        process.join(timeout=2.0)
        if process.is_alive():
            process.terminate()
            process.join(timeout=1.0)
        if process.is_alive():
            process.kill()
            process.join()
        self._process = None
