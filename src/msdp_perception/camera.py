"""The camera capture core (no ROS import): OpenCV ``VideoCapture`` on a V4L2 device, a video file or a stream URL,
read in its own thread, the newest frame handed to whoever publishes it; and the camera calibration file.

``device`` says what to open:

- a V4L2 index (``"0"``) or device path (``/dev/video0``): opened with the V4L2 backend, ``width``, ``height``,
  ``fps`` and ``fourcc`` requested from the driver (0 or "" = the device's default);
- a stream URL (``http://host:port/stream.mjpg`` for MJPEG over HTTP, ``rtsp://...``): opened with FFmpeg; a
  stream that sends nothing for ``timeout`` seconds is lost;
- anything else is a video file, played at ``fps`` (0: the file's own rate) and, with ``loop``, from the start
  again at its end; without ``loop`` the capture finishes at the end (``Capture.finished``).

``VideoCapture.read`` blocks, so a thread reads, stamps each frame with the caller's clock the moment it is in
(``grab`` returned; before ``retrieve`` converts it: capture time, not publishing time) and keeps only the newest
one: a frame replaced before it was taken counts as dropped. When a device disappears or a read fails (a stream's
server went away), the capture says so (``stats``), hands on nothing, and keeps reopening the source with a
growing delay (up to ``retry_max_delay``) until it comes back. A video file that does not exist or cannot be
opened at start is a ``CameraError``.

Calibration files are the standard ROS camera_info YAML (``camera_calibration_parsers``, what the ROS camera
calibrator writes): image_width, image_height, camera_name, camera_matrix, distortion_model,
distortion_coefficients, rectification_matrix, projection_matrix (each matrix as rows, cols, data).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from msdp import vocabulary as vocab
from msdp.config import ConfigError, param_range

RETRY_FIRST_DELAY = 0.25  # s, the first reopen after a failure; doubled up to retry_max_delay
DEFAULT_FILE_FPS = 30.0  # a video file that does not say its rate


class CameraError(RuntimeError):
    """The camera cannot start: a video file that is missing or unreadable, a broken calibration file."""


@dataclass(frozen=True)
class CameraConfig:
    device: str = field(
        default="0",
        metadata={"doc": "V4L2 index ('0') or device (/dev/video0), video file, or stream URL (http://, rtsp://)"},
    )
    width: int = field(default=0, metadata=param_range(0, 16384, "pixels requested from the device; 0 = default"))
    height: int = field(default=0, metadata=param_range(0, 16384, "pixels requested from the device; 0 = default"))
    fps: float = field(
        default=0.0,
        metadata=param_range(0.0, 1000.0, "Hz requested from the device, or a file's playback rate; 0 = own"),
    )
    fourcc: str = field(default="", metadata={"doc": "pixel format requested from the device, e.g. MJPG; '' = default"})
    loop: bool = field(default=False, metadata={"doc": "a video file starts again at its end (else the node exits 0)"})
    calibration: str = field(default="", metadata={"doc": "camera_info YAML file; '' = CameraInfo with the size only"})
    frame_id: str = field(default=vocab.CAMERA_FRAME, metadata={"doc": "header.frame_id of image and camera_info"})
    timeout: float = field(default=5.0, metadata=param_range(0.1, 120.0, "s a stream may send nothing before lost"))
    retry_max_delay: float = field(default=2.0, metadata=param_range(0.1, 60.0, "s, longest wait between reopens"))

    def check(self, prefix: str = "") -> None:
        if not self.device.strip():
            raise ConfigError(f"parameter '{prefix}device' is required (a V4L2 index or device, video file or URL)")
        if self.fourcc and (len(self.fourcc) != 4 or not self.fourcc.isascii()):
            raise ConfigError(f"parameter '{prefix}fourcc': {self.fourcc!r} is not four characters (e.g. MJPG, YUYV)")
        if not self.frame_id:
            raise ConfigError(f"parameter '{prefix}frame_id' must not be empty")


# -- the source ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    kind: str  # "v4l2" (index or /dev path), "stream" (URL) or "file"
    target: int | str

    @property
    def is_file(self) -> bool:
        return self.kind == "file"

    def __str__(self) -> str:
        return f"/dev/video{self.target}" if isinstance(self.target, int) else str(self.target)


def parse_device(device: str) -> Source:
    device = device.strip()
    if device.isdigit():
        return Source("v4l2", int(device))
    if "://" in device:
        return Source("stream", device)
    if device.startswith("/dev/"):
        return Source("v4l2", device)
    return Source("file", device)


def check_file_source(source: Source) -> None:
    """A video file that does not exist, or that OpenCV cannot play, is a ``CameraError``."""
    path = Path(str(source.target))
    if not path.is_file():
        raise CameraError(f"video file {path} does not exist" if not path.exists() else f"{path} is not a file")
    capture = _open(source, CameraConfig(device=str(path)))
    if capture is None:
        raise CameraError(f"cannot open video file {path} (not a video OpenCV can decode)")
    capture.release()


def _open(source: Source, config: CameraConfig) -> Any:
    """An opened ``cv2.VideoCapture``, or None."""
    timeout_ms = int(config.timeout * 1000)
    if source.kind == "v4l2":
        capture = cv2.VideoCapture(source.target, cv2.CAP_V4L2)
    elif source.kind == "stream":
        timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
        capture = cv2.VideoCapture(str(source.target), cv2.CAP_FFMPEG, timeouts)
    else:
        capture = cv2.VideoCapture(str(source.target), cv2.CAP_FFMPEG)
    if not capture.isOpened():
        capture.release()
        return None
    if source.kind == "v4l2":  # the pixel format first: V4L2 drivers pick the sizes a format offers
        if config.fourcc:
            capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*config.fourcc))
        if config.width:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, config.width)
        if config.height:
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, config.height)
        if config.fps:
            capture.set(cv2.CAP_PROP_FPS, config.fps)
    return capture


def to_rgb(frame: np.ndarray) -> np.ndarray:
    """What ``VideoCapture.read`` returns (BGR; gray or BGRA from some backends) as (H, W, 3) uint8 RGB."""
    if frame.ndim == 2 or frame.shape[2] == 1:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


# -- the capture thread ------------------------------------------------------------------------------------------
@dataclass
class Frame:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    stamp_ns: int  # the caller's clock when the frame was grabbed
    index: int  # frames captured before this one


@dataclass
class CaptureStats:
    captured: int = 0  # frames read
    taken: int = 0  # frames handed on (published)
    dropped: int = 0  # frames replaced by a newer one before they were taken
    read_failures: int = 0  # reads that failed on an open source (a file's end is not one)
    open_failures: int = 0  # opens that failed
    opened: int = 0  # successful opens (the first, then each reopen and each loop of a file)
    state: str = "starting"  # starting | streaming | reconnecting | finished | stopped
    problem: str = ""  # why the source is not streaming ('' while it is)
    size: tuple[int, int] = (0, 0)  # width, height of the last frame


class Capture:
    """Reads ``config.device`` in a thread. ``on_frame`` is called (from that thread) after each new frame and
    when the capture finishes; ``take`` returns the newest frame not yet taken."""

    def __init__(self, config: CameraConfig, now_ns: Callable[[], int], on_frame: Callable[[], None] = lambda: None):
        self.config, self.source = config, parse_device(config.device)
        self.now_ns, self.on_frame = now_ns, on_frame
        self.stats = CaptureStats()
        self._lock = threading.Lock()
        self._pending: Frame | None = None
        self._stop = threading.Event()
        self._capture: Any = None
        self._thread = threading.Thread(target=self._run, name="camera-capture", daemon=True)

    def start(self) -> Capture:
        self._thread.start()
        return self

    @property
    def finished(self) -> bool:
        """A video file played to its end (without ``loop``)."""
        return self.stats.state == "finished"

    def take(self) -> Frame | None:
        with self._lock:
            frame, self._pending = self._pending, None
            if frame is not None:
                self.stats.taken += 1
            return frame

    def snapshot(self) -> CaptureStats:
        with self._lock:
            return CaptureStats(**vars(self.stats))

    def stop(self, timeout: float = 2.0) -> None:
        """Stop reading; the thread releases the source (a read blocked on a stream returns within ``timeout``
        of the config; the thread is a daemon, so a process never waits longer than ``timeout`` here)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        elif self._thread.ident is None:
            self._release()
        with self._lock:
            if self.stats.state != "finished":
                self.stats.state = "stopped"

    # -- the thread ------------------------------------------------------------------------------------------
    def _set(self, **values: Any) -> None:
        with self._lock:
            for name, value in values.items():
                setattr(self.stats, name, value)

    def _release(self) -> None:
        capture, self._capture = self._capture, None
        if capture is not None:
            capture.release()

    def _why(self) -> str:
        if self.source.kind == "v4l2" and not Path(str(self.source)).exists():
            return " (no such device)"
        return ""

    def _period(self) -> float:
        """Seconds between a video file's frames (0 for live sources, which pace themselves)."""
        if not self.source.is_file:
            return 0.0
        fps = self.config.fps or self._capture.get(cv2.CAP_PROP_FPS)
        return 1.0 / (fps if 0.1 <= fps <= 1000.0 else DEFAULT_FILE_FPS)

    def _run(self) -> None:
        delay, period, due = RETRY_FIRST_DELAY, 0.0, None
        lost = ""  # why the source went away, while it is away
        while not self._stop.is_set():
            if self._capture is None:
                self._capture = _open(self.source, self.config)
                if self._capture is None:
                    with self._lock:
                        self.stats.open_failures += 1
                        self.stats.state = "reconnecting"
                        self.stats.problem = (
                            f"{lost}; cannot reopen it{self._why()}, retrying (next in {delay:.2g} s)"
                            if lost
                            else f"cannot open {self.source}{self._why()}; retrying (next in {delay:.2g} s)"
                        )
                    self._stop.wait(delay)
                    delay = min(2 * delay, self.config.retry_max_delay)
                    continue
                with self._lock:
                    self.stats.opened += 1
                period = self._period()
            if period:  # a video file: play it at its rate, not as fast as it decodes
                now = time.monotonic()
                if due is None or due < now - period:  # the first frame, or more than a frame late
                    due = now
                if self._stop.wait(max(0.0, due - now)):
                    break
                due += period
            try:  # stamped when the frame is in (grab), before its decoding and conversion (retrieve)
                grabbed = self._capture.grab()
                stamp_ns = self.now_ns()
                ok, image = self._capture.retrieve() if grabbed else (False, None)
                rgb = to_rgb(image) if ok and image is not None and image.size else None
            except cv2.error:
                rgb = None
            if rgb is None:
                self._release()
                if self.source.is_file:  # its end
                    if self.config.loop:
                        continue
                    self._set(state="finished", problem="")
                    self.on_frame()
                    return
                lost = f"read failed on {self.source} (device gone or stream ended)"
                with self._lock:
                    self.stats.read_failures += 1
                    self.stats.state = "reconnecting"
                    self.stats.problem = f"{lost}; reopening in {delay:.2g} s"
                self._stop.wait(delay)
                delay = min(2 * delay, self.config.retry_max_delay)
                continue
            delay, lost = RETRY_FIRST_DELAY, ""
            with self._lock:
                if self._pending is not None:
                    self.stats.dropped += 1
                self._pending = Frame(rgb, stamp_ns, self.stats.captured)
                self.stats.captured += 1
                self.stats.state, self.stats.problem = "streaming", ""
                self.stats.size = (rgb.shape[1], rgb.shape[0])
            self.on_frame()
        self._release()


