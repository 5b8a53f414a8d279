"""Analytic checks of the impedance law, the rate limiter, the target filter and the safety filter."""

import math

import numpy as np
import pytest

from msdp.config import ConfigError, from_dict
from msdp_franka_driver.control_law import (
    ArmState,
    CartesianImpedanceController,
    CartesianImpedanceLaw,
    HandGuidingConfig,
    ImpedanceConfig,
    SafetyConfig,
    SafetyFilter,
    TargetFilter,
    TorqueRateLimiter,
)
from msdp_franka_driver.pose import (
    angle_between,
    nlerp,
    orientation_error,
    quat_multiply,
    quat_normalize,
    quat_to_matrix,
    rotvec_to_quat,
    slerp,
)

RNG = np.random.default_rng(0)
IDENTITY = np.array([0.0, 0.0, 0.0, 1.0])


def state(jacobian=None, dq=None, bias=None, position=(0.5, 0.0, 0.3), q=None) -> ArmState:
    return ArmState(
        q=np.zeros(7) if q is None else q,
        dq=np.zeros(7) if dq is None else dq,
        position=np.array(position, dtype=float),
        orientation=IDENTITY.copy(),
        jacobian=RNG.normal(size=(6, 7)) if jacobian is None else jacobian,
        bias_torque=np.zeros(7) if bias is None else bias,
    )


