"""Pre-train a small post-LN BERT masked LM from scratch: resumable, logged, CPU or CUDA.

The trainer reads a data folder written by ``tokenizer_training.prepare_data`` (packed
uint16 chunks; no ``datasets`` needed here) and writes into ``out_dir``::

    config.json            the PretrainConfig of the run
    train_log.csv          per log point: step, tokens, train_loss, eval_loss, lr, seconds
    norm_trajectory.npz    per log point: weight and bias of every LayerNorm (see NormTrajectory)
    checkpoints/step_N/    resumable state (weights, optimizer, RNG, log), written to a temp
                           folder and renamed into place, so a kill never leaves a half checkpoint
    snapshots/step_N.safetensors   fp16 weights at ``snapshot_steps`` (for ablation over steps)
    final.safetensors      fp16 weights at the last step

Recipe (measured in issue 4): AdamW, linear warm-up then a CONSTANT learning rate, so a run
stopped at step N equals a run configured with ``max_steps=N``. The MLM loss is computed on
the masked positions only: their hidden states are gathered before the prediction head,
which skips the vocabulary projection at the other 85% of positions (~6x faster on CPU).
Each step's batch and masks are a pure function of (seed, step), so a resumed run ends
bit-identical to an uninterrupted one on the same device.

Masking: exactly ``round(mask_rate * (seq_len - 2))`` non-special positions per sequence
(a fixed count keeps tensor shapes static), of which 80% become [MASK], 10% a random token,
10% stay unchanged.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .device import autocast_dtype, best_device
from .results import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from .tokenizer_training import SPECIAL_TOKENS, load_chunks, unigram_entropy

log = logging.getLogger(__name__)

PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(len(SPECIAL_TOKENS))
N_SPECIAL = len(SPECIAL_TOKENS)
IGNORE = -100
EVAL_CHECK_SEQUENCES = 128  # held-out chunks shipped with an exported model to re-check its eval loss
LOG_COLUMNS = ["step", "tokens", "train_loss", "eval_loss", "lr", "seconds"]
CHANGEABLE_ON_RESUME = {"max_steps", "time_limit_s", "device", "keep_checkpoints", "snapshot_steps", "save_every"}


def _f(default, help: str):  # noqa: A002 - dataclass field with help text
    return field(default=default, metadata={"help": help})


@dataclass
class PretrainConfig:
    """Everything that decides a pre-training run; saved in config.json and in every checkpoint.

    Example:
        >>> PretrainConfig(data_dir=".gpu/data", hidden=128, layers=4, max_steps=2000).tokens_per_step
        8192
    """

    data_dir: str = _f(".gpu/data", "data folder written by tokenizer_training.prepare_data")
    hidden: int = _f(256, "hidden size")
    layers: int = _f(4, "encoder layers")
    heads: int = _f(4, "attention heads")
    intermediate: int = _f(1024, "feed-forward size")
    batch_size: int = _f(64, "sequences per step")
    lr: float = _f(1e-3, "peak learning rate (held constant after warm-up)")
    warmup_steps: int = _f(1000, "linear warm-up steps")
    max_steps: int = _f(10_000, "optimizer steps")
    weight_decay: float = _f(0.01, "AdamW weight decay (none on LayerNorm parameters and biases)")
    clip: float = _f(1.0, "gradient-norm clip")
    beta1: float = _f(0.9, "AdamW beta1")
    beta2: float = _f(0.999, "AdamW beta2")
    eps: float = _f(1e-6, "AdamW epsilon")
    mask_rate: float = _f(0.15, "share of positions predicted (80% [MASK], 10% random, 10% kept)")
    seed: int = _f(0, "seed of the initialisation, data order and masks")
    log_every: int = _f(250, "steps between log points (train/eval loss, norm parameters)")
    save_every: int = _f(1000, "steps between resumable checkpoints")
    keep_checkpoints: int = _f(1, "resumable checkpoints kept (the newest)")
    snapshot_steps: tuple = _f((), "steps at which fp16 weights are kept in snapshots/")
    eval_sequences: int = _f(512, "held-out sequences for the eval loss")
    eval_batch_size: int = _f(128, "sequences per eval batch")
    device: str = _f("auto", "auto | cpu | cuda | cuda:N")
    time_limit_s: float = _f(0.0, "stop at the first log point after this many seconds (0: no limit)")

    def __post_init__(self):
        self.snapshot_steps = tuple(sorted(int(s) for s in self.snapshot_steps))
        positive = ("hidden", "layers", "heads", "intermediate", "batch_size", "max_steps", "log_every",
                    "save_every", "keep_checkpoints", "eval_sequences", "eval_batch_size")
        bad = [name for name in positive if getattr(self, name) < 1]
        if bad:
            raise ValueError(f"{bad} must be >= 1.")
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads}).")
        if not 0 < self.mask_rate < 1:
            raise ValueError(f"mask_rate must lie in (0, 1), got {self.mask_rate}.")
        if self.lr <= 0 or self.warmup_steps < 0 or self.clip <= 0:
            raise ValueError("lr and clip must be positive and warmup_steps >= 0.")
        from .checks import seconds

        seconds("time_limit_s", self.time_limit_s, zero_means="no limit")

    @property
    def data_info(self) -> dict:
        path = Path(self.data_dir) / "data.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: build it with tokenizer_training.prepare_data.")
        return read_json(path)

    @property
    def tokens_per_step(self) -> int:
        seq_len = self.data_info["seq_len"] if (Path(self.data_dir) / "data.json").exists() else 128
        return self.batch_size * seq_len

    def to_dict(self) -> dict:
        d = asdict(self)
        d["snapshot_steps"] = list(self.snapshot_steps)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PretrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"Unknown PretrainConfig fields {sorted(unknown)}.")
        return cls(**d)


# ----------------------------------------------------------------------------- model

def build_model(config: PretrainConfig, vocab_size: int | None = None, seq_len: int | None = None):
    """A freshly initialised post-LN ``BertForMaskedLM`` (no dropout, tied embeddings), seeded by config.seed.

    Example:
        >>> model = build_model(PretrainConfig(hidden=128, layers=2, heads=2, intermediate=256), 8192, 128)  # doctest: +SKIP
    """
    from transformers import BertConfig, BertForMaskedLM

    if vocab_size is None or seq_len is None:
        info = config.data_info
        vocab_size, seq_len = vocab_size or info["vocab_size"], seq_len or info["seq_len"]
    bert_config = BertConfig(
        vocab_size=vocab_size, hidden_size=config.hidden, num_hidden_layers=config.layers,
        num_attention_heads=config.heads, intermediate_size=config.intermediate,
        max_position_embeddings=seq_len, type_vocab_size=2, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, pad_token_id=PAD_ID, tie_word_embeddings=True,
    )
    with _seeded(config.seed):
        model = BertForMaskedLM(bert_config)
    return model


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(state)


def mask_tokens(ids: torch.Tensor, mask_rate: float, vocab_size: int,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BERT masking with a fixed count per sequence: (inputs, positions (B, n), labels (B, n)).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> ids = torch.tensor([[2, 10, 11, 12, 13, 14, 15, 3]])
        >>> inputs, positions, labels = mask_tokens(ids, 0.34, 20, g)
        >>> positions.shape, bool((labels == ids.gather(1, positions)).all())
        (torch.Size([1, 2]), True)
    """
    batch, length = ids.shape
    n = max(1, round(mask_rate * (length - 2)))
    device = ids.device
    special = ids < N_SPECIAL
    scores = torch.rand(batch, length, generator=generator, device=device).masked_fill_(special, -1.0)
    positions = scores.topk(n, dim=1).indices                                  # (B, n)
    original = ids.gather(1, positions)
    action = torch.rand(batch, n, generator=generator, device=device)
    random_ids = torch.randint(N_SPECIAL, vocab_size, (batch, n), generator=generator, device=device)
    is_special = original < N_SPECIAL
    new = torch.where(action < 0.8, torch.full_like(original, MASK_ID),
                      torch.where(action < 0.9, random_ids, original))
    new = torch.where(is_special, original, new)
    inputs = ids.scatter(1, positions, new)
    labels = original.masked_fill(is_special, IGNORE)
    return inputs, positions, labels


