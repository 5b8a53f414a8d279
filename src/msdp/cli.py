"""The ``msdp`` command: one entry point with a subcommand per job, above every package (nothing imports it).

Configured jobs (train, pretrain, collect) start from their YAML file (the shipped one in ``config/`` or the
package's share directory by default), then apply ``--set section.field=value`` overrides for any config
field; the other flags are shorthands for the same overrides. Every value is validated by the typed config.
An expected failure (a missing or damaged file, a mismatched spec, empty data, a bad value) prints one line
naming the file or parameter and exits 1 (a file or data problem) or 2 (a usage or configuration problem);
an output folder the failed command created is removed again if nothing was written to it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from msdp.config import ConfigError, from_dict, load_yaml, to_dict
from msdp.devices import DEVICES, PRECISIONS
from msdp.paths import config_file

TASKS = ("peg", "push_cube", "close_drawer")


class ArgumentParser(argparse.ArgumentParser):
    """Usage errors in one line, exit code 2."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message}\n")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text}")
    return value


# -- overrides -------------------------------------------------------------------------------------------------
def parse_override(text: str) -> tuple[str, Any]:
    """``agent.bridge=pooling`` -> ("agent.bridge", "pooling"); the value is read as YAML (numbers, lists, bools)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected section.field=value, got {text!r}")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise argparse.ArgumentTypeError(f"{key}: cannot read the value {value!r} ({exc})") from exc


def apply_overrides(config: dict[str, Any], overrides: list[tuple[str, Any]]) -> dict[str, Any]:
    """Set dotted keys in a nested config dict; a key that names no field is refused by the typed config."""
    for key, value in overrides:
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"--set {key}: '{part}' is not a section of this config")
            node = node[part]
        node[leaf] = value
    return config


def given(args: argparse.Namespace, flag: str) -> bool:
    """Whether a shorthand flag was on the command line: a value (0 included) or a switch that is on."""
    value = getattr(args, flag)
    return value is not None and value is not False


def configured(cls: type, args: argparse.Namespace, shorthands: dict[str, str]) -> Any:
    """The job's config: the YAML file, then the shorthand flags that were given, then ``--set``."""
    config = to_dict(load_yaml(cls, args.config))
    given_flags = [(key, getattr(args, flag)) for flag, key in shorthands.items() if given(args, flag)]
    return from_dict(cls, apply_overrides(config, given_flags + list(args.set)))


def add_config_arguments(parser: argparse.ArgumentParser, yaml_name: str) -> None:
    parser.add_argument("--config", type=Path, help=f"YAML config (default: the shipped {yaml_name})")
    parser.add_argument(
        "--set", action="append", type=parse_override, default=[], metavar="KEY=VALUE",
        help="override any config field, e.g. --set agent.bridge=pooling (repeatable)",
    )  # fmt: skip
    parser.set_defaults(config_name=yaml_name)


@contextmanager
def new_output(folder: Path) -> Iterator[Path]:
    """A job's output folder: if the job fails before writing a file into the folders it created (the output
    folder and any missing parents), they go."""
    created = folder if not folder.exists() else None
    while created is not None and not created.parent.exists():
        created = created.parent
    try:
        yield folder
    except BaseException:
        if created is not None and created.is_dir() and not any(p.is_file() for p in created.rglob("*")):
            shutil.rmtree(created)
        raise


def set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


# -- jobs ------------------------------------------------------------------------------------------------------
def _demo(args: argparse.Namespace) -> int:
    from msdp_franka_driver.sim.demo import run_demo

    with new_output(Path(args.out)) as out:
        summary = run_demo(out, seed=args.seed, episodes=args.episodes)
    print(f"demo: {summary['successes']}/{summary['episodes']} scripted insertions succeeded; report in {args.out}")
    return 0


def _driver(args: argparse.Namespace) -> int:
    from msdp_franka_driver.driver_node import main

    return main(["--ros-args", "--params-file", str(args.params)] if args.params else [])


