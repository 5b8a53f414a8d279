"""Evaluate every kept checkpoint of a training run on more episodes than the run's own evaluations.

``msdp train`` evaluates on ``eval_episodes`` (20) seeds as it goes, which is noisy (+-10 points) and only
deterministic; it keeps each evaluated policy in ``RUN/checkpoints/``. This evaluates each of them on
``--episodes`` fixed seeds with the mean action and with sampled actions, prints a table, and writes
``RUN/checkpoint_eval.csv`` and ``RUN/checkpoint_eval.png`` (beside the run's own curve). A diagnostic, not
part of the product:

    .venv/bin/python scripts/evaluate_checkpoints.py runs/train_peg_msdp_frozen_ln_s0 --episodes 50
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import torch
from tqdm import tqdm

from msdp.metrics import read_rows, write_rows
from msdp_policy.evaluation import evaluate_policy

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def evaluate_run(run: Path, episodes: int) -> list[dict[str, float]]:
    """One row per checkpoint; rows already in ``checkpoint_eval.csv`` with as many episodes are kept, so a
    run in progress can be followed by calling this again."""
    checkpoints = sorted((run / "checkpoints").glob("policy_*.safetensors"))
    if not checkpoints:
        raise SystemExit(f"{run / 'checkpoints'}: no policy_<steps>.safetensors (made by msdp train)")
    done = {}
    if (run / "checkpoint_eval.csv").exists():
        done = {int(r["env_steps"]): r for r in read_rows(run / "checkpoint_eval.csv") if r["episodes"] == episodes}
    rows = []
    for path in tqdm(checkpoints, desc="checkpoints", unit="ckpt"):
        steps = int(path.stem.removeprefix("policy_"))
        if steps in done:
            rows.append(done[steps])
            continue
        row: dict[str, float] = {"env_steps": steps, "episodes": episodes}
        for mode, deterministic in (("mean", True), ("sampled", False)):
            result = evaluate_policy(path, episodes, deterministic=deterministic)
            row[f"success_{mode}"], row[f"return_{mode}"] = result["success_rate"], result["return"]
        rows.append(row)
    return rows


def plot(run: Path, rows: list[dict[str, float]], episodes: int, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    if (run / "metrics.csv").exists():
        own = read_rows(run / "metrics.csv")
        ax.plot([r["env_steps"] / 1000 for r in own], [100 * r["success_rate"] for r in own], color="0.7",
                marker="o", markersize=3, label="the run's own evaluations (mean action)")  # fmt: skip
    steps = [r["env_steps"] / 1000 for r in rows]
    for mode in ("mean", "sampled"):
        success = [100 * r[f"success_{mode}"] for r in rows]
        ax.plot(steps, success, marker="o", label=f"{episodes} episodes, {mode} action")
    ax.axhline(80, color="k", linestyle=":", linewidth=1, label="paper: 80 % at 200k")
    ax.set(xlabel="environment steps (k)", ylabel="success (%)", ylim=(-2, 102), title=run.name)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a msdp train output folder")
    parser.add_argument("--episodes", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = evaluate_run(args.run, args.episodes)
    write_rows(args.run / "checkpoint_eval.csv", rows)
    plot(args.run, rows, args.episodes, args.run / "checkpoint_eval.png")
    print("| steps | " + " | ".join(f"{r['env_steps'] // 1000}k" for r in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for mode in ("mean", "sampled"):
        print(f"| {mode} action | " + " | ".join(f"{100 * r[f'success_{mode}']:.0f} %" for r in rows) + " |")
    print(f"wrote {args.run / 'checkpoint_eval.csv'} and {args.run / 'checkpoint_eval.png'}")


if __name__ == "__main__":
    main()
