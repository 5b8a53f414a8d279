"""Bag decoding speed: samples per second BagDataset turns an MCAP recording into synchronised arrays.

Usage: python bench/bag_read.py [--samples N]. Records N samples of the peg task with the fast collector
(random actions) into a temporary folder, then times BagDataset without a cache (read, deserialise,
convert, synchronise) and the reload from its cache file.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from msdp_franka_driver.sim.collect import CollectConfig, collect_to_bags  # noqa: E402
from msdp_perception.dataset import BagDataset  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="msdp-bench-") as tmp:
        start = time.perf_counter()
        paths = collect_to_bags(Path(tmp) / "bags", CollectConfig(samples=args.samples), progress=False)
        collect_s = time.perf_counter() - start
        size = sum(f.stat().st_size for p in paths for f in p.iterdir())

        start = time.perf_counter()
        data = BagDataset(paths, progress=False)
        decode_s = time.perf_counter() - start
        BagDataset(paths, cache_dir=Path(tmp) / "cache", progress=False)
        start = time.perf_counter()
        cached = BagDataset(paths, cache_dir=Path(tmp) / "cache", progress=False)
        cached_s = time.perf_counter() - start
        assert cached.from_cache and len(cached) == len(data)

    per_sample = size / len(data) / 1e3
    print(f"samples: {len(data)}  bags: {len(paths)}  on disk: {size / 1e6:.1f} MB ({per_sample:.1f} kB/sample)")
    print(f"collect: {collect_s:.1f} s = {args.samples / collect_s:.0f} samples/s (simulation + writing)")
    print(f"decode (no cache): {decode_s:.2f} s; reload from cache: {cached_s:.3f} s")
    print(f"bag_samples_per_s: {len(data) / decode_s:.0f}")


if __name__ == "__main__":
    main()
