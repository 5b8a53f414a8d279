"""A fingerprint of the training loop: a fixed-seed 60-step `msdp train` on a small fixed encoder, and the sha256
of the transition log it writes. Run it on two checkouts (e.g. `git worktree add`) to show that a change kept
the loop's behaviour: the same digest means the same observations, actions, rewards and learning, step by step.

    .venv/bin/python scripts/train_log_digest.py [--out /tmp/digest]   # last line: train_log_sha256: <hex>
"""

import argparse
import hashlib
import tempfile
from pathlib import Path

import torch

from msdp.config import from_dict
from msdp_perception.checkpoint import save_encoder
from msdp_perception.model import MSDPConfig, MSDPModel
from msdp_policy.training import TrainConfig, train

SETTINGS = {
    "steps": 60,
    "random_steps": 20,
    "update_after": 20,
    "eval_every": 30,
    "eval_episodes": 1,
    "agent": {"hidden": 32, "batch_size": 16},
    "learner_process": False,
}  # in turn: the same updates on the same data at every step, so a digest exists


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="folder for the encoder and the run (default: a temporary one)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="msdp_digest_"))
    torch.set_num_threads(1)
    torch.manual_seed(0)
    encoder = save_encoder(out / "encoder", MSDPModel(MSDPConfig(stem_channels=8, width=32, decoder_width=32)))
    train(from_dict(TrainConfig, SETTINGS), encoder, out / "run", progress=False)
    digest = hashlib.sha256((out / "run" / "transitions" / "transitions.log").read_bytes()).hexdigest()
    print(f"run in {out / 'run'}")
    print(f"train_log_sha256: {digest}")


if __name__ == "__main__":
    main()
