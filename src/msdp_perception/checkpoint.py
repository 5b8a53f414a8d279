"""Checkpoints: safetensors weights plus a JSON sidecar; loading never unpickles anything.

An encoder checkpoint is two files, ``<name>.safetensors`` and ``<name>.json``. The sidecar holds what is
needed to rebuild and trust the model: its config, the token layout, the normalisation statistics (also in
the weights, as buffers), the git revision and versions that produced it, a free-form training summary, and
``weights_sha256``, the sha256 of the weights file, so damaged weights are refused instead of loaded.

Every load checks the tensors with ``check_state``: the names, shapes and dtypes the module has, and finite
values. A checkpoint saved before sidecars held a checksum still loads, with an ``UncheckedCheckpointWarning``
(saving it again adds the checksum).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save_file

from msdp.config import ConfigError, from_dict, to_dict
from msdp.provenance import provenance
from msdp_perception.model import MSDPConfig, MSDPModel
from msdp_perception.observation import MODALITIES

ENCODER_FORMAT = "msdp-encoder/1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, damaged, of another kind or does not match its sidecar or its module."""


class UncheckedCheckpointWarning(UserWarning):
    """A checkpoint from before checksums was loaded without an integrity check."""


def first_line(exc: BaseException) -> str:
    """An exception's message fit for a one-line error (torch and safetensors messages can run over many)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def describe(tensor: torch.Tensor) -> str:
    return f"{str(tensor.dtype).removeprefix('torch.')}{list(tensor.shape)}"


def some(names: list[str]) -> str:
    """Up to three names, so an error stays one line."""
    if not names:
        return "none"
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def check_state(state: Mapping[str, torch.Tensor], module: torch.nn.Module, where: str) -> None:
    """Refuse weights that ``module.load_state_dict`` would take wrongly or silently: other tensor names, shapes
    or dtypes than ``module`` has (a dtype is converted without a word), or NaN/inf values (a diverged run or
    damage, which would otherwise surface only as NaN actions). ``where`` names the source in the error."""
    expected = module.state_dict()
    kind = type(module).__name__
    missing, unexpected = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: weights do not fit the {kind}: tensor names do not match"
            f" (missing {some(missing)}; unexpected {some(unexpected)})"
        )
    for name, want in expected.items():
        got = state[name]
        if not isinstance(got, torch.Tensor):
            raise CheckpointError(f"{where}: {name} is a {type(got).__name__}, expected a tensor")
        if got.shape != want.shape or got.dtype != want.dtype:
            what = "shapes" if got.shape != want.shape else "dtypes"
            raise CheckpointError(
                f"{where}: weights do not fit the {kind}: {what} do not match,"
                f" {name} is {describe(got)}, expected {describe(want)}"
            )
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            bad = int((~torch.isfinite(got)).sum())
            raise CheckpointError(f"{where}: {name} holds {bad} NaN/inf values, expected finite weights")


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
    checksum = hashlib.sha256(weights.read_bytes()).hexdigest()
    record = {**sidecar, "weights_sha256": checksum, "provenance": {**provenance(), "torch": torch.__version__}}
    meta.write_text(json.dumps(record, indent=2))
    return weights


def read_sidecar(meta: Path) -> dict[str, Any]:
    try:
        sidecar = json.loads(meta.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CheckpointError(f"{meta}: cannot read the sidecar ({exc.strerror or exc})") from exc
    except ValueError as exc:  # UnicodeDecodeError or JSONDecodeError
        raise CheckpointError(f"{meta}: expected a UTF-8 JSON sidecar ({first_line(exc)})") from exc
    if not isinstance(sidecar, dict):
        raise CheckpointError(f"{meta}: expected a JSON object, found {type(sidecar).__name__}")
    return sidecar


def load_sidecar(path: str | Path, expected_format: str) -> dict[str, Any]:
    weights, meta = checkpoint_paths(path)
    for file in (weights, meta):
        if not file.is_file():
            raise CheckpointError(f"checkpoint file {file} not found (a checkpoint is a .safetensors and a .json)")
    sidecar = read_sidecar(meta)
    if sidecar.get("format") != expected_format:
        raise CheckpointError(f"{meta}: format {sidecar.get('format')!r}, expected {expected_format!r}")
    return sidecar


def load_weights(path: str | Path, module: torch.nn.Module) -> None:
    """Load a checkpoint's weights into ``module`` once its bytes match the sidecar's checksum and its tensors
    pass ``check_state``; the bytes are read once, so what is checked is what is loaded."""
    weights, meta = checkpoint_paths(path)
    try:
        data = weights.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{weights}: cannot read weights ({exc.strerror or exc})") from exc
    checksum = read_sidecar(meta).get("weights_sha256")
    if checksum is None:
        warnings.warn(
            f"{weights}: {meta.name} has no weights_sha256 (saved before checksums); loading it unverified",
            UncheckedCheckpointWarning,
            stacklevel=2,
        )
    elif hashlib.sha256(data).hexdigest() != checksum:
        raise CheckpointError(f"{weights}: damaged, its bytes do not match the weights_sha256 in {meta.name}")
    try:
        state = load_tensors(data)
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{weights}: cannot read weights ({first_line(exc)})") from exc
    check_state(state, module, str(weights))
    module.load_state_dict(state)


def encoder_identity(path: str | Path) -> str:
    """What identifies an encoder: the sha256 of its weights file (the same value as the sidecar's checksum).
    A policy, a transition log and an offline log record it, so embeddings of another encoder are refused."""
    weights, _ = checkpoint_paths(path)
    try:
        return hashlib.sha256(weights.read_bytes()).hexdigest()
    except OSError as exc:
        raise CheckpointError(f"{weights}: cannot read it ({first_line(exc)})") from exc


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
        "observation_spec": to_dict(c.observation_spec),
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
