"""Evaluating a policy on a simulated task: fixed episode seeds, and the paper's perturbations.

Evaluation episodes use seeds ``EVAL_SEED_BASE + i``, which training (seeded from a small run seed) never
draws, so every evaluation of every run sees the same scenes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from msdp.config import from_dict
from msdp_franka_driver.control_law import ImpedanceConfig
from msdp_franka_driver.env import EnvConfig, FrankaTaskEnv
from msdp_franka_driver.tasks import TaskConfig
from msdp_policy.policy import Policy, load_policy

EVAL_SEED_BASE = 1_000_000


def evaluate(policy: Policy, env: FrankaTaskEnv, episodes: int, deterministic: bool = True) -> dict[str, float]:
    """Success rate, mean return and mean length over ``episodes`` fixed-seed episodes."""
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
) -> dict[str, Any]:
    policy = load_policy(path, encoder_checkpoint)
    task_config = from_dict(TaskConfig, {
        **policy.info.task, "name": task or policy.info.task["name"], "image_noise_std": perturbations.image_noise,
        "ft_noise_std": perturbations.ft_noise, "object_mass_scale": perturbations.mass_scale,
        "object_friction_scale": perturbations.friction_scale,
    })  # fmt: skip
    config = EnvConfig(task=task_config)
    if perturbations.stiffness is not None:
        impedance = from_dict(
            ImpedanceConfig, {**asdict(config.impedance), "translational_stiffness": perturbations.stiffness}
        )
        config = replace(config, impedance=impedance)
    env = FrankaTaskEnv(config)
    torch.manual_seed(EVAL_SEED_BASE)  # sampled actions, too, are the same from one call to the next
    try:
        result = evaluate(policy, env, episodes, deterministic)
    finally:
        env.close()
    return {**result, "episodes": episodes, "perturbations": perturbations.describe()}