def _virtual_cell(args: argparse.Namespace) -> int:
    from msdp_franka_driver.driver_node import main

    ports = {"camera_port": args.camera_port, "ft_port": args.ft_port, "ft_http_port": args.ft_http_port}
    params = ["-p", "sim_sensors:=virtual_cell"]
    params += [a for key, value in ports.items() if value is not None for a in ("-p", f"virtual_cell.{key}:={value}")]
    print(
        f"virtual cell: camera at http://127.0.0.1:{args.camera_port or 8080}/stream.mjpg "
        f"(camera_node device:=<that URL>), Net F/T box at 127.0.0.1 UDP {args.ft_port or 49152}, calibration on "
        f"HTTP port {args.ft_http_port or 8081} (ft_node sensor_ip:=127.0.0.1 http_port:=...)",
        flush=True,
    )
    return main(["--ros-args", *(["--params-file", str(args.params)] if args.params else []), *params])


def _arm_model(args: argparse.Namespace) -> int:
    from msdp_franka_driver.sim.fr3_model import standalone_arm_mjcf

    Path(args.out).write_text(standalone_arm_mjcf())
    print(f"wrote {args.out} (set FR3_MJCF to it for franka-sim)")
    return 0


def _record(args: argparse.Namespace) -> int:
    from msdp_perception.recorder_node import main

    params = {"storage": args.storage, "use_sim_time": str(args.sim_time).lower()}
    params.update({key: value for key, value in (("output", args.out), ("topics", args.topics)) if value})
    return main(["--ros-args", *(a for key, value in params.items() for a in ("-p", f"{key}:={value}"))])


def _collect_ros(args: argparse.Namespace) -> int:
    from msdp.processes import NodeDied, NodeGroup
    from msdp_perception.dataset import BagDataset

    out = Path(args.out)
    if out.exists():
        raise ConfigError(f"--out {out} already exists; a recording needs a new folder")
    shared = {"task.name": args.task, "task.max_episode_steps": args.steps}
    with NodeGroup() as nodes:  # what collect.launch.py runs; node output goes to this terminal
        nodes.start(
            "driver",
            "msdp_franka_driver.driver_node",
            {**shared, "backend": "mujoco", "real_time_factor": args.real_time_factor, "seed": args.seed},
        )
        nodes.start("recorder", "msdp_perception.recorder_node", {"output": str(out), "use_sim_time": True})
        nodes.start("teleop", "msdp_policy.teleop_node", {**shared, "episodes": args.episodes, "seed": args.seed,
                    "operator_kind": "random", "use_sim_time": True})  # fmt: skip
        try:
            code = nodes.wait("teleop")
        except NodeDied as exc:
            print(f"msdp collect-ros: {exc} during collection; partial bag in {out}", file=sys.stderr)
            return 1
    if code != 0:
        print(f"msdp collect-ros: the collection failed (exit {code}); partial bag in {out}", file=sys.stderr)
        return code
    dataset = BagDataset([out])
    linked = int((dataset.next_index >= 0).sum())
    print(f"collect-ros: {args.episodes} episodes recorded in {out}: {len(dataset)} samples, {linked} with an action")
    return 0


COLLECT_FLAGS = {"samples": "samples", "policy": "policy", "seed": "seed", "task": "task.name",
                 "image_noise": "task.image_noise_std"}  # fmt: skip


def _collect(args: argparse.Namespace) -> int:
    from msdp_franka_driver.sim.collect import CollectConfig, collect_to_bags

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out} is not empty; collection writes new bag folders")
    config = configured(CollectConfig, args, COLLECT_FLAGS)
    with new_output(out):
        bags = collect_to_bags(out, config)
    print(f"collect: {config.samples} samples of {config.policy} actions on {config.task.name} in {len(bags)} bag(s) "
          f"in {out}")  # fmt: skip
    return 0


PRETRAIN_FLAGS = {"steps": "steps", "batch_size": "batch_size", "seed": "seed", "objective": "model.objective",
                  "val_every": "val_every", "device": "device", "precision": "precision"}  # fmt: skip


def _pretrain(args: argparse.Namespace) -> int:
    from msdp_perception.pretrain import PretrainConfig, pretrain

    config = configured(PretrainConfig, args, PRETRAIN_FLAGS)
    set_threads(args.threads)
    with new_output(Path(args.out)) as out:
        summary = pretrain([Path(b) for b in args.bags], out, config, args.cache)
    final = summary["final"]
    losses = ", ".join(f"{m} {final[f'val_{m}']:.4f}" for m in ("vision", "ft", "proprio") if f"val_{m}" in final)
    print(f"pretrain: {summary['steps']} updates in {summary['seconds'] / 60:.1f} min; held-out loss {losses or 'n/a'}")
    for modality, fusion in summary["fusion"].items():
        print(
            f"pretrain: {modality} masked, predicted from the other sensors: MSE {fusion['model_mse']:.4f} "
            f"vs {fusion['mean_mse']:.4f} for the mean ({fusion['explained']:.0%} of the variance explained)"
        )
    print(f"pretrain: checkpoint {summary['checkpoint']} (+ .json); report in {args.out}")
    return 0


