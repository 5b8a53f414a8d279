"""The ``msdp`` command: one entry point with a subcommand per job."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from msdp.config import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"


def _demo(args: argparse.Namespace) -> int:
    from msdp_franka_driver.demo import run_demo

    summary = run_demo(Path(args.out), seed=args.seed, episodes=args.episodes)
    print(f"demo: {summary['successes']}/{summary['episodes']} scripted insertions succeeded; report in {args.out}")
    return 0


def _driver(args: argparse.Namespace) -> int:
    from msdp_franka_driver.driver_node import main

    return main(["--ros-args", "--params-file", args.params] if args.params else [])


def _arm_model(args: argparse.Namespace) -> int:
    from msdp_franka_driver.fr3_model import standalone_arm_mjcf

    Path(args.out).write_text(standalone_arm_mjcf())
    print(f"wrote {args.out} (set FR3_MJCF to it for franka-sim)")
    return 0


def _record(args: argparse.Namespace) -> int:
    from msdp_perception.recorder_node import main

    params = {"storage": args.storage, "use_sim_time": str(args.sim_time).lower()}
    params.update({key: value for key, value in (("output", args.out), ("topics", args.topics)) if value})
    return main(["--ros-args", *(a for key, value in params.items() for a in ("-p", f"{key}:={value}"))])


def _collect_ros(args: argparse.Namespace) -> int:
    from msdp_perception.collect_node import run_collection
    from msdp_perception.dataset import BagDataset

    out = Path(args.out)
    if out.exists():
        raise ConfigError(f"--out {out} already exists; a recording needs a new folder")
    code = run_collection(out, args.episodes, args.task, args.real_time_factor, args.steps, args.seed)
    if code != 0:
        print(f"msdp collect-ros: the collection failed (exit {code}); partial bag in {out}", file=sys.stderr)
        return code
    dataset = BagDataset([out])
    linked = int((dataset.next_index >= 0).sum())
    print(f"collect-ros: {args.episodes} episodes recorded in {out}: {len(dataset)} samples, {linked} with an action")
    return 0


def _collect(args: argparse.Namespace) -> int:
    from msdp.config import from_dict
    from msdp_perception.collect import CollectConfig, collect_to_bags

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out} is not empty; collection writes new bag folders")
    config = from_dict(
        CollectConfig,
        {
            "samples": args.samples,
            "policy": args.policy,
            "seed": args.seed,
            "task": {"name": args.task, "image_noise_std": args.image_noise},
        },
    )
    bags = collect_to_bags(out, config)
    print(f"collect: {config.samples} samples of {config.policy} actions on {args.task} in {len(bags)} bag(s) in {out}")
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    from msdp.config import from_dict, load_yaml, to_dict
    from msdp_perception.pretrain import PretrainConfig, pretrain

    config = to_dict(load_yaml(PretrainConfig, args.config))
    overrides = {"steps": args.steps, "batch_size": args.batch_size, "seed": args.seed}
    config.update({k: v for k, v in overrides.items() if v is not None})
    if args.objective:
        config["model"]["objective"] = args.objective
    summary = pretrain([Path(b) for b in args.bags], Path(args.out), from_dict(PretrainConfig, config), args.cache)
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
    from msdp_perception.bags import BagError, recover_bag

    try:
        count = recover_bag(args.bag)
    except BagError as exc:
        print(f"msdp recover-bag: {exc}", file=sys.stderr)
        return 1
    print(f"recover-bag: {args.bag} holds {count} messages and is a complete rosbag2 folder")
    return 0


def _encoder(args: argparse.Namespace) -> int:
    from msdp_perception.encoder_node import main

    params = ["-p", f"checkpoint:={args.checkpoint}"] + (["-p", "use_sim_time:=true"] if args.sim_time else [])
    return main(["--ros-args", *(["--params-file", args.params] if args.params else []), *params])


def _train(args: argparse.Namespace) -> int:
    from msdp.config import from_dict, load_yaml, to_dict
    from msdp_policy.training import TrainConfig, train

    config = to_dict(load_yaml(TrainConfig, args.config))
    overrides = {
        "steps": args.steps,
        "seed": args.seed,
        "encoder_variant": args.encoder_variant,
        "sensors": args.sensors,
    }
    config.update({k: v for k, v in overrides.items() if v is not None})
    if args.task:
        config["env"]["task"]["name"] = args.task
    if args.bridge:
        config["agent"]["bridge"] = args.bridge
    if args.rlpd:
        config["agent"]["rlpd"] = True
    if args.layer_norm:
        config["agent"]["layer_norm"] = True
    out = Path(args.out or f"runs/train_{config['env']['task']['name']}_{config['encoder_variant']}_s{config['seed']}")
    summary = train(
        from_dict(TrainConfig, config), Path(args.encoder), out, args.resume, [Path(p) for p in args.offline]
    )
    final = summary["final"]
    print(
        f"train: {summary['env_steps']} environment steps in {summary['wall_s'] / 60:.1f} min "
        f"({summary['env_steps'] / summary['wall_s']:.1f} steps/s); final success {final['success_rate']:.0%}, "
        f"return {final['return']:.2f}; policy {out / 'policy.safetensors'}, curves {out / 'curves.png'}"
    )
    return 0


def _offline_log(args: argparse.Namespace) -> int:
    from msdp.config import from_dict
    from msdp_franka_driver.tasks import TaskConfig
    from msdp_policy.offline import offline_log_from_bags

    task = from_dict(TaskConfig, {"name": args.task})
    counts = offline_log_from_bags([Path(b) for b in args.bags], Path(args.encoder), Path(args.out), task)
    print(
        f"offline-log: {counts['steps']} steps in {counts['episodes']} episodes ({counts['successes']} successes) "
        f"in {args.out}; use it with `msdp train --rlpd --offline {args.out}`"
    )
    return 0


def _eval(args: argparse.Namespace) -> int:
    from msdp_policy.evaluation import Perturbations, evaluate_policy

    perturbations = Perturbations(args.image_noise, args.ft_noise, args.stiffness, args.mass_scale, args.friction_scale)
    result = evaluate_policy(args.policy, args.episodes, perturbations, args.task, args.encoder, not args.stochastic)
    print(
        f"eval: success {result['success_rate']:.0%} over {result['episodes']} episodes "
        f"(return {result['return']:.2f}, mean length {result['episode_length']:.1f} steps); perturbations: "
        f"{result['perturbations'] or 'none'}"
    )
    return 0


def _curves(args: argparse.Namespace) -> int:
    from msdp.metrics import read_rows
    from msdp_policy.training import plot_learning_curves

    names = [Path(run).name for run in args.runs]
    labels = names if len(set(names)) == len(names) else args.runs  # same folder name: label by the path
    runs = {label: read_rows(Path(run) / "metrics.csv") for label, run in zip(labels, args.runs, strict=True)}
    plot_learning_curves(runs, Path(args.out))
    print(f"curves: {len(runs)} run(s) in {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="msdp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="scripted peg insertion on the simulated Franka; writes a report")
    demo.add_argument("--out", default="results/demo", help="report folder (default: results/demo)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--episodes", type=int, default=5, help="episodes scored for the success count")
    demo.set_defaults(func=_demo)

    driver = sub.add_parser("driver", help="run the Franka driver node (mujoco or libfranka backend)")
    driver.add_argument("--params", help="ROS parameter file (default: built-in defaults, mujoco backend)")
    driver.set_defaults(func=_driver)

    model = sub.add_parser("arm-model", help="write the FR3 arm MJCF (e.g. for franka-sim's FR3_MJCF)")
    model.add_argument("--out", default="fr3.xml")
    model.set_defaults(func=_arm_model)

    record = sub.add_parser("record", help="record live ROS topics into a rosbag2 folder (MCAP), until Ctrl-C")
    record.add_argument("--out", default="", help="new bag folder (default: bags/<date-time>)")
    record.add_argument("--topics", default="", help="comma-separated topics (default: sensors, pose, target, action)")
    record.add_argument("--storage", default="mcap", choices=("mcap", "sqlite3"))
    record.add_argument("--sim-time", action="store_true", help="stamp with /clock (use_sim_time), for the sim arm")
    record.set_defaults(func=_record)

    collect = sub.add_parser("collect-ros", help="random-action episodes on the simulated arm over ROS, into a bag")
    collect.add_argument("--out", required=True, help="new bag folder")
    collect.add_argument("--episodes", type=int, default=10)
    collect.add_argument("--steps", type=int, default=100, help="actions per episode (task.max_episode_steps)")
    collect.add_argument("--task", default="peg", choices=("peg", "push_cube", "close_drawer"))
    collect.add_argument("--real-time-factor", type=float, default=1.0, help="simulated s per wall s")
    collect.add_argument("--seed", type=int, default=0, help="first scene seed and action seed")
    collect.set_defaults(func=_collect_ros)

    fast = sub.add_parser("collect", help="random-action samples straight from the in-process simulator, into bags")
    fast.add_argument("--out", required=True, help="folder for the bag folders (bag_000, bag_001, ...)")
    fast.add_argument("--samples", type=int, default=30000)
    fast.add_argument("--policy", default="random", choices=("random", "scripted_noise"))
    fast.add_argument("--task", default="peg", choices=("peg", "push_cube", "close_drawer"))
    fast.add_argument("--seed", type=int, default=0)
    fast.add_argument("--image-noise", type=float, default=0.0, help="Gaussian pixel noise std (0-255 scale)")
    fast.set_defaults(func=_collect)

    pre = sub.add_parser("pretrain", help="pretrain the MSDP encoder from rosbags (MCAP or sqlite3)")
    pre.add_argument("--bags", nargs="+", required=True, help="bag folders, or folders of bag folders")
    pre.add_argument("--objective", choices=("reconstruction", "prediction"), help="default: from --config")
    pre.add_argument("--steps", type=int, help="updates (default: from --config, 30000)")
    pre.add_argument("--batch-size", type=int)
    pre.add_argument("--seed", type=int)
    pre.add_argument("--out", default="runs/pretrain", help="checkpoint and report folder")
    pre.add_argument("--config", default=str(CONFIG_DIR / "pretrain.yaml"))
    pre.add_argument("--cache", type=Path, help="folder for decoded-sample caches (later runs skip decoding)")
    pre.set_defaults(func=_pretrain)

    recover = sub.add_parser("recover-bag", help="repair a bag whose recorder was killed (keeps all complete messages)")
    recover.add_argument("bag", help="the rosbag2 folder")
    recover.set_defaults(func=_recover_bag)

    enc = sub.add_parser("encoder", help="run the encoder node (sensor topics in, /msdp/embedding out)")
    enc.add_argument("--checkpoint", required=True, help="encoder.safetensors from msdp pretrain")
    enc.add_argument("--params", help="ROS parameter file (e.g. config/encoder.yaml)")
    enc.add_argument("--sim-time", action="store_true", help="use /clock (next to the simulated arm)")
    enc.set_defaults(func=_encoder)

    tr = sub.add_parser("train", help="learn a policy on a simulated task in one process (SAC / RLPD, no ROS)")
    tr.add_argument("--encoder", required=True, help="encoder.safetensors from msdp pretrain")
    tr.add_argument("--task", choices=("peg", "push_cube", "close_drawer"), help="default: from --config (peg)")
    tr.add_argument("--steps", type=int, help="environment steps (default: from --config, 200000)")
    tr.add_argument("--seed", type=int)
    tr.add_argument("--encoder-variant", choices=("msdp_frozen", "scratch"))
    tr.add_argument("--sensors", help="sensor subset, e.g. vision,ft (default: all)")
    tr.add_argument("--bridge", choices=("cross_attention", "pooling", "cls", "concat"))
    tr.add_argument("--threads", type=int, help="torch threads (default: from --config, 1)")
    tr.add_argument("--rlpd", action="store_true", help="RLPD: half of each batch from the --offline logs")
    tr.add_argument("--layer-norm", action="store_true", help="LayerNorm in the Q-networks (agent.layer_norm)")
    tr.add_argument("--offline", nargs="*", default=[], help="transition logs for RLPD (see msdp offline-log)")
    tr.add_argument("--out", help="run folder (default: runs/train_<task>_<variant>_s<seed>)")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    tr.add_argument("--config", default=str(CONFIG_DIR / "train.yaml"))
    tr.set_defaults(func=_train)

    ev = sub.add_parser("eval", help="success rate of a trained policy on a simulated task, with perturbations")
    ev.add_argument("--policy", required=True, help="policy.safetensors from msdp train")
    ev.add_argument("--task", help="default: the task the policy was trained on")
    ev.add_argument("--episodes", type=int, default=50)
    ev.add_argument("--image-noise", type=float, default=0.0, help="Gaussian pixel noise std (0-255 scale)")
    ev.add_argument("--ft-noise", type=float, default=0.0, help="Gaussian F/T noise std (N, Nm)")
    ev.add_argument("--stiffness", type=float, help="translational stiffness, N/m (trained at 2000)")
    ev.add_argument("--mass-scale", type=float, default=1.0, help="object mass x")
    ev.add_argument("--friction-scale", type=float, default=1.0, help="object friction x")
    ev.add_argument("--stochastic", action="store_true", help="sample actions instead of the mean")
    ev.add_argument("--encoder", help="override the encoder checkpoint named in the policy")
    ev.set_defaults(func=_eval)

    off = sub.add_parser("offline-log", help="encode recorded bags into a transition log with rewards (RLPD data)")
    off.add_argument("--bags", nargs="+", required=True, help="bag folders with /franka/ee_pose and /msdp/task_goal")
    off.add_argument("--encoder", required=True, help="the frozen encoder the policy will use")
    off.add_argument("--task", default="peg", choices=("peg",), help="the task whose reward to compute")
    off.add_argument("--out", required=True, help="new transition log folder")
    off.set_defaults(func=_offline_log)

    cv = sub.add_parser("curves", help="plot several training runs' learning curves in one PNG")
    cv.add_argument("runs", nargs="+", help="run folders (each with metrics.csv)")
    cv.add_argument("--out", default="runs/curves.png")
    cv.set_defaults(func=_curves)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"msdp {args.command}: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
