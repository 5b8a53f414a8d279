"""The one Cartesian impedance control law, shared by the simulated and the real Franka.

Pipeline per 1 ms cycle (``CartesianImpedanceController.torque``):
raw target -> SafetyFilter (finite, workspace box, leash to the current pose, watchdog)
-> TargetFilter (first-order reference low-pass) -> CartesianImpedanceLaw -> TorqueRateLimiter.
The gains may change while the arm runs (``GAIN_NAMES``; a parameter, or hand guiding): a GainRamp moves
them to the new values over ``gain_ramp_time``, never in a step.
Everything here is plain numpy so it runs in the libfranka loop process and inside MuJoCo's step. The per-cycle
path works on Python floats where an element-wise numpy call on a 3- or 4-vector would cost more than its arithmetic
(the same IEEE operations in the same order, so the same results), and keeps numpy, BLAS and LAPACK for the dot
products and the 6 x 7 algebra (their summation order, fused multiply-adds included, is what the results are).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.linalg.lapack import dposv

from msdp.config import ConfigError, param_range
from msdp_franka_driver.pose import (
    angle_between,
    nlerp,
    orientation_error,
    quat_multiply,
    quat_normalize,
    quat_to_matrix,
    rotation_error,
    rotvec_to_quat,
    slerp,
)

N_JOINTS = 7
HOME_Q = (0.0, -0.785398, 0.0, -2.356194, 0.0, 1.570796, 0.785398)
# The ImpedanceConfig fields that may change while the arm runs (ramped); the others are fixed at start-up.
GAIN_NAMES = ("translational_stiffness", "rotational_stiffness", "damping_ratio", "nullspace_stiffness")


@dataclass(frozen=True)
class ImpedanceConfig:
    """Gains of the Cartesian impedance law and the filters around it."""

    translational_stiffness: float = field(default=2000.0, metadata=param_range(0.0, 6000.0, "N/m"))
    rotational_stiffness: float = field(default=150.0, metadata=param_range(0.0, 300.0, "Nm/rad"))
    damping_ratio: float = field(default=1.0, metadata=param_range(0.1, 3.0, "1 = critically damped"))
    nullspace_stiffness: float = field(default=10.0, metadata=param_range(0.0, 100.0, "Nm/rad"))
    target_filter_time_constant: float = field(
        default=0.005, metadata=param_range(0.0, 1.0, "s; first-order low-pass on the target, 0 = off")
    )
    max_torque_rate: float = field(
        default=0.5, metadata=param_range(0.001, 1.0, "Nm per joint per 1 ms cycle (FCI aborts above 1.0)")
    )
    gain_ramp_time: float = field(
        default=1.0, metadata=param_range(0.01, 10.0, "s; a change of gains at run time ramps over this")
    )

    def gains(self) -> np.ndarray:
        """The run-time gains in ``GAIN_NAMES`` order: what the law ramps and the libfranka loop is handed."""
        return np.array([getattr(self, name) for name in GAIN_NAMES], dtype=float)


@dataclass(frozen=True)
class HandGuidingConfig:
    """Gains while a person moves the arm by hand (``~/hand_guide``).

    The equilibrium then follows the measured position and the turn about the tool axis, so the translational
    stiffness mostly sets the damping a hand feels (critical for it, as the law computes it); the rotational
    stiffness keeps the tool axis pointing where it did when hand guiding began (down, for the tasks here).
    """

    translational_stiffness: float = field(
        default=30.0, metadata=param_range(0.0, 500.0, "N/m; its damping (about 11 Ns/m at 30) is what a hand feels")
    )
    rotational_stiffness: float = field(
        default=20.0, metadata=param_range(0.0, 300.0, "Nm/rad; keeps the tool axis pointing where it did")
    )


@dataclass(frozen=True)
class SafetyConfig:
    """Limits every target passes before it reaches the law."""

    workspace_min: tuple[float, float, float] = field(
        default=(0.25, -0.35, 0.01), metadata=param_range(-1.2, 1.2, "m, base frame")
    )
    workspace_max: tuple[float, float, float] = field(
        default=(0.75, 0.35, 0.65), metadata=param_range(-1.2, 1.2, "m, base frame")
    )
    max_target_distance: float = field(
        default=0.05, metadata=param_range(0.001, 0.2, "m per axis between target and current pose")
    )
    max_target_angle: float = field(
        default=0.5, metadata=param_range(0.01, 3.14, "rad between target and current orientation")
    )
    max_target_speed: float = field(
        default=0.3, metadata=param_range(0.01, 1.0, "m/s, how fast the target the law sees may move")
    )
    max_target_angular_speed: float = field(
        default=1.0, metadata=param_range(0.01, 3.0, "rad/s, how fast the target orientation may turn")
    )
    watchdog_timeout: float = field(
        default=0.2, metadata=param_range(0.005, 5.0, "s without a fresh target before holding pose")
    )

    def check(self, prefix: str = "") -> None:
        check_box(self.workspace_min, self.workspace_max, f"{prefix}workspace")


def check_box(low: tuple[float, ...], high: tuple[float, ...], name: str) -> None:
    """A box's ``<name>_min`` must lie below its ``<name>_max`` on every axis (an inverted or flat box would
    clip every target to one face or corner)."""
    for axis, (a, b) in enumerate(zip(low, high, strict=True)):
        if a >= b:
            raise ConfigError(f"parameter '{name}_min[{axis}]' ({a}) must be below '{name}_max[{axis}]' ({b})")


@dataclass
class ArmState:
    """What the law needs from a backend at one instant (base frame, quaternion x y z w)."""

    q: np.ndarray
    dq: np.ndarray
    position: np.ndarray
    orientation: np.ndarray
    jacobian: np.ndarray  # 6 x 7, linear rows first
    bias_torque: np.ndarray  # coriolis (+ gravity where the backend does not compensate it)


class CartesianImpedanceLaw:
    """tau = J^T (K e - D J dq) + bias + null-space posture torque."""

    def __init__(self, config: ImpedanceConfig, nullspace_q: np.ndarray | None = None):
        self.set_gains(config.gains())
        self.nullspace_q = np.asarray(nullspace_q if nullspace_q is not None else HOME_Q, dtype=float)
        self._regularizer = 1e-6 * np.eye(6)

    def set_gains(self, gains: np.ndarray) -> None:
        """Stiffnesses from a ``GAIN_NAMES`` vector; damping critical for a unit effective mass (as franka_ros
        does), scaled by the damping ratio (the posture's unscaled)."""
        kt, kr, damping_ratio, kn = gains.tolist()
        self.stiffness = np.array([kt] * 3 + [kr] * 3)
        self.damping = 2.0 * damping_ratio * np.sqrt(self.stiffness)
        self.nullspace_stiffness = kn
        self.nullspace_damping = 2.0 * math.sqrt(kn)

    def pose_error(self, state: ArmState, position: np.ndarray, orientation: np.ndarray) -> np.ndarray:
        """6-D error (target minus current): position, then rotation vector."""
        error = np.empty(6)
        error[:3] = position - state.position
        error[3:] = orientation_error(orientation, state.orientation)
        return error

    def torque(self, state: ArmState, position: np.ndarray, orientation: np.ndarray) -> np.ndarray:
        """The pose error on floats, then in-place numpy: each line is one call, the fewest the algebra needs."""
        jac, dq = state.jacobian, state.dq
        px, py, pz = position.tolist()
        sx, sy, sz = state.position.tolist()
        wrench = np.array(
            (px - sx, py - sy, pz - sz, *rotation_error(orientation.tolist(), state.orientation.tolist()))
        )
        wrench *= self.stiffness
        wrench -= self.damping * (jac @ dq)
        # Null-space projector N = I - J^T (J J^T)^-1 J keeps the posture torque out of the task space.
        # J J^T is symmetric positive definite: a direct LAPACK Cholesky solve is 5x cheaper than np.linalg.solve.
        posture = self.nullspace_q - state.q
        posture *= self.nullspace_stiffness
        posture -= self.nullspace_damping * dq
        gram = jac @ jac.T
        gram += self._regularizer
        wrench -= dposv(gram, jac @ posture, overwrite_b=1)[1]
        tau = jac.T @ wrench
        tau += posture
        tau += state.bias_torque
        return tau


class TorqueRateLimiter:
    """Limits the change of each joint torque per cycle, so the FCI never sees a discontinuity."""

    def __init__(self, max_delta: float):
        self.max_delta = max_delta
        self.previous: np.ndarray | None = None

    def reset(self, torque: np.ndarray | None = None) -> None:
        self.previous = None if torque is None else np.array(torque, dtype=float)

    def __call__(self, torque: np.ndarray) -> np.ndarray:
        previous = self.previous
        if previous is None:
            previous = np.zeros_like(torque)
        limited = np.maximum(torque, previous - self.max_delta)
        np.minimum(limited, previous + self.max_delta, out=limited)
        self.previous = limited
        return limited


class GainRamp:
    """Moves the gains linearly to new values over ``duration`` s of the controller's clock.

    A stiffness step with the arm off its equilibrium would be a force step: the rate limiter would clip it, but
    the arm would still feel a jolt and the law would run against the limiter for many cycles.
    """

    def __init__(self, gains: np.ndarray, duration: float):
        self.duration = duration
        self.value = np.array(gains, dtype=float)
        self.goal = self.value.copy()
        self.start = self.value.copy()
        self.start_time: float | None = None
        self.active = False

    def to(self, goal: np.ndarray) -> None:
        """Ramp from the gains in effect now to ``goal``; the ramp's clock starts at the next call."""
        self.start = self.value.copy()
        self.goal = np.array(goal, dtype=float)
        self.start_time = None
        self.active = not np.array_equal(self.goal, self.value)

    def __call__(self, now: float) -> np.ndarray:
        if self.active:
            if self.start_time is None:
                self.start_time = now
            fraction = min(max(now - self.start_time, 0.0) / self.duration, 1.0)
            self.value = self.start + fraction * (self.goal - self.start)
            self.active = fraction < 1.0
        return self.value


class TargetFilter:
    """First-order low-pass on the target pose, like franka_ros' reference filter (nlerp for orientation:
    per 1 ms cycle the step is tiny, where nlerp and slerp agree)."""

    def __init__(self, time_constant: float, dt: float):
        self.alpha = 1.0 if time_constant <= 0.0 else 1.0 - math.exp(-dt / time_constant)
        self.position: np.ndarray | None = None
        self.orientation: np.ndarray | None = None

    def reset(self, position: np.ndarray, orientation: np.ndarray) -> None:
        self.position = np.array(position, dtype=float)
        self.orientation = np.array(orientation, dtype=float)

    def __call__(self, position: np.ndarray, orientation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.position is None:
            self.reset(position, orientation)
        else:
            alpha = self.alpha
            x, y, z = self.position.tolist()
            tx, ty, tz = position.tolist()
            self.position = np.array((x + alpha * (tx - x), y + alpha * (ty - y), z + alpha * (tz - z)))
            self.orientation = nlerp(self.orientation, orientation, alpha)
        return self.position, self.orientation


def is_valid_target(position: np.ndarray, orientation: np.ndarray) -> bool:
    """A target the law may use: finite position, finite orientation of roughly unit norm."""
    position = np.asarray(position, dtype=float)
    orientation = np.asarray(orientation, dtype=float)
    if position.shape != (3,) or orientation.shape != (4,):
        return False
    if not (np.all(np.isfinite(position)) and np.all(np.isfinite(orientation))):
        return False
    return 0.5 < float(np.linalg.norm(orientation)) < 1.5


class SafetyFilter:
    """Accepts targets, then each cycle returns the safe target for the current pose.

    - an invalid (non-finite) target is rejected (``submit`` returns False) and the previous target stays;
    - the target is clipped into the workspace box; what the law sees moves towards it no faster than
      ``max_target_speed`` / ``max_target_angular_speed`` (a far target never becomes a 100 N jerk), and
      stays within ``max_target_distance`` per axis and ``max_target_angle`` of the current pose;
    - if no fresh target arrived within ``watchdog_timeout``, the pose at that moment is held.
    """

    def __init__(self, config: SafetyConfig):
        self.config = config
        self.low = np.array(config.workspace_min)
        self.high = np.array(config.workspace_max)
        self.position: np.ndarray | None = None
        self.orientation: np.ndarray | None = None
        self.out_position: np.ndarray | None = None  # what the law saw last cycle
        self.out_orientation: np.ndarray | None = None
        self.stamp = -math.inf
        self.last_call = -math.inf
        self.holding = True
        self.rejected = 0

    def submit(self, position: np.ndarray, orientation: np.ndarray, now: float) -> bool:
        if not is_valid_target(position, orientation):
            self.rejected += 1
            return False
        orientation = np.asarray(orientation, dtype=float)
        self.position = np.minimum(np.maximum(np.asarray(position, dtype=float), self.low), self.high)
        self.orientation = orientation / np.linalg.norm(orientation)
        self.stamp = now
        self.holding = False
        return True

    def hold(self, position: np.ndarray, orientation: np.ndarray) -> None:
        """Hold this pose (until a fresh target arrives); the speed limit restarts from here."""
        self.position = np.minimum(np.maximum(np.asarray(position, dtype=float), self.low), self.high)
        self.orientation = quat_normalize(orientation)
        self.out_position, self.out_orientation = self.position, self.orientation
        self.holding = True

    def __call__(self, state: ArmState, now: float) -> tuple[np.ndarray, np.ndarray]:
        """The safe target for this cycle; it keeps no reference to ``state``'s arrays (a backend may refill them)."""
        if self.position is None or (not self.holding and now - self.stamp > self.config.watchdog_timeout):
            self.hold(state.position, state.orientation)
        if self.out_position is None:  # a target came before the first cycle: start from the current pose
            self.out_position, self.out_orientation = state.position.copy(), state.orientation.copy()
        dt = 0.0 if self.last_call == -math.inf else min(max(now - self.last_call, 0.0), 0.01)  # a stall moves 10 ms
        self.last_call = now
        config = self.config
        step = config.max_target_speed * dt
        leash = config.max_target_distance
        # Per axis: towards the target at the speed limit, then leashed to the current position.
        position = np.array(
            [
                _clip(_clip(target, out - step, out + step), current - leash, current + leash)
                for target, out, current in zip(
                    self.position.tolist(), self.out_position.tolist(), state.position.tolist(), strict=True
                )
            ]
        )
        orientation = self.orientation
        turn = config.max_target_angular_speed * dt
        angle = angle_between(self.out_orientation, orientation)
        if angle > turn:
            orientation = slerp(self.out_orientation, orientation, turn / angle)
        angle = angle_between(orientation, state.orientation)
        if angle > config.max_target_angle:
            orientation = slerp(state.orientation, orientation, config.max_target_angle / angle)
        self.out_position, self.out_orientation = position, orientation
        return position, orientation


def _clip(value: float, low: float, high: float) -> float:
    """``np.minimum(np.maximum(value, low), high)`` on floats, NaN propagating as numpy's does."""
    if not (value >= low or value != value):
        value = low
    if not (value <= high or value != value):
        value = high
    return value


class CartesianImpedanceController:
    """SafetyFilter -> TargetFilter -> CartesianImpedanceLaw -> TorqueRateLimiter, one call per cycle.

    Gains set at run time, and those of hand guiding, reach the law through a GainRamp. While hand guiding, the
    equilibrium follows the arm (through the SafetyFilter, so it stays in the workspace box and moves no faster
    than its speed limit) and targets are refused.
    """

    def __init__(self, impedance: ImpedanceConfig, safety: SafetyConfig, dt: float = 0.001):
        self.law = CartesianImpedanceLaw(impedance)
        self.safety = SafetyFilter(safety)
        self.target_filter = TargetFilter(impedance.target_filter_time_constant, dt)
        self.rate_limiter = TorqueRateLimiter(impedance.max_torque_rate)
        self.gains = impedance.gains()  # the run-time gains: followed, or returned to after hand guiding
        self.ramp = GainRamp(self.gains, impedance.gain_ramp_time)
        self.hand_guiding: HandGuidingConfig | None = None
        self._tool_axis: np.ndarray | None = None  # base frame, kept while hand guiding
        self._release = False  # hand guiding ended: hold the pose of the next cycle

    def reset(self, state: ArmState, torque: np.ndarray | None = None) -> None:
        """Hold the current pose; ``torque`` is what the robot applies now (the rate limit starts there)."""
        self.safety.hold(state.position, state.orientation)
        self.target_filter.reset(state.position, state.orientation)
        self.rate_limiter.reset(torque)
        self._tool_axis = None
        self._release = False

    def set_target(self, position: np.ndarray, orientation: np.ndarray, now: float) -> bool:
        """Submit a target to the SafetyFilter; False if it is invalid, or while hand guiding."""
        if self.hand_guiding is not None:
            return False
        return self.safety.submit(position, orientation, now)

    def set_gains(self, gains: np.ndarray) -> None:
        """New run-time gains (``GAIN_NAMES`` order), ramped to. While hand guiding, only their damping ratio and
        posture stiffness apply; the stiffnesses wait for its end."""
        self.gains = np.array(gains, dtype=float)
        self.ramp.to(self._goal())

    def hand_guide(self, config: HandGuidingConfig | None) -> None:
        """Start hand guiding with ``config``'s gains, or end it (None): the equilibrium becomes the pose the arm
        is at, and the gains ramp back to the run-time ones."""
        self._release = config is None and (self._release or self.hand_guiding is not None)
        self.hand_guiding = config
        self._tool_axis = None
        self.ramp.to(self._goal())

    def _goal(self) -> np.ndarray:
        goal = self.gains.copy()
        if self.hand_guiding is not None:
            goal[:2] = self.hand_guiding.translational_stiffness, self.hand_guiding.rotational_stiffness
        return goal

    def _guided_orientation(self, state: ArmState) -> np.ndarray:
        """The measured orientation, swung so the tool axis (z) points where it did when hand guiding began: a
        hand turns the tool about its axis freely, while a tilt springs back."""
        axis = quat_to_matrix(state.orientation)[:, 2]
        if self._tool_axis is None:
            self._tool_axis = axis
        swing = np.cross(axis, self._tool_axis)
        sine = float(np.linalg.norm(swing))
        if sine < 1e-9:
            return state.orientation
        angle = math.atan2(sine, float(axis @ self._tool_axis))
        return quat_multiply(rotvec_to_quat(swing * (angle / sine)), state.orientation)

    def torque(self, state: ArmState, now: float) -> np.ndarray:
        if self.ramp.active:
            self.law.set_gains(self.ramp(now))
        if self.hand_guiding is not None:
            self.safety.submit(state.position, self._guided_orientation(state), now)
        elif self._release:
            self._release = False
            self.safety.hold(state.position, state.orientation)
            self.target_filter.reset(state.position, state.orientation)
        position, orientation = self.target_filter(*self.safety(state, now))
        return self.rate_limiter(self.law.torque(state, position, orientation))