def _recover_bag(args: argparse.Namespace) -> int:
    from msdp_perception.bags import recover_bag

    count = recover_bag(args.bag)
    print(f"recover-bag: {args.bag} holds {count} messages and is a complete rosbag2 folder")
    return 0


def _encoder(args: argparse.Namespace) -> int:
    from msdp_perception.encoder_node import main

    params = ["-p", f"checkpoint:={args.checkpoint}"] + (["-p", "use_sim_time:=true"] if args.sim_time else [])
    return main(["--ros-args", *(["--params-file", str(args.params)] if args.params else []), *params])


TRAIN_FLAGS = {
    "steps": "steps", "seed": "seed", "encoder_variant": "encoder_variant", "sensors": "sensors",
    "task": "env.task.name", "bridge": "agent.bridge", "rlpd": "agent.rlpd", "layer_norm": "agent.layer_norm",
    "threads": "torch_threads", "random_steps": "random_steps", "update_after": "update_after",
    "eval_every": "eval_every", "eval_episodes": "eval_episodes", "device": "device", "precision": "agent.precision",
}  # fmt: skip


RESUME_FLAGS = ("steps", "threads", "device")  # a resumed run keeps its saved config (config.json) but for these


def _train(args: argparse.Namespace) -> int:
    from msdp_policy.training import TrainConfig, train

    if args.resume:
        ignored = [f"--{flag.replace('_', '-')}" for flag in TRAIN_FLAGS if flag not in RESUME_FLAGS
                   and given(args, flag)] + [f"--set {key}" for key, _ in args.set]  # fmt: skip
        if ignored:
            raise ConfigError(
                f"--resume continues the run in --out with its saved config.json; {', '.join(ignored)} would not "
                "apply (only --steps and --threads do)"
            )
    config = configured(TrainConfig, args, TRAIN_FLAGS)
    out = Path(args.out or f"runs/train_{config.env.task.name}_{config.encoder_variant}_s{config.seed}")
    saved = out / "config.json"
    if args.resume and args.steps is None and saved.is_file():  # go on to the end the run was started for
        try:
            config = replace(config, steps=int(json.loads(saved.read_text())["steps"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{saved}: not the config of a run ({exc})") from exc
    with new_output(out):
        summary = train(config, Path(args.encoder), out, args.resume, [Path(p) for p in args.offline])
    final = summary["final"]
    print(
        f"train: {summary['env_steps']} environment steps in {summary['wall_s'] / 60:.1f} min "
        f"({summary['env_steps'] / max(summary['wall_s'], 1e-9):.1f} steps/s); final success "
        f"{final['success_rate']:.0%}, return {final['return']:.2f}; policy {out / 'policy.safetensors'}, "
        f"curves {out / 'curves.png'}"
    )
    return 0


def _offline_log(args: argparse.Namespace) -> int:
    from msdp_policy.offline import offline_log_from_bags
    from msdp_policy.tasks import TaskConfig

    set_threads(args.threads)
    overrides = [(key.removeprefix("task."), value) for key, value in args.set]
    task = from_dict(TaskConfig, apply_overrides({"name": args.task}, overrides))
    with new_output(Path(args.out)) as out:
        counts = offline_log_from_bags([Path(b) for b in args.bags], Path(args.encoder), out, task)
    print(
        f"offline-log: {counts['steps']} steps in {counts['episodes']} episodes ({counts['successes']} successes) "
        f"in {args.out}; use it with `msdp train --rlpd --offline {args.out}`"
    )
    return 0


def _teach_goal(args: argparse.Namespace) -> int:
    from msdp.processes import ros_args
    from msdp_policy.teach_goal_node import main

    confirm = args.confirm or ("enter" if sys.stdin.isatty() else "still")
    params = {"out": args.out, "task": args.task, "confirm": confirm, "still_time": args.still_time,
              "timeout": args.timeout, "use_sim_time": args.sim_time}  # fmt: skip
    return main(ros_args(params))


def _rehearse(args: argparse.Namespace) -> int:
    from msdp.processes import NodeDied
    from msdp_policy.rehearsal import Rehearsal, load_rehearsal_config

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.resume:
        raise ConfigError(f"--out {out} already exists; continue it with --resume, or choose a new folder")
    config = load_rehearsal_config(args.config, args.short, args.set)
    out.mkdir(parents=True, exist_ok=True)
    try:
        report = Rehearsal(config, out).run()
    except (NodeDied, TimeoutError) as exc:
        print(f"msdp rehearse: {exc}; continue with --resume", file=sys.stderr)
        return 1
    evaluation = report["evaluation"]
    print(
        f"rehearse: {evaluation['success_rate']:.0%} success ({evaluation['successes']}/{evaluation['episodes']}) "
        f"after {report['online']['steps']} interactions; {report['total_minutes']:.1f} min; report {out / 'report.md'}"
    )
    return 0


def _eval(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from msdp_policy.evaluation import Perturbations, evaluate_policy

    set_threads(args.threads)
    perturbations = Perturbations(args.image_noise, args.ft_noise, args.stiffness, args.mass_scale, args.friction_scale)
    policy = Path(args.policy)
    started = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or policy.parent / "eval" / f"{policy.name.removesuffix('.safetensors')}-{started}")
    with new_output(out):
        result = evaluate_policy(
            policy, args.episodes, perturbations, args.task, args.encoder, not args.stochastic, args.device,
            seed=args.seed, out=out, videos=args.video, progress=True,
        )  # fmt: skip
    low, high = result["wilson_95"]
    seeds = result["seeds"]
    print(
        f"eval: success {result['success_rate']:.0%} over {result['episodes']} episodes ({result['successes']}/"
        f"{result['episodes']}, 95 % Wilson interval {low:.0%}-{high:.0%}) on seeds {seeds['first']}-{seeds['last']} "
        f"(block {seeds['block']}); return {result['return']:.2f}, mean length {result['episode_length']:.1f} steps, "
        f"final error {1000 * result['final_error_m']:.1f} mm; perturbations: {perturbations.describe() or 'none'}; "
        f"cell: {result['cell']}; results in {out}"
    )
    return 0


def _curves(args: argparse.Namespace) -> int:
    from msdp.metrics import read_rows
    from msdp_policy.training import plot_learning_curves

    if len(args.runs) == 1 and (Path(args.runs[0]) / "sweep.yaml").is_file():  # a sweep: its seeds aggregated
        from msdp_policy.report import aggregate, plot, read_sweep

        curves = read_sweep(Path(args.runs[0]))
        plot(aggregate(curves), [], Path(args.out))
        print(f"curves: {len(curves)} curve(s), mean over seeds with 95 % intervals, in {args.out}")
        return 0
    names = [Path(run).name for run in args.runs]
    labels = names if len(set(names)) == len(names) else args.runs  # same folder name: label by the path
    runs = {}
    for label, run in zip(labels, args.runs, strict=True):
        metrics = Path(run) / "metrics.csv"
        if not metrics.is_file():
            raise FileNotFoundError(f"{metrics} not found: is {run} a run folder of `msdp train` (or a sweep's)?")
        runs[label] = read_rows(metrics, required=("env_steps", "success_rate", "return"))
        if not runs[label]:
            raise ConfigError(f"{metrics} holds no evaluation yet")
    plot_learning_curves(runs, Path(args.out))
    print(f"curves: {len(runs)} run(s) in {args.out}")
    return 0


def sweep_grid(args: argparse.Namespace) -> Any:
    """The grid of ``msdp sweep``: the grid file, then the flags given (each replaces its part of the file)."""
    from msdp_policy.sweep import make_grid, read_grid_file

    values = read_grid_file(args.grid) if args.grid else {}
    values.setdefault("config", str(config_file("train.yaml")))
    flags = {"config": args.config, "encoder": args.encoder, "seeds": args.seeds, "tasks": args.task,
             "offline": args.offline}  # fmt: skip
    values.update({key: value for key, value in flags.items() if value})
    if args.variant:
        values["variants"] = dict(args.variant)
    values["overrides"] = [*values.get("overrides", []), *args.set]
    return make_grid(values)


def override_text(text: str) -> str:
    """An override kept as written (a sweep hands it on to `msdp train --set`), checked as --set checks it."""
    parse_override(text)
    return text


def variant(text: str) -> tuple[str, list[str]]:
    """``pooling:agent.bridge=pooling,agent.hidden=128`` -> ("pooling", [...]); a comma starts a new override
    only before ``key=``, so list values (``[1, 2]``) keep theirs."""
    name, _, overrides = text.partition(":")
    return name.strip(), [override_text(o.strip()) for o in re.split(r",(?=\s*[\w.]+=)", overrides) if o.strip()]


def _sweep(args: argparse.Namespace) -> int:
    from msdp_policy.sweep import expand, run_sweep, sizing, state
    from msdp_policy.training import TrainConfig

    grid = sweep_grid(args)
    cells = expand(grid)
    configs = []
    for cell in cells:  # every cell's config is built (and so checked) before anything runs
        try:
            base = to_dict(load_yaml(TrainConfig, grid.config))
            configs.append(from_dict(TrainConfig, apply_overrides(base, [parse_override(o) for o in cell.overrides])))
        except (ConfigError, argparse.ArgumentTypeError) as exc:
            raise ConfigError(f"cell {cell.name}: {exc}") from exc
    for path in (grid.encoder, *grid.offline):
        if not Path(path).exists():
            raise FileNotFoundError(f"{path} not found (the sweep's encoder or offline log)")
    learner_process = any(config.learner_process for config in configs)
    parallel, threads, cores = sizing(os.cpu_count() or 1, learner_process, args.parallel, args.threads)
    out = Path(args.out)
    if args.dry_run:
        for cell in cells:
            print(f"{cell.name}: {state(out / cell.name)}; --set {' --set '.join(cell.overrides)}")
        print(f"sweep: {len(cells)} cells, {parallel} at a time, {threads} torch thread(s) and {cores} core(s) each; "
              "--dry-run: none run")  # fmt: skip
        return 0
    summary = run_sweep(grid, out, threads, cores, parallel, args.ray_address)
    failed = [row for row in summary if row["status"] != "done"]
    print(f"sweep: {len(summary) - len(failed)}/{len(summary)} cells done, {len(failed)} failed; "
          f"summary {out / 'summary.csv'}; report with `msdp report {out}`")  # fmt: skip
    return 1 if failed else 0


def _report(args: argparse.Namespace) -> int:
    from msdp_policy.report import write_report

    out = Path(args.out or args.sweep)
    rows, report = write_report(Path(args.sweep), out, args.at, args.paper)
    curves = len({(r["task"], r["variant"]) for r in rows})
    print(f"report: {curves} curve(s) over seeds in {out / 'curves.png'}, {out / 'curves.csv'}; table {report}")
    return 0


# -- the parser ------------------------------------------------------------------------------------------------
def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="msdp", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)

    def command(name: str, func: Callable[[argparse.Namespace], int], help: str) -> ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func, config_name=None)
        return p

    demo = command("demo", _demo, "scripted peg insertion on the simulated Franka; writes a report")
    demo.add_argument("--out", default="results/demo", help="report folder (default: results/demo)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--episodes", type=positive_int, default=5, help="episodes scored for the success count")

    driver = command("driver", _driver, "run the Franka driver node (mujoco or libfranka backend)")
    driver.add_argument("--params", type=Path, help="ROS parameter file (default: built-in defaults, mujoco backend)")

    cell = command("virtual-cell", _virtual_cell, "the simulated arm serving its camera (MJPEG over HTTP) and wrist "
                   "sensor (a Net F/T box over UDP) on 127.0.0.1, for camera_node and ft_node")  # fmt: skip
    cell.add_argument("--params", type=Path, help="ROS parameter file for the driver (e.g. config/driver.yaml)")
    cell.add_argument("--camera-port", type=int, help="HTTP port of /stream.mjpg (default 8080)")
    cell.add_argument("--ft-port", type=int, help="UDP port of the RDT protocol (default 49152)")
    cell.add_argument("--ft-http-port", type=int, help="HTTP port of /netftapi2.xml (default 8081)")

    model = command("arm-model", _arm_model, "write the FR3 arm MJCF (e.g. for franka-sim's FR3_MJCF)")
    model.add_argument("--out", default="fr3.xml")

    record = command("record", _record, "record live ROS topics into a rosbag2 folder (MCAP), until Ctrl-C")
    record.add_argument("--out", default="", help="new bag folder (default: bags/<date-time>)")
    record.add_argument("--topics", default="", help="comma-separated topics (default: sensors, pose, target, action)")
    record.add_argument("--storage", default="mcap", choices=("mcap", "sqlite3"))
    record.add_argument("--sim-time", action="store_true", help="stamp with /clock (use_sim_time), for the sim arm")

    ros = command("collect-ros", _collect_ros, "random-action episodes on the simulated arm over ROS, into a bag")
    ros.add_argument("--out", required=True, help="new bag folder")
    ros.add_argument("--episodes", type=positive_int, default=10)
    ros.add_argument("--steps", type=positive_int, default=100, help="actions per episode (task.max_episode_steps)")
    ros.add_argument("--task", default="peg", choices=TASKS)
    ros.add_argument("--real-time-factor", type=float, default=1.0, help="simulated s per wall s")
    ros.add_argument("--seed", type=int, default=0, help="first scene seed and action seed")

    fast = command("collect", _collect, "random-action samples straight from the in-process simulator, into bags")
    fast.add_argument("--out", required=True, help="folder for the bag folders (bag_000, bag_001, ...)")
    fast.add_argument("--samples", type=positive_int, help="observations to record (default: 30000)")
    fast.add_argument("--policy", choices=("random", "scripted_noise"))
    fast.add_argument("--task", choices=TASKS)
    fast.add_argument("--seed", type=int)
    fast.add_argument("--image-noise", type=float, help="Gaussian pixel noise std (0-255 scale)")
    add_config_arguments(fast, "collect.yaml")

    pre = command("pretrain", _pretrain, "pretrain the MSDP encoder from rosbags (MCAP or sqlite3)")
    pre.add_argument("--bags", nargs="+", required=True, help="bag folders, or folders of bag folders")
    pre.add_argument("--objective", choices=("reconstruction", "prediction"), help="default: from --config")
    pre.add_argument("--steps", type=positive_int, help="updates (default: from --config, 30000)")
    pre.add_argument("--batch-size", type=positive_int)
    pre.add_argument("--seed", type=int)
    pre.add_argument("--val-every", type=positive_int, help="updates between validations")
    pre.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's)")
    pre.add_argument("--device", choices=DEVICES, help="auto (default: a CUDA GPU if torch has one), cpu, cuda")
    pre.add_argument("--precision", choices=PRECISIONS, help="fp32 (default) or bf16 autocast in the updates")
    pre.add_argument("--out", default="runs/pretrain", help="checkpoint and report folder")
    pre.add_argument("--cache", type=Path, help="folder for decoded-sample caches (later runs skip decoding)")
    add_config_arguments(pre, "pretrain.yaml")

    recover = command(
        "recover-bag", _recover_bag, "repair a bag whose recorder was killed (keeps all complete messages)"
    )
    recover.add_argument("bag", help="the rosbag2 folder")

    enc = command("encoder", _encoder, "run the encoder node (sensor topics in, /msdp/embedding out)")
    enc.add_argument("--checkpoint", required=True, help="encoder.safetensors from msdp pretrain")
    enc.add_argument("--params", type=Path, help="ROS parameter file (e.g. config/encoder.yaml)")
    enc.add_argument("--sim-time", action="store_true", help="use /clock (next to the simulated arm)")

    tr = command("train", _train, "learn a policy on a simulated task in one process (SAC / RLPD, no ROS)")
    tr.add_argument("--encoder", required=True, help="encoder.safetensors from msdp pretrain")
    tr.add_argument("--task", choices=TASKS, help="default: from --config (peg)")
    tr.add_argument("--steps", type=positive_int, help="environment steps (default: from --config, 200000)")
    tr.add_argument("--seed", type=int)
    tr.add_argument("--encoder-variant", choices=("msdp_frozen", "scratch"))
    tr.add_argument("--sensors", help="sensor subset, e.g. vision,ft (default: all)")
    tr.add_argument("--bridge", choices=("cross_attention", "pooling", "cls", "concat"))
    tr.add_argument("--threads", type=positive_int, help="torch threads (torch_threads; default: from --config, 1)")
    tr.add_argument("--random-steps", type=int, help="uniform random actions first (random_steps)")
    tr.add_argument("--update-after", type=positive_int, help="environment steps before the first update")
    tr.add_argument("--eval-every", type=positive_int, help="environment steps between evaluations")
    tr.add_argument("--eval-episodes", type=positive_int, help="episodes per evaluation")
    tr.add_argument("--device", choices=DEVICES, help="auto (default: a CUDA GPU if torch has one), cpu, cuda")
    tr.add_argument("--precision", choices=PRECISIONS, help="fp32 (default) or bf16 autocast in the updates")
    tr.add_argument("--rlpd", action="store_true", help="RLPD: half of each batch from the --offline logs")
    tr.add_argument("--layer-norm", action="store_true", help="LayerNorm in the Q-networks (agent.layer_norm)")
    tr.add_argument("--offline", nargs="*", default=[], help="transition logs for RLPD (see msdp offline-log)")
    tr.add_argument("--out", help="run folder (default: runs/train_<task>_<variant>_s<seed>)")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    add_config_arguments(tr, "train.yaml")

    ev = command("eval", _eval, "success rate of a trained policy on a simulated task, with perturbations; "
                 "writes episodes.csv, summary.json and videos")  # fmt: skip
    ev.add_argument("--policy", required=True, help="policy.safetensors from msdp train")
    ev.add_argument("--task", choices=TASKS, help="default: the task the policy was trained on")
    ev.add_argument("--episodes", type=positive_int, default=50)
    ev.add_argument("--image-noise", type=float, default=0.0, help="Gaussian pixel noise (0-255 scale)")
    ev.add_argument("--ft-noise", type=float, default=0.0, help="Gaussian F/T noise std (N, Nm)")
    ev.add_argument("--stiffness", type=float, help="translational stiffness, N/m (default: the run's)")
    ev.add_argument("--mass-scale", type=float, default=1.0, help="object mass x")
    ev.add_argument("--friction-scale", type=float, default=1.0, help="object friction x")
    ev.add_argument("--stochastic", action="store_true", help="sample actions instead of the mean")
    ev.add_argument("--encoder", help="override the encoder checkpoint named in the policy")
    ev.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's)")
    ev.add_argument("--device", choices=DEVICES, default="auto", help="auto (a CUDA GPU if torch has one), cpu, cuda")
    ev.add_argument("--seed", type=int, default=0, help="evaluation seed block (default 0: the scenes of training's "
                    "own evaluations); evaluation scenes are never training scenes")  # fmt: skip
    ev.add_argument("--out", help="new results folder (default: <policy's folder>/eval/<policy>-<UTC time>)")
    ev.add_argument("--video", type=int, default=0, metavar="N", help="film the first N episodes as MP4 (OUT/videos)")

    off = command("offline-log", _offline_log, "encode recorded bags into a transition log with rewards (RLPD data)")
    off.add_argument("--bags", nargs="+", required=True, help="bag folders with /franka/ee_pose and /msdp/task_goal")
    off.add_argument("--encoder", required=True, help="the frozen encoder the policy will use")
    off.add_argument("--task", default="peg", choices=("peg",), help="the task whose reward to compute")
    off.add_argument("--out", required=True, help="new transition log folder")
    off.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's)")
    off.add_argument(
        "--set", action="append", type=parse_override, default=[], metavar="task.FIELD=VALUE",
        help="task setting the rewards follow, as the run that will use the log, e.g. --set task.reward=sparse",
    )  # fmt: skip

    teach = command("teach-goal", _teach_goal, "store the goal pose (the arm moved there by hand or teleoperation) "
                    "in a goal file the policy and teleop nodes read")  # fmt: skip
    teach.add_argument("--out", default="config/goal.yaml", help="goal file to write (default: config/goal.yaml)")
    teach.add_argument("--task", default="peg", choices=("peg",))
    teach.add_argument("--confirm", choices=("enter", "still", "episode"),
                       help="Enter (default in a terminal), the arm still for --still-time (default otherwise), "
                       "or the end of an episode on /msdp/episode")  # fmt: skip
    teach.add_argument("--still-time", type=float, default=2.0, help="s still before 'still' confirms")
    teach.add_argument("--timeout", type=float, default=600.0, help="s to wait for a confirmation")
    teach.add_argument("--sim-time", action="store_true", help="use_sim_time (next to the simulated driver)")

    re_ = command("rehearse", _rehearse, "the paper's real-robot protocol on the simulated arm in real time over ROS: "
                  "teach, demonstrations, play, pretraining, RLPD online, evaluation; writes a report")  # fmt: skip
    re_.add_argument("--out", default="runs/rehearsal", help="rehearsal folder (default: runs/rehearsal)")
    re_.add_argument("--short", action="store_true", help="every phase at a smoke-test size (about two minutes)")
    re_.add_argument("--resume", action="store_true", help="continue an interrupted rehearsal in --out")
    add_config_arguments(re_, "rehearse.yaml")

    cv = command("curves", _curves, "plot several training runs' learning curves in one PNG (or a sweep's, "
                 "mean over seeds)")  # fmt: skip
    cv.add_argument("runs", nargs="+", help="run folders (each with metrics.csv), or one sweep folder")
    cv.add_argument("--out", default="runs/curves.png")

    sw = command("sweep", _sweep, "train a grid of seeds x variants x tasks as separate runs, in parallel on Ray "
                 "(local processes, or a cluster); a rerun resumes the unfinished cells")  # fmt: skip
    sw.add_argument("--grid", type=Path, help="grid file (e.g. config/sweep.yaml); the flags below replace its parts")
    sw.add_argument("--out", required=True, help="sweep folder: one run folder per cell, <task>/<variant>/seed_<n>")
    sw.add_argument("--encoder", help="encoder.safetensors from msdp pretrain")
    sw.add_argument("--config", help="base train config (default: the grid's, else the shipped train.yaml)")
    sw.add_argument("--seeds", nargs="+", type=int, help="e.g. --seeds 0 1 2")
    sw.add_argument("--task", nargs="+", choices=TASKS, help="e.g. --task peg push_cube")
    sw.add_argument("--variant", action="append", type=variant, default=[], metavar="NAME:KEY=VALUE,...",
                    help="a variant and its overrides, e.g. pooling:agent.bridge=pooling (repeatable)")  # fmt: skip
    sw.add_argument("--set", action="append", type=override_text, default=[], metavar="KEY=VALUE",
                    help="an override for every cell, e.g. --set steps=50000 (repeatable)")  # fmt: skip
    sw.add_argument("--offline", nargs="*", help="transition logs for RLPD cells (passed to every msdp train)")
    sw.add_argument("--parallel", type=positive_int, help="runs at a time on this machine (default: as many as the "
                    "cores hold, 1 torch thread each; a run with its learner process keeps 2 busy)")  # fmt: skip
    sw.add_argument("--threads", type=positive_int, help="torch threads per run (default: what --parallel leaves)")
    sw.add_argument("--ray-address", help="an existing Ray cluster (e.g. head-node:6379, or auto); default: "
                    "a local Ray on this machine's cores")  # fmt: skip
    sw.add_argument("--dry-run", action="store_true", help="check the grid and list the cells; run nothing")

    rp = command("report", _report, "a sweep's success over seeds: mean and bootstrap confidence interval per variant "
                 "against steps (curves.png, curves.csv) and a table at chosen steps (report.md)")  # fmt: skip
    rp.add_argument("sweep", help="sweep folder of msdp sweep")
    rp.add_argument("--out", help="report folder (default: the sweep folder)")
    rp.add_argument("--at", nargs="+", type=int, default=[], help="table steps (default: the last common step)")
    rp.add_argument("--paper", type=Path, help="the paper's points to draw beside (e.g. config/paper_points.yaml)")
    return parser


def expected_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(errors of the user's files or data: exit 1, errors of the configuration: exit 2), imported lazily so
    that ``msdp --help`` loads no package."""
    from msdp.metrics import MetricsError
    from msdp_perception.bags import BagError
    from msdp_perception.checkpoint import CheckpointError
    from msdp_perception.messages import SensorDataError
    from msdp_policy.transition_log import TransitionLogError

    return (BagError, CheckpointError, MetricsError, SensorDataError, TransitionLogError, OSError), (ConfigError,)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    data_errors, config_errors = expected_errors()
    try:
        if getattr(args, "config_name", None) and args.config is None:
            args.config = config_file(args.config_name)
        return args.func(args)
    except config_errors as exc:
        print(f"msdp {args.command}: {exc}", file=sys.stderr)
        return 2
    except data_errors as exc:
        print(f"msdp {args.command}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"msdp {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
