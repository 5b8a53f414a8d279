"""``msdp teach-goal`` over ROS: a probe stands in for the arm's /franka/ee_pose (moved, then held still)."""

import subprocess
import sys

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped
from rclpy.qos import qos_profile_sensor_data

from msdp.node import ros_message
from msdp.vocabulary import pose_msg
from msdp_franka_driver.pose import quat_multiply, yaw_quat
from msdp_policy.episodes import load_goal
from msdp_policy.tasks import DOWN
from ros_harness import Probe

pytestmark = pytest.mark.ros


def teach(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "msdp.cli", "teach-goal", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip


def test_holding_the_arm_still_at_the_goal_stores_that_pose(tmp_path):
    out = tmp_path / "goal.yaml"
    process = teach("--out", str(out), "--still-time", "0.5", "--timeout", "60")  # no terminal: 'still'
    probe = Probe("arm")
    publisher = probe.node.create_publisher(PoseStamped, "/franka/ee_pose", qos_profile_sensor_data)
    orientation = quat_multiply(yaw_quat(0.2), DOWN)
    try:
        for k in range(12000):  # 2 s moving down into the hole, then still until the goal is stored
            z = 0.12 - 0.0005 * min(k, 200)
            publisher.publish(pose_msg(ros_message, 10_000_000 * k, [0.5, 0.01, z], orientation))
            probe.spin_for(0.01)
            if process.poll() is not None:
                break
        output, _ = process.communicate(timeout=10)
    finally:
        probe.close()
    assert process.returncode == 0, output
    goal = load_goal(out, "peg")
    assert np.allclose(goal.position, [0.5, 0.01, 0.02], atol=1e-6) and goal.yaw == pytest.approx(0.2)
    assert "goal stored" in output


@pytest.mark.slow  # make test-slow
def test_without_a_pose_or_a_terminal_teach_goal_says_what_is_missing(tmp_path):
    waiting = teach("--out", str(tmp_path / "goal.yaml"), "--timeout", "2")
    output, _ = waiting.communicate(timeout=120)
    assert waiting.returncode == 1 and "no goal confirmed within 2 s (no pose)" in output
    enter = teach("--out", str(tmp_path / "goal.yaml"), "--confirm", "enter")
    output, _ = enter.communicate(timeout=120)
    assert enter.returncode == 2 and "'enter' needs a terminal" in output
    assert not (tmp_path / "goal.yaml").exists()
