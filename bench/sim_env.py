"""Environment steps per second: peg task, 64x64 camera, 10 Hz policy, 1 kHz physics, on one core.

Usage: python bench/sim_env.py [--steps N]. Random actions; episode resets are included in the time.
"""

import argparse
import os
import time

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from msdp_franka_driver.sim.env import FrankaTaskEnv  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    env = FrankaTaskEnv()
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    env.step(rng.uniform(-1, 1, env.action_dim))  # warm up the renderer
    start = time.perf_counter()
    episodes = 0
    for _ in range(args.steps):
        _, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, env.action_dim))
        if terminated or truncated:
            episodes += 1
            env.reset(seed=episodes)
    elapsed = time.perf_counter() - start
    env.close()
    print(f"steps: {args.steps}  episodes: {episodes}  seconds: {elapsed:.2f}")
    print(f"ms per step: {1e3 * elapsed / args.steps:.2f} (100 physics steps + control law + 64x64 render)")
    print(f"env_steps_per_s: {args.steps / elapsed:.1f}")


if __name__ == "__main__":
    main()