def run(safety: SafetyFilter, s: ArmState, start: float, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Call the filter every 1 ms from ``start`` for ``seconds``; the last output."""
    for cycle in range(round(seconds * 1000)):
        out = safety(s, now=start + cycle * 0.001)
    return out


def law(**overrides) -> CartesianImpedanceLaw:
    return CartesianImpedanceLaw(ImpedanceConfig(**overrides), nullspace_q=np.zeros(7))


def test_zero_error_at_rest_gives_only_the_bias_torque():
    bias = RNG.normal(size=7)
    s = state(bias=bias)
    np.testing.assert_allclose(law().torque(s, s.position, s.orientation), bias, atol=1e-9)


def test_pure_x_error_gives_a_force_along_x_through_the_jacobian_transpose():
    s = state()
    tau = law(nullspace_stiffness=0.0).torque(s, s.position + [0.01, 0.0, 0.0], s.orientation)
    expected = s.jacobian.T @ np.array([2000.0 * 0.01, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(tau, expected, rtol=1e-9)


def test_rotation_error_gives_a_torque_about_its_axis():
    s = state()
    target = rotvec_to_quat(np.array([0.0, 0.0, 0.1]))
    tau = law(nullspace_stiffness=0.0).torque(s, s.position, target)
    np.testing.assert_allclose(tau, s.jacobian.T @ np.array([0, 0, 0, 0, 0, 150.0 * 0.1]), rtol=1e-6)


def test_damping_is_critical_for_the_stiffness_and_opposes_velocity():
    jac = np.eye(6, 7)
    dq = np.zeros(7)
    dq[0] = 0.1
    s = state(jacobian=jac, dq=dq)
    tau = law(nullspace_stiffness=0.0).torque(s, s.position, s.orientation)
    assert tau[0] == pytest.approx(-2.0 * math.sqrt(2000.0) * 0.1)


def test_nullspace_torque_does_not_move_the_end_effector():
    s = state(q=RNG.normal(size=7))
    tau = law(nullspace_stiffness=20.0).torque(s, s.position, s.orientation)
    # The posture torque lies in the null space of J^T: no task-space wrench comes out of it.
    wrench = np.linalg.pinv(s.jacobian.T) @ tau
    assert np.linalg.norm(tau) > 1.0
    assert np.linalg.norm(wrench) < 1e-5 * np.linalg.norm(tau)  # only the 1e-6 regulariser leaks


def test_rate_limiter_never_exceeds_its_bound_and_reaches_the_target():
    limiter = TorqueRateLimiter(0.5)
    limiter.reset(np.zeros(7))
    previous = np.zeros(7)
    goal = np.array([10.0, -3.0, 0.2, 0.0, 87.0, -12.0, 5.0])
    for _ in range(200):
        out = limiter(goal)
        assert np.all(np.abs(out - previous) <= 0.5 + 1e-12)
        previous = out
    np.testing.assert_allclose(previous, goal)


def test_target_filter_is_first_order():
    f = TargetFilter(time_constant=0.01, dt=0.001)
    f.reset(np.zeros(3), IDENTITY)
    for _ in range(10):  # one time constant
        position, _ = f(np.array([1.0, 0.0, 0.0]), IDENTITY)
    assert position[0] == pytest.approx(1 - math.exp(-1), rel=1e-6)


def yawed_down(yaw: float) -> np.ndarray:
    """Tool down (180 degrees about x), turned about the base z axis by ``yaw``."""
    return quat_multiply(rotvec_to_quat(np.array([0.0, 0.0, yaw])), np.array([1.0, 0.0, 0.0, 0.0]))


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["q", "minus_q"])
@pytest.mark.parametrize(
    "start, step",
    [
        (IDENTITY, np.array([0.0, 0.0, 0.3])),
        (yawed_down(2.9), np.array([0.0, 0.0, 0.3])),  # the yaw passes +-pi on the way
        (rotvec_to_quat(np.array([0.2, -0.1, 0.4])), np.array([0.1, -0.25, 0.12])),
    ],
    ids=["about_z", "tool_down_across_pi", "oblique"],
)
def test_target_filter_turns_the_orientation_first_order_along_the_short_arc(start, step, sign):
    """A step in target orientation (given as q or as -q, the same rotation): the filtered orientation turns
    about the step's axis only, towards the target, its angle to the target shrinking by exp(-dt/tau) per cycle."""
    tau, dt = 0.005, 0.001
    target = quat_multiply(rotvec_to_quat(step), start)
    f = TargetFilter(time_constant=tau, dt=dt)
    f.reset(np.zeros(3), start)
    axis = step / np.linalg.norm(step)
    previous = np.linalg.norm(step)
    for cycle in range(60):
        _, orientation = f(np.zeros(3), sign * target)
        assert np.linalg.norm(orientation) == pytest.approx(1.0, abs=1e-12)
        moved = orientation_error(orientation, start)  # the way turned so far, as a rotation vector
        np.testing.assert_allclose(np.cross(moved, axis), 0.0, atol=1e-9)  # on the short arc from start ...
        assert float(moved @ axis) >= -1e-12  # ... in the step's direction, never the long way round
        remaining = np.linalg.norm(orientation_error(target, orientation))
        if cycle < 20:  # (later the angle is down at rounding level)
            assert remaining / previous == pytest.approx(math.exp(-dt / tau), rel=1e-3)
        assert remaining < previous
        previous = remaining
    assert previous < 1e-4  # 60 cycles = 12 time constants
    for _ in range(200):
        _, orientation = f(np.zeros(3), sign * target)
    assert np.linalg.norm(orientation_error(target, orientation)) < 1e-12  # reaches the target


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["q", "minus_q"])
def test_target_filter_takes_a_large_turn_monotonically_and_reaches_it(sign):
    start = yawed_down(-0.4)
    target = yawed_down(2.3)  # 2.7 rad away: nlerp is no longer angle-linear, but still monotone and unit
    f = TargetFilter(time_constant=0.01, dt=0.001)
    f.reset(np.zeros(3), start)
    previous = 2.7
    for _ in range(200):
        _, orientation = f(np.zeros(3), sign * target)
        assert np.linalg.norm(orientation) == pytest.approx(1.0, abs=1e-12)
        remaining = np.linalg.norm(orientation_error(target, orientation))
        assert remaining < previous
        previous = remaining
    assert previous < 1e-6


def test_target_filter_off_passes_the_target_through():
    f = TargetFilter(time_constant=0.0, dt=0.001)
    f.reset(np.zeros(3), IDENTITY)
    target = rotvec_to_quat(np.array([0.0, 0.5, 0.0]))
    position, orientation = f(np.array([0.1, 0.2, 0.3]), target)
    np.testing.assert_allclose(position, [0.1, 0.2, 0.3])
    np.testing.assert_allclose(orientation, target, atol=1e-12)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("side", [0, 1])
