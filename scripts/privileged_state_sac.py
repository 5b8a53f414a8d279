"""Diagnostic: the same SAC agent on privileged low-dimensional state instead of MSDP embeddings.

Separates how hard a task is for SAC with this reward, controller and action scale from how well the encoder
sees it: if SAC on the true peg-to-hole offset, yaw error and wrench cannot learn a task within a budget, an
agent on camera embeddings will not either. Not part of the product; run it by hand:

    .venv/bin/python scripts/privileged_state_sac.py --task peg --steps 100000 --out runs/state_sac_peg

Writes metrics.csv and curves.png like ``msdp train`` (same evaluation seeds).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from msdp.config import from_dict
from msdp.metrics import write_rows
from msdp_franka_driver.sim.config import EnvConfig
from msdp_franka_driver.sim.env import FrankaTaskEnv
from msdp_policy.agent import AgentConfig, SACAgent
from msdp_policy.evaluation import EVAL_SEED_BASE
from msdp_policy.tasks import TaskConfig, peg_yaw_error
from msdp_policy.training import plot_learning_curves


class PegState:
    """Tip minus hole (cm), yaw error (rad), mean wrench over the window (symlog).

    ``hole_error`` (m) shifts the hole the agent is told about by a random horizontal offset drawn once per
    episode, and ``hide_yaw`` replaces the yaw error by the tool's own yaw: together they give the agent about
    what the frozen embedding knows (see probe_embedding.py), with exact state otherwise.
    """

    def __init__(self, hole_error: float, hide_yaw: bool, rng: np.random.Generator):
        self.hole_error, self.hide_yaw, self.rng = hole_error, hide_yaw, rng
        self.bias = np.zeros(3)

    def new_episode(self) -> None:
        self.bias = np.array([*self.rng.normal(0.0, self.hole_error, 2), 0.0])

    def __call__(self, env: FrankaTaskEnv, observation: dict[str, np.ndarray]) -> np.ndarray:
        state = env.task.privileged_state(env.sim)
        tip, orientation = observation["ee_pose"][:3], observation["ee_pose"][3:]
        offset = (tip - state["hole_position"] - self.bias) * 100.0
        yaw = peg_yaw_error(orientation, 0.0 if self.hide_yaw else float(state["hole_yaw"]))
        wrench = observation["wrench"].mean(axis=0)
        return np.concatenate([offset, [yaw], np.sign(wrench) * np.log1p(np.abs(wrench))]).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--eval-every", type=int, default=5000)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--random-steps", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/state_sac_peg")
    parser.add_argument("--hole-error", type=float, default=0.0, help="m, std of the per-episode hole offset told")
    parser.add_argument("--hide-yaw", action="store_true", help="do not tell the hole's yaw")
    parser.add_argument("--hole-yaw-range", type=float, default=TaskConfig.hole_yaw_range, help="rad, +-")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = EnvConfig(task=TaskConfig(hole_yaw_range=args.hole_yaw_range))
    env, eval_env = FrankaTaskEnv(config), FrankaTaskEnv(config)
    rng = np.random.default_rng(args.seed)
    peg_state = PegState(args.hole_error, args.hide_yaw, np.random.default_rng(args.seed + 1))
    eval_state = PegState(args.hole_error, args.hide_yaw, np.random.default_rng(args.seed + 2))
    dim = 10
    agent = SACAgent(from_dict(AgentConfig, {"bridge": "concat"}), dim, 1, env.action_dim)
    size = args.steps + 1000
    states, nexts = np.zeros((size, dim), np.float32), np.zeros((size, dim), np.float32)
    actions, rewards, terminals = np.zeros((size, 4), np.float32), np.zeros(size, np.float32), np.zeros(size, bool)

    def act(state: np.ndarray, deterministic: bool) -> np.ndarray:
        x = torch.from_numpy(state)[None]
        return agent.act(x, deterministic)[0].numpy().astype(np.float64)

    def evaluate() -> dict[str, float]:
        successes, returns = [], []
        for episode in range(args.eval_episodes):
            observation, _ = eval_env.reset(seed=EVAL_SEED_BASE + episode)
            eval_state.new_episode()
            total, done, info = 0.0, False, {}
            while not done:
                observation, reward, terminated, truncated, info = eval_env.step(
                    act(eval_state(eval_env, observation), True)
                )
                total += reward
                done = terminated or truncated
            successes.append(info["success"])
            returns.append(total)
        return {"success_rate": float(np.mean(successes)), "return": float(np.mean(returns))}

    rows, started = [], time.monotonic()
    observation, _ = env.reset(seed=int(rng.integers(2**31)))
    peg_state.new_episode()
    state = peg_state(env, observation)
    for step in range(args.steps + 1):
        if step % args.eval_every == 0:
            rows.append({"env_steps": step, **evaluate(), "wall_s": round(time.monotonic() - started, 1)})
            write_rows(out / "metrics.csv", rows)
            plot_learning_curves({"privileged state SAC": rows}, out / "curves.png")
            print(f"step {step}: success {rows[-1]['success_rate']:.0%} return {rows[-1]['return']:.2f}", flush=True)
        if step == args.steps:
            break
        action = rng.uniform(-1, 1, 4) if step < args.random_steps else act(state, False)
        observation, reward, terminated, truncated, _ = env.step(action)
        next_state = peg_state(env, observation)
        states[step], actions[step], rewards[step], terminals[step], nexts[step] = (
            state,
            action,
            reward,
            terminated,
            next_state,
        )
        state = next_state
        if terminated or truncated:
            observation, _ = env.reset(seed=int(rng.integers(2**31)))
            peg_state.new_episode()
            state = peg_state(env, observation)
        if step >= 1000:
            for _ in range(2):
                i = rng.integers(step + 1, size=256)
                s, n = torch.from_numpy(states[i]), torch.from_numpy(nexts[i])
                agent.update({
                    "tokens": s[:, None], "present": torch.ones(256, 1, dtype=torch.bool), "pooled": s,
                    "next_tokens": n[:, None], "next_present": torch.ones(256, 1, dtype=torch.bool), "next_pooled": n,
                    "action": torch.from_numpy(actions[i]), "reward": torch.from_numpy(rewards[i]),
                    "terminal": torch.from_numpy(terminals[i]),
                })  # fmt: skip
    print(f"done in {(time.monotonic() - started) / 60:.1f} min; success {rows[-1]['success_rate']:.0%}")


if __name__ == "__main__":
    main()
