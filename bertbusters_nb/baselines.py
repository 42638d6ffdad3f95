"""Random-dimension baselines: the control every outlier result is compared against."""
from __future__ import annotations

from typing import Iterable

import numpy as np


def random_dims(size: int, count: int, draws: int, exclude: Iterable[int] = (), seed: int = 0) -> list[tuple[int, ...]]:
    """``draws`` seeded draws of ``count`` distinct dims from ``range(size)`` minus ``exclude``.

    Example:
        >>> random_dims(384, 2, draws=3, exclude=[223], seed=0)  # doctest: +SKIP
        [(12, 301), (87, 5), (250, 199)]
    """
    excluded = set(int(d) for d in exclude)
    pool = np.array([d for d in range(size) if d not in excluded])
    if count < 1 or draws < 1:
        raise ValueError(f"count and draws must be >= 1 (got count={count}, draws={draws}).")
    if count > len(pool):
        raise ValueError(f"Cannot draw {count} dims from the {len(pool)} left after excluding {len(excluded)}.")
    rng = np.random.default_rng(seed)
    return [tuple(int(d) for d in sorted(rng.choice(pool, size=count, replace=False))) for _ in range(draws)]


def rank_against(value: float, baseline: Iterable[float]) -> dict[str, float]:
    """Where ``value`` falls among random-draw values: mean, std, min, max, and the share it exceeds."""
    b = np.asarray(list(baseline), dtype=float)
    return {
        "value": float(value), "random_mean": float(b.mean()), "random_std": float(b.std(ddof=1)) if len(b) > 1 else 0.0,
        "random_min": float(b.min()), "random_max": float(b.max()), "draws": int(len(b)),
        "share_of_draws_below": float((b < value).mean()),
        "z_vs_random": float((value - b.mean()) / b.std(ddof=1)) if len(b) > 1 and b.std(ddof=1) > 0 else float("nan"),
    }
