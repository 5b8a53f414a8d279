"""What the driver node needs from a robot backend, real (libfranka) or simulated (mujoco)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass
class ArmSnapshot:
    """The latest robot state, as the driver node publishes it (base frame ``fr3_link0``, SI units)."""

    time: float  # s, the backend's clock (robot time or simulated time)
    q: np.ndarray  # 7 joint positions, rad
    dq: np.ndarray  # 7 joint velocities, rad/s
    tau: np.ndarray  # 7 measured joint torques, Nm
    position: np.ndarray  # end-effector (tool centre point) position, m
    orientation: np.ndarray  # end-effector orientation, quaternion x y z w
    wrench: np.ndarray  # force (N) and torque (Nm) on the tool, in the F/T sensor frame
    holding: bool  # True while the watchdog (or a reset) holds pose instead of following a target


class ArmBackend(Protocol):
    def start(self) -> None:
        """Connect (or build the scene) and hold the current pose."""

    def set_target(self, position: np.ndarray, orientation: np.ndarray) -> bool:
        """Hand a new equilibrium pose to the control loop; False if it was rejected (non-finite)."""

    def snapshot(self) -> ArmSnapshot:
        """The latest state; never blocks the control loop."""

    def recover(self) -> str:
        """Clear a robot error (automatic error recovery) and hold pose; returns a status message."""

    def stop(self) -> None:
        """Stop the control loop and release the robot."""
