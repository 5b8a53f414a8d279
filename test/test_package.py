"""The ROS package as a user gets it: package.xml, entry points, launch files, shipped config, the CLI."""

import ast
import dataclasses
import importlib
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from msdp import cli
from msdp.node import load_params_file
from msdp_franka_driver.driver_node import DriverConfig
from package_files import ROOT, console_scripts


def test_package_xml_is_format_3_ament_python():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "msdp"
    assert root.find("export/build_type").text == "ament_python"
    assert (ROOT / "resource" / "msdp").exists()


def test_every_console_script_points_at_a_callable():
    scripts = console_scripts()
    assert {"msdp", "driver_node"} <= set(scripts)
    for target in scripts.values():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function))


@pytest.mark.parametrize("launch_file", sorted((ROOT / "launch").glob("*.launch.py")), ids=lambda p: p.name)
def test_launch_files_start_known_executables_with_shipped_config(launch_file):
    source = launch_file.read_text()
    tree = ast.parse(source)
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    scripts = console_scripts()
    nodes = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "Node"]
    assert nodes
    for call in nodes:
        kwargs = {k.arg: k.value for k in call.keywords}
        if ast.literal_eval(kwargs["package"]) == "msdp":
            assert ast.literal_eval(kwargs["executable"]) in scripts
    for name in re.findall(r'"config", "([^"]+)"', source):
        assert (ROOT / "config" / name).exists(), f"{launch_file.name} refers to missing config/{name}"


def test_shipped_driver_config_validates():
    config = load_params_file(DriverConfig, ROOT / "config" / "driver.yaml", "franka_driver")
    assert config.impedance.translational_stiffness == 2000.0
    assert config.safety.watchdog_timeout == 0.2


def test_shipped_policy_configs_validate_and_agree():
    from msdp.config import load_yaml
    from msdp_policy.learner_node import LearnerNodeConfig
    from msdp_policy.policy_node import PolicyNodeConfig
    from msdp_policy.training import TrainConfig

    train = load_yaml(TrainConfig, ROOT / "config" / "train.yaml")
    policy = load_params_file(PolicyNodeConfig, ROOT / "config" / "policy.yaml", "msdp_policy")
    learner = load_params_file(LearnerNodeConfig, ROOT / "config" / "learner.yaml", "msdp_learner")
    assert train.agent.critic_updates_per_step == learner.agent.critic_updates_per_step == 2
    assert train.steps == 200_000 and train.agent.bridge == "cross_attention"
    assert policy.transitions == learner.transitions
    assert policy.agent.hidden == learner.agent.hidden  # a fresh policy actor must accept the learner's weights


def test_shipped_teleop_config_validates_and_resets_as_the_policy_does(tmp_path):
    from msdp_policy.policy_node import PolicyNodeConfig
    from msdp_policy.teleop_node import TeleopConfig

    with pytest.raises(ValueError, match="goal_file"):  # motion resets need a taught goal: the file leaves it empty
        load_params_file(TeleopConfig, ROOT / "config" / "teleop.yaml", "teleop")
    data = yaml.safe_load((ROOT / "config" / "teleop.yaml").read_text())
    data["teleop"]["ros__parameters"]["goal_file"] = "config/goal.yaml"
    path = tmp_path / "teleop.yaml"
    path.write_text(yaml.safe_dump(data))
    teleop = load_params_file(TeleopConfig, path, "teleop")
    policy = load_params_file(PolicyNodeConfig, ROOT / "config" / "policy.yaml", "msdp_policy")
    assert teleop.reset == policy.reset and teleop.operator_kind == "keyboard" and teleop.wait_for_start


def test_a_broken_driver_config_names_file_and_parameter(tmp_path):
    data = yaml.safe_load((ROOT / "config" / "driver.yaml").read_text())
    data["franka_driver"]["ros__parameters"]["impedance"]["damping_ratio"] = 9.0
    path = tmp_path / "driver.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=r"driver.yaml: parameter 'impedance.damping_ratio': 9.0 is outside"):
        load_params_file(DriverConfig, path, "franka_driver")


# The subcommands README.md documents.
SUBCOMMANDS = ("demo", "driver", "virtual-cell", "arm-model", "record", "collect-ros", "collect", "pretrain",
               "recover-bag", "encoder", "train", "eval", "offline-log", "teach-goal", "rehearse",
               "curves", "sweep", "report")  # fmt: skip


def msdp(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "msdp.cli", *args], capture_output=True, text=True, timeout=120)


