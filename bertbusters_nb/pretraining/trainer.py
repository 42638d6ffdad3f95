"""The pre-training loop: one training step, logging, checkpoints, resume; one process or data-parallel.

Recipe (measured in issue 4): AdamW, linear warm-up then a CONSTANT learning rate, so a run
stopped at step N equals a run configured with ``max_steps=N``. Each step's batch and masks are
a pure function of (seed, step), so a resumed run ends bit-identical to an uninterrupted one on
the same device.

Data-parallel: under ``accelerate launch`` (or ``torchrun``) with several processes, ``pretrain``
runs the same recipe through accelerate's ``Accelerator``: every process draws the step's global
batch and masks, takes its shard of the rows (``batch_size`` must divide by the number of
processes), and the gradients are all-reduced, scaled so that they equal the one-process gradient
of the global batch's mean loss. Every process keeps the same weights; only the main process logs
and writes files (checkpoints atomically), and every process resumes from the same checkpoint.
One process (no launcher) runs the plain loop, without accelerate.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..atomic import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from ..device import autocast_dtype, best_device
from ..evaluation.progress import progress_bar
from .checkpoints import checkpoint_dirs, read_checkpoint, remove_temporaries, save_weights, write_checkpoint
from .config import IGNORE, LOG_COLUMNS, PretrainConfig, check_resumable
from .model import build_model
from .norm_trajectory import NormTrajectory
from .objective import MaskedLM, eval_mlm_loss, mask_fixed_count, masked_loss, train_autocast
from .tokenizer import load_chunks

__all__ = ["PretrainResult", "pretrain", "train_step", "make_optimizer", "lr_at", "world_size"]

log = logging.getLogger(__name__)


@dataclass
class PretrainResult:
    """What ``pretrain`` returns. log: the train log rows; stopped_early: stopped by time_limit_s."""

    out_dir: Path
    step: int
    log: list[dict]
    stopped_early: bool
    tokens_per_s: float

    def log_frame(self):
        import pandas as pd

        return pd.DataFrame(self.log)


def make_optimizer(model: torch.nn.Module, config: PretrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings only (none on LayerNorm parameters and biases)."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        (no_decay if param.dim() < 2 else decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(
        groups, lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps, fused=device.type == "cuda"
    )


def lr_at(step: int, config: PretrainConfig) -> float:
    """Linear warm-up over ``warmup_steps`` (step 0 gets lr/warmup), then constant."""
    if config.warmup_steps == 0:
        return config.lr
    return config.lr * min(1.0, (step + 1) / config.warmup_steps)


class EpochBatches:
    """Step -> batch of chunk rows: each epoch a permutation seeded by (seed, epoch)."""

    def __init__(self, chunks: np.ndarray, batch_size: int, seed: int, device: torch.device):
        if len(chunks) < batch_size:
            raise ValueError(f"Only {len(chunks)} training chunks for a batch of {batch_size}.")
        self.data = torch.from_numpy(chunks.astype(np.int64)).to(device)
        self.batch_size, self.seed, self.device = batch_size, seed, device
        self.per_epoch = len(chunks) // batch_size
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)  # the permutation of epoch _epoch

    def __call__(self, step: int) -> torch.Tensor:
        epoch, offset = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.data))
            self._epoch, self._perm = epoch, torch.from_numpy(perm).to(self.device)
        return self.data[self._perm[offset * self.batch_size : (offset + 1) * self.batch_size]]


def _step_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + step)


def world_size() -> int:
    """Processes of this run: WORLD_SIZE as ``accelerate launch`` / ``torchrun`` set it (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


class _Parallel:
    """accelerate's Accelerator for a data-parallel run: the shard of each batch, the scaled loss, the reductions."""

    def __init__(self, config: PretrainConfig):
        from accelerate import Accelerator

        cpu = config.device == "cpu" or not torch.cuda.is_available()
        self.accelerator = Accelerator(cpu=cpu, mixed_precision="no")  # autocast is the trainer's own (bf16 on GPU)
        self.world, self.rank = self.accelerator.num_processes, self.accelerator.process_index
        if config.device not in ("auto", "cpu", "cuda"):
            log.warning(
                "device=%r ignored on %d processes: each process uses its own, here %s",
                config.device,
                self.world,
                self.accelerator.device,
            )
        if config.batch_size % self.world:
            fits = config.batch_size // self.world * self.world or self.world
            raise ValueError(
                f"batch_size ({config.batch_size}) must divide by the number of processes "
                f"({self.world}): pass --batch-size {fits} or launch another number of processes."
            )
        share = config.batch_size // self.world
        self.rows = slice(self.rank * share, (self.rank + 1) * share)

    @property
    def device(self) -> torch.device:
        device = self.accelerator.device  # this process's GPU; on the CPU "cpu:0", which torch.load refuses
        return torch.device("cpu") if device.type == "cpu" else device

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def barrier(self) -> None:
        self.accelerator.wait_for_everyone()

    def any(self, flag: bool) -> bool:
        """Whether any process says ``flag`` (so that every process takes the same branch)."""
        value = torch.tensor([float(flag)], device=self.device)
        return bool(self.accelerator.reduce(value, reduction="sum").item() > 0)


def train_step(
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ids: torch.Tensor,
    step: int,
    config: PretrainConfig,
    vocab_size: int,
    device: torch.device,
    parallel: _Parallel | None = None,
) -> torch.Tensor:
    """One optimizer step on the global batch ``ids`` (B, T): masks, lr, forward, backward, clip, AdamW.

    ``net`` maps (inputs, positions) to the masked positions' logits (a :class:`MaskedLM`, DDP-wrapped when
    ``parallel``). Returns the step's mean loss over the global batch, detached (not synced to the host).
    """
    inputs, positions, labels = mask_fixed_count(
        ids, config.mask_rate, vocab_size, _step_generator(config.seed, step, device)
    )
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, config)
    if parallel is None:
        with train_autocast(device):
            loss = masked_loss(net(inputs, positions), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), config.clip)
        optimizer.step()
        return loss.detach()
    # This process's rows; the loss is its share of the global mean (sum / global count), times the
    # number of processes because DDP averages the gradients: the averaged gradient is the global one.
    rows = parallel.rows
    count = (labels != IGNORE).sum()
    with train_autocast(device):
        share = masked_loss(net(inputs[rows], positions[rows]), labels[rows], "sum") * (parallel.world / count)
    optimizer.zero_grad(set_to_none=True)
    parallel.accelerator.backward(share)
    parallel.accelerator.clip_grad_norm_(net.parameters(), config.clip)
    optimizer.step()
    return parallel.accelerator.reduce(share.detach(), reduction="sum") / parallel.world


