"""The main job until learning lands: a scripted peg insertion on the simulated Franka, with a report.

The arm runs under the same impedance law as the real robot; the report shows the tool position and the
wrist force over time (contact is visible as the force rises at the fixture) and a strip of camera frames.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from msdp.config import to_dict  # noqa: E402
from msdp.provenance import provenance  # noqa: E402
from msdp_franka_driver.sim.config import EnvConfig
from msdp_franka_driver.sim.env import FrankaTaskEnv  # noqa: E402

FRAME_SIZE = 160
SEAT_STEPS = 8  # after insertion, press the peg onto the hole's floor: the wrist sensor shows the contact


def run_episode(env: FrankaTaskEnv, seed: int, record: bool) -> dict:
    """One scripted episode; with ``record``, the time series and camera frames for the report."""
    obs, _ = env.reset(seed=seed)
    trace: dict[str, list] = {"time": [], "position": [], "force": [], "frames": [], "frames_64": []}

    def remember(obs: dict[str, np.ndarray]) -> None:
        if record:
            trace["time"].append(env.sim.time)
            trace["position"].append(obs["ee_pose"][:3])
            trace["force"].append(obs["wrench"][-1, :3])
            trace["frames"].append(env.sim.render(width=FRAME_SIZE, height=FRAME_SIZE))
            trace["frames_64"].append(obs["image"])

    terminated = truncated = False
    while not (terminated or truncated):
        obs, _, terminated, truncated, info = env.step(env.scripted_action())
        remember(obs)
    result = {"success": bool(info["success"]), "steps": env.steps, "trace": trace, "inserted_at": env.sim.time}
    if record and info["success"]:
        for _ in range(SEAT_STEPS):
            obs, *_ = env.step(np.array([0.0, 0.0, -0.5, 0.0]))
            remember(obs)
    return result


def plot_report(trace: dict, inserted_at: float, path: Path) -> None:
    time = np.array(trace["time"])
    position = np.array(trace["position"])
    force = np.array(trace["force"])
    fig, (ax_pos, ax_force) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for axis, label in enumerate("xyz"):
        ax_pos.plot(time, position[:, axis], label=f"tool {label}")
        ax_force.plot(time, force[:, axis], label=f"F{label}")
    if inserted_at < time[-1]:
        for ax in (ax_pos, ax_force):
            ax.axvspan(inserted_at, time[-1], color="0.9", label="peg seated on the hole floor")
    ax_pos.set_ylabel("position [m]")
    ax_pos.set_title("Scripted peg insertion under Cartesian impedance control (simulated FR3)")
    ax_force.set_ylabel("wrist force on tool [N]\n(sensor frame, z = tool axis)")
    ax_force.set_xlabel("time [s]")
    for ax in (ax_pos, ax_force):
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def frame_strip(trace: dict, path: Path, count: int = 6) -> None:
    picks = np.linspace(0, len(trace["frames"]) - 1, count).round().astype(int)
    fig, axes = plt.subplots(2, count, figsize=(2 * count, 4.3))
    for column, index in enumerate(picks):
        axes[0, column].imshow(trace["frames"][index])
        axes[0, column].set_title(f"t = {trace['time'][index]:.1f} s", fontsize=9)
        axes[1, column].imshow(trace["frames_64"][index])
        for row in (0, 1):
            axes[row, column].axis("off")
    axes[1, 0].set_title("64x64 policy camera", fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_demo(out: Path, seed: int = 0, episodes: int = 5) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    config = EnvConfig()
    env = FrankaTaskEnv(config)
    try:
        results = [
            run_episode(env, seed + index, record=index == 0)
            for index in tqdm(range(episodes), desc="scripted peg insertion", unit="episode")
        ]
    finally:
        env.close()
    trace = results[0]["trace"]
    plot_report(trace, results[0]["inserted_at"], out / "report.png")
    frame_strip(trace, out / "frames.png")
    summary = {
        "task": config.task.name,
        "episodes": episodes,
        "successes": sum(r["success"] for r in results),
        "steps": [r["steps"] for r in results],
        "max_contact_force_n": float(np.abs(np.array(trace["force"])).max()),
        "config": to_dict(config),
        **provenance(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
