"""Does bfloat16 autocast hold the losses? The same short MSDP pretraining (same data, seed and batches) in float32
and in bf16, and the held-out losses and time of each.

Usage: python bench/precision.py [--steps N] [--samples N] [--device auto|cpu|cuda]. Last line
``bf16_val_loss_ratio: r`` (bf16 held-out loss / float32's; near 1 means bf16 holds the loss).
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

from msdp.config import from_dict  # noqa: E402
from msdp.devices import DEVICES  # noqa: E402
from msdp_franka_driver.sim.collect import CollectConfig, collect_to_bags  # noqa: E402
from msdp_perception.pretrain import PretrainConfig, pretrain  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--samples", type=int, default=1200)
    parser.add_argument("--device", default="auto", choices=DEVICES)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="msdp-precision-") as tmp:
        bags = collect_to_bags(Path(tmp) / "bags", CollectConfig(samples=args.samples), progress=False)
        losses = {}
        for precision in ("fp32", "bf16"):
            config = from_dict(PretrainConfig, {"steps": args.steps, "val_every": args.steps, "device": args.device,
                                                "precision": precision, "warmup_steps": 50})  # fmt: skip
            started = time.perf_counter()
            summary = pretrain(bags, Path(tmp) / precision, config, progress=False)
            seconds = time.perf_counter() - started
            final = summary["final"]
            losses[precision] = final["val_loss"]
            per_modality = ", ".join(f"{m} {final[f'val_{m}']:.4f}" for m in ("vision", "ft", "proprio"))
            print(f"{precision}: held-out loss {final['val_loss']:.4f} ({per_modality}); {seconds:.0f} s "
                  f"for {args.steps} updates")  # fmt: skip
    print(f"bf16_val_loss_ratio: {losses['bf16'] / losses['fp32']:.3f}")


if __name__ == "__main__":
    main()
