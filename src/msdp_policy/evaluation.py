"""Evaluating a policy on a simulated task: fixed episode seeds, and the paper's perturbations.

Evaluation episodes use seeds ``EVAL_SEED_BASE + i``, which training (seeded from a small run seed) never
draws, so every evaluation of every run sees the same scenes.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from msdp.config import ConfigError, from_dict
from msdp.seeding import seed_run
from msdp.specs import check_same
from msdp_franka_driver.control_law import ImpedanceConfig
from msdp_franka_driver.sim.config import EnvConfig
from msdp_franka_driver.sim.env import FrankaTaskEnv
from msdp_policy.policy import Policy, load_policy
from msdp_policy.tasks import TaskConfig

EVAL_SEED_BASE = 1_000_000


def evaluate(policy: Policy, env: FrankaTaskEnv, episodes: int, deterministic: bool = True) -> dict[str, float]:
    """Success rate, mean return and mean length over ``episodes`` fixed-seed episodes."""
    _check_episodes(episodes)
    successes, returns, lengths = [], [], []
    for episode in range(episodes):
        observation, _ = env.reset(seed=EVAL_SEED_BASE + episode)
        total, done, info = 0.0, False, {"success": False}
        while not done:
            action = policy.act(policy.encode(observation).pooled, deterministic)
            observation, reward, terminated, truncated, info = env.step(action)
            total += reward
            done = terminated or truncated
        successes.append(info["success"])
        returns.append(total)
        lengths.append(env.steps)
    return {
        "success_rate": float(np.mean(successes)),
        "return": float(np.mean(returns)),
        "episode_length": float(np.mean(lengths)),
    }


def _check_episodes(episodes: int) -> None:
    """An evaluation needs at least one episode: none would give a success rate of nan."""
    if isinstance(episodes, bool) or not isinstance(episodes, numbers.Integral) or episodes < 1:
        raise ConfigError(f"parameter 'episodes': expected an integer of at least 1, got {episodes!r}")


@dataclass(frozen=True)
class Perturbations:
    """Test-time changes to the task (all validated by the task and controller configs)."""

    image_noise: float = 0.0  # Gaussian pixel noise std, 0-255 scale
    ft_noise: float = 0.0  # Gaussian F/T noise std, N and Nm
    stiffness: float | None = None  # translational stiffness, N/m
    mass_scale: float = 1.0
    friction_scale: float = 1.0

    def describe(self) -> str:
        default = Perturbations()
        changed = {k: v for k, v in asdict(self).items() if v != getattr(default, k)}
        return ", ".join(f"{k} {v}" for k, v in changed.items())


def evaluate_policy(
    path: str | Path,
    episodes: int = 50,
    perturbations: Perturbations = Perturbations(),
    task: str | None = None,
    encoder_checkpoint: str | None = None,
    deterministic: bool = True,
    device: str = "auto",
) -> dict[str, Any]:
    """Bad settings raise ConfigError naming the parameter (``task.*`` or ``impedance.*`` for a perturbation)
    before any episode runs; a missing or damaged policy raises CheckpointError."""
    _check_episodes(episodes)
    policy = load_policy(path, encoder_checkpoint, device)
    task_config = from_dict(TaskConfig, {
        **policy.info.task, "name": task or policy.info.task["name"], "image_noise_std": perturbations.image_noise,
        "ft_noise_std": perturbations.ft_noise, "object_mass_scale": perturbations.mass_scale,
        "object_friction_scale": perturbations.friction_scale,
    }, prefix="task.")  # fmt: skip
    config = EnvConfig(task=task_config)
    if perturbations.stiffness is not None:
        impedance = from_dict(
            ImpedanceConfig,
            {**asdict(config.impedance), "translational_stiffness": perturbations.stiffness},
            prefix="impedance.",
        )
        config = replace(config, impedance=impedance)
    env = FrankaTaskEnv(config)
    check_same(policy.encoder.config.observation_spec, f"{path}'s encoder", env.observation_spec, "the simulated cell")
    seed_run(EVAL_SEED_BASE)  # sampled actions, too, are the same from one call to the next
    try:
        result = evaluate(policy, env, episodes, deterministic)
    finally:
        env.close()
    return {**result, "episodes": episodes, "perturbations": perturbations.describe()}
