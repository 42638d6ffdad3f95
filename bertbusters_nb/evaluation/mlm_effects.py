"""Masked-LM effects of an ablation that a reader can see: fill-in-the-blank predictions, verdicts."""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from ..model.ablation import Condition
from .fill_mask import fill_mask
from ..model.norms import NormSite, find_norm_sites


def top_predictions(model, tokenizer, sentence: str, top_k: int = 5) -> list[list[str]]:
    """Top-k tokens for each [MASK] of ``sentence`` (one list per mask, in order): ``fill_mask`` as lists."""
    table = fill_mask(model, tokenizer, sentence, top_k=top_k)
    return [group.sort_values("rank").token.tolist() for _, group in table.groupby("blank", sort=True)]


def fill_in_the_blanks(model, tokenizer, sentences: Sequence[str], condition: Condition,
                       sites: Sequence[NormSite] | None = None, top_k: int = 5) -> pd.DataFrame:
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
            rows.append({"sentence": sentence, "mask": index, "intact": " ".join(a),
                         f"ablated ({condition.name})": " ".join(b), "top1_changed": a[0] != b[0]})
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


def run_scan(model, eval_set, roles: Sequence[str], limit: int | None, checkpoint_path: str,
             max_examples: int | None = None) -> pd.DataFrame:
    """The single-dim scan over every dim (or the first ``limit`` dims, for smoke runs), resumable, on the
    eval set or its first ``max_examples`` examples (one pass per dim: the scan is the costly part)."""
    import hashlib
    from pathlib import Path

    from ..checks import count
    from .scan import scan_dims

    limit = count("limit (dims to scan)", limit, zero_means="every dim", none_ok=True)
    max_examples = count("max_examples", max_examples, zero_means="all", none_ok=True)
    if max_examples:
        eval_set = eval_set.head(max_examples)
    dims = None if not limit else list(range(min(limit, model.config.hidden_size)))
    # one checkpoint file per (model, eval set, roles, dims): a changed parameter starts a new scan
    tag = hashlib.sha1(f"{model.name_or_path}|{eval_set.fingerprint()}|{sorted(roles)}|{dims}".encode()).hexdigest()[:10]
    path = Path(checkpoint_path)
    path = path.with_name(f"{path.stem}-{tag}{path.suffix}")
    return scan_dims(model, eval_set, roles=tuple(roles), dims=dims, checkpoint_path=path)
