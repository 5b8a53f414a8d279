"""Settings of the simulated Franka, apart from the modules that import MuJoCo (so a driver node on a real
arm can declare its parameters without loading the simulator)."""

from __future__ import annotations

from dataclasses import dataclass, field

from msdp.config import param_range
from msdp_franka_driver.control_law import ImpedanceConfig, SafetyConfig
from msdp_policy.tasks import TaskConfig


@dataclass(frozen=True)
class SimConfig:
    """Physics, sensor and camera settings of the simulated Franka."""

    physics_dt: float = field(default=0.001, metadata=param_range(0.0002, 0.002, "s"))
    image_size: int = field(default=64, metadata=param_range(16, 512, "pixels, square"))
    wrench_rate: float = field(default=100.0, metadata=param_range(10.0, 1000.0, "Hz, F/T samples"))
    wrench_window: int = field(default=4, metadata=param_range(1, 64, "F/T samples per observation"))
    reflex_force: float = field(
        default=0.0,
        metadata=param_range(0.0, 1000.0, "N on the tool that stops the arm like a libfranka reflex; 0 = off"),
    )
    hand_force: tuple[float, float, float] = field(
        default=(0.0, 0.0, 0.0),
        metadata=param_range(
            -100.0, 100.0, "N, base frame: a simulated hand pushing the tool (the driver sets it at run time too)"
        ),
    )


@dataclass(frozen=True)
class VirtualCellConfig:
    """Where the simulated sensors are served (all on ``host``)."""

    host: str = field(default="127.0.0.1", metadata={"doc": "address the servers bind to"})
    camera_port: int = field(default=8080, metadata=param_range(1024, 65535, "HTTP: /stream.mjpg (MJPEG)"))
    jpeg_quality: int = field(default=95, metadata=param_range(10, 100, "JPEG quality of the stream"))
    ft_port: int = field(default=49152, metadata=param_range(1024, 65535, "UDP: the Net F/T RDT port"))
    ft_http_port: int = field(default=8081, metadata=param_range(1024, 65535, "HTTP: /netftapi2.xml"))
    counts_per_force: int = field(default=1_000_000, metadata=param_range(1, 10**9, "counts per N"))
    counts_per_torque: int = field(default=1_000_000, metadata=param_range(1, 10**9, "counts per Nm"))


@dataclass(frozen=True)
class EnvConfig:
    """Everything that defines one simulated task environment."""

    task: TaskConfig = field(default_factory=TaskConfig)
    sim: SimConfig = field(default_factory=SimConfig)
    impedance: ImpedanceConfig = field(default_factory=ImpedanceConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
