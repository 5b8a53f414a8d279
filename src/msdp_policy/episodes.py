"""Episodes on a cell, without ROS: the taught goal, the reset motion between episodes, and what an episode
left behind. The teleop node (demonstrations, play) and the policy node (learning, evaluation) share them.

A real cell has no simulator to re-draw the scene: the fixture stays where it is, its pose is taught once
(``msdp teach-goal`` writes a goal file), and between episodes the arm itself moves to a new random start:
first straight up, clear of the fixture, then along a moving target to a random pose in a region above the
goal, then it settles. Every target goes to the driver, whose safety filter it passes like any other.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from msdp import vocabulary as vocab
from msdp.config import ConfigError, param_range
from msdp_franka_driver.pose import quat_multiply, quat_yaw, yaw_quat
from msdp_policy.tasks import DOWN, tcp_yaw, wrap_angle

GOAL_FORMAT = "msdp-goal-1"
# An image is scored with the tool pose nearest its stamp, at most this far from it (a camera's stamps and the
# arm's never coincide on a real cell): by the teleop node live, and by the offline log from a recording.
POSE_MATCH_NS = 50_000_000


# -- the taught goal ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Goal:
    """Where the task succeeds, as a tool pose in the base frame: for peg, the tip fully inserted."""

    task: str
    position: tuple[float, float, float]  # m, base frame
    yaw: float  # rad about the base z axis
    frame: str = vocab.BASE_FRAME
    stamp: float = 0.0  # s, the header time of the pose it was taught from (the robot's clock)
    taught_at: str = ""  # UTC wall time of the teaching, ISO 8601


def save_goal(goal: Goal, path: str | Path) -> None:
    """Write the goal file (a new temporary file, then a rename: never half a goal)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": GOAL_FORMAT, **asdict(goal), "position": [float(v) for v in goal.position]}
    partial = path.with_name(path.name + ".partial")
    partial.write_text("# taught by `msdp teach-goal`: the tool pose at the goal\n" + yaml.safe_dump(data))
    partial.replace(path)


def load_goal(path: str | Path, task: str | None = None) -> Goal:
    """The goal in ``path``; ConfigError naming the file for anything else (and for another task's goal)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"goal file {path}: cannot read it ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict) or data.get("format") != GOAL_FORMAT:
        raise ConfigError(f"goal file {path}: not a goal file (expected 'format: {GOAL_FORMAT}'; `msdp teach-goal`)")
    try:
        position = tuple(float(v) for v in data["position"])
        goal = Goal(str(data["task"]), position, float(data["yaw"]), str(data.get("frame", vocab.BASE_FRAME)),
                    float(data.get("stamp", 0.0)), str(data.get("taught_at", "")))  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"goal file {path}: expected task, position [x, y, z] and yaw ({exc})") from exc
    if len(position) != 3 or not all(math.isfinite(v) for v in (*position, goal.yaw)):
        raise ConfigError(f"goal file {path}: position must be 3 finite numbers and yaw finite, got {data}")
    if goal.frame != vocab.BASE_FRAME:
        raise ConfigError(f"goal file {path}: frame '{goal.frame}', expected '{vocab.BASE_FRAME}'")
    if task is not None and goal.task != task:
        raise ConfigError(f"goal file {path}: a goal of task '{goal.task}', this run's task is '{task}'")
    return goal


def goal_pose_from_msg(msg: Any) -> tuple[np.ndarray, float]:
    """A goal message (/msdp/task_goal, a PoseStamped) as (position, yaw); ValueError (one line) for a pose that
    is not finite or not in the base frame, which would score every step against nonsense."""
    position, orientation = vocab.pose_arrays(msg)
    if msg.header.frame_id not in ("", vocab.BASE_FRAME) or not np.all(np.isfinite([*position, *orientation])):
        raise ValueError(f"{vocab.TASK_GOAL.name} refused: {position} {orientation} in frame "
                         f"'{msg.header.frame_id}' (expected finite, in '{vocab.BASE_FRAME}')")  # fmt: skip
    return position, quat_yaw(orientation)


def goal_from_pose(task: str, position: np.ndarray, orientation: np.ndarray, stamp: float) -> Goal:
    return Goal(task, tuple(float(v) for v in position), tcp_yaw(orientation), vocab.BASE_FRAME, stamp,
                datetime.now(UTC).isoformat(timespec="seconds"))  # fmt: skip


# -- resets ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResetConfig:
    """How a cell's arm gets to a new random start (offsets from the goal, base frame axes)."""

    lift: float = field(default=0.05, metadata=param_range(0.0, 0.3, "m straight up before moving sideways"))
    region_min: tuple[float, float, float] = field(
        default=(-0.06, -0.06, 0.08), metadata=param_range(-0.5, 0.5, "m, start region's low corner from the goal")
    )
    region_max: tuple[float, float, float] = field(
        default=(0.06, 0.06, 0.14), metadata=param_range(-0.5, 0.5, "m, start region's high corner from the goal")
    )
    yaw_range: float = field(default=0.0, metadata=param_range(0.0, math.pi, "rad, +- start yaw about the goal's"))
    speed: float = field(default=0.15, metadata=param_range(0.01, 0.5, "m/s of the moving reset target"))
    tolerance: float = field(default=0.004, metadata=param_range(0.0005, 0.05, "m from a waypoint to have reached it"))
    settle_time: float = field(default=0.5, metadata=param_range(0.0, 10.0, "s still at the start before acting"))
    timeout: float = field(default=20.0, metadata=param_range(1.0, 300.0, "s for the whole reset"))

    def check(self, prefix: str = "") -> None:
        for axis, (low, high) in enumerate(zip(self.region_min, self.region_max, strict=True)):
            if low > high:
                raise ConfigError(f"parameter '{prefix}region_min[{axis}]' ({low}) is above 'region_max[{axis}]'")
        if self.region_min[2] <= 0.0:
            raise ConfigError(f"parameter '{prefix}region_min[2]' must be above the goal (> 0), got {self.region_min}")