# -- calibration ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Calibration:
    """A camera's intrinsics as in sensor_msgs/CameraInfo (row-major matrices)."""

    width: int
    height: int
    camera_name: str = ""
    k: tuple[float, ...] = (0.0,) * 9
    distortion_model: str = ""
    d: tuple[float, ...] = ()
    r: tuple[float, ...] = (0.0,) * 9
    p: tuple[float, ...] = (0.0,) * 12


def _matrix(data: dict[str, Any], key: str, shape: tuple[int, int] | None, where: str) -> tuple[float, ...]:
    entry = data[key]
    if not isinstance(entry, dict) or not {"rows", "cols", "data"} <= entry.keys():
        raise CameraError(f"{where}: {key} must have rows, cols and data")
    rows, cols, values = entry["rows"], entry["cols"], entry["data"]
    if shape is not None and (rows, cols) != shape:
        raise CameraError(f"{where}: {key} is {rows}x{cols}, expected {shape[0]}x{shape[1]}")
    if not isinstance(values, list) or len(values) != rows * cols:
        raise CameraError(f"{where}: {key} has {rows}x{cols} = {rows * cols} entries, data holds {values!r:.60}")
    try:
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise CameraError(f"{where}: {key} data must be numbers, got {values!r:.60}") from None
    if not all(np.isfinite(numbers)):
        raise CameraError(f"{where}: {key} data must be finite numbers")
    return numbers


