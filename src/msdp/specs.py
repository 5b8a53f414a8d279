"""What an observation and an action are, written once and carried by every artefact that depends on them.

An ``ObservationSpec`` (image size, F/T window, joints) and an ``ActionSpec`` (dimensions, step sizes) are
stored in the encoder's and the policy's sidecars and in a transition log's schema, next to the identity of
the encoder that made the log. Every consumer compares what it was built for with what it is given
(``check_same``) and refuses a mismatch with one line that names both sources.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from msdp.config import ConfigError, from_dict, param_range
from msdp.vocabulary import JOINT_NAMES


class SpecMismatch(ConfigError):
    """Two artefacts (or an artefact and a config) disagree on the observation or the action."""


FULL_FRAME = (0.0, 0.0, 1.0, 1.0)  # the region of interest that is the whole camera frame
ROI_DOC = "x0 y0 x1 y1, fractions of the camera frame's width and height; a non-square region: its centred square"


def roi_field() -> Any:
    """The ``roi`` field of an observation spec (and of the model config that makes one)."""
    return field(default=FULL_FRAME, metadata=param_range(0.0, 1.0, ROI_DOC))


def check_roi(roi: tuple[float, float, float, float], name: str) -> None:
    x0, y0, x1, y1 = roi
    if not (x0 < x1 and y0 < y1):
        raise ConfigError(f"parameter '{name}': {list(roi)} is not a region x0 y0 x1 y1 with x0 < x1 and y0 < y1")


@dataclass(frozen=True)
class ObservationSpec:
    """One MSDP observation: a square RGB image, the last ``ft_window`` wrench readings, and the positions
    then velocities of ``joints``.

    The image is the camera frame's region of interest ``roi`` (x0, y0, x1, y1 as fractions of the frame's
    width and height, default the whole frame), cut to its centred square when it is not square in pixels,
    then resized to ``image_size`` (``msdp_perception.messages``). An artefact saved before the ROI existed
    has none and means the whole frame."""

    image_size: int = field(default=64, metadata=param_range(16, 512, "pixels, square RGB image"))
    ft_window: int = field(default=4, metadata=param_range(1, 64, "wrench readings per observation"))
    joints: int = field(default=len(JOINT_NAMES), metadata=param_range(1, 64, "joints (positions + velocities)"))
    roi: tuple[float, float, float, float] = roi_field()

    def check(self, prefix: str = "") -> None:
        check_roi(self.roi, f"{prefix}roi")

    @property
    def proprio_dim(self) -> int:
        return 2 * self.joints


@dataclass(frozen=True)
class ActionSpec:
    """A normalised action in [-1, 1]^dim: x y z displacement of the tool (``max_step`` m at 1) and, for
    ``dim`` 4, a turn about the base z axis (``max_yaw_step`` rad at 1)."""

    dim: int = field(default=4, metadata=param_range(3, 4, "3: x y z; 4: x y z yaw"))
    max_step: float = field(default=0.02, metadata=param_range(0.001, 0.05, "m per policy step per axis"))
    max_yaw_step: float = field(default=0.1, metadata=param_range(0.0, 0.5, "rad per policy step"))

    def displacement(self, action: np.ndarray) -> tuple[np.ndarray, float]:
        """What an action commands: linear displacement (m) and yaw change (rad); out-of-range values clip."""
        action = np.clip(np.asarray(action, dtype=float), -1.0, 1.0)
        if action.shape != (self.dim,):
            raise ValueError(f"action has shape {action.shape}, expected ({self.dim},)")
        yaw = self.max_yaw_step * action[3] if self.dim > 3 else 0.0
        return self.max_step * action[:3], float(yaw)

    def normalised(self, linear: np.ndarray, yaw: float) -> np.ndarray:
        """The inverse of ``displacement``: a recorded displacement as an action in [-1, 1]^dim."""
        action = np.asarray(linear, dtype=float)[:3] / self.max_step
        if self.dim > 3:
            action = np.append(action, yaw / self.max_yaw_step if self.max_yaw_step > 0 else 0.0)
        return np.clip(action, -1.0, 1.0)


def spec_from_dict(cls: type, values: dict[str, Any], where: str) -> Any:
    try:
        return from_dict(cls, values)
    except ConfigError as exc:
        raise SpecMismatch(f"{where}: bad {cls.__name__} ({exc})") from exc


def check_same(expected: Any, expected_from: str, given: Any, given_from: str) -> None:
    """Refuse two specs that differ, naming both sources and every differing field."""
    if expected == given:
        return
    differences = ", ".join(
        f"{f.name} {getattr(expected, f.name)} vs {getattr(given, f.name)}"
        for f in dataclasses.fields(expected)
        if getattr(expected, f.name) != getattr(given, f.name)
    )
    raise SpecMismatch(f"{type(expected).__name__} of {expected_from} does not match {given_from}: {differences}")
