"""The whole fast loop: environment steps per second of `msdp train` at update-to-data ratio 2, learning included.

Usage: python bench/train_loop.py [--steps N] [--update-after N] [--in-turn] [--threads N] [--precision fp32|bf16]
[--device auto|cpu|cuda]. A fresh default-size encoder (random weights: the cost is the same as a pretrained
one's) and the default agent (batch 256, two critics, cross-attention bridge) run peg for ``--steps`` steps. The
figure is the steady state: environment steps per second from ``--update-after`` (where learning starts) to
``--steps`` (at most twice that, so no evaluation falls in between), from the run's own metrics.csv; the final
evaluation episode (100 steps) is inside the window, so the figure errs low by a few per cent. ``--in-turn`` runs
acting and learning one after the other in one process (``learner_process: false``, the default); it also prints
what acting alone (the random-action phase) and learning each take per step, the two terms of the loop's time.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import torch  # noqa: E402

from msdp.config import from_dict  # noqa: E402
from msdp.devices import DEVICES, PRECISIONS  # noqa: E402
from msdp.metrics import read_rows  # noqa: E402
from msdp_perception.checkpoint import save_encoder  # noqa: E402
from msdp_perception.model import MSDPConfig, MSDPModel  # noqa: E402
from msdp_policy.training import TrainConfig, train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--update-after", type=int, default=1000)
    parser.add_argument("--in-turn", action="store_true", help="one process, acting and learning in turn")
    parser.add_argument("--threads", type=int, default=1, help="the learner's torch threads")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    parser.add_argument("--device", default="cpu", choices=DEVICES)
    args = parser.parse_args()
    if not args.update_after < args.steps <= 2 * args.update_after:
        parser.error("--steps must be above --update-after and at most twice it")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="msdp-train-loop-") as tmp:
        encoder = save_encoder(Path(tmp) / "encoder", MSDPModel(MSDPConfig()))
        config = from_dict(TrainConfig, {
            "steps": args.steps, "random_steps": args.update_after, "update_after": args.update_after,
            "eval_every": args.update_after, "eval_episodes": 1, "torch_threads": args.threads,
            "device": args.device, "learner_process": not args.in_turn, "agent": {"precision": args.precision},
        })  # fmt: skip
        run = Path(tmp) / "run"
        started = time.monotonic()
        train(config, encoder, run, progress=False)
        total = time.monotonic() - started
        rows = {int(r["env_steps"]): r for r in read_rows(run / "metrics.csv")}
    start, first, last = rows[0], rows[args.update_after], rows[args.steps]
    steady = (args.steps - args.update_after) / (last["wall_s"] - first["wall_s"])
    acting = args.update_after / (first["wall_s"] - start["wall_s"])
    print(f"{args.steps} steps in {total:.0f} s (start-up and {len(rows)} evaluation episodes included)")
    print(f"acting alone (random actions before {args.update_after}, no learning, one evaluation episode inside): "
          f"{acting:.1f} steps/s")  # fmt: skip
    if args.in_turn:  # each step is acting, then two updates: what is left of the step's time is learning
        learning_ms = 1e3 * (1 / steady - 1 / acting)
        print(f"learning: {learning_ms:.1f} ms per environment step, {2e3 / learning_ms:.1f} updates/s")
    print(f"learner: {'in turn, one process' if args.in_turn else 'own process'}, {args.threads} torch thread(s), "
          f"{args.precision}, {args.device}")  # fmt: skip
    print(f"critic updates: {int(last['critic_updates'])} for {args.steps} steps (ratio 2 after {args.update_after})")
    print(f"train_env_steps_per_s: {steady:.1f}")


if __name__ == "__main__":
    main()