def test_workspace_box_clip_is_exact_on_each_face(axis, side):
    config = SafetyConfig(max_target_distance=0.2)
    safety = SafetyFilter(config)
    bound = (config.workspace_min, config.workspace_max)[side][axis]
    s = state(position=np.array(config.workspace_min) / 2 + np.array(config.workspace_max) / 2)
    target = s.position.copy()
    target[axis] = bound + (0.1 if side else -0.1)
    assert safety.submit(target, IDENTITY, now=0.0)
    s.position = target.copy()
    s.position[axis] = bound
    position, _ = run(safety, s, 0.0, 0.15)
    assert position[axis] == bound
    np.testing.assert_array_equal(np.delete(position, axis), np.delete(target, axis))


def test_target_is_leashed_per_axis_and_in_angle():
    safety = SafetyFilter(SafetyConfig(max_target_distance=0.02, max_target_angle=0.1))
    s = state()
    far = rotvec_to_quat(np.array([0.5, 0.0, 0.0]))
    safety.submit(s.position + [0.1, -0.1, 0.005], far, now=0.0)
    position, orientation = run(safety, s, 0.0, 0.15)
    np.testing.assert_allclose(position - s.position, [0.02, -0.02, 0.005])
    assert np.linalg.norm(orientation_error(orientation, s.orientation)) == pytest.approx(0.1)


def test_the_target_the_law_sees_moves_no_faster_than_the_speed_limits():
    config = SafetyConfig(max_target_speed=0.2, max_target_angular_speed=0.5, max_target_distance=0.2)
    safety = SafetyFilter(config)
    s = state()
    safety.hold(s.position, s.orientation)
    target = (s.position + [0.15, 0.0, -0.1], rotvec_to_quat(np.array([0.0, 0.0, 0.4])))
    previous_position, previous_orientation = s.position, s.orientation
    for cycle in range(1, 2000):
        if cycle % 100 == 1:
            safety.submit(*target, now=cycle * 0.001)  # a 10 Hz policy keeps the watchdog quiet
        position, orientation = safety(s, now=cycle * 0.001)
        assert np.max(np.abs(position - previous_position)) <= 0.2 * 0.001 + 1e-12
        assert np.linalg.norm(orientation_error(orientation, previous_orientation)) <= 0.5 * 0.001 + 1e-9
        previous_position, previous_orientation = position, orientation
    np.testing.assert_allclose(position, s.position + [0.15, 0.0, -0.1])  # it gets there in the end
    assert np.linalg.norm(orientation_error(orientation, s.orientation)) == pytest.approx(0.4)


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["q", "minus_q"])
@pytest.mark.parametrize("current_yaw", [0.0, 3.0, -2.0])
def test_safety_filter_turns_the_target_orientation_at_the_speed_limit_within_the_angle_leash(current_yaw, sign):
    """A target orientation 0.6 rad from a tool-down pose (q or -q): what the law sees turns at most
    max_target_angular_speed * dt per cycle, towards the target along the short arc, and stops at
    max_target_angle from the current orientation; a target inside the leash is reached exactly."""
    config = SafetyConfig(max_target_angular_speed=0.5, max_target_angle=0.3)
    safety = SafetyFilter(config)
    s = state()
    s.orientation = yawed_down(current_yaw)
    safety.hold(s.position, s.orientation)
    far = sign * yawed_down(current_yaw + 0.6)
    previous, turned = s.orientation, []
    for cycle in range(1, 1001):
        if cycle % 100 == 1:
            assert safety.submit(s.position, far, now=cycle * 0.001)  # 10 Hz: the watchdog stays quiet
        _, orientation = safety(s, now=cycle * 0.001)
        assert np.linalg.norm(orientation) == pytest.approx(1.0, abs=1e-9)
        turn = np.linalg.norm(orientation_error(orientation, previous))
        assert turn <= config.max_target_angular_speed * 0.001 + 1e-9
        away = orientation_error(orientation, s.orientation)
        assert np.linalg.norm(away) <= config.max_target_angle + 1e-9  # the leash
        np.testing.assert_allclose(away[:2], 0.0, atol=1e-9)  # about z only ...
        assert away[2] >= -1e-12  # ... and the short way (+0.6, not -5.7 rad)
        turned.append(turn)
        previous = orientation
    assert sum(turned[:501]) == pytest.approx(0.25, rel=1e-6)  # the speed limit binds (the first call has dt 0) ...
    assert np.linalg.norm(orientation_error(orientation, s.orientation)) == pytest.approx(0.3)  # ... then the leash
    assert np.linalg.norm(orientation_error(far, orientation)) == pytest.approx(0.3)  # on the arc to the target

    near = -sign * yawed_down(current_yaw - 0.2)  # inside the leash: reached, the short way back
    limit = config.max_target_angular_speed * 0.001 + 1e-9
    for cycle in range(1001, 3001):
        if cycle % 100 == 1:
            safety.submit(s.position, near, now=cycle * 0.001)
        _, orientation = safety(s, now=cycle * 0.001)
        assert np.linalg.norm(orientation_error(orientation, previous)) <= limit
        previous = orientation
    assert np.linalg.norm(orientation_error(near, orientation)) < 1e-9


