"""Pretraining data straight from the in-process simulator, written as the same bags the real robot records.

No ROS graph and no real-time clock: the simulated Franka runs as fast as it can and its observations are
written with the topics, message types, frames and header stamps the camera, wrench and driver nodes publish,
so ``BagDataset`` (and anything else) reads simulated and real recordings alike. Simulated time runs on across
episodes with a gap between them; an episode's last observation gets no action, so no transition crosses
an episode (or a bag: every bag starts a new episode).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from msdp import vocabulary as vocab
from msdp.config import ConfigError, from_dict, param_range, to_dict
from msdp.seeding import derived_seed
from msdp.specs import ActionSpec
from msdp_franka_driver.pose import yaw_quat
from msdp_franka_driver.sim.config import EnvConfig
from msdp_franka_driver.sim.env import FrankaTaskEnv
from msdp_perception.bags import TYPESTORE, BagError, BagWriter
from msdp_policy.tasks import TaskConfig

EPISODE_GAP_NS = 1_000_000_000  # simulated time between one episode's end and the next one's start
WRENCH_PERIOD_NS = 10_000_000  # the F/T readings in an observation are 100 Hz samples, the newest at t

TOPICS = (vocab.IMAGE, vocab.WRENCH, vocab.JOINT_STATES, vocab.EE_POSE, vocab.ACTION, vocab.TASK_GOAL)


def bag_message(msgtype: str, **fields: Any) -> Any:
    """The vocabulary's ``make`` for rosbags messages (what ``BagWriter.write`` serialises)."""
    return TYPESTORE.types[msgtype](**fields)


@dataclass(frozen=True)
class CollectConfig:
    """How much to record, with which behaviour policy, into which bags."""

    samples: int = field(default=30000, metadata=param_range(1, 100_000_000, "observations (images) to record"))
    policy: str = field(default="random", metadata={"choices": ("random", "scripted_noise")})
    action_noise: float = field(default=0.3, metadata=param_range(0.0, 10.0, "std of the noise on scripted actions"))
    seed: int = field(default=0, metadata=param_range(0, 2**31 - 1, "episodes and actions"))
    task: TaskConfig = field(default_factory=TaskConfig)
    storage: str = field(default="mcap", metadata={"choices": ("mcap", "sqlite3")})
    samples_per_bag: int = field(default=10000, metadata=param_range(1, 100_000_000, "observations per bag folder"))


class _Recorder:
    """Writes env observations and actions as the messages the real robot's nodes publish."""

    def __init__(self, writer: BagWriter, spec: ActionSpec):
        self.writer, self.spec = writer, spec
        for topic in TOPICS:
            writer.add_topic(topic.name, topic.msgtype)

    def observation(self, t: int, obs: dict[str, np.ndarray]) -> None:
        write = self.writer.write
        write(vocab.IMAGE.name, t, vocab.image_msg(bag_message, t, obs["image"], "rgb8", vocab.CAMERA_FRAME))
        window = obs["wrench"]
        for age, reading in zip(range(len(window) - 1, -1, -1), window, strict=True):
            stamp = t - age * WRENCH_PERIOD_NS
            write(vocab.WRENCH.name, stamp, vocab.wrench_msg(bag_message, stamp, reading))
        q, dq = np.split(obs["proprio"].astype(np.float64), 2)
        write(vocab.JOINT_STATES.name, t, vocab.joint_state_msg(bag_message, t, q, dq))
        pose = obs["ee_pose"].astype(np.float64)
        write(vocab.EE_POSE.name, t, vocab.pose_msg(bag_message, t, pose[:3], pose[3:]))

    def goal(self, t: int, env: FrankaTaskEnv) -> None:
        """The episode's goal, as the simulated driver publishes it at a reset (what offline rewards need)."""
        goal = env.task.goal_pose(env.task.privileged_state(env.sim))
        if goal is not None:
            self.writer.write(vocab.TASK_GOAL.name, t, vocab.pose_msg(bag_message, t, goal[0], yaw_quat(goal[1])))

    def action(self, t: int, action: np.ndarray) -> None:
        """A normalised action in physical units: metres and radians of end-effector motion this step."""
        linear, yaw = self.spec.displacement(action)
        self.writer.write(vocab.ACTION.name, t, vocab.twist_msg(bag_message, t, linear, yaw))


def _policy(env: FrankaTaskEnv, config: CollectConfig, rng: np.random.Generator) -> np.ndarray:
    if config.policy == "random":
        return rng.uniform(-1.0, 1.0, env.action_dim)
    noisy = env.scripted_action() + rng.normal(0.0, config.action_noise, env.action_dim)
    return np.clip(noisy, -1.0, 1.0)


def collect_to_bags(out_dir: Path | str, config: CollectConfig, progress: bool = True) -> list[Path]:
    """Record ``config.samples`` observations into bag folders out_dir/bag_000, bag_001, ...; return them."""
    config = from_dict(CollectConfig, to_dict(config))  # validates every field, nested task included
    out_dir = Path(out_dir)
    paths = [out_dir / f"bag_{i:03d}" for i in range(math.ceil(config.samples / config.samples_per_bag))]
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        raise BagError(f"bag folder(s) {', '.join(existing)} exist already; choose an empty output folder")
    env = FrankaTaskEnv(EnvConfig(task=config.task))
    if config.policy == "scripted_noise" and getattr(env.task, "scripted_action", None) is None:
        env.close()
        raise ConfigError(f"parameter 'policy': task {config.task.name} has no scripted policy; use random")
    rng = np.random.default_rng(config.seed)
    period_ns = round(1e9 / config.task.control_rate)
    t, episode, written = 0, 0, 0
    try:
        with tqdm(total=config.samples, desc="collect", unit="sample", disable=not progress) as bar:
            for path in paths:
                n = min(config.samples_per_bag, config.samples - written)
                path.parent.mkdir(parents=True, exist_ok=True)
                with BagWriter(path, storage=config.storage) as writer:
                    recorder = _Recorder(writer, env.action_spec)
                    pending = None  # the next observation to write and whether it ends its episode
                    for i in range(n):
                        if pending is None:  # a new episode, after a gap in simulated time
                            t += EPISODE_GAP_NS
                            pending = env.reset(seed=derived_seed(config.seed, episode))[0], False
                            recorder.goal(t, env)
                            episode += 1
                        obs, terminal = pending
                        recorder.observation(t, obs)
                        bar.update()
                        if terminal or i == n - 1:  # no action follows an episode's last observation
                            pending = None
                            continue
                        action = _policy(env, config, rng)
                        recorder.action(t, action)
                        obs, _, terminated, truncated, _ = env.step(action)
                        t += period_ns
                        pending = obs, terminated or truncated
                written += n
    finally:
        env.close()
    return paths
