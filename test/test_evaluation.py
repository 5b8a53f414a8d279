"""msdp eval: per-episode results, the Wilson interval, videos, seeds disjoint from training, the run's own cell."""

import csv
import json
import shutil

import cv2
import numpy as np
import pytest
import torch
from test_training import SMALL

from msdp.cli import main as msdp
from msdp.config import ConfigError, from_dict
from msdp_franka_driver.sim.env import FrankaTaskEnv
from msdp_perception.checkpoint import save_encoder
from msdp_perception.model import MSDPConfig, MSDPModel
from msdp_policy.evaluation import (
    EVAL_BLOCK,
    EVAL_SEED_BASE,
    Perturbations,
    eval_seeds,
    evaluate_policy,
    training_seed,
    wilson_interval,
)
from msdp_policy.training import TrainConfig, train
from msdp_policy.video import STRIP_HEIGHT, VIEW_SIZE

STIFFNESS, LEASH = 500.0, 0.01  # the run's impedance and safety settings, both not the defaults
COLUMNS = ["episode", "seed", "success", "return", "length", "final_error_m"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run trained in a cell with a soft arm on a short leash; ``seeds`` are the scene seeds of its resets."""
    folder = tmp_path_factory.mktemp("evaluation")
    torch.manual_seed(0)
    encoder = save_encoder(folder / "encoder", MSDPModel(MSDPConfig(stem_channels=8, width=16, decoder_width=16)))
    cell = {"impedance": {"translational_stiffness": STIFFNESS}, "safety": {"max_target_distance": LEASH}}
    config = from_dict(TrainConfig, {**SMALL, "steps": 16, "eval_every": 16, "env": {**SMALL["env"], **cell}})
    seeds = []
    reset = FrankaTaskEnv.reset

    def recording_reset(self, seed=None):
        seeds.append(seed)
        return reset(self, seed)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(FrankaTaskEnv, "reset", recording_reset)
        train(config, encoder, folder / "run", progress=False)
    return {"folder": folder / "run", "seeds": seeds}


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_eval_writes_a_row_per_episode_a_summary_with_the_interval_and_a_video(run, tmp_path, capsys):
    out = tmp_path / "eval"
    policy = run["folder"] / "policy.safetensors"
    assert msdp(["eval", "--policy", str(policy), "--episodes", "3", "--seed", "2", "--video", "1", "--out", str(out),
                 "--device", "cpu"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    with open(out / "episodes.csv") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == COLUMNS
    assert [int(r["episode"]) for r in rows] == [0, 1, 2]
    assert [int(r["seed"]) for r in rows] == list(eval_seeds(2, 3))
    assert eval_seeds(2, 3)[0] == EVAL_SEED_BASE + 2 * EVAL_BLOCK
    assert all(1 <= int(r["length"]) <= 8 and float(r["final_error_m"]) > 0 for r in rows)

    summary = json.loads((out / "summary.json").read_text())
    successes = sum(int(r["success"]) for r in rows)
    assert summary["episodes"] == 3 and summary["successes"] == successes
    assert summary["wilson_95"] == pytest.approx(list(wilson_interval(successes, 3)))
    assert summary["return"] == pytest.approx(np.mean([float(r["return"]) for r in rows]))
    assert summary["seeds"] == {"block": 2, "first": int(rows[0]["seed"]), "last": int(rows[-1]["seed"])}
    assert summary["policy"] == str(policy.resolve()) and summary["device"] == "cpu" and summary["videos"] == 1
    assert summary["perturbations"] == {"image_noise": 0.0, "ft_noise": 0.0, "stiffness": None, "mass_scale": 1.0,
                                        "friction_scale": 1.0}  # fmt: skip
    low, high = summary["wilson_95"]
    assert f"95 % Wilson interval {low:.0%}-{high:.0%}" in printed
    assert f"seeds {rows[0]['seed']}-{rows[-1]['seed']}" in printed and str(out) in printed

    assert sorted(p.name for p in (out / "videos").iterdir()) == ["episode_000.mp4"]
    video = cv2.VideoCapture(str(out / "videos" / "episode_000.mp4"))
    frames = []
    while (frame := video.read())[0]:
        frames.append(frame[1])
    assert len(frames) == int(rows[0]["length"]) + 1  # the first observation, then one per step
    assert frames[0].shape == (VIEW_SIZE[1] + STRIP_HEIGHT, VIEW_SIZE[1] + VIEW_SIZE[0], 3)


def test_the_wilson_interval_of_known_counts():
    assert wilson_interval(0, 50) == pytest.approx((0.0, 0.0714), abs=5e-4)
    assert wilson_interval(45, 50) == pytest.approx((0.7864, 0.9565), abs=5e-4)
    assert wilson_interval(50, 50) == pytest.approx((0.9286, 1.0), abs=5e-4)
    assert wilson_interval(10, 20) == pytest.approx((0.2993, 0.7007), abs=5e-4)


def test_evaluation_seeds_are_never_training_seeds(run):
    evaluation = set(eval_seeds(0, 1))
    training = [seed for seed in run["seeds"] if seed not in evaluation]
    assert len(training) >= 2 and evaluation <= set(run["seeds"])  # the run reset for both
    assert max(training) < EVAL_SEED_BASE
    drawn = [training_seed(np.random.default_rng(seed)) for seed in range(2000)]
    assert max(drawn) < EVAL_SEED_BASE <= min(eval_seeds(0, EVAL_BLOCK))
    assert max(eval_seeds(0, EVAL_BLOCK)) < min(eval_seeds(1, 1))  # seed blocks do not overlap either
    with pytest.raises(ConfigError, match="parameter 'episodes': at most 100000"):
        eval_seeds(0, EVAL_BLOCK + 1)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--video", "-1"], "parameter 'video': expected an integer from 0 to 2, got -1"),
        (["--video", "3"], "parameter 'video': expected an integer from 0 to 2, got 3"),
        (["--seed", "-1"], "parameter 'seed': expected an integer from 0 to"),
    ],
)
def test_bad_settings_are_one_line_and_leave_no_folder(run, tmp_path, capsys, flags, expected):
    out = tmp_path / "new" / "eval"
    policy = str(run["folder"] / "policy.safetensors")
    assert msdp(["eval", "--policy", policy, "--episodes", "2", "--out", str(out), *flags]) == 2
    assert expected in one_line(capsys)
    assert not (tmp_path / "new").exists()


def test_existing_results_are_never_overwritten(run, tmp_path, capsys):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    policy = str(run["folder"] / "policy.safetensors")
    assert msdp(["eval", "--policy", policy, "--episodes", "1", "--out", str(out)]) == 2
    assert f"--out {out} already exists" in one_line(capsys)
    assert (out / "summary.json").read_text() == "{}"


def test_the_run_is_evaluated_in_the_cell_it_trained_in(run, tmp_path):
    """The run's impedance and safety come from its config.json (one folder up for a kept checkpoint); the same
    policy outside its run folder acts in the default cell and ends its episodes elsewhere."""
    folder = run["folder"]
    own = evaluate_policy(folder / "policy.safetensors", 2)
    assert own["cell"] == str(folder / "config.json")
    assert own["impedance"]["translational_stiffness"] == STIFFNESS and own["safety"]["max_target_distance"] == LEASH
    kept = evaluate_policy(folder / "checkpoints" / "policy_0000016.safetensors", 2)
    assert kept["cell"] == own["cell"] and kept["final_error_m"] == own["final_error_m"]
    stiffer = evaluate_policy(folder / "policy.safetensors", 1, Perturbations(stiffness=1500.0))
    assert stiffer["impedance"]["translational_stiffness"] == 1500.0 and stiffer["safety"] == own["safety"]

    alone = tmp_path / "alone"
    alone.mkdir()
    for name in ("policy.safetensors", "policy.json"):
        shutil.copy(folder / name, alone / name)
    default = evaluate_policy(alone / "policy.safetensors", 2)
    assert default["cell"].startswith("default") and default["impedance"]["translational_stiffness"] == 2000.0
    errors = [[r.final_error_m for r in result["episode_results"]] for result in (own, default)]
    assert errors[0] != errors[1]

    (alone / "config.json").write_text(json.dumps({"env": {"task": {"max_episode_steps": 9}}}))
    with pytest.raises(ConfigError, match="not the config of .*'s run"):
        evaluate_policy(alone / "policy.safetensors", 1)
