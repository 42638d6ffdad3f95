"""Corpora and offline assets: the lowest layer above the base files (imports nothing else of the package).

``texts`` reads the corpora (``load_texts``, ``sample_texts``, the fixed held-out split), ``assets`` says where
the offline assets live and fetches the source-only ones. ``from bertbusters_nb.data import load_texts`` works as
it did when this was one file ``data.py``.

``texts`` needs ``datasets`` (a heavy import), ``assets`` needs nothing: the names of ``texts`` are loaded on first
use (PEP 562 module ``__getattr__``), so ``from bertbusters_nb.data import assets`` (the model loader does it)
keeps ``import bertbusters_nb`` as light as before.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import assets

_FROM_TEXTS = (
    "HELD_OUT_PERCENT",
    "HUB_CORPORA",
    "OFFLINE_CORPORA",
    "corpus_texts",
    "is_held_out",
    "load_texts",
    "sample_texts",
)
__all__ = ["assets", "texts", *_FROM_TEXTS]


def __getattr__(name: str) -> Any:
    if name == "texts" or name in _FROM_TEXTS:
        texts = importlib.import_module(f"{__name__}.texts")
        return texts if name == "texts" else getattr(texts, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
