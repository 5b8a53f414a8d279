"""The frozen MSDP encoder at run time: one ``Observation`` in, token embeddings and the pooled vector out.

Shared by the encoder node and the in-process training loop, so both see identical features. The packed
layout below is what ``/msdp/embedding`` carries (a ``sensor_msgs/Image``, encoding ``32FC1``):

    rows 0 .. n_tokens-1   one token embedding per row, in the model's token order
                           (vision tokens row-major over the grid, then F/T, then proprioception);
                           the row of a masked (absent) token is all NaN
    row  n_tokens          the pooled vector the actor uses
    width                  the token width D (128 by default)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from msdp.devices import resolve_device
from msdp_perception.checkpoint import load_encoder
from msdp_perception.messages import roi_overlay
from msdp_perception.model import MSDPModel
from msdp_perception.observation import MODALITIES, Observation

PANEL_HEIGHT = 256  # pixels, the least height of a reconstruction panel with the camera frame


@dataclass
class EncodedObservation:
    tokens: np.ndarray  # (n_tokens, D) float32, zeros where masked
    token_present: np.ndarray  # (n_tokens,) bool
    pooled: np.ndarray  # (D,) float32


@dataclass(frozen=True)
class EncoderInfo:
    """Which encoder makes the embeddings on the graph (the encoder node publishes it, latched), so a policy
    refuses embeddings of an encoder other than its own."""

    identity: str  # sha256 of the encoder's weights file (``checkpoint.encoder_identity``)
    checkpoint: str
    n_tokens: int
    width: int

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> EncoderInfo:
        """ValueError if ``text`` is not an encoder description."""
        try:
            data = json.loads(text)
            return cls(str(data["identity"]), str(data["checkpoint"]), int(data["n_tokens"]), int(data["width"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"not an encoder description ({exc}): {text[:80]!r}") from exc


def pack_embedding(encoded: EncodedObservation) -> np.ndarray:
    """(n_tokens + 1, D) float32 rows as documented above."""
    rows = np.vstack([encoded.tokens, encoded.pooled[None]]).astype(np.float32)
    rows[:-1][~encoded.token_present] = np.nan
    return rows


def unpack_embedding(rows: np.ndarray) -> EncodedObservation:
    rows = np.asarray(rows, dtype=np.float32)
    present = ~np.isnan(rows[:-1]).any(axis=1)
    return EncodedObservation(np.where(present[:, None], rows[:-1], 0.0), present, rows[-1].copy())


class FrozenEncoder:
    """An encoder checkpoint in eval mode, fed with raw ``Observation``s (normalisation is inside the model)."""

    def __init__(self, model: MSDPModel, device: str = "cpu"):
        self.device = resolve_device(device)
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.config = model.config

    @classmethod
    def load(cls, checkpoint: str | Path, device: str = "cpu") -> FrozenEncoder:
        model, _ = load_encoder(checkpoint)
        return cls(model, device)

    def _tensors(self, observations: list[Observation]) -> dict[str, torch.Tensor]:
        tensors = {
            "image": torch.from_numpy(np.stack([o.image for o in observations])),
            "wrench": torch.from_numpy(np.stack([o.wrench for o in observations]).astype(np.float32)),
            "proprio": torch.from_numpy(np.stack([o.proprio for o in observations]).astype(np.float32)),
            "present": torch.tensor([[o.present[m] for m in MODALITIES] for o in observations]),
        }
        return {name: tensor.to(self.device) for name, tensor in tensors.items()}

    @torch.no_grad()
    def encode(self, observation: Observation) -> EncodedObservation:
        if not any(observation.present.values()):
            raise ValueError("every sensor is masked: nothing to encode")
        b = self._tensors([observation])
        out = self.model.embed(b["image"], b["wrench"], b["proprio"], b["present"])
        tokens, present, pooled = (t[0].cpu().numpy() for t in (out.tokens, out.token_present, out.pooled))
        return EncodedObservation(tokens, present, pooled)

    @torch.no_grad()
    def reconstruction_panel(
        self, observation: Observation, seed: int = 0, camera: np.ndarray | None = None
    ) -> np.ndarray:
        """Encoder input | encoder input with the pretraining mask (grey = masked) | reconstruction, side by side
        (rgb8), at the model's image size.

        With ``camera``, the whole RGB camera frame the observation's image was cut from, the panel starts with
        that frame, the region the model sees outlined (``messages.roi_overlay``), and every part is scaled up
        to at least ``PANEL_HEIGHT`` pixels, so a user sees what the model sees and where it comes from.
        MSDP-P checkpoints decode the next frame; they get the mean action (normalised zero).
        """
        c = self.config
        b = self._tensors([observation])
        b["action"] = self.model.normalizer.action_mean[None].clone()
        keep = self.model.random_keep(b["present"].cpu(), torch.Generator().manual_seed(seed)).to(self.device)
        tokens = self.model.tokenize(b["image"], b["wrench"], b["proprio"])
        latents, ids, valid = self.model.encode_tokens(tokens, keep)
        action = b["action"] if c.objective == "prediction" else None
        decoded = self.model.unpatchify(self.model.decode(latents, ids, valid, action)["vision"])
        if action is None:  # MSDP-R: the reconstruction in place of what the encoder did not see
            decoded = self.model.show_mask(b["image"], keep, fill=decoded)
        masked = self.model.show_mask(b["image"], keep)[0].cpu().numpy()
        parts = [observation.image, masked, decoded[0].cpu().numpy()]
        if camera is None:
            return np.hstack(parts)
        scale = max(1, PANEL_HEIGHT // c.image_size)
        height = c.image_size * scale
        parts = [np.repeat(np.repeat(part, scale, axis=0), scale, axis=1) for part in parts]
        return np.hstack([roi_overlay(camera, c.roi, height), *parts])
