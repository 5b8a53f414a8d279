"""Evaluating a policy on a simulated task: fixed episode seeds, the run's own cell, and the paper's perturbations.

Scene seeds are split at ``EVAL_SEED_BASE``: training episodes draw theirs below it (``training_seed``),
evaluation episodes use seed block ``b`` (``eval_seeds``): ``EVAL_SEED_BASE + b * EVAL_BLOCK + i``. So no
training episode is ever an evaluation scene, and every evaluation of every run on block 0 (what training's own
evaluations use) sees the same scenes.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from msdp.config import ConfigError, from_dict, to_dict
from msdp.metrics import write_rows
from msdp.seeding import seed_run
from msdp.specs import check_same
from msdp_franka_driver.control_law import ImpedanceConfig
from msdp_franka_driver.sim.config import EnvConfig
from msdp_franka_driver.sim.env import FrankaTaskEnv
from msdp_perception.checkpoint import first_line
from msdp_policy.policy import Policy, load_policy
from msdp_policy.tasks import TaskConfig
from msdp_policy.video import VIEW_CAMERA, VIEW_SIZE, EpisodeVideo

EVAL_SEED_BASE = 1_000_000  # training scene seeds lie below it, evaluation scene seeds at and above it
EVAL_BLOCK = 100_000  # seeds per evaluation seed block: the most episodes one evaluation runs
MAX_SEED_BLOCK = 10**9


def training_seed(rng: np.random.Generator) -> int:
    """A training episode's scene seed: below ``EVAL_SEED_BASE``, so training never sees an evaluation scene."""
    return int(rng.integers(EVAL_SEED_BASE))


def eval_seeds(block: int, episodes: int) -> range:
    """The scene seeds of ``episodes`` evaluation episodes in seed block ``block`` (``msdp eval --seed``)."""
    _check_int("seed", block, 0, MAX_SEED_BLOCK)
    _check_int("episodes", episodes, 1)
    if episodes > EVAL_BLOCK:
        raise ConfigError(f"parameter 'episodes': at most {EVAL_BLOCK} per evaluation (one seed block), got {episodes}")
    first = EVAL_SEED_BASE + block * EVAL_BLOCK
    return range(first, first + episodes)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of a success rate (honest at 0 and n, unlike the normal approximation)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class EvaluationEpisode:
    """How one evaluation episode ended; ``final_error_m`` is the task's distance still to go (``Score``)."""

    seed: int
    success: bool
    total_reward: float
    length: int
    final_error_m: float


def run_episode(
    policy: Policy, env: FrankaTaskEnv, seed: int, deterministic: bool = True, video: EpisodeVideo | None = None
) -> EvaluationEpisode:
    """One episode from scene ``seed``; with ``video``, a frame per observation (the first included)."""
    observation, _ = env.reset(seed=seed)

    def record(observation: dict[str, np.ndarray]) -> None:
        if video is not None:
            video.add(observation["image"], env.sim.render(VIEW_CAMERA, *VIEW_SIZE), observation["wrench"][-1])

    record(observation)
    total, done = 0.0, False
    while not done:
        action = policy.act(policy.encode(observation).pooled, deterministic)
        observation, reward, terminated, truncated, info = env.step(action)
        record(observation)
        total += reward
        done = terminated or truncated
    return EvaluationEpisode(seed, bool(info["success"]), total, env.steps, float(info["goal_error"]))


def run_episodes(
    policy: Policy,
    env: FrankaTaskEnv,
    seeds: Sequence[int],
    deterministic: bool = True,
    video_folder: Path | None = None,
    videos: int = 0,
    progress: bool = False,
) -> list[EvaluationEpisode]:
    """An episode per seed; the first ``videos`` are filmed into ``video_folder/episode_<index>.mp4``."""
    task = env.config.task
    results: list[EvaluationEpisode] = []
    bar = tqdm(seeds, desc="eval", unit="episode", disable=None if progress else True)  # None: off without a TTY
    for index, seed in enumerate(bar):
        filming = video_folder is not None and index < videos
        recorder = (
            EpisodeVideo(video_folder / f"episode_{index:03d}.mp4", task.control_rate, task.max_episode_steps)
            if filming
            else nullcontext()
        )
        with recorder as video:
            results.append(run_episode(policy, env, seed, deterministic, video))
        bar.set_postfix(success=f"{sum(r.success for r in results)}/{len(results)}", refresh=False)
    return results


def summarise(results: Sequence[EvaluationEpisode]) -> dict[str, Any]:
    """Success rate with its 95 % Wilson interval, and the means of return, length and final error."""
    successes = sum(r.success for r in results)
    low, high = wilson_interval(successes, len(results))
    return {
        "success_rate": successes / len(results),
        "successes": successes,
        "episodes": len(results),
        "wilson_95": [low, high],
        "return": float(np.mean([r.total_reward for r in results])),
        "episode_length": float(np.mean([r.length for r in results])),
        "final_error_m": float(np.mean([r.final_error_m for r in results])),
    }


def episode_rows(results: Sequence[EvaluationEpisode]) -> list[dict[str, float]]:
    """The rows of ``episodes.csv``, one per episode in order."""
    return [
        {"episode": index, "seed": r.seed, "success": int(r.success), "return": r.total_reward, "length": r.length,
         "final_error_m": r.final_error_m}
        for index, r in enumerate(results)
    ]  # fmt: skip


