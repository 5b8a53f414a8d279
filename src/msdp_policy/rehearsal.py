"""The paper's real-robot protocol, rehearsed on the simulated FR3 through the nodes a real cell runs.

``msdp rehearse`` plays, in real time over the ROS graph, what a user does on the real cell:

  teach    the scripted operator drives the peg home and ``teach-goal`` stores the tool pose (goal.yaml)
  demos    20 demonstrations by the scripted operator (teleop node), motion resets, recorded as a bag
  play     about 2,000 samples of random play, recorded as a bag
  pretrain the MSDP encoder on both bags (``msdp pretrain``, 6,000 updates)
  offline  both bags encoded into RLPD's offline log (``msdp offline-log``)
  learn    policy + learner nodes (RLPD, update-to-data ratio 2) for 6,000 interactions, motion resets
  eval     50 episodes with the mean action

The cell is the simulated driver serving its camera and wrist sensor as a real cell's devices do (an MJPEG
stream, an ATI Net F/T box), read by ``camera_node`` and ``ft_node``; the fixture does not move between
episodes (``task.hole_xy_range`` and ``hole_yaw_range`` 0), as on a real cell. Every node is started as its own
process (``msdp.processes``), with its log in ``<out>/logs``. ``report.md`` and ``report.json`` give the
success against interactions, the wall-clock time of each phase, the intervention rate, and the commands a
user types on the real cell for each phase. ``rehearsal.json`` records the finished phases: ``--resume``
continues with the first unfinished one (the learning phase from its transition log and ``agent.pt``).
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm import tqdm

from msdp.config import ConfigError, flatten, from_dict, param_range, to_dict
from msdp.metrics import read_rows
from msdp.processes import NodeDied, NodeGroup
from msdp_perception.pretrain import PretrainConfig
from msdp_policy.agent import AgentConfig
from msdp_policy.episodes import ResetConfig
from msdp_policy.evaluation import wilson_interval
from msdp_policy.tasks import TaskConfig
from msdp_policy.transition_log import LOG_FILE, TransitionLogError, TransitionReader

# How a rehearsal runs, not what it does: may change on --resume
RUNTIME = ("camera_port", "ft_port", "ft_http_port", "pretrain_threads", "learner_threads")
PHASES = ("teach", "demos", "play", "pretrain", "offline", "learn", "eval")
NODES = {
    "driver": "msdp_franka_driver.driver_node",
    "camera": "msdp_perception.camera_node",
    "ft": "msdp_perception.ft_node",
    "recorder": "msdp_perception.recorder_node",
    "teleop": "msdp_policy.teleop_node",
    "teach_goal": "msdp_policy.teach_goal_node",
    "encoder": "msdp_perception.encoder_node",
    "policy": "msdp_policy.policy_node",
    "learner": "msdp_policy.learner_node",
    "operator": "msdp_policy.teleop_node",
}


def fixed_fixture() -> TaskConfig:
    return TaskConfig(hole_xy_range=0.0, hole_yaw_range=0.0)


@dataclass(frozen=True)
class RehearsalConfig:
    """The protocol's sizes and settings; ``config/rehearse.yaml`` holds the paper's, ``--short`` a smoke test's."""

    demonstrations: int = field(default=20, metadata=param_range(1, 10_000, "scripted demonstrations"))
    demo_noise: float = field(default=0.0, metadata=param_range(0.0, 1.0, "Gaussian noise on the expert's actions"))
    play_samples: int = field(default=2000, metadata=param_range(1, 10**7, "random-play samples (10 Hz)"))
    pretrain_threads: int = field(default=2, metadata=param_range(1, 64, "torch threads while pretraining"))
    online_steps: int = field(default=6000, metadata=param_range(1, 10**8, "online interactions (policy steps)"))
    update_after: int = field(default=200, metadata=param_range(1, 10**7, "online steps before the first update"))
    eval_episodes: int = field(default=50, metadata=param_range(1, 100_000, "mean-action episodes at the end"))
    learner_threads: int = field(default=1, metadata=param_range(1, 64, "torch threads of the learner node"))
    learner_lag: int = field(
        default=200, metadata=param_range(0, 10**7, "between episodes the arm waits while the learner owes more")
    )
    real_time_factor: float = field(default=1.0, metadata=param_range(0.1, 10.0, "simulated s per wall s"))
    interventions: float = field(
        default=0.0, metadata=param_range(0.0, 30.0, "scripted operator takes over after s stuck; 0 = none")
    )
    seed: int = field(default=0, metadata=param_range(0, 2**31 - 1))
    camera_port: int = field(default=8080, metadata=param_range(1024, 65535, "virtual cell MJPEG port"))
    ft_port: int = field(default=49152, metadata=param_range(1024, 65535, "virtual cell Net F/T UDP port"))
    ft_http_port: int = field(default=8081, metadata=param_range(1024, 65535, "virtual cell Net F/T HTTP port"))
    pretrain: PretrainConfig = field(default_factory=lambda: PretrainConfig(steps=6000))
    task: TaskConfig = field(default_factory=fixed_fixture)
    reset: ResetConfig = field(default_factory=ResetConfig)
    agent: AgentConfig = field(default_factory=lambda: AgentConfig(rlpd=True, layer_norm=True))

    def check(self, prefix: str = "") -> None:
        if self.task.name != "peg":
            raise ConfigError(f"parameter '{prefix}task.name': the rehearsal is the paper's peg protocol")
        if not self.agent.rlpd:
            raise ConfigError(f"parameter '{prefix}agent.rlpd': the protocol learns with RLPD (true)")


