"""What a transition holds, and the replay that samples learner batches from a transition log.

One record per policy step, in episode order: the observation at step t, the action taken there, the reward
and ``terminal`` flag that followed it, and ``intervention``: the action was a human operator's, who took over
from the policy (RLPD samples these like demonstrations; a log from before the flag reads it as all False).
An episode ends with one extra record, ``final``, holding the last
observation (its action is unused). The next observation of record i is record i+1 when both belong to the
same episode; so each observation is stored once, and a policy killed mid-episode leaves records that are
simply never linked across the restart.

The observation is stored as the frozen encoder's token embeddings (``msdp_frozen``) or, for an encoder
trained end to end (``scratch``), as the raw sensor readings. Measured on this project's 2-core machine
(bench/transition_log.py and bench/learner.py): a token record is 17.4 kB (bfloat16 tokens, float32 pooled
vector) against 12.4 kB of raw readings, but a raw record has to go through the encoder again at every
update that samples it (512 encoder passes per batch of 256), which costs more than the whole critic and
actor update. So a frozen encoder's log holds its tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from msdp.config import to_dict
from msdp.specs import ActionSpec
from msdp_perception.checkpoint import encoder_identity
from msdp_perception.model import MSDPConfig
from msdp_policy.transition_log import ADDED_FIELDS, Schema, TransitionReader

ENCODER_VARIANTS = ("msdp_frozen", "scratch")


def log_meta(encoder_checkpoint: str | Path, model: MSDPConfig, action: ActionSpec) -> dict[str, Any]:
    """What made a log: the encoder (identity and path) and the observation and action specs."""
    return {
        "encoder": encoder_identity(encoder_checkpoint),
        "encoder_checkpoint": str(encoder_checkpoint),
        "observation_spec": to_dict(model.observation_spec),
        "action_spec": to_dict(action),
    }


def transition_schema(encoder: str, model: MSDPConfig, action_dim: int, meta: dict[str, Any] | None = None) -> Schema:
    """The log's fields for an encoder variant (see the module docstring); ``meta`` from ``log_meta``."""
    common = {
        "episode": ("int64", ()),
        "action": ("float32", (action_dim,)),
        "reward": ("float32", ()),
        "terminal": ("bool", ()),
        "final": ("bool", ()),
        "intervention": ADDED_FIELDS["intervention"],  # last: the only field older logs lack
    }
    if encoder == "msdp_frozen":
        observation = {
            "tokens": ("uint16", (model.n_tokens, model.width)),  # bfloat16 bits (see to_bfloat16_bits)
            "present": ("bool", (model.n_tokens,)),
            "pooled": ("float32", (model.width,)),
        }
    elif encoder == "scratch":
        s = model.image_size
        observation = {
            "image": ("uint8", (s, s, 3)),
            "wrench": ("float32", (model.ft_window, 6)),
            "proprio": ("float32", (model.proprio_dim,)),
            "sensors": ("bool", (3,)),
        }
    else:
        raise ValueError(f"unknown encoder variant {encoder!r}; choose one of {', '.join(ENCODER_VARIANTS)}")
    return Schema({**observation, **common}, meta)


OBSERVATION_FIELDS = ("tokens", "present", "pooled", "image", "wrench", "proprio", "sensors")


def to_bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16, kept as uint16 bits (NumPy has no bfloat16). Tokens are stored this way: half the
    size of float32, and the learner widens a batch back to float32 three times faster than from float16."""
    bits = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).to(torch.bfloat16).view(torch.int16)
    return bits.numpy().view(np.uint16)


def embedding_record(tokens: np.ndarray, present: np.ndarray, pooled: np.ndarray) -> dict[str, np.ndarray]:
    """A frozen encoder's output as the observation fields of log records (one record, or a batch of them)."""
    return {"tokens": to_bfloat16_bits(tokens), "present": np.asarray(present, bool), "pooled": np.asarray(pooled)}


