"""One place that picks the compute device and the precision, so no module hard-codes one.

Precision of evaluation forwards (the ablation engine): bf16 autocast on CUDA GPUs that support it;
on the CPU only where it pays. A CPU without native bf16 (no ``avx512_bf16`` / ``amx_bf16``) emulates
it and is slower than fp32, and even with ``avx512_bf16`` (but no AMX) oneDNN's bf16 matmuls measured
~2x slower than fp32 here, while with AMX they measured ~3x faster. So the choice is made once per
process by ``cpu_bf16_pays``: native support and a short timing probe (a few matmuls of
transformer-layer shape, ~0.1 s). ``BERTBUSTERS_FP32=1`` (or ``autocast=None`` / ``"fp32"`` to the
engine) forces fp32. Training (``pretraining``) keeps ``autocast_dtype``: bf16 on CUDA only.

Where bf16 is asked for on such a CPU anyway (notebook 06's bf16-against-fp32 table), its matrix products run as
fp32 products of the bf16 operands, rounded back to bf16 (``Bf16GemmsInFp32``): what a bf16 GEMM with fp32
accumulation computes (a GPU's, or this CPU's own kernel, up to summation order), ~6x faster than the emulated
kernel here (SmolLM2 on 16 reviews x 48 tokens: 3.5 s against 22 s). Everything else autocast does is unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode  # the class's documented home (torch's dispatch docs)

log = logging.getLogger(__name__)

FP32_ENV = "BERTBUSTERS_FP32"  # set to 1/true/yes to keep every evaluation forward in fp32
CPU_BF16_MIN_SPEEDUP = 1.3  # bf16 autocast on the CPU only when the probe's matmuls run this much faster
_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def best_device(preferred: str | None = None) -> torch.device:
    """CUDA when present, else CPU; ``preferred`` ('cpu', 'cuda', 'cuda:1', 'auto'/None) overrides.

    Example:
        >>> best_device("cpu")
        device(type='cpu')
    """
    if preferred in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(preferred)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={preferred!r} was asked for but no CUDA GPU is visible; use 'cpu' or 'auto'.")
    return device


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Training precision: bf16 autocast on GPUs that support it; None (plain fp32) on the CPU."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def fp32_forced() -> bool:
    """True when the environment variable ``BERTBUSTERS_FP32`` asks for fp32 evaluation (1, true, yes, on)."""
    return os.environ.get(FP32_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def cpu_flags() -> set[str]:
    """The CPU feature flags the kernel reports (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def native_cpu_bf16(flags: set[str] | None = None) -> bool:
    """Whether the CPU computes bf16 natively (avx512_bf16 or AMX) and oneDNN can use it."""
    flags = cpu_flags() if flags is None else flags
    if not any(f in flags for f in _NATIVE_BF16_FLAGS):
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True


def cpu_bf16_decision(
    native: bool, fp32_seconds: float | None, bf16_seconds: float | None, min_speedup: float = CPU_BF16_MIN_SPEEDUP
) -> bool:
    """The rule, apart from measuring: bf16 only with native support and a probe at least ``min_speedup`` faster."""
    if not native or fp32_seconds is None or bf16_seconds is None or bf16_seconds <= 0:
        return False
    return fp32_seconds / bf16_seconds >= min_speedup


def _probe_seconds(dtype: torch.dtype, repeats: int = 5) -> float:
    """Best time of a (512 x 384) @ (384 x 1536) matmul, a MiniLM-size feed-forward on one batch row block."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(512, 384, generator=gen).to(dtype)
    b = torch.randn(384, 1536, generator=gen).to(dtype)
    a @ b  # warm-up (oneDNN builds its kernel on first use)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return best


@functools.lru_cache(maxsize=1)
def cpu_bf16_pays() -> bool:
    """Decided once per process: AMX bf16 tiles, and a timing probe where bf16 beats fp32 by
    ``CPU_BF16_MIN_SPEEDUP``. Without AMX (avx512_bf16 alone) bf16 matmuls measured about 2x slower than
    fp32 here, and a probe timed on a loaded machine can flip either way, so such a CPU stays in fp32
    without a probe: the same machine always evaluates in the same precision."""
    native = native_cpu_bf16()
    if not native or "amx_bf16" not in cpu_flags():
        log.info("CPU has no AMX bf16 tiles: evaluation stays in fp32")
        return False
    fp32, bf16 = _probe_seconds(torch.float32), _probe_seconds(torch.bfloat16)
    decision = cpu_bf16_decision(native, fp32, bf16)
    log.info(
        "CPU bf16 probe: fp32 %.2f ms, bf16 %.2f ms -> %s",
        fp32 * 1e3,
        bf16 * 1e3,
        "bf16 autocast" if decision else "fp32",
    )
    return decision


def eval_autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Evaluation precision (the engine's ``autocast="auto"``): None (fp32) when ``BERTBUSTERS_FP32`` is set;
    bf16 on CUDA GPUs that support it and on CPUs where ``cpu_bf16_pays``; else None."""
    if fp32_forced():
        return None
    if device.type == "cuda":
        return autocast_dtype(device)
    if device.type == "cpu" and cpu_bf16_pays():
        return torch.bfloat16
    return None


_GEMMS = frozenset(
    {
        torch.ops.aten.mm.default,
        torch.ops.aten.addmm.default,
        torch.ops.aten.bmm.default,
        torch.ops.aten.baddbmm.default,
    }
)


def _to_fp32(value):
    return value.float() if isinstance(value, torch.Tensor) and value.dtype == torch.bfloat16 else value


class Bf16GemmsInFp32(TorchDispatchMode):
    """Inside: every matrix product of bf16 tensors runs in fp32 on the same (bf16) operands and is rounded back
    to bf16. The products of two bf16 numbers are exact in fp32, so this is a bf16 GEMM with fp32 accumulation,
    the arithmetic of bf16 hardware, at fp32 speed on a CPU that would otherwise emulate bf16 kernels."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _GEMMS and any(isinstance(a, torch.Tensor) and a.dtype == torch.bfloat16 for a in args):
            upcast = [_to_fp32(a) for a in args]  # (bias,) operands: tensors; alpha/beta: scalars
            return func(*upcast, **{k: _to_fp32(v) for k, v in kwargs.items()}).to(torch.bfloat16)
        return func(*args, **kwargs)


def bf16_gemms(device: torch.device) -> str:
    """How bf16 matrix products run on ``device`` under ``autocast``: 'native' (CUDA, or a CPU where bf16 pays)
    or 'fp32 products of bf16 operands' (``Bf16GemmsInFp32``, every other CPU)."""
    if device.type != "cpu" or cpu_bf16_pays():
        return "native"
    return "fp32 products of bf16 operands"


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """The one autocast context (engine forwards, pre-training steps): ``torch.autocast`` to ``dtype`` on
    ``device``'s type, or a no-op context for ``dtype=None`` (plain fp32). bf16 on a CPU where it does not pay
    runs its matrix products through ``Bf16GemmsInFp32`` (``bf16_gemms``).

    Example:
        >>> with autocast(torch.device("cpu"), None):
        ...     pass
    """
    if dtype is None:
        return contextlib.nullcontext()
    if dtype == torch.bfloat16 and bf16_gemms(device) != "native":
        stack = contextlib.ExitStack()
        stack.enter_context(torch.autocast(device_type=device.type, dtype=dtype))
        stack.enter_context(Bf16GemmsInFp32())
        return stack
    return torch.autocast(device_type=device.type, dtype=dtype)