SHORT = {  # every phase, at a size that checks the hand-overs in about a minute
    "demonstrations": 1,
    "play_samples": 20,
    "online_steps": 60,
    "update_after": 20,
    "eval_episodes": 1,
    "real_time_factor": 2.0,
    "task": {"max_episode_steps": 20},
    "pretrain": {"steps": 10, "val_every": 5, "val_samples": 16, "batch_size": 16},
}


@dataclass
class Phase:
    name: str
    seconds: float
    summary: str
    command: str  # what a user types for this phase on the real cell


class Rehearsal:
    def __init__(self, config: RehearsalConfig, out: Path, progress: bool = True):
        self.config, self.out, self.progress = config, out, progress
        self.logs = out / "logs"
        self.state_file = out / "rehearsal.json"
        self.phases: dict[str, Phase] = {}
        if self.state_file.exists():
            saved = json.loads(self.state_file.read_text())
            ours, theirs = to_dict(config), saved.get("config", {})
            keys = sorted((set(ours) | set(theirs)) - set(RUNTIME))
            differing = [k for k in keys if ours.get(k) != theirs.get(k)]
            if differing:
                key = differing[0]
                raise ConfigError(
                    f"{out} was rehearsed with {key} {theirs.get(key)}, not {ours.get(key)}; "
                    "resume with the same settings, or choose a new --out"
                )
            self.phases = {p["name"]: Phase(**p) for p in saved["phases"]}
        self.goal = out / "goal.yaml"
        self.bags = {"demos": out / "bags" / "demos", "play": out / "bags" / "play"}
        self.encoder = out / "pretrain" / "encoder.safetensors"
        self.offline = out / "offline"
        self.online = out / "online"

    # -- the run ------------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """The phases not done yet, in order; a SIGTERM (``kill``) stops the running phase's nodes and job as
        Ctrl-C does, instead of leaving them running without the rehearsal."""
        previous = signal.signal(signal.SIGTERM, raise_interrupt)
        try:
            return self.run_phases()
        finally:
            signal.signal(signal.SIGTERM, previous)

    def run_phases(self) -> dict[str, Any]:
        steps: dict[str, Callable[[], tuple[str, str]]] = {
            "teach": self.teach,
            "demos": self.demos,
            "play": self.play,
            "pretrain": self.pretrain,
            "offline": self.offline_log,
            "learn": self.learn,
            "eval": self.evaluate,
        }
        for name in PHASES:
            if name in self.phases:
                print(f"rehearse: {name} done before ({self.phases[name].summary}); skipped")
                continue
            print(f"rehearse: {name} ...", flush=True)
            started = time.monotonic()
            summary, command = steps[name]()
            self.phases[name] = Phase(name, time.monotonic() - started, summary, command)
            print(f"rehearse: {name} done in {self.phases[name].seconds / 60:.1f} min: {summary}", flush=True)
            self.save_state()
        return self.report()

    def save_state(self) -> None:
        state = {"config": to_dict(self.config), "phases": [vars(p) for p in self.phases.values()]}
        partial = self.state_file.with_suffix(".partial")
        partial.write_text(json.dumps(state, indent=2))
        partial.replace(self.state_file)

    # -- node parameters ------------------------------------------------------------------------------------------
    def task_params(self) -> dict[str, Any]:
        return flatten_values(self.config.task, "task.")

    def cell(self, nodes: NodeGroup) -> None:
        """The simulated arm behind a real cell's device protocols, and the sensor nodes that read them."""
        c = self.config
        nodes.start(
            "driver",
            NODES["driver"],
            {
                "backend": "mujoco",
                "real_time_factor": c.real_time_factor,
                "seed": c.seed,
                "sim_sensors": "virtual_cell",
                "virtual_cell.camera_port": c.camera_port,
                "virtual_cell.ft_port": c.ft_port,
                "virtual_cell.ft_http_port": c.ft_http_port,
                **self.task_params(),
            },
        )
        nodes.start(
            "camera", NODES["camera"], {"device": f"http://127.0.0.1:{c.camera_port}/stream.mjpg", "use_sim_time": True}
        )
        nodes.start(
            "ft",
            NODES["ft"],
            {"sensor_ip": "127.0.0.1", "port": c.ft_port, "http_port": c.ft_http_port, "use_sim_time": True},
        )

    def teleop_params(self, kind: str, episodes: int, **extra: Any) -> dict[str, Any]:
        c = self.config
        return {
            "operator_kind": kind,
            "episodes": episodes,
            "seed": c.seed,
            "use_sim_time": True,
            **flatten_values(c.reset, "reset."),
            **self.task_params(),
            **extra,
        }

    def group(self) -> NodeGroup:
        return NodeGroup(self.logs)

    # -- phases -----------------------------------------------------------------------------------------------------
    def teach(self) -> tuple[str, str]:
        """The scripted operator (told the hole by the simulator, as a person sees it) drives the peg home; the
        goal is stored at the end of its episode."""
        with self.group() as nodes:
            self.cell(nodes)
            teach = {"task.success_depth": 0.035, "task.max_episode_steps": 60}  # all the way down, then hold
            nodes.start(
                "teleop",
                NODES["teleop"],
                {**self.teleop_params("scripted", 1, auto_success=False, wait_for_recorder=False), **teach},
            )
            nodes.start(
                "teach_goal",
                NODES["teach_goal"],
                {"out": str(self.goal), "confirm": "episode", "use_sim_time": True, "timeout": 300.0},
            )
            self.wait(nodes, "teach_goal", 600)
        return f"goal in {self.goal}", "msdp teach-goal --out config/goal.yaml   # arm moved by hand (hand_guide)"

    def record(self, name: str, kind: str, episodes: int, **extra: Any) -> tuple[str, str]:
        bag = self.bags[name]
        if bag.exists():  # a recording a kill cut short: kept aside, never deleted
            bag.rename(bag.with_name(f"{bag.name}.interrupted-{int(time.time())}"))
        bag.parent.mkdir(parents=True, exist_ok=True)
        with self.group() as nodes:
            self.cell(nodes)
            nodes.start("recorder", NODES["recorder"], {"output": str(bag), "use_sim_time": True})
            params = self.teleop_params(kind, episodes, reset_kind="motion", goal_file=str(self.goal), **extra)
            nodes.start("teleop", NODES["teleop"], params)
            self.wait(nodes, "teleop", 60 + episodes * (self.config.task.max_episode_steps * 0.5 + 60))
            nodes.stop("recorder")  # closes the bag
        from msdp_perception.dataset import BagDataset

        data = BagDataset([bag], progress=False)
        linked = int((data.next_index >= 0).sum())
        return f"{episodes} episodes, {len(data)} samples ({linked} with an action) in {bag}", kind

    def demos(self) -> tuple[str, str]:
        summary, _ = self.record(
            "demos", "scripted", self.config.demonstrations, **{"operator.noise": self.config.demo_noise}
        )
        return summary, (
            "ros2 launch msdp msdp.launch.py backend:=libfranka ... record:=bags/demos & "
            "teleop_node --ros-args --params-file config/teleop.yaml -p operator_kind:=spacemouse "
            "-p goal_file:=config/goal.yaml -p episodes:=20"
        )

    def play(self) -> tuple[str, str]:
        episodes = math.ceil(self.config.play_samples / self.config.task.max_episode_steps)
        summary, _ = self.record("play", "random", episodes, auto_success=False)
        return summary, (
            "ros2 launch msdp msdp.launch.py backend:=libfranka ... record:=bags/play & "
            "teleop_node --ros-args --params-file config/teleop.yaml -p operator_kind:=random "
            f"-p goal_file:=config/goal.yaml -p wait_for_start:=false -p episodes:={episodes}"
        )

    def pretrain(self) -> tuple[str, str]:
        c = self.config
        out = self.out / "pretrain"
        if out.exists():
            shutil.rmtree(out)  # an interrupted pretraining starts again (its checkpoint is only written at the end)
        config = self.out / "pretrain.yaml"
        config.write_text(yaml.safe_dump(to_dict(replace(c.pretrain, seed=c.seed))))
        output = self.job(
            "pretrain",
            [
                "pretrain",
                "--bags",
                *map(str, self.bags.values()),
                "--config",
                str(config),
                "--out",
                str(out),
                "--threads",
                str(c.pretrain_threads),
            ],
        )
        summary = output.splitlines()[0].removeprefix("pretrain: ")
        return summary, f"msdp pretrain --bags bags/demos bags/play --steps {c.pretrain.steps} --out runs/pretrain"

    def offline_log(self) -> tuple[str, str]:
        """One offline log per recording: RLPD draws each batch's offline half from one of them at random, so
        the 20 demonstrations weigh as much as the play (in one log they would be a tenth of the samples)."""
        sets = [a for key, value in self.task_params().items() for a in ("--set", f"{key}={value}")]
        summaries = []
        for name, bag in self.bags.items():
            log = self.offline / name
            if log.exists():
                shutil.rmtree(log)
            args = ["offline-log", "--bags", str(bag), "--encoder", str(self.encoder), "--out", str(log), *sets]
            summaries.append(f"{name}: " + self.job(f"offline_{name}", args).splitlines()[-1].split(" in ")[0])
        command = ("msdp offline-log --bags bags/demos --encoder runs/pretrain/encoder.safetensors --out runs/offline/"
                   "demos (and the same for bags/play)")  # fmt: skip
        return "; ".join(summaries), command

    def policy_params(self, transitions: Path, **extra: Any) -> dict[str, Any]:
        c = self.config
        return {
            "transitions": str(transitions),
            "goal_file": str(self.goal),
            "reset_kind": "motion",
            "auto_recover": True,
            "seed": c.seed,
            "use_sim_time": True,
            "agent.hidden": c.agent.hidden,
            **flatten_values(c.reset, "reset."),
            **self.task_params(),
            **extra,
        }

    def learn(self) -> tuple[str, str]:
        c = self.config
        transitions = self.online / "transitions"
        count = StepCounter(transitions)
        done = count()
        remaining = max(1, c.online_steps - done)
        agent = flatten_values(c.agent, "agent.")
        with self.group() as nodes:
            self.cell(nodes)
            nodes.start("encoder", NODES["encoder"], {"checkpoint": str(self.encoder), "use_sim_time": True})
            nodes.start(
                "learner",
                NODES["learner"],
                {
                    "transitions": str(transitions),
                    "out": str(self.online),
                    "offline": ",".join(str(self.offline / name) for name in self.bags),
                    "encoder_checkpoint": str(self.encoder),
                    "update_after": c.update_after,
                    "threads": c.learner_threads,
                    "seed": c.seed,
                    "use_sim_time": True,
                    **agent,
                    **self.task_params(),
                },
            )
            if c.interventions > 0:
                nodes.start(
                    "operator",
                    NODES["operator"],
                    self.teleop_params(
                        "scripted",
                        0,
                        mode="intervene",
                        goal_file=str(self.goal),
                        **{"operator.stuck_time": c.interventions},
                    ),
                )
            nodes.start(
                "policy",
                NODES["policy"],
                self.policy_params(
                    transitions,
                    encoder_checkpoint=str(self.encoder),
                    max_steps=remaining,
                    learner_lag=c.learner_lag,
                    require_operator=c.interventions > 0,
                ),
            )
            self.wait(
                nodes, "policy", remaining / c.task.control_rate * 4 + 600, progress=(count, done, c.online_steps)
            )
            nodes.stop("policy")
            nodes.stop("learner")  # saves agent.pt and policy.safetensors
        stats = log_statistics(transitions)
        return (
            f"{stats['steps']} interactions in {stats['episodes']} episodes, {stats['successes']} successes, "
            f"intervention rate {stats['intervention_rate']:.1%}",
            "ros2 launch msdp msdp.launch.py "
            "backend:=libfranka ... checkpoint:=runs/pretrain/encoder.safetensors learn:=runs/online "
            "offline:=runs/offline/demos,runs/offline/play goal_file:=config/goal.yaml",
        )

    def evaluate(self) -> tuple[str, str]:
        c = self.config
        transitions = self.out / "eval" / "transitions"
        if transitions.exists():
            shutil.rmtree(transitions)
        with self.group() as nodes:
            self.cell(nodes)
            nodes.start("encoder", NODES["encoder"], {"checkpoint": str(self.encoder), "use_sim_time": True})
            nodes.start(
                "policy",
                NODES["policy"],
                self.policy_params(
                    transitions,
                    policy=str(self.online / "policy.safetensors"),
                    deterministic=True,
                    max_episodes=c.eval_episodes,
                    seed=c.seed + 1_000_003,
                ),
            )
            self.wait(nodes, "policy", c.eval_episodes * (c.task.max_episode_steps / c.task.control_rate * 3 + 60))
        stats = log_statistics(transitions)
        return (
            f"{stats['successes']}/{stats['episodes']} successes with the mean action",
            "ros2 launch msdp msdp.launch.py backend:=libfranka ... checkpoint:=... "
            "policy:=runs/online/policy.safetensors deterministic:=true goal_file:=config/goal.yaml",
        )

    # -- helpers ------------------------------------------------------------------------------------------------------
    def wait(
        self, nodes: NodeGroup, name: str, timeout: float, progress: tuple[StepCounter, int, int] | None = None
    ) -> None:
        """Until node ``name`` exits 0; NodeDied (another node died, or it failed) or TimeoutError otherwise."""
        deadline = time.monotonic() + timeout / self.config.real_time_factor
        bar = None
        if progress is not None:
            count, start, total = progress
            bar = tqdm(total=total, initial=start, desc="interactions", unit="step", disable=not self.progress)
        try:
            while nodes.processes[name].poll() is None:
                nodes.check(name)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"node {name} did not finish in {timeout:.0f} s; see {self.logs / name}.log")
                if bar is not None:
                    bar.update(max(0, count() - bar.n))
                time.sleep(0.5)
        finally:
            if bar is not None:
                bar.close()
        code = nodes.processes[name].returncode
        if code != 0:
            raise NodeDied(f"node {name} exited with code {code}; see {self.logs / name}.log")

    def job(self, name: str, args: list[str]) -> str:
        """An ``msdp`` command as a process (its own torch threads); its output goes to ``logs/<name>.log`` as it
        runs (its progress bar too: ``tail -f`` it) and is returned."""
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        print(f"rehearse: msdp {args[0]} running, progress in {log}", flush=True)
        with open(log, "w") as out:
            code = subprocess.run(
                [sys.executable, "-m", "msdp.cli", *args], stdout=out, stderr=subprocess.STDOUT
            ).returncode
        output = log.read_text()
        if code != 0:
            raise NodeDied(f"msdp {args[0]} failed (exit {code}): {output.strip()[-300:]}; see {log}")
        return "\n".join(line for line in output.splitlines() if line.startswith(f"{args[0]}: "))

    # -- the report -------------------------------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        online = log_statistics(self.online / "transitions", bins=1000)
        evaluation = log_statistics(self.out / "eval" / "transitions")
        low, high = wilson_interval(evaluation["successes"], evaluation["episodes"])
        total = sum(p.seconds for p in self.phases.values())
        report = {
            "config": to_dict(self.config),
            "phases": [vars(p) for p in self.phases.values()],
            "total_minutes": total / 60,
            "online": online,
            "learner": learner_statistics(self.online, self.config.agent.critic_updates_per_step),
            "episode_overhead_s": episode_overhead(self.online / "episodes.csv", self.config.task.control_rate),
            "evaluation": {
                **evaluation,
                "success_rate": evaluation["successes"] / max(1, evaluation["episodes"]),
                "wilson_95": [low, high],
            },
        }
        (self.out / "report.json").write_text(json.dumps(report, indent=2))
        (self.out / "report.md").write_text(markdown_report(report))
        return report


