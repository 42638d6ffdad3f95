"""What rogue dims do to embedding similarity (Timkey & van Schijndel 2021), numbers only.

A few dims with huge magnitude dominate the cosine between two embeddings: cos(a, b) = sum_i a_i b_i / (|a| |b|),
and a dim where every embedding is large contributes most of the sum whatever the sentences mean. Standardising
each dim (subtract its mean, divide by its standard deviation over a reference sample) removes that.
``cosine_shares``: each dim's share of the mean cosine over pairs; ``separation_table``: how well the cosine of
SNLI pairs separates entailment from contradiction (ROC AUC), raw and with dims standardised: all of them, the
rule's dims alone, or random dims alone.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch


def cosine_shares(a: torch.Tensor, b: torch.Tensor) -> pd.DataFrame:
    """Per dim: its mean contribution a_i b_i / (|a| |b|) to the pairs' cosine, and its share of the mean cosine
    (sorted, largest share first). a, b: (pairs, hidden) embeddings.

    Example:
        >>> cosine_shares(torch.tensor([[3.0, 1.0]]), torch.tensor([[3.0, -1.0]])).share.round(3).tolist()
        [1.125, -0.125]
    """
    a, b = a.double(), b.double()
    terms = a * b / (a.norm(dim=-1, keepdim=True) * b.norm(dim=-1, keepdim=True))
    contribution = terms.mean(0)
    share = contribution / contribution.sum()
    table = pd.DataFrame({"dim": np.arange(a.shape[1]), "contribution": contribution.numpy(), "share": share.numpy()})
    return table.sort_values("share", ascending=False, key=abs).reset_index(drop=True)


def standardised(x: torch.Tensor, reference: torch.Tensor, dims: Sequence[int] | None = None) -> torch.Tensor:
    """``x`` with ``dims`` (None: all) standardised by the mean and standard deviation of ``reference``'s rows."""
    out = x.clone().double()
    ref = reference.double()
    index = torch.arange(x.shape[1]) if dims is None else torch.tensor(list(dims), dtype=torch.long)
    mean, std = ref[:, index].mean(0), ref[:, index].std(0).clamp_min(1e-12)
    out[:, index] = (out[:, index] - mean) / std
    return out


def separation_table(
    a: torch.Tensor,
    b: torch.Tensor,
    positive: Sequence[bool],
    dims: Sequence[int],
    random_sets: Sequence[Sequence[int]],
) -> pd.DataFrame:
    """ROC AUC of cos(a_i, b_i) separating positive pairs: raw, every dim standardised, the rule's ``dims``
    standardised alone, and each random set standardised alone (reference: the premises and hypotheses together).
    Columns: condition, group, dims, auc."""
    from sklearn.metrics import roc_auc_score

    reference = torch.cat([a, b])

    def auc(x: torch.Tensor, y: torch.Tensor) -> float:
        return float(roc_auc_score(list(positive), torch.nn.functional.cosine_similarity(x, y, dim=-1).numpy()))

    rows = [
        {"condition": "raw", "group": "raw", "dims": "", "auc": auc(a, b)},
        {
            "condition": "all dims standardised",
            "group": "all dims",
            "dims": "all",
            "auc": auc(standardised(a, reference), standardised(b, reference)),
        },
        {
            "condition": "outlier dims standardised",
            "group": "outlier dims",
            "dims": " ".join(map(str, dims)),
            "auc": auc(standardised(a, reference, dims), standardised(b, reference, dims)),
        },
    ]
    for i, d in enumerate(random_sets):
        rows.append(
            {
                "condition": f"random dims {i} standardised",
                "group": "random dims",
                "dims": " ".join(map(str, d)),
                "auc": auc(standardised(a, reference, d), standardised(b, reference, d)),
            }
        )
    return pd.DataFrame(rows)
