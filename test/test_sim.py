"""The simulated Franka: wrist F/T physics, scripted insertion, determinism, the other tasks, perturbations."""

import mujoco
import numpy as np
import pytest

from msdp_franka_driver.control_law import ImpedanceConfig
from msdp_franka_driver.sim.config import EnvConfig
from msdp_franka_driver.sim.env import FrankaTaskEnv
from msdp_franka_driver.sim.scenes import HOLE_CHAMFER
from msdp_policy.tasks import HOLE_CLEARANCE, HOLE_DEPTH, TaskConfig, hole_inradius, target_after


def make_env(**task) -> FrankaTaskEnv:
    impedance = task.pop("impedance", ImpedanceConfig())
    return FrankaTaskEnv(EnvConfig(task=TaskConfig(**task), impedance=impedance))


def settle(env: FrankaTaskEnv, position: np.ndarray, orientation: np.ndarray, seconds: float) -> None:
    for _ in range(round(seconds / 0.1)):
        env.sim.set_target(position, orientation)
        env.sim.step(100)


@pytest.mark.parametrize("stiffness", [1000.0, 2000.0])
def test_pressing_on_the_fixture_reads_stiffness_times_penetration_along_the_tool_axis(stiffness):
    env = make_env(hole_yaw_range=0.0, impedance=ImpedanceConfig(translational_stiffness=stiffness))
    _, info = env.reset(seed=3)
    hole = info["hole_position"]
    top = hole[2] + HOLE_DEPTH
    over_wall = hole[:2] + [-(hole_inradius() + 0.015), 0.0]
    _, down = env.sim.tcp_pose()
    for z in np.linspace(top + 0.02, top + 0.003, 10):
        settle(env, np.array([*over_wall, z]), down, 0.1)
    free_force = np.mean(env.sim.wrench_window, axis=0)[:3]
    penetration = 0.01  # the target sits this far below the wall's top face
    settle(env, np.array([*over_wall, top - penetration]), down, 1.5)
    force = np.mean(env.sim.wrench_window, axis=0)[:3]
    tip, _ = env.sim.tcp_pose()
    assert tip[2] == pytest.approx(top, abs=1e-3)  # resting on the wall top, not through it
    assert np.linalg.norm(free_force) < 0.5
    # Sensor frame z points along the tool, down into the fixture: the fixture pushes back along -z.
    assert force[2] == pytest.approx(-stiffness * penetration, rel=0.05)
    assert np.linalg.norm(force[:2]) < 0.2 * abs(force[2])
    env.close()


@pytest.mark.parametrize("offset, goes_in", [(0.0, True), (HOLE_CLEARANCE + 0.4 * HOLE_CHAMFER, True), (0.013, False)])
def test_the_chamfer_guides_a_peg_pushed_down_off_centre_into_the_hole(offset, goes_in):
    """A peg pushed straight down beside the hole's axis, towards one wall, slides down the lead-in into the
    hole when its edge lands on the chamfer (the impedance spring gives way sideways); beyond it, it rests on top."""
    env = make_env(hole_yaw_range=0.0)
    _, info = env.reset(seed=3)
    hole = info["hole_position"]
    top = hole[2] + HOLE_DEPTH
    beside = hole[:2] + [-offset, 0.0]  # towards the wall at pi, which one face of the peg is parallel to
    _, down = env.sim.tcp_pose()
    settle(env, np.array([*beside, top + 0.01]), down, 1.0)
    settle(env, np.array([*beside, top - env.task.config.success_depth - 0.01]), down, 2.0)
    score = env.task.score(env.sim)
    tip, _ = env.sim.tcp_pose()
    assert score.success == goes_in
    if not goes_in:
        assert tip[2] == pytest.approx(top, abs=2e-3)
    env.close()


