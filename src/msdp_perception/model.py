"""The MSDP model: a multisensory masked autoencoder over vision, force/torque and proprioception tokens.

Tokens (width ``D``): a CNN stem turns the image into a ``grid x grid`` map of vision tokens; the F/T window
and the proprioception vector each become one token through a linear projection. Learnable position and
modality embeddings are added to every token. Token order: vision tokens (row-major), F/T, proprioception.

Pretraining masks 70 % of the tokens at random (never every vision token), encodes the visible ones and
decodes all of them from a mask token: MSDP-R reconstructs the observation, MSDP-P predicts the next one from
an extra action token in the decoder. A caller can also pass which sensors are present: an absent sensor's
token is simply not encoded, which is how a missing or stale sensor is handled on the robot.

All inputs are normalised inside the model with statistics computed from the training data
(``Normalizer``), so a checkpoint carries everything needed to encode raw sensor values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from msdp.config import ConfigError, param_range
from msdp.specs import ObservationSpec, check_roi, roi_field
from msdp_perception.observation import MODALITIES

VISION, FT, PROPRIO = range(3)  # modality ids, in MODALITIES order


@dataclass(frozen=True)
class MSDPConfig:
    """Sizes of the MSDP model; defaults are the paper's (PAPERS.md), decoder sizes are our choice."""

    image_size: int = field(default=64, metadata=param_range(16, 512, "pixels, square RGB input"))
    vision_grid: int = field(default=8, metadata=param_range(1, 64, "vision tokens per side"))
    stem_channels: int = field(default=32, metadata=param_range(4, 512, "channels of the first stem conv"))
    ft_window: int = field(default=4, metadata=param_range(1, 64, "wrench readings per observation"))
    proprio_dim: int = field(default=14, metadata=param_range(1, 256, "joint positions + velocities"))
    action_dim: int = field(default=4, metadata=param_range(1, 32, "MSDP-P action token input"))
    width: int = field(default=128, metadata=param_range(8, 2048, "token width D"))
    depth: int = field(default=2, metadata=param_range(1, 48, "encoder transformer layers"))
    heads: int = field(default=4, metadata=param_range(1, 64, "encoder attention heads"))
    mlp_ratio: float = field(default=2.0, metadata=param_range(0.5, 8.0, "MLP hidden width / D"))
    decoder_width: int = field(default=128, metadata=param_range(8, 2048, "not stated in the paper"))
    decoder_depth: int = field(default=2, metadata=param_range(1, 48, "not stated in the paper"))
    decoder_heads: int = field(default=4, metadata=param_range(1, 64, "not stated in the paper"))
    mask_ratio: float = field(default=0.7, metadata=param_range(0.0, 0.99, "fraction of tokens masked"))
    force_log_scale: float = field(default=1.0, metadata=param_range(0.0, 1000.0, "N, F/T compression; 0 = off"))
    torque_log_scale: float = field(default=0.1, metadata=param_range(0.0, 100.0, "Nm, F/T compression; 0 = off"))
    objective: str = field(default="reconstruction", metadata={"choices": ("reconstruction", "prediction")})
    roi: tuple[float, float, float, float] = roi_field()  # see ObservationSpec; absent from a sidecar = whole frame

    def check(self, prefix: str = "") -> None:
        check_roi(self.roi, f"{prefix}roi")
        ratio = self.image_size // self.vision_grid
        if self.image_size % self.vision_grid or ratio & (ratio - 1):
            raise ConfigError(
                f"parameter '{prefix}vision_grid': {self.vision_grid} must divide image_size {self.image_size} "
                "by a power of two (one stride-2 stem layer per halving)"
            )
        for width, heads, name in (
            (self.width, self.heads, "heads"),
            (self.decoder_width, self.decoder_heads, "decoder_heads"),
        ):
            if width % heads:
                raise ConfigError(f"parameter '{prefix}{name}': {heads} must divide the width {width}")

    @property
    def observation_spec(self) -> ObservationSpec:
        """The observation this model encodes (what sensors, bags and environments must provide)."""
        return ObservationSpec(
            image_size=self.image_size, ft_window=self.ft_window, joints=self.proprio_dim // 2, roi=self.roi
        )

    @property
    def vision_tokens(self) -> int:
        return self.vision_grid**2

    @property
    def n_tokens(self) -> int:
        return self.vision_tokens + 2

    @property
    def patch_size(self) -> int:
        return self.image_size // self.vision_grid

    def token_modality(self) -> torch.Tensor:
        """Modality id of each token position."""
        return torch.tensor([VISION] * self.vision_tokens + [FT, PROPRIO])


