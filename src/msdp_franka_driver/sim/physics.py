"""The simulated Franka: MuJoCo physics at 1 kHz with the same Cartesian impedance law as the real arm.

``SimulatedFranka`` owns the model and data, runs ``CartesianImpedanceController`` at every physics step
(``mj_step1`` -> law -> ``mj_step2``, so the law sees the state it acts on), samples the wrist
force/torque sensor and renders the third-person camera. ``MujocoArm`` (``sim.backend``) adapts it to the driver
node's ``ArmBackend`` interface. Gravity is not compensated by MuJoCo, so the law's bias torque is
``qfrc_bias`` (coriolis + gravity), where the real robot's is coriolis only.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque

import mujoco
import numpy as np

from msdp_franka_driver.backend import ArmSnapshot
from msdp_franka_driver.control_law import (
    N_JOINTS,
    ArmState,
    CartesianImpedanceController,
    ImpedanceConfig,
    SafetyConfig,
)
from msdp_franka_driver.pose import orientation_error
from msdp_franka_driver.sim import fr3_model
from msdp_franka_driver.sim.config import SimConfig

FT_SENSOR_MASS = 0.25  # kg, an ATI Mini45-class sensor with its adapter plates
FT_SENSOR_HEIGHT = 0.03
TOOL_FRAME_YAW = -math.pi / 4  # the flange x axis is 45 deg off; the tool frame's x points forward at home
GRAVITY = np.array([0.0, 0.0, -9.81])


def scene_xml(tool_body: str, objects: str, tool_mass: float, tool_com: tuple[float, float, float]) -> str:
    """The whole scene: table, arm + F/T sensor + tool, task objects, lights, the fixed cameras."""
    tool = (
        f'<body name="ft_sensor" euler="0 0 {TOOL_FRAME_YAW}">'
        f'<inertial pos="0 0 {FT_SENSOR_HEIGHT / 2}" mass="{FT_SENSOR_MASS}" diaginertia="1e-4 1e-4 1e-4"/>'
        f'<geom type="cylinder" size="0.035 {FT_SENSOR_HEIGHT / 2}" pos="0 0 {FT_SENSOR_HEIGHT / 2}" '
        'contype="0" conaffinity="0" rgba="0.2 0.2 0.22 1"/>'
        f'<body name="tool" pos="0 0 {FT_SENSOR_HEIGHT}"><site name="ft_site" size="0.004"/>'
        f'<inertial pos="{fr3_model.format_vector(tool_com)}" mass="{tool_mass}" diaginertia="2e-4 2e-4 5e-5"/>'
        f"{tool_body}</body></body>"
    )
    return f"""
<mujoco model="msdp_scene">
  <compiler angle="radian" eulerseq="XYZ" autolimits="true"/>
  <option timestep="0.001" integrator="Euler" cone="elliptic" impratio="2"/>
  <visual><quality shadowsize="0" offsamples="0"/><global offwidth="640" offheight="480"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.5 0.5 0.5"/></visual>
  <default>{fr3_model.arm_defaults()}
    <default class="object"><geom friction="0.8 0.005 0.0001" solref="0.004 1" solimp="0.95 0.99 0.001"/></default>
  </default>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1="0.55 0.5 0.45" rgb2="0.5 0.45 0.4" width="64" height="64"/>
    <material name="table" texture="grid" texrepeat="8 8"/>
    <mesh name="triangular_prism" vertex="{_triangular_prism_vertices(0.0346, 0.06)}"/>
  </asset>
  <worldbody>
    <light pos="0.6 -0.4 1.6" dir="-0.2 0.3 -1" diffuse="0.6 0.6 0.6" castshadow="false"/>
    <geom name="table" type="plane" size="1.2 1.2 0.05" material="table" class="object"/>
    <body name="workspace_center" pos="0.5 0 0.05"/>
    <camera name="third_person" pos="0.95 0 0.62" mode="targetbody" target="workspace_center" fovy="32"/>
    <camera name="overview" pos="1.6 0.9 0.9" mode="targetbody" target="workspace_center" fovy="45"/>
    {fr3_model.arm_bodies(tool)}
    {objects}
  </worldbody>
  <actuator>{fr3_model.arm_motors()}</actuator>
  <sensor><force name="ft_force" site="ft_site"/><torque name="ft_torque" site="ft_site"/></sensor>
