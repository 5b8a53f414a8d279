"""The paper's simulated tasks as MuJoCo scenes: the tool the arm holds, the objects on the table, how an
episode is randomised, the ground-truth state scoring needs, and the scripted expert.

Each scene extends its task from ``msdp_policy.tasks`` (reward and success, plain numpy), so the simulator and
the policy node score alike. The hand is modelled as a rigid mount: a held peg does not slip.
"""

from __future__ import annotations

import math

import numpy as np

from msdp_franka_driver.sim.physics import SimulatedFranka
from msdp_policy.tasks import (
    DOWN,
    HOLE_DEPTH,
    CloseDrawer,
    PegInsertion,
    PushCube,
    Score,
    Task,
    TaskConfig,
    hole_inradius,
    make_task,
    peg_yaw_error,
)

PEG_LENGTH = 0.06
HOLE_CHAMFER = 0.005  # m, 45 degree lead-in at the mouth of the hole
# Clearance (msdp_policy.tasks.HOLE_CLEARANCE) and lead-in forgive about the 5-8 mm that the 64x64 camera
# (about 5 mm per pixel) resolves (scripts/insertion_tolerance.py measures it; README "Results").
FIXTURE_BASE = 0.02  # m of solid block under the hole: its floor is inside the workspace box
ROUND_PEG_RADIUS = 0.012
ROUND_PEG_LENGTH = 0.08


class Scene(Task):
    """A task's scene in the simulator; scoring comes from the task."""

    tool_mass = 0.15
    tool_com = (0.0, 0.0, 0.03)

    def tool_xml(self) -> str:
        raise NotImplementedError

    def objects_xml(self) -> str:
        raise NotImplementedError

    def randomize(
        self, sim: SimulatedFranka, rng: np.random.Generator, config: TaskConfig
    ) -> tuple[np.ndarray, np.ndarray]:
        """Re-draw the scene's random parameters; return the start TCP pose (position, orientation)."""
        raise NotImplementedError

    def score(self, sim: SimulatedFranka) -> Score:
        tip, orientation = sim.tcp_pose()
        return self.score_state(tip, orientation, self.privileged_state(sim))

    def privileged_state(self, sim: SimulatedFranka) -> dict[str, np.ndarray]:
        """Ground-truth object state for scoring, scripted policies and logging (never in the observation)."""
        return {}