def masked_logits(model, inputs: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Prediction-head logits at ``positions`` only: (B, n, vocab)."""
    hidden = model.bert(input_ids=inputs).last_hidden_state                     # (B, T, H)
    picked = hidden.gather(1, positions.unsqueeze(-1).expand(-1, -1, hidden.size(-1)))  # (B, n, H)
    return model.cls(picked)


def mlm_loss(model, inputs: torch.Tensor, positions: torch.Tensor, labels: torch.Tensor,
             reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy (nats) of the masked positions, the head run on those positions only."""
    logits = masked_logits(model, inputs, positions)
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE, reduction=reduction)


def _autocast(device: torch.device):
    dtype = autocast_dtype(device)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


@torch.no_grad()
def eval_mlm_loss(model, chunks: np.ndarray, batch_size: int = 128, mask_rate: float = 0.15,
                  seed: int = 1234, max_sequences: int | None = None) -> float:
    """Mean masked-LM loss (nats per predicted token) on packed chunks, with masks fixed by ``seed``.

    Masks are drawn on the CPU, so they are the same on every device. The model's mode is
    restored afterwards.

    Example:
        >>> eval_mlm_loss(model, load_chunks(".gpu/data", "heldout"), max_sequences=256)  # doctest: +SKIP
        3.41
    """
    device = next(model.parameters()).device
    vocab = model.config.vocab_size
    chunks = chunks[:max_sequences] if max_sequences else chunks
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    try:
        for start in range(0, len(chunks), batch_size):
            ids = torch.from_numpy(chunks[start:start + batch_size].astype(np.int64))
            inputs, positions, labels = mask_tokens(ids, mask_rate, vocab, generator)
            with _autocast(device):
                loss = mlm_loss(model, inputs.to(device), positions.to(device), labels.to(device), "sum")
            total += loss.double()
            count += int((labels != IGNORE).sum())
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("No predicted positions: the eval chunks are empty.")
    return float(total) / count


