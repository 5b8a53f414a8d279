"""The fast in-process loop (msdp train / msdp eval): evaluation rows, checkpoints, resume, variants, errors."""

import csv
import itertools
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from msdp.cli import main as msdp
from msdp.config import ConfigError, from_dict
from msdp.metrics import read_rows, write_rows
from msdp_perception.checkpoint import save_encoder
from msdp_perception.model import MSDPConfig, MSDPModel
from msdp_policy import training
from msdp_policy.evaluation import Perturbations, evaluate, evaluate_policy
from msdp_policy.policy import load_policy
from msdp_policy.training import TrainConfig, Trainer, train
from msdp_policy.transition_log import LOG_FILE, CorruptRecordWarning, TransitionReader

SMALL = {
    "steps": 40, "random_steps": 20, "update_after": 10, "eval_every": 20, "eval_episodes": 1,
    "agent": {"hidden": 16, "batch_size": 8},
    "env": {"task": {"max_episode_steps": 8}}, "learner_process": False,  # in turn: exact, and no spawn per test
}  # fmt: skip


@pytest.fixture
def encoder(tmp_path):
    torch.manual_seed(0)
    return save_encoder(tmp_path / "encoder", MSDPModel(MSDPConfig(stem_channels=8, width=16, decoder_width=16)))