# -- figures from transition logs -------------------------------------------------------------------------------------
def flatten_values(config: Any, prefix: str = "") -> dict[str, Any]:
    """A config's leaves as node parameters: ``prefix`` + dotted name -> value."""
    return {key: value for key, (value, _) in flatten(config, prefix).items()}


class StepCounter:
    """Steps (records but the final ones) of a transition log that grows: one reader, refreshed, so each count
    reads only what was appended since the last (reading the whole log twice a second would take CPU from the
    nodes whose pace the rehearsal measures)."""

    def __init__(self, folder: Path):
        self.folder, self.reader = folder, None

    def __call__(self) -> int:
        try:
            if self.reader is None:
                if not (self.folder / LOG_FILE).exists():
                    return 0
                self.reader = TransitionReader(self.folder)
            else:
                self.reader.refresh()
        except TransitionLogError:  # a log being created; counted next time
            return 0
        return int((~self.reader.arrays["final"]).sum())


def log_statistics(folder: Path, bins: int = 0) -> dict[str, Any]:
    """Episodes, steps, successes (a terminal step: peg has no failure state) and the intervention rate of a
    log; with ``bins``, the training success rate of the episodes that ended in each ``bins``-step window."""
    if not (folder / LOG_FILE).exists():
        return {"episodes": 0, "steps": 0, "successes": 0, "intervention_rate": 0.0, "curve": []}
    arrays = TransitionReader(folder).arrays
    final, episode, terminal = arrays["final"], arrays["episode"], arrays["terminal"]
    intervention = arrays.get("intervention", np.zeros_like(final))
    steps = ~final
    ends = np.flatnonzero(final)
    success = [bool(terminal[(episode == episode[i]) & steps].any()) for i in ends]
    stats = {
        "episodes": len(ends),
        "steps": int(steps.sum()),
        "successes": int(sum(success)),
        "intervention_rate": float(intervention[steps].mean()) if steps.any() else 0.0,
    }
    if bins:
        at = np.cumsum(steps)[ends]  # interactions when each episode ended
        stats["curve"] = [
            {
                "interactions": int(edge),
                "episodes": int(mask.sum()),
                "success_rate": float(np.mean(np.array(success)[mask])),
            }
            for edge in range(bins, int(at.max(initial=0)) + bins, bins)
            if (mask := (at > edge - bins) & (at <= edge)).any()
        ]
    return stats


