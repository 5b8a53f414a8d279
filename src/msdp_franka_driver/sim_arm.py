"""The simulated Franka as an ``ArmBackend``: what the driver node drives when ``backend: mujoco``.

Unlike the real arm, nothing runs by itself: the driver node calls ``advance`` from its timer, and the
backend also provides what the real robot's separate sensor nodes would (camera image, wrist wrench).
"""

from __future__ import annotations

import numpy as np

from msdp_franka_driver.backend import ArmSnapshot
from msdp_franka_driver.env import EnvConfig, FrankaTaskEnv


class MujocoArm:
    def __init__(self, config: EnvConfig, seed: int = 0):
        self.env = FrankaTaskEnv(config)
        self.seed = seed
        self.episode = 0

    @property
    def sim(self):
        return self.env.sim

    def start(self) -> None:
        self.reset()

    def reset(self) -> str:
        """Re-randomise the scene (a new seed each time) and put the arm at the task's start pose."""
        seed = self.seed + self.episode
        self.env.reset(seed=seed)
        self.episode += 1
        return f"scene '{self.env.task.name}' reset (episode {self.episode}, seed {seed})"

    def advance(self, seconds: float) -> None:
        """Step physics (and the control law) by ``seconds`` of simulated time."""
        self.sim.step(max(1, round(seconds / self.sim.config.physics_dt)))

    def set_target(self, position: np.ndarray, orientation: np.ndarray) -> bool:
        return self.sim.set_target(position, orientation)

    def snapshot(self) -> ArmSnapshot:
        return self.sim.snapshot()

    def image(self) -> np.ndarray:
        return self.sim.render()

    def recover(self) -> str:
        """A simulated arm has no reflex errors; recovering just holds the current pose."""
        position, orientation = self.sim.tcp_pose()
        self.sim.controller.safety.hold(position, orientation)
        return "simulated arm: holding current pose"

    def stop(self) -> None:
        self.env.close()
