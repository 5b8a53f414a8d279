"""Bench: the 1 kHz libfranka torque loop against franka-sim, driven by the real driver node.

The driver node runs as its own process with the libfranka backend (its loop in a further process),
publishing joint states and pose at 100 Hz over DDS; this script streams impedance targets on a small
circle at 100 Hz to /franka/equilibrium_pose, and reads the loop's statistics from /diagnostics.

    .venv/bin/python bench/control_loop.py [--seconds 30]

Prints the loop period p50/p99/max (wall clock, in the loop process), lost cycles, aborts, and last
``control_period_p99_ms: X`` (goal <= 1.5 ms, 0 aborts). franka-sim is given SCHED_FIFO priority by
default (``--sim-priority``), standing in for the robot's own controller hardware: on 2 cores without it
the simulator itself falls behind real time and its late states show up as long periods.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))  # franka-sim and ROS helpers live with the tests
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(100, 200)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402

from franka_sim_server import EE_OFFSET, franka_sim_server  # noqa: E402
from ros_harness import Probe, node_process  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to stream targets")
    parser.add_argument("--radius", type=float, default=0.03, help="m, radius of the target circle")
    parser.add_argument("--rate", type=float, default=100.0, help="Hz, target rate")
    parser.add_argument("--sim-priority", type=int, default=80, help="SCHED_FIFO priority for franka-sim (0: none)")
    args = parser.parse_args()

    log = Path(tempfile.mkdtemp(prefix="msdp-bench-")) / "driver.log"
    with franka_sim_server(realtime_priority=args.sim_priority) as sim:
        params = {
            "backend": "libfranka",
            "libfranka.robot_ip": sim.host,
            "libfranka.realtime": "ignore",
            "libfranka.ee_offset": list(EE_OFFSET),
        }
        with node_process("msdp_franka_driver.driver_node", params, log):
            probe = Probe("control_loop_bench")
            poses: list[np.ndarray] = []
            diagnostics: list[DiagnosticArray] = []
            node = probe.node
            node.create_subscription(
                PoseStamped,
                "/franka/ee_pose",
                lambda m: poses.append(np.array([m.pose.position.x, m.pose.position.y, m.pose.position.z])),
                qos_profile_sensor_data,
            )
            node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
            targets = node.create_publisher(PoseStamped, "/franka/equilibrium_pose", 1)
            if not probe.spin_until(lambda: poses and targets.get_subscription_count() > 0, 60.0):
                raise SystemExit(f"the driver node did not come up; see {log}")
            centre = poses[-1] - np.array([0.0, args.radius, 0.0])
            errors: list[float] = []
            start = time.monotonic()
            while (elapsed := time.monotonic() - start) < args.seconds:
                phase = 2.0 * math.pi * elapsed / 4.0  # one turn per 4 s in the y-z plane
                target = centre + args.radius * np.array([0.0, math.cos(phase), math.sin(phase)])
                msg = PoseStamped()
                msg.header.frame_id = "fr3_link0"
                msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = target.tolist()
                msg.pose.orientation.x = 1.0  # tool pointing down
                targets.publish(msg)
                probe.spin_for(1.0 / args.rate)
                if elapsed > 3.0:
                    errors.append(float(np.linalg.norm(poses[-1] - target)))
            diagnostics.clear()
            probe.spin_until(lambda: diagnostics, 3.0)
            probe.close()
        realtime = "SCHED_FIFO priority" in sim.log.read_text()
    if not diagnostics:
        raise SystemExit(f"no diagnostics from the driver node; see {log}")
    values = {kv.key: kv.value for kv in diagnostics[-1].status[0].values}
    print(
        f"franka-sim on {sim.host} {'with SCHED_FIFO' if realtime else 'without real-time priority'}; driver node "
        f"(libfranka backend) publishing at 100 Hz; targets at {args.rate:.0f} Hz for {args.seconds:.0f} s"
    )
    print(
        f"phase: {values['phase']}  lost cycles: {values['lost_cycles']}  "
        f"command success rate: {values['command_success_rate']}"
    )
    print(f"period ms: p50 {values['period_p50_ms']}  p99 {values['period_p99_ms']}  max {values['period_max_ms']}")
    print(f"tracking error mm: median {1000 * np.median(errors):.2f}  p99 {1000 * np.percentile(errors, 99):.2f}")
    print(f"aborts: {values['aborts']}{'  last error: ' + values['last_error'] if values['last_error'] else ''}")
    print(f"control_period_p99_ms: {values['period_p99_ms']}")


if __name__ == "__main__":
    main()
