"""One MSDP observation and the rule that assembles it from asynchronous sensor streams.

The same ``SensorSynchronizer`` runs offline over a rosbag (``BagDataset``) and online in the encoder node,
so a model sees the same kind of sample in pretraining and on the robot. Per observation at time ``t``:
the latest image, the last ``ft_window`` wrench readings and the latest joint state, each stamped at or
before ``t`` and no older than its age limit. A sensor that is missing, too old or non-finite is *masked*:
its token is dropped by the encoder (the model was pretrained with masking), never fed as garbage.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from msdp.config import param_range
from msdp.specs import ObservationSpec

MODALITIES = ("vision", "ft", "proprio")


@dataclass(frozen=True)
class SyncConfig:
    """Age limits of the observation sync rule (seconds, sensor header time); the sizes are the encoder's
    ``ObservationSpec``."""

    image_max_age: float = field(default=0.2, metadata=param_range(0.0, 10.0, "s"))
    wrench_max_age: float = field(default=0.05, metadata=param_range(0.0, 10.0, "s, age of the newest reading"))
    joint_max_age: float = field(default=0.05, metadata=param_range(0.0, 10.0, "s"))


@dataclass
class Observation:
    """What the encoder consumes. Masked sensors hold zeros; ``present`` says which are real."""

    stamp: float  # s, the time the observation describes
    image: np.ndarray  # (H, W, 3) uint8 RGB
    wrench: np.ndarray  # (ft_window, 6) float32, oldest first: force N, torque Nm
    proprio: np.ndarray  # (14,) float32: 7 joint positions (rad) then 7 joint velocities (rad/s)
    present: dict[str, bool]  # modality -> usable
    reasons: dict[str, str] = field(default_factory=dict)  # modality -> why it is masked

    @property
    def complete(self) -> bool:
        return all(self.present.values())


class SensorSynchronizer:
    """Keeps the latest readings of each sensor and assembles an ``Observation`` for a given time."""

    def __init__(self, spec: ObservationSpec | None = None, config: SyncConfig | None = None):
        self.spec = spec or ObservationSpec()
        self.config = config or SyncConfig()
        self._image: tuple[float, np.ndarray] | None = None
        self._wrenches: deque[tuple[float, np.ndarray]] = deque(maxlen=self.spec.ft_window)
        self._joints: tuple[float, np.ndarray] | None = None

    def add_image(self, stamp: float, image: np.ndarray) -> None:
        self._image = (stamp, image)

    def add_wrench(self, stamp: float, wrench: np.ndarray) -> None:
        self._wrenches.append((stamp, np.asarray(wrench, dtype=np.float32)))

    def add_joint_state(self, stamp: float, proprio: np.ndarray) -> None:
        self._joints = (stamp, np.asarray(proprio, dtype=np.float32))

    def latest_stamps(self) -> list[float]:
        """The stamps of the newest reading of each sensor heard from."""
        latest = [self._image, self._wrenches[-1] if self._wrenches else None, self._joints]
        return [reading[0] for reading in latest if reading is not None]

    def observe(self, t: float) -> Observation:
        """The observation at time ``t``; readings stamped after ``t`` are not used."""
        c, spec = self.config, self.spec
        reasons: dict[str, str] = {}
        image = np.zeros((spec.image_size, spec.image_size, 3), np.uint8)
        if self._image is None or self._image[0] > t:
            reasons["vision"] = "no image yet"
        elif t - self._image[0] > c.image_max_age:
            reasons["vision"] = f"image is {t - self._image[0]:.3f} s old (limit {c.image_max_age} s)"
        else:
            image = self._image[1]

        wrench = np.zeros((spec.ft_window, 6), np.float32)
        readings = [w for s, w in self._wrenches if s <= t]
        newest = max((s for s, _ in self._wrenches if s <= t), default=-math.inf)
        if len(readings) < spec.ft_window:
            reasons["ft"] = f"{len(readings)} of {spec.ft_window} wrench readings"
        elif t - newest > c.wrench_max_age:
            reasons["ft"] = f"wrench is {t - newest:.3f} s old (limit {c.wrench_max_age} s)"
        elif not np.all(np.isfinite(np.stack(readings))):
            reasons["ft"] = "non-finite wrench reading"
        else:
            wrench = np.stack(readings)

        proprio = np.zeros(spec.proprio_dim, np.float32)
        if self._joints is None or self._joints[0] > t:
            reasons["proprio"] = "no joint state yet"
        elif t - self._joints[0] > c.joint_max_age:
            reasons["proprio"] = f"joint state is {t - self._joints[0]:.3f} s old (limit {c.joint_max_age} s)"
        elif not np.all(np.isfinite(self._joints[1])):
            reasons["proprio"] = "non-finite joint state"
        else:
            proprio = self._joints[1]

        present = {m: m not in reasons for m in MODALITIES}
        return Observation(t, image, wrench, proprio, present, reasons)
