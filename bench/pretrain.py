"""Pretraining speed: MSDP updates per second at batch 64 (paper model sizes) on this machine's CPU cores.

Usage: python bench/pretrain.py [--objective reconstruction|prediction] [--steps N] [--samples N]
[--device auto|cpu|cuda] [--precision fp32|bf16].
Collects a small random-action recording, then times full updates (batch assembly from the decoded bag,
forward, backward, AdamW step) after a few warm-up updates. The figure is per update, so a 30,000-update
run takes 30,000 / N seconds.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from msdp.config import from_dict  # noqa: E402
from msdp.devices import DEVICES, PRECISIONS, autocast, resolve_device  # noqa: E402
from msdp_franka_driver.sim.collect import CollectConfig, collect_to_bags  # noqa: E402
from msdp_perception.dataset import BagDataset  # noqa: E402
from msdp_perception.model import MSDPConfig, MSDPModel  # noqa: E402
from msdp_perception.pretrain import SampleSource, fit_normalizer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objective", default="reconstruction", choices=("reconstruction", "prediction"))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    args = parser.parse_args()
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="msdp-bench-") as tmp:
        paths = collect_to_bags(Path(tmp) / "bags", CollectConfig(samples=args.samples), progress=False)
        dataset = BagDataset(paths, progress=False)
    indices = np.flatnonzero(dataset.next_index >= 0)
    source = SampleSource(dataset, indices, device)
    model = MSDPModel(from_dict(MSDPConfig, {"objective": args.objective}))
    fit_normalizer(model, dataset, indices)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    rng = np.random.default_rng(0)

    def update() -> torch.Tensor:
        with autocast(device, args.precision):
            loss = model(source.sample(rng, args.batch_size))["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    for _ in range(5):
        update()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = update()
    float(loss)  # wait for the device
    elapsed = time.perf_counter() - start
    parameters = sum(p.numel() for p in model.parameters())
    print(f"objective: {args.objective}  batch: {args.batch_size}  parameters: {parameters / 1e6:.2f} M")
    print(f"device: {device}  precision: {args.precision}  torch threads: {torch.get_num_threads()}  "
          f"ms per update: {1e3 * elapsed / args.steps:.1f}")  # fmt: skip
    print(f"30,000 updates would take {30000 * elapsed / args.steps / 60:.0f} min")
    print(f"pretrain_steps_per_s: {args.steps / elapsed:.2f}")


if __name__ == "__main__":
    main()
