"""The virtual cell: the simulated arm's camera and wrist sensor behind the real devices' protocols.

A real cell has a camera that the camera node reads (here: an MJPEG stream over HTTP, as IP cameras and
``mjpg-streamer`` serve it) and an ATI Net F/T box that the F/T node reads (here: the RDT protocol over UDP and
the box's ``netftapi2.xml`` calibration page over HTTP). Serving the simulated sensors this way, on 127.0.0.1,
lets ``camera_node`` and ``ft_node`` run here exactly as they run on hardware.

RDT (facts from ATI's Net F/T documentation): requests are 8 bytes big-endian (uint16 0x1234, uint16 command,
uint32 sample count, 0 = endless); commands 0x0000 stop, 0x0002 start real-time streaming, 0x0042 set software
bias; each record is 36 bytes big-endian: uint32 RDT sequence, uint32 F/T sequence, uint32 status, and int32
Fx Fy Fz Tx Ty Tz in counts (value x counts per unit, from ``cfgcpf``/``cfgcpt`` of ``netftapi2.xml``).
"""

from __future__ import annotations

import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

from msdp_franka_driver.sim.config import VirtualCellConfig

RDT_HEADER = 0x1234
RDT_REQUEST = struct.Struct(">HHI")
RDT_RECORD = struct.Struct(">III6i")
STOP, START_REALTIME, SET_BIAS = 0x0000, 0x0002, 0x0042
BOUNDARY = "msdpframe"


class MjpegServer:
    """Serves the newest frame as ``multipart/x-mixed-replace`` JPEG parts at ``/stream.mjpg``; each client gets
    every frame published after it connected."""

    def __init__(self, host: str, port: int, quality: int):
        self.quality = quality
        self._frame: tuple[int, bytes] | None = None  # (frame number, JPEG bytes)
        self._new_frame = threading.Condition()
        self._closed = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path.split("?")[0] != "/stream.mjpg":
                    self.send_error(404, "the stream is at /stream.mjpg")
                    return
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                sent = -1
                try:
                    while (frame := server.wait_for_frame(after=sent)) is not None:
                        sent, jpeg = frame
                        part = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                        self.wfile.write(part.encode() + jpeg + b"\r\n")
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client went away

            def log_message(self, *_: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="mjpeg-server", daemon=True)
        self._thread.start()

    def publish(self, rgb: np.ndarray) -> None:
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise RuntimeError("virtual cell: JPEG encoding of a camera frame failed")
        with self._new_frame:
            number = self._frame[0] + 1 if self._frame else 0
            self._frame = (number, jpeg.tobytes())
            self._new_frame.notify_all()

    def wait_for_frame(self, after: int, timeout: float = 1.0) -> tuple[int, bytes] | None:
        """The newest frame numbered above ``after`` (waiting for it); None once the server closes."""
        with self._new_frame:
            while not self._closed:
                if self._frame is not None and self._frame[0] > after:
                    return self._frame
                self._new_frame.wait(timeout)
        return None

    def close(self) -> None:
        with self._new_frame:
            self._closed = True
            self._new_frame.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()


class NetFtServer:
    """A Net F/T box: streams records of the newest wrench to whoever sent a start request, until a stop; serves
    ``netftapi2.xml`` with its counts per unit. Software bias (0x0042) subtracts the wrench of that moment."""

    def __init__(self, host: str, port: int, http_port: int, counts_per_force: int, counts_per_torque: int):
        self.scale = np.array([counts_per_force] * 3 + [counts_per_torque] * 3, dtype=float)
        self.bias = np.zeros(6)
        self._latest = np.zeros(6)
        self._client: tuple[str, int] | None = None
        self._remaining = 0  # records still owed to the client; -1 = endless
        self._rdt_sequence = 0
        self._ft_sequence = 0
        self._lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.2)
        self._running = True
        self._thread = threading.Thread(target=self._serve_requests, name="netft-rdt", daemon=True)
        self._thread.start()
        xml = self.calibration_xml(counts_per_force, counts_per_torque).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path.split("?")[0] != "/netftapi2.xml":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(xml)))
                self.end_headers()
                self.wfile.write(xml)

            def log_message(self, *_: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, http_port), Handler)
        self.httpd.daemon_threads = True
        self._http_thread = threading.Thread(target=self.httpd.serve_forever, name="netft-http", daemon=True)
        self._http_thread.start()

    @staticmethod
    def calibration_xml(counts_per_force: int, counts_per_torque: int) -> str:
        return (
            '<?xml version="1.0" encoding="UTF-8"?><netft><cfgcpf>'
            f"{counts_per_force}</cfgcpf><cfgcpt>{counts_per_torque}</cfgcpt><scfgfu>N</scfgfu>"
            "<scfgtu>Nm</scfgtu></netft>"
        )

    def _serve_requests(self) -> None:
        while self._running:
            try:
                data, address = self.sock.recvfrom(64)
            except (TimeoutError, OSError):
                continue
            if len(data) != RDT_REQUEST.size:
                continue
            header, command, count = RDT_REQUEST.unpack(data)
            if header != RDT_HEADER:
                continue
            with self._lock:
                if command == START_REALTIME:
                    self._client, self._remaining = address, count if count else -1
                elif command == STOP:
                    self._client = None
                elif command == SET_BIAS:
                    self.bias = self._latest.copy()

    def publish(self, wrench: np.ndarray) -> None:
        """A new sensor sample: recorded as the newest reading and sent to the streaming client, if any."""
        with self._lock:
            self._latest = np.asarray(wrench, dtype=float)
            self._ft_sequence = (self._ft_sequence + 1) % 2**32
            if self._client is None or self._remaining == 0:
                return
            counts = np.clip(np.round((self._latest - self.bias) * self.scale), -(2**31), 2**31 - 1).astype(int)
            self._rdt_sequence = (self._rdt_sequence + 1) % 2**32
            record = RDT_RECORD.pack(self._rdt_sequence, self._ft_sequence, 0, *counts.tolist())
            client = self._client
            if self._remaining > 0:
                self._remaining -= 1
        try:
            self.sock.sendto(record, client)
        except OSError:
            pass  # the client's port is gone; it will ask again

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=1.0)
        self.sock.close()
        self.httpd.shutdown()
        self.httpd.server_close()


class VirtualCell:
    """Both servers, fed by the simulated arm: ``camera(rgb)`` per camera frame, ``wrench(w)`` per F/T sample."""

    def __init__(self, config: VirtualCellConfig):
        self.config = config
        self.camera_server = MjpegServer(config.host, config.camera_port, config.jpeg_quality)
        try:
            self.ft_server = NetFtServer(
                config.host, config.ft_port, config.ft_http_port, config.counts_per_force, config.counts_per_torque
            )
        except OSError:
            self.camera_server.close()
            raise

    @property
    def camera_url(self) -> str:
        return f"http://{self.config.host}:{self.config.camera_port}/stream.mjpg"

    def camera(self, rgb: np.ndarray) -> None:
        self.camera_server.publish(rgb)

    def wrench(self, wrench: np.ndarray) -> None:
        self.ft_server.publish(wrench)

    def close(self) -> None:
        self.camera_server.close()
        self.ft_server.close()
