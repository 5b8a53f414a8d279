"""The simulated Franka as an ``ArmBackend`` and a ``SimulatedCell``: what the driver node drives when
``backend: mujoco``.

Unlike the real arm, nothing runs by itself: the driver node calls ``advance`` from its timer, and the
backend steps physics for the simulated time owed (``real_time_factor`` simulated seconds per wall second),
in steps of one state period. Like a real arm it stops on a reflex: when the force on the tool exceeds
``sim.reflex_force`` it holds its pose and refuses targets until ``recover`` (a reflex also ends hand guiding).
With a ``VirtualCell`` it also serves its camera (every ``camera_period`` of simulated time) and every F/T sample
over the real devices' protocols. ``set_hand_force`` stands in for a person's hand on the tool (hand guiding
rehearsed and tested without one).
"""

from __future__ import annotations

import numpy as np

from msdp import vocabulary as vocab
from msdp_franka_driver.backend import ArmSnapshot, gain_diagnostics
from msdp_franka_driver.control_law import HandGuidingConfig, ImpedanceConfig
from msdp_franka_driver.sim.config import EnvConfig, VirtualCellConfig
from msdp_franka_driver.sim.env import FrankaTaskEnv


class MujocoArm:
    name = "mujoco"
    wrench_frame = vocab.FT_FRAME  # the simulated wrist sensor stands in for the robot's own estimate

    def __init__(
        self,
        config: EnvConfig,
        seed: int = 0,
        state_period: float = 0.01,
        real_time_factor: float = 1.0,
        virtual_cell: VirtualCellConfig | None = None,
        camera_period: float = 0.1,
        hand_guiding: HandGuidingConfig | None = None,
    ):
        self.env = FrankaTaskEnv(config)
        self.hand_guiding = hand_guiding or HandGuidingConfig()
        self.virtual_cell = None
        if virtual_cell is not None:
            from msdp_franka_driver.sim.virtual_cell import VirtualCell

            try:
                self.virtual_cell = VirtualCell(virtual_cell)
            except OSError as exc:
                self.env.close()
                raise RuntimeError(f"virtual cell: cannot serve on {virtual_cell.host} ({exc})") from exc
        self.camera_period = camera_period
        self.next_frame_time = 0.0
        self.served_samples = 0
        self.seed = seed
        self.episode = 0
        self.state_period = state_period
        self.real_time_factor = real_time_factor
        self.time_owed = 0.0  # s of simulated time the wall clock is ahead by
        self._fault = ""

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

    def advance(self, wall_seconds: float) -> list[ArmSnapshot]:
        self.time_owed += self.real_time_factor * wall_seconds
        period = self.state_period
        snapshots = []
        while self.time_owed >= period / 2:
            self.time_owed -= period
            self.sim.step(max(1, round(period / self.sim.config.physics_dt)))
            snapshot = self.sim.snapshot()
            self._check_reflex(snapshot)
            snapshots.append(snapshot)
            if self.virtual_cell is not None:
                self._serve(snapshot.time)
        return snapshots

    def _serve(self, now: float) -> None:
        """The virtual cell's sensors: the F/T samples taken since the last call, and a camera frame when due."""
        sim = self.sim
        new = min(sim.wrench_samples - self.served_samples, len(sim.wrench_window))
        for reading in list(sim.wrench_window)[len(sim.wrench_window) - new :]:
            self.virtual_cell.wrench(reading)
        self.served_samples = sim.wrench_samples
        if now >= self.next_frame_time - 1e-9:
            self.virtual_cell.camera(sim.render())
            self.next_frame_time = now + self.camera_period

    def _check_reflex(self, snapshot: ArmSnapshot) -> None:
        limit = self.sim.config.reflex_force
        force = float(np.linalg.norm(snapshot.wrench[:3]))
        if limit > 0 and force > limit and not self._fault:
            self._fault = f"cartesian_reflex: {force:.1f} N on the tool (limit sim.reflex_force {limit} N)"
            self.sim.controller.hand_guide(None)
            self._hold()

    def _hold(self) -> None:
        position, orientation = self.sim.tcp_pose()
        self.sim.controller.safety.hold(position, orientation)

    def set_target(self, position: np.ndarray, orientation: np.ndarray) -> bool:
        if self._fault:
            return False
        return self.sim.set_target(position, orientation)

    def set_gains(self, impedance: ImpedanceConfig) -> None:
        self.sim.controller.set_gains(impedance.gains())

    def hand_guide(self, on: bool) -> str:
        if on and self._fault:
            return f"cannot hand guide: the arm is stopped ({self._fault})"
        self.sim.controller.hand_guide(self.hand_guiding if on else None)
        if on:
            return "hand guiding: the gains ramp down, the arm follows a hand (here sim.hand_force); targets ignored"
        return "hand guiding ended: holding the pose the arm is at, the gains ramp back up"

    def set_hand_force(self, force: np.ndarray) -> None:
        self.sim.set_hand_force(force)

    def snapshot(self) -> ArmSnapshot:
        return self.sim.snapshot()

    def fault(self) -> str:
        return self._fault

    def recover(self) -> str:
        """Clear a reflex and hold the current pose (a simulated arm has nothing else to reset)."""
        cleared, self._fault = self._fault, ""
        self._hold()
        return (
            f"recovered from {cleared}; holding the current pose" if cleared else "no fault; holding the current pose"
        )

    def diagnostics(self) -> dict[str, str]:
        controller = self.sim.controller
        return {
            "rejected_targets": str(controller.safety.rejected),
            "sim_time_s": f"{self.sim.time:.3f}",
            **gain_diagnostics(controller.ramp.value),
        }

    def image(self) -> np.ndarray:
        return self.sim.render()

    def task_goal(self) -> tuple[np.ndarray, float] | None:
        return self.env.task.goal_pose(self.env.task.privileged_state(self.sim))

    def stop(self) -> None:
        if self.virtual_cell is not None:
            self.virtual_cell.close()
        self.env.close()