class ResetFailed(RuntimeError):
    """The arm did not reach its start in time; the message says where it was stuck."""


@dataclass
class ResetStep:
    position: np.ndarray  # the target to command now
    orientation: np.ndarray
    done: bool  # the arm rests at the start: the episode may begin


class ResetMotion:
    """One reset: lift, travel, settle. Call ``step`` at the control rate with the node clock and the tool pose."""

    def __init__(self, config: ResetConfig, goal: Goal, rng: np.random.Generator, now: float,
                 position: np.ndarray, orientation: np.ndarray):  # fmt: skip
        self.config, self.started = config, now
        low, high = np.array(config.region_min), np.array(config.region_max)
        self.start = np.array(goal.position) + rng.uniform(low, high)
        yaw = goal.yaw + rng.uniform(-config.yaw_range, config.yaw_range)
        self.orientation = _tool_down(yaw)
        lifted = position + np.array([0.0, 0.0, config.lift])
        lifted[2] = max(lifted[2], self.start[2])  # sideways only at the start's height or above: clear of the fixture
        self.waypoints = [lifted, np.array([*self.start[:2], lifted[2]]), self.start]
        self.target = position.copy()
        self.initial_orientation = orientation
        self.phase = 0  # index of the waypoint being approached; len(waypoints) = settling
        self.last_time = now
        self.still_since: float | None = None
        self.last_position = position.copy()

    def step(self, now: float, position: np.ndarray) -> ResetStep:
        """The target for this control period; raises ResetFailed past ``timeout``."""
        c = self.config
        if now - self.started > c.timeout:
            where = "lifting" if self.phase == 0 else "moving to the start" if self.phase < 3 else "settling"
            raise ResetFailed(
                f"reset timed out after {c.timeout:.0f} s while {where}: tool at {np.round(position, 3).tolist()}, "
                f"start {np.round(self.start, 3).tolist()} (blocked, or a stiffness too low to get there?)"
            )
        dt, self.last_time = max(0.0, now - self.last_time), now
        if self.phase < len(self.waypoints):
            waypoint = self.waypoints[self.phase]
            self.target = _towards(self.target, waypoint, c.speed * dt)
            if np.allclose(self.target, waypoint) and np.linalg.norm(position - waypoint) < c.tolerance:
                self.phase += 1
        moved = float(np.linalg.norm(position - self.last_position))
        self.last_position = position.copy()
        done = False
        if self.phase >= len(self.waypoints):
            if moved > c.tolerance * max(dt, 1e-3):  # more than tolerance per second: still moving
                self.still_since = None
            elif self.still_since is None:
                self.still_since = now
            done = self.still_since is not None and now - self.still_since >= c.settle_time
        orientation = self.initial_orientation if self.phase == 0 else self.orientation
        return ResetStep(self.target.copy(), orientation, done)


def _towards(current: np.ndarray, goal: np.ndarray, distance: float) -> np.ndarray:
    gap = goal - current
    length = float(np.linalg.norm(gap))
    return goal.copy() if length <= distance else current + gap * (distance / length)


def _tool_down(yaw: float) -> np.ndarray:
    return quat_multiply(yaw_quat(wrap_angle(yaw)), DOWN)


# -- what an episode left ---------------------------------------------------------------------------------------
ENDINGS = ("success", "failure", "timeout", "abort", "fault")


@dataclass
class EpisodeResult:
    """One ended episode, as the policy and teleop nodes publish it on /msdp/episode (JSON) and log it."""

    episode: int  # the id its transitions carry in the log (teleop: its number)
    success: bool
    ended_by: str  # one of ENDINGS: the task's success, the operator's failure key, the step limit, an abort, a fault
    steps: int
    episode_return: float
    interventions: int = 0  # steps the operator took over
    source: str = "policy"  # policy, or the teleop node's operator (keyboard, spacemouse, scripted, random, hand)
    actor: str = ""  # the actor's weights version
    log_records: int = 0  # records in the transition log after the episode
    time: float = 0.0  # s, node clock at the end

    def to_json(self) -> str:
        return json.dumps({"kind": "end", **asdict(self)})

    @classmethod
    def from_json(cls, text: str) -> EpisodeResult:
        """ValueError (one line) for anything but an episode's end."""
        try:
            data = json.loads(text)
            if data.pop("kind") != "end":
                raise ValueError("not an episode end")
            result = cls(**data)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"not an episode result: {text[:120]!r} ({exc})") from exc
        if result.ended_by not in ENDINGS:
            raise ValueError(f"episode result ended_by {result.ended_by!r}: expected one of {', '.join(ENDINGS)}")
        return result


def episode_start_json(episode: int, source: str, time: float) -> str:
    """What /msdp/episode carries when an episode starts (a bag's episode boundary)."""
    return json.dumps({"kind": "start", "episode": episode, "source": source, "time": time})


def is_episode_start(text: str) -> bool:
    try:
        data = json.loads(text)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("kind") == "start"
