"""Pretraining pictures: loss curves per modality, and held-out samples next to what the model made of them."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from msdp_perception.model import MSDPModel  # noqa: E402
from msdp_perception.observation import MODALITIES  # noqa: E402

FT_LABELS = ("fx", "fy", "fz", "tx", "ty", "tz")


def plot_curves(rows: list[dict[str, float]], path: Path) -> None:
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, m in enumerate(MODALITIES):
        ax.plot(steps, [r[f"loss_{m}"] for r in rows], color=f"C{i}", label=f"train {m}")
        if f"val_{m}" in rows[0]:
            ax.plot(steps, [r[f"val_{m}"] for r in rows], color=f"C{i}", ls="--", label=f"held-out {m}")
    ax.set(xlabel="update", ylabel="MSE (normalised units)", yscale="log", title="MSDP pretraining loss")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@torch.no_grad()
def plot_preview(model: MSDPModel, source, indices: np.ndarray, path: Path, seed: int = 0) -> None:
    """Per sample: encoder input (masked patches grey), target, prediction, F/T window and joint values."""
    was_training = model.training
    model.eval()
    batch = source.batch(indices)
    present = batch["present"]
    keep = model.random_keep(present.cpu(), torch.Generator().manual_seed(seed)).to(present.device)
    out = model(batch, keep=keep)
    prefix = "next_" if model.config.objective == "prediction" else ""
    target = model.targets(batch[f"{prefix}image"], batch[f"{prefix}wrench"], batch[f"{prefix}proprio"])
    predicted_image = model.unpatchify(out["pred"]["vision"])
    if not prefix:  # MSDP-R: show what it reconstructed, in place of what it did not see (as MAE does)
        predicted_image = model.show_mask(batch["image"], keep, fill=predicted_image)
    predicted_image = predicted_image.cpu().numpy()
    c = model.config
    masked_input = model.show_mask(batch["image"], keep).cpu().numpy()

    n = len(indices)
    fig, axes = plt.subplots(n, 5, figsize=(13, 2.4 * n), squeeze=False)
    titles = ("encoder input", "target" if prefix else "original", "prediction" if prefix else "seen + reconstructed")
    for row in range(n):
        ax = axes[row]
        for col, image in enumerate(
            (masked_input[row], batch[f"{prefix}image"][row].cpu().numpy(), predicted_image[row])
        ):
            ax[col].imshow(image)
            ax[col].axis("off")
        ft_true = target["ft"][row].reshape(c.ft_window, 6).cpu().numpy()
        ft_pred = out["pred"]["ft"][row].reshape(c.ft_window, 6).cpu().numpy()
        for ch in range(6):
            ax[3].plot(ft_true[:, ch], color=f"C{ch}", label=FT_LABELS[ch])
            ax[3].plot(ft_pred[:, ch], color=f"C{ch}", ls="--")
        ax[3].set_xlabel("reading (solid: true, dashed: predicted)", fontsize=7)
        ft_seen = "seen" if keep[row, c.vision_tokens] else "masked"
        ax[4].bar(np.arange(c.proprio_dim) - 0.2, target["proprio"][row].cpu().numpy(), 0.4, label="true")
        ax[4].bar(np.arange(c.proprio_dim) + 0.2, out["pred"]["proprio"][row].cpu().numpy(), 0.4, label="predicted")
        joints_seen = "seen" if keep[row, c.vision_tokens + 1] else "masked"
        ax[3].set_title(f"F/T (normalised), token {ft_seen}", fontsize=8)
        ax[4].set_title(f"q, dq (normalised), token {joints_seen}", fontsize=8)
        if row == 0:
            for col, title in enumerate(titles):
                ax[col].set_title(title, fontsize=8)
            ax[3].legend(fontsize=6, ncol=3)
            ax[4].legend(fontsize=6)
    fig.suptitle(f"MSDP-{'P' if prefix else 'R'} on held-out samples ({c.mask_ratio:.0%} of tokens masked)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    model.train(was_training)
