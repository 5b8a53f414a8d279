"""Where torch runs and at what precision: ``--device auto|cpu|cuda`` and ``--precision fp32|bf16`` everywhere.

``auto`` takes a CUDA GPU when torch has one and the CPU otherwise. ``bf16`` runs the forward passes and losses
under bfloat16 autocast (the weights, optimiser state and checkpoints stay float32), which is faster where the
hardware has bfloat16 arithmetic (recent GPUs; CPUs with AVX-512 BF16 or AMX).
"""

from __future__ import annotations

import contextlib
from typing import Any

from msdp.config import ConfigError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")


def resolve_device(name: str, parameter: str = "device") -> Any:
    """The torch.device for ``name``; a CUDA request without a CUDA-capable torch is a one-line ConfigError."""
    import torch

    if name not in DEVICES:
        raise ConfigError(f"parameter '{parameter}': {name!r} is not one of {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        cuda = torch.version.cuda
        build = "a CPU-only build" if cuda is None else f"built for CUDA {cuda}, but no GPU is visible"
        raise ConfigError(
            f"parameter '{parameter}': cuda requested, but torch {torch.__version__} is {build} "
            "(README: installing torch with CUDA)"
        )
    return torch.device(name)


def autocast(device: Any, precision: str) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on ``device`` for ``bf16``; nothing for ``fp32``."""
    import torch

    if precision not in PRECISIONS:
        raise ConfigError(f"parameter 'precision': {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