def learner_statistics(run: Path, ratio: float) -> dict[str, float]:
    """How the learner kept up in real time next to the other nodes: its updates against the interactions
    (the configured ratio asks ``ratio`` per interaction) and its update rate, from its ``metrics.csv``."""
    path = run / "metrics.csv"
    if not path.exists():
        return {}
    rows = read_rows(path, required=("env_steps", "critic_updates", "updates_per_s"))
    if not rows:
        return {}
    last = rows[-1]
    return {"critic_updates": last["critic_updates"], "env_steps": last["env_steps"], "configured_ratio": ratio,
            "achieved_ratio": last["critic_updates"] / max(1.0, last["env_steps"]),
            "median_updates_per_s": float(np.median([r["updates_per_s"] for r in rows]))}  # fmt: skip


def episode_overhead(episodes_csv: Path, control_rate: float) -> float | None:
    """Median time between two episodes' ends beyond the steps themselves: the reset, the settling and the wait
    for the first image (s, the node clock: wall-clock time on a real cell and in a real-time rehearsal)."""
    if not episodes_csv.exists():
        return None
    rows = read_rows(episodes_csv, required=("time", "steps"), text=("ended_by", "source", "actor"))
    gaps = [b["time"] - a["time"] - b["steps"] / control_rate for a, b in itertools.pairwise(rows)]
    return float(np.median(gaps)) if gaps else None


