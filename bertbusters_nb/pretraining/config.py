"""What decides a pre-training run: ``PretrainConfig`` (saved in config.json and in every checkpoint).

Its fields carry their help text, so the command line is built from them by transformers'
``HfArgumentParser`` (``pretraining.cli``) and nothing retypes a flag by hand.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..atomic import read_json
from ..checks import seconds
from .tokenizer import SPECIAL_TOKENS

__all__ = [
    "PretrainConfig",
    "PAD_ID",
    "UNK_ID",
    "CLS_ID",
    "SEP_ID",
    "MASK_ID",
    "N_SPECIAL",
    "IGNORE",
    "EVAL_CHECK_SEQUENCES",
    "LOG_COLUMNS",
    "CHANGEABLE_ON_RESUME",
    "check_resumable",
]

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

    data_dir: str = _f(".gpu/data", "data folder written by the prepare command (pretraining.tokenizer.prepare_data)")
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
    # Typed list[int] so HfArgumentParser reads it as `--snapshot-steps 0 250 ...`; stored as a sorted tuple.
    snapshot_steps: list[int] = field(
        default_factory=list, metadata={"help": "steps at which fp16 weights are kept in snapshots/"}
    )
    eval_sequences: int = _f(512, "held-out sequences for the eval loss")
    eval_batch_size: int = _f(128, "sequences per eval batch")
    device: str = _f("auto", "auto | cpu | cuda | cuda:N")
    time_limit_s: float = _f(0.0, "stop at the first log point after this many seconds (0: no limit)")

    def __post_init__(self):
        self.snapshot_steps = tuple(sorted(int(s) for s in self.snapshot_steps))
        positive = (
            "hidden",
            "layers",
            "heads",
            "intermediate",
            "batch_size",
            "max_steps",
            "log_every",
            "save_every",
            "keep_checkpoints",
            "eval_sequences",
            "eval_batch_size",
        )
        bad = [name for name in positive if getattr(self, name) < 1]
        if bad:
            raise ValueError(f"{bad} must be >= 1.")
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads}).")
        if not 0 < self.mask_rate < 1:
            raise ValueError(f"mask_rate must lie in (0, 1), got {self.mask_rate}.")
        if self.lr <= 0 or self.warmup_steps < 0 or self.clip <= 0:
            raise ValueError("lr and clip must be positive and warmup_steps >= 0.")
        seconds("time_limit_s", self.time_limit_s, zero_means="no limit")

    @property
    def data_info(self) -> dict:
        path = Path(self.data_dir) / "data.json"
        if not path.exists():
            raise FileNotFoundError(
                f"{path} is missing: build it with `python -m bertbusters_nb.pretraining prepare "
                f"--out {self.data_dir}` (pretraining.tokenizer.prepare_data)."
            )
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


def check_resumable(saved: PretrainConfig, wanted: PretrainConfig) -> None:
    """Refuse to resume a checkpoint made with other settings (those in CHANGEABLE_ON_RESUME may differ)."""
    a, b = saved.to_dict(), wanted.to_dict()
    differ = {k for k in a if a[k] != b[k] and k not in CHANGEABLE_ON_RESUME}
    if differ:
        raise ValueError(
            f"The checkpoint was made with other settings for {sorted(differ)} "
            f"({ {k: a[k] for k in differ} }); pass resume=False or another out_dir."
        )
