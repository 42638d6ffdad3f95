"""Attention sinks: how much attention each head puts on special tokens, delimiters and the first token.

Bondarenko et al. (2023) explain the outliers by heads that learn to "do nothing" by attending to
[SEP], "." and ","; Sun et al. (2024) see massive activations act as attention sinks on the first
token and delimiters. Here, per (layer, head), the attention mass of real query tokens on each key
category, beside the category's base rate (its share of the keys each query can see), and how the
mass changes when the outlier dims are disabled (``Condition.apply``), against random dims.

Attention probabilities need the eager implementation in transformers 5 (SDPA returns none);
``eager_attention`` switches it for the duration of a ``with`` block and switches back.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..model.ablation import Condition
from ..model.discovery import find_norm_sites
from ..model.sites import NormSite
from .frequency import CATEGORIES, base_model_of, token_categories

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

SINK = "sink"  # the union of the categories: special, delimiter or first token


@contextlib.contextmanager
def eager_attention(model: PreTrainedModel) -> Iterator[None]:
    """Use the eager attention implementation inside the block (so ``output_attentions`` works), then restore.

    Example:
        >>> with eager_attention(model):
        ...     attentions = model(**batch, output_attentions=True).attentions  # doctest: +SKIP
    """
    before = model.config._attn_implementation
    if before != "eager":
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if before != "eager" and model.config._attn_implementation != before:
            model.set_attn_implementation(before)


def attention_mass(
    attentions: Sequence[torch.Tensor], key_masks: dict[str, torch.Tensor], attention_mask: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per category, summed over real queries: attention mass on its keys (L, heads), the base rate of its keys
    among the keys each query attends to (L, heads), and the number of queries (a 0-dim count).

    attentions: per layer (B, heads, T, T) probabilities; key_masks: category -> (B, T) bool; attention_mask: (B, T).
    A causal model's probabilities are zero on future keys, so "keys it can see" are those with probability > 0
    in a padding-free row; here: keys that are real tokens and got any probability.

    Example:
        >>> att = [torch.full((1, 1, 2, 2), 0.5)]
        >>> out = attention_mass(att, {"first": torch.tensor([[True, False]])}, torch.ones(1, 2))
        >>> out["first"].tolist(), out["first_base"].tolist(), int(out["queries"])
        ([[1.0]], [[1.0]], 2)
    """
    real = attention_mask.bool()  # (B, T)
    probs = torch.stack([a.float() for a in attentions])  # (L, B, H, T, T)
    visible = (probs > 0) & real[None, :, None, None, :]
    n_visible = visible.sum(-1).clamp_min(1).float()  # (L, B, H, T)
    query = real[None, :, None, :].float()  # (1, B, 1, T)
    out: dict[str, torch.Tensor] = {}
    for name, mask in key_masks.items():
        keys = (mask & real)[None, :, None, None, :].float()  # (1, B, 1, 1, T)
        mass = (probs * keys).sum(-1)  # (L, B, H, T)
        base = (visible.float() * keys).sum(-1) / n_visible
        out[name] = (mass * query).sum((1, 3))  # (L, H)
        out[f"{name}_base"] = (base * query).sum((1, 3))
    out["queries"] = real.sum()
    return out


@torch.no_grad()
def sink_scores(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_length: int = 128,
    batch_size: int = 32,
    progress: bool = False,
) -> pd.DataFrame:
    """Per (layer, head, category) over ``texts``: mean attention mass of real queries on the category's keys
    (``mass``) and the category's base rate (``base``); categories special, delimiter, first and sink (any).

    Example:
        >>> sink_scores(model, tokenizer, texts[:32]).query("category == 'sink'").head()  # doctest: +SKIP
    """
    from .activations import text_batches

    device = next(model.parameters()).device
    totals: dict[str, torch.Tensor] = {}
    queries = 0
    with eager_attention(model):
        for batch in tqdm(
            text_batches(tokenizer, texts, max_length, batch_size), desc="attention", disable=not progress, leave=False
        ):
            inputs = {
                k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")
            }
            attentions = base_model_of(model)(**inputs, output_attentions=True).attentions
            if not attentions:
                raise RuntimeError(
                    f"{type(model).__name__} returned no attention probabilities even with eager "
                    f"attention; this architecture cannot be measured here."
                )
            cats = token_categories(tokenizer, batch["input_ids"])
            cats[SINK] = cats["special"] | cats["delimiter"] | cats["first"]
            part = attention_mass([a.cpu() for a in attentions], cats, batch["attention_mask"])
            queries += int(part.pop("queries"))
            for k, v in part.items():
                totals[k] = totals.get(k, 0) + v
    rows = []
    for name in (*CATEGORIES, SINK):
        mass, base = totals[name] / queries, totals[f"{name}_base"] / queries
        L, H = mass.shape
        rows.append(
            pd.DataFrame(
                {
                    "layer": np.repeat(np.arange(L), H),
                    "head": np.tile(np.arange(H), L),
                    "category": name,
                    "mass": mass.flatten().numpy(),
                    "base": base.flatten().numpy(),
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def sink_under_conditions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    conditions: Sequence[Condition],
    sites: Sequence[NormSite] | None = None,
    max_length: int = 128,
    batch_size: int = 32,
    progress: bool = True,
) -> pd.DataFrame:
    """``sink_scores`` with each condition in force (``Condition.apply``), one block of rows per condition."""
    sites = list(sites) if sites is not None else find_norm_sites(model)
    frames = []
    for condition in tqdm(list(conditions), desc="sink scores", disable=not progress, leave=False):
        with condition.apply(sites):
            frame = sink_scores(model, tokenizer, texts, max_length, batch_size)
        frame.insert(0, "condition", condition.name)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def mean_sink(table: pd.DataFrame) -> pd.Series:
    """Per condition: the sink mass averaged over all heads."""
    return table[table.category == SINK].groupby("condition", sort=False)["mass"].mean()