def markdown_report(report: dict[str, Any]) -> str:
    evaluation, online, learner = report["evaluation"], report["online"], report["learner"]
    low, high = evaluation["wilson_95"]
    overhead = report["episode_overhead_s"]
    lines = [
        "# Rehearsal of the real-robot protocol (simulated FR3, real time, over ROS)",
        "",
        f"Evaluation: **{evaluation['success_rate']:.0%}** success ({evaluation['successes']}/{evaluation['episodes']} "
        f"episodes, mean action; 95 % Wilson interval {low:.0%}-{high:.0%}) after {online['steps']} online "
        f"interactions; whole pipeline {report['total_minutes']:.1f} min of wall-clock time; intervention rate "
        f"{online['intervention_rate']:.1%}.",
        "",
        (
            f"Learner, next to the other nodes: {learner['critic_updates']:.0f} critic updates for "
            f"{learner['env_steps']:.0f} interactions (ratio {learner['achieved_ratio']:.2f}; configured "
            f"{learner['configured_ratio']:g}), median {learner['median_updates_per_s']:.1f} updates/s."
            if learner
            else "Learner: no metrics.csv."
        ),
        f"Reset, settling and the first image: median {overhead:.1f} s per episode." if overhead is not None else "",
        "",
        "| phase | minutes | result | on the real cell |",
        "|---|---|---|---|",
        *(f"| {p['name']} | {p['seconds'] / 60:.1f} | {p['summary']} | `{p['command']}` |" for p in report["phases"]),
        "",
        "Training episodes' success against online interactions:",
        "",
        "| interactions | episodes ended | success |",
        "|---|---|---|",
        *(f"| {b['interactions']} | {b['episodes']} | {b['success_rate']:.0%} |" for b in online["curve"]),
    ]
    return "\n".join(lines) + "\n"


def load_rehearsal_config(path: Path, short: bool, overrides: list[tuple[str, Any]]) -> RehearsalConfig:
    from msdp.config import load_yaml

    base = to_dict(load_yaml(RehearsalConfig, path))
    if short:
        base = deep_merge(base, SHORT)
    for key, value in overrides:
        node = base
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return from_dict(RehearsalConfig, base)


def raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        merged[key] = deep_merge(merged.get(key, {}), value) if isinstance(value, dict) else value
    return merged
