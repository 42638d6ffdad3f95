"""Training throughput of the trainer's own step (no logging, eval or checkpoints): ``run_throughput``."""

from __future__ import annotations

import time

import torch

from .config import PretrainConfig
from .objective import MaskedLM
from .tokenizer import load_chunks
from .trainer import EpochBatches, setup, train_step

__all__ = ["run_throughput"]


def run_throughput(config: PretrainConfig, steps: int = 50, warmup: int = 5, seconds: float | None = None) -> float:
    """Training tokens/s of this trainer for ``config`` (no logging, eval or checkpoints).

    Times ``steps`` steps of ``trainer.train_step`` (the very step ``pretrain`` runs) after ``warmup``
    untimed ones, or stops early once ``seconds`` have passed.

    Example:
        >>> run_throughput(PretrainConfig(hidden=128, layers=4), steps=20)  # doctest: +SKIP
    """
    device, info, model, optimizer = setup(config)
    net = MaskedLM(model)
    batches = EpochBatches(load_chunks(config.data_dir, "train"), config.batch_size, config.seed, device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    start, timed = 0.0, 0
    for step in range(warmup + steps):
        if step == warmup:
            sync()
            start = time.perf_counter()
        train_step(net, optimizer, batches(step), step, config, info["vocab_size"], device)
        if step >= warmup:
            timed += 1
            if seconds is not None and time.perf_counter() - start > seconds:
                break
    sync()
    return timed * config.batch_size * info["seq_len"] / (time.perf_counter() - start)