def setup(config: PretrainConfig, parallel: _Parallel | None = None):
    """(device, data info, freshly built model in train mode, its optimizer) for ``config``."""
    device = parallel.device if parallel else best_device(None if config.device == "auto" else config.device)
    info = config.data_info
    model = build_model(config, info["vocab_size"], info["seq_len"]).to(device).train()
    optimizer = make_optimizer(model, config, device)
    return device, info, model, optimizer


def pretrain(
    config: PretrainConfig,
    out_dir: str | os.PathLike,
    resume: bool = True,
    progress: bool = True,
    callback: Callable[[int], None] | None = None,
) -> PretrainResult:
    """Pre-train (or resume) a masked LM as ``config`` says; everything lands in ``out_dir``.

    ``resume=True`` continues from the newest complete checkpoint in ``out_dir`` (its config
    must match, except max_steps, time_limit_s, device, save_every, keep_checkpoints and
    snapshot_steps); ``resume=False`` deletes old checkpoints and starts over. ``callback(step)``
    runs after every step (tests use it to simulate a crash). Under ``accelerate launch`` with
    several processes it trains data-parallel (see the module docstring).

    Example:
        >>> cfg = PretrainConfig(data_dir=".gpu/data", hidden=128, layers=4, max_steps=3000)
        >>> result = pretrain(cfg, "runs/pretrain-cpu")  # doctest: +SKIP
        >>> result.log[-1]["eval_loss"]  # doctest: +SKIP
    """
    parallel = _Parallel(config) if world_size() > 1 else None
    main = parallel is None or parallel.is_main
    out_dir = Path(out_dir)
    device, info, model, optimizer = setup(config, parallel)
    train_chunks = load_chunks(config.data_dir, "train")
    eval_chunks = load_chunks(config.data_dir, "heldout")[: config.eval_sequences]
    vocab, seq_len = info["vocab_size"], info["seq_len"]
    tokens_per_step = config.batch_size * seq_len

    trajectory = NormTrajectory.for_model(model)
    state: dict[str, Any] = {"step": 0, "seconds": 0.0, "log": []}
    latest = checkpoint_dirs(out_dir)
    if latest and resume:
        saved_config = read_json(latest[-1] / "state.json")["config"]
        check_resumable(PretrainConfig.from_dict(saved_config), config)
        state, trajectory = read_checkpoint(latest[-1], model, optimizer, device)
        log.info("resumed %s at step %d", out_dir, state["step"])
    if parallel:
        parallel.barrier()  # every process has read the checkpoint before the main one changes the folder
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_temporaries(out_dir)
        if latest and not resume:
            shutil.rmtree(out_dir / "checkpoints")
        atomic_write_json(
            out_dir / "config.json", {**config.to_dict(), "data": info, "environment": _environment(device)}
        )
    net = MaskedLM(model)
    if parallel:
        net, optimizer = parallel.accelerator.prepare(net, optimizer)

    def write_outputs() -> None:
        atomic_write_text(out_dir / "train_log.csv", _log_csv(state["log"]))
        atomic_write_bytes(out_dir / "norm_trajectory.npz", trajectory.to_bytes())

    def log_point(step: int, train_loss: float) -> dict:
        row = {
            "step": step,
            "tokens": step * tokens_per_step,
            "train_loss": train_loss,
            "eval_loss": eval_mlm_loss(model, eval_chunks, config.eval_batch_size, config.mask_rate),
            "lr": lr_at(max(step - 1, 0), config) if step else 0.0,
            "seconds": round(state["seconds"], 3),
        }
        state["log"].append(row)
        trajectory.record(model, step)
        if main:
            write_outputs()
        return row

    if state["step"] == 0 and not state["log"]:
        log_point(0, float("nan"))
        if 0 in config.snapshot_steps and main:
            save_weights(model, out_dir / "snapshots" / f"step_{0:08d}.safetensors", torch.float16)
    batches = EpochBatches(train_chunks, config.batch_size, config.seed, device)
    loss_sum = torch.zeros((), device=device)
    losses_since_log = 0
    started = time.perf_counter()
    tick = time.perf_counter()
    stopped_early = False
    bar = progress_bar(
        config.max_steps,
        progress and main,
        desc="pre-training",
        unit="step",
        initial=state["step"],
        mininterval=2.0,
        smoothing=0.05,
    )
    step = state["step"]
    while step < config.max_steps:
        loss_sum += train_step(net, optimizer, batches(step), step, config, vocab, device, parallel)
        losses_since_log += 1
        step += 1
        bar.update(1)
        out_of_time = bool(config.time_limit_s) and time.perf_counter() - started > config.time_limit_s
        if parallel and config.time_limit_s:
            out_of_time = parallel.any(out_of_time)  # the same decision in every process
        at_log = step % config.log_every == 0 or step == config.max_steps or out_of_time
        if at_log:
            train_loss = float(loss_sum) / losses_since_log  # syncs the device
            now = time.perf_counter()
            state["seconds"] += now - tick
            state["step"] = step
            row = log_point(step, train_loss)
            loss_sum.zero_()
            losses_since_log = 0
            bar.set_postfix(train=f"{train_loss:.3f}", eval=f"{row['eval_loss']:.3f}")
            if step % config.save_every == 0 or step == config.max_steps or out_of_time:
                state["config"] = config.to_dict()
                if main:
                    write_checkpoint(out_dir, model, optimizer, state, trajectory, config.keep_checkpoints)
            tick = time.perf_counter()
        if step in config.snapshot_steps and main:
            save_weights(model, out_dir / "snapshots" / f"step_{step:08d}.safetensors", torch.float16)
        if callback is not None:
            callback(step)
        if at_log and out_of_time and step < config.max_steps:
            stopped_early = True
            log.warning(
                "time limit %.0f s reached: stopped at step %d of %d", config.time_limit_s, step, config.max_steps
            )
            break
    bar.close()
    if main:
        save_weights(model, out_dir / "final.safetensors", torch.float16)
    if parallel:
        parallel.barrier()  # the files are complete when pretrain returns, in every process
    rows = state["log"]
    speed = rows[-1]["tokens"] / rows[-1]["seconds"] if len(rows) > 1 and rows[-1]["seconds"] > 0 else float("nan")
    return PretrainResult(out_dir, step, rows, stopped_early, speed)


def _environment(device: torch.device) -> dict:
    import platform

    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": str(device),
        "autocast": str(autocast_dtype(device)),
        "processes": world_size(),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
    }


def _log_csv(rows: list[dict]) -> str:
    import pandas as pd

    return pd.DataFrame(rows, columns=LOG_COLUMNS).to_csv(index=False)
