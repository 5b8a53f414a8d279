"""Checkpoints: safetensors weights plus a JSON sidecar; loading never unpickles anything.

An encoder checkpoint is two files, ``<name>.safetensors`` and ``<name>.json``. The sidecar holds what is
needed to rebuild and trust the model: its config, the token layout, the normalisation statistics (also in
the weights, as buffers), the git revision and versions that produced it, and a free-form training summary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from msdp.config import ConfigError, from_dict, to_dict
from msdp.provenance import provenance
from msdp_perception.model import MSDPConfig, MSDPModel
from msdp_perception.observation import MODALITIES

ENCODER_FORMAT = "msdp-encoder/1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, of another kind or does not match its sidecar."""


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """Weights and sidecar paths for a checkpoint given as either file or as the common stem."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def save_module(path: str | Path, module: torch.nn.Module, sidecar: dict[str, Any]) -> Path:
    """Write ``module``'s state dict and ``sidecar`` (plus provenance); returns the weights path."""
    weights, meta = checkpoint_paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(state, weights)
    meta.write_text(json.dumps({**sidecar, "provenance": {**provenance(), "torch": torch.__version__}}, indent=2))
    return weights


def load_sidecar(path: str | Path, expected_format: str) -> dict[str, Any]:
    weights, meta = checkpoint_paths(path)
    for file in (weights, meta):
        if not file.is_file():
            raise CheckpointError(f"checkpoint file {file} not found (a checkpoint is a .safetensors and a .json)")
    try:
        sidecar = json.loads(meta.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{meta}: not valid JSON ({exc})") from exc
    if sidecar.get("format") != expected_format:
        raise CheckpointError(f"{meta}: format {sidecar.get('format')!r}, expected {expected_format!r}")
    return sidecar


def load_weights(path: str | Path, module: torch.nn.Module) -> None:
    weights, _ = checkpoint_paths(path)
    try:
        state = load_file(weights)
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{weights}: cannot read weights ({exc})") from exc
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:  # missing, unexpected or differently shaped tensors
        detail = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise CheckpointError(f"{weights}: weights do not match the config in the sidecar ({detail})") from exc


def save_encoder(path: str | Path, model: MSDPModel, training: dict[str, Any] | None = None) -> Path:
    c = model.config
    layout = {
        "modalities": list(MODALITIES),
        "token_order": ["vision"] * c.vision_tokens + ["ft", "proprio"],
        "vision_grid": c.vision_grid,
        "ft_window": c.ft_window,
        "proprio": "7 joint positions (rad) then 7 joint velocities (rad/s), fr3_joint1..7",
        "wrench": "fx fy fz (N) tx ty tz (Nm) in the F/T sensor frame, oldest reading first",
    }
    sidecar = {
        "format": ENCODER_FORMAT,
        "config": to_dict(c),
        "layout": layout,
        "normalization": model.normalizer.as_dict(),
        "training": training or {},
    }
    return save_module(path, model, sidecar)


def load_encoder(path: str | Path) -> tuple[MSDPModel, dict[str, Any]]:
    """Rebuild the model from its sidecar and load its weights; returns (model in eval mode, sidecar)."""
    sidecar = load_sidecar(path, ENCODER_FORMAT)
    try:
        config = from_dict(MSDPConfig, sidecar["config"])
    except (ConfigError, KeyError) as exc:
        raise CheckpointError(f"{checkpoint_paths(path)[1]}: bad model config ({exc})") from exc
    model = MSDPModel(config)
    load_weights(path, model)
    return model.eval(), sidecar