def rows(run) -> list[dict[str, str]]:
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_train_evaluates_checkpoints_and_resumes_where_it_stopped(tmp_path, encoder, capsys):
    run = tmp_path / "run"
    summary = train(from_dict(TrainConfig, SMALL), encoder, run, progress=False)
    assert summary["env_steps"] == 40
    assert [int(r["env_steps"]) for r in rows(run)] == [0, 20, 40]
    assert (run / "curves.png").stat().st_size > 0 and (run / "agent.pt").exists()
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("eval/success_rate")] == [0, 20, 40]
    kept = sorted(p.name for p in (run / "checkpoints").glob("*.safetensors"))
    assert kept == ["policy_0000000.safetensors", "policy_0000020.safetensors", "policy_0000040.safetensors"]
    assert load_policy(run / "checkpoints" / kept[1]).info.training["env_steps"] == 20
    log = TransitionReader(run / "transitions").arrays
    assert int((~log["final"]).sum()) == 40 and log["final"].sum() == 5  # 8-step episodes

    with pytest.raises(ConfigError, match="--resume"):
        train(from_dict(TrainConfig, SMALL), encoder, run, progress=False)
    resumed = train(from_dict(TrainConfig, {**SMALL, "steps": 60}), encoder, run, resume=True, progress=False)
    assert resumed["env_steps"] == 60
    table = rows(run)
    assert [int(r["env_steps"]) for r in table] == [0, 20, 40, 60]
    assert int(table[-1]["critic_updates"]) == 2 * (60 - 10 + 1)  # the ratio held across the restart

    sampled = [evaluate_policy(run / "policy.safetensors", 2, deterministic=False)["return"] for _ in range(2)]
    assert sampled[0] == sampled[1]  # msdp eval --stochastic repeats
    policy = load_policy(run / "policy.safetensors")
    assert policy.info.training["env_steps"] == 60 and policy.info.task["max_episode_steps"] == 8
    code = msdp(["eval", "--policy", str(run / "policy.safetensors"), "--episodes", "2", "--image-noise", "20",
                 "--ft-noise", "1", "--stiffness", "1500"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "over 2 episodes" in out and "image_noise 20.0" in out and "stiffness 1500.0" in out
    shutil.copytree(run, tmp_path / "other" / "run")  # a second run with the same folder name
    assert msdp(["curves", str(run), str(tmp_path / "other" / "run"), "--out", str(tmp_path / "both.png")]) == 0
    assert "2 run(s)" in capsys.readouterr().out and (tmp_path / "both.png").stat().st_size > 10_000


def test_the_same_seed_gives_the_same_run_step_for_step_and_another_seed_does_not(tmp_path, encoder):
    """In turn, a run is a function of its config and seed: the same transitions, losses and evaluations."""
    logs, curves = [], []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        train(from_dict(TrainConfig, {**SMALL, "seed": seed}), encoder, tmp_path / name, progress=False)
        logs.append((tmp_path / name / "transitions" / LOG_FILE).read_bytes())
        timing = ("wall_s", "steps_per_s")
        curves.append([{k: v for k, v in row.items() if k not in timing} for row in rows(tmp_path / name)])
    assert logs[0] == logs[1] and curves[0] == curves[1]
    assert logs[0] != logs[2]


def test_train_command_line_flags_reach_the_run_config(tmp_path, encoder):
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(SMALL))
    run = tmp_path / "run"
    args = ["train", "--encoder", str(encoder), "--config", str(config), "--out", str(run), "--steps", "20"]
    assert msdp([*args, "--layer-norm", "--bridge", "pooling", "--seed", "3"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["steps"] == 20 and saved["seed"] == 3
    assert saved["agent"]["layer_norm"] and saved["agent"]["bridge"] == "pooling"
    agent = torch.load(run / "agent.pt", weights_only=True)["agent"]
    assert any(key.startswith("critic.") and "norm_scales" in key for key in agent)


def test_scratch_variant_trains_the_encoder_from_the_critic_loss_and_logs_raw_observations(tmp_path, encoder):
    config = from_dict(TrainConfig, {**SMALL, "steps": 16, "update_after": 12, "encoder_variant": "scratch"})
    trainer = Trainer(config, encoder, tmp_path / "run")
    before = {k: v.clone() for k, v in trainer.agent.encoder.state_dict().items()}
    trainer.run(progress=False)
    after = trainer.agent.encoder.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if "encoder." in k or "stem" in k)
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("decoder"))  # never used in RL
    fields = TransitionReader(tmp_path / "run" / "transitions").schema.fields
    assert "image" in fields and "tokens" not in fields
    policy = load_policy(tmp_path / "run" / "policy.safetensors")
    for key, value in policy.encoder.state_dict().items():  # the policy carries its own encoder
        torch.testing.assert_close(value, after[key])


def test_a_sensor_subset_hides_the_other_sensors_from_the_encoder(tmp_path, encoder):
    config = from_dict(TrainConfig, {**SMALL, "steps": 4, "sensors": "vision,ft"})
    train(config, encoder, tmp_path / "run", progress=False)
    present = TransitionReader(tmp_path / "run" / "transitions").arrays["present"]
    assert present[:, :-1].all() and not present[:, -1].any()  # the proprioception token is never present
    policy = load_policy(tmp_path / "run" / "policy.safetensors")
    observation = {"image": np.zeros((64, 64, 3), np.uint8), "wrench": np.zeros((4, 6), np.float32),
                   "proprio": np.zeros(14, np.float32)}  # fmt: skip
    assert policy.encode(observation).token_present[0].tolist() == [True] * 65 + [False]


def test_bad_settings_are_refused_with_the_parameter_named(tmp_path, encoder):
    with pytest.raises(ConfigError, match="offline"):
        train(from_dict(TrainConfig, {**SMALL, "agent": {"rlpd": True}}), encoder, tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match="agent.pt"):
        train(from_dict(TrainConfig, SMALL), encoder, tmp_path / "b", resume=True, progress=False)
    with pytest.raises(ConfigError, match="sensors"):
        from_dict(TrainConfig, {"sensors": "vision,smell"})
    with pytest.raises(ConfigError, match="encoder_variant"):
        from_dict(TrainConfig, {"encoder_variant": "imagenet"})


def test_recorded_bags_become_offline_data_that_rlpd_mixes_in(tmp_path, encoder, capsys):
    from msdp_franka_driver.sim.collect import CollectConfig, collect_to_bags
    from msdp_perception.dataset import BagDataset

    task = {"max_episode_steps": 25}
    config = from_dict(CollectConfig, {"samples": 120, "policy": "scripted_noise", "action_noise": 0.1, "task": task})
    bags = collect_to_bags(tmp_path / "bags", config, progress=False)
    assert msdp(["offline-log", "--bags", str(tmp_path / "bags"), "--encoder", str(encoder),
                 "--out", str(tmp_path / "offline")]) == 0  # fmt: skip
    assert "successes" in capsys.readouterr().out
    log = TransitionReader(tmp_path / "offline").arrays
    dataset = BagDataset(bags, progress=False)
    assert len(log["final"]) == len(dataset) and log["final"].sum() == (dataset.next_index < 0).sum()
    steps = ~log["final"]
    # the scripted expert inserts the peg: those episodes end early, on a terminal (success) step
    episode_lengths = np.bincount(np.unique(log["episode"], return_inverse=True)[1])
    assert log["terminal"][steps].sum() >= 1
    assert log["terminal"][steps].sum() == (episode_lengths[:-1] < 26).sum()  # the last one is cut by the sample cap
    assert np.all(log["reward"][steps] <= 0) and np.all(np.abs(log["action"]) <= 1)
    # the reward improves as the expert closes in on the hole
    first, last = log["reward"][steps][:3].mean(), log["reward"][steps & log["terminal"]].mean()
    assert last > first

    rlpd = {**SMALL, "steps": 16, "update_after": 12, "agent": {**SMALL["agent"], "rlpd": True}}
    summary = train(from_dict(TrainConfig, rlpd), encoder, tmp_path / "run", offline=[tmp_path / "offline"],
                    progress=False)  # fmt: skip
    assert summary["env_steps"] == 16 and np.isfinite(summary["final"]["critic_loss"])

    from msdp_perception.bags import BagReader, BagWriter

    with BagReader(bags[0]) as reader, BagWriter(tmp_path / "no_goal") as writer:
        for topic, msgtype in reader.topics.items():
            if topic != "/msdp/task_goal":
                writer.add_topic(topic, msgtype)
        for topic, _, timestamp, msg in reader.messages([t for t in reader.topics if t != "/msdp/task_goal"]):
            writer.write(topic, timestamp, msg)
    capsys.readouterr()
    code = msdp(["offline-log", "--bags", str(tmp_path / "no_goal"), "--encoder", str(encoder),
                 "--out", str(tmp_path / "offline2")])  # fmt: skip
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("msdp ")]  # the rest are progress bars
    assert code == 1 and len(errors) == 1 and "lacks /msdp/task_goal" in errors[0], err
    assert not (tmp_path / "offline2").exists()  # bags recorded without the goal give no rewards, and no empty log


