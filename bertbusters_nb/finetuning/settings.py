"""How to fine-tune: one dataclass whose fields carry their help text (the command line is built from it).

Defaults are the follow-up's GLUE protocol (Puccetti et al. 2022). ``__post_init__`` refuses bad values with
the field named, so a bad setting fails before any data is read or any model loaded.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

# Settings that do not change the trained weights: left out of the cache key.
NOT_IN_KEY = ("max_eval_samples", "eval_batch_size", "checkpoint_steps")


@dataclass
class FinetuneSettings:
    """How to fine-tune. Defaults: the follow-up's GLUE protocol (Puccetti et al. 2022).

    epochs: passes over the training set. learning_rate: peak AdamW rate (linear decay).
    batch_size: TOTAL examples per optimizer step, over all processes and accumulation.
    max_length: truncation length in tokens (batches are padded only to their longest).
    weight_decay: AdamW weight decay. warmup_ratio: share of steps with linear warmup.
    seed: seeds the classifier head's initialisation, dropout and the data order.
    max_train_samples / max_eval_samples: seeded subsample sizes (None: the whole split).
    max_steps: stop after this many optimizer steps (None: run the epochs).
    gradient_accumulation_steps: steps whose gradients add up to one update.
    group_by_length: draw batches of similar length (HF's length-grouped sampler): less padding,
    a faster CPU run, a slightly different data order than the protocol's plain shuffle.
    eval_batch_size: examples per forward when evaluating (does not change the weights).
    checkpoint_steps: save a resumable Trainer checkpoint every this many steps (0: never).
    """

    epochs: float = field(default=4.0, metadata={"help": "passes over the training set"})
    learning_rate: float = field(default=2e-5, metadata={"help": "peak learning rate"})
    batch_size: int = field(default=32, metadata={"help": "total batch size per optimizer step"})
    max_length: int = field(default=256, metadata={"help": "truncation length in tokens"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    warmup_ratio: float = field(default=0.0, metadata={"help": "share of steps with linear warmup"})
    seed: int = field(default=42, metadata={"help": "training seed"})
    max_train_samples: int | None = field(default=None, metadata={"help": "train on a seeded sample of this size"})
    max_eval_samples: int | None = field(default=None, metadata={"help": "evaluate on a seeded sample of this size"})
    max_steps: int | None = field(default=None, metadata={"help": "stop after this many optimizer steps"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "gradient accumulation steps"})
    group_by_length: bool = field(default=False, metadata={"help": "batch examples of similar length (less padding)"})
    eval_batch_size: int = field(default=64, metadata={"help": "evaluation batch size"})
    checkpoint_steps: int = field(default=500, metadata={"help": "resumable checkpoint every N steps (0: never)"})

    def __post_init__(self):
        positive = {
            "epochs": self.epochs,
            "learning_rate": self.learning_rate,
            "batch_size": self.batch_size,
            "max_length": self.max_length,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "eval_batch_size": self.eval_batch_size,
        }
        bad = {k: v for k, v in positive.items() if isinstance(v, bool) or not v > 0}
        for name in ("max_train_samples", "max_eval_samples", "max_steps"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                bad[name] = value
        if self.weight_decay < 0 or not 0 <= self.warmup_ratio < 1 or self.checkpoint_steps < 0:
            bad.update(
                weight_decay=self.weight_decay, warmup_ratio=self.warmup_ratio, checkpoint_steps=self.checkpoint_steps
            )
        if bad:
            raise ValueError(
                f"Invalid fine-tuning settings {bad}: sizes, steps and rates must be positive "
                f"(samples/steps may be None), warmup_ratio in [0, 1), weight_decay >= 0."
            )
        if self.batch_size % self.gradient_accumulation_steps:
            raise ValueError(
                f"batch_size {self.batch_size} is not a multiple of gradient_accumulation_steps "
                f"{self.gradient_accumulation_steps}."
            )

    def key_fields(self) -> dict:
        """The settings that change the trained weights (the cache key's share)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in NOT_IN_KEY}
