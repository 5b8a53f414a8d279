"""``msdp offline-log`` with task settings: RLPD's offline data scored with the reward the run trains on.

``msdp offline-log`` scores bags with the default task (shaped reward). A run with ``--set
env.task.reward=sparse`` needs its offline data scored the same way, or half of every batch carries another
reward. A diagnostic for the real-robot protocol study, not part of the product:

    .venv/bin/python scripts/real_protocol_offline_log.py --bags runs/exp15/demos runs/exp15/play \
        --encoder runs/exp15/pretrain/encoder.safetensors --out runs/exp15/offline_sparse --set reward=sparse
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from msdp.cli import parse_override
from msdp.config import from_dict
from msdp_policy.offline import offline_log_from_bags
from msdp_policy.tasks import TaskConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bags", nargs="+", required=True)
    parser.add_argument("--encoder", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a TaskConfig field")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task = from_dict(TaskConfig, {"name": "peg", **dict(parse_override(text) for text in args.set)}, prefix="task.")
    counts = offline_log_from_bags([Path(b) for b in args.bags], Path(args.encoder), Path(args.out), task)
    steps, episodes, successes = counts["steps"], counts["episodes"], counts["successes"]
    print(f"{steps} steps, {episodes} episodes, {successes} successes; reward {task.reward}")


if __name__ == "__main__":
    main()