def evaluated_steps(run) -> list[int]:
    return [int(r["env_steps"]) for r in rows(run)]


def kept_steps(run) -> list[int]:
    """The step of each per-evaluation checkpoint, as its own sidecar records it."""
    kept = sorted((run / "checkpoints").glob("*.safetensors"))
    return [load_policy(path).info.training["env_steps"] for path in kept]


def test_steps_before_the_first_update_are_counted(tmp_path, encoder):
    # update_after beyond the run: the loop never reads the log to learn, and still counts every step
    config = from_dict(TrainConfig, {**SMALL, "steps": 30, "update_after": 100})
    run = tmp_path / "run"
    assert train(config, encoder, run, progress=False)["env_steps"] == 30
    assert evaluated_steps(run) == [0, 20, 30] == kept_steps(run)
    assert [int(r["episodes"]) for r in rows(run)] == [0, 2, 3]  # 8-step episodes
    assert load_policy(run / "policy.safetensors").info.training["env_steps"] == 30

    assert train(replace(config, steps=50), encoder, run, resume=True, progress=False)["env_steps"] == 50
    assert evaluated_steps(run) == [0, 20, 30, 40, 50] == kept_steps(run)
    again = train(replace(config, steps=50), encoder, run, resume=True, progress=False)  # nothing left to do
    assert again["env_steps"] == 50 and again["final"]["env_steps"] == 50
    assert evaluated_steps(run) == [0, 20, 30, 40, 50]  # the evaluation at 50 is not written twice
    with pytest.raises(ConfigError, match="parameter 'steps': 40 is fewer than the 50 environment steps"):
        train(replace(config, steps=40), encoder, run, resume=True, progress=False)


@pytest.mark.parametrize(
    ("steps", "eval_every", "resume_to", "points"),
    [
        (25, 10, None, [0, 10, 20, 25]),
        pytest.param(20, 10, None, [0, 10, 20], marks=pytest.mark.slow),  # the end is an evaluation point: once
        (7, 3, 20, [0, 3, 6, 7, 9, 12, 15, 18, 20]),  # a resume evaluates the points after the first run's end
    ],
)
def test_evaluation_points_are_exact(tmp_path, encoder, steps, eval_every, resume_to, points):
    config = from_dict(TrainConfig, {**SMALL, "steps": steps, "eval_every": eval_every, "update_after": 15})
    run = tmp_path / "run"
    assert train(config, encoder, run, progress=False)["env_steps"] == steps
    if resume_to is not None:
        assert train(replace(config, steps=resume_to), encoder, run, resume=True, progress=False)["env_steps"] == 20
    assert evaluated_steps(run) == points == kept_steps(run)


class Killed(Exception):
    """Stands for a kill: the run stops where it is, with no clean-up."""


def kill_on_call(monkeypatch, name: str, call: int) -> None:
    """Make ``msdp_policy.training.<name>`` raise Killed on its ``call``-th call; the calls before run as usual."""
    original, calls = getattr(training, name), itertools.count(1)

    def killed_on_call(*args, **kwargs):
        if next(calls) == call:
            raise Killed
        return original(*args, **kwargs)

    monkeypatch.setattr(training, name, killed_on_call)


