"""Recorder node: live ROS topics into a rosbag2 folder (MCAP by default), the bytes exactly as received.

Each configured topic is subscribed ``raw`` (serialized CDR, written as-is: no decode and re-encode) once a
publisher for it shows up in the graph; the graph is re-checked every ``discovery_period`` so topics that
appear later are picked up. The subscription takes its reliability from the publishers (best effort if any
of them is, as the sensor-data profile is, otherwise reliable), so it matches every publisher.
The bag timestamp is the receive time on the node clock: simulated time with ``use_sim_time``.
SIGINT and SIGTERM close the bag (metadata.yaml); after a SIGKILL the writer's periodic flush leaves it
readable up to the last flush (``recover_bag``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from rclpy.clock import Clock, ClockType
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.topic_endpoint_info import TopicEndpointInfo

from msdp import vocabulary as vocab
from msdp.config import ConfigError, param_range
from msdp.node import MsdpNode, message_class, run_node
from msdp_perception.bags import BagError, BagWriter

DEFAULT_TOPICS = tuple(topic.name for topic in vocab.RECORDED)
QUEUE_DEPTH = 100  # messages per topic held between executor turns; a burst beyond it is dropped


@dataclass(frozen=True)
class RecorderConfig:
    """Recorder node parameters; ``config/recorder.yaml`` holds the same names."""

    output: str = field(default="", metadata={"doc": "new bag folder (must not exist); empty = bags/<date-time>"})
    storage: str = field(default="mcap", metadata={"choices": ("mcap", "sqlite3")})
    topics: str = field(default=",".join(DEFAULT_TOPICS), metadata={"doc": "comma-separated absolute topic names"})
    flush_period: float = field(default=1.0, metadata=param_range(0.05, 60.0, "s between flushes to disk"))
    discovery_period: float = field(default=0.5, metadata=param_range(0.05, 60.0, "s between graph checks"))

    def topic_list(self) -> list[str]:
        return list(dict.fromkeys(t.strip() for t in self.topics.split(",") if t.strip()))

    def check(self, prefix: str = "") -> None:
        names = self.topic_list()
        if not names:
            raise ConfigError(f"parameter '{prefix}topics': no topic names in {self.topics!r}")
        for name in names:
            if not name.startswith("/") or " " in name:
                raise ConfigError(f"parameter '{prefix}topics': {name!r} is not an absolute topic name like /a/b")

    def output_path(self) -> Path:
        return Path(self.output) if self.output else Path("bags") / datetime.now().strftime("%Y%m%d-%H%M%S")


def matching_qos(publishers: list[TopicEndpointInfo]) -> QoSProfile:
    """A subscription QoS every publisher matches: a reliable reader does not match a best-effort writer, a
    transient-local reader (which also gets a latched topic's last message, e.g. /msdp/task_goal) only matches
    transient-local writers."""
    best_effort = any(p.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for p in publishers)
    reliability = ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE
    latched = all(p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in publishers)
    durability = DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE
    return QoSProfile(depth=QUEUE_DEPTH, reliability=reliability, durability=durability)


class RecorderNode(MsdpNode):
    def __init__(self):
        super().__init__("recorder", RecorderConfig)
        try:
            self.path = self.config.output_path()
            if self.path.exists():
                raise ConfigError(f"parameter 'output': {self.path} already exists; a recording needs a new folder")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = BagWriter(self.path, storage=self.config.storage, flush_period=self.config.flush_period)
        except (ConfigError, BagError, OSError):
            super().destroy_node()
            raise
        self.wanted = self.config.topic_list()
        self.types: dict[str, str] = {}  # topic -> message type, once subscribed
        self.counts = dict.fromkeys(self.wanted, 0)
        self.skipped: set[str] = set()  # topics whose type cannot be subscribed here (warned once)
        # A steady timer: with use_sim_time, discovery must not wait for the simulated clock to advance.
        self.create_timer(self.config.discovery_period, self.discover, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(f"recording {', '.join(self.wanted)} into {self.path} ({self.config.storage})")

    def discover(self) -> None:
        """Subscribe to every wanted topic that now has a publisher."""
        if self.get_clock().now().nanoseconds == 0:  # use_sim_time and no /clock yet: no timestamps to give
            self.get_logger().info("waiting for /clock (use_sim_time is set)", throttle_duration_sec=5.0)
            return
        graph = dict(self.get_topic_names_and_types())
        for topic in self.wanted:
            if topic in self.types or topic in self.skipped or not graph.get(topic):
                continue
            publishers = self.get_publishers_info_by_topic(topic)
            if not publishers:
                continue
            msgtype = graph[topic][0]
            if len(graph[topic]) > 1:
                self.get_logger().warning(f"{topic} is published with several types {graph[topic]}; using {msgtype}")
            try:
                cls = message_class(msgtype)
                self.writer.add_topic(topic, msgtype)
            except (ImportError, BagError) as exc:
                self.get_logger().error(f"cannot record {topic}: {exc}")
                self.skipped.add(topic)
                continue
            qos = matching_qos(publishers)
            self.create_subscription(cls, topic, lambda data, t=topic: self.on_message(t, data), qos, raw=True)
            self.types[topic] = msgtype
            self.get_logger().info(f"recording {topic} ({msgtype}, {qos.reliability.name.lower()})")

    def on_message(self, topic: str, data: bytes) -> None:
        self.writer.write_raw(topic, self.get_clock().now().nanoseconds, data)
        self.counts[topic] += 1

    def destroy_node(self) -> None:
        """Close the bag (writes metadata.yaml) and log what was recorded."""
        self.writer.close()
        summary = ", ".join(f"{topic}: {self.counts[topic]}" for topic in self.wanted if self.counts[topic])
        self.get_logger().info(f"bag {self.path} closed: {self.writer.message_count} messages ({summary or 'none'})")
        missing = [topic for topic in self.wanted if not self.counts[topic]]
        if missing:
            self.get_logger().warning(f"no messages recorded on {', '.join(missing)}")
        super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    return run_node("recorder", RecorderNode, argv, startup_errors=(BagError, OSError))


if __name__ == "__main__":
    sys.exit(main())
