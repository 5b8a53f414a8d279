"""metrics.csv: one row per evaluation, as written by pretraining and policy training and read back on resume."""

from __future__ import annotations

import csv
from pathlib import Path


def write_rows(path: Path, rows: list[dict[str, float]]) -> None:
    """Replace the file atomically: a kill while writing leaves the previous rows, which a resume reads back."""
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[-1]))
        writer.writeheader()
        writer.writerows(rows)
    partial.replace(path)


def read_rows(path: Path) -> list[dict[str, float]]:
    with open(path) as f:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _number(text: str) -> float:
    try:
        return int(text)
    except ValueError:
        return float(text)
