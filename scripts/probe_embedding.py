"""Diagnostic: how precisely do frozen MSDP embeddings tell where the peg is relative to the hole?

Peg insertion needs the tip within the hole's clearance (3 mm); the hole's position and yaw are random and
visible only to the camera. This fits ridge-regression probes from different views of the embedding to the
true tip-to-hole offset (x, y) and yaw error, on bags that carry /franka/ee_pose and /msdp/task_goal (from
``msdp collect``), with the last 20 % of samples held out, and prints the held-out error, over all of them and
over those with the tip within 3 cm of the hole; for the actor's input also that of a 2-layer MLP probe.
Not part of the product; run it by hand:

    .venv/bin/msdp collect --out data/peg_probe --samples 6000 --seed 7
    .venv/bin/python scripts/probe_embedding.py --bags data/peg_probe --encoder runs/pretrain_peg_r/encoder.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from msdp_franka_driver.pose import quat_yaw
from msdp_perception.checkpoint import load_encoder
from msdp_perception.dataset import BagDataset, find_bags
from msdp_perception.model import MSDPModel
from msdp_policy.offline import poses_and_goals
from msdp_policy.tasks import peg_yaw_error

NEAR = 0.03  # m: where the last centimetres of alignment happen


def ridge_predict(train_x, train_y, test_x, strength: float = 1.0) -> np.ndarray:
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mean) / std, (test_x - mean) / std
    a, b = np.hstack([a, np.ones((len(a), 1))]), np.hstack([b, np.ones((len(b), 1))])
    weights = np.linalg.solve(a.T @ a + strength * len(a) * 1e-3 * np.eye(a.shape[1]), a.T @ train_y)
    return b @ weights


def errors(predicted: np.ndarray, truth: np.ndarray) -> str:
    """Held-out RMSE of (x, y, yaw), over all samples and over those with the tip within NEAR of the hole."""
    near = np.linalg.norm(truth[:, :2], axis=1) < NEAR
    parts = []
    for label, rows in (("", slice(None)), (" | near: ", near)):
        rmse = np.sqrt(((predicted[rows] - truth[rows]) ** 2).mean(0))
        parts.append(f"{label}x {1e3 * rmse[0]:5.1f} mm, y {1e3 * rmse[1]:5.1f} mm, yaw {rmse[2]:.3f} rad")
    return "".join(parts)


def mlp_predict(train_x, train_y, test_x, epochs: int = 300) -> np.ndarray:
    """The actor's capacity: a 2 x 256 ReLU MLP, full-batch Adam, targets standardised."""
    torch.manual_seed(0)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    y_mean, y_std = train_y.mean(0), train_y.std(0)
    a = torch.tensor((train_x - mean) / std, dtype=torch.float32)
    b = torch.tensor((test_x - mean) / std, dtype=torch.float32)
    target = torch.tensor((train_y - y_mean) / y_std, dtype=torch.float32)
    net = torch.nn.Sequential(
        torch.nn.Linear(a.shape[1], 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, train_y.shape[1]),
    )  # fmt: skip
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    for _ in range(epochs):
        loss = (net(a) - target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return net(b).numpy() * y_std + y_mean


def supervised_predict(data: dict[str, np.ndarray], y: np.ndarray, split: int, config, steps: int) -> np.ndarray:
    """The same encoder network from random weights, trained by regression on the pooled vector: what the
    pixels and the architecture allow when the features are learnt for this target (not by reconstruction)."""
    torch.manual_seed(0)
    model = MSDPModel(config)
    head = torch.nn.Linear(config.width, y.shape[1])
    y_mean, y_std = y[:split].mean(0), y[:split].std(0)
    target = torch.tensor((y - y_mean) / y_std, dtype=torch.float32)
    optimizer = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=1e-3)
    rng = np.random.default_rng(0)
    tensors = {k: torch.from_numpy(v) for k, v in data.items()}

    def predict(index: np.ndarray) -> torch.Tensor:
        return head(model.embed(*(tensors[k][index] for k in ("images", "wrench", "proprio", "present"))).pooled)

    for _ in range(steps):
        index = rng.integers(split, size=64)
        loss = (predict(index) - target[index]).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        held_out = np.arange(split, len(y))
        predicted = np.concatenate([predict(held_out[i : i + 256]).numpy() for i in range(0, len(held_out), 256)])
    return predicted * y_std + y_mean


