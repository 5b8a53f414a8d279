"""Camera node: an OpenCV ``VideoCapture`` (V4L2 device, video file or stream URL) on the camera topics.

publishes   /camera/image_raw (sensor_msgs/Image, rgb8, sensor-data QoS), header.stamp = the node's clock when the
            frame was read (capture time, not publishing time), frame_id ``frame_id`` (third_person_camera)
            /camera/camera_info (sensor_msgs/CameraInfo, same stamp): the ``calibration`` file's, or only the size
            /diagnostics (1 Hz): frame rate, frames captured, published and dropped (replaced by a newer frame
            before they were published), read and open failures, what is wrong
Parameters: ``msdp_perception.camera.CameraConfig`` (device, width, height, fps, fourcc, loop, calibration,
frame_id, timeout, retry_max_delay). ``-p device:=0`` (a number) means V4L2 index 0.

Reading runs in its own thread (``msdp_perception.camera.Capture``); each new frame wakes the executor through a
guard condition, which publishes the newest one. When the device disappears or a stream's reads fail, the node
reports it on /diagnostics (error) and in a throttled log, publishes nothing (the encoder then masks vision, its
image going stale), and keeps reopening the source until it is back. A video file ends the node with exit code 0
at its end unless ``loop``; a video file that does not exist or a broken calibration file stops it at start with
one line and exit code 1, a bad parameter with exit code 2; a device or stream that cannot be opened at start is
retried like one that went away.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import cv2
from rclpy.parameter import Parameter

from msdp import vocabulary as vocab
from msdp.node import MsdpNode, ros_message, run_node
from msdp_perception.camera import (
    CameraConfig,
    CameraError,
    Capture,
    camera_info_msg,
    check_file_source,
    load_calibration,
    parse_device,
)

FINISH_GRACE_S = 0.3  # after a video file's last frame, before the node exits: its last messages go out
LOG_THROTTLE_S = 5.0


class CameraNode(MsdpNode):
    def __init__(self):
        super().__init__("camera", CameraConfig)
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # a retried open: this node's messages say it
        c = self.config
        self.source = parse_device(c.device)
        try:
            if self.source.is_file:
                check_file_source(self.source)
            self.calibration = load_calibration(c.calibration) if c.calibration else None
        except CameraError:
            super().destroy_node()
            raise
        self.image_pub = self.publisher(vocab.IMAGE)
        self.info_pub = self.publisher(vocab.CAMERA_INFO)
        self.published = 0
        self.size_warning = ""
        self.finishing = False
        self.last_rate = (time.monotonic(), 0)
        self.last_state = ""
        self.guard = self.create_guard_condition(self.on_frame)
        self.capture = Capture(c, self.now_ns, self.wake)
        self.create_timer(1.0, self.on_diagnostics)
        self.capture.start()
        self.get_logger().info(
            f"camera up: {self.source.kind} {self.source}"
            + (", looping" if self.source.is_file and c.loop else "")
            + (f", calibration {c.calibration}" if c.calibration else ", no calibration")
            + f"; publishing {self.resolve_topic_name(vocab.IMAGE.name)} (rgb8)"
        )

    def declare_parameter(self, name: str, value: Any = None, *args: Any, **kwargs: Any) -> Parameter:
        """``-p device:=0`` arrives as an integer: a V4L2 index is a device name too."""
        parameter = super().declare_parameter(name, value, *args, **kwargs)
        if name == "device" and type(parameter.value) is int:
            self.set_parameters([Parameter(name, value=str(parameter.value))])
            parameter = self.get_parameter(name)
        return parameter

    def wake(self) -> None:
        """From the capture thread: a frame is waiting, or the file ended."""
        try:
            self.guard.trigger()
        except RuntimeError:  # rclpy's InvalidHandle: a capture thread outlived the node by a blocked read
            pass

    def on_frame(self) -> None:
        frame = self.capture.take()
        if frame is not None:
            c = self.config
            height, width = frame.image.shape[:2]
            self.image_pub.publish(vocab.image_msg(ros_message, frame.stamp_ns, frame.image, "rgb8", c.frame_id))
            info = camera_info_msg(ros_message, frame.stamp_ns, c.frame_id, (width, height), self.calibration)
            self.info_pub.publish(info)
            self.published += 1
            if self.calibration is not None and (self.calibration.width, self.calibration.height) != (width, height):
                if not self.size_warning:
                    self.get_logger().warning(
                        f"calibration {c.calibration} is for {self.calibration.width}x{self.calibration.height} "
                        f"images, the camera gives {width}x{height}: camera_info does not fit the images"
                    )
                self.size_warning = f"calibration is for {self.calibration.width}x{self.calibration.height}"
        if self.capture.finished and not self.finishing:
            self.finishing = True
            self.get_logger().info(f"end of video file {self.source} after {self.published} frames")
            self.create_timer(FINISH_GRACE_S, self.finish)

    def finish(self) -> None:
        self.exit_code = 0

    def on_diagnostics(self) -> None:
        stats = self.capture.snapshot()
        now = time.monotonic()
        then, published = self.last_rate
        rate = (self.published - published) / max(now - then, 1e-6)
        self.last_rate = (now, self.published)
        width, height = stats.size
        if stats.state == "reconnecting":
            level, message = "error", stats.problem
            self.get_logger().error(f"camera: {stats.problem}", throttle_duration_sec=LOG_THROTTLE_S)
        elif stats.state == "streaming":
            level = "warn" if self.size_warning else "ok"
            message = "; ".join(filter(None, (f"streaming {width}x{height} at {rate:.1f} Hz", self.size_warning)))
            if self.last_state == "reconnecting":
                self.get_logger().info(f"camera: {self.source} is back, streaming {width}x{height}")
        else:
            level, message = ("ok" if stats.state == "finished" else "warn"), f"{stats.state}: {self.source}"
        self.last_state = stats.state
        values = {
            "device": str(self.source),
            "state": stats.state,
            "width": str(width),
            "height": str(height),
            "rate_hz": f"{rate:.2f}",
            "captured": str(stats.captured),
            "published": str(self.published),
            "dropped": str(stats.dropped),
            "read_failures": str(stats.read_failures),
            "open_failures": str(stats.open_failures),
            "opened": str(stats.opened),
        }
        self.publish_diagnostics("capture", level, message, values)

    def destroy_node(self) -> None:
        capture = getattr(self, "capture", None)
        if capture is not None:
            capture.stop()
        super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    return run_node("camera", CameraNode, argv, startup_errors=(CameraError,))


if __name__ == "__main__":
    sys.exit(main())