# ----------------------------------------------------------------------------- norm trajectory

@dataclass
class NormTrajectory:
    """LayerNorm weight and bias of every norm site at each log point.

    steps: (C,). weight, bias: (C, S, H) float32. names, roles: (S,) site names and roles
    (norms.find_norm_sites); layers: (S,) layer index, -1 outside the layers.

    Example:
        >>> traj = NormTrajectory.load("models/bbmini/norm_trajectory.npz")  # doctest: +SKIP
        >>> traj.table(roles=["block_output"]).head()  # doctest: +SKIP
    """

    names: list[str]
    roles: list[str]
    layers: list[int]
    steps: list[int] = field(default_factory=list)
    weight: list[np.ndarray] = field(default_factory=list)
    bias: list[np.ndarray] = field(default_factory=list)

    @classmethod
    def for_model(cls, model) -> "NormTrajectory":
        from .model.norms import find_norm_sites

        sites = find_norm_sites(model)
        return cls([s.name for s in sites], [s.role for s in sites], [-1 if s.layer is None else s.layer for s in sites])

    def record(self, model, step: int) -> None:
        modules = dict(model.named_modules())
        self.steps.append(int(step))
        self.weight.append(np.stack([modules[n].weight.detach().float().cpu().numpy() for n in self.names]))
        self.bias.append(np.stack([modules[n].bias.detach().float().cpu().numpy() for n in self.names]))

    def truncate(self, step: int) -> None:
        keep = [i for i, s in enumerate(self.steps) if s <= step]
        self.steps = [self.steps[i] for i in keep]
        self.weight = [self.weight[i] for i in keep]
        self.bias = [self.bias[i] for i in keep]

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, steps=np.array(self.steps, dtype=np.int64), weight=np.stack(self.weight),
                            bias=np.stack(self.bias), names=np.array(self.names), roles=np.array(self.roles),
                            layers=np.array(self.layers, dtype=np.int64))
        return buffer.getvalue()

    @classmethod
    def load(cls, path: str | os.PathLike) -> "NormTrajectory":
        with np.load(path, allow_pickle=False) as z:
            return cls([str(n) for n in z["names"]], [str(r) for r in z["roles"]], [int(l) for l in z["layers"]],
                       [int(s) for s in z["steps"]], list(z["weight"]), list(z["bias"]))

    def table(self, roles: Sequence[str] | None = None, layers: Sequence[int] | None = None):
        """Tidy DataFrame: step, site, role, layer, param ('weight'/'bias'), dim, value, z (within site x param)."""
        import pandas as pd

        frames = []
        for param, arrays in (("weight", self.weight), ("bias", self.bias)):
            values = np.stack(arrays)                                          # (C, S, H)
            z = (values - values.mean(-1, keepdims=True)) / values.std(-1, ddof=1, keepdims=True).clip(1e-12)
            C, S, H = values.shape
            frame = pd.DataFrame({
                "step": np.repeat(self.steps, S * H), "site": np.tile(np.repeat(self.names, H), C),
                "role": np.tile(np.repeat(self.roles, H), C), "layer": np.tile(np.repeat(self.layers, H), C),
                "param": param, "dim": np.tile(np.arange(H), C * S),
                "value": values.ravel(), "z": z.ravel()})
            frames.append(frame)
        table = pd.concat(frames, ignore_index=True)
        if roles is not None:
            table = table[table.role.isin(list(roles))]
        if layers is not None:
            table = table[table.layer.isin(list(layers))]
        return table.reset_index(drop=True)


# ----------------------------------------------------------------------------- checkpoints

