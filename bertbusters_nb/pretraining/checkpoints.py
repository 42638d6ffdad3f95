"""Weights and resumable checkpoints of a pre-training run, written all-or-nothing.

``checkpoints/step_N/`` holds model.safetensors, optimizer.pt, rng.pt, norm_trajectory.npz and
state.json (step, seconds, log, config). It is written through ``atomic.atomic_folder``: into a
temp folder beside it, fsynced, renamed into place, so a kill never leaves a half checkpoint and
``checkpoint_dirs`` lists complete ones only.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import torch

from ..atomic import atomic_folder, atomic_write_bytes, atomic_write_json, read_json
from .norm_trajectory import NormTrajectory

__all__ = ["save_weights", "load_weights", "checkpoint_dirs", "write_checkpoint", "read_checkpoint"]


def _unique_state(model: torch.nn.Module, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """State dict without tied duplicates, as contiguous CPU tensors (optionally cast)."""
    seen: set[int] = set()
    out = {}
    for name, tensor in model.state_dict().items():
        key = tensor.data_ptr()
        if key in seen:
            continue
        seen.add(key)
        t = tensor.detach().to("cpu")
        out[name] = (t.to(dtype) if dtype is not None and t.is_floating_point() else t).contiguous().clone()
    return out


def save_weights(model: torch.nn.Module, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
    """Atomically save the model's weights (tied duplicates dropped) as safetensors."""
    from safetensors.torch import save

    return atomic_write_bytes(path, save(_unique_state(model, dtype)))


def load_weights(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load weights saved by ``save_weights`` (any float dtype) into ``model``; only tied keys may be absent."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    own = model.state_dict()
    state = {k: v.to(own[k].dtype) for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = _tied_names(model)
    missing = [k for k in missing if k not in tied and not k.endswith(("position_ids", "token_type_ids"))]
    if missing or unexpected:
        raise ValueError(f"{path}: missing {missing}, unexpected {unexpected}.")


def _tied_names(model: torch.nn.Module) -> set[str]:
    ptrs: dict[int, str] = {}
    tied = set()
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in ptrs:
            tied.add(name)
        else:
            ptrs[tensor.data_ptr()] = name
    return tied


def checkpoint_dirs(out_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under ``out_dir/checkpoints``, oldest first (temp folders are ignored)."""
    root = Path(out_dir) / "checkpoints"
    if not root.exists():
        return []
    done = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and (p / "state.json").exists()]
    return sorted(done, key=lambda p: int(p.name.split("_")[1]))


def write_checkpoint(
    out_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict,
    trajectory: NormTrajectory,
    keep: int,
) -> Path:
    """Write ``checkpoints/step_N`` all-or-nothing, then delete all but the newest ``keep`` checkpoints."""
    final = out_dir / "checkpoints" / f"step_{state['step']:08d}"
    with atomic_folder(final) as tmp:
        save_weights(model, tmp / "model.safetensors")
        buffer = io.BytesIO()
        torch.save(optimizer.state_dict(), buffer)
        atomic_write_bytes(tmp / "optimizer.pt", buffer.getvalue())
        rng: dict[str, torch.Tensor | list[torch.Tensor]] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        buffer = io.BytesIO()
        torch.save(rng, buffer)
        atomic_write_bytes(tmp / "rng.pt", buffer.getvalue())
        atomic_write_bytes(tmp / "norm_trajectory.npz", trajectory.to_bytes())
        atomic_write_json(tmp / "state.json", state)  # written last: marks the folder complete
    for old in checkpoint_dirs(out_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
) -> tuple[dict, NormTrajectory]:
    """Load a checkpoint into ``model`` and ``optimizer`` and restore the RNG; returns (state, trajectory)."""
    load_weights(model, path / "model.safetensors")
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device, weights_only=True))
    rng = torch.load(path / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return read_json(path / "state.json"), NormTrajectory.load(path / "norm_trajectory.npz")


def remove_temporaries(out_dir: Path) -> None:
    """Delete temp folders under ``out_dir/checkpoints`` (left by a killed writer; called before a run starts)."""
    for stale in (out_dir / "checkpoints").glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