def test_cli_has_the_documented_subcommands_each_with_help():
    readme = (ROOT / "README.md").read_text()
    result = msdp("--help")
    assert result.returncode == 0, result.stderr
    listed = re.search(r"\{([a-z,-]+)\}", result.stdout).group(1).split(",")
    assert listed == list(SUBCOMMANDS)  # no more, no fewer, in this order
    for command in SUBCOMMANDS:
        assert f"msdp {command}" in readme, f"README.md does not document msdp {command}"
        help_text = msdp(command, "--help")
        assert help_text.returncode == 0, f"msdp {command} --help: {help_text.stderr}"
        assert help_text.stdout.startswith(f"usage: msdp {command}") and not help_text.stderr


class Ran(Exception):
    """Raised by a stand-in for a job's worker once it has seen the config it was given."""


def config_given(monkeypatch, module: str, function: str, argv: list[str]):
    """The config ``msdp <argv>`` hands to ``module.function`` (the job's worker, replaced by a stand-in)."""
    seen = []

    def worker(*args, **kwargs):
        seen.extend(a for a in args if dataclasses.is_dataclass(a))
        raise Ran

    monkeypatch.setattr(importlib.import_module(module), function, worker)
    with pytest.raises(Ran):
        cli.main(argv)
    (config,) = seen
    return config


def test_train_flags_and_set_reach_the_config(monkeypatch, tmp_path):
    def train(*flags: str):
        args = ["train", "--encoder", "enc.safetensors", "--out", str(tmp_path / "run"), *flags]
        return config_given(monkeypatch, "msdp_policy.training", "train", args)

    config = train(
        "--set", "agent.bridge=pooling", "--threads", "3", "--eval-every", "7", "--update-after", "5",
        "--eval-episodes", "2", "--layer-norm", "--rlpd", "--task", "push_cube", "--set", "agent.hidden=64",
        "--set", "env.task.max_step=0.01", "--steps", "11", "--seed", "4", "--sensors", "vision,ft",
        "--encoder-variant", "scratch", "--random-steps", "3",
    )  # fmt: skip
    assert config.agent.bridge == "pooling" and config.agent.hidden == 64
    assert config.torch_threads == 3 and config.eval_every == 7 and config.update_after == 5
    assert config.eval_episodes == 2 and config.random_steps == 3 and config.steps == 11 and config.seed == 4
    assert config.agent.layer_norm and config.agent.rlpd
    assert config.env.task.name == "push_cube" and config.env.task.max_step == 0.01
    assert config.sensors == "vision,ft" and config.encoder_variant == "scratch"
    assert train("--bridge", "cls").agent.bridge == "cls"
    assert train("--bridge", "cls", "--set", "agent.bridge=concat").agent.bridge == "concat"  # --set comes last
    untouched = train()  # the shipped train.yaml
    assert untouched.agent.bridge == "cross_attention" and not untouched.agent.rlpd and untouched.torch_threads == 1


def test_pretrain_and_collect_flags_reach_the_config(monkeypatch, tmp_path):
    config = config_given(
        monkeypatch, "msdp_perception.pretrain", "pretrain",
        ["pretrain", "--bags", str(tmp_path), "--out", str(tmp_path / "pre"), "--val-every", "9", "--objective",
         "prediction", "--batch-size", "8", "--steps", "12", "--set", "model.width=32"],
    )  # fmt: skip
    assert config.val_every == 9 and config.model.objective == "prediction" and config.batch_size == 8
    assert config.steps == 12 and config.model.width == 32

    config = config_given(
        monkeypatch, "msdp_franka_driver.sim.collect", "collect_to_bags",
        ["collect", "--out", str(tmp_path / "bags"), "--samples", "5", "--image-noise", "3", "--task", "close_drawer",
         "--policy", "scripted_noise", "--set", "samples_per_bag=2"],
    )  # fmt: skip
    assert config.samples == 5 and config.task.image_noise_std == 3.0 and config.task.name == "close_drawer"
    assert config.policy == "scripted_noise" and config.samples_per_bag == 2


@pytest.mark.parametrize(
    "job, module, function, yaml_text, flags, field, expected",
    [
        ("train", "msdp_policy.training", "train", None, ["--random-steps", "0"], "random_steps", 0),
        ("train", "msdp_policy.training", "train", "seed: 5\n", ["--seed", "0"], "seed", 0),
        ("collect", "msdp_franka_driver.sim.collect", "collect_to_bags", "task:\n  image_noise_std: 4.0\n",
         ["--image-noise", "0"], "task.image_noise_std", 0.0),
    ],
    ids=["random_steps", "seed", "image_noise"],
)  # fmt: skip
def test_a_zero_flag_overrides_the_config_file(monkeypatch, tmp_path, job, module, function, yaml_text, flags, field,
                                               expected):  # fmt: skip
    args = [job, "--out", str(tmp_path / "out"), *flags]
    if job == "train":
        args += ["--encoder", "enc.safetensors"]
    if yaml_text is not None:
        (tmp_path / "config.yaml").write_text(yaml_text)
        args += ["--config", str(tmp_path / "config.yaml")]
    config = config_given(monkeypatch, module, function, args)
    for part in field.split("."):
        config = getattr(config, part)
    assert config == expected


