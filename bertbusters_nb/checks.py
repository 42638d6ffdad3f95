"""Checks of counts and durations at the package's entry points.

A negative count sliced into a list (``texts[:-5]``) silently takes almost everything, and a
zero count often means "all" in one place and "none" in another; each public function that takes
a count says which it accepts, through these two helpers, and refuses the rest with a message
that names the argument and its range.
"""

from __future__ import annotations

import math
from typing import Any, Literal, overload


@overload
def count(name: str, value: Any, *, zero_means: str | None = None, none_ok: Literal[False] = False) -> int: ...
@overload
def count(name: str, value: Any, *, zero_means: str | None = None, none_ok: bool) -> int | None: ...
def count(name: str, value: Any, *, zero_means: str | None = None, none_ok: bool = False) -> int | None:
    """``value`` as a positive int; 0 only when ``zero_means`` says what it means, None when ``none_ok``.

    Example:
        >>> count("n_texts", 0, zero_means="all")
        0
    """
    if value is None and none_ok:
        return None
    zero = f", or 0 ({zero_means})" if zero_means else ""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        and not (hasattr(value, "__index__") and not isinstance(value, float))
    ):
        raise ValueError(f"{name} must be an integer >= 1{zero}; got {type(value).__name__} {value!r}.")
    value = int(value)
    if value < 0 or (value == 0 and not zero_means):
        raise ValueError(f"{name} must be an integer >= 1{zero}; got {value}.")
    return value


def seconds(name: str, value: Any, *, zero_means: str | None = None) -> float:
    """``value`` as a positive, finite number of seconds (0 only when ``zero_means`` says what it means)."""
    zero = f", or 0 ({zero_means})" if zero_means else ""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not zero_means)
    ):
        raise ValueError(f"{name} must be a number of seconds > 0{zero}; got {value!r}.")
    return float(value)