class PegScene(Scene, PegInsertion):
    """A triangular peg held in the hand goes into a chamfered triangular hole whose position and yaw are random."""

    tool_com = (0.0, 0.0, PEG_LENGTH / 2)

    def tool_xml(self) -> str:
        return (
            '<geom name="peg" type="mesh" mesh="triangular_prism" class="object" rgba="0.85 0.45 0.1 1" '
            'mass="0"/>'
            f'<site name="tcp" pos="0 0 {PEG_LENGTH}" size="0.004" rgba="0 1 0 1"/>'
        )

    def objects_xml(self) -> str:
        walls = "".join(
            self._wall_xml(index, angle) for index, angle in enumerate((math.pi, math.pi / 3, -math.pi / 3))
        )
        base = (
            f'<geom name="fixture_base" type="box" class="object" rgba="0.25 0.45 0.75 1" '
            f'size="0.07 0.07 {FIXTURE_BASE / 2}" pos="0 0 {-FIXTURE_BASE / 2}"/>'
        )
        # The body's origin is the centre of the hole's floor; privileged_state reports it as hole_position.
        return f'<body name="fixture" pos="0.5 0 {FIXTURE_BASE}">{base}{walls}</body>'

    @staticmethod
    def _wall_xml(index: int, angle: float) -> str:
        """One side of the hole: a box whose inner face is one edge of the triangle, with a 45 degree chamfer
        (lead-in) along its top inner edge, built from a lower box, a set-back upper box and a sloped plate.

        The peg's vertex at angle 0 faces the wall at pi. Walls are darker than the floor, so the 64x64 camera
        shows the hole's outline, and with it its yaw. They have contact priority: MuJoCo otherwise mixes two
        geoms' friction by taking the larger, so the peg's own 0.8 would hide a lower ``object_friction_scale``.
        """
        inradius = hole_inradius()
        wall, half_length, c = 0.03, 0.06, HOLE_CHAMFER
        radial = np.array([math.cos(angle), math.sin(angle)])

        def box(name: str, r: float, z: float, half: tuple[float, float, float], tilt: float = 0.0) -> str:
            x, y = r * radial
            return (
                f'<geom name="{name}" type="box" class="object" priority="1" rgba="0.1 0.2 0.45 1" '
                f'size="{half[0]:.6f} {half[1]:.6f} {half[2]:.6f}" euler="0 {tilt:.6f} {angle:.6f}" '
                f'pos="{x:.6f} {y:.6f} {z:.6f}"/>'
            )

        lower = box(
            f"hole_wall{index}",
            inradius + wall / 2,
            (HOLE_DEPTH - c) / 2,
            (wall / 2, half_length, (HOLE_DEPTH - c) / 2),
        )
        if c == 0.0:
            return lower
        upper = box(
            f"hole_wall{index}_top", inradius + (c + wall) / 2, HOLE_DEPTH - c / 2, ((wall - c) / 2, half_length, c / 2)
        )
        # The plate's top face runs from (inradius, depth - c) up to (inradius + c, depth); it sinks into the wall.
        thickness = c / math.sqrt(2)
        centre_r = inradius + c / 2 + thickness / 2 / math.sqrt(2)
        centre_z = HOLE_DEPTH - c / 2 - thickness / 2 / math.sqrt(2)
        plate = box(
            f"hole_wall{index}_chamfer",
            centre_r,
            centre_z,
            (c / math.sqrt(2), half_length, thickness / 2),
            -math.pi / 4,
        )
        return lower + upper + plate

    @staticmethod
    def wall_geoms(model) -> list[int]:
        """Ids of every geom of the hole's three walls (lower boxes, tops and chamfers)."""
        return [geom for geom in range(model.ngeom) if model.geom(geom).name.startswith("hole_wall")]

    @staticmethod
    def place_hole(sim, xy: np.ndarray, yaw: float) -> None:
        """Moves the fixture: the hole's floor centred at ``xy`` on the base block, turned by ``yaw`` about z."""
        fixture = sim.model.body("fixture").id
        sim.model.body_pos[fixture] = [xy[0], xy[1], FIXTURE_BASE]
        sim.model.body_quat[fixture] = [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]

    def randomize(self, sim, rng, config):
        hole_xy = np.array([0.5, 0.0]) + rng.uniform(-config.hole_xy_range, config.hole_xy_range, 2)
        self.place_hole(sim, hole_xy, rng.uniform(-config.hole_yaw_range, config.hole_yaw_range))
        sim.model.geom_friction[self.wall_geoms(sim.model), 0] = 0.8 * config.object_friction_scale
        start = np.array([hole_xy[0], hole_xy[1], FIXTURE_BASE + HOLE_DEPTH]) + np.array(
            [*rng.uniform(-0.06, 0.06, 2), rng.uniform(0.04, 0.1)]
        )
        return start, DOWN.copy()

    def privileged_state(self, sim):
        fixture = sim.model.body("fixture").id
        w, x, y, z = sim.model.body_quat[fixture]
        yaw = math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
        return {"hole_position": sim.model.body_pos[fixture].copy(), "hole_yaw": np.array(yaw)}

    def yaw_error(self, sim) -> float:
        _, orientation = sim.tcp_pose()
        return peg_yaw_error(orientation, float(self.privileged_state(sim)["hole_yaw"]))

    def scripted_action(self, sim: SimulatedFranka) -> np.ndarray:
        """Privileged expert: the task's expert (``PegInsertion.expert_action``) told the true hole pose."""
        return self.expert_action(*sim.tcp_pose(), self.privileged_state(sim))


