"""What the package declares it installs, read from setup.py (shared by the package and colcon-build tests)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def console_scripts() -> dict[str, str]:
    """name -> "module:function", from setup.py's entry_points: what an install must provide."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict) and any(getattr(k, "value", None) == "console_scripts" for k in node.keys):
            entries = ast.literal_eval(node.values[0])
            return dict(re.match(r"\s*(\S+)\s*=\s*(\S+)", e).groups() for e in entries)
    raise AssertionError("setup.py declares no console_scripts")
