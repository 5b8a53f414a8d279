"""Pretraining speed: MSDP updates per second at batch 64 (paper model sizes) on this machine's CPU cores.

Usage: python bench/pretrain.py [--objective reconstruction|prediction] [--steps N] [--samples N]
[--device auto|cpu|cuda] [--precision fp32|bf16] [--profile N].
Collects a small random-action recording, then times full updates (batch assembly from the decoded bag,
forward, backward, AdamW step: ``pretrain``'s own model, optimiser and update) after a few warm-up updates.
The figure is per update, so a 30,000-update run takes 30,000 / N seconds. The floating-point operations of
one update (counted by torch's FlopCounterMode) over its time give the GFLOP/s achieved, to compare with what
the cores do on a plain matmul (bench/limits.py). ``--profile N`` profiles N more updates: the time in matmul,
convolution and AdamW kernels (the bound they set; batch assembly included in the timed updates, not in it) and
the operators taking the most time.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from limits import kernel_floor_ms, matmul_gflops  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from msdp.config import from_dict  # noqa: E402
from msdp.devices import DEVICES, PRECISIONS, resolve_device  # noqa: E402
from msdp_franka_driver.sim.collect import CollectConfig, collect_to_bags  # noqa: E402
from msdp_perception.dataset import BagDataset  # noqa: E402
from msdp_perception.model import MSDPConfig, MSDPModel  # noqa: E402
from msdp_perception.pretrain import PretrainConfig, SampleSource, training_model, update  # noqa: E402


def update_flops(config: MSDPConfig, batch: dict[str, torch.Tensor]) -> float:
    """Floating-point operations of one update's forward and backward pass, counted on an eager float32 copy
    of the model (they depend on the sizes, not on the weights, the precision or compilation)."""
    with FlopCounterMode(display=False) as counter:
        MSDPModel(config)({k: v.cpu() for k, v in batch.items()})["loss"].backward()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objective", default="reconstruction", choices=("reconstruction", "prediction"))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    parser.add_argument("--profile", type=int, default=0, help="profile this many more updates")
    args = parser.parse_args()
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="msdp-bench-") as tmp:
        paths = collect_to_bags(Path(tmp) / "bags", CollectConfig(samples=args.samples), progress=False)
        dataset = BagDataset(paths, progress=False)
    indices = np.flatnonzero(dataset.next_index >= 0)
    config = from_dict(PretrainConfig, {"model": {"objective": args.objective}, "precision": args.precision})
    source = SampleSource(dataset, indices, device, successors=args.objective == "prediction")
    model, optimizer = training_model(config, dataset, indices, device)
    rng = np.random.default_rng(0)

    def step() -> torch.Tensor:
        return update(model, optimizer, source.sample(rng, args.batch_size), args.precision)["loss"].detach()

    for _ in range(5):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    float(loss)  # wait for the device
    elapsed = time.perf_counter() - start
    if args.profile:
        floor_ms = kernel_floor_ms(lambda: float(step()), args.profile, device)
        print(f"those kernels alone take {floor_ms:.0f} ms: at most {1e3 / floor_ms:.1f} updates/s with these kernels")
    gflop = update_flops(config.model, source.sample(rng, args.batch_size)) / 1e9
    parameters = sum(p.numel() for p in model.parameters())
    print(f"objective: {args.objective}  batch: {args.batch_size}  parameters: {parameters / 1e6:.2f} M")
    print(f"device: {device}  precision: {args.precision}  torch threads: {torch.get_num_threads()}  "
          f"ms per update: {1e3 * elapsed / args.steps:.1f}")  # fmt: skip
    peak = matmul_gflops(device, args.precision)
    print(f"{gflop:.1f} GFLOP per update (forward + backward): {gflop * args.steps / elapsed:.0f} GFLOP/s achieved; "
          f"a 1024^3 matmul runs at {peak:.0f} GFLOP/s here, so the arithmetic alone allows at most "
          f"{peak / gflop:.1f} updates/s")  # fmt: skip
    print(f"30,000 updates would take {30000 * elapsed / args.steps / 60:.0f} min")
    print(f"pretrain_steps_per_s: {args.steps / elapsed:.2f}")


if __name__ == "__main__":
    main()
