"""metrics.csv and its kin: rows of numbers (a few text columns where asked), as pretraining, policy training and
the online learner write them and read them back on resume."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol


class MetricsError(RuntimeError):
    """A metrics.csv that cannot be read as numbers, or lacks a column; the message names the file."""


def write_rows(path: Path, rows: list[dict[str, float | str]]) -> None:
    """Replace the file atomically: a kill while writing leaves the previous rows, which a resume reads back."""
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[-1]))
        writer.writeheader()
        writer.writerows(rows)
    partial.replace(path)


def read_rows(path: Path, required: Sequence[str] = (), text: Sequence[str] = ()) -> list[dict[str, float | str]]:
    """The rows as numbers, but the ``text`` columns as they are; MetricsError naming the file, line and column
    for anything else."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [name for name in required if name not in (reader.fieldnames or [])]
            if missing:
                raise MetricsError(f"{path}: no column {', '.join(missing)} (it has {reader.fieldnames})")
            return [
                {k: v if k in text and v is not None else _number(v, path, line, k) for k, v in row.items()}
                for line, row in enumerate(reader, 2)
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MetricsError(f"{path}: cannot read it as CSV ({exc})") from exc


def _number(text: str | None, path: Path, line: int, column: str | None) -> float:
    try:
        return int(text)
    except (TypeError, ValueError):
        try:
            return float(text)
        except (TypeError, ValueError):
            raise MetricsError(f"{path}, line {line}, column {column}: expected a number, got {text!r}") from None


class ScalarWriter(Protocol):
    """What ``write_scalars`` needs of a TensorBoard ``SummaryWriter``."""

    def add_scalar(self, tag: str, value: float, step: int) -> None: ...

    def flush(self) -> None: ...


def write_scalars(writer: ScalarWriter, group: str | Callable[[str], str], row: dict[str, float], step: int) -> None:
    """A metrics row as TensorBoard scalars at ``step``, beside the CSV (the same numbers, for TensorBoard users):
    tag ``<group>/<column>``, or ``group(column)``; text and non-finite values are left out."""
    for name, value in row.items():
        if isinstance(value, int | float) and math.isfinite(value):
            writer.add_scalar(group(name) if callable(group) else f"{group}/{name}", value, step)
    writer.flush()