def _unique_state(model, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
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


def save_weights(model, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
    """Atomically save the model's weights (tied duplicates dropped) as safetensors."""
    from safetensors.torch import save

    return atomic_write_bytes(path, save(_unique_state(model, dtype)))


def load_weights(model, path: str | os.PathLike) -> None:
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


def _tied_names(model) -> set[str]:
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


def _write_checkpoint(out_dir: Path, model, optimizer, state: dict, trajectory: NormTrajectory, keep: int) -> Path:
    root = out_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{state['step']:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-{final.name}-"))
    try:
        save_weights(model, tmp / "model.safetensors")
        buffer = io.BytesIO()
        torch.save(optimizer.state_dict(), buffer)
        atomic_write_bytes(tmp / "optimizer.pt", buffer.getvalue())
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        buffer = io.BytesIO()
        torch.save(rng, buffer)
        atomic_write_bytes(tmp / "rng.pt", buffer.getvalue())
        atomic_write_bytes(tmp / "norm_trajectory.npz", trajectory.to_bytes())
        atomic_write_json(tmp / "state.json", state)  # written last: marks the folder complete
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in checkpoint_dirs(out_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _read_checkpoint(path: Path, model, optimizer, device: torch.device) -> tuple[dict, NormTrajectory]:
    load_weights(model, path / "model.safetensors")
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device, weights_only=True))
    rng = torch.load(path / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return read_json(path / "state.json"), NormTrajectory.load(path / "norm_trajectory.npz")


# ----------------------------------------------------------------------------- training

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


def make_optimizer(model, config: PretrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings only (none on LayerNorm parameters and biases)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.dim() < 2 else decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps,
                             fused=device.type == "cuda")


def lr_at(step: int, config: PretrainConfig) -> float:
    """Linear warm-up over ``warmup_steps`` (step 0 gets lr/warmup), then constant."""
    if config.warmup_steps == 0:
        return config.lr
    return config.lr * min(1.0, (step + 1) / config.warmup_steps)


class _Batches:
    """Step -> batch of chunk rows: each epoch a permutation seeded by (seed, epoch)."""

    def __init__(self, chunks: np.ndarray, batch_size: int, seed: int, device: torch.device):
        if len(chunks) < batch_size:
            raise ValueError(f"Only {len(chunks)} training chunks for a batch of {batch_size}.")
        self.data = torch.from_numpy(chunks.astype(np.int64)).to(device)
        self.batch_size, self.seed, self.device = batch_size, seed, device
        self.per_epoch = len(chunks) // batch_size
        self._epoch, self._perm = -1, None

    def __call__(self, step: int) -> torch.Tensor:
        epoch, offset = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.data))
            self._epoch, self._perm = epoch, torch.from_numpy(perm).to(self.device)
        return self.data[self._perm[offset * self.batch_size:(offset + 1) * self.batch_size]]


def _step_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + step)


