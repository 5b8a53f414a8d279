"""`colcon build` of msdp in a ROS workspace gives a working install; CI does this build here.

The install is used the way a ROS user gets it, by sourcing ``install/setup.bash``, with the venv's python.
The venv also holds the checkout in editable mode, so the checks assert that the *installed* code ran and
that it found its config in the install's share directory, not in the checkout.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from package_files import ROOT, console_scripts

VENV_BIN = Path(sys.executable).parent
SITE = f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"
SHIPPED = ["train.yaml", "pretrain.yaml", "collect.yaml", "driver.yaml"]


def scripts_dir(install: Path) -> Path:
    """Where ament_python packages put their console scripts (`ros2 run msdp NAME` looks there)."""
    return install / "msdp" / "lib" / "msdp"


def run(args: list, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], env=env, cwd=cwd, capture_output=True, text=True, timeout=180)


def run_together(commands: dict[str, list], env: dict, cwd: Path) -> dict[str, tuple[int, str]]:
    """Start the commands at once (each imports rclpy or torch: seconds apart), then wait: name -> (rc, stderr)."""
    procs = {
        name: subprocess.Popen(
            [str(a) for a in args], env=env, cwd=cwd, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for name, args in commands.items()
    }
    results = {}
    for name, proc in procs.items():
        try:
            _, err = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        results[name] = (proc.returncode, err)
    return results


@pytest.fixture(scope="module")
def install(tmp_path_factory) -> Path:
    """A workspace whose src/msdp is the checkout, built with colcon: its install/ folder."""
    colcon = VENV_BIN / "colcon"
    assert colcon.is_file(), f"{colcon} is missing: `make env` installs colcon into .venv"
    ws = tmp_path_factory.mktemp("ws")
    (ws / "src").mkdir()
    (ws / "src" / "msdp").symlink_to(ROOT, target_is_directory=True)
    env = {**os.environ, "COLCON_HOME": str(ws / "colcon_home")}  # no user defaults (e.g. --symlink-install)
    build = [colcon, "--log-base", ws / "log", "build", "--base-paths", ws / "src"]
    build += ["--build-base", ws / "build", "--install-base", ws / "install"]
    done = run(build, env, ws)
    assert done.returncode == 0, f"colcon build failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return ws / "install"


@pytest.fixture(scope="module")
def ros_env(install) -> dict:
    """The environment after `source install/setup.bash`, with the package's scripts and the venv on PATH."""
    done = subprocess.run(
        ["bash", "-c", f'source "{install}/setup.bash" && env -0'], capture_output=True, timeout=60, check=True
    )
    env = dict(item.split("=", 1) for item in done.stdout.decode().split("\0") if "=" in item)
    env["PATH"] = os.pathsep.join([str(scripts_dir(install)), str(VENV_BIN), env["PATH"]])
    return env


def test_sourcing_the_install_puts_it_first(install, ros_env):
    assert ros_env["AMENT_PREFIX_PATH"].split(os.pathsep)[0] == str(install / "msdp")
    assert ros_env["PYTHONPATH"].split(os.pathsep)[0] == str(install / "msdp" / SITE)


def test_share_directory_holds_config_and_launch(install, ros_env, tmp_path):
    code = "from ament_index_python.packages import get_package_share_directory as g; print(g('msdp'))"
    done = run([sys.executable, "-c", code], ros_env, tmp_path)
    assert done.returncode == 0, done.stderr
    share = Path(done.stdout.strip())
    assert share == install / "msdp" / "share" / "msdp"
    for name in SHIPPED:
        assert (share / "config" / name).is_file(), f"config/{name} is not in {share}"
    assert (share / "launch" / "msdp.launch.py").is_file()
    for pattern in ["config/*.yaml", "config/*.rviz", "launch/*.py"]:  # everything setup.py ships, none forgotten
        folder, glob = pattern.split("/")
        assert {p.name for p in (share / folder).glob(glob)} == {p.name for p in (ROOT / folder).glob(glob)}
    assert (share / "package.xml").is_file()


