"""Fine-tuning with the Hugging Face ``Trainer``, cached (layer 4: imports data, model, evaluation and base only).

``settings``: FinetuneSettings (the protocol, validated). ``cache``: the cache key, the entry folder, its manifest
and checks, the atomic writer. ``trainer``: ``finetune`` (reuse or train, resume from a Trainer checkpoint, several
processes under ``accelerate launch``). ``cli``: the command line (``python -m bertbusters_nb.finetuning``).

Import from here, e.g. ``from bertbusters_nb.finetuning import FinetuneSettings, finetune``.
"""

from __future__ import annotations

from .cache import (
    CACHE_ENV,
    FORMAT_VERSION,
    MANIFEST,
    CacheWarning,
    cache_key,
    check_entry,
    default_cache_dir,
    entry_path,
)
from .cli import build_parser, main
from .settings import NOT_IN_KEY, FinetuneSettings
from .trainer import FinetuneResult, finetune, per_device_batch_size

__all__ = [
    "CACHE_ENV",
    "FORMAT_VERSION",
    "MANIFEST",
    "NOT_IN_KEY",
    "CacheWarning",
    "FinetuneResult",
    "FinetuneSettings",
    "cache_key",
    "check_entry",
    "default_cache_dir",
    "entry_path",
    "finetune",
    "per_device_batch_size",
    "build_parser",
    "main",
]