def pretrain(config: PretrainConfig, out_dir: str | os.PathLike, resume: bool = True, progress: bool = True,
             callback: Callable[[int], None] | None = None) -> PretrainResult:
    """Pre-train (or resume) a masked LM as ``config`` says; everything lands in ``out_dir``.

    ``resume=True`` continues from the newest complete checkpoint in ``out_dir`` (its config
    must match, except max_steps, time_limit_s, device, save_every, keep_checkpoints and
    snapshot_steps); ``resume=False`` deletes old checkpoints and starts over. ``callback(step)``
    runs after every step (tests use it to simulate a crash).

    Example:
        >>> cfg = PretrainConfig(data_dir=".gpu/data", hidden=128, layers=4, max_steps=3000)
        >>> result = pretrain(cfg, "runs/pretrain-cpu")  # doctest: +SKIP
        >>> result.log[-1]["eval_loss"]  # doctest: +SKIP
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = best_device(None if config.device == "auto" else config.device)
    info = config.data_info
    train_chunks = load_chunks(config.data_dir, "train")
    eval_chunks = load_chunks(config.data_dir, "heldout")[:config.eval_sequences]
    vocab, seq_len = info["vocab_size"], info["seq_len"]
    tokens_per_step = config.batch_size * seq_len

    model = build_model(config, vocab, seq_len).to(device).train()
    optimizer = make_optimizer(model, config, device)
    trajectory = NormTrajectory.for_model(model)
    for stale in (out_dir / "checkpoints").glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    state = {"step": 0, "seconds": 0.0, "log": []}
    latest = checkpoint_dirs(out_dir)
    if latest and resume:
        saved_config = read_json(latest[-1] / "state.json")["config"]
        _check_resumable(PretrainConfig.from_dict(saved_config), config)
        state, trajectory = _read_checkpoint(latest[-1], model, optimizer, device)
        log.info("resumed %s at step %d", out_dir, state["step"])
    elif latest:
        shutil.rmtree(out_dir / "checkpoints")
    atomic_write_json(out_dir / "config.json", {**config.to_dict(), "data": info, "environment": _environment(device)})

    def write_outputs() -> None:
        atomic_write_text(out_dir / "train_log.csv", _log_csv(state["log"]))
        atomic_write_bytes(out_dir / "norm_trajectory.npz", trajectory.to_bytes())

    def log_point(step: int, train_loss: float) -> dict:
        row = {"step": step, "tokens": step * tokens_per_step, "train_loss": train_loss,
               "eval_loss": eval_mlm_loss(model, eval_chunks, config.eval_batch_size, config.mask_rate),
               "lr": lr_at(max(step - 1, 0), config) if step else 0.0, "seconds": round(state["seconds"], 3)}
        state["log"].append(row)
        trajectory.record(model, step)
        write_outputs()
        return row

    if state["step"] == 0 and not state["log"]:
        log_point(0, float("nan"))
        if 0 in config.snapshot_steps:
            save_weights(model, out_dir / "snapshots" / f"step_{0:08d}.safetensors", torch.float16)
    batches = _Batches(train_chunks, config.batch_size, config.seed, device)
    loss_sum = torch.zeros((), device=device)
    losses_since_log = 0
    started = time.perf_counter()
    tick = time.perf_counter()
    stopped_early = False
    bar = _progress(progress, state["step"], config.max_steps)
    step = state["step"]
    while step < config.max_steps:
        ids = batches(step)
        inputs, positions, labels = mask_tokens(ids, config.mask_rate, vocab, _step_generator(config.seed, step, device))
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config)
        with _autocast(device):
            loss = mlm_loss(model, inputs, positions, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        optimizer.step()
        loss_sum += loss.detach()
        losses_since_log += 1
        step += 1
        bar.update(1)
        out_of_time = bool(config.time_limit_s) and time.perf_counter() - started > config.time_limit_s
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
                _write_checkpoint(out_dir, model, optimizer, state, trajectory, config.keep_checkpoints)
            tick = time.perf_counter()
        if step in config.snapshot_steps:
            save_weights(model, out_dir / "snapshots" / f"step_{step:08d}.safetensors", torch.float16)
        if callback is not None:
            callback(step)
        if at_log and out_of_time and step < config.max_steps:
            stopped_early = True
            log.warning("time limit %.0f s reached: stopped at step %d of %d", config.time_limit_s, step,
                        config.max_steps)
            break
    bar.close()
    save_weights(model, out_dir / "final.safetensors", torch.float16)
    rows = state["log"]
    speed = rows[-1]["tokens"] / rows[-1]["seconds"] if len(rows) > 1 and rows[-1]["seconds"] > 0 else float("nan")
    return PretrainResult(out_dir, step, rows, stopped_early, speed)


def _environment(device: torch.device) -> dict:
    import platform

    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "device": str(device), "autocast": str(autocast_dtype(device)),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()}


def _check_resumable(saved: PretrainConfig, wanted: PretrainConfig) -> None:
    a, b = saved.to_dict(), wanted.to_dict()
    differ = {k for k in a if a[k] != b[k] and k not in CHANGEABLE_ON_RESUME}
    if differ:
        raise ValueError(f"The checkpoint was made with other settings for {sorted(differ)} "
                         f"({ {k: a[k] for k in differ} }); pass resume=False or another out_dir.")


def _log_csv(rows: list[dict]) -> str:
    import pandas as pd

    return pd.DataFrame(rows, columns=LOG_COLUMNS).to_csv(index=False)


def _progress(enabled: bool, initial: int, total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="pre-training", unit="step", disable=not enabled,
                mininterval=2.0, smoothing=0.05)


def run_throughput(config: PretrainConfig, steps: int = 50, warmup: int = 5, seconds: float | None = None) -> float:
    """Training tokens/s of this trainer for ``config`` (no logging, eval or checkpoints).

    Times ``steps`` steps after ``warmup`` untimed ones, or stops early once ``seconds`` have passed.

    Example:
        >>> run_throughput(PretrainConfig(hidden=128, layers=4), steps=20)  # doctest: +SKIP
    """
    device = best_device(None if config.device == "auto" else config.device)
    info = config.data_info
    model = build_model(config, info["vocab_size"], info["seq_len"]).to(device).train()
    optimizer = make_optimizer(model, config, device)
    batches = _Batches(load_chunks(config.data_dir, "train"), config.batch_size, config.seed, device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    start, timed = 0.0, 0
    for step in range(warmup + steps):
        if step == warmup:
            sync()
            start = time.perf_counter()
        inputs, positions, labels = mask_tokens(batches(step), config.mask_rate, info["vocab_size"],
                                                _step_generator(config.seed, step, device))
        with _autocast(device):
            loss = mlm_loss(model, inputs, positions, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        optimizer.step()
        if step >= warmup:
            timed += 1
            if seconds is not None and time.perf_counter() - start > seconds:
                break
    sync()
    return timed * config.batch_size * info["seq_len"] / (time.perf_counter() - start)


# ----------------------------------------------------------------------------- analysis

def load_run_model(run_dir: str | os.PathLike, weights: str | os.PathLike | None = None,
                   device: str | torch.device | None = None):
    """The model of a run folder (``final.safetensors`` or the given weights), in eval mode, fp32."""
    run_dir = Path(run_dir)
    saved = read_json(run_dir / "config.json")
    info = saved["data"]
    config = PretrainConfig.from_dict({f.name: saved[f.name] for f in fields(PretrainConfig) if f.name in saved})
    model = build_model(config, info["vocab_size"], info["seq_len"])
    load_weights(model, weights or run_dir / "final.safetensors")
    return model.to(best_device(None if device is None else str(device))).eval()


def select_outlier_dims(model, chunks: np.ndarray | None = None, fallback_count: int = 2,
                        max_sequences: int = 64) -> tuple[list[int], str, "object"]:
    """The project's one rule (``detection.detect``) on a run's model: (dims, rule, Detection).

    Parameters of every norm site, and, with ``chunks`` (token ids of held-out sequences), the hidden
    states of the first ``max_sequences`` of them. A snapshot at initialisation has no outliers (its
    LayerNorms are ones and zeros, its hidden states even): rule 'strongest candidates', the
    ``fallback_count`` dims ranked best by the same evidence, so an ablation always has dims to test.

    Example:
        >>> dims, rule, found = select_outlier_dims(model, heldout)  # doctest: +SKIP
    """
    from .detection import activation_profile, detect

    profile = None
    if chunks is not None and len(chunks):
        device = next(model.parameters()).device
        rows = chunks[:max_sequences].astype(np.int64)
        batches = [{"input_ids": torch.from_numpy(rows[i:i + 32]).to(device)} for i in range(0, len(rows), 32)]
        profile = activation_profile(model, batches)
    found = detect(model, profile=profile, fallback=fallback_count)
    return found.dims, found.rule, found


def ablation_effect(model, chunks: np.ndarray, dims: Sequence[int], draws: int = 20,
                    roles: Sequence[str] = ("block_output",), seed: int = 0, batch_size: int = 128,
                    max_sequences: int | None = None) -> dict:
    """Eval-loss rise when ``dims`` are zeroed (weight and bias) in every ``roles`` LayerNorm, vs random dims.

    Returns base_loss, outlier_loss, delta, random_deltas (``draws`` draws of as many random
    dims, the outlier dims excluded) and baselines.rank_against's summary.

    Example:
        >>> ablation_effect(model, heldout, [125, 9], draws=20)["share_of_draws_below"]  # doctest: +SKIP
        1.0
    """
    from .model.ablation import disabled_dims
    from .baselines import random_dims, rank_against
    from .model.norms import find_norm_sites, select_sites

    sites = select_sites(find_norm_sites(model), roles=list(roles))

    def loss() -> float:
        return eval_mlm_loss(model, chunks, batch_size, max_sequences=max_sequences)

    base = loss()
    with disabled_dims(sites, dims):
        outlier = loss()
    random_deltas = []
    for draw in random_dims(sites[0].size, len(dims), draws, exclude=dims, seed=seed):
        with disabled_dims(sites, draw):
            random_deltas.append(loss() - base)
    rank = rank_against(outlier - base, random_deltas)
    return {"dims": [int(d) for d in dims], "roles": list(roles), "base_loss": base, "outlier_loss": outlier,
            "delta": outlier - base, "random_deltas": random_deltas, **rank}


def ablation_trajectory(run_dir: str | os.PathLike, dims: Sequence[int] | None = None, draws: int = 20,
                        max_sequences: int = 256, device: str | None = None, progress: bool = True,
                        data_dir: str | os.PathLike | None = None):
    """Ablation effect at every snapshot of a run: the given dims, or each snapshot's own LayerNorm outliers.

    Example:
        >>> ablation_trajectory("runs/gpu/h256l4", dims=[125, 9])  # doctest: +SKIP
    """
    import pandas as pd
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    chunks = load_chunks(data_dir or read_json(run_dir / "config.json")["data_dir"], "heldout")
    snaps = {int(p.stem.split("_")[1]): p for p in (run_dir / "snapshots").glob("step_*.safetensors")}
    if (run_dir / "final.safetensors").exists() and (run_dir / "train_log.csv").exists():
        import pandas as pd

        snaps.setdefault(int(pd.read_csv(run_dir / "train_log.csv")["step"].iloc[-1]), run_dir / "final.safetensors")
    rows = []
    for step, path in tqdm(sorted(snaps.items()), desc="ablation over steps", disable=not progress):
        model = load_run_model(run_dir, path, device)
        chosen, rule = (list(dims), "given") if dims is not None else select_outlier_dims(model, chunks)[:2]
        effect = ablation_effect(model, chunks, chosen, draws, max_sequences=max_sequences)
        rows.append({"step": step, "rule": rule,
                     **{k: v for k, v in effect.items() if k not in ("random_deltas", "roles", "dims")},
                     "dims": " ".join(map(str, chosen))})
    return pd.DataFrame(rows)


def export_model(run_dir: str | os.PathLike, model_dir: str | os.PathLike, dtype: torch.dtype = torch.float16,
                 command: str | None = None) -> Path:
    """Write a loadable model folder (config, fp16 safetensors, tokenizer, log, norm trajectory).

    The saved config says float32, so ``load_model(model_dir)`` computes in fp32 on any device.

    Example:
        >>> export_model("runs/gpu/h256l4", "models/bbmini")  # doctest: +SKIP
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


