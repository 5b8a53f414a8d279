"""msdp sweep / report: a grid of runs on Ray (failures reported, resume after a kill, no process left behind,
grids checked up front) and seeds aggregated with bootstrap intervals, beside the paper's points."""

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_training import SMALL, encoder  # noqa: F401 (encoder: the tiny encoder fixture)

from msdp.cli import main as msdp
from msdp.cli import variant
from msdp.metrics import read_rows, write_rows
from msdp.paths import config_file
from msdp_policy.report import aggregate, bootstrap_interval, load_paper_points, read_sweep
from msdp_policy.sweep import sizing

RAY_MARKERS = ("raylet", "gcs_server", "ray::", "ray/_private", "ray/dashboard", "ray/autoscaler")


def ray_processes() -> set[int]:
    """Pids of live Ray processes (its daemons and workers) on this machine."""
    pids = set()
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # not a process, or gone
            continue
        if proc.name.isdigit() and any(marker in cmdline for marker in RAY_MARKERS):
            pids.add(int(proc.name))
    return pids


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture
def grid(tmp_path, encoder):  # noqa: F811 (the fixture imported above)
    """A grid file of 2 seeds x 2 variants of a tiny run, 20 steps with evaluations at 0, 10 and 20; the variant
    ``bad`` passes the config check but fails in training (RLPD without offline logs)."""
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump({**SMALL, "steps": 20, "random_steps": 10, "update_after": 5, "eval_every": 10}))
    path = tmp_path / "grid.yaml"
    values = {"config": str(config), "encoder": str(encoder), "seeds": [0, 1], "tasks": ["peg"],
              "variants": {"base": [], "bad": ["agent.rlpd=true"]}}  # fmt: skip
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


@pytest.mark.slow  # make test-slow: Ray start-up and eight tiny runs (about 30 s)
def test_a_sweep_runs_every_cell_reports_failures_and_resumes_after_a_kill(tmp_path, grid, capsys):
    out = tmp_path / "sweep"
    command = ["sweep", "--grid", str(grid), "--out", str(out), "--parallel", "2", "--threads", "1"]
    before = ray_processes()
    assert msdp(command) == 1  # a cell failed
    printed = capsys.readouterr().out
    assert "[4/4: 2 done, 2 failed]" in printed and "peg/bad/seed_1 FAILED (exit 2)" in printed
    summary = {row["cell"]: row for row in csv_rows(out / "summary.csv")}
    assert list(summary) == ["peg/base/seed_0", "peg/base/seed_1", "peg/bad/seed_0", "peg/bad/seed_1"]
    for seed in (0, 1):
        base, bad = summary[f"peg/base/seed_{seed}"], summary[f"peg/bad/seed_{seed}"]
        assert (base["status"], base["exit_code"], base["env_steps"]) == ("done", "0", "20")
        assert (bad["status"], bad["exit_code"]) == ("failed", "2") and "--offline" in bad["last_line"]
        rows = read_rows(out / "peg" / "base" / f"seed_{seed}" / "metrics.csv")
        assert [r["env_steps"] for r in rows] == [0, 10, 20]
        assert json.loads((out / "peg" / "base" / f"seed_{seed}" / "config.json").read_text())["seed"] == seed
        assert "RLPD" in (out / "peg" / "bad" / f"seed_{seed}" / "train.log").read_text()
    deadline = time.monotonic() + 20
    while ray_processes() - before and time.monotonic() < deadline:  # ray.shutdown may take a moment to reap
        time.sleep(0.5)
    assert not ray_processes() - before, "Ray left processes behind"

    assert msdp([*command, "--seeds", "0"]) == 2  # another grid on this folder
    assert "another grid (it differs in seeds" in capsys.readouterr().err

    # A kill during seed 1's final evaluation: agent.pt and the log are there, the last row and summary.json not.
    killed = out / "peg" / "base" / "seed_1"
    (killed / "summary.json").unlink()
    write_rows(killed / "metrics.csv", read_rows(killed / "metrics.csv")[:-1])
    finished = out / "peg" / "base" / "seed_0"
    stamps = {name: (finished / name).stat().st_mtime_ns for name in ("metrics.csv", "train.log", "agent.pt")}
    assert msdp(command) == 1
    assert "1 finished before (skipped), 3 to run" in capsys.readouterr().out
    assert {name: (finished / name).stat().st_mtime_ns for name in stamps} == stamps  # not retrained
    assert [r["env_steps"] for r in read_rows(killed / "metrics.csv")] == [0, 10, 20]
    assert "--resume" in (killed / "train.log").read_text()
    actions = {row["cell"]: (row["status"], row["action"]) for row in csv_rows(out / "summary.csv")}
    assert actions["peg/base/seed_0"] == ("done", "skipped") and actions["peg/base/seed_1"] == ("done", "resumed")
    assert actions["peg/bad/seed_0"] == ("failed", "started")

    assert msdp(["report", str(out)]) == 0
    table = (out / "report.md").read_text()
    assert "| base | 0% [0%, 0%] (2) |" in table and "peg/bad/seed_0: exit 2" in table


