"""The virtual cell speaks the real devices' protocols: an MJPEG stream over HTTP that OpenCV reads like an IP camera,
and a Net F/T box (RDT over UDP, netftapi2.xml over HTTP) fed by the simulated arm's camera and wrist sensor."""

import socket
import threading
import time
import urllib.request
import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest

from msdp_franka_driver.sim.backend import MujocoArm
from msdp_franka_driver.sim.config import EnvConfig, VirtualCellConfig
from msdp_franka_driver.sim.virtual_cell import RDT_RECORD, RDT_REQUEST, VirtualCell
from ros_harness import free_port


@pytest.fixture
def config() -> VirtualCellConfig:
    return VirtualCellConfig(
        camera_port=free_port(socket.SOCK_STREAM),
        ft_port=free_port(socket.SOCK_DGRAM),
        ft_http_port=free_port(socket.SOCK_STREAM),
        counts_per_force=1000,
        counts_per_torque=2000,
    )


class RdtClient:
    """A requester as the F/T node is one: sends RDT requests, reads 36-byte records."""

    def __init__(self, port: int):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(2.0)
        self.address = ("127.0.0.1", port)

    def request(self, command: int, count: int = 0) -> None:
        self.sock.sendto(RDT_REQUEST.pack(0x1234, command, count), self.address)

    def records(self, n: int) -> list[tuple[int, ...]]:
        return [RDT_RECORD.unpack(self.sock.recv(64)) for _ in range(n)]

    def close(self) -> None:
        self.sock.close()


def test_the_camera_stream_is_read_by_opencv_like_an_ip_camera(config):
    cell = VirtualCell(config)
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[:, :32] = (200, 40, 10)  # left half orange-red, right half black: a picture JPEG keeps
    stop = threading.Event()

    def feed() -> None:
        while not stop.is_set():
            cell.camera(frame)
            time.sleep(0.05)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    capture = cv2.VideoCapture(cell.camera_url, cv2.CAP_FFMPEG)
    try:
        assert capture.isOpened(), f"OpenCV cannot open {cell.camera_url}"
        ok, bgr = capture.read()
        assert ok and bgr.shape == (64, 64, 3)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(float)
        assert np.abs(rgb - frame).mean() < 3.0  # JPEG at quality 95
    finally:
        capture.release()
        stop.set()
        feeder.join()
        cell.close()


def test_the_ft_box_streams_counts_serves_its_calibration_and_biases(config):
    cell = VirtualCell(config)
    client = RdtClient(config.ft_port)
    try:
        xml = urllib.request.urlopen(f"http://127.0.0.1:{config.ft_http_port}/netftapi2.xml", timeout=5).read()
        root = ET.fromstring(xml)
        assert (root.findtext("cfgcpf"), root.findtext("cfgcpt")) == ("1000", "2000")
        assert (root.findtext("scfgfu"), root.findtext("scfgtu")) == ("N", "Nm")

        wrench = np.array([1.5, -2.0, 10.25, 0.1, -0.2, 0.05])
        cell.wrench(wrench)  # before any request: nothing is sent
        client.request(0x0002)  # start real-time streaming, endless
        time.sleep(0.2)
        for _ in range(3):
            cell.wrench(wrench)
        records = client.records(3)
        rdt, ft = [r[0] for r in records], [r[1] for r in records]
        assert rdt == [1, 2, 3] and ft == [2, 3, 4] and all(r[2] == 0 for r in records)  # sequences, status ok
        np.testing.assert_allclose(np.array(records[0][3:]) / np.array([1000] * 3 + [2000] * 3), wrench)

        client.request(0x0042)  # software bias: the wrench of that moment reads zero from then on
        time.sleep(0.2)
        cell.wrench(wrench)
        assert client.records(1)[0][3:] == (0,) * 6
        client.request(0x0000)  # stop
        time.sleep(0.2)
        cell.wrench(wrench)
        with pytest.raises(TimeoutError):
            client.sock.settimeout(0.3)
            client.sock.recv(64)
    finally:
        client.close()
        cell.close()


def test_the_simulated_arm_serves_each_wrist_sample_and_its_camera(config):
    arm = MujocoArm(EnvConfig(), virtual_cell=config, camera_period=0.1)
    client = RdtClient(config.ft_port)
    try:
        arm.start()
        client.request(0x0002, count=5)  # five samples, then the box stops by itself
        time.sleep(0.2)
        arm.advance(0.05)  # 50 ms of simulated time: five 100 Hz samples
        records = client.records(5)
        newest = np.array(records[-1][3:]) / np.array([1000] * 3 + [2000] * 3)
        np.testing.assert_allclose(newest, arm.sim.wrench_window[-1], atol=1e-3)
        assert [r[1] for r in records] == list(range(records[0][1], records[0][1] + 5))  # no sample skipped
        arm.advance(0.01)
        client.sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            client.sock.recv(64)
        number, jpeg = arm.virtual_cell.camera_server.wait_for_frame(after=-1)
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (64, 64, 3) and number >= 0
    finally:
        client.close()
        arm.stop()


