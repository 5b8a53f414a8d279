"""BagDataset: the sync rule over recorded bags, image conversions, action links, the cache, and the round trip
from the simulator's fast collection to dataset arrays."""

import os
import shutil

import cv2
import numpy as np
import pytest

from msdp.cli import main as msdp
from msdp.config import ConfigError
from msdp.vocabulary import JOINT_NAMES
from msdp_franka_driver.sim import collect
from msdp_franka_driver.sim.collect import CollectConfig, collect_to_bags
from msdp_franka_driver.sim.env import FrankaTaskEnv
from msdp_perception import dataset
from msdp_perception.bags import TYPESTORE, BagError, BagWriter, open_bag
from msdp_perception.dataset import BagDataset, BagTopics
from msdp_perception.observation import SyncConfig
from msdp_policy.tasks import TaskConfig

T = TYPESTORE.types
MS = 1_000_000  # ns
START = 1_000 * MS


def header(stamp_ns: int, frame: str = ""):
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id=frame)


def image_msg(stamp_ns: int, pixels: np.ndarray, encoding: str = "rgb8"):
    height, width = pixels.shape[:2]
    data = np.ascontiguousarray(pixels).view(np.uint8).reshape(-1)
    return T["sensor_msgs/msg/Image"](
        header=header(stamp_ns), height=height, width=width, encoding=encoding, is_bigendian=0,
        step=data.size // height, data=data,
    )  # fmt: skip


def wrench_msg(stamp_ns: int, value: float):
    v = T["geometry_msgs/msg/Vector3"]
    wrench = T["geometry_msgs/msg/Wrench"](force=v(x=value, y=1.0, z=2.0), torque=v(x=3.0, y=4.0, z=5.0))
    return T["geometry_msgs/msg/WrenchStamped"](header=header(stamp_ns), wrench=wrench)


def joint_msg(stamp_ns: int, value: float):
    q = np.full(7, value)
    return T["sensor_msgs/msg/JointState"](
        header=header(stamp_ns), name=list(JOINT_NAMES), position=q, velocity=-q, effort=np.zeros(0)
    )


def action_msg(stamp_ns: int, value: float):
    v = T["geometry_msgs/msg/Vector3"]
    twist = T["geometry_msgs/msg/Twist"](linear=v(x=value, y=0.0, z=-value), angular=v(x=0.0, y=0.0, z=0.5))
    return T["geometry_msgs/msg/TwistStamped"](header=header(stamp_ns), twist=twist)


TYPES = {
    "/camera/image_raw": "sensor_msgs/msg/Image",
    "/ft_sensor/wrench": "geometry_msgs/msg/WrenchStamped",
    "/joint_states": "sensor_msgs/msg/JointState",
    "/msdp/action": "geometry_msgs/msg/TwistStamped",
}


def write_bag(path, messages) -> None:
    """messages: (topic, msg); the bag time is the header stamp, written in arbitrary order on purpose."""
    with BagWriter(path) as writer:
        for topic in sorted({topic for topic, _ in messages}):
            writer.add_topic(topic, TYPES[topic])
        for topic, msg in messages:
            writer.write(topic, msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec, msg)


def sensor_stream(
    images=11, wrench_gap_ms=(), nan_wrench_ms=(), joints_from_ms=0, actions_at=(), image=None, encoding="rgb8"
) -> list:
    """10 Hz images, 100 Hz wrenches and joint states from START, with the given faults (times in ms)."""
    image = np.zeros((64, 64, 3), np.uint8) if image is None else image
    messages = [("/camera/image_raw", image_msg(START + 100 * MS * k, image, encoding)) for k in range(images)]
    for ms in range(-50, 100 * (images - 1) + 1, 10):
        if not any(lo < ms < hi for lo, hi in wrench_gap_ms):
            messages.append(("/ft_sensor/wrench", wrench_msg(START + ms * MS, np.nan if ms in nan_wrench_ms else ms)))
        if ms >= joints_from_ms:
            messages.append(("/joint_states", joint_msg(START + ms * MS, ms / 1000)))
    messages += [("/msdp/action", action_msg(START + ms * MS, ms / 1000)) for ms in actions_at]
    return messages[::-1]  # the dataset orders by header stamp, not by the order in the bag


def test_sync_rule_masks_late_missing_and_non_finite_sensors(tmp_path):
    path = tmp_path / "bag"
    write_bag(path, sensor_stream(wrench_gap_ms=[(300, 550)], nan_wrench_ms=[800], joints_from_ms=250))
    data = BagDataset([path], progress=False)

    assert len(data) == 11
    np.testing.assert_allclose(data.stamps, 1.0 + 0.1 * np.arange(11))
    ft_masked = np.flatnonzero(~data.present[:, 1])
    proprio_masked = np.flatnonzero(~data.present[:, 2])
    assert ft_masked.tolist() == [4, 5, 8]  # 0.1 s after the gap began, 0.2 s, and the window with the NaN
    assert proprio_masked.tolist() == [0, 1, 2]  # no joint state before 0.25 s
    assert data.present[:, 0].all()
    # masked sensors hold zeros; a present window is the last four readings, the one stamped at t included
    assert not data.wrench[4].any() and not data.proprio[0].any()
    np.testing.assert_array_equal(data.wrench[6, :, 0], [570, 580, 590, 600])
    np.testing.assert_allclose(data.proprio[3], np.r_[np.full(7, 0.3), np.full(7, -0.3)], rtol=1e-6)
    # no action topic: the dataset still works, without transitions
    assert np.isnan(data.actions).all() and (data.next_index == -1).all()
    sample = data[6]
    assert sample["image"].shape == (64, 64, 3) and sample["present"].tolist() == [True, True, True]