def pixel_cnn_rmse(images: np.ndarray, hole: np.ndarray, split: int, steps: int) -> np.ndarray:
    """A small CNN with a spatial (flattened, not pooled) readout, trained to regress the hole's x, y and yaw
    from the camera image alone: whether the 64x64 pixels hold the hole's pose at all."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 5, stride=2, padding=2), torch.nn.ReLU(),
        torch.nn.Conv2d(32, 64, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(64, 64, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(64 * (images.shape[1] // 8) ** 2, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, hole.shape[1]),
    )  # fmt: skip
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean, std = hole[:split].mean(0), hole[:split].std(0)
    target = torch.tensor((hole - mean) / std, dtype=torch.float32)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        index = rng.integers(split, size=64)
        loss = (net(x[index]) - target[index]).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predicted = net(x[split:]).numpy() * std + mean
    return np.sqrt(((predicted - hole[split:]) ** 2).mean(0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bags", nargs="+", required=True)
    parser.add_argument("--encoder", required=True)
    parser.add_argument("--supervised-steps", type=int, default=0, help="also train the network by regression")
    parser.add_argument("--pixel-cnn-steps", type=int, default=0, help="also fit a CNN: hole pose from pixels")
    args = parser.parse_args()
    model, _ = load_encoder(args.encoder)
    model.eval()
    features: dict[str, list[np.ndarray]] = {
        "pooled": [],
        "pooled + F/T + joint tokens": [],
        "4x4 grid + F/T + joint": [],
    }
    targets, proprio, raw, holes = [], [], [], []
    for bag in find_bags([Path(b) for b in args.bags]):
        data = BagDataset([bag], progress=False)
        poses, goals = poses_and_goals(bag, np.round(data.stamps * 1e9).astype(np.int64))
        with torch.no_grad():
            for start in range(0, len(data), 256):
                s = slice(start, start + 256)
                out = model.embed(
                    *(torch.from_numpy(a[s]) for a in (data.images, data.wrench, data.proprio, data.present))
                )
                tokens, grid = out.tokens.numpy(), model.config.vision_grid
                vision = tokens[:, : grid * grid].reshape(len(tokens), grid, grid, -1)
                coarse = (
                    vision.reshape(len(tokens), 4, grid // 4, 4, grid // 4, -1).mean((2, 4)).reshape(len(tokens), -1)
                )
                features["pooled"].append(out.pooled.numpy())
                features["pooled + F/T + joint tokens"].append(
                    np.hstack([out.pooled.numpy(), tokens[:, -2], tokens[:, -1]])
                )
                features["4x4 grid + F/T + joint"].append(np.hstack([coarse, tokens[:, -2], tokens[:, -1]]))
        for pose, goal in zip(poses, goals, strict=True):
            yaw = peg_yaw_error(pose[3:], quat_yaw(goal[3:]))
            targets.append([*(pose[:2] - goal[:2]), yaw])
            holes.append([goal[0], goal[1], quat_yaw(goal[3:])])
        proprio.append(data.proprio)
        raw.append({"images": data.images, "wrench": data.wrench, "proprio": data.proprio, "present": data.present})
    y = np.array(targets)
    split = int(0.8 * len(y))
    print(
        f"{len(y)} samples ({split} fit, {len(y) - split} held out); spread of the targets (std): "
        f"x {1e3 * y[:, 0].std():.1f} mm, y {1e3 * y[:, 1].std():.1f} mm, yaw {y[:, 2].std():.3f} rad"
    )
    views = {"joint state only (no camera)": np.concatenate(proprio)}
    views.update({name: np.concatenate(parts) for name, parts in features.items()})
    near = np.linalg.norm(y[split:, :2], axis=1) < NEAR
    print(f"near: the {near.sum()} held-out samples with the tip within {1e3 * NEAR:.0f} mm of the hole's axis")
    for name, x in views.items():
        print(f"{name:32s} linear RMSE: {errors(ridge_predict(x[:split], y[:split], x[split:]), y[split:])}")
    x = views["pooled"]
    predicted = mlp_predict(x[:split], y[:split], x[split:])
    print(f"{'pooled (the actor input)':32s} MLP    RMSE: {errors(predicted, y[split:])}")
    if args.supervised_steps:
        arrays = {k: np.concatenate([part[k] for part in raw]) for k in raw[0]}
        predicted = supervised_predict(arrays, y, split, model.config, args.supervised_steps)
        print(f"{'same network, trained to regress':32s} RMSE:        {errors(predicted, y[split:])}")
    if args.pixel_cnn_steps:
        images = np.concatenate([part["images"] for part in raw])
        rmse = pixel_cnn_rmse(images, np.array(holes), split, args.pixel_cnn_steps)
        hole_std = np.array(holes).std(0)
        print(
            f"hole pose from pixels (CNN)      RMSE: x {1e3 * rmse[0]:5.1f} mm, y {1e3 * rmse[1]:5.1f} mm, "
            f"yaw {rmse[2]:.3f} rad (spread {1e3 * hole_std[0]:.0f} mm, {1e3 * hole_std[1]:.0f} mm, "
            f"{hole_std[2]:.2f} rad)"
        )


if __name__ == "__main__":
    main()
