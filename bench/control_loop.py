"""Bench: the libfranka torque loop against franka-sim while the parent process is busy.

The parent plays the driver node's part: a thread streams Cartesian targets (a small circle) at
100 Hz and burns the GIL with Python work between sends, and optionally an rclpy node publishes
/joint_states and /franka/ee_pose from the loop's snapshots (isolated ROS domain, localhost only).
The loop runs in its own process, so none of this should reach its period.

    PYTHONPATH=src .venv/bin/python bench/control_loop.py [--seconds 30] [--ros]

Prints the loop period p50/p99/max (wall clock, in the loop process), the time the loop spends per
cycle, lost cycles and aborts, the tracking error, and last ``control_period_p99_ms: X`` (goal <= 1.5, 0 aborts).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))  # the franka-sim helper lives with the tests

from franka_sim_server import EE_OFFSET, franka_sim_server  # noqa: E402
from msdp_franka_driver.control_law import ImpedanceConfig, SafetyConfig  # noqa: E402
from msdp_franka_driver.fr3_model import JOINT_NAMES  # noqa: E402
from msdp_franka_driver.libfranka_backend import LibfrankaArm, LibfrankaConfig  # noqa: E402


def stream_circle(
    arm: LibfrankaArm, stop: threading.Event, radius: float, rate: float, busy: float, errors: list[float]
) -> None:
    """Targets on a circle in the y-z plane (one turn per 4 s), with ``busy`` of each period spent in pure Python."""
    start = arm.snapshot()
    centre, orientation = start.position - np.array([0.0, radius, 0.0]), start.orientation
    t0 = time.monotonic()
    period = 1.0 / rate
    next_send = t0
    while not stop.is_set():
        phase = 2.0 * math.pi * (time.monotonic() - t0) / 4.0
        target = centre + radius * np.array([0.0, math.cos(phase), math.sin(phase)])
        arm.set_target(target, orientation)
        errors.append(float(np.linalg.norm(arm.snapshot().position - target)))
        busy_until = time.monotonic() + busy * period
        while time.monotonic() < busy_until:
            sum(i * i for i in range(200))  # holds the GIL, like a policy or a message callback would
        next_send += period
        time.sleep(max(0.0, next_send - time.monotonic()))


def ros_publisher(arm: LibfrankaArm, rate: float):
    """An rclpy node publishing the loop's state, spun by a thread of this (the parent) process."""
    os.environ["ROS_DOMAIN_ID"] = str(100 + os.getpid() % 100)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import JointState

    rclpy.init()
    node = rclpy.create_node("bench_driver")
    joints = node.create_publisher(JointState, "/joint_states", 10)
    pose = node.create_publisher(PoseStamped, "/franka/ee_pose", 10)

    def publish() -> None:
        snap = arm.snapshot()
        stamp = node.get_clock().now().to_msg()
        msg = JointState(
            name=list(JOINT_NAMES), position=snap.q.tolist(), velocity=snap.dq.tolist(), effort=snap.tau.tolist()
        )
        msg.header.stamp = stamp
        joints.publish(msg)
        ee = PoseStamped()
        ee.header.stamp, ee.header.frame_id = stamp, "fr3_link0"
        ee.pose.position.x, ee.pose.position.y, ee.pose.position.z = snap.position.tolist()
        o = ee.pose.orientation
        o.x, o.y, o.z, o.w = snap.orientation.tolist()
        pose.publish(ee)

    node.create_timer(1.0 / rate, publish)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()

    def shutdown() -> None:
        executor.shutdown()
        thread.join()
        node.destroy_node()
        rclpy.shutdown()

    return shutdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to run the loop")
    parser.add_argument("--radius", type=float, default=0.03, help="m, radius of the target circle")
    parser.add_argument("--rate", type=float, default=100.0, help="Hz, target rate of the parent's publisher")
    parser.add_argument("--busy", type=float, default=0.5, help="fraction of each publisher period spent busy")
    parser.add_argument("--ros", action="store_true", help="also publish joint states and pose with rclpy")
    parser.add_argument("--ros-rate", type=float, default=100.0, help="Hz, rclpy publishing rate")
    parser.add_argument(
        "--sim-priority",
        type=int,
        default=80,
        help="SCHED_FIFO priority for franka-sim, standing in for the robot's own controller (0: none)",
    )
    args = parser.parse_args()

    with franka_sim_server(realtime_priority=args.sim_priority) as sim:
        config = LibfrankaConfig(robot_ip=sim.host, realtime="ignore", ee_offset=EE_OFFSET)
        with LibfrankaArm(config, ImpedanceConfig(), SafetyConfig()) as arm:
            stop_ros = ros_publisher(arm, args.ros_rate) if args.ros else None
            stop = threading.Event()
            errors: list[float] = []
            publisher = threading.Thread(
                target=stream_circle, args=(arm, stop, args.radius, args.rate, args.busy, errors)
            )
            publisher.start()
            try:
                time.sleep(args.seconds)
            finally:
                stop.set()
                publisher.join()
                if stop_ros is not None:
                    stop_ros()
            stats = arm.loop_stats()
        realtime = "SCHED_FIFO priority" in sim.log.read_text()
    sim_realtime = "with SCHED_FIFO" if realtime else "without real-time priority"

    settled = np.array(errors[len(errors) // 10 :])
    print(
        f"franka-sim on {sim.host} {sim_realtime}, {args.seconds:.0f} s, targets at {args.rate:.0f} Hz "
        f"(busy {args.busy:.0%}), rclpy publisher: {'on' if args.ros else 'off'}"
    )
    print(f"cycles: {stats.cycles}  lost: {stats.lost_cycles}  command success rate: {stats.command_success_rate:.4f}")
    print(f"period ms: p50 {stats.period_p50_ms:.3f}  p99 {stats.period_p99_ms:.3f}  max {stats.period_max_ms:.3f}")
    print(f"loop compute ms (state in -> torque out): p99 {stats.compute_p99_ms:.3f}")
    print(f"tracking error mm: median {1000 * np.median(settled):.2f}  p99 {1000 * np.percentile(settled, 99):.2f}")
    print(f"aborts: {stats.aborts}{'  last error: ' + stats.last_error if stats.aborts else ''}")
    print(f"control_period_p99_ms: {stats.period_p99_ms:.3f}")


if __name__ == "__main__":
    main()
