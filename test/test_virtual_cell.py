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


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
