"""Encoder latency at batch 1: from a complete observation to the packed embedding (what the node publishes).

Usage: python bench/encoder_latency.py [--checkpoint encoder.safetensors] [--samples N]. Without a checkpoint
the paper-sized model has random weights (latency does not depend on the weights). Each sample times the sync
rule assembling the observation, the frozen encoder (tokenise, 2 transformer layers over 66 tokens, pooling)
and packing the rows of /msdp/embedding. Goal: p99 <= 5 ms.
"""

import argparse
import os
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from msdp_franka_driver.sim.env import FrankaTaskEnv  # noqa: E402
from msdp_perception.encoder import FrozenEncoder, pack_embedding  # noqa: E402
from msdp_perception.model import MSDPModel  # noqa: E402
from msdp_perception.observation import SensorSynchronizer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", help="encoder checkpoint (default: random weights, paper sizes)")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the node leaves cores to others)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    encoder = FrozenEncoder.load(args.checkpoint) if args.checkpoint else FrozenEncoder(MSDPModel())
    env = FrankaTaskEnv()
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    observations = []
    for _ in range(20):  # a few distinct real observations, cycled
        observations.append(obs)
        obs, *_ = env.step(rng.uniform(-1, 1, env.action_dim))
    env.close()

    timings = []
    for i in range(args.samples + 50):
        o = observations[i % len(observations)]
        t = float(i) * 0.1
        start = time.perf_counter()
        sync = SensorSynchronizer()
        sync.add_image(t, o["image"])
        for k, reading in enumerate(o["wrench"]):
            sync.add_wrench(t - 0.01 * (len(o["wrench"]) - 1 - k), reading)
        sync.add_joint_state(t, o["proprio"])
        observation = sync.observe(t)
        rows = pack_embedding(encoder.encode(observation))
        if i >= 50:  # warm-up excluded
            timings.append(time.perf_counter() - start)
    assert observation.complete and np.isfinite(rows).all()
    ms = np.array(timings) * 1e3
    print(f"samples: {len(ms)}  torch threads: {torch.get_num_threads()}  embedding rows: {rows.shape}")
    print(f"encoder_p50_ms: {np.percentile(ms, 50):.2f}  mean: {ms.mean():.2f}  max: {ms.max():.2f}")
    print(f"encoder_p99_ms: {np.percentile(ms, 99):.2f}")


if __name__ == "__main__":
    main()
