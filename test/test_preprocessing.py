"""The one image preprocessing of bags and live topics: decode (raw encodings, jpeg and png), region of interest,
resize; what it was before the ROI existed stays byte for byte; the ROI travels with the encoder."""

import dataclasses
import hashlib
import json

import cv2
import numpy as np
import pytest
import torch
import yaml

from msdp.cli import apply_overrides, parse_override
from msdp.config import ConfigError, from_dict
from msdp.specs import FULL_FRAME, ObservationSpec
from msdp.vocabulary import JOINT_NAMES
from msdp_perception import dataset
from msdp_perception.bags import TYPESTORE, BagWriter
from msdp_perception.checkpoint import load_encoder, save_encoder
from msdp_perception.dataset import BagDataset, BagTopics
from msdp_perception.encoder import PANEL_HEIGHT, FrozenEncoder
from msdp_perception.messages import SensorDataError, decode_image, image_from_msg, preprocess, roi_box
from msdp_perception.model import MSDPConfig, MSDPModel
from msdp_perception.observation import Observation, SyncConfig
from msdp_perception.pretrain import PretrainConfig
from package_files import ROOT

T = TYPESTORE.types
SMALL = MSDPConfig(stem_channels=8, width=32, decoder_width=32)
MS = 1_000_000
START = 1_000 * MS


def scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth RGB scene with some detail: gradients plus a few blocks (jpeg keeps it within a few levels)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([255 * x / width, 255 * y / height, 128 + 100 * np.sin((x + y) / 23.0)], axis=-1)
    rng = np.random.default_rng(seed)
    for _ in range(6):
        y0, x0 = rng.integers(0, height - height // 5), rng.integers(0, width - width // 5)
        image[y0 : y0 + height // 6, x0 : x0 + width // 6] = rng.integers(0, 256, 3)
    return image.clip(0, 255).astype(np.uint8)


def header(stamp_ns: int = START):
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id="")


def raw_msg(rgb: np.ndarray, encoding: str, pad: int = 0, stamp_ns: int = START):
    """rgb as a sensor_msgs/Image in ``encoding``, each row padded with ``pad`` bytes."""
    converted = {
        "rgb8": rgb,
        "bgr8": rgb[:, :, ::-1],
        "rgba8": np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)]),
        "bgra8": np.dstack([rgb[:, :, ::-1], np.full(rgb.shape[:2], 7, np.uint8)]),
        "mono8": rgb[:, :, 0],
    }[encoding]
    height, width = rgb.shape[:2]
    rows = np.ascontiguousarray(converted).reshape(height, -1)
    rows = np.hstack([rows, np.full((height, pad), 99, np.uint8)])
    return T["sensor_msgs/msg/Image"](
        header=header(stamp_ns), height=height, width=width, encoding=encoding, is_bigendian=0,
        step=rows.shape[1], data=rows.reshape(-1),
    )  # fmt: skip


def compressed_msg(rgb: np.ndarray, kind: str, fmt: str | None = None, stamp_ns: int = START):
    ok, data = cv2.imencode(f".{kind}", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95] if kind == "jpeg" else [])
    assert ok
    return T["sensor_msgs/msg/CompressedImage"](header=header(stamp_ns), format=fmt or kind, data=data.reshape(-1))


def legacy_image_from_msg(msg, size: int) -> np.ndarray:
    """image_from_msg as it was before the ROI (commit 48829ec): the reference for byte-identical decoding."""
    encodings = {"rgb8": (3, None), "bgr8": (3, cv2.COLOR_BGR2RGB), "rgba8": (4, cv2.COLOR_RGBA2RGB),
                 "bgra8": (4, cv2.COLOR_BGRA2RGB), "mono8": (1, cv2.COLOR_GRAY2RGB)}  # fmt: skip
    channels, conversion = encodings[msg.encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, np.ndarray) else msg.data, dtype=np.uint8)
    image = data[: step * height].reshape(height, step)[:, : width * channels].reshape(height, width, channels)
    if conversion is not None:
        image = cv2.cvtColor(np.ascontiguousarray(image), conversion)
    if (height, width) != (size, size):
        assert height == width
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)


ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize(("side", "pad"), [(64, 0), (64, 5), (100, 0), (128, 3)])
def test_the_default_roi_on_a_square_image_is_byte_identical_to_the_old_path(encoding, side, pad):
    msg = raw_msg(scene(side, side), encoding, pad)
    new = image_from_msg(msg, 64)
    assert new.dtype == np.uint8 and new.shape == (64, 64, 3)
    assert new.tobytes() == legacy_image_from_msg(msg, 64).tobytes()
    assert image_from_msg(msg, 64, FULL_FRAME).tobytes() == new.tobytes()


