"""Outliers in hidden states: per-layer, per-dim magnitude statistics over a dataset.

Statistics are accumulated batch by batch (sums, not stacked activations), so a large
dataset costs memory proportional to layers x hidden size only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Mapping

import pandas as pd
import torch
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@torch.no_grad()
def activation_stats(
    model: torch.nn.Module, batches: Iterable[Mapping[str, torch.Tensor]], progress: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hidden-state statistics at every layer output (index 0 = embeddings).

    Returns ``(per_dim, top_dim)``: per_dim has one row per (layer, dim) with mean, std and
    mean |h| over real tokens; top_dim has one row per (layer, dim) that was the largest-|h|
    dim somewhere, with ``token_share`` (of tokens where it is the largest) and ``input_share``
    (of inputs where it has the largest mean |h|).

    Example:
        >>> per_dim, top = activation_stats(model, batches)  # doctest: +SKIP
    """
    device = next(model.parameters()).device
    sums = sq = absum = None
    token_wins = input_wins = None
    tokens = inputs = 0
    for batch in tqdm(list(batches), desc="activations", disable=not progress, leave=False):
        batch = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        out = model(**batch, output_hidden_states=True)
        states = torch.stack([h.float() for h in out.hidden_states])  # (L+1, B, T, H)
        mask = batch.get("attention_mask", torch.ones(states.shape[1:3], device=device)).bool()
        L, _, _, H = states.shape
        if sums is None:
            sums, sq, absum = (torch.zeros(L, H, dtype=torch.float64, device=device) for _ in range(3))
            token_wins = torch.zeros(L, H, dtype=torch.long, device=device)
            input_wins = torch.zeros(L, H, dtype=torch.long, device=device)
        real = states[:, mask]  # (L, N, H)
        sums += real.sum(1).double()
        sq += (real.double() ** 2).sum(1)
        absum += real.abs().sum(1).double()
        token_wins += torch.nn.functional.one_hot(real.abs().argmax(-1), H).sum(1)
        per_input = (states.abs() * mask[None, :, :, None]).sum(2) / mask.sum(1)[None, :, None]  # (L, B, H)
        input_wins += torch.nn.functional.one_hot(per_input.argmax(-1), H).sum(1)
        tokens += int(mask.sum())
        inputs += int(mask.shape[0])
    if sums is None:
        raise ValueError("No batches given: the dataset is empty.")
    mean = sums / tokens
    std = (sq / tokens - mean**2).clamp_min(0).sqrt()
    L, H = mean.shape
    per_dim = pd.DataFrame(
        {
            "layer": torch.arange(L).repeat_interleave(H).numpy(),
            "dim": torch.arange(H).repeat(L).numpy(),
            "mean": mean.flatten().cpu().numpy(),
            "std": std.flatten().cpu().numpy(),
            "mean_abs": (absum / tokens).flatten().cpu().numpy(),
        }
    )
    per_dim["abs_ratio_to_median"] = per_dim["mean_abs"] / per_dim.groupby("layer")["mean_abs"].transform("median")
    top = pd.DataFrame(
        {
            "layer": torch.arange(L).repeat_interleave(H).numpy(),
            "dim": torch.arange(H).repeat(L).numpy(),
            "token_share": (token_wins.flatten().double() / tokens).cpu().numpy(),
            "input_share": (input_wins.flatten().double() / inputs).cpu().numpy(),
        }
    )
    top = (
        top[(top.token_share > 0) | (top.input_share > 0)]
        .sort_values(["layer", "input_share"], ascending=[True, False])
        .reset_index(drop=True)
    )
    return per_dim, top


def outlier_share(top: pd.DataFrame, dims: Iterable[int]) -> pd.DataFrame:
    """Per layer, the share of tokens and of inputs where one of ``dims`` has the largest magnitude."""
    dims = set(int(d) for d in dims)
    chosen = top[top.dim.isin(dims)].groupby("layer")[["token_share", "input_share"]].sum()
    layers = pd.Index(sorted(top.layer.unique()), name="layer")
    return chosen.reindex(layers, fill_value=0.0).reset_index()


def text_batches(
    tokenizer: PreTrainedTokenizerBase, texts, max_length: int = 128, batch_size: int = 32
) -> list[dict[str, torch.Tensor]]:
    """Tokenized, padded batches of ``texts`` for ``activation_stats`` (truncated to ``max_length``)."""
    texts = list(texts)
    if not texts:
        raise ValueError("No texts given: the dataset is empty.")
    return [
        dict(
            tokenizer(
                texts[i : i + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            )
        )
        for i in range(0, len(texts), batch_size)
    ]


def magnitude_by_layer(per_dim: pd.DataFrame, dims: Iterable[int]) -> pd.DataFrame:
    """Per layer: mean |h| at the given dims, the median over the other dims, and their ratio."""
    dims = set(int(d) for d in dims)
    is_outlier = per_dim.dim.isin(dims)
    at = per_dim[is_outlier].groupby("layer")["mean_abs"].mean().rename("outlier_mean_abs")
    others = per_dim[~is_outlier].groupby("layer")["mean_abs"].median().rename("others_median_abs")
    table = pd.concat([at, others], axis=1).reset_index()
    table["ratio"] = table.outlier_mean_abs / table.others_median_abs
    return table
