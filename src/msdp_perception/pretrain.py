"""Offline MSDP pretraining from rosbags: ``msdp pretrain --bags DIR... --objective reconstruction|prediction``.

Writes to the output folder: ``encoder.safetensors`` + ``encoder.json`` (the checkpoint, refreshed at every
validation), ``metrics.csv`` (train and held-out loss per modality against the step), ``curves.png``,
``preview.png`` (held-out originals next to reconstructions, F/T and joint traces), ``summary.json``
(final losses and the fusion check: how well each low-dimensional sensor is predicted from the others) and
``tensorboard/`` (the training losses, update rate and learning rate every ``log_every`` updates, and each
validation's held-out losses and fusion check; ``tensorboard --logdir <out>/tensorboard``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from msdp import vocabulary as vocab
from msdp.config import param_range, to_dict
from msdp.devices import DEVICES, PRECISIONS, autocast, resolve_device
from msdp.metrics import write_rows, write_scalars
from msdp.seeding import seed_run
from msdp_perception.bags import BagError
from msdp_perception.checkpoint import save_encoder
from msdp_perception.dataset import BagDataset, find_bags
from msdp_perception.model import MSDPConfig, MSDPModel
from msdp_perception.observation import MODALITIES, SyncConfig


@dataclass(frozen=True)
class PretrainConfig:
    """Optimisation settings; the paper's are batch 64, learning rate 3e-4, 30,000 updates (simulation)."""

    model: MSDPConfig = field(default_factory=MSDPConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    steps: int = field(default=30000, metadata=param_range(1, 10_000_000, "updates"))
    batch_size: int = field(default=64, metadata=param_range(1, 4096, "samples per update"))
    lr: float = field(default=3e-4, metadata=param_range(1e-6, 1e-1, "AdamW peak learning rate"))
    weight_decay: float = field(default=0.05, metadata=param_range(0.0, 1.0, "AdamW, not stated in the paper"))
    warmup_steps: int = field(default=500, metadata=param_range(0, 1_000_000, "linear warm-up, then cosine decay"))
    val_fraction: float = field(default=0.1, metadata=param_range(0.0, 0.5, "held-out share of the samples"))
    val_block: int = field(default=100, metadata=param_range(1, 100_000, "samples per contiguous held-out block"))
    val_every: int = field(default=1000, metadata=param_range(1, 10_000_000, "updates between validations"))
    val_samples: int = field(default=1024, metadata=param_range(16, 1_000_000, "held-out samples per validation"))
    seed: int = field(default=0, metadata=param_range(0, 2**31 - 1))
    device: str = field(default="auto", metadata={"choices": DEVICES, "doc": "auto: a CUDA GPU if torch has one"})
    precision: str = field(default="fp32", metadata={"choices": PRECISIONS, "doc": "bf16: autocast in the updates"})
    log_every: int = field(default=50, metadata=param_range(1, 1_000_000, "updates between TensorBoard points"))


class SampleSource:
    """Batches of tensors drawn from a ``BagDataset``; with ``successors`` (MSDP-P) also the action and the
    sample it led to (MSDP-R leaves them out: gathering a second batch of images is wasted there)."""

    def __init__(
        self, dataset: BagDataset, indices: np.ndarray, device: torch.device | None = None, successors: bool = True
    ):
        self.dataset, self.indices, self.successors = dataset, indices, successors
        self.device = device or torch.device("cpu")

    def batch(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        """The samples ``idx`` (and their successors) as tensors on the source's device."""
        d = self.dataset
        out = {
            "image": torch.from_numpy(d.images[idx]),
            "wrench": torch.from_numpy(d.wrench[idx]),
            "proprio": torch.from_numpy(d.proprio[idx]),
            "present": torch.from_numpy(d.present[idx]),
        }
        if self.successors:
            nxt = np.where(d.next_index[idx] >= 0, d.next_index[idx], idx)
            out.update(
                action=torch.from_numpy(np.nan_to_num(d.actions[idx])),
                next_image=torch.from_numpy(d.images[nxt]),
                next_wrench=torch.from_numpy(d.wrench[nxt]),
                next_proprio=torch.from_numpy(d.proprio[nxt]),
                next_present=torch.from_numpy(d.present[nxt]),
            )
        return out if self.device.type == "cpu" else {k: v.to(self.device, non_blocking=True) for k, v in out.items()}

    def sample(self, rng: np.random.Generator, size: int) -> dict[str, torch.Tensor]:
        return self.batch(self.indices[rng.integers(len(self.indices), size=size)])


def split_indices(
    dataset: BagDataset, config: PretrainConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Train and held-out sample indices, held out in contiguous blocks so neighbouring frames do not leak."""
    usable = np.arange(len(dataset))
    bags = ", ".join(str(path) for path in dataset.paths)
    if config.model.objective == "prediction":
        usable = usable[dataset.next_index[usable] >= 0]
        if len(usable) == 0:
            raise BagError(f"{bags}: no recorded actions ({vocab.ACTION.name}), which the prediction objective needs")
    if len(usable) < 2:
        raise BagError(f"{bags}: only {len(usable)} usable samples; pretraining needs at least 2")
    blocks = usable // config.val_block
    unique = np.unique(blocks)
    n_val = min(len(unique) - 1, round(len(unique) * config.val_fraction)) if config.val_fraction > 0 else 0
    held_out = rng.choice(unique, size=n_val, replace=False)
    is_val = np.isin(blocks, held_out)
    return usable[~is_val], usable[is_val]


def fit_normalizer(model: MSDPModel, dataset: BagDataset, train: np.ndarray) -> None:
    present = dataset.present[train]
    stride = max(1, len(train) // 5000)
    model.normalizer.fit(
        dataset.images[train[::stride]],
        dataset.wrench[train[present[:, 1]]],
        dataset.proprio[train[present[:, 2]]],
        dataset.actions[train],
    )


def training_model(
    config: PretrainConfig, dataset: BagDataset, train: np.ndarray, device: torch.device
) -> tuple[MSDPModel, torch.optim.AdamW]:
    """The model with its normaliser fitted to the ``train`` samples, on ``device``, and its AdamW: one place
    for ``pretrain`` and ``bench/pretrain.py``.

    AdamW is fused (one kernel over all parameters; the default loops over them in Python).
    """
    model = MSDPModel(config.model)
    fit_normalizer(model, dataset, train)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True)
    return model, optimizer


def update(
    model: MSDPModel, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor], precision: str
) -> dict[str, torch.Tensor]:
    """One pretraining update on ``batch``; returns the model's outputs (losses still on the device)."""
    with autocast(batch["image"].device, precision):
        out = model(batch)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    optimizer.step()
    return out


def tensorboard_tag(column: str) -> str:
    """The TensorBoard tag of a metrics column: ``val/``, ``fusion/``, ``progress/`` or ``train/``."""
    if column.startswith("val_"):
        return f"val/{column.removeprefix('val_')}"
    if column.endswith("_explained_by_others"):
        return f"fusion/{column}"
    if column in ("updates_per_s", "lr"):
        return f"progress/{column}"
    return f"train/{column}"


def learning_rate(step: int, config: PretrainConfig) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def evaluate(model: MSDPModel, source: SampleSource, n: int, seed: int = 0) -> dict[str, float]:
    """Held-out loss per modality with a fixed random mask (comparable across validations)."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    totals = {m: [0.0, 0.0] for m in MODALITIES}
    for start in range(0, min(n, len(source.indices)), 256):
        batch = source.batch(source.indices[start : min(start + 256, n)])
        keep = model.random_keep(batch["present"].cpu(), generator).to(source.device)  # the same mask anywhere
        out = model(batch, keep=keep)
        for m in MODALITIES:
            totals[m][0] += float(out[f"loss_{m}"]) * float(out[f"scored_{m}"])
            totals[m][1] += float(out[f"scored_{m}"])
    model.train()
    losses = {f"val_{m}": s / max(w, 1.0) for m, (s, w) in totals.items()}
    losses["val_loss"] = sum(losses.values()) / len(MODALITIES)
    return losses


@torch.no_grad()
def fusion_check(model: MSDPModel, source: SampleSource, n: int) -> dict[str, dict[str, float]]:
    """Mask one low-dimensional sensor and predict it from the others; compare with predicting the mean.

    Errors are mean squared errors in normalised units on held-out samples where every sensor is present; the
    mean predictor's error is the target's mean square (the normalisation centres on the training mean).
    ``explained`` = 1 - model / mean: 0 means no better than the mean, 1 means exact.
    """
    model.eval()
    d = source.dataset
    complete = source.indices[d.present[source.indices].all(axis=1)][:n]
    report: dict[str, dict[str, float]] = {}
    if len(complete) == 0:
        return report
    for masked, modality in ((model.config.vision_tokens, "ft"), (model.config.vision_tokens + 1, "proprio")):
        model_error = baseline = 0.0
        for start in range(0, len(complete), 256):
            batch = source.batch(complete[start : start + 256])
            keep = torch.ones(len(batch["image"]), model.config.n_tokens, dtype=torch.bool, device=source.device)
            keep[:, masked] = False
            out = model(batch, keep=keep)
            prefix = "next_" if model.config.objective == "prediction" else ""
            target = model.targets(batch[f"{prefix}image"], batch[f"{prefix}wrench"], batch[f"{prefix}proprio"])
            model_error += float((out["pred"][modality] - target[modality]).pow(2).mean(-1).sum())
            baseline += float(target[modality].pow(2).mean(-1).sum())
        model_error, baseline = model_error / len(complete), baseline / len(complete)
        report[modality] = {"model_mse": model_error, "mean_mse": baseline, "explained": 1 - model_error / baseline}
    model.train()
    return report


def pretrain(
    bags: list[Path], out_dir: Path, config: PretrainConfig, cache_dir: Path | None = None, progress: bool = True
) -> dict:
    """Train an MSDP encoder on the bags; returns the summary also written to ``summary.json``."""
    from msdp_perception.preview import plot_curves, plot_preview

    rng = seed_run(config.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    bag_paths = find_bags(bags)
    dataset = BagDataset(
        bag_paths, spec=config.model.observation_spec, sync=config.sync, cache_dir=cache_dir, progress=progress
    )
    train_idx, val_idx = split_indices(dataset, config, rng)
    device = resolve_device(config.device)
    successors = config.model.objective == "prediction"
    train, val = (SampleSource(dataset, idx, device, successors) for idx in (train_idx, val_idx))
    model, optimizer = training_model(config, dataset, train_idx, device)
    preview_idx = val_idx[:: max(1, len(val_idx) // 4)][:4] if len(val_idx) else train_idx[:4]

    training = {
        "bags": [str(b) for b in bag_paths],
        "samples": len(dataset),
        "train": len(train_idx),
        "held_out": len(val_idx),
        "pretrain": to_dict(config),
    }
    rows: list[dict[str, float]] = []
    fusion: dict[str, dict[str, float]] = {}
    running: dict[str, torch.Tensor] = {}
    started = window_started = time.monotonic()
    window_step = 0
    tensorboard = SummaryWriter(str(out_dir / "tensorboard"))
    bar = tqdm(range(config.steps), desc=f"pretrain {config.model.objective}", disable=not progress, unit="step")
    for step in bar:
        lr = learning_rate(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        out = update(model, optimizer, train.sample(rng, config.batch_size), config.precision)
        for key in ("loss", *(f"loss_{m}" for m in MODALITIES)):  # on the device: reading one waits for it
            value = out[key].detach().float()
            running[key] = 0.98 * running[key] + 0.02 * value if step else value
        if (step + 1) % config.log_every == 0:
            now = time.monotonic()
            losses = {key: float(value) for key, value in running.items()}
            rate = (step + 1 - window_step) / (now - window_started)
            write_scalars(tensorboard, tensorboard_tag, {**losses, "updates_per_s": rate, "lr": lr}, step + 1)
            bar.set_postfix(loss=f"{losses['loss']:.3f}", refresh=False)
            window_started, window_step = now, step + 1
        if (step + 1) % config.val_every == 0 or step + 1 == config.steps:
            validation_started = time.monotonic()
            row = {"step": step + 1, "seconds": time.monotonic() - started, **{k: float(v) for k, v in running.items()}}
            if len(val_idx):
                row.update(evaluate(model, val, config.val_samples))
                fusion = fusion_check(model, val, config.val_samples)
                row.update({f"{m}_explained_by_others": f["explained"] for m, f in fusion.items()})
                held_out = {
                    k: v
                    for k, v in row.items()
                    if k not in ("step", "seconds") and not tensorboard_tag(k).startswith("train/")
                }  # the training losses went in at log_every
                write_scalars(tensorboard, tensorboard_tag, held_out, step + 1)
            rows.append(row)
            write_rows(out_dir / "metrics.csv", rows)
            plot_curves(rows, out_dir / "curves.png")
            plot_preview(model, val if len(val_idx) else train, preview_idx, out_dir / "preview.png")
            save_encoder(out_dir / "encoder", model, {**training, "steps": step + 1, "metrics": row})
            window_started += time.monotonic() - validation_started  # the update rate leaves validation out
    tensorboard.close()

    summary = {
        **training,
        "steps": config.steps,
        "seconds": time.monotonic() - started,
        "final": rows[-1],
        "fusion": fusion,
        "checkpoint": str(out_dir / "encoder.safetensors"),
    }
    save_encoder(out_dir / "encoder", model, summary)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