@pytest.mark.parametrize("friction_scale, slides", [(1.0, False), (0.5, True)])
def test_the_friction_scale_decides_whether_a_peg_pressed_onto_the_wall_top_slides(friction_scale, slides):
    """Pressed down onto a wall top (action z -0.5: about 20 N) and pushed towards the hole (x 0.35: about 14 N),
    the peg sticks at the nominal friction 0.8 and slides in at half of it. The walls' contact priority makes
    their scaled friction, not the peg's own, the contact's."""
    env = make_env(hole_yaw_range=0.0, object_friction_scale=friction_scale)
    _, info = env.reset(seed=3)
    hole = info["hole_position"]
    top = hole[2] + HOLE_DEPTH
    _, down = env.sim.tcp_pose()
    on_wall = hole[:2] + [-0.022, 0.0]
    settle(env, np.array([*on_wall, top + 0.01]), down, 1.0)
    settle(env, np.array([*on_wall, top - 0.01]), down, 1.0)
    start, _ = env.sim.tcp_pose()
    for _ in range(10):
        env.step(np.array([0.35, 0.0, -0.5, 0.0]))
    tip, _ = env.sim.tcp_pose()
    assert (tip[0] - start[0] > 0.01) == slides
    assert env.task.score(env.sim).success == slides
    env.close()


def test_free_tool_at_rest_reads_no_wrench():
    env = make_env()
    obs, _ = env.reset(seed=0)
    assert obs["wrench"].shape == (4, 6)
    assert np.abs(obs["wrench"]).max() < 0.5
    env.close()


@pytest.mark.parametrize("corner", [(-1, -1), (-1, 1), (1, -1), (1, 1)])
def test_the_camera_sees_the_whole_hole_at_the_edges_of_its_random_range(corner):
    """Only the camera knows where the hole is and how it is turned: at every corner of its random range the
    hole's walls are whole in the 64x64 image and large enough to show their outline (the old, farther view
    gave them 71-124 pixels; its 1 cm per pixel hid the yaw)."""
    env = make_env()
    env.reset(seed=0)
    model = env.sim.model
    xy = np.array([0.5, 0.0]) + TaskConfig().hole_xy_range * np.array(corner)
    env.task.place_hole(env.sim, xy, corner[0] * env.config.task.hole_yaw_range)
    mujoco.mj_forward(model, env.sim.data)
    renderer = mujoco.Renderer(model, 64, 64)
    renderer.enable_segmentation_rendering()
    renderer.update_scene(env.sim.data, "third_person")
    ids, types = np.moveaxis(renderer.render(), -1, 0)
    renderer.close()
    walls = env.task.wall_geoms(model)
    rows, cols = np.nonzero(np.isin(ids, walls) & (types == mujoco.mjtObj.mjOBJ_GEOM))
    assert len(rows) >= 150
    assert min(rows.min(), cols.min()) >= 4 and max(rows.max(), cols.max()) <= 59
    env.close()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scripted_policy_inserts_the_peg_at_the_nominal_hole_yaw(seed):
    env = make_env(hole_yaw_range=0.0)
    _, info = env.reset(seed=seed)
    success = False
    for _ in range(60):
        _, reward, terminated, _, info = env.step(env.scripted_action())
        success = info["success"]
        if terminated:
            break
    assert success
    tip, _ = env.sim.tcp_pose()
    assert tip[2] <= info["hole_position"][2] + HOLE_DEPTH - env.task.config.success_depth
    assert reward > -0.03
    env.close()


def rollout(seed: int, steps: int = 15) -> list[np.ndarray]:
    env = make_env()
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(123)
    out = [obs["proprio"], obs["image"]]
    for _ in range(steps):
        obs, *_ = env.step(rng.uniform(-1, 1, env.action_dim))
        out += [obs["proprio"], obs["wrench"], obs["image"]]
    env.close()
    return out


def test_same_seed_gives_the_same_trajectory():
    first, again, other = rollout(5), rollout(5), rollout(6)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_actions_are_clipped_and_checked():
    env = make_env()
    env.reset(seed=0)
    before, _ = env.sim.tcp_pose()
    env.step(np.array([50.0, 0.0, 0.0, 0.0]))
    after, _ = env.sim.tcp_pose()
    assert after[0] - before[0] < env.config.task.max_step + 2e-3
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan, 0, 0, 0]))
    env.close()


