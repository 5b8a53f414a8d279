"""Encoder node: sensor topics in, frozen MSDP embeddings out, at a fixed rate.

subscribes  /camera/image_raw (sensor_msgs/Image, any size, rgb8/bgr8/rgba8/bgra8/mono8) or, with
            ``image_transport: compressed``, /camera/image_raw/compressed (sensor_msgs/CompressedImage, jpeg or
            png), /ft_sensor/wrench (geometry_msgs/WrenchStamped), /joint_states (sensor_msgs/JointState)
                                                                           [sensor-data QoS]
publishes   /msdp/embedding (sensor_msgs/Image, 32FC1, reliable): the layout documented in
            ``msdp_perception.encoder`` -- one row per token (NaN row = masked sensor), last row pooled;
            header.stamp = the time the observation describes, frame_id ``msdp_embedding``
            /msdp/reconstruction (sensor_msgs/Image, rgb8): camera frame with the region the model sees outlined |
            encoder input | masked input | decoded, for rviz
            /diagnostics: which sensors are masked and why, encode latency, the image topic, size and ROI
Images go through ``msdp_perception.messages`` (the same preprocessing as bags): the encoder's region of interest
(``roi`` in its sidecar, the whole frame if it has none), then a resize to its input size.
Another camera driver's stream is used by remapping, e.g. a RealSense's
``-r /camera/image_raw:=/camera/camera/color/image_raw``; with ``image_transport: compressed`` the node
subscribes to ``<image topic>/compressed`` of the remapped name, as image_transport does (or remap
/camera/image_raw/compressed itself).
Each tick (``rate``, 10 Hz) assembles the observation with the sync rule of ``msdp_perception.observation``;
a missing, stale or non-finite sensor is masked, reported on /diagnostics and in a throttled warning,
and the embedding keeps flowing from the remaining sensors.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch
from geometry_msgs.msg import WrenchStamped
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from msdp import vocabulary as vocab
from msdp.config import ConfigError, param_range
from msdp.devices import DEVICES
from msdp.node import MsdpNode, ros_message, run_node
from msdp.vocabulary import stamp_seconds
from msdp_perception.checkpoint import CheckpointError, encoder_identity
from msdp_perception.encoder import EncoderInfo, FrozenEncoder, pack_embedding
from msdp_perception.messages import SensorDataError, decode_image, preprocess, proprio_from_joint_state
from msdp_perception.observation import MODALITIES, Observation, SensorSynchronizer, SyncConfig

WRENCH_SOURCES = {"ati": vocab.WRENCH.name, "franka_estimate": vocab.EXTERNAL_WRENCH.name}


@dataclass(frozen=True)
class EncoderNodeConfig:
    checkpoint: str = field(default="", metadata={"doc": "encoder checkpoint (.safetensors with its .json)"})
    rate: float = field(default=10.0, metadata=param_range(0.1, 100.0, "Hz, observations encoded"))
    reconstruction_rate: float = field(default=1.0, metadata=param_range(0.0, 30.0, "Hz, rviz preview; 0 = off"))
    threads: int = field(default=1, metadata=param_range(1, 64, "torch CPU threads (leave cores to other nodes)"))
    device: str = field(default="cpu", metadata={"choices": DEVICES, "doc": "where the encoder runs (auto: a GPU)"})
    image_topic: str = field(default=vocab.IMAGE.name, metadata={"doc": "raw image topic (remapping works too)"})
    image_transport: str = field(
        default="raw", metadata={"choices": ("raw", "compressed"), "doc": "compressed: <image_topic>/compressed"}
    )
    wrench: str = field(
        default="ati",
        metadata={"doc": "the F/T source: ati (/ft_sensor/wrench), franka_estimate (/franka/external_wrench), or "
                  "any WrenchStamped topic"},
    )  # fmt: skip
    joint_topic: str = vocab.JOINT_STATES.name
    sync: SyncConfig = field(default_factory=SyncConfig)

    @property
    def wrench_topic(self) -> str:
        return WRENCH_SOURCES.get(self.wrench, self.wrench)

    def check(self, prefix: str = "") -> None:
        if not self.checkpoint:
            raise ConfigError(f"parameter '{prefix}checkpoint' is required (an encoder from `msdp pretrain`)")
        if not self.wrench_topic.startswith("/"):
            raise ConfigError(
                f"parameter '{prefix}wrench': {self.wrench!r} is not one of {', '.join(WRENCH_SOURCES)} nor a topic "
                "like /my_sensor/wrench"
            )


class EncoderNode(MsdpNode):
    def __init__(self):
        super().__init__("msdp_encoder", EncoderNodeConfig)
        try:
            self.encoder = FrozenEncoder.load(self.config.checkpoint, self.config.device)
        except (CheckpointError, ConfigError):
            super().destroy_node()
            raise
        model = self.encoder.config
        torch.set_num_threads(self.config.threads)
        self.sync = SensorSynchronizer(model.observation_spec, self.config.sync)  # sizes: the checkpoint's
        self.latencies: deque[float] = deque(maxlen=200)
        self.published = 0
        self.masked_reasons: dict[str, str] = {}
        self.last_observation: Observation | None = None
        self.bad_messages: dict[str, str] = {}
        self.camera_frame: np.ndarray | None = None  # the whole frame of the latest image
        self.last_camera_frame: np.ndarray | None = None  # the one last_observation's image was cut from

        c = self.config
        try:
            if c.image_transport == "compressed":  # image_transport's naming, after remapping the raw topic
                suffix = vocab.COMPRESSED_IMAGE.name.removeprefix(vocab.IMAGE.name)
                self.image_topic = self.resolve_topic_name(c.image_topic) + suffix
                self.subscription(vocab.COMPRESSED_IMAGE, self.on_image, self.image_topic)
            else:
                self.image_topic = c.image_topic
                self.subscription(vocab.IMAGE, self.on_image, c.image_topic)
        except Exception as exc:  # rclpy's errors for a malformed name
            super().destroy_node()
            reason = str(exc).split(", at ")[0]
            raise ConfigError(f"parameter 'image_topic': {c.image_topic!r} is not a topic name ({reason})") from None
        self.subscription(vocab.WRENCH, self.on_wrench, c.wrench_topic)
        self.subscription(vocab.JOINT_STATES, self.on_joints, c.joint_topic)
        self.embedding_pub = self.publisher(vocab.EMBEDDING)
        info = EncoderInfo(encoder_identity(c.checkpoint), c.checkpoint, model.n_tokens, model.width)
        self.info_pub = self.publisher(vocab.ENCODER_INFO)
        self.info_pub.publish(String(data=info.to_json()))
        self.reconstruction_pub = self.publisher(vocab.RECONSTRUCTION)
        self.create_timer(1.0 / c.rate, self.on_tick)
        if c.reconstruction_rate > 0:
            self.create_timer(1.0 / c.reconstruction_rate, self.on_reconstruction)
        self.create_timer(1.0, self.on_diagnostics)
        self.get_logger().info(
            f"encoder up: {c.checkpoint}, {model.n_tokens} tokens x {model.width}, {c.rate} Hz; images from "
            f"{self.resolve_topic_name(self.image_topic)} ({c.image_transport}), ROI {list(model.roi)}"
        )

    # -- sensor callbacks: decode, or remember why a message was refused ----------------------------
    def _decode(self, topic: str, decode) -> None:
        try:
            decode()
            self.bad_messages.pop(topic, None)
        except SensorDataError as exc:
            self.bad_messages[topic] = str(exc)
            self.get_logger().warning(f"{topic}: {exc}", throttle_duration_sec=5.0)

    def on_image(self, msg) -> None:
        """A sensor_msgs/Image or CompressedImage: the whole frame is kept for the reconstruction panel."""
        spec = self.sync.spec

        def decode() -> None:
            frame = decode_image(msg)
            self.sync.add_image(stamp_seconds(msg.header), preprocess(frame, spec.image_size, spec.roi))
            self.camera_frame = frame

        self._decode(self.image_topic, decode)

    def on_wrench(self, msg: WrenchStamped) -> None:
        self._decode(
            self.config.wrench_topic, lambda: self.sync.add_wrench(stamp_seconds(msg.header), vocab.wrench_array(msg))
        )

    def on_joints(self, msg: JointState) -> None:
        self._decode(
            self.config.joint_topic,
            lambda: self.sync.add_joint_state(stamp_seconds(msg.header), proprio_from_joint_state(msg)),
        )

    # -- the fixed-rate tick ------------------------------------------------------------------------
    def on_tick(self) -> None:
        now = self.get_clock().now()
        observation = self.sync.observe(now.nanoseconds * 1e-9)
        self.masked_reasons = observation.reasons
        if observation.reasons:
            hint = next(filter(None, (self.clock_hint(stamp) for stamp in self.sync.latest_stamps())), "")
            if hint:
                self.masked_reasons = {m: f"{r}; {hint}" for m, r in observation.reasons.items()}
            detail = "; ".join(f"{m}: {r}" for m, r in self.masked_reasons.items())
            self.get_logger().warning(f"masking {detail}", throttle_duration_sec=5.0)
        if not any(observation.present.values()):
            return
        started = time.perf_counter()
        rows = pack_embedding(self.encoder.encode(observation))
        self.latencies.append(time.perf_counter() - started)
        self.embedding_pub.publish(vocab.image_msg(ros_message, now.nanoseconds, rows, "32FC1", vocab.EMBEDDING_FRAME))
        self.published += 1
        self.last_observation = observation
        if observation.present["vision"]:  # its image is the latest one (the synchroniser keeps no other)
            self.last_camera_frame = self.camera_frame

    def on_reconstruction(self) -> None:
        observation = self.last_observation
        if observation is None or not observation.present["vision"]:
            return
        panel = self.encoder.reconstruction_panel(observation, seed=self.published, camera=self.last_camera_frame)
        self.reconstruction_pub.publish(
            vocab.image_msg(ros_message, self.now_ns(), panel, "rgb8", vocab.EMBEDDING_FRAME)
        )

    def on_diagnostics(self) -> None:
        problems = {**{m: f"masked ({r})" for m, r in self.masked_reasons.items()}, **self.bad_messages}
        message = "; ".join(f"{k}: {v}" for k, v in problems.items()) or "all sensors present"
        latency = np.array(self.latencies) * 1e3 if self.latencies else np.zeros(1)
        frame = self.camera_frame
        values = {
            **{f"{m}_masked": str(m in self.masked_reasons) for m in MODALITIES},
            "embeddings_published": str(self.published),
            "encode_ms_p50": f"{np.percentile(latency, 50):.2f}",
            "encode_ms_p99": f"{np.percentile(latency, 99):.2f}",
            "image_topic": f"{self.resolve_topic_name(self.image_topic)} ({self.config.image_transport})",
            "camera_frame": "none yet" if frame is None else f"{frame.shape[1]}x{frame.shape[0]}",
            "roi": str(list(self.sync.spec.roi)),
        }
        self.publish_diagnostics("sensors", "warn" if problems else "ok", message, values)


def main(argv: list[str] | None = None) -> int:
    return run_node("msdp_encoder", EncoderNode, argv, startup_errors=(CheckpointError,))


if __name__ == "__main__":
    sys.exit(main())
