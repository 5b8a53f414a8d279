"""A sweep's seeds aggregated: mean evaluation success and its 95 % bootstrap interval over seeds, per task and
variant, at each evaluated step; as ``curves.png``, ``curves.csv`` and a ``report.md`` table at chosen steps,
with the paper's reported points beside them.

The interval is a percentile bootstrap over seeds (the paper reports means over 12 seeds with 95 % intervals):
10,000 resamples of the seeds with replacement, from a fixed RNG seed, so a report is reproducible. At a step
some seeds have not reached yet, the mean is over those that have (``seeds`` says how many).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from msdp.config import ConfigError
from msdp.metrics import read_rows, write_rows

RESAMPLES = 10_000
PAPER_COLUMNS = ("task", "variant", "env_steps", "success")

Curves = dict[tuple[str, str], dict[int, dict[int, float]]]  # (task, variant) -> seed -> env_steps -> success


def bootstrap_interval(values: np.ndarray | list[float], level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (one per seed)."""
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (RESAMPLES, len(values)))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    # A mean of resampled values lies within their range; clipping drops the sum's rounding (0.4 stays 0.4).
    return float(np.clip(low, values.min(), values.max())), float(np.clip(high, values.min(), values.max()))


def read_sweep(folder: Path) -> Curves:
    """Every cell's evaluations, from ``<task>/<variant>/seed_<n>/metrics.csv``."""
    curves: Curves = defaultdict(dict)
    for metrics in sorted(Path(folder).glob("*/*/seed_*/metrics.csv")):
        cell = metrics.parent
        if not cell.name.removeprefix("seed_").isdigit():  # not a cell (a copy, say seed_0_old)
            continue
        seed = int(cell.name.removeprefix("seed_"))
        rows = read_rows(metrics, required=("env_steps", "success_rate"))
        task, variant = cell.parent.parent.name, cell.parent.name
        curves[(task, variant)][seed] = {int(r["env_steps"]): r["success_rate"] for r in rows}
    if not curves:
        raise ConfigError(f"{folder} holds no <task>/<variant>/seed_<n>/metrics.csv: is it a folder of `msdp sweep`?")
    return dict(curves)


def aggregate(curves: Curves) -> list[dict[str, Any]]:
    """Rows task, variant, env_steps, seeds, mean, ci_low, ci_high: one per evaluated step of each curve."""
    rows = []
    for (task, variant), seeds in curves.items():
        for step in sorted({s for runs in seeds.values() for s in runs}):
            values = [runs[step] for runs in seeds.values() if step in runs]
            low, high = bootstrap_interval(values)
            rows.append({"task": task, "variant": variant, "env_steps": step, "seeds": len(values),
                         "mean": float(np.mean(values)), "ci_low": low, "ci_high": high})  # fmt: skip
    return rows


def last_common_step(curves: Curves, task: str) -> int:
    """The last step every cell of ``task`` has evaluated."""
    steps = [set(runs) for (t, _), seeds in curves.items() if t == task for runs in seeds.values()]
    return max(set.intersection(*steps), default=0)


def load_paper_points(path: Path) -> tuple[list[dict[str, Any]], str]:
    """(points, source) from YAML (``source``, ``points``: a list of mappings) or CSV, columns task, variant,
    env_steps, success (a fraction)."""
    path = Path(path)
    if path.suffix == ".csv":
        points, source = read_rows(path, required=PAPER_COLUMNS, text=("task", "variant")), ""
    else:
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read the paper points {path}: {exc}") from exc
        points, source = data.get("points", []), str(data.get("source", ""))
    for i, point in enumerate(points):
        if not isinstance(point, dict) or sorted(point) != sorted(PAPER_COLUMNS):
            raise ConfigError(f"{path}: point {i + 1} must have exactly {', '.join(PAPER_COLUMNS)}; got {point!r}")
        if not 0 <= point["success"] <= 1:
            raise ConfigError(f"{path}: point {i + 1}: success {point['success']} is not a fraction in [0, 1]")
    return [{**p, "env_steps": int(p["env_steps"])} for p in points], source


