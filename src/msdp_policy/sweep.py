"""Seeds x variants x tasks as separate ``msdp train`` runs, in parallel on Ray (a local one or a cluster).

A grid expands to cells, one run folder each, ``<task>/<variant>/seed_<n>`` under the sweep folder. Each cell
is one Ray task that runs ``msdp train`` in a subprocess, its output in ``<cell>/train.log``; so the same code
runs on this machine and on a cluster, and a sweep started again after a kill picks every cell up where it
stopped: a cell with ``summary.json`` is finished and skipped, one with ``agent.pt`` resumes (``--resume``), any
other starts afresh. A failed cell is reported and the others go on. ``sweep.yaml`` in the sweep folder holds
the resolved grid, so a resume never mixes two grids; ``summary.csv``/``.json`` hold one row per cell.

Everything but :func:`run_cells` (the only code that imports Ray) works without Ray.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from msdp.config import ConfigError, unknown_names
from msdp.metrics import read_rows, write_rows

GRID_KEYS = ("config", "encoder", "seeds", "tasks", "variants", "overrides", "offline")
AXES = ("seed", "env.task.name")  # set by the grid's seeds and tasks, never by an override
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class Grid:
    """What a sweep runs: the base train config and encoder, the axes, and ``key=value`` overrides in the
    syntax of ``msdp train --set`` (shared by every cell, and per variant)."""

    config: str
    encoder: str
    seeds: tuple[int, ...]
    tasks: tuple[str, ...]
    variants: dict[str, tuple[str, ...]]
    overrides: tuple[str, ...]
    offline: tuple[str, ...]


@dataclass(frozen=True)
class Cell:
    task: str
    variant: str
    seed: int
    overrides: tuple[str, ...]  # all of the cell's --set values, in the order they apply

    @property
    def name(self) -> str:
        return f"{self.task}/{self.variant}/seed_{self.seed}"


def read_grid_file(path: Path) -> dict[str, Any]:
    """The grid file's mapping; an unknown key is refused with the nearest known one."""
    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the grid file {path}: {exc}") from exc
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of {', '.join(GRID_KEYS)}")
    unknown = unknown_names(list(values), list(GRID_KEYS))
    if unknown:
        raise ConfigError(f"{path}: {unknown}; known: {', '.join(GRID_KEYS)}")
    return values


def make_grid(values: dict[str, Any]) -> Grid:
    """A checked grid with absolute paths (the cells run in other processes, perhaps on other machines); by default
    seed 0, the peg task and one variant, ``default``, without overrides."""

    def strings(key: str, items: Any) -> tuple[str, ...]:
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            raise ConfigError(f"grid '{key}': expected a list of strings, got {items!r}")
        return tuple(items)

    for key in ("config", "encoder"):
        if not isinstance(values.get(key), str | Path):
            raise ConfigError(f"grid '{key}': expected a file path (grid file or --{key}), got {values.get(key)!r}")
    seeds = values.get("seeds", [0])
    if not isinstance(seeds, list | tuple) or not seeds or not all(type(s) is int and s >= 0 for s in seeds):
        raise ConfigError(f"grid 'seeds': expected a list of whole numbers >= 0, got {seeds!r}")
    tasks = strings("tasks", values.get("tasks", ["peg"]))
    variants = values.get("variants") or {"default": []}
    if not isinstance(variants, dict):
        raise ConfigError(f"grid 'variants': expected a mapping name -> list of key=value, got {variants!r}")
    variants = {str(name): strings(f"variants.{name}", items or []) for name, items in variants.items()}
    for kind, names in (("seed", [str(s) for s in seeds]), ("task", tasks), ("variant", list(variants))):
        bad = [n for n in names if not NAME.fullmatch(n)]
        if bad or len(set(names)) != len(names):
            raise ConfigError(f"grid: {kind} names must be distinct folder names (letters, digits, _ . -); got {names}")
    overrides = strings("overrides", values.get("overrides", []))
    for text in overrides + tuple(o for items in variants.values() for o in items):
        if text.partition("=")[0].strip() in AXES:
            raise ConfigError(f"grid: the override {text!r} sets what the grid's seeds and tasks set; use those")
    return Grid(
        config=str(Path(values["config"]).resolve()),
        encoder=str(Path(values["encoder"]).resolve()),
        seeds=tuple(seeds),
        tasks=tasks,
        variants=variants,
        overrides=overrides,
        offline=tuple(str(Path(p).resolve()) for p in strings("offline", values.get("offline", []))),
    )


