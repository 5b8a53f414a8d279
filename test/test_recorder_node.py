"""The recorder and the ROS data-collection job with the simulated driver, as real processes (isolated domain)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from geometry_msgs.msg import TwistStamped

from msdp.node import load_params_file
from msdp.vocabulary import stamp_nanoseconds
from msdp_perception.bags import BagReader, bag_topics, open_bag, recover_bag
from msdp_perception.dataset import BagDataset
from msdp_perception.recorder_node import RecorderConfig
from ros_harness import Probe, node_process, run_in_own_group

pytestmark = pytest.mark.ros
ROOT = Path(__file__).resolve().parents[1]
DRIVER = "msdp_franka_driver.driver_node"
RECORDER = "msdp_perception.recorder_node"
SENSORS = {
    "/camera/image_raw": "sensor_msgs/msg/Image",
    "/ft_sensor/wrench": "geometry_msgs/msg/WrenchStamped",
    "/joint_states": "sensor_msgs/msg/JointState",
    "/franka/ee_pose": "geometry_msgs/msg/PoseStamped",
}
RECORDED = {
    **SENSORS,
    "/msdp/action": "geometry_msgs/msg/TwistStamped",
    "/msdp/task_goal": "geometry_msgs/msg/PoseStamped",
}


@pytest.fixture(scope="class")
def driver(tmp_path_factory):
    """The simulated driver, and a probe that publishes /msdp/action at 10 Hz (a reliable, non-sensor topic)."""
    log = tmp_path_factory.mktemp("driver") / "driver.log"
    with node_process(DRIVER, {"camera_rate": 10.0}, log):
        probe = Probe("recorder_probe")
        action_pub = probe.node.create_publisher(TwistStamped, "/msdp/action", 10)
        probe.node.create_timer(0.1, lambda: action_pub.publish(TwistStamped()))
        try:
            assert probe.spin_until(lambda: probe.node.count_publishers("/clock") > 0, 30.0), "driver did not come up"
            yield probe
        finally:
            probe.close()


def record(probe: Probe, bag, log, seconds: float, stop: signal.Signals, **params) -> int:
    """Run the recorder (simulated time) for ``seconds`` once it subscribes to everything; stop it with ``stop``."""
    with node_process(RECORDER, {"output": str(bag), "use_sim_time": True, **params}, log) as recorder:
        subscribed = probe.spin_until(lambda: all(probe.node.count_subscribers(t) for t in RECORDED), 30.0)
        assert subscribed, log.read_text()
        probe.spin_for(seconds)
        os.killpg(recorder.pid, stop)
        return recorder.wait(timeout=20)


def rate(bag, topic: str) -> float:
    """Messages per second of bag time."""
    stamps = [t for _, _, t, _ in open_bag(bag, [topic])]
    return (len(stamps) - 1) / ((stamps[-1] - stamps[0]) * 1e-9)


class TestRecorder:
    def test_sigint_closes_the_bag_with_every_topic_at_its_rate(self, driver, tmp_path):
        bag, log = tmp_path / "bag", tmp_path / "recorder.log"
        assert record(driver, bag, log, 3.0, signal.SIGINT) == 0
        assert (bag / "metadata.yaml").exists()
        assert bag_topics(bag) == RECORDED
        assert 7.0 < rate(bag, "/camera/image_raw") < 14.0
        assert 80.0 < rate(bag, "/joint_states") < 110.0  # simulated time: one state per 10 ms step
        assert 7.0 < rate(bag, "/msdp/action") < 14.0
        # Bag time is the node clock, simulated time here: it follows the driver's header stamps (receive lag
        # on a loaded machine can reach a few hundred ms; wall-clock time would be decades off).
        for _, _, timestamp, msg in open_bag(bag, ["/franka/ee_pose"]):
            assert abs(timestamp - stamp_nanoseconds(msg.header)) < 1_000_000_000
        dataset = BagDataset([bag], progress=False)
        assert len(dataset) >= 20 and dataset.present.all(axis=1).mean() > 0.9
        assert dataset.images.shape[1:] == (64, 64, 3)
        text = log.read_text()
        assert f"bag {bag} closed" in text and "/camera/image_raw: " in text
        assert "no messages recorded on /franka/equilibrium_pose" in text  # configured, never published

    @pytest.mark.slow  # the storage plugin is the only difference from the SIGINT case
    def test_sigterm_closes_a_sqlite3_bag(self, driver, tmp_path):
        bag = tmp_path / "bag"
        assert record(driver, bag, tmp_path / "recorder.log", 2.0, signal.SIGTERM, storage="sqlite3") == 0
        with BagReader(bag) as reader:
            assert not reader.needs_recovery and reader.storage == "sqlite3"
            assert set(reader.topics) == set(RECORDED)
            assert reader.message_counts["/camera/image_raw"] >= 15
        assert len(BagDataset([bag], progress=False)) >= 15

    def test_sigkill_leaves_a_bag_readable_up_to_the_last_flush(self, driver, tmp_path):
        bag = tmp_path / "bag"
        assert record(driver, bag, tmp_path / "recorder.log", 3.0, signal.SIGKILL, flush_period=0.2) == -9
        assert not (bag / "metadata.yaml").exists()
        with BagReader(bag) as reader:
            assert reader.needs_recovery
            readable = sum(reader.message_counts.values())
            assert reader.message_counts["/camera/image_raw"] >= 20  # 3 s at 10 Hz, less at most 0.2 s
        assert recover_bag(bag) == readable
        assert (bag / "metadata.yaml").exists()
        assert len(BagDataset([bag], progress=False)) >= 20


def test_shipped_recorder_config_validates_and_lists_the_default_topics():
    config = load_params_file(RecorderConfig, ROOT / "config" / "recorder.yaml", "recorder")
    assert config == RecorderConfig()
    extra = {"/franka/equilibrium_pose", "/msdp/embedding", "/msdp/task_goal", "/msdp/reward", "/msdp/episode"}
    assert set(config.topic_list()) == {*RECORDED, *extra}


@pytest.mark.parametrize(
    "override, message",
    [
        ("storage:=zip", "'storage': 'zip' is not one of mcap, sqlite3"),
        ("topics:=camera", "'topics': 'camera' is not an absolute topic name"),
        ("flush_period:=0.0", "'flush_period': 0.0 is outside the allowed range"),
    ],
)
def test_bad_recorder_parameters_stop_it_with_an_error_naming_them(override, message, tmp_path):
    args = [sys.executable, "-m", RECORDER, "--ros-args", "-p", f"output:={tmp_path / 'bag'}", "-p", override]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "bag").exists()


def test_recorder_refuses_to_overwrite_a_bag(tmp_path):
    args = [sys.executable, "-m", RECORDER, "--ros-args", "-p", f"output:={tmp_path}"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"'output': {tmp_path} already exists" in result.stderr


def reset_times(bag) -> list[int]:
    """Stamps (ns) of the last joint state before each scene reset: a joint moving 0.03 rad in one 10 ms step."""
    states = [(stamp_nanoseconds(m.header), np.array(m.position)) for _, _, _, m in open_bag(bag, ["/joint_states"])]
    return [t for (t, a), (_, b) in zip(states, states[1:], strict=False) if np.abs(b - a).max() > 0.03]


def test_collect_ros_records_random_episodes_whose_links_never_cross_a_reset(tmp_path):
    bag = tmp_path / "play"
    command = [sys.executable, "-m", "msdp.cli", "collect-ros", "--out", str(bag), "--episodes", "2", "--steps", "10"]
    result = run_in_own_group([*command, "--real-time-factor", "3"], timeout=120)
    assert result.returncode == 0, result.stdout[-5000:]
    assert f"in {bag}: " in result.stdout and "samples" in result.stdout

    actions = [msg for _, _, _, msg in open_bag(bag, ["/msdp/action"])]
    assert len(actions) == 20
    steps = np.array([[a.twist.linear.x, a.twist.linear.y, a.twist.linear.z, a.twist.angular.z] for a in actions])
    assert np.all(np.abs(steps) <= [0.02, 0.02, 0.02, 0.1]) and steps.std(0).min() > 0.004  # random, in range

    stamps = [stamp_nanoseconds(m.header) for _, _, _, m in open_bag(bag, ["/joint_states"])]
    assert len(set(stamps)) == len(stamps), "joint states repeat stamps: simulated time restarted at a reset"
    dataset = BagDataset([bag], progress=False)
    linked = np.flatnonzero(dataset.next_index >= 0)
    assert 16 <= len(linked) <= 20  # 10 actions per episode, each linking its observation to the next
    assert np.all(np.isfinite(dataset.actions[linked])) and np.all(np.isnan(dataset.actions[dataset.next_index < 0]))
    resets = reset_times(bag)
    assert len(resets) == 2, f"expected the two episode resets, found jumps at {resets}"
    for k in linked:
        start, end = dataset.stamps[k], dataset.stamps[dataset.next_index[k]]
        assert not any(start * 1e9 <= r < end * 1e9 for r in resets), f"sample {k} links across a reset"