def plot(rows: list[dict[str, Any]], paper: list[dict[str, Any]], path: Path) -> None:
    """One panel per task: each variant's mean and shaded interval; the paper's points as diamonds in the colour
    of the variant of the same name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    variants = list(dict.fromkeys([r["variant"] for r in rows] + [p["variant"] for p in paper if p["task"] in tasks]))
    colours = {v: f"C{i % 10}" for i, v in enumerate(variants)}
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for variant in variants:
            curve = [r for r in rows if r["task"] == task and r["variant"] == variant]
            if curve:
                steps = [r["env_steps"] / 1000 for r in curve]
                seeds = max(r["seeds"] for r in curve)
                ax.plot(steps, [100 * r["mean"] for r in curve], color=colours[variant],
                        label=f"{variant} ({seeds} seed{'s' * (seeds > 1)})")  # fmt: skip
                ax.fill_between(steps, [100 * r["ci_low"] for r in curve], [100 * r["ci_high"] for r in curve],
                                color=colours[variant], alpha=0.2, linewidth=0)  # fmt: skip
            points = [p for p in paper if p["task"] == task and p["variant"] == variant]
            if points:
                ax.scatter([p["env_steps"] / 1000 for p in points], [100 * p["success"] for p in points], marker="D",
                           color=colours[variant], edgecolor="black", zorder=3, label=f"paper: {variant}")  # fmt: skip
        ax.set(title=task, xlabel="environment steps (k)", ylabel="evaluation success (%)", ylim=(-2, 102))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("mean over seeds, 95 % bootstrap interval shaded", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def percent(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    return f"{row['mean']:.0%} [{row['ci_low']:.0%}, {row['ci_high']:.0%}] ({row['seeds']})"


def table(rows: list[dict[str, Any]], paper: list[dict[str, Any]], curves: Curves, at: Sequence[int]) -> str:
    """Markdown: per task, a row per variant (mean [95 % interval] (seeds)) and per paper variant, at ``at``
    (default: the task's last common step)."""
    lines = []
    for task in dict.fromkeys(r["task"] for r in rows):
        steps = list(at) or [last_common_step(curves, task)]
        lines += [f"### {task}", "", "| variant | " + " | ".join(f"{s:,} steps" for s in steps) + " |",
                  "|---" * (len(steps) + 1) + "|"]  # fmt: skip
        cells = {(r["variant"], r["env_steps"]): r for r in rows if r["task"] == task}
        for variant in dict.fromkeys(r["variant"] for r in rows if r["task"] == task):
            lines.append(f"| {variant} | " + " | ".join(percent(cells.get((variant, s))) for s in steps) + " |")
        reported = {(p["variant"], p["env_steps"]): p["success"] for p in paper if p["task"] == task}
        for variant in dict.fromkeys(v for v, _ in reported):
            values = [reported.get((variant, s)) for s in steps]
            if any(v is not None for v in values):
                lines.append(f"| paper: {variant} | " + " | ".join("-" if v is None else f"{v:.0%}" for v in values)
                             + " |")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def write_report(
    sweep: Path, out: Path, at: Sequence[int] = (), paper_file: Path | None = None
) -> tuple[list[dict[str, Any]], Path]:
    """curves.png, curves.csv and report.md of the sweep in ``out``; (the aggregated rows, report.md)."""
    curves = read_sweep(sweep)
    rows = aggregate(curves)
    paper, source = load_paper_points(paper_file) if paper_file else ([], "")
    tasks = {r["task"] for r in rows}
    paper = [p for p in paper if p["task"] in tasks]
    out.mkdir(parents=True, exist_ok=True)
    plot(rows, paper, out / "curves.png")
    reported = [{"source": "paper", "task": p["task"], "variant": p["variant"], "env_steps": p["env_steps"],
                 "seeds": math.nan, "mean": p["success"], "ci_low": math.nan, "ci_high": math.nan}
                for p in paper]  # fmt: skip
    write_rows(out / "curves.csv", [{"source": "sweep", **r} for r in rows] + reported)
    failed = []
    if (sweep / "summary.json").is_file():
        failed = [r for r in json.loads((sweep / "summary.json").read_text()) if r["status"] != "done"]
    text = [
        f"# Sweep report: {sweep}",
        "",
        "Evaluation success: mean over seeds [95 % percentile-bootstrap interval over seeds, "
        f"{RESAMPLES:,} resamples] (number of seeds).",
        "",
        table(rows, paper, curves, list(at)),
        f"Curves: `curves.png`; every evaluated step: `curves.csv` ({len(rows)} rows"
        + (f", and {len(paper)} paper points, source `paper`)." if paper else ")."),
    ]
    if paper:
        text += ["", f"Paper points: `{paper_file}`" + (f" ({source})" if source else "") + "."]
    if failed:
        text += ["", "Failed cells (the evaluations their metrics.csv holds are in the curves):", ""]
        text += [f"- {r['cell']}: exit {r['exit_code']}, {r['last_line']}" for r in failed]
    (out / "report.md").write_text("\n".join(text) + "\n")
    return rows, out / "report.md"
