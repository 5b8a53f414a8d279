"""What the driver node needs from a robot backend, real (libfranka) or simulated (``sim.backend``).

The node never asks which kind it drives: a backend that is a whole simulated cell also implements
``SimulatedCell`` (it keeps the clock and serves the camera and the task goal that a real cell's own nodes
and operator provide), and the node publishes those when the backend offers them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from msdp_franka_driver.control_law import GAIN_NAMES, ImpedanceConfig


@dataclass
class ArmSnapshot:
    """The latest robot state, as the driver node publishes it (base frame ``fr3_link0``, SI units)."""

    time: float  # s, the backend's clock (robot time or simulated time)
    q: np.ndarray  # 7 joint positions, rad
    dq: np.ndarray  # 7 joint velocities, rad/s
    tau: np.ndarray  # 7 measured joint torques, Nm
    position: np.ndarray  # end-effector (tool centre point) position, m
    orientation: np.ndarray  # end-effector orientation, quaternion x y z w
    wrench: np.ndarray  # force (N) and torque (Nm) on the tool: libfranka's estimate K_F_ext_hat_K, or the
    # simulated wrist sensor; in the backend's ``wrench_frame``
    holding: bool  # True while the watchdog (or a reset) holds pose instead of following a target
    hand_guiding: bool  # True while a person may move the arm by hand (low gains, the equilibrium follows it)


class ArmBackend(Protocol):
    name: str  # "mujoco", "libfranka": the hardware id in diagnostics
    wrench_frame: str  # the frame of ``ArmSnapshot.wrench`` (published on /franka/external_wrench)

    def start(self) -> None:
        """Connect (or build the scene) and hold the current pose."""

    def set_target(self, position: np.ndarray, orientation: np.ndarray) -> bool:
        """Hand a new equilibrium pose to the control loop; False if it was refused (non-finite, or a fault)."""

    def set_gains(self, impedance: ImpedanceConfig) -> None:
        """Take ``impedance``'s run-time gains (``control_law.GAIN_NAMES``), ramped over its ``gain_ramp_time``
        in the control loop; its other fields are fixed at start-up."""

    def hand_guide(self, on: bool) -> str:
        """Start (the gains ramp down to the hand-guiding ones, the equilibrium follows the arm, targets are
        refused) or end hand guiding (hold the pose the arm is at, ramp back up); a status message.

        A fault ends hand guiding: after ``recover`` the arm holds its pose with the run-time gains."""

    def advance(self, wall_seconds: float) -> list[ArmSnapshot]:
        """Let ``wall_seconds`` of wall time pass; return the states to publish since the last call.

        A real arm runs by itself (its latest state); a simulated one steps physics for the time owed."""

    def snapshot(self) -> ArmSnapshot:
        """The latest state; never blocks the control loop."""

    def reset(self) -> str:
        """Start a new episode (simulation: a new random scene; real arm: back to the start pose)."""

    def fault(self) -> str:
        """Empty while the arm follows targets; otherwise what stopped it (``recover`` clears it)."""

    def recover(self) -> str:
        """Clear a robot error (automatic error recovery) and hold pose; returns a status message."""

    def diagnostics(self) -> dict[str, str]:
        """Control-loop health as key -> value (periods, lost cycles, rejected targets, ...)."""

    def stop(self) -> None:
        """Stop the control loop and release the robot."""


@runtime_checkable
class SimulatedCell(Protocol):
    """A backend that simulates the whole cell: its clock stamps everything (``/clock``), and it renders the
    camera and knows the episode's goal."""

    def image(self) -> np.ndarray:
        """The third-person camera's current RGB image (H, W, 3) uint8."""

    def task_goal(self) -> tuple[np.ndarray, float] | None:
        """The episode's goal pose (position, yaw about z), or None when the task has no fixed goal."""

    def set_hand_force(self, force: np.ndarray) -> None:
        """A simulated hand: push the tool with ``force`` (N, base frame) until told otherwise."""


def gain_diagnostics(gains: np.ndarray) -> dict[str, str]:
    """The gains the control law uses this cycle (ramping after a change, low while hand guiding), by name."""
    return {name: f"{value:.4g}" for name, value in zip(GAIN_NAMES, gains.tolist(), strict=True)}
