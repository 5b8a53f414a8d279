"""The house rules, checked on the source: a real cell never loads the simulator, topic names live in one
module, nodes do not import nodes, and nothing imports the CLI."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
REAL_CELL_MODULES = (
    "msdp_franka_driver.driver_node",
    "msdp_franka_driver.libfranka_backend",
    "msdp_perception.encoder_node",
    "msdp_perception.recorder_node",
    "msdp_policy.teleop_node",
    "msdp_policy.episodes",
    "msdp_policy.operators",
    "msdp_perception.ft_node",
    "msdp_perception.camera_node",
    "msdp_policy.policy_node",
    "msdp_policy.learner_node",
    "msdp_policy.tasks",
    "msdp_policy.offline",
)
TOPIC = re.compile(r"/(camera|ft_sensor|joint_states|franka|msdp|diagnostics|clock)(/\w+)*")
FRAME = re.compile(r"fr3_link0|ft_sensor|third_person_camera|msdp_embedding")
SIMULATOR_CONFIG = ["msdp_franka_driver.sim", "msdp_franka_driver.sim.config"]  # settings only, no MuJoCo


def sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(SRC).with_suffix("").parts)


def test_the_real_cell_never_imports_mujoco():
    """Every node a real cell runs, a libfranka driver's backend, and a checkpoint written there (the driver's
    parameters include the simulator's settings, a plain dataclass)."""
    code = (
        "import sys, importlib\n"
        f"for name in {REAL_CELL_MODULES!r}: importlib.import_module(name)\n"
        "from msdp_franka_driver.driver_node import DriverConfig, make_backend\n"
        "make_backend(DriverConfig(backend='libfranka'))\n"
        "from msdp.provenance import provenance\n"
        "provenance()\n"
        "prefixes = ('mujoco.', 'msdp_franka_driver.sim')\n"
        "print(sorted(m for m in sys.modules if m == 'mujoco' or m.startswith(prefixes)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == str(SIMULATOR_CONFIG), f"a real cell loads {result.stdout.strip()}"


def test_the_simulated_driver_does_load_the_simulator():
    """The check above can fail: the mujoco backend does import the simulator."""
    code = (
        "import sys\n"
        "from msdp_franka_driver.driver_node import DriverConfig, make_backend\n"
        "make_backend(DriverConfig(backend='mujoco')).stop()\n"
        "print('mujoco' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "True"


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(SRC)))
def test_topic_names_and_frames_are_written_only_in_the_vocabulary(path):
    if path.name == "vocabulary.py":
        return
    literals = [
        node.value
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        and (TOPIC.fullmatch(node.value) or FRAME.fullmatch(node.value))
    ]  # fmt: skip
    assert not literals, f"topic names and frame ids {literals} belong in msdp/vocabulary.py"


def test_the_driver_node_uses_its_backend_only_through_the_protocol():
    """No reaching around ``ArmBackend`` (``backend.env``, ``backend.sim.controller...``) and no backend flag."""
    from msdp_franka_driver.backend import ArmBackend, SimulatedCell

    protocols = (ArmBackend, SimulatedCell)
    allowed = {name for cls in protocols for name in [*vars(cls), *cls.__annotations__] if not name.startswith("_")}
    tree = ast.parse((SRC / "msdp_franka_driver" / "driver_node.py").read_text())
    used = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr in ("backend", "cell")
    }
    assert used and used <= allowed, f"the driver node uses {sorted(used - allowed)} beyond the backend protocol"
    assert "simulated" not in {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}


def test_nodes_do_not_import_nodes_and_nothing_imports_the_cli():
    node_modules = {module_name(path) for path in sources() if path.name.endswith("_node.py")}
    for path in sources():
        imports = imported_modules(path)
        assert "msdp.cli" not in imports, f"{path.name} imports the CLI"
        if path.name.endswith("_node.py"):
            nodes = (imports & node_modules) - {module_name(path)}
            assert not nodes, f"{path.name} imports the node module(s) {nodes}"


def test_the_shared_base_imports_no_package():
    """msdp/ is what every package stands on; only the CLI, at the top, may import the packages."""
    for path in (SRC / "msdp").glob("*.py"):
        if path.name == "cli.py":
            continue
        packages = {name for name in imported_modules(path) if name.startswith("msdp_")}
        assert not packages, f"{path.name} imports {packages}"