@pytest.mark.parametrize(
    ("name", "call", "points"),
    [
        ("evaluate", 1, [0, 20, 40, 60, 70]),  # in the untrained policy's evaluation
        pytest.param("evaluate", 2, [0, 20, 40, 60, 70], marks=pytest.mark.slow),
        ("evaluate", 4, [0, 20, 40, 50, 60, 70]),  # in the first run's final evaluation, at 50
        ("save_policy", 4, [0, 20, 40, 60, 70]),  # after policy.safetensors, before checkpoints/policy_0000020
    ],
)
def test_a_kill_during_an_evaluation_is_made_good_on_resume(tmp_path, encoder, monkeypatch, name, call, points):
    config = from_dict(TrainConfig, {**SMALL, "steps": 50})
    run = tmp_path / "run"
    kill_on_call(monkeypatch, name, call)
    with pytest.raises(Killed):
        train(config, encoder, run, progress=False)
    monkeypatch.undo()
    summary = train(replace(config, steps=70), encoder, run, resume=True, progress=False)
    assert summary["env_steps"] == 70 and summary["final"]["env_steps"] == 70
    assert evaluated_steps(run) == points == kept_steps(run)  # each point once, with its checkpoint


def test_a_corrupt_last_log_record_is_reported_on_resume(tmp_path, encoder):
    config = from_dict(TrainConfig, {**SMALL, "steps": 16})
    run = tmp_path / "run"
    train(config, encoder, run, progress=False)
    log = run / "transitions" / LOG_FILE
    data = bytearray(log.read_bytes())
    data[-1] ^= 0xFF  # the last record (episode 2's final observation) keeps its length, fails its checksum
    log.write_bytes(bytes(data))
    with pytest.warns(CorruptRecordWarning, match=rf"{LOG_FILE}: dropped corrupt last record 17 at byte \d+"):
        summary = train(replace(config, steps=24), encoder, run, resume=True, progress=False)
    assert summary["env_steps"] == 24 and evaluated_steps(run) == [0, 16, 20, 24]


def test_an_interrupted_metrics_write_leaves_the_previous_rows(tmp_path, monkeypatch):
    path = tmp_path / "metrics.csv"
    write_rows(path, [{"env_steps": 0, "return": -1.5}])

    def killed(*args):
        raise Killed

    monkeypatch.setattr(csv.DictWriter, "writerows", killed)
    with pytest.raises(Killed):
        write_rows(path, [{"env_steps": 0, "return": -1.5}, {"env_steps": 20, "return": -0.5}])
    assert read_rows(path) == [{"env_steps": 0, "return": -1.5}]


def test_evaluation_refuses_bad_arguments_with_the_parameter_named(tmp_path, encoder, capsys):
    with pytest.raises(ConfigError, match="parameter 'episodes': expected an integer of at least 1, got -3"):
        evaluate_policy(tmp_path / "no_policy.safetensors", -3)
    with pytest.raises(ConfigError, match="parameter 'episodes'"):
        evaluate(None, None, 0)  # refused before the policy or the task is touched
    with pytest.raises(SystemExit) as exited:  # the command line refuses it before it reaches evaluate_policy
        msdp(["eval", "--policy", str(tmp_path / "no_policy.safetensors"), "--episodes", "-3"])
    out, err = capsys.readouterr()
    assert exited.value.code == 2 and "--episodes" in err and "nan" not in out

    train(from_dict(TrainConfig, {**SMALL, "steps": 1}), encoder, tmp_path / "run", progress=False)
    policy = tmp_path / "run" / "policy.safetensors"
    with pytest.raises(ConfigError, match="parameter 'task.name': 'drawer' is not one of"):
        evaluate_policy(policy, 1, task="drawer")
    with pytest.raises(ConfigError, match="parameter 'task.image_noise_std': -1.0 is outside"):
        evaluate_policy(policy, 1, Perturbations(image_noise=-1.0))
    with pytest.raises(ConfigError, match="parameter 'impedance.translational_stiffness': -5.0 is outside"):
        evaluate_policy(policy, 1, Perturbations(stiffness=-5.0))


