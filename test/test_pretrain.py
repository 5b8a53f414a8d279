"""Pretraining from real bags end to end (tiny model, few updates): reports, checkpoint, held-out split, errors."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from msdp.config import ConfigError, from_dict, load_yaml
from msdp.node import load_params_file
from msdp_franka_driver.sim.collect import CollectConfig, collect_to_bags
from msdp_perception.dataset import BagDataset, find_bags
from msdp_perception.encoder import FrozenEncoder
from msdp_perception.encoder_node import EncoderNodeConfig
from msdp_perception.pretrain import PretrainConfig, SampleSource, split_indices, training_model, update

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = {"stem_channels": 8, "width": 32, "decoder_width": 32}
TINY = {"val_every": 10, "log_every": 5, "warmup_steps": 5, "val_block": 20, "model": TINY_MODEL}


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    out = tmp_path_factory.mktemp("bags")
    collect_to_bags(out, CollectConfig(samples=240, samples_per_bag=120), progress=False)
    return out


@pytest.mark.parametrize("objective", ["reconstruction", pytest.param("prediction", marks=pytest.mark.slow)])
def test_msdp_pretrain_writes_a_loadable_checkpoint_and_its_report(tmp_path, bags, objective):
    config = tmp_path / "pretrain.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "msdp.cli", "pretrain", "--bags", str(bags), "--objective", objective,
         "--steps", "20", "--out", str(out), "--config", str(config), "--cache", str(tmp_path / "cache")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "predicted from the other sensors" in result.stdout
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [10, 20]
    for key in ("val_vision", "val_ft", "val_proprio", "ft_explained_by_others", "proprio_explained_by_others"):
        assert np.isfinite(float(rows[-1][key])), key
    for name in ("preview.png", "curves.png"):
        assert (out / name).stat().st_size > 5_000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train"] + summary["held_out"] <= summary["samples"] and summary["held_out"] > 0
    assert set(summary["fusion"]) == {"ft", "proprio"}
    sidecar = json.loads((out / "encoder.json").read_text())
    assert sidecar["config"]["objective"] == objective and sidecar["training"]["steps"] == 20
    assert sidecar["provenance"]["git_revision"]
    encoder = FrozenEncoder.load(out / "encoder.safetensors")
    assert encoder.config.width == 32
    # the normalisation was fitted to the recorded data, not left at identity
    assert sidecar["normalization"]["proprio_std"] != [1.0] * 14
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/loss_vision", "train/loss_ft", "train/loss_proprio", "val/loss", "val/vision",
            "val/ft", "val/proprio", "fusion/ft_explained_by_others", "progress/updates_per_s",
            "progress/lr"} <= tags  # fmt: skip
    assert [e.step for e in events.Scalars("train/loss")] == [5, 10, 15, 20]  # log_every
    assert [e.step for e in events.Scalars("val/loss")] == [10, 20]  # val_every
    assert events.Scalars("val/loss")[-1].value == pytest.approx(float(rows[-1]["val_loss"]), rel=1e-5)
    assert events.Scalars("train/loss")[-1].value == pytest.approx(float(rows[-1]["loss"]), rel=1e-5)
    assert all(e.value > 0 for e in events.Scalars("progress/updates_per_s"))


def test_held_out_blocks_are_contiguous_and_disjoint_from_training(bags):
    dataset = BagDataset(find_bags([bags]), progress=False)
    config = from_dict(PretrainConfig, {"val_block": 20, "val_fraction": 0.25})
    train, val = split_indices(dataset, config, np.random.default_rng(0))
    assert not set(train) & set(val) and len(val) > 0
    assert set(val // 20).isdisjoint(set(train // 20))
    prediction = from_dict(PretrainConfig, {"model": {"objective": "prediction"}})
    train, val = split_indices(dataset, prediction, np.random.default_rng(0))
    assert (dataset.next_index[np.concatenate([train, val])] >= 0).all()


def test_bad_inputs_are_refused_with_the_reason(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a rosbag2 folder"):
        find_bags([tmp_path])
    with pytest.raises(ConfigError, match="unknown parameter.*'sync.ft_window'"):  # the sizes are the model's alone
        from_dict(PretrainConfig, {"sync": {"ft_window": 8}})
    with pytest.raises(ConfigError, match="lr"):
        from_dict(PretrainConfig, {"lr": 5.0})
    with pytest.raises(ConfigError, match="'log_every': 0"):
        from_dict(PretrainConfig, {"log_every": 0})


def test_bf16_updates_track_the_float32_losses(bags):
    """bf16 autocast changes how the update is computed, not what it learns: from the same weights and
    batches, the losses of a few updates stay close to plain float32's."""
    dataset = BagDataset(find_bags([bags]), progress=False)
    indices = np.arange(len(dataset))
    losses = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        config = from_dict(PretrainConfig, {**TINY, "precision": precision, "lr": 1e-3})
        model, optimizer = training_model(config, dataset, indices, torch.device("cpu"))
        source, rng = SampleSource(dataset, indices, successors=False), np.random.default_rng(0)
        torch.manual_seed(1)  # the same masks
        losses[precision] = [float(update(model, optimizer, source.sample(rng, 16), config.precision)["loss"].detach())
                        for _ in range(15)]  # fmt: skip
    assert losses["fp32"][-1] < 0.9 * losses["fp32"][0]  # it learns, so the comparison is not of constants
    np.testing.assert_allclose(losses["bf16"], losses["fp32"], rtol=0.03)


def test_shipped_perception_configs_validate():
    config = load_yaml(PretrainConfig, ROOT / "config" / "pretrain.yaml")
    assert (config.batch_size, config.lr, config.steps, config.model.mask_ratio) == (64, 3e-4, 30000, 0.7)
    with pytest.raises(ConfigError, match="checkpoint"):
        load_params_file(EncoderNodeConfig, ROOT / "config" / "encoder.yaml", "msdp_encoder")
    data = yaml.safe_load((ROOT / "config" / "encoder.yaml").read_text())
    assert from_dict(EncoderNodeConfig, {**data["msdp_encoder"]["ros__parameters"], "checkpoint": "x"}).rate == 10.0


def test_prediction_on_bags_without_actions_is_one_line_naming_the_bags(tmp_path, bags):
    """MSDP-P needs the recorded actions; a recording without /msdp/action is refused before any output."""
    from msdp_perception.bags import BagReader, BagWriter

    with BagReader(sorted(bags.iterdir())[0]) as reader, BagWriter(tmp_path / "no_actions") as writer:
        kept = [topic for topic in reader.topics if topic != "/msdp/action"]
        for topic in kept:
            writer.add_topic(topic, reader.topics[topic])
        for topic, _, timestamp, msg in reader.messages(kept):
            writer.write(topic, timestamp, msg)
    out = tmp_path / "runs" / "pretrain"
    result = subprocess.run(
        [sys.executable, "-m", "msdp.cli", "pretrain", "--bags", str(tmp_path / "no_actions"), "--objective",
         "prediction", "--steps", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    errors = [line for line in result.stderr.splitlines() if line.startswith("msdp ")]
    assert result.returncode == 1 and len(errors) == 1, result.stderr
    assert "no_actions: no recorded actions (/msdp/action)" in errors[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing half-created