def test_every_encoding_and_compression_gives_the_same_pixels():
    rgb = scene(480, 640)
    gray = np.repeat(rgb[:, :, :1], 3, axis=2)  # what mono8 carries
    for encoding in ENCODINGS:
        expected = gray if encoding == "mono8" else rgb
        np.testing.assert_array_equal(decode_image(raw_msg(rgb, encoding, pad=2)), expected, err_msg=encoding)
    for fmt in ("png", "PNG", "rgb8; png compressed bgr8"):
        np.testing.assert_array_equal(decode_image(compressed_msg(rgb, "png", fmt)), rgb, err_msg=fmt)
    for fmt in ("jpeg", "jpg", "bgr8; jpeg compressed bgr8"):
        decoded = decode_image(compressed_msg(rgb, "jpeg", fmt)).astype(float)
        assert decoded.shape == rgb.shape and np.abs(decoded - rgb).mean() < 2.0, fmt  # codec loss only
    # the model's input from each: png exactly the raw image's, jpeg within the codec's loss
    raw = image_from_msg(raw_msg(rgb, "rgb8"), 64, (0.1, 0.2, 0.7, 0.9))
    np.testing.assert_array_equal(image_from_msg(compressed_msg(rgb, "png"), 64, (0.1, 0.2, 0.7, 0.9)), raw)
    jpeg = image_from_msg(compressed_msg(rgb, "jpeg"), 64, (0.1, 0.2, 0.7, 0.9)).astype(float)
    assert np.abs(jpeg - raw).mean() < 1.5


def test_rclpy_messages_decode_like_rosbags_messages():
    from sensor_msgs.msg import CompressedImage, Image

    rgb = scene(48, 64)
    bag_raw, bag_png = raw_msg(rgb, "bgr8", pad=4), compressed_msg(rgb, "png")
    live_raw = Image(height=48, width=64, encoding="bgr8", step=bag_raw.step, data=bag_raw.data.tobytes())
    live_png = CompressedImage(format="png", data=bag_png.data.tobytes())
    for bag, live in ((bag_raw, live_raw), (bag_png, live_png)):
        np.testing.assert_array_equal(image_from_msg(live, 32, (0, 0, 0.5, 1)), image_from_msg(bag, 32, (0, 0, 0.5, 1)))