def evaluate(policy: Policy, env: FrankaTaskEnv, episodes: int, deterministic: bool = True) -> dict[str, Any]:
    """Training's evaluation: ``summarise`` over the first ``episodes`` seeds of block 0."""
    _check_int("episodes", episodes, 1)
    return summarise(run_episodes(policy, env, eval_seeds(0, episodes), deterministic))


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    """Counts and seed blocks are whole numbers in range: an evaluation of no episode would report nan."""
    whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not whole or value < low or (high is not None and value > high):
        expected = f"of at least {low}" if high is None else f"from {low} to {high}"
        raise ConfigError(f"parameter '{name}': expected an integer {expected}, got {value!r}")


@dataclass(frozen=True)
class Perturbations:
    """Test-time changes to the task (all validated by the task and controller configs)."""

    image_noise: float = 0.0  # Gaussian pixel noise std, 0-255 scale
    ft_noise: float = 0.0  # Gaussian F/T noise std, N and Nm
    stiffness: float | None = None  # translational stiffness, N/m; None: the run's
    mass_scale: float = 1.0
    friction_scale: float = 1.0

    def describe(self) -> str:
        default = Perturbations()
        changed = {k: v for k, v in asdict(self).items() if v != getattr(default, k)}
        return ", ".join(f"{k} {v}" for k, v in changed.items())


def trained_cell(path: Path, policy: Policy) -> tuple[EnvConfig, Path | None]:
    """The cell the policy's run trained in (impedance, safety, physics, sensors) from the run's ``config.json``
    beside the policy, or one folder up for a kept ``checkpoints/`` policy; the default cell, and None, for a
    policy outside its run folder."""
    folder = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    config = folder / "config.json"
    if not config.is_file():
        return EnvConfig(), None
    try:
        env = from_dict(EnvConfig, json.loads(config.read_text())["env"], prefix="env.")
    except (OSError, ValueError, KeyError, TypeError) as exc:  # ValueError includes ConfigError and JSONDecodeError
        raise ConfigError(f"{config}: not the config of a run ({first_line(exc)})") from exc
    if env.task != from_dict(TaskConfig, policy.info.task):
        raise ConfigError(f"{config}: not the config of {path}'s run (its task settings differ from the policy's)")
    return env, config


def evaluate_policy(
    path: str | Path,
    episodes: int = 50,
    perturbations: Perturbations = Perturbations(),
    task: str | None = None,
    encoder_checkpoint: str | None = None,
    deterministic: bool = True,
    device: str = "auto",
    *,
    seed: int = 0,
    out: Path | None = None,
    videos: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate in the cell the policy's run trained in, on seed block ``seed``; with ``out``, write
    ``episodes.csv``, ``summary.json`` and the first ``videos`` episodes as ``videos/episode_<i>.mp4`` there.

    Bad settings raise ConfigError naming the parameter (``task.*`` or ``impedance.*`` for a perturbation)
    before any episode runs; a missing or damaged policy raises CheckpointError."""
    seeds = eval_seeds(seed, episodes)
    _check_int("video", videos, 0, episodes)
    if videos and out is None:
        raise ConfigError("parameter 'video': filming needs an output folder")
    if out is not None and out.exists():
        raise ConfigError(f"--out {out} already exists; an evaluation writes a new folder")
    path = Path(path)
    policy = load_policy(path, encoder_checkpoint, device)
    cell, cell_source = trained_cell(path, policy)
    task_config = from_dict(TaskConfig, {
        **policy.info.task, "name": task or policy.info.task["name"], "image_noise_std": perturbations.image_noise,
        "ft_noise_std": perturbations.ft_noise, "object_mass_scale": perturbations.mass_scale,
        "object_friction_scale": perturbations.friction_scale,
    }, prefix="task.")  # fmt: skip
    config = replace(cell, task=task_config)
    if perturbations.stiffness is not None:
        impedance = from_dict(
            ImpedanceConfig,
            {**asdict(config.impedance), "translational_stiffness": perturbations.stiffness},
            prefix="impedance.",
        )
        config = replace(config, impedance=impedance)
    env = FrankaTaskEnv(config)
    check_same(policy.encoder.config.observation_spec, f"{path}'s encoder", env.observation_spec, "the simulated cell")
    video_folder = out / "videos" if videos else None
    if out is not None:
        out.mkdir(parents=True)
    if video_folder is not None:
        video_folder.mkdir()
    seed_run(seeds[0])  # sampled actions, too, are the same from one call to the next
    try:
        results = run_episodes(policy, env, seeds, deterministic, video_folder, videos, progress)
    finally:
        env.close()
    summary = {
        **summarise(results),
        "seeds": {"block": seed, "first": seeds[0], "last": seeds[-1]},
        "policy": str(path.resolve()),
        "encoder": policy.info.encoder_checkpoint,
        "task": task_config.name,
        "action": "mean" if deterministic else "sampled",
        "device": str(policy.device),
        "perturbations": asdict(perturbations),
        "cell": str(cell_source) if cell_source else "default (no config.json of a run beside the policy)",
        "impedance": to_dict(config.impedance),
        "safety": to_dict(config.safety),
        "videos": videos,
    }
    if out is not None:
        write_rows(out / "episodes.csv", episode_rows(results))
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return {**summary, "episode_results": results}