def test_non_finite_targets_are_rejected_and_the_previous_target_stays():
    safety = SafetyFilter(SafetyConfig())
    s = state()
    assert safety.submit(s.position + 0.01, IDENTITY, now=0.0)
    assert not safety.submit(np.array([np.nan, 0.0, 0.3]), IDENTITY, now=0.01)
    assert not safety.submit(s.position, np.array([0.0, 0.0, 0.0, np.inf]), now=0.01)
    assert not safety.submit(s.position, np.zeros(4), now=0.01)
    assert safety.rejected == 3
    position, _ = run(safety, s, 0.01, 0.15)
    np.testing.assert_allclose(position, s.position + 0.01)


def test_watchdog_holds_the_pose_of_the_moment_the_target_went_stale():
    safety = SafetyFilter(SafetyConfig(watchdog_timeout=0.2, max_target_speed=1.0))
    s = state()
    safety.submit(s.position + [0.03, 0.0, 0.0], IDENTITY, now=0.0)
    assert run(safety, s, 0.0, 0.1)[0][0] == pytest.approx(s.position[0] + 0.03)
    moved = state(position=s.position + [0.01, 0.0, 0.0])
    held, _ = safety(moved, now=0.25)
    assert safety.holding
    np.testing.assert_allclose(held, moved.position)
    later = state(position=s.position + [0.012, 0.0, 0.0])
    np.testing.assert_allclose(safety(later, now=1.0)[0], moved.position)  # held, not following
    safety.submit(s.position, IDENTITY, now=1.1)
    assert not safety.holding


def test_controller_output_is_rate_limited_from_the_reset_torque():
    controller = CartesianImpedanceController(ImpedanceConfig(), SafetyConfig())
    s = state()
    controller.reset(s, torque=np.zeros(7))
    controller.set_target(s.position + [0.05, 0.0, 0.0], IDENTITY, now=0.0)
    tau = controller.torque(s, now=0.001)
    assert np.max(np.abs(tau)) <= 0.5 + 1e-12


def hold_a_displaced_target(controller, s, start, seconds, offset=(0.01, 0.0, 0.0)):
    """Cycles of 1 ms holding a target ``offset`` from the arm (resent at 10 Hz); the torques."""
    torques = []
    for cycle in range(round(seconds * 1000)):
        now = start + cycle * 0.001
        if cycle % 100 == 0:
            controller.set_target(s.position + np.array(offset), IDENTITY, now=now)
        torques.append(controller.torque(s, now))
    return np.array(torques)


