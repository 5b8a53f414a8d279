"""Sensor messages to model inputs, for rclpy messages and rosbags messages alike (same field names, no ROS
import): the image and joint-state preprocessing, with the model's checks on what it accepts.

Used by the encoder node (live topics) and by ``BagDataset`` (recorded topics), so a recording and a live
stream are decoded by the same code. Plain conversions (stamps, poses, wrenches) are in ``msdp.vocabulary``.

The image preprocessing, in this order:

1. decode: a ``sensor_msgs/Image`` (rgb8, bgr8, rgba8, bgra8, mono8; any size and aspect, padded rows allowed)
   or a ``sensor_msgs/CompressedImage`` (jpeg or png, decoded with ``cv2.imdecode``) becomes the whole camera
   frame as RGB (``decode_image``);
2. region of interest: ``roi`` = (x0, y0, x1, y1), fractions of the frame's width and height (default the whole
   frame), rounded to whole pixels; a region that is not square in pixels is cut to its centred square (the
   largest one inside it), so the model never sees a squashed scene (``roi_box``);
3. resize the square to the encoder's ``size`` with area interpolation (``cv2.INTER_AREA``), skipped when it is
   already that size.

A square frame of the model's size with the default ROI passes through untouched, and a square frame of another
size is resized as a whole: the same pixels as before the ROI existed.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from msdp.specs import FULL_FRAME
from msdp.vocabulary import JOINT_NAMES

# encoding -> (channels, cv2 conversion to RGB or None)
_ENCODINGS = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
}
COMPRESSED_FORMATS = ("jpeg", "png")  # sensor_msgs/CompressedImage.format names one (image_transport: "bgr8; jpeg ...")
_FORMAT_ALIASES = {"jpeg": "jpeg", "jpg": "jpeg", "png": "png"}

Roi = tuple[float, float, float, float]


class SensorDataError(ValueError):
    """A message that cannot be turned into an observation (unknown encoding, wrong joints, bad size)."""


def is_compressed(msg: Any) -> bool:
    """Whether ``msg`` is a sensor_msgs/CompressedImage (it has ``format`` where an Image has ``encoding``)."""
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


def _message_bytes(data: Any) -> np.ndarray:
    """A message's ``data`` (rosbags: a uint8 array; rclpy: an array.array or bytes) as a flat uint8 array."""
    if isinstance(data, np.ndarray):
        return data.view(np.uint8).reshape(-1)
    try:
        return np.frombuffer(data, dtype=np.uint8)  # no copy of what has a buffer
    except TypeError:
        return np.frombuffer(bytes(data), dtype=np.uint8)


def _compressed_format(text: str) -> str:
    """'jpeg' or 'png' from a CompressedImage's format: 'jpeg', 'png', or image_transport's 'rgb8; jpeg compressed
    bgr8'. Depth (compressedDepth) and anything else are refused."""
    words = text.lower().replace(";", " ").split()
    if "compresseddepth" not in words:
        for word in words:
            if word in _FORMAT_ALIASES:
                return _FORMAT_ALIASES[word]
    raise SensorDataError(
        f"compressed image format {text!r} is not supported (expected one of {', '.join(COMPRESSED_FORMATS)})"
    )