def test_a_bad_grid_is_refused_before_anything_runs(tmp_path, grid, encoder, capsys):  # noqa: F811
    out = tmp_path / "sweep"
    assert msdp(["sweep", "--grid", str(grid), "--out", str(out), "--variant", "typo:agent.bridg=pooling"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cell peg/typo/seed_0: unknown parameter(s) 'agent.bridg'" in err
    assert msdp(["sweep", "--grid", str(grid), "--out", str(out), "--set", "agent.hidden=-3"]) == 2
    assert "agent.hidden" in capsys.readouterr().err
    assert msdp(["sweep", "--grid", str(grid), "--out", str(out), "--variant", "s:seed=3"]) == 2
    assert "seeds and tasks" in capsys.readouterr().err
    assert not out.exists()

    wide = ("wide", ["agent.hidden=64", "env.task.hole_yaw_range=0.3"])
    assert variant("wide:agent.hidden=64, env.task.hole_yaw_range=0.3") == wide
    assert variant("box:env.sim.box=[1, 2],seed=1") == ("box", ["env.sim.box=[1, 2]", "seed=1"])
    # The shipped grid is valid: every one of its cells builds a train config.
    shipped = ["sweep", "--grid", str(config_file("sweep.yaml")), "--out", str(out), "--encoder", str(encoder)]
    assert msdp([*shipped, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "peg/vision_only/seed_2: start; --set steps=200000 --set sensors=vision" in printed
    assert "15 cells" in printed and not out.exists()


def test_runs_fill_the_cores_by_default():
    assert sizing(2, learner_process=True, parallel=None, threads=None) == (1, 1, 2)  # acting + learner
    assert sizing(2, learner_process=False, parallel=None, threads=None) == (2, 1, 1)
    assert sizing(16, learner_process=True, parallel=2, threads=None) == (2, 7, 8)
    assert sizing(16, learner_process=False, parallel=None, threads=4) == (16, 4, 4)  # as asked: oversubscribed


def test_the_bootstrap_interval_over_seeds():
    assert bootstrap_interval([0.4, 0.4, 0.4]) == (0.4, 0.4)  # identical seeds: no width
    low, high = bootstrap_interval([0.2, 0.4, 0.6, 0.8])
    assert 0.2 <= low < 0.5 < high <= 0.8 and bootstrap_interval([0.2, 0.4, 0.6, 0.8]) == (low, high)
    rng = np.random.default_rng(1)
    widths = []
    for seeds in (4, 16, 64):
        values = rng.normal(0.5, 0.1, seeds)
        low, high = bootstrap_interval(values)
        assert low < values.mean() < high
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    assert widths[2] == pytest.approx(2 * 1.96 * 0.1 / 8, rel=0.3)  # about the normal interval's width


def constructed_sweep(folder: Path) -> dict[tuple[str, int], list[float]]:
    """Two variants on peg (3 seeds, and 2 seeds one of which stopped at 20 steps) and one on push_cube."""
    runs = {
        ("peg", "msdp", 0): [0.0, 0.5, 1.0], ("peg", "msdp", 1): [0.0, 0.3, 0.8], ("peg", "msdp", 2): [0.0, 0.1, 0.6],
        ("peg", "pooling", 0): [0.0, 0.2, 0.4], ("peg", "pooling", 1): [0.0, 0.4],
        ("push_cube", "msdp", 0): [0.1, 0.9, 0.9],
    }  # fmt: skip
    for (task, name, seed), success in runs.items():
        cell = folder / task / name / f"seed_{seed}"
        cell.mkdir(parents=True)
        write_rows(cell / "metrics.csv", [{"env_steps": 10 * i, "success_rate": s, "return": s - 1}
                                          for i, s in enumerate(success)])  # fmt: skip
    (folder / "sweep.yaml").write_text("seeds: [0, 1, 2]\n")
    return runs


def test_the_report_aggregates_seeds_at_every_step_beside_the_papers_points(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    runs = constructed_sweep(sweep)
    paper = tmp_path / "paper.yaml"
    paper.write_text(yaml.safe_dump({"source": "a constructed paper", "points": [
        {"task": "peg", "variant": "msdp", "env_steps": 20, "success": 0.9},
        {"task": "peg", "variant": "concat", "env_steps": 10, "success": 0.25},
        {"task": "drawer", "variant": "msdp", "env_steps": 10, "success": 0.5},
    ]}))  # fmt: skip
    assert msdp(["report", str(sweep), "--paper", str(paper), "--out", str(tmp_path / "report")]) == 0
    assert "3 curve(s)" in capsys.readouterr().out
    table = csv_rows(tmp_path / "report" / "curves.csv")
    rows = {(r["source"], r["task"], r["variant"], int(r["env_steps"])): r for r in table}
    for (source, task, name, step), row in rows.items():
        if source == "sweep":
            values = [s[step // 10] for (t, v, _), s in runs.items() if (t, v) == (task, name) and len(s) > step // 10]
            assert int(row["seeds"]) == len(values)
            assert float(row["mean"]) == pytest.approx(np.mean(values))
            assert (float(row["ci_low"]), float(row["ci_high"])) == pytest.approx(bootstrap_interval(values))
    assert rows[("sweep", "peg", "pooling", 20)]["seeds"] == "1"  # one seed had not got there
    assert float(rows[("paper", "peg", "msdp", 20)]["mean"]) == 0.9 and ("paper", "drawer", "msdp", 10) not in rows
    assert len(rows) == 3 + 3 + 3 + 2

    table = (tmp_path / "report" / "report.md").read_text()
    low, high = bootstrap_interval([0.5, 0.3, 0.1])
    assert f"| msdp | 30% [{low:.0%}, {high:.0%}] (3) |" in table  # peg's last common step: 10
    assert "| paper: concat | 25% |" in table and "a constructed paper" in table
    assert (tmp_path / "report" / "curves.png").stat().st_size > 10_000

    assert msdp(["report", str(sweep), "--at", "0", "20", "--out", str(tmp_path / "at")]) == 0
    table = (tmp_path / "at" / "report.md").read_text()
    assert "| variant | 0 steps | 20 steps |" in table and "| pooling | 0% [0%, 0%] (2) | 40% [40%, 40%] (1) |" in table
    assert "paper" not in table

    assert msdp(["curves", str(sweep), "--out", str(tmp_path / "curves.png")]) == 0  # a sweep folder
    assert (tmp_path / "curves.png").stat().st_size > 10_000 and "mean over seeds" in capsys.readouterr().out
    assert aggregate(read_sweep(sweep)) == aggregate(read_sweep(sweep))  # reproducible


def test_the_shipped_paper_points_are_fractions_of_the_papers_tasks(tmp_path):
    points, source = load_paper_points(config_file("paper_points.yaml"))
    assert {"task": "peg", "variant": "msdp", "env_steps": 200_000, "success": 0.80} in points
    assert {p["task"] for p in points} <= {"peg", "push_cube", "close_drawer"} and "Krohn" in source
    as_csv = tmp_path / "points.csv"
    write_rows(as_csv, points)
    assert load_paper_points(as_csv) == (points, "")
    as_csv.write_text("task,variant,env_steps,success\npeg,msdp,10,80\n")
    with pytest.raises(ValueError, match="not a fraction"):
        load_paper_points(as_csv)