def test_a_gain_change_ramps_the_stiffness_and_never_steps_the_torque():
    """2000 -> 50 N/m and back while a target 1 cm off is held: the stiffness passes through the values in
    between over gain_ramp_time, and the torque moves smoothly (a step would jump past max_torque_rate)."""
    config = ImpedanceConfig(gain_ramp_time=1.0)
    controller = CartesianImpedanceController(config, SafetyConfig())
    s = state(jacobian=np.eye(6, 7) + 0.3 * RNG.normal(size=(6, 7)))
    controller.reset(s, torque=np.zeros(7))
    settled = hold_a_displaced_target(controller, s, 0.0, 0.5)[-1]  # the rate limiter's climb is over
    soft = ImpedanceConfig(translational_stiffness=50.0, gain_ramp_time=1.0)
    step = CartesianImpedanceLaw(soft).torque(s, s.position + [0.01, 0.0, 0.0], IDENTITY) - settled
    assert np.max(np.abs(step)) > 10 * config.max_torque_rate  # what a step would ask for in one cycle

    controller.set_gains(soft.gains())
    down = hold_a_displaced_target(controller, s, 0.5, 0.5)
    assert controller.law.stiffness[0] == pytest.approx((2000.0 + 50.0) / 2, rel=0.01)  # mid-ramp
    assert controller.law.damping[0] == pytest.approx(2.0 * math.sqrt(controller.law.stiffness[0]))
    down = np.vstack([down, hold_a_displaced_target(controller, s, 1.0, 0.6)])
    np.testing.assert_allclose(controller.law.stiffness, [50.0] * 3 + [150.0] * 3)

    controller.set_gains(config.gains())
    up = hold_a_displaced_target(controller, s, 1.6, 0.5)
    assert 1000.0 < controller.law.stiffness[0] < 1050.0
    up = np.vstack([up, hold_a_displaced_target(controller, s, 2.1, 0.6)])
    assert controller.law.stiffness[0] == 2000.0
    np.testing.assert_allclose(up[-1], settled, atol=1e-9)  # the same torque as before the round trip

    torques = np.vstack([settled, down, up])
    change = np.max(np.abs(np.diff(torques, axis=0)))
    assert change <= config.max_torque_rate + 1e-12
    assert change < 0.2 * config.max_torque_rate  # the ramp keeps it smooth, not the limiter


def test_hand_guiding_follows_the_arm_keeps_the_tool_axis_and_holds_where_released():
    controller = CartesianImpedanceController(
        ImpedanceConfig(nullspace_stiffness=0.0, gain_ramp_time=0.5), SafetyConfig()
    )
    s = state(jacobian=np.eye(6, 7))
    controller.reset(s, torque=np.zeros(7))
    controller.hand_guide(HandGuidingConfig(translational_stiffness=30.0, rotational_stiffness=20.0))
    assert not controller.set_target(s.position + 0.01, IDENTITY, now=0.0)  # targets are refused
    controller.torque(s, now=0.0)  # the tool axis it keeps: the one of the first cycle (z)
    # then a hand pushes the arm 3 cm along y, twists the tool 0.3 rad about its axis (z) and tilts it 0.1 rad about x
    moved = state(jacobian=np.eye(6, 7), position=s.position + [0.0, 0.03, 0.0])
    twist = rotvec_to_quat(np.array([0.0, 0.0, 0.3]))
    moved.orientation = quat_multiply(rotvec_to_quat(np.array([0.1, 0.0, 0.0])), twist)
    for cycle in range(1, 600):
        controller.torque(moved, now=cycle * 0.001)
    np.testing.assert_allclose(controller.law.stiffness, [30.0] * 3 + [20.0] * 3)
    position, orientation = controller.target_filter.position, controller.target_filter.orientation
    np.testing.assert_allclose(position, moved.position, atol=1e-9)  # the equilibrium is where the arm is
    np.testing.assert_allclose(quat_to_matrix(orientation)[:, 2], [0.0, 0.0, 1.0], atol=1e-6)  # the axis kept
    assert orientation_error(orientation, twist) == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)  # the twist followed

    controller.hand_guide(None)
    released = state(jacobian=np.eye(6, 7), position=moved.position + [0.001, 0.0, 0.0])
    released.orientation = moved.orientation
    for cycle in range(600, 1200):
        tau = controller.torque(released, now=cycle * 0.001)
    assert controller.safety.holding
    np.testing.assert_allclose(controller.target_filter.position, released.position)  # held there: no spring back
    np.testing.assert_allclose(tau, 0.0, atol=1e-9)
    np.testing.assert_allclose(controller.law.stiffness, [2000.0] * 3 + [150.0] * 3)  # ramped back up
    assert controller.set_target(released.position + 0.01, IDENTITY, now=1.2)


