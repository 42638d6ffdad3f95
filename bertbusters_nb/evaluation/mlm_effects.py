"""Masked-LM effects of an ablation that a reader can see: fill-in-the-blank predictions, verdicts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import pandas as pd
import torch

from ..checks import count
from ..model.ablation import Condition
from ..model.discovery import find_norm_sites
from ..model.sites import NormSite
from .fill_mask import blank_predictions
from .sets import EvalSet

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def top_predictions(
    model: PreTrainedModel | torch.nn.Module, tokenizer: PreTrainedTokenizerBase, sentence: str, top_k: int = 5
) -> list[list[str]]:
    """Top-k tokens for each [MASK] of ``sentence`` (one list per mask, in order): ``blank_predictions`` as lists."""
    table = blank_predictions(model, tokenizer, sentence, top_k=top_k)
    return [group.sort_values("rank").token.tolist() for _, group in table.groupby("blank", sort=True)]


def fill_in_the_blanks(
    model: PreTrainedModel | torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    sentences: Sequence[str],
    condition: Condition,
    sites: Sequence[NormSite] | None = None,
    top_k: int = 5,
) -> pd.DataFrame:
    """Per sentence and mask: the intact model's top-k next to the ablated model's.

    Example:
        >>> fill_in_the_blanks(model, tok, ["the movie was [MASK] ."], Condition("o", (125,)))  # doctest: +SKIP
    """
    sites = list(sites) if sites is not None else find_norm_sites(model)
    rows = []
    for sentence in sentences:
        intact = top_predictions(model, tokenizer, sentence, top_k)
        with condition.apply(sites):
            ablated = top_predictions(model, tokenizer, sentence, top_k)
        for index, (a, b) in enumerate(zip(intact, ablated)):
            rows.append(
                {
                    "sentence": sentence,
                    "mask": index,
                    "intact": " ".join(a),
                    f"ablated ({condition.name})": " ".join(b),
                    "top1_changed": a[0] != b[0],
                }
            )
    return pd.DataFrame(rows)


def loss_summary(table: pd.DataFrame) -> dict:
    """Headline numbers of an MLM condition table with groups none / single / outliers / random."""
    base = float(table.loc[table.group == "none", "eval_loss"].iloc[0])
    outl = table[table.group == "outliers"]
    rand = table[table.group == "random"]
    return {
        "intact_loss": base,
        "outlier_loss": float(outl.eval_loss.iloc[0]) if len(outl) else float("nan"),
        "outlier_delta": float(outl.eval_loss.iloc[0] - base) if len(outl) else float("nan"),
        "random_delta_mean": float(rand.eval_loss.mean() - base) if len(rand) else float("nan"),
        "random_delta_max": float(rand.eval_loss.max() - base) if len(rand) else float("nan"),
        "draws": int(len(rand)),
    }


def run_scan(
    model: PreTrainedModel | torch.nn.Module,
    eval_set: EvalSet,
    roles: Sequence[str],
    limit: int | None,
    checkpoint_dir: str | os.PathLike,
    max_examples: int | None = None,
    method: str = "exact",
    also_check: Sequence[int] = (),
) -> pd.DataFrame:
    """The single-dim scan over every dim (or the first ``limit`` dims, for smoke runs), resumable, on the
    eval set or its first ``max_examples`` examples (one pass per dim: the scan is the costly part).

    ``method="screen"``: every dim's effect estimated at once and the screen's top 16 plus ``also_check`` (the
    outlier dims) evaluated exactly (``screen.screened_scan``, in the exact scan's columns: ``screen.as_scan_table``;
    ``value_kind`` says which rows are exact; ``limit`` does not apply: the screen costs the same for every dim).

    checkpoint_dir: the folder for the scan's checkpoint, named by the scan (``scan.checkpoint_name``: a
    changed parameter starts a new scan); a ``.json`` file path (as notebooks passed before) means its folder.
    """
    from .scan import scan_dims

    limit = count("limit (dims to scan)", limit, zero_means="every dim", none_ok=True)
    max_examples = count("max_examples", max_examples, zero_means="all", none_ok=True)
    if max_examples:
        eval_set = eval_set.head(max_examples)
    if method not in ("exact", "screen"):
        raise ValueError(f"Unknown scan method {method!r}; pick 'exact' (one pass per dim) or 'screen'.")
    if method == "screen":
        from .screen import as_scan_table, screened_scan

        return as_scan_table(screened_scan(model, eval_set, roles=tuple(roles), also_check=also_check, progress=False))
    hidden_size = int(getattr(model, "config").hidden_size)  # torch types a Module attribute as Tensor | Module
    dims = None if not limit else list(range(min(limit, hidden_size)))
    folder = Path(checkpoint_dir)
    if folder.suffix == ".json":
        folder = folder.parent
    return scan_dims(model, eval_set, roles=tuple(roles), dims=dims, checkpoint_dir=folder)
