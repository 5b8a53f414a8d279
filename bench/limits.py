"""Where a speed limit is: what the cores sustain on a plain matmul, and how much of a step is dense arithmetic.

Shared by the benches (``python bench/X.py`` puts this folder on the import path). Three floors bound a step's
rate: its floating-point work over the rate of one large matmul (the arithmetic floor); the time its own
matmul, convolution and fused optimiser kernels take at the network's shapes (the kernel floor: what the step
would take if everything else -- element-wise work, autograd's bookkeeping, Python -- were free); and, run
eagerly, the kernel floor plus the step's fixed cost: what the same step takes on a tiny batch, less that
batch's own kernels (launching its operators at all, whatever their size: ``fixed_cost_ms``).
"""

import time
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

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


def kernel_floor_ms(step: Callable[[], object], steps: int, device: torch.device, top: int = 12) -> float:
    """Profile ``steps`` calls of ``step``; print the ``top`` operators (device time on a GPU, CPU time
    otherwise; none when 0) and return the milliseconds per call spent in the kernels of ``FLOOR_OPS``."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as profiler:
        for _ in range(steps):
            step()
    attribute = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(profiler.key_averages(), key=lambda e: getattr(e, attribute), reverse=True)
    total_ms = sum(getattr(e, attribute) for e in events) / 1e3 / steps
    floor_ms = sum(getattr(e, attribute) for e in events if e.key in FLOOR_OPS) / 1e3 / steps
    if top:
        print(f"profile: {total_ms:.1f} ms of operator time per call, {floor_ms:.1f} ms of it in matmul, "
              f"convolution and fused optimiser kernels; the top operators:")  # fmt: skip
    for event in events[:top]:
        print(f"  {event.key:40s} {getattr(event, attribute) / 1e3 / steps:7.2f} ms  {event.count / steps:6.1f} calls")
    return floor_ms


def fixed_cost_ms(step: Callable[[], object], steps: int, device: torch.device) -> float:
    """Milliseconds per call of ``step`` (give it a tiny batch) outside the ``FLOOR_OPS`` kernels: the cost of
    dispatching its operators, autograd and Python, which a larger batch cannot make smaller."""
    for _ in range(5):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    total_ms = 1e3 * (time.perf_counter() - start) / steps
    return total_ms - kernel_floor_ms(step, steps, device, top=0)


class OperatorTraffic(TorchDispatchMode):
    """Counts the operators a step dispatches, and the bytes the ones outside ``FLOOR_OPS`` read and write (views
    excluded): whether their time is memory traffic or the cost of running an operator at all."""

    def __init__(self):
        super().__init__()
        self.operators, self.bytes = 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.operators += 1
        if f"aten::{func.__name__.split('.')[0]}" not in FLOOR_OPS and not func.is_view:
            tensors = (t for t in tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor))
            self.bytes += sum(t.numel() * t.element_size() for t in tensors)
        return out


def stream_gbytes_per_s(megabytes: int = 4, repeats: int = 50) -> float:
    """What an element-wise add streams (two operands read, one written) at ``megabytes`` per operand."""
    a, b, out = (torch.ones(megabytes * 2**18) for _ in range(3))
    for _ in range(3):
        torch.add(a, b, out=out)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.add(a, b, out=out)
    return 3 * a.numel() * 4 * repeats / (time.perf_counter() - start) / 1e9
