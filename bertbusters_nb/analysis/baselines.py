"""Random-dimension baselines: the control every outlier result is compared against."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from ..evaluation.conditions import random_dims  # noqa: F401  (drawn where conditions are made: layer 3)


def rank_against(value: float, baseline: Iterable[float]) -> dict[str, float]:
    """Where ``value`` falls among random-draw values: mean, std, min, max, and the share it exceeds."""
    b = np.asarray(list(baseline), dtype=float)
    return {
        "value": float(value),
        "random_mean": float(b.mean()),
        "random_std": float(b.std(ddof=1)) if len(b) > 1 else 0.0,
        "random_min": float(b.min()),
        "random_max": float(b.max()),
        "draws": int(len(b)),
        "share_of_draws_below": float((b < value).mean()),
        "z_vs_random": float((value - b.mean()) / b.std(ddof=1)) if len(b) > 1 and b.std(ddof=1) > 0 else float("nan"),
    }


def damage(value: float, intact: float, worse: str) -> float:
    """How much worse than ``intact`` ``value`` is, in the objective's units: the change in the ``worse``
    direction ('higher': a loss increase; 'lower': a drop of a cosine, an accuracy).

    Example:
        >>> damage(0.9, 1.0, "lower")
        0.09999999999999998
    """
    return value - intact if worse == "higher" else intact - value