def test_quaternion_helpers_agree():
    a = rotvec_to_quat(np.array([0.3, -0.2, 0.1]))
    b = rotvec_to_quat(np.array([-0.1, 0.4, 0.2]))
    mid = slerp(a, b, 0.5)
    err = orientation_error(b, a)
    np.testing.assert_allclose(quat_multiply(rotvec_to_quat(0.5 * err), a), mid, atol=1e-12)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"translational_stiffness": -1.0}, "translational_stiffness"),
        ({"max_torque_rate": 2.0}, "allowed range"),
        ({"stiffnes": 1.0}, "unknown parameter"),
    ],
)
def test_impedance_config_rejects_bad_values_naming_the_parameter(values, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(ImpedanceConfig, values)


def test_inverted_workspace_box_is_rejected():
    with pytest.raises(ConfigError, match=r"workspace_min\[2\]"):
        from_dict(SafetyConfig, {"workspace_min": [0.2, -0.3, 0.7], "workspace_max": [0.7, 0.3, 0.6]})


def reference_law(law: CartesianImpedanceLaw, s: ArmState, position: np.ndarray, orientation: np.ndarray):
    """The law written plainly, as one expression per term (what the in-place fast path must equal)."""
    error = np.concatenate([position - s.position, orientation_error(orientation, s.orientation)])
    wrench = law.stiffness * error - law.damping * (s.jacobian @ s.dq)
    posture = law.nullspace_stiffness * (law.nullspace_q - s.q) - law.nullspace_damping * s.dq
    gram = s.jacobian @ s.jacobian.T + 1e-6 * np.eye(6)
    return s.jacobian.T @ (wrench - np.linalg.solve(gram, s.jacobian @ posture)) + posture + s.bias_torque


def random_state(rng: np.random.Generator) -> ArmState:
    return ArmState(
        q=rng.normal(size=7),
        dq=rng.normal(size=7),
        position=rng.uniform([0.2, -0.4, 0.0], [0.8, 0.4, 0.7]),
        orientation=quat_normalize(rng.normal(size=4)),
        jacobian=rng.normal(size=(6, 7)) if rng.random() < 0.5 else rng.normal(size=(7, 6)).T,  # C or F order
        bias_torque=rng.normal(size=7),
    )


def test_law_matches_the_plain_formula_on_random_states():
    rng = np.random.default_rng(1)
    for _ in range(500):
        s = random_state(rng)
        law_ = CartesianImpedanceLaw(ImpedanceConfig(), nullspace_q=rng.normal(size=7))
        law_.set_gains(rng.uniform([0.0, 0.0, 0.1, 0.0], [6000.0, 300.0, 3.0, 100.0]))
        position = s.position + rng.normal(scale=0.05, size=3)
        orientation = quat_normalize(rng.normal(size=4))
        tau = law_.torque(s, position, orientation)
        expected = reference_law(law_, s, position, orientation)
        np.testing.assert_allclose(tau, expected, rtol=0, atol=1e-12 * max(1.0, np.max(np.abs(expected))))


def reference_safety(config: SafetyConfig, out: list, target: list, s: ArmState, dt: float):
    """The SafetyFilter's per-cycle limits with numpy element-wise calls and the pose helpers."""
    out_position, out_orientation = out
    target_position, target_orientation = target
    step = config.max_target_speed * dt
    position = np.minimum(np.maximum(target_position, out_position - step), out_position + step)
    orientation = target_orientation
    angle = angle_between(out_orientation, orientation)
    if angle > config.max_target_angular_speed * dt:
        orientation = slerp(out_orientation, orientation, config.max_target_angular_speed * dt / angle)
    leash = config.max_target_distance
    position = np.minimum(np.maximum(position, s.position - leash), s.position + leash)
    angle = angle_between(orientation, s.orientation)
    if angle > config.max_target_angle:
        orientation = slerp(s.orientation, orientation, config.max_target_angle / angle)
    return position, orientation


def test_controller_matches_the_plain_pipeline_on_random_cycles():
    """Random states and targets (far ones: speed, leash and rate limits bind; non-finite ones: refused; gaps:
    the watchdog holds) through the controller and through the plain pipeline; the same torques, bit for bit
    where the operations are the same, and the state reused in place as the simulator does."""
    rng = np.random.default_rng(2)
    config, safety_config = ImpedanceConfig(), SafetyConfig()
    controller = CartesianImpedanceController(config, safety_config)
    live = random_state(rng)
    controller.reset(live, torque=np.zeros(7))
    out = [live.position.copy(), live.orientation.copy()]
    target = [np.clip(live.position, safety_config.workspace_min, safety_config.workspace_max), live.orientation.copy()]
    filtered = [out[0].copy(), out[1].copy()]
    previous, stamp, holding, now = np.zeros(7), -math.inf, True, 0.0
    alpha = 1.0 - math.exp(-0.001 / config.target_filter_time_constant)
    for cycle in range(3000):
        fresh = random_state(rng)
        for name in ("q", "dq", "position", "orientation", "jacobian", "bias_torque"):  # refilled in place
            getattr(live, name)[...] = getattr(fresh, name) if cycle % 50 == 0 else getattr(live, name)
        live.q += 0.001 * live.dq
        if cycle % 100 == 0 and cycle % 700 != 0:  # every 700 ms a gap the watchdog sees
            position = live.position + rng.normal(scale=0.2, size=3)
            orientation = quat_normalize(rng.normal(size=4))
            if cycle % 300 == 0:
                position[rng.integers(3)] = rng.choice([np.nan, np.inf])
            if controller.set_target(position, orientation, now):
                target = [np.clip(position, safety_config.workspace_min, safety_config.workspace_max), orientation]
                stamp, holding = now, False
        dt = 0.0 if cycle == 0 else 0.001
        if not holding and now - stamp > safety_config.watchdog_timeout:
            target = [np.clip(live.position, safety_config.workspace_min, safety_config.workspace_max)]
            target.append(quat_normalize(live.orientation))
            out, holding = [t.copy() for t in target], True
        out = list(reference_safety(safety_config, out, target, live, dt))
        filtered[0] = filtered[0] + alpha * (out[0] - filtered[0])
        filtered[1] = nlerp(filtered[1], out[1], alpha)
        raw = reference_law(controller.law, live, *filtered)
        expected = np.clip(raw, previous - config.max_torque_rate, previous + config.max_torque_rate)
        tau = controller.torque(live, now)
        np.testing.assert_allclose(tau, expected, rtol=0, atol=1e-12 * max(1.0, np.max(np.abs(raw))))
        assert np.all(np.abs(tau - previous) <= config.max_torque_rate + 1e-12)
        assert controller.safety.holding == holding
        previous = tau
        now += 0.001
    assert controller.safety.rejected > 0


def test_a_non_finite_state_gives_a_non_finite_torque_as_numpy_does():
    """NaN propagates through the float clip as through np.minimum / np.maximum: nothing turns it finite."""
    controller = CartesianImpedanceController(ImpedanceConfig(), SafetyConfig())
    s = state(jacobian=np.eye(6, 7))
    controller.reset(s, torque=np.zeros(7))
    s.position[0] = np.nan
    assert np.isnan(controller.torque(s, now=0.001)).any()
