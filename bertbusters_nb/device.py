"""One place that picks the compute device, so no module hard-codes one."""
from __future__ import annotations

import torch


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
    """bf16 autocast on GPUs that support it; None (plain fp32) on the CPU, where bf16 measured slower."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None
