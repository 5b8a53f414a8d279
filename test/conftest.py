"""Shared test set-up: offscreen rendering, and an isolated ROS domain for every test session."""

import os
import random

os.environ.setdefault("MUJOCO_GL", "egl")
# Tests that start ROS nodes talk only to themselves: a domain of their own, discovery on localhost only.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(100, 200)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # test helpers (ros_harness, franka_sim_server)
