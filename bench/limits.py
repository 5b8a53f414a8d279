"""Where a speed limit is: what the cores sustain on a plain matmul, and how much of a step is dense arithmetic.

Shared by the benches (``python bench/X.py`` puts this folder on the import path). Two floors bound a step's
rate: its floating-point work over the rate of one large matmul (the arithmetic floor), and the time its own
matmul, convolution and fused optimiser kernels take at the network's shapes (the kernel floor: what the step
would take if everything else -- element-wise work, autograd's bookkeeping, Python -- were free).
"""

import time
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

FLOOR_OPS = (
    "aten::mm", "aten::bmm", "aten::baddbmm", "aten::addmm", "aten::addbmm",
    "aten::mkldnn_convolution", "aten::convolution_backward", "aten::_convolution",
    "aten::_fused_adam_", "aten::_fused_adamw_",
)  # fmt: skip


def matmul_gflops(device: torch.device, precision: str, size: int = 1024, repeats: int = 20) -> float:
    """What these cores (or this GPU) sustain on one large square matmul in the given precision."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        (a @ b).sum().item()
    start = time.perf_counter()
    for _ in range(repeats):
        c = a @ b
    c.sum().item()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def kernel_floor_ms(step: Callable[[], object], steps: int, device: torch.device) -> float:
    """Profile ``steps`` calls of ``step``; print the top operators (device time on a GPU, CPU time otherwise)
    and return the milliseconds per call spent in the kernels of ``FLOOR_OPS``."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as profiler:
        for _ in range(steps):
            step()
    attribute = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(profiler.key_averages(), key=lambda e: getattr(e, attribute), reverse=True)
    total_ms = sum(getattr(e, attribute) for e in events) / 1e3 / steps
    floor_ms = sum(getattr(e, attribute) for e in events if e.key in FLOOR_OPS) / 1e3 / steps
    print(f"profile: {total_ms:.1f} ms of operator time per call, {floor_ms:.1f} ms of it in matmul, convolution "
          f"and fused optimiser kernels; the top operators:")  # fmt: skip
    for event in events[:12]:
        print(f"  {event.key:40s} {getattr(event, attribute) / 1e3 / steps:7.2f} ms  {event.count / steps:6.1f} calls")
    return floor_ms