def model_metrics(model_dir: str | os.PathLike, data_dir: str | os.PathLike, draws: int = 20,
                  ablation_sequences: int = 512, check_sequences: int = EVAL_CHECK_SEQUENCES, seed: int = 0,
                  progress: bool = True) -> dict:
    """The numbers METRICS.json records for a model folder, computed here (fp32, this machine's device).

    eval_loss on every held-out chunk; the unigram entropy of the same tokenizer on the same
    text; LayerNorm outlier dims per role; the ablation of the block-output outliers against
    ``draws`` random draws (and each outlier dim alone); ``eval_loss_check`` on the first
    ``check_sequences`` chunks, which a test recomputes in seconds.

    Example:
        >>> model_metrics("models/bbmini", ".gpu/data")["ablation"]["share_of_draws_below"]  # doctest: +SKIP
        1.0
    """
    from .model.loading import load_model
    from .model.norms import find_norm_sites, select_sites
    from .outliers import find_outliers

    model, _ = load_model(str(model_dir), head="mlm")
    heldout, train = load_chunks(data_dir, "heldout"), load_chunks(data_dir, "train")
    sites = find_norm_sites(model)
    outliers = {}
    for name, roles in (("block_output", ["block_output"]), ("attention_output", ["attention_output"]),
                        ("block_and_attention_output", ["block_output", "attention_output"])):
        report = find_outliers(select_sites(sites, roles=roles))
        outliers[name] = {"sites": report.n_sites, "min_sites": report.min_layers, "dims": report.dims,
                          "top": report.per_dim.head(8).to_dict(orient="records")}
    dims, rule, _ = select_outlier_dims(model, heldout)
    effect = ablation_effect(model, heldout, dims, draws, seed=seed, max_sequences=ablation_sequences)
    single = {}
    for dim in dims:
        single[str(dim)] = ablation_effect(model, heldout, [dim], draws=2, seed=seed,
                                           max_sequences=ablation_sequences)["delta"]
    from .activations import activation_stats, outlier_share

    batches = [{"input_ids": torch.from_numpy(heldout[i:i + 32].astype(np.int64))} for i in range(0, 128, 32)]
    per_dim, top = activation_stats(model, batches, progress=False)
    share = outlier_share(top, dims[:1])
    magnitude = per_dim[per_dim.dim == dims[0]].set_index("layer")["abs_ratio_to_median"]
    hidden_states = {"dim": dims[0], "sequences": 128, "layers": [int(l) for l in share.layer],
                     "input_share_top_dim": [float(x) for x in share.input_share],
                     "token_share_top_dim": [float(x) for x in share.token_share],
                     "mean_abs_over_median_dim": [float(magnitude.get(l, float("nan"))) for l in share.layer]}
    vocab = model.config.vocab_size
    training = {}
    if (Path(model_dir) / "train_log.csv").exists():
        import pandas as pd

        last = pd.read_csv(Path(model_dir) / "train_log.csv").iloc[-1]
        training = {"steps": int(last.step), "tokens": int(last.tokens), "final_train_loss": float(last.train_loss),
                    "final_eval_loss_logged": float(last.eval_loss), "training_seconds": float(last.seconds)}
    return {**training,
        "eval_loss": eval_mlm_loss(model, heldout), "eval_sequences": int(len(heldout)),
        "eval_loss_check": {"sequences": check_sequences, "file": "eval_check.npy",
                            "loss": eval_mlm_loss(model, heldout, max_sequences=check_sequences)},
        "unigram_entropy_eval": unigram_entropy(heldout, vocab_size=vocab),
        "unigram_cross_entropy_train_to_eval": unigram_entropy(heldout, reference=train, vocab_size=vocab),
        "outliers": outliers, "ablation_dims_rule": rule,
        "ablation": {**effect, "sequences": ablation_sequences}, "ablation_single_dim_delta": single,
        "hidden_states": hidden_states,
    }


