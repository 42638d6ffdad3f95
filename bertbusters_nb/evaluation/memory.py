"""Out-of-memory policy of the engine: what counts as running out, and what to halve when it happens.

Results are sums over tokens, so halving the batch (or the number of conditions per forward) and
retrying the failed span gives the same numbers; only the schedule changes.
"""

from __future__ import annotations

import gc

import torch

__all__ = ["back_off", "default_cache_budget", "is_out_of_memory"]

CPU_CACHE_BUDGET = 2 * 1024**3  # bytes of cached layer inputs on the CPU


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA/CPU allocation failures (which the engine answers by halving the batch)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def default_cache_budget(device: torch.device) -> int:
    """Bytes the prefix cache may hold: a quarter of the free GPU memory, or 2 GiB on the CPU."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free // 4
    return CPU_CACHE_BUDGET


def back_off(
    exc: BaseException, device: torch.device, batch_size: int, conditions_per_forward: int
) -> tuple[int, int, str]:
    """After ``exc`` (an out-of-memory error): free what can be freed, then halve K first, else the batch.

    Returns (batch_size, conditions_per_forward, what changed); re-raises ``exc`` when both are already 1.
    """
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if conditions_per_forward > 1:
        conditions_per_forward //= 2
        return batch_size, conditions_per_forward, f"conditions_per_forward={conditions_per_forward}"
    if batch_size > 1:
        batch_size //= 2
        return batch_size, conditions_per_forward, f"batch_size={batch_size}"
    raise exc
