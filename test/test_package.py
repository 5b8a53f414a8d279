"""The ROS package as a user gets it: package.xml, entry points, launch files, shipped config, the CLI."""

import ast
import importlib
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from msdp.cli import build_parser
from msdp.node import load_params_file
from msdp_franka_driver.driver_node import DriverConfig

ROOT = Path(__file__).resolve().parents[1]


def console_scripts() -> dict[str, str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict) and any(getattr(k, "value", None) == "console_scripts" for k in node.keys):
            entries = ast.literal_eval(node.values[0])
            return dict(re.match(r"\s*(\S+)\s*=\s*(\S+)", e).groups() for e in entries)
    raise AssertionError("setup.py declares no console_scripts")


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


def test_a_broken_driver_config_names_file_and_parameter(tmp_path):
    data = yaml.safe_load((ROOT / "config" / "driver.yaml").read_text())
    data["franka_driver"]["ros__parameters"]["impedance"]["damping_ratio"] = 9.0
    path = tmp_path / "driver.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=r"driver.yaml: parameter 'impedance.damping_ratio': 9.0 is outside"):
        load_params_file(DriverConfig, path, "franka_driver")


def test_cli_lists_its_subcommands():
    result = subprocess.run([sys.executable, "-m", "msdp.cli", "--help"], capture_output=True, text=True, check=True)
    for command in build_parser()._subparsers._group_actions[0].choices:
        assert command in result.stdout
    assert "demo" in result.stdout


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
    assert summary["git_revision"] != ""
    for name in ("report.png", "frames.png"):
        assert (tmp_path / name).stat().st_size > 10_000
