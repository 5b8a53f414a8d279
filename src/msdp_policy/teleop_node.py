"""Teleop node: an operator moves the arm -- demonstrations, play, hand guiding -- or takes over from the policy.

``mode: drive`` (demonstrations and play; no policy, no encoder needed): the node runs episodes. Each starts
with a reset (the driver's ``~/reset``, or on a real cell a reset motion: lift, move to a random start above
the taught goal, settle; ``reset.*``), waits for a camera image of the new start and the arm at rest (and for the
operator's start key if ``wait_for_start``), then on camera images (at most ``task.control_rate``) takes the
operator's action (``operator_kind``: keyboard, spacemouse, scripted, random) and publishes
  /franka/equilibrium_pose  the target: the tool pose + the action's displacement, in the workspace box
  /msdp/action              the displacement, stamped with the image it acted on (as the policy stamps its
                            actions with the embedding's), so a recording links that image to the next
  /msdp/task_goal           (latched) the episode's goal, so a recording can score its episodes
  /msdp/episode             JSON: the episode's start, and its result (msdp_policy.episodes.EpisodeResult)
Each image is scored with the tool pose at its time, as the offline log scores the recording. An episode ends
at the image that shows the task's success (``auto_success``), at the operator's success, failure or abort
key, or at the image after ``task.max_episode_steps`` actions (the terminal observation); a few more images of
its end go by before the reset, so a recorder that lost the terminal image never links an action across it. With
``operator_kind: hand`` a person moves the arm by hand: the driver's ``~/hand_guide`` is on during the
episode, no target is sent, and each action is recovered from the motion between two images (stamped with
the first).

``mode: intervene`` (next to a learning policy node): the node only relays the operator: while the operator
drives, /msdp/operator/action carries the displacement, and every key or button event goes on
/msdp/operator/event; the policy node acts with the operator's action instead of the actor's and flags the step.
It subscribes to /msdp/episode (a scripted operator times its help from each start) once it has the clock and
a tool pose: a policy node with ``require_operator`` starts no episode before that.

A failed reset, a silent driver or camera, or an operator device that cannot be opened stops the node
(exit 1) with the reason; with ``episodes`` > 0 it exits 0 after them.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from msdp import vocabulary as vocab
from msdp.config import ConfigError, param_range
from msdp.node import MsdpNode, ros_message, run_node
from msdp.specs import ActionSpec
from msdp.vocabulary import pose_arrays, stamp_nanoseconds
from msdp_franka_driver.control_law import SafetyConfig, check_box
from msdp_franka_driver.pose import yaw_quat
from msdp_policy.episodes import (
    POSE_MATCH_NS,
    EpisodeResult,
    ResetConfig,
    ResetFailed,
    ResetMotion,
    episode_start_json,
    goal_pose_from_msg,
    is_episode_start,
    load_goal,
)
from msdp_policy.operators import OPERATORS, OperatorConfig, make_operator
from msdp_policy.tasks import Task, TaskConfig, action_spec, make_task, target_after, tcp_yaw, wrap_angle

REST_TOLERANCE = 0.001  # m per control period: the arm is at rest when it moves less
POSE_HISTORY = 200  # tool poses kept to find the one at an image's time (2 s at 100 Hz)
END_IMAGES = 3  # images of an episode's end state recorded before the reset


@dataclass(frozen=True)
class TeleopConfig:
    """Teleop node parameters; ``task.*`` has the driver's names, so one parameter file serves both."""

    mode: str = field(default="drive", metadata={"choices": ("drive", "intervene")})
    operator: OperatorConfig = field(default_factory=OperatorConfig)
    operator_kind: str = field(default="random", metadata={"choices": (*OPERATORS, "hand"), "doc": "who moves the arm"})
    episodes: int = field(
        default=10, metadata=param_range(0, 1_000_000, "drive: episodes, then exit; 0 = until stopped")
    )
    wait_for_start: bool = field(default=False, metadata={"doc": "drive: each episode waits for the start key"})
    auto_success: bool = field(default=True, metadata={"doc": "end an episode when the task scores success"})
    goal_file: str = field(default="", metadata={"doc": "the taught goal (msdp teach-goal); empty = /msdp/task_goal"})
    reset: ResetConfig = field(default_factory=ResetConfig)
    reset_kind: str = field(
        default="driver",
        metadata={"choices": ("driver", "motion"), "doc": "driver: its ~/reset; motion: lift, random start, settle"},
    )
    seed: int = field(default=0, metadata=param_range(0, 2**31 - 1, "operator and reset seed"))
    wait_for_recorder: bool = field(default=True, metadata={"doc": "drive: act only once /msdp/action is recorded"})
    driver_timeout: float = field(default=30.0, metadata=param_range(1.0, 600.0, "s (wall) without pose or image"))
    driver: str = field(default=f"/{vocab.DRIVER_NODE}", metadata={"doc": "driver node name (its services)"})
    workspace_min: tuple[float, float, float] = field(default=SafetyConfig.workspace_min, metadata={"doc": "m"})
    workspace_max: tuple[float, float, float] = field(default=SafetyConfig.workspace_max, metadata={"doc": "m"})
    task: TaskConfig = field(default_factory=TaskConfig)

    def check(self, prefix: str = "") -> None:
        check_box(self.workspace_min, self.workspace_max, f"{prefix}workspace")
        if self.reset_kind == "motion" and not self.goal_file:
            raise ConfigError(f"parameter '{prefix}goal_file': reset_kind 'motion' moves to starts above a taught goal")
        if self.operator_kind == "hand" and self.mode != "drive":
            raise ConfigError(f"parameter '{prefix}operator_kind': 'hand' drives demonstrations (mode 'drive')")