def test_the_command_line_resumes_with_the_saved_config_and_refuses_flags_that_would_not_apply(
    tmp_path, encoder, capsys
):
    """A resumed run keeps config.json: a flag that would not reach it is refused, and with no --steps it goes on
    to the end it was started for."""
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump({**SMALL, "steps": 20}))
    run = tmp_path / "run"
    args = ["train", "--encoder", str(encoder), "--config", str(config), "--out", str(run)]
    assert msdp([*args, "--steps", "20", "--set", "eval_every=10"]) == 0
    assert [int(r["env_steps"]) for r in rows(run)] == [0, 10, 20]
    capsys.readouterr()
    for extra in (["--bridge", "pooling"], ["--set", "agent.hidden=32"], ["--eval-every", "5"]):
        assert msdp([*args, "--resume", *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "would not apply" in err and extra[0] in err, err
    (run / "config.json").write_text(json.dumps({**json.loads((run / "config.json").read_text()), "steps": 30}))
    assert msdp([*args, "--resume", "--threads", "1"]) == 0  # the saved end (30), not the YAML's 20
    assert [int(r["env_steps"]) for r in rows(run)] == [0, 10, 20, 30]


def test_bad_metrics_and_missing_offline_logs_are_one_line_and_leave_nothing(tmp_path, encoder, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for content, expected in (
        ("env_steps,success_rate\nabc,0.1\n", "no column return"),
        ("env_steps,success_rate,return\nabc,0.1,-1\n", "line 2, column env_steps: expected a number, got 'abc'"),
    ):
        (run / "metrics.csv").write_text(content)
        assert msdp(["curves", str(run), "--out", str(tmp_path / "c.png")]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err and "metrics.csv" in err, err
    out = tmp_path / "new" / "run"
    code = msdp(["train", "--encoder", str(encoder), "--offline", str(tmp_path / "no_log"), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no_log/schema.json not found" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "new").exists()  # the run did not start: no half-made run folder to --resume


def test_bf16_updates_learn_and_a_missing_gpu_is_one_line(tmp_path, encoder, capsys):
    """``agent.precision: bf16`` runs the updates under autocast with float32 weights; asking for CUDA where torch
    has none is refused before anything is made."""
    config = from_dict(TrainConfig, {**SMALL, "device": "cpu", "agent": {**SMALL["agent"], "precision": "bf16"}})
    summary = train(config, encoder, tmp_path / "bf16", progress=False)
    assert summary["env_steps"] == 40 and np.isfinite(summary["final"]["critic_loss"])
    weights = load_policy(tmp_path / "bf16" / "policy.safetensors").actor.state_dict()
    assert all(w.dtype == torch.float32 for w in weights.values())
    if not torch.cuda.is_available():
        code = msdp(["train", "--encoder", str(encoder), "--device", "cuda", "--out", str(tmp_path / "gpu")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and "cuda requested" in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "gpu").exists()


def test_a_learner_process_keeps_the_ratio_checkpoints_each_point_and_resumes(tmp_path, encoder):
    """Acting and learning side by side: at every evaluation point the learner has made exactly the updates owed
    (ratio 2 after update_after) and agent.pt and the evaluated policy hold the same actor; a resume goes on."""
    config = from_dict(TrainConfig, {**SMALL, "learner_process": True, "max_learner_lag": 4})
    run = tmp_path / "run"
    assert train(config, encoder, run, progress=False)["env_steps"] == 40
    owed = [0 if s < 10 else 2 * (s - 10 + 1) for s in (0, 20, 40)]
    assert [int(r["critic_updates"]) for r in rows(run)] == owed
    state = torch.load(run / "agent.pt", weights_only=True)
    assert state["critic_updates"] == owed[-1]
    policy = load_policy(run / "checkpoints" / "policy_0000040.safetensors").actor.state_dict()
    assert all(torch.equal(policy[k], state["agent"][f"actor.{k}"]) for k in policy)
    train(replace(config, steps=60), encoder, run, resume=True, progress=False)
    assert [int(r["critic_updates"]) for r in rows(run)] == [*owed, 2 * (60 - 10 + 1)]


def test_a_learner_process_that_dies_stops_the_run_with_a_clear_error(tmp_path, encoder, monkeypatch):
    from msdp_policy import learner_process

    def die_after_first(self, env_steps):
        self.process.kill()
        self.process.join()
        original(self, env_steps)

    original = learner_process.LearnerProcess.wait_for
    monkeypatch.setattr(learner_process.LearnerProcess, "wait_for", die_after_first)
    config = from_dict(TrainConfig, {**SMALL, "learner_process": True, "max_learner_lag": 0})
    with pytest.raises(RuntimeError, match="the learner process died"):
        train(config, encoder, tmp_path / "run", progress=False)
