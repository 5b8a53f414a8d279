"""Where the shipped configuration lives: the source checkout's ``config/`` when running from one, otherwise
the package's share directory (``share/msdp/config``), where ``colcon build`` and ``pip install`` put it and
``get_package_share_directory("msdp")`` finds it."""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = "msdp"
_HERE = Path(__file__).resolve()


def _share_dirs() -> list[Path]:
    dirs = []
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            dirs.append(Path(get_package_share_directory(PACKAGE)))
        except (PackageNotFoundError, OSError):  # not in the index, or no AMENT_PREFIX_PATH set
            pass
    except ImportError:  # no ament index here (a plain venv): look where the install put the files
        pass
    # <prefix>/lib/pythonX.Y/site-packages/msdp/paths.py -> <prefix>/share/msdp
    dirs += [_HERE.parents[4] / "share" / PACKAGE, Path(sys.prefix) / "share" / PACKAGE]
    return dirs


def config_dirs() -> list[Path]:
    """Candidate config folders, the source checkout's first."""
    return [_HERE.parents[2] / "config", *(share / "config" for share in _share_dirs())]


def config_file(name: str) -> Path:
    """The shipped config file ``name`` (e.g. ``train.yaml``); FileNotFoundError naming where it looked."""
    folders = config_dirs()
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    looked = ", ".join(str(folder) for folder in folders)
    raise FileNotFoundError(f"shipped config {name} not found (looked in {looked})")
