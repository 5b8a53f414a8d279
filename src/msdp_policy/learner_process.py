"""The fast loop's learner in a process of its own, so acting and learning run side by side on two cores.

The acting process (``training.Trainer``: simulator, frozen encoder, actor) appends to the transition log; this
process reads the log as the learner node does and updates the agent at the configured update-to-data ratio.
Neither waits for the other except in two places:

- the actor waits when the learner owes more than ``max_lag`` critic updates (the ratio is the config's,
  never lower);
- at an evaluation point the actor asks for a ``checkpoint``: the learner catches up on every update owed for the
  steps taken, writes ``agent.pt`` and answers with the actor's weights, so an evaluation sees the policy of
  exactly that point (the curve does not depend on how far ahead the learner happened to be).

Between evaluations the weights flow back through shared memory under a sequence counter (odd while the learner
writes): the actor copies them when the counter has moved and keeps the copy only if the counter did not move
during it, so it never blocks on the learner and never acts with half-written weights.
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp
from torch import nn

from msdp.seeding import seed_run
from msdp_perception.model import MSDPConfig, MSDPModel
from msdp_policy.agent import AgentConfig, SACAgent
from msdp_policy.learner import Learner
from msdp_policy.replay import Replay
from msdp_policy.transition_log import TransitionReader

PUBLISH_EVERY = 20  # critic updates between weight publications (about 0.3 s of learning on this machine)


def keep_freed_memory() -> None:
    """Ask glibc to keep freed memory instead of returning it to the kernel: an update allocates and frees the
    same few-megabyte buffers every time, and with the defaults each one comes back as fresh pages that fault in
    again (measured: a third of the update's time on this machine). No effect where glibc is not the allocator."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 1 << 30)
    libc.mallopt(m_trim_threshold, 1 << 30)


def acting_weights(agent: SACAgent) -> nn.ModuleDict:
    """What acting needs of the agent and the learner changes: the actor, and the scratch variant's encoder."""
    return nn.ModuleDict({"actor": agent.actor, **({"encoder": agent.encoder} if agent.encoder else {})})


class SharedWeights:
    """A module's parameters and buffers in shared memory, with a sequence counter (see the module docstring)."""

    def __init__(self, module: nn.Module, context: Any):
        self.state = {k: v.detach().clone().share_memory_() for k, v in module.state_dict().items()}
        self.sequence = context.Value(ctypes.c_int64, 0, lock=False)

    def publish(self, module: nn.Module) -> None:
        self.sequence.value += 1
        with torch.no_grad():
            for name, value in module.state_dict().items():
                self.state[name].copy_(value)
        self.sequence.value += 1

    def read_into(self, module: nn.Module, seen: int) -> int:
        """Copy newer weights into ``module``; returns the sequence now held (``seen`` when nothing changed or
        the learner was writing)."""
        start = self.sequence.value
        if start == seen or start % 2:
            return seen
        backup = {k: v.clone() for k, v in module.state_dict().items()}
        module.load_state_dict(self.state)
        if self.sequence.value != start:  # torn: the learner wrote meanwhile; keep what we had
            module.load_state_dict(backup)
            return seen
        return start


@dataclass(frozen=True)
class LearnerJob:
    """What the learner process needs to build the same agent as the acting process."""

    agent: AgentConfig
    width: int
    n_tokens: int
    action_dim: int
    encoder: MSDPConfig | None  # the scratch variant's encoder, trained with the critic
    transitions: Path
    agent_checkpoint: Path  # agent.pt
    offline: tuple[Path, ...]
    update_after: int
    seed: int
    batch_seed: tuple[int, ...]  # the replay's sampling (moves on at a resume, as in-process)
    threads: int
    device: str
    max_lag: int


class LearnerProcess:
    """Starts the learner; ``wait_for`` (the actor's pacing), ``poll_weights``, ``checkpoint`` and ``close``."""

    def __init__(self, job: LearnerJob, agent: SACAgent, resume_from: Path | None):
        context = mp.get_context("spawn")  # a fork would copy the parent's OpenMP threads in a broken state
        self.job = job
        weights = acting_weights(agent)
        self.shared = SharedWeights(weights, context)
        self.updates = context.Value(ctypes.c_int64, agent.critic_updates, lock=False)
        self.seen = 0
        self.connection, child = context.Pipe()
        state = {k: v.detach().cpu() for k, v in agent.state_dict().items()}
        self.process = context.Process(
            target=learner_main, args=(job, state, resume_from, self.shared, self.updates, child), daemon=True
        )
        self.process.start()
        child.close()
        self._answer("ready")

    def owed(self, env_steps: int) -> int:
        due = self.job.agent.critic_updates_per_step * max(0, env_steps - self.job.update_after + 1)
        return max(0, due - self.updates.value)

    def wait_for(self, env_steps: int) -> None:
        """Block while the learner owes more than ``max_lag`` updates for ``env_steps`` logged steps."""
        while self.owed(env_steps) > self.job.max_lag:
            self._check_alive()
            time.sleep(0.0005)

    def poll_weights(self, weights: nn.ModuleDict) -> None:
        self.seen = self.shared.read_into(weights, self.seen)

    def checkpoint(self, env_steps: int, extra: dict[str, Any], weights: nn.ModuleDict) -> dict[str, float]:
        """Catch up on every update owed for ``env_steps``, write ``agent.pt`` (with ``extra``) and load the
        weights of that moment into ``weights``; returns the mean losses since the last checkpoint."""
        self._send(("checkpoint", env_steps, extra))
        metrics = self._answer("checkpoint")
        self.seen = self.shared.read_into(weights, -1)
        return metrics

    def close(self) -> None:
        if self.process.is_alive():
            self.connection.send(("stop",))
            self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()

    def _send(self, request: tuple) -> None:
        self._check_alive()
        try:
            self.connection.send(request)
        except OSError:  # the pipe broke: it died meanwhile
            self.process.join(timeout=5)
            self._check_alive()
            raise

    def _answer(self, what: str) -> Any:
        try:
            while not self.connection.poll(0.1):
                self._check_alive()
            kind, value = self.connection.recv()
        except (EOFError, OSError):  # it died while answering
            self.process.join(timeout=5)
            self._check_alive()
            raise
        if kind == "error":
            raise RuntimeError(f"the learner process failed: {value}")
        assert kind == what, (kind, what)
        return value

    def _check_alive(self) -> None:
        if not self.process.is_alive():
            reason = f"exit code {self.process.exitcode}"
            try:
                if self.connection.poll():  # it said why before it ended
                    kind, value = self.connection.recv()
                    reason = value if kind == "error" else reason
            except (EOFError, OSError):
                pass
            raise RuntimeError(f"the learner process died ({reason})")


def learner_main(
    job: LearnerJob,
    state: dict[str, torch.Tensor],
    resume_from: Path | None,
    shared: SharedWeights,
    updates: Any,
    connection: Connection,
) -> None:
    try:
        keep_freed_memory()
        torch.set_num_threads(job.threads)
        seed_run(job.seed)
        encoder = MSDPModel(job.encoder) if job.encoder is not None else None
        agent = SACAgent(job.agent, job.width, job.n_tokens, job.action_dim, encoder=encoder)
        agent.load_state_dict(state)
        agent.to(job.device)
        replay = Replay(TransitionReader(job.transitions))
        offline = [Replay(TransitionReader(folder)) for folder in job.offline]
        learner = Learner(agent, replay, offline, job.update_after, job.batch_seed)
        if resume_from is not None:
            learner.resume(resume_from)
        weights = acting_weights(agent)
        serve(learner, job.agent_checkpoint, weights, shared, updates, connection)
    except Exception as exc:  # reported to the acting process, which raises it there
        connection.send(("error", f"{type(exc).__name__}: {exc}"))


def serve(
    learner: Learner,
    checkpoint: Path,
    weights: nn.ModuleDict,
    shared: SharedWeights,
    updates: Any,
    connection: Connection,
) -> None:
    """Update whenever updates are owed; answer the acting process's requests in between."""
    totals: dict[str, float] = {}
    counts: dict[str, int] = {}

    def run(env_steps: int, limit: int | None) -> int:
        done_before = learner.agent.critic_updates
        metrics = learner.catch_up(env_steps, limit)
        done = learner.agent.critic_updates - done_before
        for name, value in metrics.items():
            totals[name] = totals.get(name, 0.0) + value * done
            counts[name] = counts.get(name, 0) + done
        if done:
            shared.publish(weights)
            updates.value = learner.agent.critic_updates
        return done

    shared.publish(weights)
    updates.value = learner.agent.critic_updates
    connection.send(("ready", None))
    while True:
        if connection.poll():
            try:
                request = connection.recv()
            except EOFError:  # the acting process is gone (killed): nothing more to learn for
                return
            if request[0] == "stop":
                return
            _, env_steps, extra = request
            learner.replay.refresh()  # the acting process's records up to env_steps are all written
            run(env_steps, None)
            learner.save(checkpoint, extra)
            means = {name: totals[name] / counts[name] for name in totals if counts[name]}
            totals.clear()
            counts.clear()
            connection.send(("checkpoint", means))
            continue
        learner.replay.refresh()
        if not run(learner.env_steps(), PUBLISH_EVERY):
            time.sleep(0.001)