class PushCubeScene(Scene, PushCube):
    """A held round peg pushes a cube, whose mass and centre of mass are random, to a goal on the table.

    The cube has contact priority, so its random friction, not the larger one of the table, is the contact's.
    """

    tool_com = (0.0, 0.0, ROUND_PEG_LENGTH / 2)
    cube_half = 0.025

    def tool_xml(self) -> str:
        return (
            f'<geom name="round_peg" type="cylinder" size="{ROUND_PEG_RADIUS} {ROUND_PEG_LENGTH / 2}" '
            f'pos="0 0 {ROUND_PEG_LENGTH / 2}" class="object" rgba="0.7 0.7 0.72 1" mass="0"/>'
            f'<site name="tcp" pos="0 0 {ROUND_PEG_LENGTH}" size="0.004" rgba="0 1 0 1"/>'
        )

    def objects_xml(self) -> str:
        h = self.cube_half
        return (
            f'<body name="cube" pos="0.5 0 {h}"><freejoint name="cube_joint"/>'
            f'<geom name="cube" type="box" size="{h} {h} {h}" class="object" priority="1" mass="0.3" '
            'rgba="0.8 0.15 0.15 1"/></body>'
            '<body name="goal" pos="0.6 0 0.001"><geom type="cylinder" size="0.03 0.001" contype="0" '
            'conaffinity="0" rgba="0.1 0.8 0.2 0.6"/></body>'
        )

    def randomize(self, sim, rng, config):
        model, data = sim.model, sim.data
        cube = model.body("cube").id
        model.body_mass[cube] = rng.uniform(0.1, 0.6) * config.object_mass_scale
        model.body_ipos[cube] = [*rng.uniform(-0.012, 0.012, 2), 0.0]
        model.geom_friction[model.geom("cube").id, 0] = rng.uniform(0.4, 0.9) * config.object_friction_scale
        cube_xy = np.array([0.45, 0.0]) + rng.uniform([-0.03, -0.1], [0.03, 0.1])
        goal_xy = cube_xy + np.array([rng.uniform(0.1, 0.16), rng.uniform(-0.08, 0.08)])
        model.body_pos[model.body("goal").id, :2] = goal_xy
        qpos = model.jnt_qposadr[model.joint("cube_joint").id]
        data.qpos[qpos : qpos + 7] = [cube_xy[0], cube_xy[1], self.cube_half, 1, 0, 0, 0]
        start = np.array([cube_xy[0] - 0.08, cube_xy[1] + rng.uniform(-0.03, 0.03), rng.uniform(0.02, 0.06)])
        return start, DOWN.copy()

    def privileged_state(self, sim):
        return {
            "cube_position": sim.data.body("cube").xpos.copy(),
            "goal_position": sim.model.body_pos[sim.model.body("goal").id].copy(),
        }


class CloseDrawerScene(Scene, CloseDrawer):
    """Close an open drawer, whose friction is random, gently: success is nearly closed and slow."""

    tool_com = (0.0, 0.0, ROUND_PEG_LENGTH / 2)

    tool_xml = PushCubeScene.tool_xml

    def objects_xml(self) -> str:
        return (
            '<body name="cabinet" pos="0.72 0 0.1">'
            '<geom type="box" size="0.12 0.14 0.005" pos="0 0 0.065" class="object" rgba="0.45 0.35 0.25 1"/>'
            '<geom type="box" size="0.12 0.14 0.005" pos="0 0 -0.065" class="object" rgba="0.45 0.35 0.25 1"/>'
            '<geom type="box" size="0.12 0.005 0.07" pos="0 0.14 0" class="object" rgba="0.45 0.35 0.25 1"/>'
            '<geom type="box" size="0.12 0.005 0.07" pos="0 -0.14 0" class="object" rgba="0.45 0.35 0.25 1"/>'
            '<geom type="box" size="0.005 0.14 0.07" pos="0.12 0 0" class="object" rgba="0.45 0.35 0.25 1"/>'
            '<body name="drawer" pos="0 0 0"><joint name="drawer_slide" type="slide" axis="-1 0 0" '
            'range="0 0.2" damping="2" frictionloss="1"/>'
            '<geom name="drawer_front" type="box" size="0.006 0.13 0.055" pos="-0.126 0 0" class="object" '
            'mass="0.5" rgba="0.85 0.75 0.5 1"/>'
            '<geom type="box" size="0.11 0.12 0.004" pos="-0.01 0 -0.05" class="object" mass="0.5" '
            'rgba="0.8 0.7 0.45 1"/></body></body>'
        )

    def _joint(self, sim) -> tuple[int, int]:
        joint = sim.model.joint("drawer_slide")
        return int(joint.qposadr[0]), int(joint.dofadr[0])

    def randomize(self, sim, rng, config):
        model, data = sim.model, sim.data
        qpos, dof = self._joint(sim)
        model.dof_frictionloss[dof] = rng.uniform(0.5, 4.0) * config.object_friction_scale
        model.body_mass[model.body("drawer").id] = 1.0 * config.object_mass_scale
        data.qpos[qpos] = rng.uniform(0.08, 0.16)
        front_x = 0.72 - 0.132 - data.qpos[qpos]
        start = np.array([front_x - rng.uniform(0.04, 0.08), rng.uniform(-0.06, 0.06), rng.uniform(0.08, 0.13)])
        return start, DOWN.copy()

    def privileged_state(self, sim):
        qpos, dof = self._joint(sim)
        return {
            "opening": np.array(sim.data.qpos[qpos]),
            "opening_speed": np.array(sim.data.qvel[dof]),
            "front_position": sim.data.geom("drawer_front").xpos.copy(),
        }


SCENES: dict[str, type[Scene]] = {scene.name: scene for scene in (PegScene, PushCubeScene, CloseDrawerScene)}


def make_scene(config: TaskConfig) -> Scene:
    return make_task(config, SCENES)
