"""Policy node: embeddings in, impedance targets out, episodes run and logged for the learner.

subscribes  /msdp/embedding (sensor_msgs/Image 32FC1, the encoder's packed rows), /franka/ee_pose,
            /msdp/task_goal (latched; the simulated driver publishes it at every reset; a real cell uses a taught
            ``goal_file`` instead), /msdp/actor_weights (std_msgs/UInt8MultiArray, latched: a safetensors blob
            of actor weights from the learner), /franka/status (std_msgs/String, latched: the driver's "running"
            or its fault), /msdp/operator/action and /msdp/operator/event (the teleop node, ``mode: intervene``)
publishes   /franka/equilibrium_pose (the target: current pose + the actor's displacement, in the workspace box),
            /msdp/action (geometry_msgs/TwistStamped: the displacement, stamped with the embedding it acts on,
            as the recorder and MSDP-P pretraining expect), /msdp/reward (std_msgs/Float32, per step),
            /msdp/success (std_msgs/Bool, per episode), /msdp/episode (JSON: each episode's start and result),
            /msdp/markers (namespaces policy_target and task_goal)
calls       <driver>/reset (std_srvs/Trigger) between episodes (``reset_kind: driver``; ``motion``: the node moves
            the arm itself -- lift, a random start above the taught goal, settle), <driver>/recover after a
            fault when ``auto_recover``
The episode logic is ``msdp_policy.online``; transitions go to the durable log in ``transitions``, which a
restarted node resumes. New actor weights replace the old ones between two steps; when the learner is gone
the node keeps acting with the last weights it got. While the driver reports a fault the node pauses: the
running episode is aborted (no action, no logged transition across the fault), and it resumes with a reset
after the driver's ``~/recover`` (which the node calls itself when ``auto_recover`` is on). While the operator
drives (an action on /msdp/operator/action no older than ``operator_timeout``), the node acts with the
operator's action instead of the actor's and logs the step as an intervention; the operator's success,
failure and abort events end the episode. With ``require_operator`` no episode starts until the teleop node
relays and is matched on /msdp/episode (the launch file sets it whenever it starts one).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.duration import Duration
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, Float32, String, UInt8MultiArray
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from msdp import vocabulary as vocab
from msdp.config import ConfigError, from_dict, param_range
from msdp.devices import DEVICES, resolve_device
from msdp.markers import sphere_marker, workspace_box_marker
from msdp.node import MsdpNode, ros_message, run_node
from msdp.vocabulary import pose_arrays, stamp_seconds
from msdp_franka_driver.control_law import SafetyConfig, check_box
from msdp_franka_driver.pose import yaw_quat
from msdp_perception.checkpoint import ENCODER_FORMAT, CheckpointError, encoder_identity, load_sidecar
from msdp_perception.encoder import EncoderInfo
from msdp_perception.model import MSDPConfig
from msdp_policy.agent import Actor, AgentConfig
from msdp_policy.episodes import (
    EpisodeResult,
    ResetConfig,
    ResetFailed,
    ResetMotion,
    episode_start_json,
    goal_pose_from_msg,
    load_goal,
)
from msdp_policy.learner import ActorWeightsGate, WeightsRefused, updates_behind
from msdp_policy.online import BadInput, OnlineEpisodes
from msdp_policy.operators import EVENTS
from msdp_policy.policy import load_policy
from msdp_policy.replay import log_meta, transition_schema
from msdp_policy.tasks import TaskConfig, action_spec, make_task
from msdp_policy.transition_log import TransitionLogError, TransitionWriter

GOAL_PATIENCE = 5.0  # s (wall) after a reset without a goal before saying what is missing


@dataclass(frozen=True)
class PolicyNodeConfig:
    transitions: str = field(default="runs/online/transitions", metadata={"doc": "transition log folder"})
    policy: str = field(default="", metadata={"doc": "policy.safetensors to start from; empty = a fresh actor"})
    deterministic: bool = field(default=False, metadata={"doc": "evaluation mode: the actor's mean action"})
    random_steps: int = field(default=0, metadata=param_range(0, 10**7, "uniform random actions first (log size)"))
    max_episodes: int = field(default=0, metadata=param_range(0, 10**7, "stop after this many; 0 = never"))
    max_steps: int = field(
        default=0, metadata=param_range(0, 10**9, "stop at the end of the episode that takes this many; 0 = never")
    )
    settle_time: float = field(default=0.5, metadata=param_range(0.0, 10.0, "s after a reset before stepping"))
    pose_max_age: float = field(default=0.1, metadata=param_range(0.001, 1.0, "s, ee pose vs embedding stamp"))
    goal_file: str = field(
        default="",
        metadata={
            "doc": "real cell: the taught goal (msdp teach-goal); empty = "
            "the goal on /msdp/task_goal (the simulated driver's)"
        },
    )
    reset_kind: str = field(
        default="driver",
        metadata={"choices": ("driver", "motion"), "doc": "driver: its ~/reset; motion: lift, random start, settle"},
    )
    reset: ResetConfig = field(default_factory=ResetConfig)
    auto_recover: bool = field(default=False, metadata={"doc": "call the driver's ~/recover after a fault"})
    recover_delay: float = field(default=2.0, metadata=param_range(0.0, 60.0, "s (wall) after a fault before it"))
    learner_lag: int = field(
        default=0,
        metadata=param_range(0, 10**7, "between episodes, wait while the learner owes more updates; 0 = never"),
    )
    operator_timeout: float = field(
        default=0.15, metadata=param_range(0.05, 5.0, "s (stamp age) an operator action stays the one acted with")
    )
    require_operator: bool = field(
        default=False,
        metadata={"doc": "start no episode until a teleop node (mode intervene) relays and hears episode starts"},
    )
    driver: str = field(default=f"/{vocab.DRIVER_NODE}", metadata={"doc": "driver node name (its ~/reset service)"})
    durable: bool = field(default=True, metadata={"doc": "fsync every logged transition"})
    device: str = field(
        default="cpu", metadata={"choices": DEVICES, "doc": "where the actor runs (one small MLP at 10 Hz: the CPU)"}
    )
    seed: int = field(default=0, metadata=param_range(0, 2**31 - 1))
    encoder_checkpoint: str = field(
        default="", metadata={"doc": "a fresh actor's encoder (the encoder node's checkpoint); a policy names its own"}
    )
    agent: AgentConfig = field(default_factory=AgentConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    workspace_min: tuple[float, float, float] = field(
        default=SafetyConfig.workspace_min, metadata={"doc": "m, targets are clipped into this box (base frame)"}
    )
    workspace_max: tuple[float, float, float] = field(default=SafetyConfig.workspace_max, metadata={"doc": "m"})

    def check(self, prefix: str = "") -> None:
        check_box(self.workspace_min, self.workspace_max, f"{prefix}workspace")
        if self.reset_kind == "motion" and not self.goal_file:
            raise ConfigError(f"parameter '{prefix}goal_file': reset_kind 'motion' moves to starts above a taught goal")


class PolicyNode(MsdpNode):
    def __init__(self):
        super().__init__("msdp_policy", PolicyNodeConfig)
        c = self.config
        try:
            self.device = resolve_device(c.device)
            if not c.policy and not c.encoder_checkpoint:  # checked here: the shipped params file leaves both empty
                raise ConfigError(
                    "parameter 'policy' or 'encoder_checkpoint' is required: the actor acts on one encoder's embeddings"
                )
            task = make_task(c.task)
            try:
                task.state_from_goal(np.zeros(3), 0.0)
            except NotImplementedError as exc:
                raise ConfigError(f"parameter 'task.name': {exc}; the policy node scores by a goal pose") from exc
            if c.policy:
                policy = load_policy(c.policy)
                if policy.info.encoder_variant != "msdp_frozen":
                    raise ConfigError(f"policy {c.policy}: only msdp_frozen policies act on /msdp/embedding")
                actor, model, encoder = policy.actor, policy.encoder.config, policy.info.encoder_checkpoint
            else:
                model = from_dict(MSDPConfig, load_sidecar(c.encoder_checkpoint, ENCODER_FORMAT)["config"])
                actor, encoder = Actor(c.agent, model.width, task.action_dim), c.encoder_checkpoint
            self.encoder = EncoderInfo(encoder_identity(encoder), encoder, model.n_tokens, model.width)
            meta = log_meta(encoder, model, action_spec(c.task))
            schema = transition_schema("msdp_frozen", model, task.action_dim, meta)
            taught = load_goal(c.goal_file, c.task.name) if c.goal_file else None
            writer = TransitionWriter(c.transitions, schema, durable=c.durable)
        except (ValueError, TransitionLogError) as exc:
            super().destroy_node()
            raise ConfigError(str(exc)) from exc
        except (ConfigError, CheckpointError):
            super().destroy_node()
            raise
        self.driver_fault = ""  # what the driver reports on /franka/status; empty while it runs
        self.foreign_encoder = ""  # set when /msdp/encoder names an encoder other than the policy's
        self.aborted = 0
        self.steps_taken = 0  # environment steps of this run's ended episodes
        self.n_tokens, self.width = model.n_tokens, model.width
        self.episodes = OnlineEpisodes(
            c.task, (c.workspace_min, c.workspace_max), writer, actor, c.deterministic, c.random_steps, c.seed
        )
        self.task = task
        actor.to(self.device)
        self.weights_gate = ActorWeightsGate(actor)
        self.actor_version = "initial" if not c.policy else c.policy
        self.pose: PoseStamped | None = None
        self.goal_state: dict[str, np.ndarray] | None = None
        self.goal_stamp = -math.inf
        self.taught = taught
        if taught is not None:
            self.goal_state = task.state_from_goal(np.array(taught.position), taught.yaw)
        self.rng = np.random.default_rng(c.seed)
        self.reset_motion: ResetMotion | None = None
        self.operator_action: np.ndarray | None = None
        self.operator_stamp = -math.inf  # s, the operator action's stamp (the teleop node's clock)
        self.operator_mark = ""  # success or failure pressed since the last step
        self.fault_at = -math.inf
        self.learner_behind = 0  # critic updates the learner owed at its last weights (their label's behind=K)
        self.recover_future = None
        self.reset_future = None
        self.reset_requested_at = -math.inf
        self.ready_at: float | None = None
        self.exit_code: int | None = None

        self.target_pub = self.publisher(vocab.EQUILIBRIUM_POSE)
        self.reward_pub = self.publisher(vocab.REWARD)
        self.success_pub = self.publisher(vocab.SUCCESS)
        self.action_pub = self.publisher(vocab.ACTION)
        self.marker_pub = self.publisher(vocab.MARKERS)
        self.episode_pub = self.publisher(vocab.EPISODE)
        self.subscription(vocab.EMBEDDING, self.on_embedding)
        self.subscription(vocab.OPERATOR_ACTION, self.on_operator_action)
        self.subscription(vocab.OPERATOR_EVENT, self.on_operator_event)
        self.subscription(vocab.EE_POSE, self.on_pose)
        self.subscription(vocab.TASK_GOAL, self.on_goal)
        self.subscription(vocab.ACTOR_WEIGHTS, self.on_weights)
        self.subscription(vocab.DRIVER_STATUS, self.on_driver_status)
        self.subscription(vocab.ENCODER_INFO, self.on_encoder_info)
        self.reset_client = self.create_client(Trigger, vocab.driver_service(c.driver, vocab.RESET_SERVICE))
        self.recover_client = self.create_client(Trigger, vocab.driver_service(c.driver, vocab.RECOVER_SERVICE))
        self.create_timer(0.05, self.on_timer)
        self.waiting_since = time.monotonic()
        if taught is None:
            self.get_logger().info(
                f"goal: from {vocab.TASK_GOAL.name} (the simulated driver publishes one per episode); a real cell has "
                "no publisher of it: teach one (msdp teach-goal) and set goal_file:=<file>"
            )
        self.get_logger().info(
            f"policy up: task {c.task.name}, log {c.transitions} ({writer.count} records), actor {self.actor_version}"
            f"{', deterministic' if c.deterministic else ''}"
        )

    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # -- inputs ---------------------------------------------------------------------------------------------
    def on_pose(self, msg: PoseStamped) -> None:
        self.pose = msg

    def on_goal(self, msg: PoseStamped) -> None:
        if self.taught is not None:
            return  # a taught goal wins
        try:
            self.goal_state = self.task.state_from_goal(*goal_pose_from_msg(msg))
        except ValueError as exc:
            self.get_logger().error(str(exc))
            return
        self.goal_stamp = stamp_seconds(msg.header)

    def on_driver_status(self, msg: String) -> None:
        """Pause while the driver reports a fault: the running episode is aborted (nothing is logged across the
        fault, no action is sent), and the next episode starts with a reset once the driver runs again."""
        fault = "" if msg.data == vocab.DRIVER_RUNNING else msg.data
        if fault and not self.driver_fault:
            self.get_logger().error(f"driver stopped ({fault}): pausing; call {self.config.driver}/recover")
            self.fault_at = time.monotonic()
            if self.episodes.running:
                self.end_episode(self.episodes.abort("fault"))
                self.get_logger().warning(f"episode aborted by the driver fault ({self.aborted} aborted so far)")
            self.reset_future, self.ready_at, self.reset_motion = None, None, None
        elif not fault and self.driver_fault:
            self.get_logger().info("driver running again: resuming with a reset")
        self.driver_fault = fault

    def on_encoder_info(self, msg: String) -> None:
        """Act only on embeddings of the policy's own encoder: another encoder's features mean nothing to it."""
        try:
            info = EncoderInfo.from_json(msg.data)
        except ValueError as exc:
            self.foreign_encoder = f"unreadable encoder description on {vocab.ENCODER_INFO.name}: {exc}"
        else:
            same = info.identity == self.encoder.identity
            self.foreign_encoder = "" if same else (
                f"the encoder node runs {info.checkpoint} (encoder {info.identity[:12]}), the policy acts on "
                f"{self.encoder.checkpoint} (encoder {self.encoder.identity[:12]})"
            )  # fmt: skip
        if self.foreign_encoder:
            self.get_logger().error(f"not acting: {self.foreign_encoder}")
            if self.episodes.running:
                self.end_episode(self.episodes.abort())

    def on_weights(self, msg: UInt8MultiArray) -> None:
        """Swap in checked weights (names, shapes, dtypes, finite values, a growing version); refused weights are
        logged and the last good actor keeps acting (the topic is latched: a bad message must not kill the node
        at every restart)."""
        label = msg.layout.dim[0].label if msg.layout.dim else ""
        try:
            actor = self.weights_gate.accept(bytes(msg.data), label)
        except WeightsRefused as exc:
            self.get_logger().error(f"/msdp/actor_weights refused, keeping actor {self.actor_version}: {exc}")
            return
        self.episodes.actor = actor.to(self.device)  # one reference swap: the next step acts with the new weights
        self.actor_version, self.learner_behind = label, updates_behind(label)
        self.get_logger().info(f"new actor weights: {self.actor_version}")

    def on_operator_action(self, msg: TwistStamped) -> None:
        linear, yaw = vocab.displacement_from_twist(msg)
        if not np.all(np.isfinite([*linear, yaw])):
            self.get_logger().error(
                f"{vocab.OPERATOR_ACTION.name} refused: non-finite displacement", throttle_duration_sec=2.0
            )
            return
        self.operator_action = self.episodes.action_spec.normalised(linear, yaw)
        self.operator_stamp = stamp_seconds(msg.header)

    def on_operator_event(self, msg: String) -> None:
        if msg.data in ("success", "failure"):
            self.operator_mark = msg.data
        elif msg.data == "abort" and self.episodes.running:
            self.end_episode(self.episodes.abort())
        elif msg.data not in EVENTS:
            self.get_logger().error(
                f"{vocab.OPERATOR_EVENT.name}: unknown event {msg.data!r}, expected one of {EVENTS}"
            )

    # -- episodes -------------------------------------------------------------------------------------------
    def on_timer(self) -> None:
        """Between episodes: ask the driver for a reset (or move the arm to a new start), then wait for the goal
        and the arm to settle. After a fault, ask the driver to recover when ``auto_recover`` is on."""
        if self.driver_fault:
            self.try_recover()
            return
        if self.episodes.running or self.exit_code is not None or self.foreign_encoder:
            return
        between = self.reset_motion is None and self.reset_future is None and self.ready_at is None
        if between and self.config.learner_lag and self.learner_behind > self.config.learner_lag:
            self.get_logger().info(f"waiting for the learner: {self.learner_behind} updates behind the log",
                                   throttle_duration_sec=10.0)  # fmt: skip
            return
        if between and self.config.require_operator and not self.operator_connected():
            self.get_logger().info(
                f"waiting for the operator: a teleop node (mode intervene) publishing {vocab.OPERATOR_ACTION.name} "
                f"and subscribed to {vocab.EPISODE.name}",
                throttle_duration_sec=10.0,
            )
            return
        if self.config.reset_kind == "motion":
            self.step_reset_motion()
            return
        if self.reset_future is None and self.ready_at is None:
            if not self.reset_client.service_is_ready():
                self.get_logger().info(f"waiting for {self.config.driver}/reset", throttle_duration_sec=5.0)
                return
            self.reset_requested_at = self.now()
            self.reset_future = self.reset_client.call_async(Trigger.Request())
            return
        if self.reset_future is not None:
            if not self.reset_future.done():
                return
            response = self.reset_future.result()
            self.reset_future = None
            if response is None or not response.success:
                self.get_logger().error(f"reset failed: {getattr(response, 'message', 'no response')}; retrying")
                return
            self.ready_at = self.now() + self.config.settle_time
            self.waiting_since = time.monotonic()
        goal_is_new = self.taught is not None or self.goal_stamp >= self.reset_requested_at - 1e-3
        if not goal_is_new and time.monotonic() - self.waiting_since > GOAL_PATIENCE:
            self.get_logger().warning(
                f"no goal for the episode: nothing on {vocab.TASK_GOAL.name} since the reset {GOAL_PATIENCE:.0f} s "
                "ago (the simulated driver publishes it); on a real cell teach one and set goal_file:=<file>",
                throttle_duration_sec=10.0,
            )
        if self.now() >= self.ready_at and goal_is_new and self.goal_state is not None:
            self.ready_at = None
            self.start_episode()

    def operator_connected(self) -> bool:
        """A node relays an operator and listens to episode starts, and every listener discovered in the graph
        is matched to our publisher: its start reaches the operator, who can then take over from the first step."""
        relaying = {info.node_name for info in self.get_publishers_info_by_topic(vocab.OPERATOR_ACTION.name)}
        listening = self.get_subscriptions_info_by_topic(vocab.EPISODE.name)
        return bool(relaying & {info.node_name for info in listening}) and (
            self.episode_pub.get_subscription_count() >= len(listening)
        )

    def step_reset_motion(self) -> None:
        """A real cell's reset: lift, travel to a random start above the taught goal, settle (every target
        through the driver's safety filter); a reset that cannot finish stops the node with the reason."""
        if self.pose is None:
            return
        position, orientation = pose_arrays(self.pose)
        if self.reset_motion is None:
            self.reset_motion = ResetMotion(self.config.reset, self.taught, self.rng, self.now(), position, orientation)
        try:
            step = self.reset_motion.step(self.now(), position)
        except ResetFailed as exc:
            self.get_logger().error(f"stopping: {exc}")
            self.exit_code = 1
            return
        self.target_pub.publish(vocab.pose_msg(ros_message, self.now_ns(), step.position, step.orientation))
        if step.done:
            self.reset_motion = None
            self.start_episode()

    def start_episode(self) -> None:
        self.operator_mark = ""
        self.episodes.start_episode(self.goal_state)
        self.episode_pub.publish(String(data=episode_start_json(self.episodes.episode, "policy", self.now())))
        self.publish_goal_marker()

    def try_recover(self) -> None:
        """``auto_recover``: one ~/recover call ``recover_delay`` s after the fault (again after a failed one)."""
        c = self.config
        if not c.auto_recover or time.monotonic() - self.fault_at < c.recover_delay:
            return
        if self.recover_future is None and self.recover_client.service_is_ready():
            self.get_logger().info(f"calling {c.driver}/recover")
            self.recover_future = self.recover_client.call_async(Trigger.Request())
        elif self.recover_future is not None and self.recover_future.done():
            response = self.recover_future.result()
            self.recover_future, self.fault_at = None, time.monotonic()
            if response is None or not response.success:
                self.get_logger().error(f"recovery failed: {getattr(response, 'message', 'no response')}; retrying")

    def end_episode(self, result: EpisodeResult) -> None:
        """Publish an ended episode (success flag, JSON result) and log one line."""
        result.actor, result.time = self.actor_version, self.now()
        self.aborted += result.ended_by in ("abort", "fault")
        self.steps_taken += result.steps
        self.success_pub.publish(Bool(data=result.success))
        self.episode_pub.publish(String(data=result.to_json()))
        e = self.episodes
        self.get_logger().info(
            f"episode {e.episodes_done + self.aborted}: {result.ended_by} after {result.steps} steps, return "
            f"{result.episode_return:.2f}, {result.interventions} by the operator ({e.successes}/{e.episodes_done} "
            f"successes; log {e.writer.count} records; actor {self.actor_version})"
        )
        c = self.config
        if (c.max_episodes and e.episodes_done >= c.max_episodes) or (c.max_steps and self.steps_taken >= c.max_steps):
            self.get_logger().info(f"done: {e.episodes_done} episodes, {self.steps_taken} steps")
            self.episode_pub.wait_for_all_acked(Duration(seconds=2.0))  # the last result reaches the learner
            self.exit_code = 0

    def on_embedding(self, msg: Image) -> None:
        if not self.episodes.running or self.driver_fault or self.foreign_encoder:
            return
        stamp = stamp_seconds(msg.header)
        if self.pose is None or abs(stamp_seconds(self.pose.header) - stamp) > self.config.pose_max_age:
            self.get_logger().warning(
                "no end-effector pose at the embedding's time: step skipped", throttle_duration_sec=2.0
            )
            return
        if (msg.height, msg.width, msg.encoding) != (self.n_tokens + 1, self.width, "32FC1"):
            self.get_logger().error(
                f"/msdp/embedding is {msg.height}x{msg.width} {msg.encoding}, expected "
                f"{self.n_tokens + 1}x{self.width} 32FC1 (another encoder than the policy's?)",
                throttle_duration_sec=5.0,
            )
            return
        rows = np.frombuffer(bytes(msg.data), dtype=np.float32).reshape(msg.height, msg.width)
        fresh = abs(self.now() - self.operator_stamp) <= self.config.operator_timeout
        mark, self.operator_mark = self.operator_mark, ""
        try:
            result = self.episodes.step(rows, *pose_arrays(self.pose), self.operator_action if fresh else None, mark)
        except BadInput as exc:
            self.get_logger().error(f"step skipped: {exc}", throttle_duration_sec=2.0)
            return
        if result.reward is not None:
            self.reward_pub.publish(Float32(data=float(result.reward)))
        if result.target is not None:
            stamp = vocab.stamp_nanoseconds(msg.header)
            self.publish_target(*result.target, stamp)
            self.action_pub.publish(
                vocab.twist_msg(ros_message, stamp, *self.episodes.action_spec.displacement(result.action))
            )
        if result.result is not None:
            self.end_episode(result.result)

    # -- outputs --------------------------------------------------------------------------------------------
    def publish_target(self, position: np.ndarray, orientation: np.ndarray, stamp_ns: int) -> None:
        msg = vocab.pose_msg(ros_message, stamp_ns, position, orientation)
        self.target_pub.publish(msg)
        c = self.config
        box = workspace_box_marker(c.workspace_min, c.workspace_max, msg.header.stamp, "policy_workspace")
        marker = sphere_marker("policy_target", msg, 0.015, (1.0, 0.5, 0.0))
        self.marker_pub.publish(MarkerArray(markers=[marker, box]))

    def publish_goal_marker(self) -> None:
        goal = self.task.goal_pose(self.goal_state)
        if goal is None:
            return
        msg = vocab.pose_msg(ros_message, self.now_ns(), goal[0], yaw_quat(goal[1]))
        self.marker_pub.publish(MarkerArray(markers=[sphere_marker("task_goal", msg, 0.02, (0.1, 0.9, 0.2))]))

    def destroy_node(self) -> None:
        self.episodes.writer.close()
        super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    torch.set_num_threads(1)
    return run_node("msdp_policy", PolicyNode, argv, startup_errors=(CheckpointError,))


if __name__ == "__main__":
    sys.exit(main())
