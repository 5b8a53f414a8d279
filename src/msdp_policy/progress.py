"""What an online learner leaves of its progress, without ROS: the learner node feeds it (``msdp train`` could).

In its folder:
    metrics.csv     one row per call of ``row`` (the node: every ``metrics_every`` critic updates, and at the end):
                    wall_s, env_steps, critic_updates, updates_per_s, the update metrics' means (METRICS), then
                    episodes (received in all), new_episodes and their figures (success_rate, return,
                    episode_length, intervention_rate), and the same over the last ``window`` episodes (window_...)
    episodes.csv    one row per episode result received (EpisodeResult's fields, and wall_s)
    curves.png      the rows against environment steps, redrawn with each row (~0.5 s; skipped while drawing
                    would take over a tenth of the learner's time, and drawn at ``close``)
    tensorboard/    the same rows as TensorBoard scalars (tag progress/<column>, step env_steps)

A learner restarted on the folder reads both CSV files back and goes on (rows, window and wall_s), so a run's
record spans its restarts. Intervention rate is the operator's steps over all steps of the episodes counted.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
from torch.utils.tensorboard import SummaryWriter

from msdp.metrics import read_rows, write_rows, write_scalars
from msdp_policy.episodes import EpisodeResult

METRICS = ("critic_loss", "actor_loss", "q", "temperature", "entropy")  # what Learner.catch_up returns
EPISODE_FIGURES = ("success_rate", "return", "episode_length", "intervention_rate")
COLUMNS = ("wall_s", "env_steps", "critic_updates", "updates_per_s", *METRICS, "episodes", "new_episodes",
           *EPISODE_FIGURES, *(f"window_{name}" for name in EPISODE_FIGURES))  # fmt: skip
EPISODE_TEXT = ("ended_by", "source", "actor")  # the episodes.csv columns that are not numbers


def episode_end(text: str) -> EpisodeResult | None:
    """The result in an /msdp/episode message; None for an episode's start; ValueError (one line) otherwise."""
    try:
        if json.loads(text).get("kind") == "start":
            return None
    except (ValueError, AttributeError):
        pass  # not a JSON object: from_json says so
    return EpisodeResult.from_json(text)


def episode_figures(episodes: list[dict[str, float | str]]) -> list[float]:
    """EPISODE_FIGURES over episodes.csv rows (NaN for none)."""
    if not episodes:
        return [math.nan] * len(EPISODE_FIGURES)
    steps = sum(e["steps"] for e in episodes)
    return [float(np.mean([e["success"] for e in episodes])), float(np.mean([e["episode_return"] for e in episodes])),
            float(np.mean([e["steps"] for e in episodes])),
            sum(e["interventions"] for e in episodes) / steps if steps else math.nan]  # fmt: skip


class ProgressLog:
    """Accumulates update metrics and episode results between rows; writes the files in the module docstring."""

    def __init__(self, folder: str | Path, window: int = 20, clock: Callable[[], float] = time.monotonic):
        """Reads back what a previous learner left in ``folder``; MetricsError naming a file it cannot read."""
        self.folder, self.clock = Path(folder), clock
        self.folder.mkdir(parents=True, exist_ok=True)
        self.metrics_path, self.episodes_path = self.folder / "metrics.csv", self.folder / "episodes.csv"
        self.rows = read_rows(self.metrics_path, COLUMNS) if self.metrics_path.exists() else []
        self.episodes: list[dict[str, float | str]] = []
        if self.episodes_path.exists():
            columns = ["wall_s", *(f.name for f in fields(EpisodeResult))]
            self.episodes = read_rows(self.episodes_path, columns, EPISODE_TEXT)
        self.window: deque[dict[str, float | str]] = deque(self.episodes, maxlen=window)
        self.wall_offset = max([0.0, *(r[-1]["wall_s"] for r in (self.rows, self.episodes) if r)])  # over restarts
        self.started = self.last_row_at = clock()
        self.new_episodes: list[dict[str, float | str]] = []
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.updates = 0  # critic updates since the last row
        self.tensorboard = SummaryWriter(str(self.folder / "tensorboard"))
        self.plotted_at, self.plot_cost, self.plot_stale = -math.inf, 0.0, False

    def wall_s(self) -> float:
        return round(self.wall_offset + self.clock() - self.started, 3)

    def add_updates(self, updates: int, means: dict[str, float]) -> None:
        """``updates`` critic updates and their metrics' means (``Learner.catch_up``); each burst is weighted by
        its critic updates (the actor's metrics too: their share of a burst is its updates over the ratio)."""
        self.updates += updates
        for name, value in means.items():
            self.sums[name] = self.sums.get(name, 0.0) + value * updates
            self.counts[name] = self.counts.get(name, 0) + updates

    def add_episode(self, result: EpisodeResult) -> None:
        episode = {**asdict(result), "success": int(result.success), "wall_s": self.wall_s()}
        self.episodes.append(episode)
        self.window.append(episode)
        self.new_episodes.append(episode)
        write_rows(self.episodes_path, self.episodes)

    def row(self, env_steps: int, critic_updates: int) -> dict[str, float]:
        """A metrics.csv row of what came since the last one; redraws the curves and writes TensorBoard's."""
        now = self.clock()
        elapsed = now - self.last_row_at
        means = [self.sums[name] / self.counts[name] if self.counts.get(name) else math.nan for name in METRICS]
        values = [self.wall_s(), env_steps, critic_updates, self.updates / elapsed if elapsed > 0 else math.nan,
                  *means, len(self.episodes), len(self.new_episodes), *episode_figures(self.new_episodes),
                  *episode_figures(list(self.window))]  # fmt: skip
        row = dict(zip(COLUMNS, values, strict=True))
        self.rows.append(row)
        write_rows(self.metrics_path, self.rows)
        write_scalars(self.tensorboard, "progress", {k: v for k, v in row.items() if k != "env_steps"}, env_steps)
        self.plot_stale = True
        if now - self.plotted_at >= 10 * self.plot_cost:
            self.plot()
        self.last_row_at, self.updates, self.new_episodes = now, 0, []
        self.sums, self.counts = {}, {}
        return row

    def plot(self) -> None:
        self.plotted_at = self.clock()
        plot_progress(self.rows, self.folder / "curves.png")
        self.plot_cost, self.plot_stale = self.clock() - self.plotted_at, False

    def close(self) -> None:
        if self.plot_stale:
            self.plot()
        self.tensorboard.close()


def plot_progress(rows: list[dict[str, float]], path: Path) -> None:
    """The rows' success, return, losses, Q, temperature and update rate against environment steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["env_steps"] / 1000 for r in rows]
    panels = {
        "episodes (rate)": ("window_success_rate", "success_rate", "window_intervention_rate"),
        "return": ("window_return", "return"),
        "losses": ("critic_loss", "actor_loss"),
        "Q": ("q",),
        "temperature": ("temperature",),
        "critic updates / s": ("updates_per_s",),
    }
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.08, top=0.95, wspace=0.25, hspace=0.4)  # tight_layout: 2x
    for ax, (title, names) in zip(axes.flat, panels.items(), strict=True):
        for name in names:
            ax.plot(steps, [r[name] for r in rows], marker="o", markersize=2, label=name)
        ax.set(title=title, xlabel="environment steps (k)")
        ax.grid(alpha=0.3)
        if len(names) > 1:
            ax.legend(fontsize=7)
    partial = path.with_name(path.name + ".partial.png")
    fig.savefig(partial, dpi=90)
    plt.close(fig)
    partial.replace(path)  # a viewer never sees half a picture