def test_a_port_in_use_is_one_clear_error(config):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", config.ft_port))
        with pytest.raises(RuntimeError, match="virtual cell: cannot serve on 127.0.0.1"):
            MujocoArm(EnvConfig(), virtual_cell=config)


@pytest.mark.ros
def test_the_real_sensor_nodes_read_the_virtual_cell_and_the_encoder_sees_every_token(tmp_path, config):
    """Driver (virtual cell) -> MJPEG over HTTP -> camera_node, Net F/T over UDP -> ft_node, then the encoder node:
    every token is present, and each embedding is what the in-process encoder makes of the same messages."""
    import torch
    from geometry_msgs.msg import WrenchStamped
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, JointState

    from msdp.vocabulary import stamp_seconds, wrench_array
    from msdp_perception.checkpoint import save_encoder
    from msdp_perception.encoder import FrozenEncoder, pack_embedding
    from msdp_perception.messages import image_from_msg, proprio_from_joint_state
    from msdp_perception.model import MSDPConfig, MSDPModel
    from msdp_perception.observation import SensorSynchronizer
    from ros_harness import Probe, node_process

    torch.manual_seed(0)
    model = MSDPModel(MSDPConfig(stem_channels=8, width=32, decoder_width=32))
    checkpoint = save_encoder(tmp_path / "encoder", model)
    encoder = FrozenEncoder(model)
    sim = {"use_sim_time": True}
    driver = {"backend": "mujoco", "marker_rate": 0.0, "sim_sensors": "virtual_cell",  # it publishes /clock
              **{f"virtual_cell.{key}": getattr(config, key) for key in ("camera_port", "ft_port", "ft_http_port")},
              "virtual_cell.counts_per_force": config.counts_per_force,
              "virtual_cell.counts_per_torque": config.counts_per_torque}  # fmt: skip
    camera = {"device": f"http://127.0.0.1:{config.camera_port}/stream.mjpg", **sim}
    ft = {"sensor_ip": "127.0.0.1", "port": config.ft_port, "http_port": config.ft_http_port, **sim}
    probe = Probe()
    SENSOR = QoSProfile(depth=500, reliability=ReliabilityPolicy.BEST_EFFORT)  # noqa: N806 (what the sensors offer)
    sync = SensorSynchronizer(model.config.observation_spec)
    embeddings, reasons = [], []
    size = model.config.image_size
    probe.node.create_subscription(
        Image, "/camera/image_raw", lambda m: sync.add_image(stamp_seconds(m.header), image_from_msg(m, size)), SENSOR
    )
    probe.node.create_subscription(
        WrenchStamped, "/ft_sensor/wrench", lambda m: sync.add_wrench(stamp_seconds(m.header), wrench_array(m)), SENSOR
    )

    def on_joints(msg) -> None:
        sync.add_joint_state(stamp_seconds(msg.header), proprio_from_joint_state(msg))

    probe.node.create_subscription(JointState, "/joint_states", on_joints, SENSOR)

    def on_embedding(msg) -> None:
        rows = np.frombuffer(bytes(msg.data), np.float32).reshape(msg.height, msg.width)
        observation = sync.observe(stamp_seconds(msg.header))
        reasons.append(observation.reasons)
        embeddings.append((rows, pack_embedding(encoder.encode(observation)) if observation.complete else None))

    probe.node.create_subscription(Image, "/msdp/embedding", on_embedding, 50)
    logs = {name: tmp_path / f"{name}.log" for name in ("driver", "camera", "ft", "encoder")}
    try:
        with (
            node_process("msdp_franka_driver.driver_node", driver, logs["driver"]),
            node_process("msdp_perception.camera_node", camera, logs["camera"]),
            node_process("msdp_perception.ft_node", ft, logs["ft"]),
            node_process("msdp_perception.encoder_node", {"checkpoint": str(checkpoint), **sim}, logs["encoder"]),
        ):
            # the probe's own subscriptions may match a little later than the encoder's: wait for 10 embeddings
            # that both sides saw complete
            complete = lambda: sum(mine is not None and not np.isnan(rows).any() for rows, mine in embeddings) >= 10  # noqa: E731
            if not probe.spin_until(complete, 90):
                tails = "\n".join(f"--- {name}:\n{path.read_text()[-1500:]}" for name, path in logs.items())
                masked = [np.isnan(rows).any(axis=1).nonzero()[0].tolist() for rows, _ in embeddings[-3:]]
                raise AssertionError(f"no complete embeddings ({len(embeddings)}, masked rows {masked})\n{tails}")
        full = [(rows, mine) for rows, mine in embeddings if not np.isnan(rows).any()]
        compared = [np.abs(rows - mine).max() for rows, mine in full if mine is not None]
        assert len(compared) >= 10 and np.median(compared) < 1e-4, (compared, reasons[-5:])
    finally:
        probe.close()
