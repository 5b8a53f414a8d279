"""What produced an artefact: the git revision and the versions that matter, written next to every result.

Versions are read from the installed distributions, not by importing them: a checkpoint written on a real cell
must not load the simulator just to name its version.
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent
VERSIONED = ("numpy", "torch", "mujoco")


def git_revision() -> str:
    """``<sha>`` or ``<sha>-dirty`` of the checkout this code runs from; ``unknown`` for an installed package
    (a colcon install or a wheel), which is not inside a git work tree."""
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=SOURCE_DIR, capture_output=True, text=True, check=True
        ).stdout.strip()
        if not (SOURCE_DIR.is_relative_to(top)):
            return "unknown"
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=top, capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=top, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha.stdout.strip()}-dirty" if dirty else sha.stdout.strip()


def provenance() -> dict[str, str]:
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {"git_revision": git_revision(), "python": platform.python_version(), **versions}
