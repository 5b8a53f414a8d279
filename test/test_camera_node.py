"""The camera node over real DDS with real capture: a video file written with cv2.VideoWriter and an MJPEG stream
served over HTTP on 127.0.0.1 by this test (multipart/x-mixed-replace, read by OpenCV's FFmpeg backend).

Each frame carries its number in its colour, so the test knows which frame every message holds. A node publishes
whether anyone listens, and discovery between two processes can take 3 s here: the files play long enough.
"""

from __future__ import annotations

import http.server
import os
import signal
import socketserver
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from msdp.vocabulary import stamp_nanoseconds
from ros_harness import Probe, node_process

pytestmark = pytest.mark.ros

WIDTH, HEIGHT = 160, 120


def frame(k: int) -> np.ndarray:
    """Frame ``k`` (< 3600): the grey levels of the right half's top and bottom count it in steps of 4."""
    image = np.full((HEIGHT, WIDTH, 3), 128, np.uint8)
    image[: HEIGHT // 2, WIDTH // 2 :] = 10 + 4 * (k % 60)
    image[HEIGHT // 2 :, WIDTH // 2 :] = 10 + 4 * (k // 60)
    image[:, : WIDTH // 4, 0] = 200  # so a channel swap shows
    return image


def frame_number(image: np.ndarray) -> int:
    ones = image[8 : HEIGHT // 2 - 8, WIDTH // 2 + 8 :].mean()
    sixties = image[HEIGHT // 2 + 8 :, WIDTH // 2 + 8 :].mean()
    return round((ones - 10) / 4) + 60 * round((sixties - 10) / 4)


def write_video(path, frames: int, fps: float = 30.0):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for k in range(frames):
        writer.write(frame(k)[:, :, ::-1])
    writer.release()
    capture = cv2.VideoCapture(str(path))
    decoded = []
    while (read := capture.read())[0]:
        decoded.append(cv2.cvtColor(read[1], cv2.COLOR_BGR2RGB))
    assert len(decoded) == frames
    return decoded  # what OpenCV decodes from the file: the node must publish exactly these pixels


def image_array(msg: Image) -> np.ndarray:
    return (
        np.frombuffer(bytes(msg.data), np.uint8)
        .reshape(msg.height, msg.step)[:, : msg.width * 3]
        .reshape(msg.height, msg.width, 3)
    )


class Listener:
    """Images, camera infos and the camera's diagnostics, with the wall time each image arrived."""

    def __init__(self, probe: Probe):
        self.images: list[tuple[int, Image]] = []
        self.infos: list[CameraInfo] = []
        self.statuses: list = []
        node = probe.node
        node.create_subscription(Image, "/camera/image_raw", self.on_image, qos_profile_sensor_data)
        node.create_subscription(CameraInfo, "/camera/camera_info", self.infos.append, qos_profile_sensor_data)
        node.create_subscription(DiagnosticArray, "/diagnostics", self.on_diagnostics, 10)

    def on_image(self, msg: Image) -> None:
        self.images.append((time.time_ns(), msg))

    def on_diagnostics(self, msg: DiagnosticArray) -> None:
        self.statuses += [s for s in msg.status if s.name.startswith("camera")]

    def values(self) -> dict[str, str]:
        return {kv.key: kv.value for kv in self.statuses[-1].values} if self.statuses else {}

    def figures(self, what: str) -> str:
        """Frame rate and capture-to-arrival latency (the node's clock is wall time here, like the probe's)."""
        arrivals = np.array([t for t, _ in self.images], np.int64)
        stamps = np.array([stamp_nanoseconds(m.header) for _, m in self.images], np.int64)
        p50, p99 = np.percentile((arrivals - stamps) / 1e6, [50, 99])
        rate = (len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1e9)
        first = self.images[0][1]
        line = (
            f"{what}: {len(stamps)} frames {first.width}x{first.height} at {rate:.1f} Hz, "
            f"capture-to-arrival latency p50 {p50:.1f} ms, p99 {p99:.1f} ms"
        )
        print(line)
        return line


CALIBRATION = f"""image_width: {WIDTH}
image_height: {HEIGHT}
camera_name: test_cam
camera_matrix:
  rows: 3
  cols: 3
  data: [100.0, 0.0, 80.0, 0.0, 101.0, 60.0, 0.0, 0.0, 1.0]
distortion_model: plumb_bob
distortion_coefficients:
  rows: 1
  cols: 5
  data: [0.1, -0.2, 0.001, 0.002, 0.0]
rectification_matrix:
  rows: 3
  cols: 3
  data: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
projection_matrix:
  rows: 3
  cols: 4
  data: [100.0, 0.0, 80.0, 0.0, 0.0, 101.0, 60.0, 0.0, 0.0, 0.0, 1.0, 0.0]
"""


@pytest.mark.slow  # make test-slow: the file source; the stream sources run in make test
def test_a_video_file_plays_once_with_its_calibration_and_the_node_exits_0(tmp_path):
    decoded = write_video(tmp_path / "clip.avi", 200)
    (tmp_path / "calibration.yaml").write_text(CALIBRATION)
    probe = Probe()
    listener = Listener(probe)
    params = {"device": tmp_path / "clip.avi", "fps": 50.0, "calibration": tmp_path / "calibration.yaml"}
    try:
        with node_process("msdp_perception.camera_node", params, tmp_path / "camera.log") as node:
            ended = probe.spin_until(lambda: node.poll() is not None, 30.0)
            probe.spin_for(0.3)
            log = (tmp_path / "camera.log").read_text()
            assert ended and node.returncode == 0, log
        assert "end of video file" in log
        numbers = [frame_number(image_array(m)) for _, m in listener.images]
        # from the first frame after discovery to the last, in order (best effort: a loaded machine may lose one)
        assert numbers == sorted(set(numbers)) and numbers[-1] == 199, numbers
        assert len(numbers) >= 50 and len(numbers) >= 200 - numbers[0] - 3, numbers
        for _, msg in listener.images:
            assert (msg.encoding, msg.width, msg.height, msg.header.frame_id) == (
                "rgb8",
                WIDTH,
                HEIGHT,
                "third_person_camera",
            )
            np.testing.assert_array_equal(image_array(msg), decoded[frame_number(image_array(msg))])
        stamps = [stamp_nanoseconds(m.header) for _, m in listener.images]
        period = np.diff(stamps).mean() / 1e9
        assert 0.016 < period < 0.024, period  # played at 50 Hz, not as fast as it decodes
        info = listener.infos[-1]
        assert len({stamp_nanoseconds(i.header) for i in listener.infos} & set(stamps)) >= len(stamps) - 3
        assert (info.width, info.height, info.distortion_model) == (WIDTH, HEIGHT, "plumb_bob")
        assert list(info.k) == [100.0, 0.0, 80.0, 0.0, 101.0, 60.0, 0.0, 0.0, 1.0]
        assert list(info.d) == [0.1, -0.2, 0.001, 0.002, 0.0] and info.p[2] == 80.0 and info.r[8] == 1.0
        listener.figures("video file")
    finally:
        probe.close()


def test_a_looping_video_file_starts_again(tmp_path):
    write_video(tmp_path / "short.avi", 8)
    probe = Probe()
    listener = Listener(probe)
    params = {"device": tmp_path / "short.avi", "loop": True, "fps": 50.0}
    try:
        with node_process("msdp_perception.camera_node", params, tmp_path / "camera.log") as node:
            assert probe.spin_until(lambda: len(listener.images) >= 30, 20.0), (tmp_path / "camera.log").read_text()
            assert node.poll() is None
            numbers = [frame_number(image_array(m)) for _, m in listener.images]
            wraps = sum(1 for a, b in zip(numbers, numbers[1:], strict=False) if b < a)
            assert wraps >= 2 and set(numbers) <= set(range(8)), numbers
            assert probe.spin_until(lambda: listener.values().get("state") == "streaming", 3.0)
            assert int(listener.values()["opened"]) >= 3 and listener.values()["read_failures"] == "0"
            os.killpg(node.pid, signal.SIGINT)
            assert node.wait(10) == 0
    finally:
        probe.close()


# -- an MJPEG stream over HTTP ---------------------------------------------------------------------------------
class MjpegServer:
    """multipart/x-mixed-replace with one JPEG part per frame, at ``fps``, on 127.0.0.1; ``stop`` closes every
    connection (a camera server going away), ``start`` serves again on the same port."""

    def __init__(self, fps: float = 30.0):
        self.fps, self.port, self.sent = fps, 0, 0
        self.serving = threading.Event()
        self.server: socketserver.ThreadingTCPServer | None = None

    def start(self) -> MjpegServer:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                while outer.serving.is_set():
                    ok, jpeg = cv2.imencode(".jpg", frame(outer.sent)[:, :, ::-1])
                    part = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % jpeg.size
                    try:
                        self.wfile.write(part + jpeg.tobytes() + b"\r\n")
                    except OSError:
                        return
                    outer.sent += 1
                    time.sleep(1.0 / outer.fps)

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        self.serving.set()
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if not self.serving.is_set():
            return
        self.serving.clear()
        self.server.shutdown()
        self.server.server_close()  # waits for the handlers, which close their connections

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"


def ffmpeg_reads_mjpeg_over_http() -> bool:
    return "FFMPEG:" in cv2.getBuildInformation() and any(
        line.strip().startswith("FFMPEG:") and "YES" in line for line in cv2.getBuildInformation().splitlines()
    )


@pytest.mark.skipif(not ffmpeg_reads_mjpeg_over_http(), reason="this OpenCV has no FFmpeg backend for HTTP streams")
def test_an_mjpeg_stream_that_goes_away_is_reported_and_resumed(tmp_path):
    server = MjpegServer().start()
    capture = cv2.VideoCapture(server.url, cv2.CAP_FFMPEG)  # this OpenCV build reads it
    assert capture.isOpened() and capture.read()[0]
    capture.release()
    probe = Probe()
    listener = Listener(probe)
    params = {"device": server.url, "timeout": 1.0, "retry_max_delay": 0.5}
    log = tmp_path / "camera.log"
    try:
        with node_process("msdp_perception.camera_node", params, log) as node:
            assert probe.spin_until(lambda: len(listener.images) >= 40, 20.0), log.read_text()
            listener.figures("MJPEG over HTTP")
            stripe = image_array(listener.images[-1][1])[:, : WIDTH // 4 - 8].reshape(-1, 3).mean(axis=0)
            assert abs(stripe[0] - 200) < 3 and abs(stripe[2] - 128) < 3, stripe  # RGB, not BGR

            server.stop()
            stopped = time.time_ns()
            error = DiagnosticStatus.ERROR
            reported = lambda: any(s.level == error and "read failed" in s.message for s in listener.statuses)  # noqa: E731
            assert probe.spin_until(reported, 10.0), [s.message for s in listener.statuses[-3:]]
            probe.spin_for(1.5)  # retries against a closed port meanwhile
            late = [m for t, m in listener.images if t > stopped + 300_000_000]
            assert not late, f"{len(late)} images published while the stream was down"
            assert int(listener.values()["read_failures"]) >= 1 and int(listener.values()["open_failures"]) >= 1
            assert "read failed" in log.read_text() or "cannot open" in log.read_text()

            count = len(listener.images)
            server.start()
            assert probe.spin_until(lambda: len(listener.images) >= count + 20, 20.0), log.read_text()
            ok = DiagnosticStatus.OK
            back = lambda: listener.statuses[-1].level == ok and listener.values()["state"] == "streaming"  # noqa: E731
            assert probe.spin_until(back, 5.0), listener.statuses[-1].message
            assert node.poll() is None
    finally:
        probe.close()
        server.stop()


def test_bad_parameters_and_missing_files_stop_the_node_with_one_line(tmp_path):
    (tmp_path / "bad_calibration.yaml").write_text("image_width: 640\nimage_height: 480\ncamera_matrix: {rows: 3}\n")
    write_video(tmp_path / "clip.avi", 2)
    cases = [
        (["-p", "fourcc:=MJPEG"], 2, "parameter 'fourcc': 'MJPEG' is not four characters"),
        (["-p", "width:=-1"], 2, "parameter 'width': -1.0 is outside the allowed range"),
        (["-p", "devise:=0"], 2, "unknown parameter(s) 'devise' (did you mean 'device'?)"),
        (["-p", f"device:={tmp_path / 'missing.avi'}"], 1, f"video file {tmp_path / 'missing.avi'} does not exist"),
        (["-p", f"device:={tmp_path / 'bad_calibration.yaml'}"], 1, "not a video OpenCV can decode"),
        (
            ["-p", f"device:={tmp_path / 'clip.avi'}", "-p", f"calibration:={tmp_path / 'bad_calibration.yaml'}"],
            1,
            "camera_matrix must have rows, cols and data",
        ),
    ]
    for args, code, message in cases:
        result = subprocess.run(
            [sys.executable, "-m", "msdp_perception.camera_node", "--ros-args", *args],
            capture_output=True, text=True, timeout=30, env=os.environ,
        )  # fmt: skip
        assert result.returncode == code, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, result.stderr)


# -- the encoder on another driver's topics ---------------------------------------------------------------------
def test_the_encoder_reads_a_remapped_raw_or_compressed_640x480_stream_through_its_roi(tmp_path):
    """Like a RealSense's /camera/camera/color/image_raw (bgr8) and its /compressed: the encoder is remapped, not
    reconfigured, and sees the ROI stored with it; one encoder per transport, side by side."""
    import torch

    from msdp_perception.checkpoint import save_encoder
    from msdp_perception.encoder import FrozenEncoder, pack_embedding
    from msdp_perception.messages import image_from_msg
    from msdp_perception.model import MSDPConfig, MSDPModel
    from msdp_perception.observation import Observation

    torch.manual_seed(0)
    roi = (0.25, 0.0, 0.75, 1.0)
    model = MSDPModel(MSDPConfig(stem_channels=8, width=32, decoder_width=32, roi=roi))
    checkpoint = save_encoder(tmp_path / "encoder", model)
    y, x = np.mgrid[0:480, 0:640]
    rgb = np.stack([x * 255 // 640, y * 255 // 480, (x + y) % 256], axis=-1).astype(np.uint8)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    raw = Image(height=480, width=640, encoding="bgr8", step=640 * 3, data=bgr.tobytes())
    compressed = CompressedImage(format="rgb8; jpeg compressed bgr8", data=cv2.imencode(".jpg", bgr)[1].tobytes())

    encoder = FrozenEncoder(model)
    present = {"vision": True, "ft": False, "proprio": False}
    no_ft, no_joints = np.zeros((4, 6), np.float32), np.zeros(14, np.float32)
    expected = {
        kind: pack_embedding(encoder.encode(Observation(0.0, image_from_msg(msg, 64, roi), no_ft, no_joints, present)))
        for kind, msg in (("raw", raw), ("compressed", compressed))
    }

    probe = Probe()
    embeddings: dict[str, list[Image]] = {"raw": [], "compressed": []}
    panels: list[Image] = []
    sensor = qos_profile_sensor_data
    raw_pub = probe.node.create_publisher(Image, "/cam/color/image_raw", sensor)
    compressed_pub = probe.node.create_publisher(CompressedImage, "/cam/color/image_raw/compressed", sensor)
    for kind in embeddings:
        probe.node.create_subscription(Image, f"/{kind}/embedding", embeddings[kind].append, 10)
    probe.node.create_subscription(Image, "/raw/reconstruction", panels.append, 10)

    def encoder_node(kind: str):
        params = {"checkpoint": checkpoint, "image_transport": kind, "reconstruction_rate": 2.0}
        remaps = {
            "__node": f"encoder_{kind}", "/camera/image_raw": "/cam/color/image_raw",
            "/msdp/embedding": f"/{kind}/embedding", "/msdp/reconstruction": f"/{kind}/reconstruction",
            "/msdp/encoder": f"/{kind}/encoder",
        }  # fmt: skip
        return node_process("msdp_perception.encoder_node", params, tmp_path / f"{kind}.log", remaps)

    try:
        with encoder_node("raw"), encoder_node("compressed"):

            def publish_until(condition, timeout: float) -> bool:
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline and not condition():
                    stamp = probe.node.get_clock().now().to_msg()
                    raw.header.stamp = compressed.header.stamp = stamp
                    raw_pub.publish(raw)
                    compressed_pub.publish(compressed)
                    probe.spin_for(0.05)
                return condition()

            def seen_vision(kind: str) -> bool:
                return any(np.isfinite(_rows(m)[0]).all() for m in embeddings[kind])

            logs = lambda: (tmp_path / "raw.log").read_text() + (tmp_path / "compressed.log").read_text()  # noqa: E731
            assert publish_until(lambda: seen_vision("raw") and seen_vision("compressed") and panels, 40.0), logs()
            for kind, received in embeddings.items():
                rows = next(_rows(m) for m in reversed(received) if np.isfinite(_rows(m)[0]).all())
                np.testing.assert_allclose(rows, expected[kind], atol=1e-5, equal_nan=True, err_msg=kind)
            assert "/cam/color/image_raw/compressed (compressed)" in (tmp_path / "compressed.log").read_text()
            panel = panels[-1]  # the 640x480 frame at 256 rows with the ROI, then input, masked, decoded
            assert (panel.encoding, panel.height, panel.width) == ("rgb8", 256, 341 + 3 * 256)
    finally:
        probe.close()


def _rows(msg: Image) -> np.ndarray:
    return np.frombuffer(bytes(msg.data), np.float32).reshape(msg.height, msg.width)


def test_the_shipped_camera_config_validates():
    from msdp.node import load_params_file
    from msdp_perception.camera import CameraConfig
    from package_files import ROOT

    config = load_params_file(CameraConfig, ROOT / "config" / "camera.yaml", "camera")
    assert config == CameraConfig()


def test_a_camera_that_is_not_there_at_start_is_retried_and_reported(tmp_path):
    """``-p device:=7`` (a number: V4L2 index 7, no such device here): the node stays up, says what is wrong."""
    probe = Probe()
    listener = Listener(probe)
    try:
        with node_process("msdp_perception.camera_node", {"device": 7}, tmp_path / "camera.log") as node:
            missing = lambda: any("cannot open /dev/video7 (no such device)" in s.message for s in listener.statuses)  # noqa: E731
            assert probe.spin_until(missing, 15.0), (tmp_path / "camera.log").read_text()
            assert listener.statuses[-1].level == DiagnosticStatus.ERROR and not listener.images
            assert node.poll() is None
            os.killpg(node.pid, signal.SIGINT)
            assert node.wait(10) == 0
        assert "cannot open /dev/video7" in (tmp_path / "camera.log").read_text()
    finally:
        probe.close()
