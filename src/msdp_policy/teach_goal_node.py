"""Teach-goal node (``msdp teach-goal``): store where the task succeeds, taught by moving the arm there.

Move the arm to the goal -- for peg, the peg fully in the hole -- by hand (the driver's ``~/hand_guide``) or
with the teleop node, then confirm; the node writes the tool pose from /franka/ee_pose, with its frame and time,
to ``out`` (msdp_policy.episodes.save_goal), the file the policy and teleop nodes read as ``goal_file``.
Confirm with ``confirm``:
  enter    Enter in the terminal the node runs in (it prints the live pose meanwhile)
  still    the tool has stayed within 0.5 mm for ``still_time`` seconds (and has moved since the node started)
  episode  an episode ends on /msdp/episode (a scripted operator that drove the peg home, in a rehearsal)
It exits 0 once the file is written, 1 after ``timeout`` seconds without a confirmation or a pose.
"""

from __future__ import annotations

import os
import select
import sys
import time
from dataclasses import dataclass, field

import numpy as np
from geometry_msgs.msg import PoseStamped
from std_msgs.msg import String

from msdp import vocabulary as vocab
from msdp.config import ConfigError, param_range
from msdp.node import MsdpNode, run_node
from msdp.vocabulary import pose_arrays, stamp_seconds
from msdp_policy.episodes import EpisodeResult, goal_from_pose, save_goal
from msdp_policy.tasks import TASKS

STILL_TOLERANCE = 0.0005  # m


@dataclass(frozen=True)
class TeachGoalConfig:
    out: str = field(default="config/goal.yaml", metadata={"doc": "the goal file to write"})
    task: str = field(default="peg", metadata={"choices": tuple(TASKS)})
    confirm: str = field(default="enter", metadata={"choices": ("enter", "still", "episode")})
    still_time: float = field(default=2.0, metadata=param_range(0.2, 60.0, "s still before 'still' confirms"))
    timeout: float = field(default=600.0, metadata=param_range(1.0, 86400.0, "s (wall) to wait for a confirmation"))


class TeachGoalNode(MsdpNode):
    def __init__(self):
        super().__init__("teach_goal", TeachGoalConfig)
        c = self.config
        if c.confirm == "enter" and not os.isatty(sys.stdin.fileno()):
            super().destroy_node()
            raise ConfigError("parameter 'confirm': 'enter' needs a terminal; use 'still' or 'episode'")
        self.pose: PoseStamped | None = None
        self.first_position: np.ndarray | None = None
        self.still_since: float | None = None
        self.still_position: np.ndarray | None = None
        self.exit_code: int | None = None
        self.started = time.monotonic()
        self.subscription(vocab.EE_POSE, self.on_pose)
        if c.confirm == "episode":
            self.subscription(vocab.EPISODE, self.on_episode)
        self.create_timer(0.1, self.on_timer)
        how = {"enter": "press Enter", "still": f"hold it still for {c.still_time:.1f} s",
               "episode": f"end an episode ({vocab.EPISODE.name})"}[c.confirm]  # fmt: skip
        self.get_logger().info(f"move the arm to the {c.task} goal, then {how}; writing {c.out}")

    def on_pose(self, msg: PoseStamped) -> None:
        self.pose = msg
        position, _ = pose_arrays(msg)
        if self.first_position is None:
            self.first_position = position
        if self.still_position is None or np.linalg.norm(position - self.still_position) > STILL_TOLERANCE:
            self.still_position, self.still_since = position, time.monotonic()

    def on_episode(self, msg: String) -> None:
        try:
            EpisodeResult.from_json(msg.data)
        except ValueError:
            return  # an episode start, or something else: not a confirmation
        self.store("an episode ended")

    def on_timer(self) -> None:
        if self.exit_code is not None:
            return
        c = self.config
        if time.monotonic() - self.started > c.timeout:
            missing = "no pose" if self.pose is None else "no confirmation"
            self.get_logger().error(f"no goal confirmed within {c.timeout:.0f} s ({missing})")
            self.exit_code = 1
            return
        if self.pose is None:
            self.get_logger().info(f"waiting for {vocab.EE_POSE.name}", throttle_duration_sec=5.0)
            return
        position, _ = pose_arrays(self.pose)
        if c.confirm == "enter":
            print(f"\rtool at {np.round(position, 4).tolist()} m   ", end="", flush=True)
            if select.select([sys.stdin], [], [], 0.0)[0] and sys.stdin.readline() is not None:
                print()
                self.store("Enter pressed")
        elif c.confirm == "still":
            moved = np.linalg.norm(position - self.first_position) > 10 * STILL_TOLERANCE
            if moved and time.monotonic() - self.still_since >= c.still_time:
                self.store(f"still for {c.still_time:.1f} s")

    def store(self, why: str) -> None:
        if self.pose is None or self.exit_code is not None:
            return
        position, orientation = pose_arrays(self.pose)
        if self.pose.header.frame_id not in ("", vocab.BASE_FRAME) or not np.all(
            np.isfinite([*position, *orientation])
        ):
            self.get_logger().error(f"{vocab.EE_POSE.name} is not a finite pose in {vocab.BASE_FRAME}: not stored")
            return
        goal = goal_from_pose(self.config.task, position, orientation, stamp_seconds(self.pose.header))
        save_goal(goal, self.config.out)
        self.get_logger().info(
            f"goal stored in {self.config.out} ({why}): tool at {np.round(position, 4).tolist()} m, yaw {goal.yaw:.3f}"
        )
        self.exit_code = 0


def main(argv: list[str] | None = None) -> int:
    return run_node("teach_goal", TeachGoalNode, argv)


if __name__ == "__main__":
    sys.exit(main())