def test_push_cube_moves_the_cube_when_pushed():
    env = make_env(name="push_cube")
    obs, info = env.reset(seed=1)
    start = info["cube_position"].copy()
    assert env.action_dim == 3
    tip, down = env.sim.tcp_pose()
    settle(env, np.array([tip[0], start[1], 0.02]), down, 0.8)
    for _ in range(12):
        obs, reward, terminated, truncated, info = env.step(np.array([1.0, 0.0, 0.0]))
    assert info["cube_position"][0] > start[0] + 0.05
    assert np.abs(obs["wrench"]).max() > 0.5  # the push shows on the wrist sensor
    env.close()


def test_close_drawer_gently_succeeds_and_slamming_fails():
    env = make_env(name="close_drawer")
    _, info = env.reset(seed=2)
    assert info["opening"] > 0.05
    tip, down = env.sim.tcp_pose()
    settle(env, np.array([tip[0], 0.0, 0.1]), down, 0.5)
    success = False
    for _ in range(100):
        opening = float(env.task.privileged_state(env.sim)["opening"])
        push = np.clip((opening + 0.01) * 20.0, 0.05, 0.3)  # slow down as the drawer closes
        _, _, terminated, _, info = env.step(np.array([push, 0.0, 0.0]))
        success = info["success"]
        if terminated:
            break
    assert success and not info["failed"]

    env.reset(seed=2)
    tip, down = env.sim.tcp_pose()
    settle(env, np.array([tip[0], 0.0, 0.1]), down, 0.5)
    failed = False
    for _ in range(40):
        _, _, terminated, _, info = env.step(np.array([1.0, 0.0, 0.0]))
        failed = info["failed"]
        if terminated:
            break
    assert failed and not info["success"]
    env.close()


def test_sensor_perturbations_change_the_observation():
    clean = make_env()
    noisy = make_env(image_noise_std=20.0, ft_noise_std=2.0)
    a, _ = clean.reset(seed=0)
    b, _ = noisy.reset(seed=0)
    assert np.abs(a["image"].astype(int) - b["image"].astype(int)).mean() > 5
    assert np.std(b["wrench"]) > 0.5 > np.std(a["wrench"])
    clean.close()
    noisy.close()


def test_the_fast_physics_step_equals_the_plain_one_bit_for_bit():
    """``SimulatedFranka.step`` (live state refilled in place, wrench written out) against the plain loop: a fresh
    ``arm_state()`` per physics step and the wrench with np.cross; the same trajectory and F/T window exactly."""
    fast, plain = make_env(), make_env()
    fast.reset(seed=3)
    plain.reset(seed=3)
    sim = plain.sim
    rng = np.random.default_rng(4)
    for _ in range(5):
        action = rng.uniform(-1, 1, fast.action_dim)
        fast.step(action)
        position, orientation = sim.tcp_pose()
        sim.set_target(*target_after(position, orientation, action, plain.action_spec))
        for _ in range(plain.physics_steps_per_action):
            mujoco.mj_step1(sim.model, sim.data)
            sim.data.ctrl[:7] = sim.controller.torque(sim.arm_state(), sim.data.time)
            mujoco.mj_step2(sim.model, sim.data)
            sim._steps += 1
            if sim._steps % sim._wrench_every == 0:
                d = sim.data
                rot = d.site_xmat[sim._ft_site].reshape(3, 3)
                weight = rot.T @ (sim.model.body_subtreemass[sim._tool_body] * np.array([0.0, 0.0, -9.81]))
                com = rot.T @ (d.subtree_com[sim._tool_body] - d.site_xpos[sim._ft_site])
                force = -d.sensordata[sim._force_adr : sim._force_adr + 3] - weight
                torque = -d.sensordata[sim._torque_adr : sim._torque_adr + 3] - np.cross(com, weight)
                sim.wrench_window.append(np.concatenate([force, torque]))
        np.testing.assert_array_equal(fast.sim.data.qpos, sim.data.qpos)
        np.testing.assert_array_equal(fast.sim.data.qvel, sim.data.qvel)
        np.testing.assert_array_equal(np.array(fast.sim.wrench_window), np.array(sim.wrench_window))
    live = fast.sim._refresh_live_state()
    for name, value in vars(fast.sim.arm_state()).items():
        np.testing.assert_array_equal(getattr(live, name), value)
    fast.close()
    plain.close()
