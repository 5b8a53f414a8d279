"""The fast loop: simulated task, encoder, agent and transition log, no ROS.

``train`` runs SAC (or RLPD) on the simulated task with the same agent, replay and transition log the ROS
nodes use. Acting and learning take turns in one process, or with ``learner_process`` the learner runs in a
second process beside the acting one (``learner_process.py``, the update-to-data ratio kept).
Every ``eval_every`` environment steps it runs ``eval_episodes`` deterministic episodes on a fixed set of seeds,
appends a row to ``metrics.csv`` (and as TensorBoard scalars ``eval/<column>`` to ``tensorboard/``), redraws
``curves.png`` and writes two checkpoints: ``policy.safetensors`` (what ``msdp eval`` and the policy node load;
a copy per evaluation goes to ``checkpoints/policy_<steps>.safetensors``) and ``agent.pt`` (everything
``--resume`` needs: networks, optimisers, counters; the replay is the transition log itself, in
``transitions/``).

Evaluations happen at step 0, every ``eval_every`` steps and at ``steps``, each once. An evaluation writes its
checkpoints first and its ``metrics.csv`` row last, so a row means everything of that evaluation is on disk:
``--resume`` evaluates exactly the points not in ``metrics.csv`` yet, first the one a kill cut short.
``config.json`` (the run's settings, ``steps`` included) and ``agent.pt`` exist from the run's first moment.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from msdp.config import ConfigError, from_dict, param_range, to_dict
from msdp.devices import DEVICES, resolve_device
from msdp.metrics import read_rows, write_rows, write_scalars
from msdp.seeding import seed_run
from msdp.specs import check_same
from msdp_franka_driver.sim.config import EnvConfig
from msdp_franka_driver.sim.env import FrankaTaskEnv
from msdp_perception.checkpoint import load_encoder
from msdp_perception.model import MSDPModel
from msdp_policy.agent import AgentConfig, SACAgent
from msdp_policy.evaluation import evaluate, training_seed
from msdp_policy.learner import Learner
from msdp_policy.learner_process import LearnerJob, LearnerProcess, acting_weights, keep_freed_memory
from msdp_policy.policy import SENSOR_SUBSETS, Policy, PolicyInfo, save_policy
from msdp_policy.replay import (
    ENCODER_VARIANTS,
    Replay,
    embedding_record,
    final_record,
    log_meta,
    step_record,
    transition_schema,
)
from msdp_policy.transition_log import TransitionLogError, TransitionReader, TransitionWriter


@dataclass(frozen=True)
class TrainConfig:
    """One training run; ``agent`` holds the SAC/RLPD hyperparameters, ``env`` the task and controller."""

    steps: int = field(default=200_000, metadata=param_range(1, 10**8, "environment steps"))
    seed: int = field(default=0, metadata=param_range(0, 2**31 - 1))
    random_steps: int = field(default=5000, metadata=param_range(0, 10**7, "uniform random actions first"))
    update_after: int = field(default=1000, metadata=param_range(1, 10**7, "env steps before the first update"))
    eval_every: int = field(default=10_000, metadata=param_range(1, 10**8, "environment steps"))
    eval_episodes: int = field(default=20, metadata=param_range(1, 10_000))
    encoder_variant: str = field(default="msdp_frozen", metadata={"choices": ENCODER_VARIANTS})
    sensors: str = field(default="vision,ft,proprio", metadata={"choices": SENSOR_SUBSETS})
    torch_threads: int = field(default=1, metadata=param_range(1, 256))
    device: str = field(default="auto", metadata={"choices": DEVICES, "doc": "auto: a CUDA GPU if torch has one"})
    learner_process: bool = field(
        default=False,
        metadata={"doc": "learn in a second process beside acting; on 2 cores faster in bf16 only (README, Speed)"},
    )
    max_learner_lag: int = field(
        default=64, metadata=param_range(0, 10**6, "critic updates the learner process may owe before acting waits")
    )
    agent: AgentConfig = field(default_factory=AgentConfig)
    env: EnvConfig = field(default_factory=EnvConfig)


class Trainer:
    """Holds one run's state; ``run`` goes on until ``config.steps`` environment steps are in the log."""

    def __init__(self, config: TrainConfig, encoder_checkpoint: Path, out_dir: Path, offline: list[Path] = ()):
        self.config, self.out_dir, self.offline = config, out_dir, tuple(Path(p) for p in offline)
        keep_freed_memory()
        torch.set_num_threads(1 if config.learner_process else config.torch_threads)
        self.rng = seed_run(config.seed)  # before any network is built: the seed fixes their initial weights
        pretrained, _ = load_encoder(encoder_checkpoint)
        self.encoder_checkpoint = str(Path(encoder_checkpoint).resolve())
        self.env = FrankaTaskEnv(config.env)
        self.eval_env = FrankaTaskEnv(config.env)
        model = pretrained.config
        scratch = None
        if config.encoder_variant == "scratch":  # same network and normalisation, weights drawn afresh
            scratch = MSDPModel(model)
            scratch.normalizer.load_state_dict(pretrained.normalizer.state_dict())
        self.encoder = (scratch if scratch is not None else pretrained).eval()
        self.model = model
        self.agent = SACAgent(config.agent, model.width, model.n_tokens, self.env.action_dim, encoder=scratch)
        self.device = resolve_device(config.device)
        self.agent.to(self.device)
        self.encoder.to(self.device)
        check_same(model.observation_spec, str(encoder_checkpoint), self.env.observation_spec, "env.sim")
        meta = log_meta(encoder_checkpoint, model, self.env.action_spec)
        self.schema = transition_schema(config.encoder_variant, model, self.env.action_dim, meta)
        try:  # the offline logs are checked before the run writes anything
            offline_logs = [Replay(TransitionReader(folder)) for folder in offline]
            for log in offline_logs:
                self.schema.check_same_source(log.reader.schema, f"{out_dir / 'transitions'}", str(log.reader.folder))
        except TransitionLogError as exc:
            raise ConfigError(f"--offline: {exc}") from exc
        self.writer = TransitionWriter(out_dir / "transitions", self.schema, durable=False)
        self.replay = Replay(TransitionReader(out_dir / "transitions"))
        try:
            self.learner = Learner(self.agent, self.replay, offline_logs, config.update_after, config.seed)
        except ValueError as exc:
            raise ConfigError(f"--offline: {exc}") from exc
        # Counted from the log here and by the loop after (which reads the log only once learning starts).
        self.env_steps = self.learner.env_steps()
        self.previous_end = 0  # the steps of the run resumed: a kill may have cut its final evaluation short
        self.metrics: dict[str, float] = {}  # the latest update's losses
        self.rows: list[dict[str, float]] = []
        self.started = time.monotonic()
        self.elapsed_before = 0.0
        self.tensorboard = SummaryWriter(str(out_dir / "tensorboard"))  # the metrics.csv rows, for TensorBoard
        self.learner_process: LearnerProcess | None = None  # started by run() when config.learner_process
        self.weights = acting_weights(self.agent)  # what the acting process acts with

    # -- persistence --------------------------------------------------------------------------------------
    def info(self) -> PolicyInfo:
        return PolicyInfo(
            agent=self.config.agent,
            encoder_variant=self.config.encoder_variant,
            encoder_checkpoint=self.encoder_checkpoint,
            sensors=self.config.sensors,
            task=to_dict(self.config.env.task),
            action_dim=self.env.action_dim,
            training={"env_steps": self.env_steps, "last_eval": self.rows[-1] if self.rows else {}},
        )

    def save(self) -> None:
        """The latest policy, a copy of it per evaluation (to evaluate any point of the curve on more episodes
        later) and everything ``--resume`` needs."""
        info = self.info()
        save_policy(self.out_dir / "policy", self.agent.actor, self.agent.encoder, info)
        kept = self.out_dir / "checkpoints" / f"policy_{self.env_steps:07d}"
        save_policy(kept, self.agent.actor, self.agent.encoder, info)
        if self.learner_process is None:  # else the learner process wrote it for this point (checkpoint())
            self.learner.save(self.out_dir / "agent.pt", {"elapsed_s": self.elapsed()})

    def resume(self, previous_end: int) -> None:
        """Go on from ``agent.pt``, the log and metrics.csv; ``previous_end`` is the ``steps`` of the run resumed."""
        if self.env_steps > self.config.steps:
            raise ConfigError(
                f"parameter 'steps': {self.config.steps} is fewer than the {self.env_steps} environment steps "
                f"{self.out_dir} already holds; expected at least {self.env_steps}"
            )
        self.previous_end = previous_end
        self.elapsed_before = self.learner.resume(self.out_dir / "agent.pt")["elapsed_s"]
        if (self.out_dir / "metrics.csv").exists():
            self.rows = read_rows(self.out_dir / "metrics.csv")
        # Steps logged after the checkpoint stay in the replay (they are real experience); the seeds move on.
        self.learner.rng = np.random.default_rng([self.config.seed, self.env_steps, 1])
        self.rng = seed_run(self.config.seed, self.env_steps)

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started

    # -- the loop -----------------------------------------------------------------------------------------
    def record(self, observation: dict[str, np.ndarray], embedding: Any) -> dict[str, np.ndarray]:
        """The observation fields of a log record (see replay.transition_schema)."""
        if self.config.encoder_variant == "msdp_frozen":
            return embedding_record(embedding.tokens[0].cpu().numpy(), embedding.token_present[0].cpu().numpy(),
                                    embedding.pooled[0].cpu().numpy())  # fmt: skip
        return {
            "image": observation["image"],
            "wrench": observation["wrench"],
            "proprio": observation["proprio"],
            "sensors": self.policy.present[0].cpu().numpy(),
        }

    def learn(self) -> None:
        """The updates owed for the steps taken so far (none before ``update_after``): run here, or, with a
        learner process, wait only while it owes more than ``max_learner_lag`` and take its newest weights."""
        if self.learner_process is not None:
            self.learner_process.wait_for(self.env_steps)
            self.learner_process.poll_weights(self.weights)
        elif self.env_steps >= self.config.update_after:
            self.replay.refresh()
            self.metrics = self.learner.catch_up(self.env_steps) or self.metrics

    @property
    def critic_updates(self) -> int:
        return self.agent.critic_updates if self.learner_process is None else self.learner_process.updates.value

    def start_learner_process(self) -> None:
        """The learner process starts from this process's agent (same initial weights) or from agent.pt."""
        c = self.config
        job = LearnerJob(
            agent=c.agent, width=self.model.width, n_tokens=self.model.n_tokens, action_dim=self.env.action_dim,
            encoder=self.model if self.agent.encoder is not None else None,
            transitions=self.out_dir / "transitions", agent_checkpoint=self.out_dir / "agent.pt",
            offline=self.offline, update_after=c.update_after, seed=c.seed, threads=c.torch_threads,
            batch_seed=(c.seed, self.env_steps, 1) if self.env_steps else (c.seed,),
            device=str(self.device), max_lag=c.max_learner_lag,
        )  # fmt: skip
        resume_from = self.out_dir / "agent.pt" if self.env_steps else None  # optimisers and counters too
        self.learner_process = LearnerProcess(job, self.agent, resume_from)
        self.learner_process.poll_weights(self.weights)

    def due(self, step: int, *ends: int) -> bool:
        """Whether to evaluate at ``step``: 0, every ``eval_every`` steps and the end (``steps``, and ``ends``),
        each once, in order; a point metrics.csv already holds (the run resumed got there) is not done again."""
        point = step % self.config.eval_every == 0 or step in (self.config.steps, *ends)
        return point and (not self.rows or step > self.rows[-1]["env_steps"])

    def evaluate_and_save(self, bar: tqdm) -> None:
        """The metrics.csv row goes last: a kill before it leaves a run whose resume evaluates here again."""
        if self.learner_process is not None:  # every update owed so far, agent.pt, and the weights of this point
            extra = {"elapsed_s": self.elapsed()}
            self.metrics = self.learner_process.checkpoint(self.env_steps, extra, self.weights) or self.metrics
        result = evaluate(self.policy, self.eval_env, self.config.eval_episodes)
        steps = self.env_steps
        self.replay.refresh()  # for the episode count: before update_after the loop does not read the log
        row = {
            "env_steps": steps,
            "episodes": int(self.replay.reader.arrays["final"].sum()),
            "success_rate": result["success_rate"],
            "return": result["return"],
            "episode_length": result["episode_length"],
            "wall_s": round(self.elapsed(), 1),
            "steps_per_s": steps / max(self.elapsed(), 1e-9),
            "critic_updates": self.critic_updates,
            **{k: self.metrics.get(k, math.nan) for k in ("critic_loss", "q", "actor_loss", "temperature", "entropy")},
        }
        self.rows.append(row)
        self.save()
        plot_learning_curves({self.out_dir.name: self.rows}, self.out_dir / "curves.png")
        write_rows(self.out_dir / "metrics.csv", self.rows)
        write_scalars(self.tensorboard, "eval", {k: v for k, v in row.items() if k != "env_steps"}, steps)
        bar.write(
            f"step {steps}: success {result['success_rate']:.0%} over {self.config.eval_episodes} episodes, "
            f"return {result['return']:.2f}, {row['steps_per_s']:.1f} steps/s"
        )

    def run(self, progress: bool = True) -> dict[str, Any]:
        if self.config.learner_process:
            self.start_learner_process()
        try:
            return self.loop(progress)
        finally:
            if self.learner_process is not None:
                self.learner_process.close()

    def loop(self, progress: bool) -> dict[str, Any]:
        c = self.config
        self.policy = Policy(self.agent.actor, self.encoder, self.info())
        self.replay.refresh()
        episode = int(self.replay.reader.arrays["episode"].max()) + 1 if len(self.replay.reader) else 0
        observation, _ = self.env.reset(seed=training_seed(self.rng))
        embedding = self.policy.encode(observation)
        recent_success: list[bool] = []
        desc = f"train {c.encoder_variant}"
        bar = tqdm(total=c.steps, initial=self.env_steps, disable=not progress, unit="step", desc=desc)
        self.learn()  # a resumed run first owes the updates for the steps logged after its checkpoint
        if self.due(self.env_steps, self.previous_end):  # the untrained policy, or the evaluation a kill cut short
            self.evaluate_and_save(bar)
        while self.env_steps < c.steps:
            if self.env_steps < c.random_steps:
                action = self.rng.uniform(-1.0, 1.0, self.env.action_dim)
            else:
                action = self.policy.act(embedding.pooled, deterministic=False)
            next_observation, reward, terminated, truncated, info = self.env.step(action)
            self.writer.append(step_record(self.record(observation, embedding), episode, action, reward, terminated))
            observation, embedding = next_observation, self.policy.encode(next_observation)
            self.env_steps += 1
            if terminated or truncated:
                final = final_record(self.record(observation, embedding), episode, self.env.action_dim, terminated)
                self.writer.append(final)
                recent_success = (recent_success + [bool(info["success"])])[-20:]
                episode += 1
                observation, _ = self.env.reset(seed=training_seed(self.rng))
                embedding = self.policy.encode(observation)
            self.learn()
            bar.update(1)
            if self.env_steps % 50 == 0:
                bar.set_postfix(
                    train_success=f"{np.mean(recent_success) if recent_success else 0:.0%}",
                    eval_success=f"{self.rows[-1]['success_rate']:.0%}" if self.rows else "-",
                    steps_s=f"{self.env_steps / max(self.elapsed(), 1e-9):.1f}",
                    refresh=False,
                )
            if self.due(self.env_steps):
                self.evaluate_and_save(bar)
        bar.close()
        self.writer.close()
        self.tensorboard.close()
        return {"env_steps": self.env_steps, "final": self.rows[-1], "wall_s": self.elapsed()}


