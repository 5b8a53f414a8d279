"""The ``msdp`` command: one entry point with a subcommand per job."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from msdp.config import ConfigError


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
