"""Sentences for notebooks, built from numbers computed in the run (never typed by hand)."""
from __future__ import annotations

from typing import Sequence

from .baselines import rank_against


def versus_random(value: float, random_values: Sequence[float], metric: str, worse: str = "higher",
                  label: str = "the outlier dims") -> tuple[bool, str]:
    """Did ``value`` move ``metric`` further (in the ``worse`` direction) than every random draw?

    Returns ``(held, sentence)``; ``held`` is True only when the value is beyond all draws.

    Example:
        >>> versus_random(0.95, [0.99, 0.98], "cosine to intact", worse="lower")[0]
        True
    """
    if worse not in ("higher", "lower"):
        raise ValueError("worse must be 'higher' or 'lower'.")
    stats = rank_against(value, random_values)
    beyond = stats["value"] > stats["random_max"] if worse == "higher" else stats["value"] < stats["random_min"]
    share = stats["share_of_draws_below"] if worse == "higher" else 1 - stats["share_of_draws_below"]
    sentence = (
        f"With {label} disabled, {metric} is {value:.4g}; over {stats['draws']} random draws of the same size it is "
        f"{stats['random_mean']:.4g} ± {stats['random_std']:.2g} (range {stats['random_min']:.4g} to "
        f"{stats['random_max']:.4g}). The outlier result is {'beyond every' if beyond else 'not beyond every'} "
        f"random draw ({share:.0%} of draws are less damaging)."
    )
    return bool(beyond), sentence


def verdict(held: bool | None) -> str:
    return {True: "**The paper's claim held here.**", False: "**The paper's claim did not hold here.**",
            None: "**Inconclusive here.**"}[held]


def scan_ranks(scan, dims: Sequence[int], metric: str = "eval_loss") -> str:
    """Where the chosen dims rank among all dims of a single-dim scan (1 = most damaging)."""
    ranked = scan.sort_values(metric, ascending=False).reset_index(drop=True)
    ranks = {int(d): int(ranked.index[ranked["dim"] == d][0]) + 1 for d in dims if (ranked["dim"] == d).any()}
    top = ", ".join(f"{int(r.dim)} ({getattr(r, metric):.3f})" for r in ranked.head(3).itertuples())
    where = ", ".join(f"dim {d} ranks {r} of {len(ranked)}" for d, r in ranks.items())
    return f"In the single-dim scan ({metric}), the most damaging dims are {top}; {where}."
