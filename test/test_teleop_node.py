"""The teleop node over ROS on the simulated arm, with a person's devices as they reach a computer: keys typed
into the node's terminal (a pseudo-terminal here), and a hand on the arm (a simulated force on the tool,
``sim.hand_force``: a person's hand cannot run here). Demonstrations are recorded and read back as a dataset."""

import json
import os
import pty
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters

from msdp.processes import ros_args
from msdp.vocabulary import stamp_nanoseconds
from msdp_perception.bags import BagReader
from msdp_perception.dataset import BagDataset
from ros_harness import Probe, node_process, wait_for_text

pytestmark = pytest.mark.ros

DRIVER = {"backend": "mujoco", "marker_rate": 0.0, "task.hole_xy_range": 0.0, "task.hole_yaw_range": 0.0}


def teleop_in_a_terminal(params: dict, log) -> tuple[subprocess.Popen, int]:
    """The teleop node with a pseudo-terminal as its standard input; returns it and the terminal's input end."""
    leader, follower = pty.openpty()
    with open(log, "w") as out:
        command = [sys.executable, "-m", "msdp_policy.teleop_node", *ros_args(params)]
        process = subprocess.Popen(
            command, stdin=follower, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    os.close(follower)
    return process, leader


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=10)


def episode_results(bag) -> list[dict]:
    with BagReader(bag) as reader:
        return [json.loads(m.data) for _, _, _, m in reader.messages(["/msdp/episode"])]


def set_hand_force(probe: Probe, force: list[float]) -> None:
    client = probe.node.create_client(SetParameters, "/franka_driver/set_parameters")
    assert client.wait_for_service(timeout_sec=10)
    value = ParameterValue(type=ParameterType.PARAMETER_DOUBLE_ARRAY, double_array_value=force)
    future = client.call_async(SetParameters.Request(parameters=[Parameter(name="sim.hand_force", value=value)]))
    assert probe.spin_until(future.done, 10) and future.result().results[0].successful


def test_keys_typed_in_the_teleop_terminal_drive_a_recorded_demonstration(tmp_path):
    bag = tmp_path / "demo"
    logs = {name: tmp_path / f"{name}.log" for name in ("driver", "recorder", "teleop")}
    params = {"operator_kind": "keyboard", "wait_for_start": True, "episodes": 1, "reset_kind": "driver",
              "operator.key_hold": 0.3, "task.max_episode_steps": 60, "use_sim_time": True}  # fmt: skip
    with (
        node_process("msdp_franka_driver.driver_node", DRIVER, logs["driver"]),
        node_process("msdp_perception.recorder_node", {"output": str(bag), "use_sim_time": True}, logs["recorder"]),
    ):
        teleop, keys = teleop_in_a_terminal(params, logs["teleop"])
        try:
            wait_for_text(logs["teleop"], "press start", 60)
            os.write(keys, b" ")
            for _ in range(15):  # hold 'r' (up) for 1.5 s, as a terminal repeats a held key
                os.write(keys, b"r")
                time.sleep(0.1)
            time.sleep(0.6)
            os.write(keys, b"y")  # the operator marks success
            teleop.wait(timeout=60)
        finally:
            stop(teleop)
            os.close(keys)
        assert teleop.returncode == 0, logs["teleop"].read_text()[-3000:]
    results = episode_results(bag)
    assert [r["kind"] for r in results] == ["start", "end"]
    assert results[1]["ended_by"] == "success" and results[1]["source"] == "keyboard"
    data = BagDataset([bag], progress=False)
    linked = np.flatnonzero(data.next_index >= 0)
    dz = data.actions[linked, 2]
    assert (dz > 0.009).sum() >= 10 and np.all(dz >= -1e-9), "held 'r' moved the arm up at speed 0.5, never down"
    assert np.allclose(data.actions[linked][:, [0, 1, 3]], 0.0), "no other key was pressed"


def test_a_hand_guided_demonstration_records_the_motion_the_hand_made_as_actions(tmp_path):
    bag = tmp_path / "hand"
    logs = {name: tmp_path / f"{name}.log" for name in ("driver", "recorder", "teleop")}
    params = {"operator_kind": "hand", "episodes": 2, "reset_kind": "driver", "auto_success": False,
              "task.max_episode_steps": 40, "use_sim_time": True}  # fmt: skip
    probe = Probe("hand")
    try:
        with (
            node_process("msdp_franka_driver.driver_node", DRIVER, logs["driver"]),
            node_process("msdp_perception.recorder_node", {"output": str(bag), "use_sim_time": True}, logs["recorder"]),
        ):
            teleop, keys = teleop_in_a_terminal(params, logs["teleop"])
            try:
                wait_for_text(logs["driver"], "hand guiding: the gains ramp down", 60)
                set_hand_force(probe, [0.0, 1.5, 0.0])  # the person pushes the tool gently to the left
                teleop.wait(timeout=60)
                set_hand_force(probe, [0.0, 0.0, 0.0])
            finally:
                stop(teleop)
                os.close(keys)
            assert teleop.returncode == 0, logs["teleop"].read_text()[-3000:]
    finally:
        probe.close()
    assert [r["ended_by"] for r in episode_results(bag) if r["kind"] == "end"] == ["timeout", "timeout"]
    data = BagDataset([bag], progress=False)
    heads = set(np.flatnonzero(data.next_index >= 0)) - set(data.next_index[data.next_index >= 0].tolist())
    chains = []  # each chain of linked samples; an image lost under load splits an episode's chain in two
    for head in sorted(heads):
        chain = [int(head)]
        while data.next_index[chain[-1]] >= 0:
            chain.append(int(data.next_index[chain[-1]]))
        chains.append(chain)
    first = max(chains, key=len)  # the longest stretch of the hand's motion
    assert len(first) >= 15, [len(c) for c in chains]
    with BagReader(bag) as reader:
        poses = {stamp_nanoseconds(m.header): np.array([m.pose.position.x, m.pose.position.y, m.pose.position.z])
                 for _, _, _, m in reader.messages(["/franka/ee_pose"])}  # fmt: skip
        targets = [m for _, _, _, m in reader.messages(["/franka/equilibrium_pose"])]
    assert not targets, "a hand-guided demonstration sends no target"
    moved = data.actions[first[:-1], 1].sum()
    times = np.array(sorted(poses))
    at = [
        poses[times[np.searchsorted(times, round(data.stamps[k] * 1e9), side="right") - 1]]
        for k in (first[0], first[-1])
    ]
    assert moved > 0.02, f"the hand moved the tool {moved:.3f} m to the left over the episode"
    assert moved == pytest.approx(at[1][1] - at[0][1], abs=0.005), "the actions add up to the motion"