def grid_dict(grid: Grid) -> dict[str, Any]:
    """The grid as plain YAML data (lists, not tuples), as ``sweep.yaml`` holds it."""
    plain = asdict(grid)
    plain["variants"] = {name: list(items) for name, items in grid.variants.items()}
    return {key: list(value) if isinstance(value, tuple) else value for key, value in plain.items()}


def expand(grid: Grid) -> list[Cell]:
    """Every cell: shared overrides first, then the variant's, then the cell's task and seed."""
    return [
        Cell(task, variant, seed, (*grid.overrides, *extra, f"env.task.name={task}", f"seed={seed}"))
        for task in grid.tasks
        for variant, extra in grid.variants.items()
        for seed in grid.seeds
    ]


def claim(out: Path, grid: Grid) -> None:
    """Write ``sweep.yaml``, or check that the folder's sweep is this grid's (a resume never mixes grids)."""
    saved = out / "sweep.yaml"
    wanted = grid_dict(grid)
    if saved.is_file():
        held = yaml.safe_load(saved.read_text())
        if held != wanted:
            differ = sorted(k for k in set(held or {}) | set(wanted) if (held or {}).get(k) != wanted.get(k))
            raise ConfigError(
                f"{out} holds a sweep of another grid (it differs in {', '.join(differ)}; see {saved}); "
                "run the same grid to resume it, or choose a new --out"
            )
        return
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out} is not empty and holds no sweep.yaml; a sweep needs a new folder")
    out.mkdir(parents=True, exist_ok=True)
    saved.write_text(yaml.safe_dump(wanted, sort_keys=False))


def state(folder: Path) -> str:
    """done (train wrote summary.json), resume (agent.pt exists from a run's first moment) or start."""
    if (folder / "summary.json").is_file():
        return "done"
    return "resume" if (folder / "agent.pt").is_file() else "start"


def train_arguments(grid: Grid, cell: Cell, folder: Path, threads: int) -> list[str]:
    """``msdp train`` arguments for a cell: a resumed run keeps its saved config.json, so no --set then."""
    args = ["train", "--out", str(folder), "--config", grid.config, "--encoder", grid.encoder]
    args += ["--threads", str(threads)]
    if grid.offline:
        args += ["--offline", *grid.offline]
    if state(folder) == "resume":
        return [*args, "--resume"]
    return args + [a for text in cell.overrides for a in ("--set", text)]


