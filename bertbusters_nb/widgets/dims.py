"""Which dims the explorer offers: the one rule's candidates as toggles, and the screen's ranking on demand.

``candidate_dims`` asks the project's one rule (``analysis.detection.detect``) for the toggles shown at start.
``screen_ranking_table`` ranks every dim by its effect on the explorer's own objective and texts,
through the screen (``evaluation.screen.screened_scan``: every dim estimated from gradients at once, the top ``n``
checked exactly by the engine, with any dims the caller adds). It costs a forward and a backward over the
eval set plus an evaluation per checked dim, so the explorer computes it only when asked (the "suggest dims from the screen" toggle).

Example:
    >>> toggles, default = candidate_dims(model, tokenizer, 6)          # doctest: +SKIP
    >>> screen_ranking_table(model, eval_set, roles=("block_output",), n=8)[["dim", "effect"]]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd
import torch

from ..evaluation.sets import EvalSet
from ..model.edits import Mode
from ..model.sites import NormSite

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

RANKING_COLUMNS = ("rank", "dim", "effect", "value_kind", "estimate", "objective", "method")


def candidate_dims(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase | None, count: int, **rule_options
) -> tuple[list[int], list[int]]:
    """(``count`` dims to offer as toggles, the default dims to ablate among them), both from the one rule
    (``analysis.detection.detect``): the default dims first, then the next strongest candidates by its rank combination.
    ``tokenizer`` None: parameters only."""
    from ..analysis.detection import detect

    found = detect(model, tokenizer, **rule_options)
    dims = list(found.dims[:count])
    for d in found.table.dim:
        if len(dims) >= count:
            break
        if int(d) not in dims:
            dims.append(int(d))
    return dims, [d for d in found.dims if d in dims]


def screen_ranking_table(
    model: torch.nn.Module,
    eval_set: EvalSet,
    roles: Sequence[str],
    layers: Sequence[int] | None = None,
    mode: Mode = "zero",
    n: int = 8,
    sites: Sequence[NormSite] | None = None,
    also_check: Sequence[int] = (),
) -> pd.DataFrame:
    """The ``n`` dims the screen ranks most harmful to disable alone at the chosen sites, most harmful first.

    The screen checks its first ``n`` dims exactly, and ``also_check`` too (the explorer passes the rule's
    dims: on MiniLM's 16 held-out reviews the estimate missed dim 99, the most harmful alone, measured
    2026-12-01); the ``n`` largest exact
    effects among them are returned. Columns ``RANKING_COLUMNS``: ``rank`` (1 = most harmful), ``dim``,
    ``effect`` (exact change of the objective, > 0 is harm), ``value_kind``, ``estimate`` (the screen's
    estimate), ``objective`` (``eval_loss`` or ``embedding_distance``), ``method``. The model is restored
    bit for bit (the screen's edits are undone).
    """
    from ..evaluation.screen import screen_ranking, screened_scan

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer (got {n!r}).")
    if not roles:
        raise ValueError("No site role chosen: tick at least one site role to rank dims there.")
    table = screened_scan(
        model,
        eval_set,
        roles=tuple(roles),
        layers=None if layers is None else tuple(layers),
        mode=mode,
        top_k=n,
        sites=sites,
        progress=False,
        also_check=list(also_check),
    )
    dims = screen_ranking(table, n)
    ranked = table.set_index("dim").loc[dims].reset_index()
    ranked.insert(0, "rank", range(1, len(ranked) + 1))
    return ranked[list(RANKING_COLUMNS)]


__all__ = ["RANKING_COLUMNS", "candidate_dims", "screen_ranking_table"]
