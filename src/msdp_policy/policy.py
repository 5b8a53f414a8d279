"""The policy as it runs on the arm or in the fast loop: observation in, encoder features, actor's action out.

A policy checkpoint (``policy.safetensors`` + ``policy.json``) holds the actor's weights -- and, for the
``scratch`` variant, the encoder trained with it. A ``msdp_frozen`` policy names the encoder checkpoint it
was trained on; that encoder is loaded from there (or from the path given to ``load_policy``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from msdp.config import ConfigError, from_dict, to_dict
from msdp.devices import resolve_device
from msdp.specs import ActionSpec, ObservationSpec, SpecMismatch, check_same, spec_from_dict
from msdp_perception.checkpoint import (
    ENCODER_FORMAT,
    CheckpointError,
    checkpoint_paths,
    encoder_identity,
    first_line,
    load_encoder,
    load_sidecar,
    load_weights,
    save_module,
)
from msdp_perception.model import MODALITIES, Embedding, MSDPConfig, MSDPModel
from msdp_policy.agent import Actor, AgentConfig

POLICY_FORMAT = "msdp-policy"
SCRATCH_IDENTITY = "scratch"  # the scratch variant's encoder is trained with the policy and saved inside it
SENSOR_SUBSETS = ("vision,ft,proprio", "vision", "vision,ft", "vision,proprio", "ft,proprio")


def sensor_mask(sensors: str) -> np.ndarray:
    """(3,) bool over MODALITIES for a subset such as "vision,ft"; the others are masked for the encoder."""
    names = sensors.split(",")
    unknown = sorted(set(names) - set(MODALITIES))
    if unknown:
        raise ConfigError(f"sensors: unknown {unknown}; choose from {', '.join(MODALITIES)}")
    return np.array([m in names for m in MODALITIES])


@dataclass
class PolicyInfo:
    """What a policy checkpoint's sidecar says about how the policy was trained."""

    agent: AgentConfig
    encoder_variant: str
    encoder_checkpoint: str
    sensors: str
    task: dict[str, Any]
    action_dim: int
    training: dict[str, Any]


class PolicyWeights(nn.Module):
    """What a policy checkpoint stores: the actor, plus the encoder for the scratch variant."""

    def __init__(self, actor: Actor, encoder: MSDPModel | None):
        super().__init__()
        self.actor = actor
        self.encoder = encoder


class Policy:
    """Encodes raw observations the way the agent was trained and returns actions in [-1, 1]."""

    def __init__(self, actor: Actor, encoder: MSDPModel, info: PolicyInfo):
        self.actor = actor.eval()
        self.encoder = encoder.eval()
        self.info = info
        self.device = next(actor.parameters()).device  # the encoder's too
        self.present = torch.from_numpy(sensor_mask(info.sensors))[None].to(self.device)

    @torch.no_grad()
    def encode(self, observation: dict[str, np.ndarray]) -> Embedding:
        """One environment observation (image, wrench, proprio) -> batch-of-one embedding, on the policy's
        device."""
        return self.encoder.embed(
            *(torch.from_numpy(observation[name])[None].to(self.device) for name in ("image", "wrench", "proprio")),
            self.present,
        )

    def act(self, pooled: torch.Tensor, deterministic: bool = True) -> np.ndarray:
        return self.actor.act(pooled.reshape(1, -1), deterministic)[0].cpu().numpy().astype(np.float64)


def action_spec_of(info: PolicyInfo) -> ActionSpec:
    """The action a policy emits: its dimensions and the step sizes of the task it was trained on."""
    return from_dict(ActionSpec, {"dim": info.action_dim, "max_step": info.task.get("max_step", ActionSpec.max_step),
                                  "max_yaw_step": info.task.get("max_yaw_step", ActionSpec.max_yaw_step)})  # fmt: skip


def save_policy(path: str | Path, actor: Actor, encoder: MSDPModel | None, info: PolicyInfo) -> Path:
    """``encoder`` is the scratch variant's own encoder (saved in the weights); a frozen-encoder policy records
    its encoder's identity and observation spec, so it never runs on another encoder's embeddings."""
    if encoder is None:
        observation = load_sidecar(info.encoder_checkpoint, ENCODER_FORMAT)["config"]
        identity = encoder_identity(info.encoder_checkpoint)
        observation_spec = from_dict(MSDPConfig, observation).observation_spec
    else:
        identity, observation_spec = SCRATCH_IDENTITY, encoder.config.observation_spec
    sidecar = {
        "format": POLICY_FORMAT,
        "agent": to_dict(info.agent),
        "encoder_variant": info.encoder_variant,
        "encoder_checkpoint": info.encoder_checkpoint,
        "sensors": info.sensors,
        "task": info.task,
        "action_dim": info.action_dim,
        "training": info.training,
        "encoder_identity": identity,
        "observation_spec": to_dict(observation_spec),
        "action_spec": to_dict(action_spec_of(info)),
    }
    if encoder is not None:
        sidecar["encoder_config"] = to_dict(encoder.config)
    return save_module(path, PolicyWeights(actor, encoder), sidecar)


def check_encoder(sidecar: dict[str, Any], meta: Path, checkpoint: str, encoder: MSDPModel) -> None:
    """Refuse an encoder other than the one the policy was trained on (policies saved before identities were
    recorded are checked by their observation spec only)."""
    expected = sidecar.get("encoder_identity")
    if expected is not None and expected != (found := encoder_identity(checkpoint)):
        raise SpecMismatch(
            f"{meta} was trained on encoder {expected[:12]}, but {checkpoint} is encoder {found[:12]}: "
            "its embeddings mean something else to this actor"
        )
    if "observation_spec" in sidecar:
        recorded = spec_from_dict(ObservationSpec, sidecar["observation_spec"], str(meta))
        check_same(recorded, str(meta), encoder.config.observation_spec, checkpoint)


def load_policy(path: str | Path, encoder_checkpoint: str | Path | None = None, device: str = "cpu") -> Policy:
    """Rebuild a policy; a frozen-encoder policy loads its encoder from the sidecar's path or the one given."""
    sidecar = load_sidecar(path, POLICY_FORMAT)
    meta = checkpoint_paths(path)[1]
    try:
        info = PolicyInfo(
            agent=from_dict(AgentConfig, sidecar["agent"]),
            encoder_variant=sidecar["encoder_variant"],
            encoder_checkpoint=str(encoder_checkpoint or sidecar["encoder_checkpoint"]),
            sensors=sidecar["sensors"],
            task=sidecar["task"],
            action_dim=int(sidecar["action_dim"]),
            training=sidecar.get("training", {}),
        )
        scratch = from_dict(MSDPConfig, sidecar["encoder_config"]) if info.encoder_variant == "scratch" else None
    except (KeyError, TypeError, ValueError) as exc:  # ValueError includes ConfigError
        raise CheckpointError(f"{meta}: bad policy sidecar ({first_line(exc)})") from exc
    encoder = MSDPModel(scratch) if scratch is not None else load_encoder(info.encoder_checkpoint)[0]
    if scratch is None:
        check_encoder(sidecar, meta, info.encoder_checkpoint, encoder)
    actor = Actor(info.agent, encoder.config.width, info.action_dim)
    weights = PolicyWeights(actor, encoder if info.encoder_variant == "scratch" else None)
    load_weights(path, weights)
    target = resolve_device(device)
    return Policy(actor.to(target), encoder.to(target), info)
