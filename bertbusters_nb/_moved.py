"""Old import paths kept working for one release after the move into subpackages.

A module that moved leaves a two-line file at its old path::

    from ._moved import forward
    __getattr__, __dir__ = forward(__name__, "bertbusters_nb.evaluation.engine")

Every name read through the old path warns once (FutureWarning, shown in notebooks too) with the new path (PEP 562 module
``__getattr__``, as TransformerLens's ``hook_points`` does for its renames) and returns the
object from the new module, so ``from bertbusters_nb.engine import EvalEngine`` keeps working
and says where to import it from now. Package code never imports through these files (the
layering test enforces it).
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any, Callable

__all__ = ["forward"]


def forward(old: str, new: str) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module ``__getattr__`` and ``__dir__`` for a shim at ``old`` that forwards to ``new``."""
    warned: set[str] = set()

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        target = importlib.import_module(new)
        try:
            value = getattr(target, name)
        except AttributeError:
            raise AttributeError(f"module {old!r} moved to {new!r}, which has no attribute {name!r}") from None
        if name not in warned:
            warned.add(name)
            warnings.warn(
                f"{old}.{name} moved to {new}.{name}; import it from {new} (the old path works for one release)",
                FutureWarning,
                stacklevel=2,
            )
        return value

    def __dir__() -> list[str]:
        return sorted(set(dir(importlib.import_module(new))))

    return __getattr__, __dir__
