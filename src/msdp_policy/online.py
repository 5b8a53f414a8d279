"""Online episodes on the arm, without ROS: what the policy node does with each embedding.

One ``step`` per embedding (10 Hz): score the pose the previous action led to (the same task code as the
fast loop), log that transition, end the episode at success, at the operator's mark or at the step limit,
otherwise ask the actor -- or take the operator's action while the operator has taken over, flagging the step
as an intervention -- for a displacement and turn it into an impedance target inside the workspace box. The
actor can be replaced at any time by assigning ``actor`` (one reference: the next step uses the new weights).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from msdp.seeding import seed_run
from msdp_perception.encoder import unpack_embedding
from msdp_policy.agent import Actor
from msdp_policy.episodes import EpisodeResult
from msdp_policy.replay import embedding_record, final_record, step_record
from msdp_policy.tasks import TaskConfig, action_spec, make_task, target_after
from msdp_policy.transition_log import TransitionWriter


@dataclass
class StepResult:
    target: tuple[np.ndarray, np.ndarray] | None  # (position, orientation x y z w) to command, None at an end
    reward: float | None  # reward of the previous action, None on an episode's first step
    result: EpisodeResult | None = None  # set when this step ended the episode
    action: np.ndarray | None = None  # the action in [-1, 1] that gave the target


class BadInput(ValueError):
    """A step or a goal that must not reach the log or the arm (non-finite values); the step is skipped."""


class OnlineEpisodes:
    """Runs episodes and logs them in ``writer`` (records as in ``replay.transition_schema``, msdp_frozen).

    ``workspace`` is the (min, max) corner of the box, in the base frame, that every target is clipped into.
    """

    def __init__(
        self,
        task: TaskConfig,
        workspace: tuple[tuple[float, float, float], tuple[float, float, float]],
        writer: TransitionWriter,
        actor: Actor | None,
        deterministic: bool = False,
        random_steps: int = 0,
        seed: int = 0,
    ):
        self.task_config, self.task, self.action_spec = task, make_task(task), action_spec(task)
        self.low, self.high = np.array(workspace[0]), np.array(workspace[1])
        self.writer, self.actor = writer, actor
        self.deterministic, self.random_steps = deterministic, random_steps
        self.rng = seed_run(seed)
        self.next_episode = time.time_ns()  # unique across restarts, so episodes never link over a restart
        self.episode: int | None = None
        self.goal_state: dict[str, np.ndarray] = {}
        self.pending: tuple[dict[str, np.ndarray], np.ndarray, bool] | None = None  # observation, action, operator's
        self.steps = 0
        self.episode_return = 0.0
        self.interventions = 0
        self.episodes_done = 0
        self.successes = 0

    @property
    def running(self) -> bool:
        return self.episode is not None

    def start_episode(self, goal_state: dict[str, np.ndarray]) -> None:
        if not all(np.all(np.isfinite(value)) for value in goal_state.values()):
            raise BadInput(f"non-finite goal {goal_state}")
        self.episode, self.next_episode = self.next_episode, self.next_episode + 1
        self.goal_state, self.pending, self.steps = goal_state, None, 0
        self.episode_return, self.interventions = 0.0, 0

    def abort(self, ended_by: str = "abort") -> EpisodeResult:
        """End the running episode without scoring or logging its last step (the arm stopped under it, or the
        operator aborted: no transition may cross the stop). Its logged steps stay; the last one has no
        successor, so it is never sampled."""
        result = self._result(False, ended_by)
        self.episode, self.pending = None, None
        return result

    def _result(self, success: bool, ended_by: str) -> EpisodeResult:
        return EpisodeResult(self.episode or 0, success, ended_by, self.steps, self.episode_return,
                             self.interventions, log_records=self.writer.count)  # fmt: skip

    def step(self, rows: np.ndarray, position: np.ndarray, orientation: np.ndarray,
             operator_action: np.ndarray | None = None, mark: str = "") -> StepResult:  # fmt: skip
        """One embedding (the packed rows of /msdp/embedding) and the end-effector pose at the same time.

        ``operator_action``: the operator has taken over, act with this instead of the actor. ``mark``: the
        operator's "success" or "failure" since the last step, ending the episode here with that outcome."""
        if not self.running:
            raise RuntimeError("no episode running: call start_episode first")
        if not (np.all(np.isfinite(position)) and np.all(np.isfinite(orientation))):
            raise BadInput(f"non-finite end-effector pose {position} {orientation}")  # it would score NaN rewards
        if operator_action is not None and not np.all(np.isfinite(operator_action)):
            raise BadInput(f"non-finite operator action {operator_action}")
        encoded = unpack_embedding(rows)
        if not np.all(np.isfinite(encoded.pooled)):
            raise BadInput("non-finite pooled embedding")
        embedding = embedding_record(encoded.tokens, encoded.token_present, encoded.pooled)
        reward = None
        if self.pending is not None:
            score = self.task.score_state(position, orientation, self.goal_state)
            success = score.success or mark == "success"
            if mark == "success" and not score.success:  # the operator saw a success the pose test did not
                score.reward = self.task.reward(score.reward, True)
            terminal = success or score.failed
            observation, action, by_operator = self.pending
            self.writer.append(step_record(observation, self.episode, action, score.reward, terminal, by_operator))
            self.steps += 1
            self.episode_return += score.reward
            reward = score.reward
            timeout = self.steps >= self.task_config.max_episode_steps
            if terminal or timeout or mark == "failure":
                self.writer.append(final_record(embedding, self.episode, self.task.action_dim, terminal))
                ended_by = "success" if success else "failure" if score.failed or mark == "failure" else "timeout"
                result = self._result(success, ended_by)
                self.episodes_done += 1
                self.successes += int(success)
                self.episode, self.pending = None, None
                return StepResult(None, reward, result)
        if operator_action is not None:
            action = np.clip(np.asarray(operator_action, dtype=np.float64), -1.0, 1.0)
            self.interventions += 1
        else:
            action = self.choose_action(encoded.pooled)
        target_position, target_orientation = target_after(position, orientation, action, self.action_spec)
        self.pending = (embedding, action, operator_action is not None)
        return StepResult((np.clip(target_position, self.low, self.high), target_orientation), reward, action=action)

    def choose_action(self, pooled: np.ndarray) -> np.ndarray:
        if self.writer.count < self.random_steps or self.actor is None:
            return self.rng.uniform(-1.0, 1.0, self.task.action_dim)
        device = next(self.actor.parameters()).device
        action = self.actor.act(torch.from_numpy(pooled)[None].to(device), self.deterministic)
        return action[0].cpu().numpy().astype(np.float64)