def one_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_an_unknown_set_key_is_refused_naming_the_nearest_field(tmp_path):
    result = msdp("train", "--encoder", "enc.safetensors", "--out", str(tmp_path / "run"), "--set", "agent.brige=x")
    assert result.returncode == 2
    line = one_line(result)
    assert "'agent.brige'" in line and "did you mean 'agent.bridge'" in line
    assert not (tmp_path / "run").exists()

    result = msdp("train", "--encoder", "enc.safetensors", "--out", str(tmp_path / "run"), "--set", "steps.x=1")
    assert result.returncode == 2 and "'steps' is not a section" in one_line(result)
    result = msdp("train", "--encoder", "enc.safetensors", "--set", "no_equals_sign")
    assert result.returncode == 2 and "--set" in one_line(result)


def test_a_bad_flag_value_is_a_one_line_usage_error():
    result = msdp("eval", "--policy", "policy.safetensors", "--episodes", "-3")
    assert result.returncode == 2
    line = one_line(result)
    assert "--episodes" in line and "-3" in line


def test_curves_without_metrics_names_the_missing_file(tmp_path):
    (tmp_path / "run").mkdir()
    result = msdp("curves", str(tmp_path / "run"), "--out", str(tmp_path / "curves.png"))
    assert result.returncode == 1
    assert str(tmp_path / "run" / "metrics.csv") in one_line(result)
    assert not (tmp_path / "curves.png").exists()


def test_train_with_a_missing_encoder_names_it_and_leaves_no_run_folder(tmp_path):
    for out in (tmp_path / "run", tmp_path / "runs" / "peg" / "run"):  # the folder, and parents it would create
        result = msdp("train", "--encoder", "missing.safetensors", "--out", str(out), "--steps", "2")
        assert result.returncode == 1
        assert "missing.safetensors" in one_line(result)
        assert list(tmp_path.iterdir()) == []


def test_demo_writes_its_report(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "msdp.cli", "demo", "--out", str(tmp_path), "--episodes", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = yaml.safe_load((tmp_path / "summary.json").read_text())
    assert summary["episodes"] == 2 and summary["successes"] >= 1
    # the commit of the checkout msdp runs from (+ "-dirty" with uncommitted changes to tracked files), as in
    # these tests; "unknown" for an installed copy outside any checkout
    source = Path(importlib.import_module("msdp").__file__).parent
    toplevel = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=source, capture_output=True, text=True)
    if toplevel.returncode != 0:
        assert summary["git_revision"] == "unknown"
    else:
        match = re.fullmatch(r"([0-9a-f]{40})(-dirty)?", summary["git_revision"])
        assert match, summary["git_revision"]
        known = subprocess.run(["git", "cat-file", "-e", f"{match.group(1)}^{{commit}}"], cwd=source)
        assert known.returncode == 0, f"{match.group(1)} is no commit of the checkout {toplevel.stdout.strip()}"
    for name in ("report.png", "frames.png"):
        assert (tmp_path / name).stat().st_size > 10_000


def test_the_launch_refuses_learning_without_an_encoder():
    """launch/launch_ros are not installable here, so the launch file's own check runs on its own: learn:= with no
    checkpoint:= stops the launch with the reason; with an encoder it starts."""
    tree = ast.parse((ROOT / "launch" / "msdp.launch.py").read_text())
    check = next(
        n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "refuse_learning_without_an_encoder"
    )
    namespace: dict = {}
    exec(compile(ast.Module(body=[check], type_ignores=[]), "msdp.launch.py", "exec"), namespace)  # noqa: S102
    refuse = namespace[check.name]
    with pytest.raises(RuntimeError, match="learn:= needs checkpoint:="):
        refuse(SimpleNamespace(launch_configurations={"learn": "runs/online", "checkpoint": ""}))
    assert (
        refuse(SimpleNamespace(launch_configurations={"learn": "runs/online", "checkpoint": "enc.safetensors"})) == []
    )
    assert refuse(SimpleNamespace(launch_configurations={"learn": "", "checkpoint": ""})) == []