def sizing(cores: int, learner_process: bool, parallel: int | None, threads: int | None) -> tuple[int, int, int]:
    """(runs at a time, torch threads per run, cores per run) on ``cores``: by default the runs fill the cores, one
    torch thread each; a run with the learner process keeps one more core busy (acting) beside its threads."""
    extra = int(learner_process)
    parallel = parallel or max(1, cores // (1 + extra))
    threads = threads or max(1, cores // parallel - extra)
    return parallel, threads, threads + extra


def prepare(folder: Path) -> None:
    """A cell that starts afresh keeps only its log: a kill before agent.pt leaves nothing to resume."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in folder.iterdir():
        if path.name != "train.log":
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def die_with_parent() -> Callable[[], None] | None:
    """For ``preexec_fn``: the training process ends with the Ray worker that started it, so a killed sweep leaves
    no run behind (Linux; libc is loaded here, before the fork, so the child only makes the call)."""
    if sys.platform != "linux":
        return None
    import ctypes

    prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    return lambda: prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run_cell(args: list[str], folder: str, threads: int) -> tuple[int, float]:
    """One cell, in a Ray worker: ``msdp train`` with this worker's Python, appending to the cell's train.log;
    (exit code, wall seconds)."""
    command = [sys.executable, "-m", "msdp.cli", *args]
    started = time.monotonic()
    with open(Path(folder) / "train.log", "a") as log:
        log.write(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(command)}\n")
        log.flush()
        code = subprocess.run(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "OMP_NUM_THREADS": str(threads)},
            preexec_fn=die_with_parent(),
        ).returncode
    return code, time.monotonic() - started


def run_cells(
    jobs: list[tuple[Cell, list[str], Path]], threads: int, cores: int, parallel: int, address: str | None
) -> Iterator[tuple[Cell, int | None, float, str]]:
    """Each job as one Ray task, yielded (cell, exit code or None, wall s, Ray's error) as each ends. Each task
    asks for the ``cores`` its run keeps busy: a local Ray gets ``parallel`` times that, a cluster has its own."""
    import logging

    import ray

    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}  # the cells' output is in their train.log
    if address:
        ray.init(address=address, **quiet)
    else:  # a new Ray on this machine, whatever RAY_ADDRESS says
        ray.init(address="local", num_cpus=parallel * cores, include_dashboard=False, **quiet)
    try:
        task = ray.remote(run_cell).options(num_cpus=cores, max_retries=0)
        pending = {task.remote(args, str(folder), threads): (cell, time.monotonic()) for cell, args, folder in jobs}
        while pending:
            [ready], _ = ray.wait(list(pending), num_returns=1)
            cell, submitted = pending.pop(ready)
            try:
                code, wall = ray.get(ready)
                yield cell, code, wall, ""
            except ray.exceptions.RayError as exc:  # the worker died, or Ray could not run the task
                yield cell, None, time.monotonic() - submitted, str(exc).strip().splitlines()[0]
    finally:
        ray.shutdown()


def last_line(log: Path) -> str:
    """The log's last non-empty line (progress bars redraw with carriage returns: their last state)."""
    try:
        lines = [line.strip() for line in re.split(r"[\r\n]", log.read_text(errors="replace")) if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def cell_row(cell: Cell, folder: Path, status: str, action: str, code: int | None, wall: float) -> dict[str, Any]:
    """One summary row: how far the cell got (its metrics.csv) and its final evaluation."""
    rows = read_rows(folder / "metrics.csv") if (folder / "metrics.csv").is_file() else []
    if (folder / "summary.json").is_file():
        wall = json.loads((folder / "summary.json").read_text())["wall_s"]  # the run's own, over all resumes
    return {
        "cell": cell.name, "task": cell.task, "variant": cell.variant, "seed": cell.seed, "status": status,
        "action": action, "exit_code": "" if code is None else code,
        "env_steps": int(rows[-1]["env_steps"]) if rows else 0,
        "final_success": rows[-1]["success_rate"] if rows else math.nan,
        "wall_s": round(wall, 1), "last_line": "" if status == "done" else last_line(folder / "train.log"),
    }  # fmt: skip


def run_sweep(
    grid: Grid,
    out: Path,
    threads: int,
    cores: int,
    parallel: int,
    address: str | None = None,
    say: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run (or resume) every unfinished cell; the summary rows, in grid order, also in summary.csv/.json."""
    claim(out, grid)
    cells = expand(grid)
    rows: dict[str, dict[str, Any]] = {}
    jobs = []
    for cell in cells:
        folder = out / cell.name
        if state(folder) == "done":
            rows[cell.name] = cell_row(cell, folder, "done", "skipped", 0, 0.0)
            continue
        if state(folder) == "start":
            prepare(folder)
        jobs.append((cell, train_arguments(grid, cell, folder, threads), folder))
    actions = {cell.name: "resumed" if "--resume" in args else "started" for cell, args, _ in jobs}
    where = f"on the Ray cluster at {address}" if address else f"{parallel} at a time"
    say(f"sweep: {len(cells)} cells in {out}; {len(rows)} finished before (skipped), {len(jobs)} to run {where}, "
        f"{threads} torch thread(s) and {cores} core(s) each")  # fmt: skip
    done = failed = 0
    for cell, code, wall, error in run_cells(jobs, threads, cores, parallel, address) if jobs else ():
        folder = out / cell.name
        ok = code == 0 and state(folder) == "done"
        row = cell_row(cell, folder, "done" if ok else "failed", actions[cell.name], code, wall)
        rows[cell.name] = row
        done, failed = done + ok, failed + (not ok)
        counts = f"[{done + failed}/{len(jobs)}: {done} done, {failed} failed]"
        if ok:
            say(f"sweep: {counts} {cell.name} done: success {row['final_success']:.0%} at {row['env_steps']} steps, "
                f"{wall:.0f} s")  # fmt: skip
        else:
            why = error or row["last_line"] or "no output"
            say(f"sweep: {counts} {cell.name} FAILED (exit {code}): {why}; log {folder / 'train.log'}")
    summary = [rows[cell.name] for cell in cells]
    write_rows(out / "summary.csv", summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