def decode_image(msg: Any) -> np.ndarray:
    """The whole camera frame of a sensor_msgs/Image or CompressedImage as an (H, W, 3) uint8 RGB array."""
    if is_compressed(msg):
        kind = _compressed_format(str(msg.format))
        data = _message_bytes(msg.data)
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None  # BGR, alpha dropped, 8 bit
        if image is None:
            raise SensorDataError(f"compressed image ({kind}, {data.size} bytes) cannot be decoded")
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if msg.encoding not in _ENCODINGS:
        raise SensorDataError(
            f"image encoding {msg.encoding!r} is not supported (expected one of {', '.join(_ENCODINGS)}, "
            f"or a CompressedImage in {' or '.join(COMPRESSED_FORMATS)})"
        )
    channels, conversion = _ENCODINGS[msg.encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    data = _message_bytes(msg.data)
    if height < 1 or width < 1 or step < width * channels or data.size < step * height:
        raise SensorDataError(
            f"image {width}x{height} {msg.encoding} needs {width * channels * height} bytes "
            f"(step {step}), message has {data.size}"
        )
    image = data[: step * height].reshape(height, step)[:, : width * channels].reshape(height, width, channels)
    if conversion is not None:
        image = cv2.cvtColor(np.ascontiguousarray(image), conversion)
    return image


def roi_box(width: int, height: int, roi: Roi = FULL_FRAME) -> tuple[int, int, int, int]:
    """The pixels the model sees of a ``width`` x ``height`` frame: (x0, y0, x1, y1), end exclusive, a square.

    ``roi`` is rounded to whole pixels (at least one); a non-square region is cut to its centred square."""
    fx0, fy0, fx1, fy1 = (float(v) for v in roi)
    if not (0.0 <= fx0 < fx1 <= 1.0 and 0.0 <= fy0 < fy1 <= 1.0):
        raise SensorDataError(f"region of interest {list(roi)} is not x0 y0 x1 y1 in [0, 1] with x0 < x1, y0 < y1")
    x0, x1 = _span(fx0, fx1, width)
    y0, y1 = _span(fy0, fy1, height)
    side = min(x1 - x0, y1 - y0)
    x0 += (x1 - x0 - side) // 2
    y0 += (y1 - y0 - side) // 2
    return x0, y0, x0 + side, y0 + side


def _span(start: float, end: float, pixels: int) -> tuple[int, int]:
    first = min(int(np.floor(start * pixels + 0.5)), pixels - 1)
    return first, max(first + 1, min(int(np.floor(end * pixels + 0.5)), pixels))


def preprocess(frame: np.ndarray, size: int, roi: Roi = FULL_FRAME) -> np.ndarray:
    """A whole RGB camera frame as the model's (size, size, 3) uint8 input: region of interest, then resize."""
    height, width = frame.shape[:2]
    x0, y0, x1, y1 = roi_box(width, height, roi)
    image = frame[y0:y1, x0:x1]
    if image.shape[:2] != (size, size):
        image = cv2.resize(np.ascontiguousarray(image), (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)


def roi_overlay(frame: np.ndarray, roi: Roi, height: int) -> np.ndarray:
    """The whole RGB camera ``frame`` scaled to ``height`` pixels, the square the model sees outlined in green
    and, where the configured ``roi`` is not square, the ROI in yellow: what a user checks the ROI with."""
    frame_height, frame_width = frame.shape[:2]
    width = max(1, round(frame_width * height / frame_height))
    shrink = height < frame_height
    view = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_NEAREST)
    scale_x, scale_y = width / frame_width, height / frame_height
    thickness = max(1, height // 128)

    def outline(box: tuple[int, int, int, int], colour: tuple[int, int, int]) -> None:
        x0, y0, x1, y1 = box
        corner0 = (int(x0 * scale_x), int(y0 * scale_y))
        corner1 = (max(int(x1 * scale_x) - 1, corner0[0]), max(int(y1 * scale_y) - 1, corner0[1]))
        cv2.rectangle(view, corner0, corner1, colour, thickness)

    seen = roi_box(frame_width, frame_height, roi)
    fx0, fy0, fx1, fy1 = roi
    x0, x1 = _span(fx0, fx1, frame_width)
    y0, y1 = _span(fy0, fy1, frame_height)
    if (x0, y0, x1, y1) != seen:
        outline((x0, y0, x1, y1), (255, 220, 0))
    outline(seen, (0, 255, 0))
    return view


def image_from_msg(msg: Any, size: int, roi: Roi = FULL_FRAME) -> np.ndarray:
    """A sensor_msgs/Image or CompressedImage as the model's (size, size, 3) uint8 RGB input.

    Any size and aspect; rgb8, bgr8, rgba8, bgra8 and mono8, or jpeg and png, are converted; anything else
    (depth, 16-bit, Bayer) is rejected with the reason. See the module docstring for the region of interest."""
    return preprocess(decode_image(msg), size, roi)


def proprio_from_joint_state(msg: Any, joint_names: tuple[str, ...] = JOINT_NAMES) -> np.ndarray:
    """A sensor_msgs/JointState as 7 positions then 7 velocities, in ``joint_names`` order (matched by name)."""
    names = list(msg.name)
    missing = [n for n in joint_names if n not in names]
    if missing:
        raise SensorDataError(f"joint state lacks joint(s) {', '.join(missing)}; it has {', '.join(names) or 'none'}")
    if len(msg.velocity) != len(names) or len(msg.position) != len(names):
        raise SensorDataError(
            f"joint state has {len(names)} names, {len(msg.position)} positions, {len(msg.velocity)} velocities"
        )
    order = [names.index(n) for n in joint_names]
    position = np.asarray(msg.position, dtype=np.float64)[order]
    velocity = np.asarray(msg.velocity, dtype=np.float64)[order]
    return np.concatenate([position, velocity]).astype(np.float32)