# ----------------------------------------------------------------------------- command line

def _config_args(parser: argparse.ArgumentParser) -> None:
    for f in fields(PretrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "snapshot_steps":
            parser.add_argument(flag, type=int, nargs="*", default=None, help=f.metadata["help"])
        else:
            parser.add_argument(flag, type=type(f.default), default=None, help=f.metadata["help"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bertbusters_nb.pretraining", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="train the WordPiece tokenizer and pack the corpora (needs datasets)")
    prep.add_argument("--out", required=True)
    prep.add_argument("--corpora", nargs="*", default=["movie_reviews", "snli", "kjv"])
    prep.add_argument("--vocab-size", type=int, default=8192)
    prep.add_argument("--seq-len", type=int, default=128)
    prep.add_argument("--tokenizer-dir", help="reuse this saved tokenizer (e.g. models/bbmini) instead of training one")
    prep.add_argument("--max-texts", type=int, help="first N train and N held-out texts per corpus (quick runs)")
    train = sub.add_parser("train", help="pre-train (resumes from out's newest checkpoint)")
    train.add_argument("--out", required=True)
    train.add_argument("--no-resume", action="store_true", help="start over, deleting old checkpoints")
    train.add_argument("--no-progress", action="store_true")
    _config_args(train)
    speed = sub.add_parser("throughput", help="tokens/s of the training step alone")
    speed.add_argument("--steps", type=int, default=50)
    _config_args(speed)
    abl = sub.add_parser("ablation", help="ablation effect at every snapshot of a run -> ablation_trajectory.csv")
    abl.add_argument("--run", required=True)
    abl.add_argument("--dims", type=int, nargs="*", default=None, help="dims (default: final model's outliers)")
    abl.add_argument("--draws", type=int, default=20)
    abl.add_argument("--max-sequences", type=int, default=256)
    exp = sub.add_parser("export", help="write a loadable model folder from a run")
    exp.add_argument("--run", required=True)
    exp.add_argument("--model-dir", required=True)
    met = sub.add_parser("metrics", help="METRICS numbers of a model folder (eval loss, unigram, outliers, ablation)")
    met.add_argument("--model-dir", required=True)
    met.add_argument("--data-dir", required=True)
    met.add_argument("--draws", type=int, default=20)
    met.add_argument("--ablation-sequences", type=int, default=512)
    met.add_argument("--update", help="JSON file to merge the numbers into (written atomically)")
    return parser


def _config_from_args(args: argparse.Namespace) -> PretrainConfig:
    given = {f.name: getattr(args, f.name) for f in fields(PretrainConfig) if getattr(args, f.name) is not None}
    return PretrainConfig(**given)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bertbusters_nb.pretraining``."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.command == "prepare":
        from .tokenizer_training import prepare_data

        print(prepare_data(args.out, args.corpora, args.vocab_size, args.seq_len, tokenizer_dir=args.tokenizer_dir,
                           max_texts=args.max_texts))
    elif args.command == "train":
        result = pretrain(_config_from_args(args), args.out, resume=not args.no_resume, progress=not args.no_progress)
        last = result.log[-1]
        print(f"step {result.step}: train {last['train_loss']:.4f} eval {last['eval_loss']:.4f} "
              f"tokens/s {result.tokens_per_s:,.0f} stopped_early={result.stopped_early}")
    elif args.command == "throughput":
        print(f"{run_throughput(_config_from_args(args), args.steps):,.0f} tokens/s")
    elif args.command == "ablation":
        run = Path(args.run)
        dims = args.dims
        if dims is None:
            chunks = load_chunks(read_json(run / "config.json")["data_dir"], "heldout")
            dims = select_outlier_dims(load_run_model(run), chunks)[0]
        table = ablation_trajectory(run, dims, args.draws, args.max_sequences)
        own = ablation_trajectory(run, None, args.draws, args.max_sequences)
        import pandas as pd

        both = pd.concat([table.assign(selection="final"), own.assign(selection="own")], ignore_index=True)
        atomic_write_text(run / "ablation_trajectory.csv", both.to_csv(index=False))
        print(both.to_string())
    elif args.command == "export":
        print(export_model(args.run, args.model_dir))
    elif args.command == "metrics":
        numbers = model_metrics(args.model_dir, args.data_dir, args.draws, args.ablation_sequences)
        if args.update:
            old = read_json(args.update) if Path(args.update).exists() else {}
            atomic_write_json(args.update, {**old, **numbers})
        print(json.dumps(numbers, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