def test_install_holds_every_source_file(install):
    """A module or data file that find_packages misses (no __init__.py, not a .py) would be absent here."""

    def files(top: Path) -> set[str]:
        paths = (p.relative_to(top) for p in top.rglob("*") if p.is_file())
        skip = ("__pycache__", ".egg-info")  # build by-products; hidden files: editors' swap files
        return {str(p) for p in paths if not any(s in str(p) for s in skip) and not p.name.startswith(".")}

    missing = files(ROOT / "src") - files(install / "msdp" / SITE)
    assert not missing, f"colcon did not install {sorted(missing)}"


def test_installed_code_shadows_the_checkout_and_finds_config_in_the_share(install, ros_env, tmp_path):
    modules = sorted({target.split(":")[0] for target in console_scripts().values()})
    packages = sorted(p.name for p in (ROOT / "src").iterdir() if (p / "__init__.py").is_file())
    code = (
        "import importlib, json; from msdp.paths import config_file\n"
        f"files = {{m: importlib.import_module(m).__file__ for m in {packages + modules!r}}}\n"
        f"print(json.dumps({{'files': files, 'config': [str(config_file(n)) for n in {SHIPPED!r}]}}))"
    )
    done = run([sys.executable, "-c", code], ros_env, tmp_path)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    site = install / "msdp" / SITE
    for module, file in found["files"].items():
        assert Path(file).is_relative_to(site), f"{module} was imported from {file}, not from the install"
    assert found["config"] == [str(install / "msdp" / "share" / "msdp" / "config" / n) for n in SHIPPED]


def test_config_found_from_the_module_path_without_ament_prefix_path(install, ros_env, tmp_path):
    """A user who only puts the install on PYTHONPATH: msdp.paths falls back to <prefix>/share/msdp."""
    env = {k: v for k, v in ros_env.items() if k != "AMENT_PREFIX_PATH"}
    code = "from msdp.paths import config_file; print(config_file('train.yaml'))"
    done = run([sys.executable, "-c", code], env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(install / "msdp" / "share" / "msdp" / "config" / "train.yaml")


def test_msdp_help_runs_from_the_install(install, ros_env, tmp_path):
    done = run([scripts_dir(install) / "msdp", "--help"], ros_env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: msdp")
    assert "train" in done.stdout and "pretrain" in done.stdout


def test_console_scripts_are_installed_and_nodes_start(install, ros_env, tmp_path):
    """Each node script starts rclpy from the install, then refuses a bad parameter in one line (exit 2)."""
    scripts = console_scripts()
    for name in scripts:
        path = scripts_dir(install) / name
        assert path.is_file() and os.access(path, os.X_OK), f"{path} is not an executable file"
        shebang = path.read_text().splitlines()[0]
        assert Path(shebang.removeprefix("#!")).is_file(), f"{path} runs {shebang}: no such interpreter"
    bad = {name: ("no_such_param", "no_such_param:=1") for name in scripts if name != "msdp"}
    bad["driver_node"] = ("backend", "backend:=nope")
    commands = {name: [scripts_dir(install) / name, "--ros-args", "-p", value] for name, (_, value) in bad.items()}
    for name, (rc, err) in run_together(commands, ros_env, tmp_path).items():
        lines = err.strip().splitlines()
        assert rc == 2, f"{name} exited {rc}: {err[-2000:]}"
        assert len(lines) == 1 and "invalid parameter" in lines[0] and f"'{bad[name][0]}'" in lines[0], err


@pytest.mark.slow  # make test-slow: the installed console scripts are checked in make test
def test_train_and_pretrain_find_their_config_in_the_install(install, ros_env, tmp_path):
    """Both get past finding their config (a failure there is a traceback) and stop at their missing input."""
    msdp = scripts_dir(install) / "msdp"
    commands = {
        "train": [msdp, "train", "--encoder", "nonexistent.safetensors"],
        "pretrain": [msdp, "pretrain", "--bags", "nonexistent_bags", "--out", tmp_path / "pretrain"],
    }
    results = run_together(commands, ros_env, tmp_path)
    for name, missing in [("train", "nonexistent.safetensors"), ("pretrain", "nonexistent_bags")]:
        rc, err = results[name]
        lines = err.strip().splitlines()
        assert rc == 1, f"msdp {name} exited {rc}: {err[-2000:]}"
        assert len(lines) == 1 and lines[0].startswith(f"msdp {name}: ") and missing in lines[0], err
        assert "shipped config" not in err
    assert "not found" in results["train"][1]
