"""Sensor messages to model inputs, for rclpy messages and rosbags messages alike (same field names, no ROS
import): the image and joint-state preprocessing, with the model's checks on what it accepts.

Used by the encoder node (live topics) and by ``BagDataset`` (recorded topics), so a recording and a live
stream are decoded by the same code. Plain conversions (stamps, poses, wrenches) are in ``msdp.vocabulary``.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from msdp.vocabulary import JOINT_NAMES

# encoding -> (channels, cv2 conversion to RGB or None)
_ENCODINGS = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
}


class SensorDataError(ValueError):
    """A message that cannot be turned into an observation (unknown encoding, wrong joints, bad size)."""


def image_from_msg(msg: Any, size: int) -> np.ndarray:
    """A sensor_msgs/Image as a (size, size, 3) uint8 RGB array.

    bgr8, rgba8, bgra8 and mono8 are converted; a square image of another size is resized (area
    interpolation); anything else (depth, 16-bit, Bayer, non-square) is rejected with the reason.
    """
    if msg.encoding not in _ENCODINGS:
        raise SensorDataError(
            f"image encoding {msg.encoding!r} is not supported (expected one of {', '.join(_ENCODINGS)})"
        )
    channels, conversion = _ENCODINGS[msg.encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, np.ndarray) else msg.data, dtype=np.uint8)
    if step < width * channels or data.size < step * height:
        raise SensorDataError(
            f"image {width}x{height} {msg.encoding} needs {width * channels * height} bytes "
            f"(step {step}), message has {data.size}"
        )
    image = data[: step * height].reshape(height, step)[:, : width * channels].reshape(height, width, channels)
    if conversion is not None:
        image = cv2.cvtColor(np.ascontiguousarray(image), conversion)
    if (height, width) != (size, size):
        if height != width:
            raise SensorDataError(f"image is {width}x{height}; the model needs a square {size}x{size} image")
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)


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
