"""Evaluate a ``msdp train`` run in the run's own simulated cell, and say how its episodes end.

Like ``msdp eval`` (which also evaluates in the run's cell, from its ``config.json``), this evaluates
``RUN/policy.safetensors`` on the same fixed seeds (mean action, and sampled actions with ``--stochastic``);
it adds the diagnosis: per failing episode where the tip ended (off the hole axis, depth below the fixture
top), how far it moved over the last 10 steps and the mean of its last 5 actions, and the success of the run's
own training episodes (from its transition log). Results go to ``RUN/real_eval_<mode>.json``. A diagnostic for
the real-robot protocol study:

    .venv/bin/python scripts/real_protocol_eval.py runs/exp15/rlpd_base --episodes 50 --stochastic
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from msdp.config import from_dict
from msdp.seeding import seed_run
from msdp_franka_driver.sim.env import FrankaTaskEnv
from msdp_policy.evaluation import EVAL_SEED_BASE
from msdp_policy.policy import Policy, load_policy
from msdp_policy.tasks import HOLE_DEPTH, peg_yaw_error
from msdp_policy.training import TrainConfig
from msdp_policy.transition_log import TransitionReader


def episode(policy: Policy, env: FrankaTaskEnv, seed: int, deterministic: bool) -> dict[str, Any]:
    """One episode; where the tip is relative to the hole at the end, and what the policy was commanding."""
    observation, info = env.reset(seed=seed)
    tips, actions, done = [], [], False
    while not done:
        action = policy.act(policy.encode(observation).pooled, deterministic)
        observation, _, terminated, truncated, info = env.step(action)
        tips.append(env.sim.tcp_pose()[0].copy())
        actions.append(action)
        done = terminated or truncated
    hole, tip = info["hole_position"], tips[-1]
    return {
        "success": bool(info["success"]),
        "length": len(tips),
        "lateral_mm": 1000 * float(np.linalg.norm(tip[:2] - hole[:2])),
        "depth_mm": 1000 * float(hole[2] + HOLE_DEPTH - tip[2]),  # below the fixture top; > 0 inside the hole
        "yaw_error_deg": float(np.degrees(peg_yaw_error(env.sim.tcp_pose()[1], float(info["hole_yaw"])))),
        "moved_last10_mm": 1000 * float(np.linalg.norm(tips[-1] - tips[max(0, len(tips) - 11)])),
        "last5_action": np.mean(actions[-5:], axis=0).round(2).tolist(),
        "wrench_z_N": float(observation["wrench"][-1, 2]),
    }


def training_success(run: Path) -> tuple[int, int]:
    """(successful, all) training episodes in the run's transition log: a final record flagged terminal."""
    arrays = TransitionReader(run / "transitions").arrays
    finals = arrays["final"]
    return int((arrays["terminal"] & finals).sum()), int(finals.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--stochastic", action="store_true", help="also evaluate sampled actions")
    parser.add_argument("--sampled-episodes", type=int, help="episodes with sampled actions (default: --episodes)")
    parser.add_argument("--policy", default="policy.safetensors", help="file in RUN (e.g. checkpoints/...)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = from_dict(TrainConfig, json.loads((args.run / "config.json").read_text()))
    policy = load_policy(args.run / args.policy, None, "cpu")
    env = FrankaTaskEnv(config.env)
    won, total = training_success(args.run)
    print(f"{args.run}: training episodes {won}/{total} successful ({won / max(total, 1):.0%})")
    for mode in ("mean", "sampled")[: 1 + args.stochastic]:
        seed_run(EVAL_SEED_BASE)
        started = time.monotonic()
        count = args.episodes if mode == "mean" else args.sampled_episodes or args.episodes
        episodes = [episode(policy, env, EVAL_SEED_BASE + i, mode == "mean") for i in range(count)]
        rate = float(np.mean([e["success"] for e in episodes]))
        lengths = np.mean([e["length"] for e in episodes])
        print(f"{mode} action: success {rate:.0%} of {count}, mean length {lengths:.1f} "
              f"({time.monotonic() - started:.0f} s)")  # fmt: skip
        for i, e in enumerate(episodes):
            if not e["success"]:
                print(f"  fail {i:2d}: lateral {e['lateral_mm']:5.1f} mm, depth {e['depth_mm']:6.1f} mm, "
                      f"yaw {e['yaw_error_deg']:5.1f} deg, moved {e['moved_last10_mm']:5.1f} mm in 10 steps, "
                      f"Fz {e['wrench_z_N']:6.1f} N, last actions {e['last5_action']}")  # fmt: skip
        summary = {"success_rate": rate, "episodes": episodes, "training_success": [won, total]}
        (args.run / f"real_eval_{mode}.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
