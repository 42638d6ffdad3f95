"""A finished run folder as a model: ``load_run_model`` (weights into the run's architecture) and ``export_model``
(a loadable model folder such as bertbusters_nb/data/bbmini, with the run's log, norm trajectory and an eval check)."""

from __future__ import annotations

import io
import os
import shutil
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..atomic import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from ..device import best_device
from .checkpoints import load_weights
from .config import EVAL_CHECK_SEQUENCES, PretrainConfig
from .model import build_model
from .tokenizer import load_chunks

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["load_run_model", "export_model"]


def load_run_model(
    run_dir: str | os.PathLike, weights: str | os.PathLike | None = None, device: str | torch.device | None = None
) -> PreTrainedModel:
    """The model of a run folder (``final.safetensors`` or the given weights), in eval mode, fp32."""
    run_dir = Path(run_dir)
    saved = read_json(run_dir / "config.json")
    info = saved["data"]
    config = PretrainConfig.from_dict({f.name: saved[f.name] for f in fields(PretrainConfig) if f.name in saved})
    model = build_model(config, info["vocab_size"], info["seq_len"])
    load_weights(model, weights or run_dir / "final.safetensors")
    return model.to(best_device(None if device is None else str(device))).eval()


def export_model(
    run_dir: str | os.PathLike,
    model_dir: str | os.PathLike,
    dtype: torch.dtype = torch.float16,
    command: str | None = None,
) -> Path:
    """Write a loadable model folder (config, fp16 safetensors, tokenizer, log, norm trajectory).

    The saved config says float32, so ``load_model(model_dir)`` computes in fp32 on any device.

    Example:
        >>> export_model("runs/gpu/h256l4", "bertbusters_nb/data/bbmini")  # doctest: +SKIP
    """
    from transformers import AutoTokenizer

    run_dir, model_dir = Path(run_dir), Path(model_dir)
    run_config = read_json(run_dir / "config.json")
    model = load_run_model(run_dir, device="cpu")
    model_dir.mkdir(parents=True, exist_ok=True)
    model.to(dtype).save_pretrained(model_dir)
    model.config.dtype = torch.float32
    model.config.save_pretrained(model_dir)
    tokenizer_dir = Path(run_config["data_dir"]) / "tokenizer"
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(model_dir)
    if (tokenizer_dir / "vocab.txt").exists():
        shutil.copyfile(tokenizer_dir / "vocab.txt", model_dir / "vocab.txt")
    atomic_write_json(model_dir / "training_config.json", run_config)
    for name in ("train_log.csv", "norm_trajectory.npz", "ablation_trajectory.csv"):
        if (run_dir / name).exists():
            shutil.copyfile(run_dir / name, model_dir / name)
    heldout = load_chunks(run_config["data_dir"], "heldout")[:EVAL_CHECK_SEQUENCES]
    buffer = io.BytesIO()
    np.save(buffer, heldout)
    atomic_write_bytes(model_dir / "eval_check.npy", buffer.getvalue())
    if command:
        atomic_write_text(model_dir / "COMMAND.sh", command)
    return model_dir