</mujoco>"""


def _triangular_prism_vertices(side: float, length: float) -> str:
    """An equilateral triangle (centred, one vertex on +x) extruded along z from 0 to ``length``."""
    radius = side / math.sqrt(3.0)
    corners = [(radius * math.cos(a), radius * math.sin(a)) for a in (0.0, 2 * math.pi / 3, 4 * math.pi / 3)]
    return " ".join(f"{x:.6f} {y:.6f} {z}" for z in (0.0, length) for x, y in corners)


class SimulatedFranka:
    """Physics, control law, F/T sensor and camera of one simulated arm."""

    def __init__(self, xml: str, impedance: ImpedanceConfig, safety: SafetyConfig, config: SimConfig):
        self.config = config
        self.model = mujoco.MjModel.from_xml_string(xml)
        self.model.opt.timestep = config.physics_dt
        self.data = mujoco.MjData(self.model)
        self.controller = CartesianImpedanceController(impedance, safety, dt=config.physics_dt)
        self._tcp = self.model.site("tcp").id
        self._ft_site = self.model.site("ft_site").id
        self._tool_body = self.model.body("tool").id
        self._force_adr = self.model.sensor("ft_force").adr[0]
        self._torque_adr = self.model.sensor("ft_torque").adr[0]
        self._jac = np.zeros((6, self.model.nv))  # linear rows, then angular rows, filled in place
        self._quat_wxyz = np.zeros(4)
        self._tool_weight = self.model.body_subtreemass[self._tool_body] * GRAVITY  # base frame, fixed
        self._live = self._live_state()
        self._wrench_every = max(1, round(1.0 / (config.wrench_rate * config.physics_dt)))
        self.wrench_window: deque[np.ndarray] = deque(maxlen=config.wrench_window)
        self.wrench_samples = 0  # F/T samples taken so far (a virtual F/T box streams each one)
        self.wrench_noise_std = 0.0
        self.rng = np.random.default_rng(0)
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self._steps = 0
        self.hand_force = np.array(config.hand_force, dtype=float)

    # -- state -------------------------------------------------------------------------------
    @property
    def time(self) -> float:
        return float(self.data.time)

    def _tcp_orientation(self, data: mujoco.MjData) -> np.ndarray:
        mujoco.mju_mat2Quat(self._quat_wxyz, data.site_xmat[self._tcp])
        w, x, y, z = self._quat_wxyz.tolist()
        return np.array([x, y, z, w])

    def tcp_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Tool centre point position and orientation (x y z w) from the current kinematics."""
        return self.data.site_xpos[self._tcp].copy(), self._tcp_orientation(self.data)

    def arm_state(self) -> ArmState:
        """The law's inputs, as copies; valid after mj_forward or mj_step1 (positions and velocities computed)."""
        live = self._refresh_live_state()
        return ArmState(**{f.name: getattr(live, f.name).copy() for f in dataclasses.fields(live)})

    def _live_state(self) -> ArmState:
        """One ArmState for the 1 kHz loop: views into ``data`` (MuJoCo never moves its arrays) plus a jacobian
        and an orientation that ``_refresh_live_state`` refills, so a physics step allocates no state. The
        controller keeps no reference to a state's arrays, so reusing them is safe."""
        data = self.data
        return ArmState(
            q=data.qpos[:N_JOINTS],
            dq=data.qvel[:N_JOINTS],
            position=data.site_xpos[self._tcp],
            orientation=np.zeros(4),
            jacobian=np.zeros((6, N_JOINTS)),
            bias_torque=data.qfrc_bias[:N_JOINTS],
        )

    def _refresh_live_state(self) -> ArmState:
        """The law's inputs in the live state's arrays (``arm_state`` copies them)."""
        live, jac, quat = self._live, self._jac, self._quat_wxyz
        mujoco.mj_jacSite(self.model, self.data, jac[:3], jac[3:], self._tcp)
        live.jacobian[:] = jac[:, :N_JOINTS]
        mujoco.mju_mat2Quat(quat, self.data.site_xmat[self._tcp])
        live.orientation[:3] = quat[1:]
        live.orientation[3] = quat[0]
        return live

    def wrench(self) -> np.ndarray:
        """Force and torque the environment applies to the tool, in the F/T sensor frame.

        MuJoCo's force/torque sensor reports what the sensor body exerts on the tool subtree; the
        tool's weight is removed with its known mass and centre of mass (the real sensor is tared
        with the tool mounted), so a free tool at rest reads zero.
        """
        d = self.data
        rot = d.site_xmat[self._ft_site].reshape(3, 3)
        wx, wy, wz = (rot.T @ self._tool_weight).tolist()
        cx, cy, cz = (rot.T @ (d.subtree_com[self._tool_body] - d.site_xpos[self._ft_site])).tolist()
        fx, fy, fz = d.sensordata[self._force_adr : self._force_adr + 3].tolist()
        tx, ty, tz = d.sensordata[self._torque_adr : self._torque_adr + 3].tolist()
        # The torque of the weight about the sensor, com x weight, written out (np.cross costs 10x more).
        wrench = np.array(
            (
                -fx - wx,
                -fy - wy,
                -fz - wz,
                -tx - (cy * wz - cz * wy),
                -ty - (cz * wx - cx * wz),
                -tz - (cx * wy - cy * wx),
            )
        )
        if self.wrench_noise_std > 0.0:
            wrench = wrench + self.rng.normal(0.0, self.wrench_noise_std, 6)
        return wrench

    def snapshot(self) -> ArmSnapshot:
        position, orientation = self.tcp_pose()
        return ArmSnapshot(
            time=self.time,
            q=self.data.qpos[:N_JOINTS].copy(),
            dq=self.data.qvel[:N_JOINTS].copy(),
            tau=self.data.actuator_force[:N_JOINTS].copy(),
            position=position,
            orientation=orientation,
            wrench=self.wrench(),
            holding=self.controller.safety.holding,
            hand_guiding=self.controller.hand_guiding is not None,
        )

    # -- motion --------------------------------------------------------------------------------
    def reset(self, q: np.ndarray) -> None:
        """Put the arm at joint positions ``q`` at rest, holding that pose, and clear the F/T window.

        Simulated time keeps running (it is the clock of every published stamp and of recordings)."""
        elapsed = self.data.time
        mujoco.mj_resetData(self.model, self.data)
        self.data.time = elapsed
        self.data.qpos[:N_JOINTS] = q
        self.data.xfrc_applied[self._tool_body, :3] = self.hand_force
        mujoco.mj_forward(self.model, self.data)
        state = self.arm_state()
        self.controller.reset(state, torque=state.bias_torque)
        self.data.ctrl[:N_JOINTS] = state.bias_torque
        mujoco.mj_forward(self.model, self.data)  # sensors of the state at rest, holding against gravity
        self.wrench_window.clear()
        self._steps = 0
        self._sample_wrench()
        while len(self.wrench_window) < self.wrench_window.maxlen:
            self.wrench_window.append(self.wrench_window[-1])

    def set_target(self, position: np.ndarray, orientation: np.ndarray) -> bool:
        return self.controller.set_target(position, orientation, self.time)

    def set_hand_force(self, force: np.ndarray) -> None:
        """A simulated hand on the tool: ``force`` (N, base frame) at the tool's centre of mass, from now until
        changed (MuJoCo's ``xfrc_applied``; it is kept across ``reset``). The wrist sensor feels it, as it would
        a person's hand; a person's hand itself cannot run here, so this is what tests and rehearsals use."""
        self.hand_force = np.array(force, dtype=float)
        self.data.xfrc_applied[self._tool_body, :3] = self.hand_force

    def step(self, n: int = 1) -> None:
        """Advance ``n`` physics steps, running the control law at each."""
        model, data = self.model, self.data
        torque, refresh, ctrl = self.controller.torque, self._refresh_live_state, data.ctrl[:N_JOINTS]
        for _ in range(n):
            mujoco.mj_step1(model, data)
            ctrl[:] = torque(refresh(), data.time)
            mujoco.mj_step2(model, data)
            self._steps += 1
            if self._steps % self._wrench_every == 0:
                self._sample_wrench()

    def _sample_wrench(self) -> None:
        self.wrench_window.append(self.wrench())  # mj_step2 has filled the force/torque sensor data
        self.wrench_samples += 1

    def solve_ik(
        self, position: np.ndarray, orientation: np.ndarray, q0: np.ndarray, iterations: int = 200
    ) -> np.ndarray:
        """Joint positions that put the TCP at a pose (damped least squares on kinematics only)."""
        data = mujoco.MjData(self.model)
        data.qpos[:N_JOINTS] = q0
        low, high = self.model.jnt_range[:N_JOINTS].T
        for _ in range(iterations):
            mujoco.mj_kinematics(self.model, data)
            mujoco.mj_comPos(self.model, data)
            error = np.concatenate(
                [position - data.site_xpos[self._tcp], orientation_error(orientation, self._tcp_orientation(data))]
            )
            if np.linalg.norm(error) < 1e-6:
                break
            mujoco.mj_jacSite(self.model, data, self._jac[:3], self._jac[3:], self._tcp)
            jac = self._jac[:, :N_JOINTS]
            dq = jac.T @ np.linalg.solve(jac @ jac.T + 1e-4 * np.eye(6), error)
            data.qpos[:N_JOINTS] = np.clip(data.qpos[:N_JOINTS] + dq, low, high)
        return data.qpos[:N_JOINTS].copy()

    # -- camera ----------------------------------------------------------------------------------
    def render(self, camera: str = "third_person", width: int | None = None, height: int | None = None) -> np.ndarray:
        """RGB uint8 image (height, width, 3) from a fixed camera; 64x64 by default."""
        size = (height or self.config.image_size, width or self.config.image_size)
        renderer = self._renderers.get(size)
        if renderer is None:
            renderer = self._renderers[size] = mujoco.Renderer(self.model, *size)
        renderer.update_scene(self.data, camera)
        return renderer.render()

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()