@dataclass
class Embedding:
    """Encoder output for a batch: token embeddings with masked positions zeroed, and the pooled vector."""

    tokens: torch.Tensor  # (B, n_tokens, D)
    token_present: torch.Tensor  # (B, n_tokens) bool
    pooled: torch.Tensor  # (B, D)


class Normalizer(nn.Module):
    """Per-channel mean and std of every input, computed from data and stored with the weights.

    Wrist forces are heavy-tailed: free-space readings are a fraction of a newton, contacts and impacts reach
    hundreds. Standardising raw readings lets a few impacts dominate the F/T loss (their size is not
    predictable from one frame) and squashes everything else to zero, so each reading is first compressed with
    ``sign(x) log(1 + |x| / scale)`` (``force_log_scale``, ``torque_log_scale``; 0 turns it off). Whether and
    roughly how hard the tool touches something is then what the model learns.
    """

    def __init__(self, config: MSDPConfig):
        super().__init__()
        for name, size in (("image", 3), ("wrench", 6), ("proprio", config.proprio_dim), ("action", config.action_dim)):
            self.register_buffer(f"{name}_mean", torch.zeros(size))
            self.register_buffer(f"{name}_std", torch.ones(size))
        scales = [config.force_log_scale] * 3 + [config.torque_log_scale] * 3
        self.register_buffer("wrench_log_scale", torch.tensor(scales))

    def compress_wrench(self, wrench: torch.Tensor) -> torch.Tensor:
        scale = self.wrench_log_scale
        compressed = torch.sign(wrench) * torch.log1p(wrench.abs() / scale.clamp(min=1e-9))
        return torch.where(scale > 0, compressed, wrench)

    @torch.no_grad()
    def fit(self, images: np.ndarray, wrench: np.ndarray, proprio: np.ndarray, actions: np.ndarray) -> None:
        """Fit from raw arrays: images (N,H,W,3) uint8, wrench (N,W,6), proprio (N,P), actions (N,A) (NaN = none).

        Rows of absent sensors must already be excluded by the caller; constant channels get std 1.
        """
        pixels = images.reshape(-1, 3)
        stride = max(1, len(pixels) // 2_000_000)  # a subsample is plenty for 3 channel statistics
        sources = {
            "image": pixels[::stride].astype(np.float64) / 255.0,
            "wrench": self.compress_wrench(torch.as_tensor(wrench.reshape(-1, 6), dtype=torch.float64)).numpy(),
            "proprio": proprio.astype(np.float64),
            "action": actions[np.all(np.isfinite(actions), axis=1)].astype(np.float64),
        }
        for name, values in sources.items():
            if len(values) == 0:
                continue
            std = values.std(axis=0)
            getattr(self, f"{name}_mean").copy_(torch.as_tensor(values.mean(axis=0)))
            getattr(self, f"{name}_std").copy_(torch.as_tensor(np.where(std > 1e-6, std, 1.0)))

    def image(self, image: torch.Tensor) -> torch.Tensor:
        """(B,H,W,3) uint8 -> (B,3,H,W) normalised float."""
        x = image.permute(0, 3, 1, 2).float() / 255.0
        return (x - self.image_mean[:, None, None]) / self.image_std[:, None, None]

    def wrench(self, wrench: torch.Tensor) -> torch.Tensor:
        return (self.compress_wrench(wrench) - self.wrench_mean) / self.wrench_std

    def proprio(self, proprio: torch.Tensor) -> torch.Tensor:
        return (proprio - self.proprio_mean) / self.proprio_std

    def action(self, action: torch.Tensor) -> torch.Tensor:
        return (action - self.action_mean) / self.action_std

    def as_dict(self) -> dict[str, list[float]]:
        return {name: buf.tolist() for name, buf in self.named_buffers()}


class Attention(nn.Module):
    """Multi-head self-attention written out as two batched matmuls and a softmax.

    ``F.scaled_dot_product_attention`` picks the CPU flash kernel, whose backward is slow at these sizes (66
    tokens of 32 channels per head) and slower still in bfloat16 (115 ms of a 280 ms update, one thread); the
    plain matmuls take about 9 ms of it. (Under bf16 autocast the CPU softmax still sums in float32.)
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = (width // heads) ** -0.5
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, attend: torch.Tensor | None) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scores = (q * self.scale) @ k.transpose(-2, -1)
        if attend is not None:
            scores = scores.masked_fill(~attend[:, None, None, :], -math.inf)
        x = scores.softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block; ``attend`` (B, N) bool says which tokens may be attended to."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor, attend: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), attend)
        return x + self.mlp(self.norm2(x))


def vision_stem(config: MSDPConfig) -> nn.Sequential:
    """Stride-2 4x4 convolutions down to the token grid, then a 3x3 convolution to the token width."""
    layers: list[nn.Module] = []
    channels_in, channels = 3, config.stem_channels
    for _ in range(int(math.log2(config.patch_size))):
        layers += [nn.Conv2d(channels_in, channels, 4, stride=2, padding=1), nn.GELU()]
        channels_in, channels = channels, min(2 * channels, config.width)
    layers.append(nn.Conv2d(channels_in, config.width, 3, padding=1))
    return nn.Sequential(*layers)


def mlp_head(width: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, out))


def pool_tokens(tokens: torch.Tensor, token_present: torch.Tensor, n_vision: int) -> torch.Tensor:
    """The parameter-free pooled representation (the actor's input): the mean over the present vision tokens,
    then the mean over the present modalities (pooled vision, F/T token, proprioception token)."""
    weights = token_present.float()[..., None]
    vision = (tokens[:, :n_vision] * weights[:, :n_vision]).sum(1) / weights[:, :n_vision].sum(1).clamp(min=1)
    per_modality = torch.stack([vision, tokens[:, n_vision], tokens[:, n_vision + 1]], dim=1)
    modality_present = torch.stack(
        [token_present[:, :n_vision].any(1), token_present[:, n_vision], token_present[:, n_vision + 1]], dim=1
    ).float()[..., None]
    return (per_modality * modality_present).sum(1) / modality_present.sum(1).clamp(min=1)


class MSDPModel(nn.Module):
    def __init__(self, config: MSDPConfig | None = None):
        super().__init__()
        c = self.config = config or MSDPConfig()
        self.normalizer = Normalizer(c)
        self.register_buffer("token_modality", c.token_modality(), persistent=False)

        self.stem = vision_stem(c)
        self.ft_embed = nn.Linear(c.ft_window * 6, c.width)
        self.proprio_embed = nn.Linear(c.proprio_dim, c.width)
        self.pos_embed = nn.Parameter(torch.randn(1, c.n_tokens, c.width) * 0.02)
        self.modality_embed = nn.Parameter(torch.randn(len(MODALITIES), c.width) * 0.02)
        self.encoder = nn.ModuleList(Block(c.width, c.heads, c.mlp_ratio) for _ in range(c.depth))
        self.encoder_norm = nn.LayerNorm(c.width)

        dw = c.decoder_width
        self.decoder_embed = nn.Linear(c.width, dw)
        self.mask_token = nn.Parameter(torch.randn(1, 1, dw) * 0.02)
        self.decoder_pos_embed = nn.Parameter(torch.randn(1, c.n_tokens, dw) * 0.02)
        self.decoder_modality_embed = nn.Parameter(torch.randn(len(MODALITIES), dw) * 0.02)
        self.action_embed = nn.Linear(c.action_dim, dw)
        self.decoder = nn.ModuleList(Block(dw, c.decoder_heads, c.mlp_ratio) for _ in range(c.decoder_depth))
        self.decoder_norm = nn.LayerNorm(dw)
        self.vision_head = nn.Linear(dw, c.patch_size**2 * 3)
        self.ft_head = mlp_head(dw, c.ft_window * 6)
        self.proprio_head = mlp_head(dw, c.proprio_dim)

    # --- tokens and masks --------------------------------------------------------------------------

    def normalize(self, image: torch.Tensor, wrench: torch.Tensor, proprio: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw sensors -> normalised ``vision`` (B, 3, H, W), ``ft`` (B, W*6) and ``proprio`` (B, P): what the
        tokens are made from and, for MSDP-R, what the decoder predicts (so a batch is normalised once)."""
        n = self.normalizer
        return {"vision": n.image(image), "ft": n.wrench(wrench).flatten(1), "proprio": n.proprio(proprio)}

    def tokenize(self, image: torch.Tensor, wrench: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        """Raw sensor batch -> (B, n_tokens, D) tokens with position and modality embeddings added."""
        return self.tokens(self.normalize(image, wrench, proprio))

    def tokens(self, sensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """Normalised sensors (``normalize``) -> (B, n_tokens, D) tokens."""
        vision = self.stem(sensors["vision"]).flatten(2).transpose(1, 2)
        ft = self.ft_embed(sensors["ft"])[:, None]
        prop = self.proprio_embed(sensors["proprio"])[:, None]
        tokens = torch.cat([vision, ft, prop], dim=1)
        return tokens + self.pos_embed + self.modality_embed[self.token_modality]

    def token_present(self, present: torch.Tensor) -> torch.Tensor:
        """(B, 3) sensor presence -> (B, n_tokens) token presence."""
        return present[:, self.token_modality]

    def random_keep(self, present: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Which tokens the encoder sees: ``1 - mask_ratio`` of them at random, at least one vision token.

        Absent sensors are never kept. Returns (B, n_tokens) bool.
        """
        c = self.config
        token_present = self.token_present(present)
        b = present.shape[0]
        noise = torch.rand(b, c.n_tokens, generator=generator, device=present.device)
        forced = torch.randint(c.vision_tokens, (b,), generator=generator, device=present.device)
        noise[torch.arange(b), forced] = -1.0  # one vision token always survives
        noise = noise.masked_fill(~token_present, 2.0)
        n_keep = max(1, round(c.n_tokens * (1.0 - c.mask_ratio)))
        rank = noise.argsort(dim=1).argsort(dim=1)
        return (rank < n_keep) & token_present

    # --- encoder and decoder -----------------------------------------------------------------------

    def encode_tokens(
        self, tokens: torch.Tensor, keep: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode only the kept tokens. Returns latents (B, K, D), their token ids (B, K), and validity (B, K).

        Rows may keep different numbers of tokens; they are packed to the longest and padding is not attended.
        """
        order = (~keep).to(torch.uint8).argsort(dim=1, stable=True)  # kept tokens first, in token order
        k = int(keep.sum(dim=1).max())
        ids = order[:, :k]
        valid = keep.gather(1, ids)
        x = tokens.gather(1, ids[..., None].expand(-1, -1, tokens.shape[-1]))
        attend = None if bool(valid.all()) else valid
        for block in self.encoder:
            x = block(x, attend)
        return self.encoder_norm(x), ids, valid

    def decode(
        self, latents: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor, action: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Fill every token position (mask token where not encoded), add the action token for MSDP-P, and
        predict each sensor in normalised units: vision patches (B, G*G, p*p*3), wrench (B, W*6), proprio (B, P)."""
        c = self.config
        b = latents.shape[0]
        x = self.decoder_embed(latents)
        mask = self.mask_token.expand(b, c.n_tokens, -1)
        x = torch.where(valid[..., None], x, mask[:, : x.shape[1]])
        full = mask.scatter(1, ids[..., None].expand(-1, -1, x.shape[-1]), x)
        full = full + self.decoder_pos_embed + self.decoder_modality_embed[self.token_modality]
        if action is not None:
            full = torch.cat([full, self.action_embed(self.normalizer.action(action))[:, None]], dim=1)
        for block in self.decoder:
            full = block(full)
        full = self.decoder_norm(full)
        return {
            "vision": self.vision_head(full[:, : c.vision_tokens]),
            "ft": self.ft_head(full[:, c.vision_tokens]),
            "proprio": self.proprio_head(full[:, c.vision_tokens + 1]),
        }

    # --- targets and losses ------------------------------------------------------------------------

    def targets(self, image: torch.Tensor, wrench: torch.Tensor, proprio: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalised sensors in the decoder's output layout."""
        return self.patchify(self.normalize(image, wrench, proprio))

    def patchify(self, sensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Normalised sensors (``normalize``) in the decoder's output layout: the image as (B, G*G, p*p*3)."""
        p, g = self.config.patch_size, self.config.vision_grid
        x = sensors["vision"]
        patches = x.reshape(-1, 3, g, p, g, p).permute(0, 2, 4, 3, 5, 1).reshape(-1, g * g, p * p * 3)
        return {**sensors, "vision": patches}

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """Decoder vision output -> (B, H, W, 3) uint8 image, for previews."""
        c, p, g = self.config, self.config.patch_size, self.config.vision_grid
        x = patches.reshape(-1, g, g, p, p, 3).permute(0, 1, 3, 2, 4, 5).reshape(-1, c.image_size, c.image_size, 3)
        x = x * self.normalizer.image_std + self.normalizer.image_mean
        return (x.clamp(0, 1) * 255).round().to(torch.uint8)

    def show_mask(self, image: torch.Tensor, keep: torch.Tensor, fill: torch.Tensor | None = None) -> torch.Tensor:
        """For previews: (B, H, W, 3) uint8 ``image`` where the encoder saw it, ``fill`` (default grey) elsewhere."""
        c = self.config
        patches = keep[:, : c.vision_tokens].reshape(-1, c.vision_grid, c.vision_grid)
        pixels = patches.repeat_interleave(c.patch_size, 1).repeat_interleave(c.patch_size, 2)[..., None]
        return torch.where(pixels, image, torch.full_like(image, 128) if fill is None else fill)

    def forward(self, batch: dict[str, torch.Tensor], keep: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One pretraining step's losses (per modality and ``loss``) and predictions.

        MSDP-R scores the reconstruction of the *masked* tokens of O_t (as MAE does: visible ones are easy).
        MSDP-P scores the prediction of *every* token of O_{t+1} from O_t and A_t (``next_*`` and ``action``).
        Absent sensors are never scored. ``keep`` overrides the random mask (e.g. to test fusion).
        """
        present = batch["present"]
        if keep is None:
            keep = self.random_keep(present)
        sensors = self.normalize(batch["image"], batch["wrench"], batch["proprio"])
        latents, ids, valid = self.encode_tokens(self.tokens(sensors), keep)
        if self.config.objective == "prediction":
            pred = self.decode(latents, ids, valid, batch["action"])
            target = self.targets(batch["next_image"], batch["next_wrench"], batch["next_proprio"])
            scored = self.token_present(batch["next_present"])
        else:
            pred = self.decode(latents, ids, valid)
            target = self.patchify(sensors)
            scored = self.token_present(present) & ~keep
        out: dict[str, torch.Tensor] = {}
        n_vision = self.config.vision_tokens
        weights = {"vision": scored[:, :n_vision], "ft": scored[:, n_vision], "proprio": scored[:, n_vision + 1]}
        for name in MODALITIES:
            error = (pred[name] - target[name]).pow(2).mean(dim=-1)
            w = weights[name].float()
            out[f"loss_{name}"] = (error * w).sum() / w.sum().clamp(min=1.0)
            out[f"scored_{name}"] = w.sum()
        out["loss"] = sum(out[f"loss_{m}"] for m in MODALITIES) / len(MODALITIES)
        out["pred"], out["keep"] = pred, keep  # type: ignore[assignment]
        return out

    # --- inference -------------------------------------------------------------------------------

    def embed(
        self, image: torch.Tensor, wrench: torch.Tensor, proprio: torch.Tensor, present: torch.Tensor
    ) -> Embedding:
        """Encoder features for RL: no random masking, absent sensors left out. Differentiable, so an encoder
        trained end to end (the scratch variant) learns through it; callers of a frozen encoder use no_grad.

        Pooled vector (the actor's input): mean over vision tokens, then mean over the present modalities.
        """
        token_present = self.token_present(present)
        tokens = self.tokenize(image, wrench, proprio)
        latents, ids, valid = self.encode_tokens(tokens, token_present)
        full = torch.zeros_like(tokens).scatter(
            1, ids[..., None].expand(-1, -1, tokens.shape[-1]), latents * valid[..., None]
        )
        pooled = pool_tokens(full, token_present, self.config.vision_tokens)
        return Embedding(full, token_present, pooled)
