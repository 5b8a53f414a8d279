"""Learner node: reads the transition log, updates critic and actor, publishes actor weights and checkpoints.

reads       the transition log folder the policy node writes (``transitions``: a local or shared folder, so
            the learner can run on another machine)
subscribes  /msdp/episode (std_msgs/String, JSON: the policy node's episode results; starts are ignored)
publishes   /msdp/actor_weights (std_msgs/UInt8MultiArray, latched: a safetensors blob of the actor; the
            layout's first dimension label names the version, "critic_updates=N env_steps=M")
writes      ``out``/agent.pt (everything needed to resume; a restarted learner picks it up),
            ``out``/policy.safetensors (what ``msdp eval`` and the policy node load), and the record of progress
            (``ProgressLog``): metrics.csv every ``metrics_every`` critic updates and at the end, episodes.csv
            per episode result, curves.png, tensorboard/
Updates run in short bursts from a timer at the configured update-to-data ratio (the same ``Learner`` as
``msdp train``), so the node stays responsive to Ctrl-C.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from std_msgs.msg import MultiArrayDimension, String, UInt8MultiArray

from msdp import vocabulary as vocab
from msdp.config import ConfigError, param_range, to_dict
from msdp.devices import DEVICES, resolve_device
from msdp.metrics import MetricsError
from msdp.node import MsdpNode, run_node
from msdp.seeding import seed_run
from msdp_perception.checkpoint import CheckpointError, encoder_identity
from msdp_policy.agent import AgentConfig, SACAgent
from msdp_policy.learner import Learner, actor_to_bytes
from msdp_policy.policy import PolicyInfo, save_policy
from msdp_policy.progress import ProgressLog, episode_end
from msdp_policy.replay import Replay
from msdp_policy.tasks import TaskConfig
from msdp_policy.transition_log import SCHEMA_FILE, TransitionLogError, TransitionReader


@dataclass(frozen=True)
class LearnerNodeConfig:
    transitions: str = field(default="runs/online/transitions", metadata={"doc": "the policy's transition log"})
    out: str = field(default="runs/online", metadata={"doc": "checkpoints (agent.pt, policy.safetensors), progress"})
    offline: str = field(default="", metadata={"doc": "RLPD: comma-separated offline transition logs"})
    encoder_checkpoint: str = field(default="", metadata={"doc": "for policy.json (msdp eval); '': the log's"})
    update_after: int = field(default=1000, metadata=param_range(1, 10**7, "logged steps before the first update"))
    updates_per_tick: int = field(default=10, metadata=param_range(1, 10_000, "updates per 20 ms timer tick"))
    publish_every: int = field(default=100, metadata=param_range(1, 10**7, "critic updates between publishes"))
    checkpoint_every: int = field(default=2000, metadata=param_range(1, 10**7, "critic updates"))
    metrics_every: int = field(default=500, metadata=param_range(1, 10**7, "critic updates between metrics.csv rows"))
    episode_window: int = field(default=20, metadata=param_range(1, 10_000, "episodes in metrics.csv's window_*"))
    threads: int = field(default=1, metadata=param_range(1, 64, "torch CPU threads"))
    device: str = field(default="auto", metadata={"choices": DEVICES, "doc": "auto: a CUDA GPU if torch has one"})
    seed: int = field(default=0, metadata=param_range(0, 2**31 - 1))
    agent: AgentConfig = field(default_factory=AgentConfig)
    task: TaskConfig = field(default_factory=TaskConfig)


class LearnerNode(MsdpNode):
    def __init__(self):
        super().__init__("msdp_learner", LearnerNodeConfig)
        torch.set_num_threads(self.config.threads)
        seed_run(self.config.seed)
        self.learner: Learner | None = None
        self.action_dim = 0
        self.encoder_checkpoint = ""  # the parameter, or else the one the log names
        self.exit_code: int | None = None
        self.published_at = -1
        self.saved_at = 0
        self.progress = ProgressLog(self.config.out, self.config.episode_window)
        self.reported_at = 0  # critic updates at the last metrics.csv row
        self.weights_pub = self.publisher(vocab.ACTOR_WEIGHTS)
        self.subscription(vocab.EPISODE, self.on_episode)
        self.create_timer(0.02, self.on_tick)
        self.get_logger().info(f"learner up: log {self.config.transitions}, checkpoints in {self.config.out}")

    def start(self) -> bool:
        """Open the log once the policy has created it; build the agent from its schema; resume if possible."""
        c = self.config
        if not (Path(c.transitions) / SCHEMA_FILE).exists():
            self.get_logger().info(f"waiting for the transition log {c.transitions}", throttle_duration_sec=10.0)
            return False
        reader = TransitionReader(c.transitions)
        fields = reader.schema.fields
        if "tokens" not in fields:
            raise ConfigError(f"{c.transitions}: the learner node trains on token logs (msdp_frozen) only")
        self.encoder_checkpoint = c.encoder_checkpoint or reader.schema.meta.get("encoder_checkpoint", "")
        if not self.encoder_checkpoint:  # else the first checkpoint would fail: the saved policy names its encoder
            raise ConfigError(f"parameter 'encoder_checkpoint' is needed: {c.transitions} does not name its encoder")
        logged_encoder = reader.schema.meta.get("encoder")
        if logged_encoder and encoder_identity(self.encoder_checkpoint) != logged_encoder:
            raise ConfigError(
                f"parameter 'encoder_checkpoint': {self.encoder_checkpoint} is not the encoder that made "
                f"{c.transitions} ({reader.schema.meta.get('encoder_checkpoint')}); the saved policy would name the "
                f"wrong encoder"
            )
        n_tokens, width = fields["tokens"][1]
        self.action_dim = fields["action"][1][0]
        agent = SACAgent(c.agent, width, n_tokens, self.action_dim).to(resolve_device(c.device))
        offline = [Replay(TransitionReader(folder)) for folder in c.offline.split(",") if folder]
        try:
            self.learner = Learner(agent, Replay(reader), offline, c.update_after, c.seed)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        checkpoint = Path(c.out) / "agent.pt"
        if checkpoint.exists():
            self.learner.resume(checkpoint)
            self.get_logger().info(f"resumed from {checkpoint} at {agent.critic_updates} critic updates")
        self.publish_weights()
        self.reported_at = agent.critic_updates
        return True

    def on_episode(self, msg: String) -> None:
        try:
            result = episode_end(msg.data)
        except ValueError as exc:
            self.get_logger().error(f"{vocab.EPISODE.name}: {exc}", throttle_duration_sec=10.0)
            return
        if result is not None:
            self.progress.add_episode(result)

    def on_tick(self) -> None:
        if self.learner is None:
            try:
                if not self.start():
                    return
            except (ConfigError, TransitionLogError, CheckpointError) as exc:
                self.get_logger().error(f"cannot learn from {self.config.transitions}: {exc}")
                self.exit_code = 2
                return
        learner = self.learner
        try:
            learner.replay.refresh()
        except TransitionLogError as exc:  # e.g. a damaged record: keep the weights, say so, try again later
            self.get_logger().error(f"cannot read new transitions: {exc}", throttle_duration_sec=10.0)
            return
        env_steps = learner.env_steps()
        before = learner.agent.critic_updates
        means = learner.catch_up(env_steps, self.config.updates_per_tick)
        updates = learner.agent.critic_updates
        self.progress.add_updates(updates - before, means)
        caught_up = updates > self.published_at and learner.updates_owed(env_steps) == 0
        if updates - self.published_at >= self.config.publish_every or caught_up:  # a waiting policy hears of it
            self.publish_weights()
        if updates - self.saved_at >= self.config.checkpoint_every:
            self.save(env_steps)
        if updates - self.reported_at >= self.config.metrics_every:
            self.report(env_steps)

    def report(self, env_steps: int) -> None:
        """A metrics.csv row (and the curves and TensorBoard scalars), and one line of it in the log."""
        updates = self.learner.agent.critic_updates
        row = self.progress.row(env_steps, updates)
        self.reported_at = updates
        self.get_logger().info(
            f"{updates} critic updates, {env_steps} env steps, {row['updates_per_s']:.1f} updates/s, critic loss "
            f"{row['critic_loss']:.3g}; {row['episodes']} episodes, the last {self.config.episode_window} at most: "
            f"success {row['window_success_rate']:.0%}, return {row['window_return']:.2f}"
        )

    def publish_weights(self) -> None:
        learner = self.learner
        env_steps = learner.env_steps()
        owed = learner.updates_owed(env_steps)
        label = f"critic_updates={learner.agent.critic_updates} env_steps={env_steps} behind={owed}"
        msg = UInt8MultiArray(data=actor_to_bytes(learner.agent.actor))
        msg.layout.dim = [MultiArrayDimension(label=label, size=len(msg.data), stride=len(msg.data))]
        self.weights_pub.publish(msg)
        self.published_at = learner.agent.critic_updates

    def save(self, env_steps: int) -> None:
        started = time.perf_counter()
        out = Path(self.config.out)
        out.mkdir(parents=True, exist_ok=True)
        agent = self.learner.agent
        self.learner.save(out / "agent.pt", {"env_steps": env_steps})
        info = PolicyInfo(
            agent=self.config.agent,
            encoder_variant="msdp_frozen",
            encoder_checkpoint=self.encoder_checkpoint,
            sensors="vision,ft,proprio",
            task=to_dict(self.config.task),
            action_dim=self.action_dim,
            training={"env_steps": env_steps, "critic_updates": agent.critic_updates},
        )
        save_policy(out / "policy", agent.actor, None, info)
        self.saved_at = agent.critic_updates
        self.get_logger().info(
            f"checkpoint at {agent.critic_updates} critic updates, {env_steps} env steps "
            f"({(time.perf_counter() - started) * 1e3:.0f} ms)"
        )

    def destroy_node(self) -> None:
        if self.learner is not None:
            if self.progress.updates or self.progress.new_episodes:  # what came since the last row
                self.report(self.learner.env_steps())
            if self.learner.agent.critic_updates > self.saved_at:
                self.save(self.learner.env_steps())
        self.progress.close()
        super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    return run_node("msdp_learner", LearnerNode, argv, startup_errors=(TransitionLogError, MetricsError))


if __name__ == "__main__":
    sys.exit(main())
