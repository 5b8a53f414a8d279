"""Diagnostic: how far does Gaussian pixel noise move a policy's embedding and its action?

``msdp eval --image-noise`` gives the success rate under noise; this says where the change comes from. It
records the states a policy visits (the first steps of evaluation episodes), encodes each one clean and with
noise, and prints the mean absolute change of the pooled embedding, of the mean vision token and of the F/T and
proprioception tokens (which see the image only through self-attention), and of the mean action, beside the
spread of the clean pooled embedding across the states. Not part of the product:

    .venv/bin/python scripts/pixel_noise_sensitivity.py runs/train_peg_msdp_frozen_ln_s0/policy.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from msdp.config import from_dict
from msdp_franka_driver.sim.config import EnvConfig
from msdp_franka_driver.sim.env import FrankaTaskEnv
from msdp_policy.evaluation import EVAL_SEED_BASE
from msdp_policy.policy import Policy, load_policy
from msdp_policy.tasks import TaskConfig


def visited_observations(policy: Policy, episodes: int, steps: int) -> list[dict[str, np.ndarray]]:
    """The first ``steps`` observations of each evaluation episode, under the policy's mean action."""
    env = FrankaTaskEnv(EnvConfig(task=from_dict(TaskConfig, policy.info.task)))
    observations = []
    try:
        for episode in range(episodes):
            observation, _ = env.reset(seed=EVAL_SEED_BASE + episode)
            for _ in range(steps):
                observations.append({k: np.copy(v) for k, v in observation.items()})
                observation, _, terminated, truncated, _ = env.step(policy.act(policy.encode(observation).pooled))
                if terminated or truncated:
                    break
    finally:
        env.close()
    return observations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("policy", type=Path, help="policy.safetensors from msdp train")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--steps", type=int, default=6, help="states recorded per episode")
    parser.add_argument("--noise", type=float, nargs="+", default=[2.0, 5.0, 10.0], help="pixel std, 0-255")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    policy = load_policy(args.policy)
    observations = visited_observations(policy, args.episodes, args.steps)
    clean = [policy.encode(o) for o in observations]
    n_vision = policy.encoder.config.vision_tokens
    spread = torch.cat([e.pooled for e in clean]).std(0).mean().item()
    print(f"{len(observations)} states; spread of the clean pooled embedding (std per dimension): {spread:.3f}")
    for std in args.noise:
        change = {"pooled": [], "vision mean": [], "F/T + proprio tokens": [], "action": []}
        for observation, embedding in zip(observations, clean, strict=True):
            image = observation["image"] + rng.normal(0.0, std, observation["image"].shape)
            noisy = policy.encode({**observation, "image": np.clip(image, 0, 255).astype(observation["image"].dtype)})
            vision = noisy.tokens[:, :n_vision].mean(1) - embedding.tokens[:, :n_vision].mean(1)
            others = noisy.tokens[:, n_vision:] - embedding.tokens[:, n_vision:]
            change["pooled"].append((noisy.pooled - embedding.pooled).abs().mean().item())
            change["vision mean"].append(vision.abs().mean().item())
            change["F/T + proprio tokens"].append(others.abs().mean().item())
            change["action"].append(np.abs(policy.act(noisy.pooled) - policy.act(embedding.pooled)).mean())
        print(f"pixel std {std:g}: mean |change| " + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in change.items()))


if __name__ == "__main__":
    main()
