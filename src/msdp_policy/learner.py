"""The learner: agent updates at the configured update-to-data ratio from a transition log, and its checkpoints.

Shared by the fast loop (``msdp train``) and the learner node, so both train the same way: after
``update_after`` logged environment steps, the agent owes ``critic_updates_per_step`` critic updates per step.
``agent.pt`` holds what resuming needs (networks, optimisers, counters) and is replaced atomically, so a kill
during a save leaves the previous one; the replay needs no saving, it is the transition log. It also holds
``sha256``, a digest of everything else in it, checked on resume (inside the file, so one rename still
replaces both); an ``agent.pt`` from before the digest resumes with an ``UncheckedCheckpointWarning``.

Actor weights reach the policy node as a safetensors blob; ``ActorWeightsGate`` decides whether it may act
with them.
"""

from __future__ import annotations

import copy
import hashlib
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from msdp_perception.checkpoint import CheckpointError, UncheckedCheckpointWarning, check_state, first_line
from msdp_policy.agent import Actor, SACAgent
from msdp_policy.replay import Replay, concat_batches


class Learner:
    def __init__(
        self, agent: SACAgent, replay: Replay, offline: list[Replay], update_after: int, seed: int | tuple[int, ...]
    ):
        self.agent, self.replay, self.offline = agent, replay, offline
        self.update_after = update_after
        self.rng = np.random.default_rng(seed)
        if agent.config.rlpd and not offline:
            raise ValueError("RLPD needs offline transition logs in the replay")
        for log in offline:
            replay.reader.schema.check_same_source(log.reader.schema, str(replay.reader.folder), str(log.reader.folder))

    def env_steps(self) -> int:
        """Environment steps in the log (every record but the episodes' final observations)."""
        return int((~self.replay.reader.arrays["final"]).sum())

    def updates_owed(self, env_steps: int) -> int:
        due = self.agent.config.critic_updates_per_step * max(0, env_steps - self.update_after + 1)
        return max(0, due - self.agent.critic_updates)

    def sample(self) -> dict[str, torch.Tensor]:
        """A batch on the agent's device (sampled on the CPU from the log, then one copy per tensor).

        RLPD: the offline half comes from one source per batch, drawn uniformly: each offline log, and the
        online log's intervention transitions once there are any (the operator's corrections, taken like a
        demonstration log). Uniform rather than by size, as the offline logs already are: interventions are
        few (tens of steps against thousands of demonstration steps) but made in the states the current policy
        reaches, so weighting by size would all but drop them. Without interventions the draws are as before."""
        size = self.agent.config.batch_size
        if not self.agent.config.rlpd:
            batch = self.replay.sample(size, self.rng)
        else:
            source = int(self.rng.integers(len(self.offline) + bool(self.replay.interventions)))
            online = self.replay.sample(size // 2, self.rng)
            if source < len(self.offline):
                offline = self.offline[source].sample(size - size // 2, self.rng)
            else:
                offline = self.replay.sample_interventions(size - size // 2, self.rng)
            batch = concat_batches(online, offline)
        device = self.agent.log_temperature.device
        return batch if device.type == "cpu" else {k: v.to(device, non_blocking=True) for k, v in batch.items()}

    def catch_up(self, env_steps: int, max_updates: int | None = None) -> dict[str, float]:
        """Run the updates owed for ``env_steps`` (at most ``max_updates``); returns each metric's mean over the
        updates that produced it (the actor's come every ``critic_updates_per_actor_update``), summed on the
        device so that reading them waits for it once per call."""
        owed = self.updates_owed(env_steps)
        if max_updates is not None:
            owed = min(owed, max_updates)
        totals: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        if owed and len(self.replay):
            for _ in range(owed):
                for name, value in self.agent.update(self.sample()).items():
                    totals[name] = totals[name] + value if name in totals else value
                    counts[name] = counts.get(name, 0) + 1
        return {name: float(total) / counts[name] for name, total in totals.items()}

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
        state["sha256"] = state_digest(state)
        partial = path.with_name(path.name + ".partial")
        torch.save(state, partial)
        partial.replace(path)

    def resume(self, path: Path) -> dict[str, Any]:
        """Load ``agent.pt`` (plain tensors and numbers only: ``weights_only``) once its digest and its agent
        weights (``check_state``) are good; returns the whole state."""
        try:
            state = torch.load(path, weights_only=True, map_location="cpu")  # saved on any device
        except Exception as exc:  # a damaged zip, a pickle of anything but tensors and numbers, a missing file
            raise CheckpointError(f"{path}: cannot read it as an agent checkpoint ({first_line(exc)})") from exc
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: expected a dict of agent state, found {type(state).__name__}")
        digest = state.pop("sha256", None)
        if digest is None:
            warnings.warn(
                f"{path}: no sha256 in it (saved before digests); resuming from it unverified",
                UncheckedCheckpointWarning,
                stacklevel=2,
            )
        elif digest != state_digest(state):
            raise CheckpointError(f"{path}: damaged, its contents do not match the sha256 saved in it")
        agent = self.agent
        if not isinstance(state.get("agent"), dict):
            raise CheckpointError(f"{path}: expected the agent's state dict under 'agent'")
        check_state(state["agent"], agent, str(path))
        try:
            agent.load_state_dict(state["agent"])
            agent.critic_optimizer.load_state_dict(state["critic_optimizer"])
            agent.actor_optimizer.load_state_dict(state["actor_optimizer"])
            agent.temperature_optimizer.load_state_dict(state["temperature_optimizer"])
            agent.critic_updates = int(state["critic_updates"])
        except (KeyError, TypeError, ValueError) as exc:  # a missing entry or an optimiser of another shape
            raise CheckpointError(f"{path}: not this agent's optimisers and counters ({first_line(exc)})") from exc
        return state


def state_digest(state: dict[str, Any]) -> str:
    """sha256 over a checkpoint's contents (tensors as dtype, shape and bytes; dict entries in sorted order), so
    the same state gives the same digest after a save and a load."""
    digest = hashlib.sha256()

    def feed(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            digest.update(f"tensor {tensor.dtype} {list(tensor.shape)}\n".encode())
            digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            digest.update(f"dict {len(value)}\n".encode())
            for key in sorted(value, key=repr):
                feed(key)
                feed(value[key])
        elif isinstance(value, list | tuple):
            digest.update(f"{type(value).__name__} {len(value)}\n".encode())
            for item in value:
                feed(item)
        else:  # numbers, strings, booleans, None
            digest.update(f"{type(value).__name__} {value!r}\n".encode())

    feed(state)
    return digest.hexdigest()


class WeightsRefused(ValueError):
    """Actor weights the policy must not act with; the message says why in one line."""


def actor_to_bytes(actor: Actor) -> bytes:
    """The actor's weights as a safetensors blob: what the learner publishes to the policy."""
    return save_tensors({k: v.detach().cpu().contiguous() for k, v in actor.state_dict().items()})


def actor_from_bytes(blob: bytes, like: Actor, where: str = "actor weights") -> Actor:
    """A new actor shaped like ``like`` with the blob's weights, which must pass ``check_state`` (the old one is
    untouched, so the caller swaps one reference: atomic for whoever is acting); raises WeightsRefused."""
    try:
        state = load_tensors(blob)
    except Exception as exc:  # safetensors raises its own error types for a corrupt header
        raise WeightsRefused(f"{where}: not a safetensors blob ({first_line(exc)})") from exc
    try:
        check_state(state, like, where)
    except CheckpointError as exc:
        raise WeightsRefused(str(exc)) from exc
    actor = copy.deepcopy(like)
    actor.load_state_dict(state)
    return actor.eval()


WEIGHTS_LABEL = re.compile(r"critic_updates=(\d+)(?: \S+=\S*)*")
BEHIND = re.compile(r"(?:^| )behind=(\d+)(?: |$)")


def updates_behind(label: str) -> int:
    """The critic updates the learner still owed when it published these weights (``behind=K`` in the label;
    0 when the label does not say)."""
    match = BEHIND.search(label)
    return int(match.group(1)) if match else 0


class ActorWeightsGate:
    """Checks actor weights from the graph before the policy acts with them: a blob that ``actor_from_bytes``
    accepts, labelled ``critic_updates=N ...`` (as the learner labels them) with N above the last accepted one.
    The topic is latched, so without this a bad blob would stop the policy at every restart; and a learner that
    restarted from an older ``agent.pt`` would otherwise replace newer weights with older ones."""

    def __init__(self, actor: Actor):
        self.like = copy.deepcopy(actor)
        self.version: int | None = None  # critic updates of the last accepted weights

    def accept(self, blob: bytes, label: str) -> Actor:
        """A new actor with the blob's weights (the caller swaps its reference), or WeightsRefused."""
        match = WEIGHTS_LABEL.fullmatch(label)
        if match is None:
            raise WeightsRefused(f"actor weights labelled {label!r}: expected 'critic_updates=N env_steps=M'")
        version = int(match.group(1))
        if self.version is not None and version <= self.version:
            raise WeightsRefused(f"actor weights {label}: not newer than the accepted critic_updates={self.version}")
        actor = actor_from_bytes(blob, self.like, f"actor weights {label}")
        self.version = version
        return actor
