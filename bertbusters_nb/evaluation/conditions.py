"""The standard sets of ablation conditions the notebooks compare, as data.

Each condition's name is ``"<group>: <detail>"`` so result tables group by ``condition_group``.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ..model.ablation import Condition
from ..model.edits import Mode


def random_dims(size: int, count: int, draws: int, exclude: Iterable[int] = (), seed: int = 0) -> list[tuple[int, ...]]:
    """``draws`` seeded draws of ``count`` distinct dims from ``range(size)`` minus ``exclude`` (the dims of
    the random-dimension baseline every outlier result is compared against; ``analysis.baselines`` re-exports it).

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


def condition_group(name: str) -> str:
    """'random: 3' -> 'random'; 'none' -> 'none'."""
    return name.split(":", 1)[0]


def with_groups(table: pd.DataFrame) -> pd.DataFrame:
    """Add a ``group`` column from the condition names (first column after ``condition``)."""
    table = table.copy()
    table.insert(1, "group", table["condition"].map(condition_group))
    return table


def layer_ranges(n_layers: int, parts: int) -> list[tuple[int, ...]]:
    """``parts`` contiguous, near-equal ranges covering layers 0..n_layers-1 (fewer when there are fewer layers)."""
    if n_layers < 1 or parts < 1:
        raise ValueError(f"n_layers and parts must be >= 1 (got {n_layers}, {parts}).")
    return [tuple(int(l) for l in chunk) for chunk in np.array_split(np.arange(n_layers), min(parts, n_layers))]


def outlier_conditions(
    dims: Sequence[int],
    roles: Sequence[str] = ("block_output",),
    mode: Mode = "zero",
    n_layers: int | None = None,
    parts: int = 3,
) -> list[Condition]:
    """No ablation (``none``), each outlier dim alone (``single: d``), all of them together (``outliers: all``)
    and, given ``n_layers``, all together in each of ``parts`` layer ranges (``outliers: layers a-b``; a range
    covering every layer is ``outliers: all`` already).

    Example:
        >>> [c.name for c in outlier_conditions([7, 9], n_layers=4, parts=2)]  # doctest: +SKIP
        ['none', 'single: 7', 'single: 9', 'outliers: all', 'outliers: layers 0-1', 'outliers: layers 2-3']
    """
    roles = tuple(roles)
    out = [Condition("none")]
    out += [Condition(f"single: {d}", (d,), roles, mode=mode) for d in dims]
    if dims:
        out.append(Condition("outliers: all", tuple(dims), roles, mode=mode))
    for layers in layer_ranges(n_layers, parts) if n_layers is not None and dims else ():
        if n_layers is not None and len(layers) < n_layers:
            span = f"{layers[0]}" if len(layers) == 1 else f"{layers[0]}-{layers[-1]}"
            out.append(Condition(f"outliers: layers {span}", tuple(dims), roles, layers, mode=mode))
    return out


def random_conditions(
    size: int,
    count: int,
    draws: int,
    exclude: Sequence[int],
    roles: Sequence[str] = ("block_output",),
    seed: int = 0,
    mode: Mode = "zero",
) -> list[Condition]:
    """``draws`` random sets of ``count`` dims (excluding the outliers), same roles and mode."""
    return [
        Condition(f"random: {i}", d, tuple(roles), mode=mode)
        for i, d in enumerate(random_dims(size, count, draws, exclude=exclude, seed=seed))
    ]


def layer_range_conditions(
    dims: Sequence[int], n_layers: int, roles: Sequence[str] = ("block_output",)
) -> list[Condition]:
    """The outlier dims disabled in each layer alone, the first half, the second half, and all layers."""
    roles = tuple(roles)
    half = n_layers // 2
    out = [Condition(f"layers: {i}", tuple(dims), roles, layers=(i,)) for i in range(n_layers)]
    out += [
        Condition(f"layers: 0-{half - 1}", tuple(dims), roles, layers=tuple(range(half))),
        Condition(f"layers: {half}-{n_layers - 1}", tuple(dims), roles, layers=tuple(range(half, n_layers))),
        Condition("layers: all", tuple(dims), roles),
    ]
    return out


def role_conditions(dims: Sequence[int], available: Sequence[str]) -> list[Condition]:
    """The outlier dims disabled per site role, and in all encoder-layer roles plus embeddings at once."""
    wanted = [
        r for r in ("embeddings", "attention_output", "block_output", "pre_attention", "pre_ffn") if r in available
    ]
    out = [Condition(f"role: {r}", tuple(dims), (r,)) for r in wanted]
    if len(wanted) > 1:
        out.append(Condition(f"role: {'+'.join(wanted)}", tuple(dims), tuple(wanted)))
    return out


def mode_conditions(dims: Sequence[int], roles: Sequence[str] = ("block_output",)) -> list[Condition]:
    """Zeroing vs replacing by the site's mean (Sun et al. 2024: the mean often does little harm)."""
    return [Condition(f"mode: {m}", tuple(dims), tuple(roles), mode=m) for m in ("zero", "mean")]
