"""The command line ``python -m bertbusters_nb.finetuning --model minilm --task rt`` (``finetuning.__main__``).

Also ``python -m bertbusters_nb finetune ...`` and under ``accelerate launch -m`` / ``torchrun -m``. The flags are
built by transformers' ``HfArgumentParser`` from two dataclasses: ``FinetuneCommand`` (what to fine-tune, where
to cache it) and ``FinetuneSettings`` (how), so a new setting gets its flag and help text with no parser code.
Prints the cache entry's folder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from ..evaluation.tasks import GLUE_HUB
from .cache import CACHE_ENV
from .settings import FinetuneSettings
from .trainer import finetune

__all__ = ["FinetuneCommand", "build_parser", "parse", "main"]

PROG = "python -m bertbusters_nb.finetuning"


@dataclass
class FinetuneCommand:
    """What to fine-tune and where the result is cached (the command line's share beside FinetuneSettings)."""

    model: str = field(metadata={"help": "alias (minilm, bbmini), local folder or hub name"})
    task: str = field(metadata={"help": "task name, e.g. rt, snli, mnli, sst2"})
    cache_dir: str | None = field(
        default=None, metadata={"help": f"cache folder (default ${CACHE_ENV} or ~/.cache/...)"}
    )
    glue_source: str = field(default=GLUE_HUB, metadata={"help": "GLUE hub name or a local copy of it"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:1, mps ..."})
    recompute: bool = field(default=False, metadata={"help": "train again even when a cached entry exists"})


def build_parser(prog: str = PROG) -> HfArgumentParser:
    """The fine-tuning command line: every field of FinetuneCommand and FinetuneSettings is a ``--flag``."""
    return HfArgumentParser(
        (FinetuneCommand, FinetuneSettings),
        prog=prog,
        description="Fine-tune an encoder on a classification task with the Hugging Face ``Trainer``, cached.",
    )


def parse(argv: list[str] | None = None, prog: str = PROG) -> tuple[FinetuneCommand, FinetuneSettings]:
    """The command and the settings of a command line (bad settings raise ValueError naming the field).

    Example:
        >>> command, settings = parse(["--model", "minilm", "--task", "rt", "--epochs", "2"])
        >>> command.task, settings.epochs
        ('rt', 2.0)
    """
    parser = build_parser(prog)
    command, settings, unknown = parser.parse_args_into_dataclasses(
        argv, return_remaining_strings=True, look_for_args_file=False
    )
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return command, settings


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Fine-tune (or reuse the cached fine-tune) and print the cache entry's folder."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    command, settings = parse(argv, prog)
    result = finetune(
        command.model,
        command.task,
        settings,
        cache_dir=command.cache_dir,
        device=command.device,
        glue_source=command.glue_source,
        recompute=command.recompute,
    )
    print(result.path)
    return 0
