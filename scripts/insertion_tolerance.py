"""Diagnostic: how far off the hole's axis, and how far turned, can the peg be and still go in when pushed down?

A policy on camera embeddings knows the hole only to a few millimetres (see probe_embedding.py); this measures
what the task forgives. The peg hovers 1 cm above the hole at a lateral offset (in six directions) and a yaw
error, then is pushed down for 3 s with its lateral target held at the offset: a passive policy, so what goes in
is guided by the chamfer and the impedance spring alone. Prints the share that went in, per offset and yaw.
``--clearance`` and ``--chamfer`` override the task's geometry to compare designs. Not part of the product:

    .venv/bin/python scripts/insertion_tolerance.py
    .venv/bin/python scripts/insertion_tolerance.py --clearance 0.003 --chamfer 0
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from msdp_franka_driver.sim import scenes
from msdp_franka_driver.sim.config import EnvConfig
from msdp_franka_driver.sim.env import FrankaTaskEnv
from msdp_policy import tasks

DIRECTIONS = 6


def pushed_in(env: FrankaTaskEnv, seed: int, offset: np.ndarray, yaw: float) -> bool:
    """Hover at ``offset`` from the hole's axis turned by ``yaw`` from the hole, then push straight down."""
    config = env.config.task
    env.reset(seed=seed)
    hole = env.task.privileged_state(env.sim)["hole_position"]
    hover = hole + np.array([*offset, tasks.HOLE_DEPTH + 0.01])
    for step in range(60):
        tip, _ = env.sim.tcp_pose()
        dz = -0.5 * config.max_step if step >= 30 else hover[2] - tip[2]
        lateral = hover[:2] - tip[:2]
        turn = (env.task.yaw_error(env.sim) + yaw) / config.max_yaw_step
        action = np.clip([*(lateral / config.max_step), dz / config.max_step, turn], -1.0, 1.0)
        _, _, terminated, _, info = env.step(action)
        if info["success"]:
            return True
        if terminated:
            return False
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clearance", type=float, default=tasks.HOLE_CLEARANCE, help="m, on the inradius")
    parser.add_argument("--chamfer", type=float, default=scenes.HOLE_CHAMFER, help="m, 45 degree lead-in")
    parser.add_argument("--offsets-mm", default="0,3,5,7,9")
    parser.add_argument("--yaws", default="0,0.1")
    args = parser.parse_args()
    tasks.HOLE_CLEARANCE, scenes.HOLE_CHAMFER = args.clearance, args.chamfer  # read when the scene is built
    env = FrankaTaskEnv(EnvConfig(task=tasks.TaskConfig(hole_yaw_range=0.0)))
    offsets = [float(v) for v in args.offsets_mm.split(",")]
    print(f"clearance {1e3 * args.clearance:.0f} mm, chamfer {1e3 * args.chamfer:.0f} mm: "
          f"share of {DIRECTIONS} directions that went in")  # fmt: skip
    print("yaw error (rad) | " + " | ".join(f"{v:.0f} mm" for v in offsets))
    for yaw in (float(v) for v in args.yaws.split(",")):
        cells = []
        for offset in offsets:
            angles = np.linspace(0.0, 2 * math.pi, DIRECTIONS, endpoint=False)
            went_in = [
                pushed_in(env, seed, 1e-3 * offset * np.array([math.cos(a), math.sin(a)]), yaw)
                for seed, a in enumerate(angles)
            ]
            cells.append(f"{sum(went_in)}/{DIRECTIONS}")
        print(f"{yaw:.2f} | " + " | ".join(cells), flush=True)
    env.close()


if __name__ == "__main__":
    main()