def test_a_non_square_frame_with_an_roi_is_cut_to_the_centred_square_and_resized():
    rgb = scene(480, 640)
    msg = raw_msg(rgb, "bgr8")
    # the whole 640x480 frame: its centred 480x480 square
    assert roi_box(640, 480) == (80, 0, 560, 480)
    expected = cv2.resize(rgb[:, 80:560], (64, 64), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(image_from_msg(msg, 64), expected)
    # a 320x384 ROI: its centred 320x320 square
    roi = (0.25, 0.1, 0.75, 0.9)
    assert roi_box(640, 480, roi) == (160, 80, 480, 400)
    expected = cv2.resize(rgb[80:400, 160:480], (64, 64), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(image_from_msg(msg, 64, roi), expected)
    # a square ROI of the model's size is not resized at all
    np.testing.assert_array_equal(image_from_msg(msg, 64, (0.5, 0.5, 0.6, 64 / 480 + 0.5)), rgb[240:304, 320:384])
    # the smallest region is one pixel
    assert roi_box(640, 480, (0.0, 0.0, 1e-6, 1e-6)) == (0, 0, 1, 1)
    assert preprocess(rgb, 16, (0.999, 0.999, 1.0, 1.0)).shape == (16, 16, 3)


def test_what_cannot_be_decoded_is_refused_with_the_reason():
    rgb = scene(32, 32)
    with pytest.raises(SensorDataError, match="'16UC1' is not supported"):
        image_from_msg(dataclasses.replace(raw_msg(rgb, "rgb8"), encoding="16UC1"), 64)
    with pytest.raises(SensorDataError, match="needs 3072 bytes"):
        image_from_msg(dataclasses.replace(raw_msg(rgb, "rgb8"), data=np.zeros(100, np.uint8)), 64)
    with pytest.raises(SensorDataError, match="compressedDepth png' is not supported"):
        image_from_msg(compressed_msg(rgb, "png", "16UC1; compressedDepth png"), 64)
    with pytest.raises(SensorDataError, match="'tiff' is not supported"):
        image_from_msg(compressed_msg(rgb, "png", "tiff"), 64)
    with pytest.raises(SensorDataError, match=r"compressed image \(jpeg, 4 bytes\) cannot be decoded"):
        image_from_msg(dataclasses.replace(compressed_msg(rgb, "jpeg"), data=np.arange(4, dtype=np.uint8)), 64)
    with pytest.raises(SensorDataError, match="region of interest"):
        image_from_msg(raw_msg(rgb, "rgb8"), 64, (0.5, 0.0, 0.5, 1.0))


def test_the_roi_is_a_validated_model_setting():
    config = yaml.safe_load((ROOT / "config" / "pretrain.yaml").read_text())
    override = parse_override("model.roi=[0.1, 0, 0.9, 1]")
    pretrain = from_dict(PretrainConfig, apply_overrides(config, [override]))
    assert pretrain.model.roi == (0.1, 0.0, 0.9, 1.0)
    assert pretrain.model.observation_spec == ObservationSpec(roi=(0.1, 0.0, 0.9, 1.0))
    assert from_dict(PretrainConfig, yaml.safe_load((ROOT / "config" / "pretrain.yaml").read_text())).model.roi == (
        FULL_FRAME
    )
    with pytest.raises(ConfigError, match=r"parameter 'model.roi': \[0.9, 0.0, 0.1, 1.0\] is not a region"):
        from_dict(PretrainConfig, {"model": {"roi": [0.9, 0, 0.1, 1]}})
    with pytest.raises(ConfigError, match=r"parameter 'roi\[3\]': 1.5 is outside the allowed range \[0.0, 1.0\]"):
        from_dict(ObservationSpec, {"roi": [0, 0, 1, 1.5]})
    with pytest.raises(ConfigError, match="parameter 'roi': expected a list of 4 numbers"):
        from_dict(MSDPConfig, {"roi": [0, 0, 1]})


def test_the_roi_round_trips_through_an_encoder_checkpoint_and_an_old_sidecar_means_the_whole_frame(tmp_path):
    roi = (0.125, 0.0, 0.875, 1.0)
    torch.manual_seed(0)
    path = save_encoder(tmp_path / "encoder", MSDPModel(dataclasses.replace(SMALL, roi=roi)))
    model, sidecar = load_encoder(path)
    assert model.config.roi == roi and model.config.observation_spec.roi == roi
    assert sidecar["config"]["roi"] == list(roi) and sidecar["observation_spec"]["roi"] == list(roi)

    # an encoder saved before the ROI existed: no roi anywhere in its sidecar
    old = json.loads(path.with_suffix(".json").read_text())
    del old["config"]["roi"], old["observation_spec"]["roi"]
    path.with_suffix(".json").write_text(json.dumps(old))
    model, _ = load_encoder(path)
    assert model.config.roi == FULL_FRAME
    assert model.config.observation_spec == ObservationSpec(image_size=64, ft_window=4, joints=7)


def write_bag(path, images: list, topic: str = "/camera/image_raw") -> None:
    """Images (messages) 100 ms apart with 100 Hz wrenches and joint states around them."""
    vector = T["geometry_msgs/msg/Vector3"]
    with BagWriter(path) as writer:
        writer.add_topic(topic, images[0].__msgtype__)
        writer.add_topic("/ft_sensor/wrench", "geometry_msgs/msg/WrenchStamped")
        writer.add_topic("/joint_states", "sensor_msgs/msg/JointState")
        for ms in range(-50, 100 * len(images), 10):
            stamp = START + ms * MS
            wrench = T["geometry_msgs/msg/Wrench"](force=vector(x=1.0, y=2.0, z=3.0), torque=vector(x=0, y=0, z=0))
            writer.write(
                "/ft_sensor/wrench", stamp, T["geometry_msgs/msg/WrenchStamped"](header=header(stamp), wrench=wrench)
            )
            q = np.zeros(7)
            joints = T["sensor_msgs/msg/JointState"](
                header=header(stamp), name=list(JOINT_NAMES), position=q, velocity=q, effort=np.zeros(0)
            )
            writer.write("/joint_states", stamp, joints)
        for k, msg in enumerate(images):
            writer.write(topic, START + 100 * k * MS, msg)


def test_a_bag_of_compressed_images_decodes_with_the_encoders_roi(tmp_path):
    frames = [scene(480, 640, seed=k) for k in range(3)]
    stamps = [START + 100 * k * MS for k in range(3)]
    write_bag(tmp_path / "png", [compressed_msg(f, "png", stamp_ns=s) for f, s in zip(frames, stamps, strict=True)])
    roi = (0.2, 0.1, 0.8, 0.9)
    spec = ObservationSpec(roi=roi)
    data = BagDataset([tmp_path / "png"], spec=spec, progress=False)
    assert len(data) == 3 and data.present.all()
    for k, frame in enumerate(frames):
        np.testing.assert_array_equal(data.images[k], preprocess(frame, 64, roi))
    # image_transport's name: a bag with only <image topic>/compressed is read from it
    jpegs = [compressed_msg(f, "jpeg", "rgb8; jpeg compressed bgr8", s) for f, s in zip(frames, stamps, strict=True)]
    write_bag(tmp_path / "jpeg", jpegs, topic="/camera/image_raw/compressed")
    data = BagDataset([tmp_path / "jpeg"], progress=False)
    assert len(data) == 3
    for k, frame in enumerate(frames):
        assert np.abs(data.images[k].astype(float) - preprocess(frame, 64)).mean() < 1.5


def test_a_caches_name_changes_with_the_roi_only_when_there_is_one(tmp_path):
    write_bag(tmp_path / "bag", [raw_msg(scene(64, 64), "rgb8")])
    path, sync, topics = tmp_path / "bag", SyncConfig(), BagTopics()
    files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_file())
    rule = {"image_size": 64, "ft_window": 4, **dataclasses.asdict(sync)}  # the key before the ROI existed
    key = json.dumps([dataset.CACHE_VERSION, str(path.resolve()), files, rule, dataclasses.asdict(topics)])
    before = tmp_path / f"bag-{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz"
    assert dataset._cache_file(tmp_path, path, ObservationSpec(), sync, topics) == before
    assert dataset._cache_file(tmp_path, path, ObservationSpec(roi=(0, 0, 0.5, 0.5)), sync, topics) != before


def test_the_reconstruction_panel_shows_the_camera_frame_with_the_roi():
    roi = (0.25, 0.1, 0.75, 0.9)
    torch.manual_seed(0)
    encoder = FrozenEncoder(MSDPModel(dataclasses.replace(SMALL, roi=roi)))
    frame = np.zeros((480, 640, 3), np.uint8)
    observation = Observation(
        0.0, preprocess(frame, 64, roi), np.zeros((4, 6), np.float32), np.zeros(14, np.float32),
        {"vision": True, "ft": False, "proprio": False},
    )  # fmt: skip
    assert encoder.reconstruction_panel(observation).shape == (64, 192, 3)  # without the frame: as before
    panel = encoder.reconstruction_panel(observation, camera=frame)
    view_width = round(640 * PANEL_HEIGHT / 480)
    assert panel.shape == (PANEL_HEIGHT, view_width + 3 * PANEL_HEIGHT, 3) and panel.dtype == np.uint8
    view = panel[:, :view_width]
    scale = PANEL_HEIGHT / 480
    # the square the model sees (160..480 x 80..400) in green, the configured ROI (y 48..432) in yellow
    assert tuple(view[int(240 * scale), int(160 * scale)]) == (0, 255, 0)
    assert tuple(view[int(80 * scale), int(320 * scale)]) == (0, 255, 0)
    assert tuple(view[int(48 * scale), int(320 * scale)]) == (255, 220, 0)
    assert tuple(view[int(240 * scale), int(320 * scale)]) == (0, 0, 0)
    # the model's input, scaled up without interpolation
    np.testing.assert_array_equal(panel[::4, view_width : view_width + PANEL_HEIGHT : 4], observation.image)
