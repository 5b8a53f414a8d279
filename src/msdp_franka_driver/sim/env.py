"""Gym-style environment over the simulated Franka: the fast in-process loop for experiments.

One ``step`` is one policy step (10 Hz by default): the action becomes an impedance target
(current TCP pose + displacement), then 1 kHz physics runs with the control law until the next policy
step. Observations carry exactly what the real robot's sensor topics carry.
"""

from __future__ import annotations

import numpy as np

from msdp.specs import ObservationSpec
from msdp_franka_driver.control_law import HOME_Q, N_JOINTS
from msdp_franka_driver.sim.config import EnvConfig
from msdp_franka_driver.sim.physics import SimulatedFranka, scene_xml
from msdp_franka_driver.sim.scenes import make_scene
from msdp_policy.tasks import action_spec, target_after


class FrankaTaskEnv:
    """``reset(seed) -> (obs, info)``, ``step(action) -> (obs, reward, terminated, truncated, info)``.

    Observation dict: ``image`` (H, W, 3) uint8, ``wrench`` (window, 6) float32 (oldest first),
    ``proprio`` (14,) float32 = joint positions then velocities, ``ee_pose`` (7,) float32 = position then
    quaternion x y z w. Deterministic for a given seed.
    """

    def __init__(self, config: EnvConfig | None = None):
        self.config = config or EnvConfig()
        self.task = make_scene(self.config.task)
        self.action_spec = action_spec(self.config.task)
        xml = scene_xml(self.task.tool_xml(), self.task.objects_xml(), self.task.tool_mass, self.task.tool_com)
        self.sim = SimulatedFranka(xml, self.config.impedance, self.config.safety, self.config.sim)
        self.sim.wrench_noise_std = self.config.task.ft_noise_std
        self.action_dim = self.task.action_dim
        sim = self.config.sim
        self.observation_spec = ObservationSpec(image_size=sim.image_size, ft_window=sim.wrench_window, joints=N_JOINTS)
        self.physics_steps_per_action = round(1.0 / (self.config.task.control_rate * self.config.sim.physics_dt))
        self.rng = np.random.default_rng(0)
        self.steps = 0

    def reset(self, seed: int | None = None) -> tuple[dict[str, np.ndarray], dict]:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.sim.rng = np.random.default_rng(self.rng.integers(2**63))
        self.sim.reset(np.array(HOME_Q))
        position, orientation = self.task.randomize(self.sim, self.rng, self.config.task)
        q = self.sim.solve_ik(position, orientation, np.array(HOME_Q))
        object_qpos = self.sim.data.qpos[N_JOINTS:].copy()
        self.sim.reset(q)
        self.sim.data.qpos[N_JOINTS:] = object_qpos
        self.sim.step(20)  # let contacts and the rate limiter settle
        self.steps = 0
        return self.observation(), {"success": False, **self.task.privileged_state(self.sim)}

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        action = np.asarray(action, dtype=float)
        if action.shape != (self.action_dim,):
            raise ValueError(
                f"action must have shape ({self.action_dim},) for task {self.task.name}, got {action.shape}"
            )
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action must be finite, got {action}")
        position, orientation = self.sim.tcp_pose()
        self.sim.set_target(*target_after(position, orientation, action, self.action_spec))
        self.sim.step(self.physics_steps_per_action)
        self.steps += 1
        score = self.task.score(self.sim)
        terminated = score.success or score.failed
        truncated = not terminated and self.steps >= self.config.task.max_episode_steps
        info = {
            "success": score.success,
            "failed": score.failed,
            "goal_error": score.goal_error,  # m still to go (Score.goal_error)
            **self.task.privileged_state(self.sim),
        }
        return self.observation(), score.reward, terminated, truncated, info

    def observation(self) -> dict[str, np.ndarray]:
        image = self.sim.render()
        if self.config.task.image_noise_std > 0.0:
            noisy = image + self.sim.rng.normal(0.0, self.config.task.image_noise_std, image.shape)
            image = np.clip(noisy, 0, 255).astype(np.uint8)
        position, orientation = self.sim.tcp_pose()
        data = self.sim.data
        return {
            "image": image,
            "wrench": np.array(self.sim.wrench_window, dtype=np.float32),
            "proprio": np.concatenate([data.qpos[:N_JOINTS], data.qvel[:N_JOINTS]]).astype(np.float32),
            "ee_pose": np.concatenate([position, orientation]).astype(np.float32),
        }

    def scripted_action(self) -> np.ndarray:
        """The task's privileged expert action (peg insertion only for now)."""
        expert = getattr(self.task, "scripted_action", None)
        if expert is None:
            raise NotImplementedError(f"task {self.task.name} has no scripted policy")
        return expert(self.sim)

    def close(self) -> None:
        self.sim.close()