def step_record(
    observation: dict[str, np.ndarray],
    episode: int,
    action: np.ndarray,
    reward: float,
    terminal: bool,
    intervention: bool = False,
) -> dict[str, np.ndarray]:
    """A log record for one policy step: the observation, the action taken there (the operator's, when
    ``intervention``), what followed it."""
    return {**observation, "episode": np.int64(episode), "action": np.asarray(action, np.float32),
            "reward": np.float32(reward), "terminal": np.bool_(terminal), "final": np.bool_(False),
            "intervention": np.bool_(intervention)}  # fmt: skip


def final_record(
    observation: dict[str, np.ndarray], episode: int, action_dim: int, terminal: bool
) -> dict[str, np.ndarray]:
    """An episode's closing record: its last observation, with no action after it (zeros), so no transition
    links it onward -- the one rule every writer (training, the policy node, offline logs) follows."""
    return {**observation, "episode": np.int64(episode), "action": np.zeros(action_dim, np.float32),
            "reward": np.float32(0.0), "terminal": np.bool_(terminal), "final": np.bool_(True),
            "intervention": np.bool_(False)}  # fmt: skip


def _tensor(values: np.ndarray, name: str) -> torch.Tensor:
    tensor = torch.from_numpy(values)
    return tensor.view(torch.bfloat16) if name == "tokens" else tensor


class _Indices:
    """A growing index of records (amortised doubling), sampled uniformly."""

    def __init__(self):
        self.values = np.zeros(1024, dtype=np.int64)
        self.count = 0

    def extend(self, indices: np.ndarray) -> None:
        needed = self.count + len(indices)
        if needed > len(self.values):
            self.values = np.concatenate([self.values, np.zeros(max(needed, len(self.values)), np.int64)])
        self.values[self.count : needed] = indices
        self.count = needed

    def sample(self, size: int, rng: np.random.Generator) -> np.ndarray:
        return self.values[rng.integers(self.count, size=size)]


class Replay:
    """Uniform sampling of linked (observation, action, reward, next observation) pairs from a log, and of the
    linked ones among them that an operator acted in (``interventions``).

    ``refresh`` picks up what the writer appended since the last call (the same in-process or in a learner
    on another machine reading the shared folder).
    """

    def __init__(self, reader: TransitionReader):
        self.reader = reader
        self.fields = [name for name in OBSERVATION_FIELDS if name in reader.schema.fields]
        self._linked = _Indices()  # records whose next observation is in the log
        self._interventions = _Indices()  # the linked records whose action was the operator's
        self._checked = 0  # records before this index have been tested for a successor
        self.refresh()

    def refresh(self) -> int:
        new = self.reader.refresh()
        arrays = self.reader.arrays
        count = len(self.reader)
        if count - 1 > self._checked:
            i = np.arange(self._checked, count - 1)
            ok = ~arrays["final"][i] & (arrays["episode"][i + 1] == arrays["episode"][i])
            linked = i[ok]
            self._linked.extend(linked)
            self._interventions.extend(linked[arrays["intervention"][linked]])
            self._checked = count - 1
        return new

    def __len__(self) -> int:
        """Transitions that can be sampled (every step whose next observation is in the log)."""
        return self._linked.count

    @property
    def interventions(self) -> int:
        """Transitions that can be sampled in which the operator acted."""
        return self._interventions.count

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        if not len(self):
            raise RuntimeError(f"{self.reader.folder}: no complete transition to sample yet")
        return self._batch(self._linked.sample(batch_size, rng))

    def sample_interventions(self, batch_size: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        if not self.interventions:
            raise RuntimeError(f"{self.reader.folder}: no complete intervention transition to sample yet")
        return self._batch(self._interventions.sample(batch_size, rng))

    def _batch(self, i: np.ndarray) -> dict[str, torch.Tensor]:
        arrays = self.reader.arrays
        batch = {name: torch.from_numpy(arrays[name][i]) for name in ("action", "reward", "terminal")}
        for name in self.fields:
            batch[name] = _tensor(arrays[name][i], name)
            batch[f"next_{name}"] = _tensor(arrays[name][i + 1], name)
        return batch


def concat_batches(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """RLPD: one batch, half online and half offline."""
    return {name: torch.cat([first[name], second[name]]) for name in first}