class TeleopNode(MsdpNode):
    def __init__(self):
        super().__init__("teleop", TeleopConfig)
        c = self.config
        self.task = make_task(c.task)
        self.action_spec = action_spec(c.task)
        self.rng = np.random.default_rng(c.seed)
        self.goal_state: dict[str, np.ndarray] | None = None
        self.scores = has_goal(self.task)  # push_cube and close_drawer need object states, not a goal pose
        self.goal_pose: tuple[np.ndarray, float] | None = None
        self.taught = load_goal(c.goal_file, c.task.name) if c.goal_file else None
        if self.taught is not None:
            self.goal_pose = (np.array(self.taught.position), self.taught.yaw)
            self.goal_state = self.task.state_from_goal(*self.goal_pose)
        kind = "keyboard" if c.operator_kind == "hand" else c.operator_kind
        try:
            self.operator = make_operator(kind, c.operator, self.task, self.rng, self.now, c.mode == "intervene")
        except ConfigError:
            super().destroy_node()
            raise
        self.hand = c.operator_kind == "hand"
        self.control_period_ns = int(1e9 / c.task.control_rate)
        self.pose: PoseStamped | None = None
        self.image_ns = -1
        self.exit_code: int | None = None
        self.heard = dict.fromkeys((vocab.EE_POSE.name, vocab.IMAGE.name), time.monotonic())

        self.subscription(vocab.EE_POSE, self.on_pose)
        if c.mode == "intervene":
            self.operator_pub = self.publisher(vocab.OPERATOR_ACTION)
            self.event_pub = self.publisher(vocab.OPERATOR_EVENT)
            if self.taught is None:
                self.subscription(vocab.TASK_GOAL, self.on_goal)
            self.listening = False  # to episode starts: only once the node can act (see relay)
            self.create_timer(1.0 / c.task.control_rate, self.relay)
            self.get_logger().info(f"relaying operator '{c.operator_kind}' to the policy node")
            return
        self.subscription(vocab.IMAGE, self.on_image)
        self.target_pub = self.publisher(vocab.EQUILIBRIUM_POSE)
        self.action_pub = self.publisher(vocab.ACTION)
        self.episode_pub = self.publisher(vocab.EPISODE)
        self.goal_pub = self.publisher(vocab.TASK_GOAL) if self.taught is not None else None
        if self.taught is None:
            self.subscription(vocab.TASK_GOAL, self.on_goal)
        self.reset_client = self.create_client(Trigger, vocab.driver_service(c.driver, vocab.RESET_SERVICE))
        self.hand_client = self.create_client(SetBool, vocab.driver_service(c.driver, vocab.HAND_GUIDE_SERVICE))
        self.phase = "starting"  # starting -> resetting -> ready -> acting -> ending -> resetting ... -> done
        self.reset_motion: ResetMotion | None = None
        self.hand_off = None  # hand guiding's end, answered by the driver before the next reset
        self.ended_ns = 0  # stamp of the image that ended the last episode
        self.reset_done_ns = 0
        self.rest_position: np.ndarray | None = None
        self.poses: deque[PoseStamped] = deque(maxlen=POSE_HISTORY)
        self.acted: tuple[int, PoseStamped] | None = None  # the last image acted on (stamp) and its tool pose
        self.episode = 0
        self.steps = 0
        self.episode_return = 0.0
        self.successes = 0
        self.ending = ""
        self.create_timer(1.0 / c.task.control_rate, self.on_tick)
        # Wall-clock watchdog: with use_sim_time a dead driver also stops the clock, so the tick never comes.
        self.create_timer(1.0, self.check_sensors, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(
            f"teleop: {c.episodes or 'unlimited'} episodes by operator '{c.operator_kind}' ({c.task.name}, reset "
            f"{c.reset_kind}, goal {c.goal_file or vocab.TASK_GOAL.name})"
        )

    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # -- inputs ---------------------------------------------------------------------------------------------
    def on_pose(self, msg: PoseStamped) -> None:
        self.pose = msg
        self.heard[vocab.EE_POSE.name] = time.monotonic()
        if self.config.mode == "drive":
            self.poses.append(msg)

    def on_image(self, msg: Image) -> None:
        self.image_ns = stamp_nanoseconds(msg.header)
        self.heard[vocab.IMAGE.name] = time.monotonic()
        due = self.acted is None or self.image_ns - self.acted[0] >= 0.9 * self.control_period_ns
        if self.phase == "acting" and due:
            self.act(self.image_ns)

    def pose_at(self, stamp_ns: int) -> PoseStamped | None:
        """The tool pose nearest ``stamp_ns``, if one is within ``POSE_MATCH_NS`` of it."""
        if not self.poses:
            return None
        nearest = min(self.poses, key=lambda pose: abs(stamp_nanoseconds(pose.header) - stamp_ns))
        return nearest if abs(stamp_nanoseconds(nearest.header) - stamp_ns) <= POSE_MATCH_NS else None

    def on_goal(self, msg: PoseStamped) -> None:
        try:
            self.goal_pose = goal_pose_from_msg(msg)
        except ValueError as exc:
            self.get_logger().error(str(exc))
            return
        self.goal_state = self.task.state_from_goal(*self.goal_pose)

    def tool(self) -> tuple[np.ndarray, np.ndarray]:
        return pose_arrays(self.pose)

    # -- intervene: relay the operator ----------------------------------------------------------------------
    def on_episode(self, msg: String) -> None:
        """The policy node started an episode: a scripted operator times its help from it."""
        started = getattr(self.operator, "episode_started", None)
        if started is not None and is_episode_start(msg.data):
            started(self.now())

    def relay(self) -> None:
        if self.pose is None or self.now() <= 0.0:  # no tool pose or (use_sim_time) no clock yet
            return
        if not self.listening:
            # Joining /msdp/episode only now tells a policy node with require_operator that an episode it starts
            # reaches an operator who can act on it (a start heard before the clock came would be timed at 0).
            self.subscription(vocab.EPISODE, self.on_episode)
            self.listening = True
        command = self.operator.poll(*self.tool(), self.goal_state)
        for event in command.events:
            self.event_pub.publish(String(data=event))
        if command.action is not None:
            linear, yaw = self.action_spec.displacement(command.action)
            self.operator_pub.publish(vocab.twist_msg(ros_message, self.now_ns(), linear, yaw))

    # -- drive: episodes ----------------------------------------------------------------------------------------
    def on_tick(self) -> None:
        try:
            if self.phase == "starting" and self.ready():
                self.start_reset()
            elif self.phase == "ending" and self.image_ns >= self.ended_ns + END_IMAGES * self.control_period_ns:
                if self.hand_off is None or self.hand_off.done():
                    self.start_reset()
            elif self.phase == "resetting" and self.reset_motion is not None:
                self.step_reset()
            elif self.phase == "ready" and self.episode_can_start():
                self.begin_episode()
        except ResetFailed as exc:
            self.finish(1, str(exc))

    def ready(self) -> bool:
        if self.pose is None:
            return False
        if self.config.reset_kind == "driver" and not self.reset_client.service_is_ready():
            self.get_logger().info("waiting for the driver's ~/reset", throttle_duration_sec=5.0)
            return False
        if self.config.wait_for_recorder and self.action_pub.get_subscription_count() == 0:
            self.get_logger().info("waiting for a subscriber on /msdp/action (the recorder)", throttle_duration_sec=5.0)
            return False
        return True

    def start_reset(self) -> None:
        self.phase = "resetting"
        if self.config.reset_kind == "driver":
            self.reset_client.call_async(Trigger.Request()).add_done_callback(self.on_reset_done)
            return
        self.reset_motion = ResetMotion(self.config.reset, self.taught, self.rng, self.now(), *self.tool())

    def step_reset(self) -> None:
        position, _ = self.tool()
        step = self.reset_motion.step(self.now(), position)
        self.target_pub.publish(vocab.pose_msg(ros_message, self.now_ns(), step.position, step.orientation))
        if step.done:
            self.reset_motion = None
            self.after_reset(f"moved to a random start {np.round(step.position, 3).tolist()}")

    def on_reset_done(self, future) -> None:
        response = future.result()
        if response is None or not response.success:
            message = response.message if response is not None else "no response"
            self.finish(1, f"{self.config.driver}/reset failed: {message}")
            return
        self.after_reset(response.message)

    def after_reset(self, message: str) -> None:
        self.reset_done_ns = self.now_ns()
        self.rest_position = None
        self.phase = "ready"
        self.get_logger().info(f"episode {self.episode + 1}: {message}")

    def episode_can_start(self) -> bool:
        """An image after the reset, the arm at rest (two poses no older than it, still), a goal to score against,
        and the operator's start key when asked for. The image makes the episode's first observation one of the
        new start, so no recorded image-to-image interval spanning the reset holds an action."""
        if self.image_ns < self.reset_done_ns or stamp_nanoseconds(self.pose.header) < self.image_ns:
            return False
        position, _ = self.tool()
        previous, self.rest_position = self.rest_position, position
        if previous is None or np.linalg.norm(position - previous) >= REST_TOLERANCE:
            return False
        if self.scores and self.goal_state is None:
            self.get_logger().warning(
                f"no goal yet (on {vocab.TASK_GOAL.name} or goal_file)", throttle_duration_sec=5.0
            )
            return False
        if self.config.wait_for_start:
            command = self.operator.poll(*self.tool(), self.goal_state)
            if "start" not in command.events:
                self.get_logger().info(
                    "press start (space, or the SpaceMouse's left button)", throttle_duration_sec=10.0
                )
                return False
        return True

    def begin_episode(self) -> None:
        self.episode += 1
        self.steps, self.episode_return, self.ending, self.acted = 0, 0.0, "", None
        if self.goal_pub is not None:
            self.goal_pub.publish(
                vocab.pose_msg(ros_message, self.now_ns(), self.goal_pose[0], yaw_quat(self.goal_pose[1]))
            )
        self.episode_pub.publish(String(data=episode_start_json(self.episode, self.config.operator_kind, self.now())))
        if self.hand:
            self.hand_client.call_async(SetBool.Request(data=True))
        self.phase = "acting"

    def act(self, image_ns: int) -> None:
        """Score the tool pose at this image (what the last action led to); end the episode here if it is over
        (this image is its terminal observation), else send the next action, stamped with the image."""
        pose = self.pose_at(image_ns)
        if pose is None:
            self.get_logger().warning("no tool pose at the image's time: step skipped", throttle_duration_sec=2.0)
            return
        position, orientation = pose_arrays(pose)
        if self.steps > 0 and self.goal_state is not None:
            score = self.task.score_state(position, orientation, self.goal_state)
            self.episode_return += score.reward
            if score.success and self.config.auto_success:
                self.ending = "success"
        command = self.operator.poll(position, orientation, self.goal_state)
        for event in command.events:
            if event in ("success", "failure", "abort") and not self.ending:
                self.ending = event
        if self.hand and self.acted is not None:  # the motion the person made since the last image
            action = motion_action(self.action_spec, self.acted[1], pose)
            self.publish_action(self.acted[0], action)
        if not self.ending and self.steps >= self.config.task.max_episode_steps:
            self.ending = "timeout"
        if self.ending:
            if self.hand:  # the driver refuses a reset while hand guiding: the next reset waits for this answer
                self.hand_off = self.hand_client.call_async(SetBool.Request(data=False))
            self.end_episode()
            return
        self.acted = (image_ns, pose)
        self.steps += 1
        if self.hand:
            return  # its action is known at the next image
        action = command.action if command.action is not None else np.zeros(self.action_spec.dim)
        target_position, target_orientation = target_after(position, orientation, action, self.action_spec)
        target_position = np.clip(target_position, self.config.workspace_min, self.config.workspace_max)
        self.target_pub.publish(vocab.pose_msg(ros_message, self.now_ns(), target_position, target_orientation))
        self.publish_action(image_ns, action)

    def publish_action(self, stamp_ns: int, action: np.ndarray) -> None:
        self.action_pub.publish(vocab.twist_msg(ros_message, stamp_ns, *self.action_spec.displacement(action)))

    def end_episode(self) -> None:
        success = self.ending == "success"
        self.successes += int(success)
        result = EpisodeResult(self.episode, success, self.ending, self.steps, self.episode_return,
                               source=self.config.operator_kind, time=self.now())  # fmt: skip
        self.episode_pub.publish(String(data=result.to_json()))
        self.get_logger().info(
            f"episode {self.episode}: {self.ending}, {self.steps} steps ({self.successes}/{self.episode} successes)"
        )
        if self.config.episodes and self.episode >= self.config.episodes:
            self.finish(0, f"{self.episode} episodes done, {self.successes} successful")
        else:  # a few more images of the end before the reset: a recorder that lost the terminal image must not
            self.ended_ns, self.phase = self.image_ns, "ending"  # link the last action to an image after the reset

    def check_sensors(self) -> None:
        now = time.monotonic()
        silent = [topic for topic, heard in self.heard.items() if now - heard > self.config.driver_timeout]
        if self.phase != "done" and silent:
            self.finish(
                1, f"no message on {', '.join(silent)} for {self.config.driver_timeout:.0f} s: is the driver running?"
            )

    def finish(self, code: int, message: str) -> None:
        self.phase = "done"
        self.episode_pub.wait_for_all_acked(Duration(seconds=2.0))  # the last result reaches the recorder
        self.exit_code = code
        (self.get_logger().info if code == 0 else self.get_logger().error)(message)

    def destroy_node(self) -> None:
        self.operator.close()
        super().destroy_node()


def has_goal(task: Task) -> bool:
    try:
        task.state_from_goal(np.zeros(3), 0.0)
    except NotImplementedError:
        return False
    return True


def motion_action(spec: ActionSpec, start: PoseStamped, end: PoseStamped) -> np.ndarray:
    """The action that would have asked for the motion from ``start`` to ``end`` (clipped to the action range):
    how a hand-guided demonstration gets its actions."""
    (p0, o0), (p1, o1) = pose_arrays(start), pose_arrays(end)
    return np.clip(spec.normalised(p1 - p0, wrap_angle(tcp_yaw(o1) - tcp_yaw(o0))), -1.0, 1.0)


def main(argv: list[str] | None = None) -> int:
    return run_node("teleop", TeleopNode, argv)


if __name__ == "__main__":
    sys.exit(main())