def test_actions_link_consecutive_samples(tmp_path):
    path = tmp_path / "bag"
    # actions stamped at samples 0, 1, 2 (5 ms late: still before sample 3), none after sample 3, then 4..8
    actions = [0, 100, 205, 400, 500, 600, 700, 800]
    write_bag(path, sensor_stream(actions_at=actions))
    data = BagDataset([path], progress=False)
    linked = [0, 1, 2, 4, 5, 6, 7, 8]
    assert np.flatnonzero(data.next_index >= 0).tolist() == linked
    np.testing.assert_array_equal(data.next_index[linked], np.array(linked) + 1)
    np.testing.assert_allclose(data.actions[2], [0.205, 0.0, -0.205, 0.5], rtol=1e-6)
    assert np.isnan(data.actions[[3, 9, 10]]).all()


def test_images_are_converted_and_resized(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    write_bag(tmp_path / "bgr", sensor_stream(images=2, image=rgb[:, :, ::-1], encoding="bgr8"))
    np.testing.assert_array_equal(BagDataset([tmp_path / "bgr"], progress=False).images[1], rgb)

    large = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    write_bag(tmp_path / "large", sensor_stream(images=2, image=large))
    data = BagDataset([tmp_path / "large"], progress=False)
    assert data.images.shape == (2, 64, 64, 3)
    np.testing.assert_array_equal(data.images[0], cv2.resize(large, (64, 64), interpolation=cv2.INTER_AREA))


def test_unsupported_encoding_and_missing_topic_are_clear_errors(tmp_path):
    depth = np.zeros((64, 64), np.uint16)
    messages = [(t, m) for t, m in sensor_stream(images=2) if t != "/camera/image_raw"]
    write_bag(tmp_path / "depth", messages + [("/camera/image_raw", image_msg(START, depth, "16UC1"))])
    with pytest.raises(BagError, match=r"depth: topic /camera/image_raw.*'16UC1' is not supported"):
        BagDataset([tmp_path / "depth"], progress=False)

    no_wrench = [(t, m) for t, m in sensor_stream(images=2) if t != "/ft_sensor/wrench"]
    write_bag(tmp_path / "no_wrench", no_wrench)
    with pytest.raises(BagError, match=r"lacks topic\(s\) /ft_sensor/wrench; it has /camera/image_raw .*/joint_states"):
        BagDataset([tmp_path / "no_wrench"], progress=False)
    with pytest.raises(BagError, match="topic /joint_states has type sensor_msgs/msg/JointState, expected geometry"):
        BagDataset([tmp_path / "no_wrench"], topics=BagTopics(wrench="/joint_states"), progress=False)
    with pytest.raises(BagError, match="does not exist"):
        BagDataset([tmp_path / "nowhere"], progress=False)


def test_cache_is_reused_until_the_inputs_change(tmp_path, monkeypatch):
    path = tmp_path / "bag"
    write_bag(path, sensor_stream(actions_at=[0, 100]))
    cache = tmp_path / "cache"
    first = BagDataset([path], cache_dir=cache, progress=False)
    assert not first.from_cache and len(list(cache.glob("bag-*.npz"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the cache is valid")

    monkeypatch.setattr(dataset, "decode_bag", no_decoding)
    second = BagDataset([path], cache_dir=cache, progress=False)
    assert second.from_cache
    for name in dataset.ARRAYS:
        np.testing.assert_array_equal(getattr(second, name), getattr(first, name))
    with pytest.raises(AssertionError, match="decoded although"):  # another sync rule is another cache entry
        BagDataset([path], sync=SyncConfig(wrench_max_age=0.1), cache_dir=cache, progress=False)


class RecordingEnv(FrankaTaskEnv):
    """The real environment, logging every observation and action it hands out."""

    log: list = []

    def reset(self, seed=None):
        obs, info = super().reset(seed)
        self.log.append(("obs", {k: v.copy() for k, v in obs.items()}))
        return obs, info

    def step(self, action):
        self.log.append(("action", np.array(action)))
        obs, reward, terminated, truncated, info = super().step(action)
        self.log.append(("obs", {k: v.copy() for k, v in obs.items()}))
        return obs, reward, terminated, truncated, info


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_collected_bags_reproduce_the_environment(tmp_path, monkeypatch, storage):
    monkeypatch.setattr(RecordingEnv, "log", [])
    monkeypatch.setattr(collect, "FrankaTaskEnv", RecordingEnv)
    task = TaskConfig(max_episode_steps=8)
    config = CollectConfig(samples=30, samples_per_bag=20, task=task, storage=storage)
    paths = collect_to_bags(tmp_path / "out", config, progress=False)
    assert paths == [tmp_path / "out" / "bag_000", tmp_path / "out" / "bag_001"]

    observations, actions = [], {}
    for kind, value in RecordingEnv.log:
        if kind == "obs":
            observations.append(value)
        else:
            actions[len(observations) - 1] = value
    data = BagDataset(paths, progress=False)
    assert len(data) == len(observations) == 30
    assert data.present.all()
    for k, obs in enumerate(observations):
        np.testing.assert_array_equal(data.images[k], obs["image"])
        np.testing.assert_array_equal(data.wrench[k], obs["wrench"])
        np.testing.assert_array_equal(data.proprio[k], obs["proprio"])
        if k in actions:
            a = actions[k]
            expected = np.array([*(a[:3] * task.max_step), a[3] * task.max_yaw_step], np.float32)
            np.testing.assert_array_equal(data.actions[k], expected)
            assert data.next_index[k] == k + 1
        else:
            assert np.isnan(data.actions[k]).all() and data.next_index[k] == -1
    # episodes of 9 observations; bag 0 ends after 20 (cutting its third episode), bag 1 starts a new one
    assert np.flatnonzero(data.next_index == -1).tolist() == [8, 17, 19, 28, 29]
    assert np.all(np.diff(data.stamps) > 0)

    topics = {topic: msg for topic, _, _, msg in open_bag(paths[0])}
    assert set(topics) == {topic.name for topic in collect.TOPICS}
    assert topics["/camera/image_raw"].header.frame_id == "third_person_camera"
    assert topics["/ft_sensor/wrench"].header.frame_id == "ft_sensor"
    assert topics["/franka/ee_pose"].header.frame_id == "fr3_link0"
    assert list(topics["/joint_states"].name) == list(JOINT_NAMES)


def test_dataset_reads_a_bag_cut_short(tmp_path):
    paths = collect_to_bags(tmp_path / "out", CollectConfig(samples=12, task=TaskConfig(max_episode_steps=5)), False)
    whole = BagDataset(paths, progress=False)
    cut = tmp_path / "cut"
    shutil.copytree(paths[0], cut)
    mcap = cut / "bag_000.mcap"
    os.truncate(mcap, mcap.stat().st_size - 100)  # the summary is lost, every chunk is complete
    data = BagDataset([cut], progress=False)
    for name in dataset.ARRAYS:
        np.testing.assert_array_equal(getattr(data, name), getattr(whole, name))


def test_collect_policies_and_bad_settings(tmp_path):
    with pytest.raises(ConfigError, match="parameter 'policy': 'expert' is not one of random, scripted_noise"):
        collect_to_bags(tmp_path / "a", CollectConfig(policy="expert"), progress=False)
    with pytest.raises(ConfigError, match="parameter 'task.max_step'"):
        collect_to_bags(tmp_path / "b", CollectConfig(task=TaskConfig(max_step=1.0)), progress=False)
    drawer = CollectConfig(samples=3, policy="scripted_noise", task=TaskConfig(name="close_drawer"))
    with pytest.raises(ConfigError, match="task close_drawer has no scripted policy"):
        collect_to_bags(tmp_path / "c", drawer, progress=False)

    config = CollectConfig(samples=6, policy="scripted_noise", action_noise=0.0)
    (path,) = collect_to_bags(tmp_path / "d", config, progress=False)
    data = BagDataset([path], progress=False)
    assert (data.next_index[:5] == np.arange(1, 6)).all()
    assert np.all(np.abs(data.actions[:5]) <= np.float32([0.02, 0.02, 0.02, 0.1]))  # in range, clipped
    with pytest.raises(BagError, match="bag_000 exist already"):
        collect_to_bags(tmp_path / "d", config, progress=False)


def test_collect_records_the_pixel_noise_it_is_asked_for(tmp_path, capsys):
    """``msdp collect --image-noise`` (data for a noise-robust encoder) changes the images and nothing else."""
    data = {}
    for noise in (0, 10):
        out = tmp_path / f"noise_{noise}"
        assert msdp(["collect", "--out", str(out), "--samples", "8", "--image-noise", str(noise)]) == 0
        data[noise] = BagDataset(sorted(out.iterdir()), progress=False)
    clean, noisy = data[0], data[10]
    np.testing.assert_array_equal(noisy.proprio, clean.proprio)
    np.testing.assert_array_equal(noisy.actions, clean.actions)
    difference = noisy.images.astype(float) - clean.images.astype(float)
    assert 8.0 < difference.std() < 11.0  # std 10, a little less where clipped at 0 and 255
    assert msdp(["collect", "--out", str(tmp_path / "bad"), "--samples", "8", "--image-noise", "-1"]) == 2
    assert "parameter 'task.image_noise_std': -1.0 is outside the allowed range" in capsys.readouterr().err