def load_calibration(path: str | Path) -> Calibration:
    """A ROS camera_info YAML file; a missing or malformed file is a ``CameraError`` naming it and the field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise CameraError(f"calibration file {path}: cannot read it ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise CameraError(f"calibration file {path}: not YAML ({str(exc).splitlines()[0]})") from None
    where = f"calibration file {path}"
    if not isinstance(data, dict):
        raise CameraError(f"{where}: expected a camera_info mapping (image_width, camera_matrix, ...)")
    missing = [key for key in ("image_width", "image_height", "camera_matrix") if key not in data]
    if missing:
        raise CameraError(f"{where}: lacks {', '.join(missing)}")
    width, height = data["image_width"], data["image_height"]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (width, height)):
        raise CameraError(f"{where}: image_width and image_height must be positive integers, got {width}, {height}")
    k = _matrix(data, "camera_matrix", (3, 3), where)
    d = _matrix(data, "distortion_coefficients", None, where) if "distortion_coefficients" in data else ()
    r = _matrix(data, "rectification_matrix", (3, 3), where) if "rectification_matrix" in data else None
    p = _matrix(data, "projection_matrix", (3, 4), where) if "projection_matrix" in data else None
    identity = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    intrinsic_p = (*k[0:3], 0.0, *k[3:6], 0.0, *k[6:9], 0.0)
    model = data.get("distortion_model", "plumb_bob" if d else "")
    return Calibration(
        width, height, str(data.get("camera_name", "")), k, str(model), d, r or identity, p or intrinsic_p
    )


def camera_info_msg(
    make: vocab.Make, stamp_ns: int, frame_id: str, size: tuple[int, int], calibration: Calibration | None
) -> Any:
    """A sensor_msgs/CameraInfo: the calibration's, or (none) one with only the image ``size`` (width, height)."""
    c = calibration or Calibration(*size)
    return make(
        "sensor_msgs/msg/CameraInfo",
        header=vocab.header(make, stamp_ns, frame_id),
        height=c.height,
        width=c.width,
        distortion_model=c.distortion_model,
        d=np.asarray(c.d, dtype=np.float64),
        k=np.asarray(c.k, dtype=np.float64),
        r=np.asarray(c.r, dtype=np.float64),
        p=np.asarray(c.p, dtype=np.float64),
    )