def train(
    config: TrainConfig,
    encoder_checkpoint: Path,
    out_dir: Path,
    resume: bool = False,
    offline: list[Path] = (),
    progress: bool = True,
) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    if not resume and (out_dir / "transitions").exists():
        raise ConfigError(f"{out_dir} already holds a run; pass --resume to continue it, or choose a new --out")
    if resume and not (out_dir / "agent.pt").exists():
        raise ConfigError(f"{out_dir}/agent.pt not found: nothing to resume")
    if resume:
        try:
            saved = from_dict(TrainConfig, json.loads((out_dir / "config.json").read_text()))
        except (OSError, ValueError) as exc:  # ValueError includes ConfigError and JSONDecodeError
            raise ConfigError(f"{out_dir / 'config.json'}: not the config of a run ({exc})") from exc
        config = replace(saved, steps=config.steps, torch_threads=config.torch_threads)
    trainer = Trainer(config, encoder_checkpoint, out_dir, offline)
    if resume:
        trainer.resume(saved.steps)
    (out_dir / "config.json").write_text(json.dumps(to_dict(config), indent=2))  # with the end a resume needs
    if not resume:  # resumable from the start, so a kill in the first evaluation loses nothing
        trainer.learner.save(out_dir / "agent.pt", {"elapsed_s": trainer.elapsed()})
    summary = trainer.run(progress)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def plot_learning_curves(runs: dict[str, list[dict[str, float]]], path: Path) -> None:
    """Evaluation success rate and return against environment steps, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_success, ax_return) = plt.subplots(1, 2, figsize=(11, 4))
    for label, rows in runs.items():
        steps = [r["env_steps"] / 1000 for r in rows]
        ax_success.plot(steps, [100 * r["success_rate"] for r in rows], marker="o", markersize=3, label=label)
        ax_return.plot(steps, [r["return"] for r in rows], marker="o", markersize=3, label=label)
    ax_success.set(xlabel="environment steps (k)", ylabel="evaluation success (%)", ylim=(-2, 102))
    ax_return.set(xlabel="environment steps (k)", ylabel="evaluation return")
    for ax in (ax_success, ax_return):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
