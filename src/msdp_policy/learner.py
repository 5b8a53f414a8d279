"""The learner: agent updates at the configured update-to-data ratio from a transition log, and its checkpoints.

Shared by the fast loop (``msdp train``) and the learner node, so both train the same way: after
``update_after`` logged environment steps, the agent owes ``critic_updates_per_step`` critic updates per step.
``agent.pt`` holds what resuming needs (networks, optimisers, counters) and is replaced atomically, so a kill
during a save leaves the previous one; the replay needs no saving, it is the transition log.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from msdp_policy.agent import Actor, SACAgent
from msdp_policy.replay import Replay, concat_batches


class Learner:
    def __init__(self, agent: SACAgent, replay: Replay, offline: list[Replay], update_after: int, seed: int):
        self.agent, self.replay, self.offline = agent, replay, offline
        self.update_after = update_after
        self.rng = np.random.default_rng(seed)
        if agent.config.rlpd and not offline:
            raise ValueError("RLPD needs offline transition logs in the replay")
        for log in offline:
            if log.reader.schema.fields != replay.reader.schema.fields:
                raise ValueError(f"offline log {log.reader.folder} stores other fields than {replay.reader.folder}")

    def env_steps(self) -> int:
        """Environment steps in the log (every record but the episodes' final observations)."""
        return int((~self.replay.reader.arrays["final"]).sum())

    def updates_owed(self, env_steps: int) -> int:
        due = self.agent.config.critic_updates_per_step * max(0, env_steps - self.update_after + 1)
        return max(0, due - self.agent.critic_updates)

    def sample(self) -> dict[str, torch.Tensor]:
        size = self.agent.config.batch_size
        if not self.agent.config.rlpd:
            return self.replay.sample(size, self.rng)
        offline = self.offline[int(self.rng.integers(len(self.offline)))]
        return concat_batches(self.replay.sample(size // 2, self.rng), offline.sample(size - size // 2, self.rng))

    def catch_up(self, env_steps: int, max_updates: int | None = None) -> dict[str, float]:
        """Run the updates owed for ``env_steps`` (at most ``max_updates``); returns the last update's metrics."""
        owed = self.updates_owed(env_steps)
        if max_updates is not None:
            owed = min(owed, max_updates)
        metrics: dict[str, float] = {}
        if owed and len(self.replay):
            for _ in range(owed):
                metrics = self.agent.update(self.sample())
        return metrics

    def save(self, path: Path, extra: dict[str, Any]) -> None:
        agent = self.agent
        state = {
            "agent": agent.state_dict(),
            "critic_optimizer": agent.critic_optimizer.state_dict(),
            "actor_optimizer": agent.actor_optimizer.state_dict(),
            "temperature_optimizer": agent.temperature_optimizer.state_dict(),
            "critic_updates": agent.critic_updates,
            **extra,
        }
        partial = path.with_name(path.name + ".partial")
        torch.save(state, partial)
        partial.replace(path)

    def resume(self, path: Path) -> dict[str, Any]:
        """Load ``agent.pt`` (plain tensors and numbers only: ``weights_only``); returns the whole state."""
        state = torch.load(path, weights_only=True)
        agent = self.agent
        agent.load_state_dict(state["agent"])
        agent.critic_optimizer.load_state_dict(state["critic_optimizer"])
        agent.actor_optimizer.load_state_dict(state["actor_optimizer"])
        agent.temperature_optimizer.load_state_dict(state["temperature_optimizer"])
        agent.critic_updates = state["critic_updates"]
        return state


def actor_to_bytes(actor: Actor) -> bytes:
    """The actor's weights as a safetensors blob: what the learner publishes to the policy."""
    return save_tensors({k: v.detach().contiguous() for k, v in actor.state_dict().items()})


def actor_from_bytes(blob: bytes, like: Actor) -> Actor:
    """A new actor shaped like ``like`` with the blob's weights (the old one is untouched, so the caller swaps
    one reference: atomic for whoever is acting); raises ValueError if they do not fit."""
    try:
        state = load_tensors(blob)
    except Exception as exc:  # safetensors raises its own error types for a corrupt header
        raise ValueError(f"not a safetensors blob ({exc})") from exc
    actor = copy.deepcopy(like)
    try:
        actor.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"actor weights do not fit this policy's actor: {exc}") from exc
    return actor.eval()
