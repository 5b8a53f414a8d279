"""The paper's tasks as a policy sees them: reward and success from the tool pose and the task's state, and
what an action asks of the arm. Plain numpy, no simulator.

The simulator (``msdp_franka_driver.sim.scenes``) extends each task with its scene (objects, randomisation,
ground-truth state); the policy node scores the same way from the tool pose and a goal (published by the
simulated driver, or taught on a real cell). Rewards are dense negative distances by default, as in panda-gym,
which the paper's simulated tasks use; ``reward: sparse`` gives the +1 at success of its real-robot peg task.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from msdp.config import param_range
from msdp.specs import ActionSpec
from msdp_franka_driver.pose import quat_multiply, yaw_quat

T = TypeVar("T", bound="Task")
DOWN = np.array([1.0, 0.0, 0.0, 0.0])  # tool z pointing down, tool x forward (quaternion x y z w)

PEG_SIDE = 0.0346  # m, equilateral triangle (inradius 10 mm)
HOLE_CLEARANCE = 0.005  # m, on the inradius
HOLE_DEPTH = 0.04


@dataclass(frozen=True)
class TaskConfig:
    """Episode, action and perturbation settings shared by all tasks."""

    name: str = field(default="peg", metadata={"choices": ("peg", "push_cube", "close_drawer")})
    max_episode_steps: int = field(default=100, metadata=param_range(1, 10000, "policy steps"))
    control_rate: float = field(default=10.0, metadata=param_range(1.0, 100.0, "Hz, policy steps"))
    max_step: float = field(default=0.02, metadata=param_range(0.001, 0.05, "m per policy step per axis"))
    max_yaw_step: float = field(default=0.1, metadata=param_range(0.0, 0.5, "rad per policy step"))
    hole_yaw_range: float = field(default=0.5, metadata=param_range(0.0, math.pi / 3, "rad, +-, peg task"))
    hole_xy_range: float = field(
        default=0.08, metadata=param_range(0.0, 0.1, "m, +- about (0.5, 0), simulated peg; 0 = a fixed fixture")
    )
    reward: str = field(
        default="shaped",
        metadata={"choices": ("shaped", "sparse"), "doc": "shaped: -distance to goal; sparse: +1 at success"},
    )
    success_depth: float = field(default=0.025, metadata=param_range(0.001, 0.04, "m, peg tip below the fixture top"))
    success_lateral: float = field(
        default=0.0, metadata=param_range(0.0, 0.05, "m, peg tip off the hole axis at most; 0 = the hole's inradius")
    )
    image_noise_std: float = field(default=0.0, metadata=param_range(0.0, 128.0, "pixel intensity (0-255)"))
    ft_noise_std: float = field(default=0.0, metadata=param_range(0.0, 50.0, "N and Nm"))
    object_mass_scale: float = field(default=1.0, metadata=param_range(0.1, 10.0, "x nominal mass"))
    object_friction_scale: float = field(default=1.0, metadata=param_range(0.1, 10.0, "x nominal friction"))


@dataclass
class Score:
    reward: float
    success: bool
    failed: bool  # an unrecoverable outcome (a slammed drawer, a cube off the table) ends the episode
    goal_error: float  # m still to go: peg tip to its goal below the fixture top, cube to goal, drawer opening


def tcp_yaw(orientation: np.ndarray) -> float:
    """Yaw of the tool x axis about the base z axis."""
    x, y, z, w = orientation
    return math.atan2(2 * (x * y + z * w), 1 - 2 * (y * y + z * z))


def wrap_angle(angle: float, period: float = 2 * math.pi) -> float:
    return (angle + period / 2) % period - period / 2


class Task:
    """Scoring of one task; ``state`` holds the object states scoring needs (ground truth or a goal).

    ``config`` carries the reward kind (``shaped`` or the paper's real-robot ``sparse`` +1 at success) and the
    task's success thresholds."""

    name = ""
    action_dim = 3

    def __init__(self, config: TaskConfig | None = None):
        self.config = config if config is not None else TaskConfig(name=self.name)

    def reward(self, shaped: float, success: bool) -> float:
        """The configured reward: the task's shaped reward, or +1 at success and 0 otherwise."""
        return shaped if self.config.reward == "shaped" else float(success)

    def score_state(self, tip: np.ndarray, orientation: np.ndarray, state: dict[str, np.ndarray]) -> Score:
        """Reward and success from the tool pose and the task state (the simulator's, or a measured goal)."""
        raise NotImplementedError

    def goal_pose(self, state: dict[str, np.ndarray]) -> tuple[np.ndarray, float] | None:
        """The goal as a pose (position, yaw) when a fixed goal is all scoring needs, else None.

        Over ROS the policy node scores episodes from the tool pose and this goal; tasks with moving objects
        would need object tracking, which the stack does not have.
        """
        return None

    def state_from_goal(self, position: np.ndarray, yaw: float) -> dict[str, np.ndarray]:
        raise NotImplementedError(f"task {self.name}: scoring needs object states that a goal pose does not give")


def hole_inradius() -> float:
    """The peg hole's inradius below the lead-in: the peg's plus the clearance (read at call time, so a
    script that changes ``HOLE_CLEARANCE`` reaches scoring and the scene alike)."""
    return PEG_SIDE / (2 * math.sqrt(3)) + HOLE_CLEARANCE


def peg_yaw_error(orientation: np.ndarray, hole_yaw: float) -> float:
    """Peg-to-hole yaw error, modulo the triangle's 120 degree symmetry."""
    return wrap_angle(hole_yaw - tcp_yaw(orientation), 2 * math.pi / 3)


class PegInsertion(Task):
    """A triangular peg into a triangular hole: success is the tip deeper than ``success_depth`` below the fixture
    top, within ``success_lateral`` of the hole's axis."""

    name = "peg"
    action_dim = 4

    def lateral_tolerance(self) -> float:
        return self.config.success_lateral or hole_inradius()

    def goal_pose(self, state):
        return np.asarray(state["hole_position"], dtype=float), float(state["hole_yaw"])

    def state_from_goal(self, position, yaw):
        return {"hole_position": np.asarray(position, dtype=float), "hole_yaw": np.array(yaw)}

    def score_state(self, tip, orientation, state):
        hole = np.asarray(state["hole_position"], dtype=float)
        depth_needed = self.config.success_depth
        goal = hole + np.array([0.0, 0.0, HOLE_DEPTH - depth_needed - 0.005])
        lateral = float(np.linalg.norm(tip[:2] - hole[:2]))
        depth = hole[2] + HOLE_DEPTH - tip[2]
        success = bool(depth >= depth_needed and lateral < self.lateral_tolerance())
        yaw_error = peg_yaw_error(orientation, float(state["hole_yaw"]))
        goal_error = float(np.linalg.norm(tip - goal))
        shaped = -goal_error - 0.05 * abs(yaw_error)
        return Score(self.reward(shaped, success), success, False, goal_error)

    def expert_action(self, tip: np.ndarray, orientation: np.ndarray, state: dict[str, np.ndarray]) -> np.ndarray:
        """Scripted expert: align xy and yaw above the hole, descend when aligned, lift off when jammed.

        For demonstrations, rehearsals, tests and data collection (told the hole by the simulator, or a taught
        goal). Lateral correction never stops; the peg goes down only when it is aligned within the clearance
        or already inside the hole, so it never pushes on the hole's edge.
        """
        hole = np.asarray(state["hole_position"], dtype=float)
        top = hole[2] + HOLE_DEPTH
        lateral = hole[:2] - tip[:2]
        yaw_error = peg_yaw_error(orientation, float(state["hole_yaw"]))
        inside = tip[2] < top - 0.002
        aligned = np.linalg.norm(lateral) < 0.8 * HOLE_CLEARANCE and abs(yaw_error) < 0.05
        target_z = top - self.config.success_depth - 0.01 if inside or aligned else top + 0.015
        dz = target_z - tip[2]
        if tip[2] < top + 0.02:
            dz = np.clip(dz, -0.005, 0.005)  # slow near the hole: fast descents drag the tip sideways
        c = self.config
        action = np.array([*(lateral / c.max_step), dz / c.max_step, yaw_error / max(c.max_yaw_step, 1e-6)])
        return np.clip(action, -1.0, 1.0)


class PushCube(Task):
    """A held round peg pushes a cube to a goal on the table."""

    name = "push_cube"
    success_distance = 0.03

    def score_state(self, tip, orientation, state):
        cube, goal = state["cube_position"], state["goal_position"]
        to_goal = float(np.linalg.norm(cube[:2] - goal[:2]))
        success = to_goal < self.success_distance
        shaped = -to_goal - 0.5 * float(np.linalg.norm(tip - cube))
        return Score(self.reward(shaped, success), success, bool(cube[2] < 0.0), to_goal)


class CloseDrawer(Task):
    """Close an open drawer gently: success is nearly closed and slow, a slam ends the episode."""

    name = "close_drawer"
    closed_tolerance = 0.01  # m
    gentle_speed = 0.05  # m/s, the most a closed drawer may still move
    slam_speed = 0.1  # m/s near the closed stop ends the episode as a failure

    def score_state(self, tip, orientation, state):
        opening, speed = float(state["opening"]), abs(float(state["opening_speed"]))
        front = state["front_position"]
        reach = float(np.linalg.norm(tip - (front + np.array([-0.01, 0.0, 0.0]))))
        shaped = -opening - 0.3 * reach - 0.5 * max(0.0, speed - self.gentle_speed)
        success = bool(opening < self.closed_tolerance and speed < self.gentle_speed)
        slammed = opening < 2 * self.closed_tolerance and speed > self.slam_speed
        return Score(self.reward(shaped, success), success, bool(slammed), opening)


TASKS: dict[str, type[Task]] = {task.name: task for task in (PegInsertion, PushCube, CloseDrawer)}


def make_task(config: TaskConfig, registry: Mapping[str, type[T]] = TASKS) -> T:
    """The task ``config.name`` from ``registry`` (the scorers here, or the simulator's scenes), scoring as
    ``config`` says."""
    try:
        task = registry[config.name]
    except KeyError:
        raise ValueError(f"unknown task {config.name!r}; choose one of {', '.join(registry)}") from None
    return task(config)


def action_spec(config: TaskConfig) -> ActionSpec:
    """The action a task takes: its dimensions and the configured step sizes."""
    return ActionSpec(dim=TASKS[config.name].action_dim, max_step=config.max_step, max_yaw_step=config.max_yaw_step)


def target_after(
    position: np.ndarray, orientation: np.ndarray, action: np.ndarray, spec: ActionSpec
) -> tuple[np.ndarray, np.ndarray]:
    """The impedance target an action asks for: current position + displacement, tool pointing down.

    Roll and pitch are always commanded back to tool-down, so contact cannot tilt the tool for good; a 4-D
    action turns the yaw by up to ``max_yaw_step``, a 3-D action holds yaw at zero.
    """
    linear, yaw_step = spec.displacement(action)
    yaw = tcp_yaw(orientation) + yaw_step if spec.dim > 3 else 0.0
    return position + linear, quat_multiply(yaw_quat(yaw), DOWN)
