"""Fill-in-the-blank: the top-k tokens a masked-LM predicts for each [MASK] of a sentence.

The prediction uses the model as it is when called, so it shows an ablation's effect
when called inside one::

    intact = blank_predictions(model, tokenizer, "The movie was [MASK].")
    with Condition("outliers", dims=(308, 381)).apply(find_norm_sites(model)):
        ablated = blank_predictions(model, tokenizer, "The movie was [MASK].")
    side_by_side(intact, ablated)

``[MASK]`` is the placeholder whatever the tokenizer's own mask token (RoBERTa's ``<mask>``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pandas as pd
import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

PLACEHOLDER = "[MASK]"
COLUMNS = ("blank", "rank", "token", "probability")


def has_mlm_head(model: PreTrainedModel | torch.nn.Module) -> bool:
    """True when the model maps hidden states to vocabulary logits (a masked- or causal-LM head)."""
    getter = getattr(model, "get_output_embeddings", None)
    return callable(getter) and getter() is not None


def _with_mask_token(sentence: str, tokenizer) -> str:
    mask = tokenizer.mask_token
    if mask is None:
        raise ValueError("This tokenizer has no mask token; fill-in-the-blank needs a masked-LM tokenizer.")
    if mask != PLACEHOLDER:
        sentence = sentence.replace(PLACEHOLDER, mask)
    return sentence


def count_blanks(sentence: str, tokenizer: PreTrainedTokenizerBase | None = None) -> int:
    """Number of ``[MASK]`` placeholders (or the tokenizer's own mask token) in ``sentence``."""
    tokens = {PLACEHOLDER} | ({tokenizer.mask_token} if tokenizer is not None and tokenizer.mask_token else set())
    return len(re.findall("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)), sentence))


@torch.no_grad()
def blank_predictions(
    model: PreTrainedModel | torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    sentence: str,
    top_k: int = 5,
    max_length: int = 128,
) -> pd.DataFrame:
    """Top-``top_k`` predictions for every blank of ``sentence``: columns blank, rank, token, probability.

    ``blank`` numbers the [MASK]s from 1 in reading order; ``rank`` runs from 1 (most probable).

    Example:
        >>> blank_predictions(model, tokenizer, "Paris is the [MASK] of France.", top_k=3)  # doctest: +SKIP
           blank  rank    token  probability
        0      1     1  capital        0.912
    """
    if not isinstance(sentence, str) or not sentence.strip():
        raise ValueError("sentence is empty: write one with at least one [MASK].")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer (got {top_k!r}).")
    if not has_mlm_head(model):
        raise ValueError(
            f"{type(model).__name__} has no language-model head, so it cannot fill in blanks; "
            "load it with head='mlm' or compare sentence embeddings instead."
        )
    text = _with_mask_token(sentence, tokenizer)
    device = next(model.parameters()).device
    batch = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length).to(device)
    positions = (batch["input_ids"][0] == tokenizer.mask_token_id).nonzero().squeeze(1)  # (M,)
    if positions.numel() == 0:
        raise ValueError(f"No {PLACEHOLDER} in the sentence {sentence!r}: put [MASK] where a word should be guessed.")
    logits = model(**batch).logits[0, positions].float()  # (M, V)
    probs = logits.softmax(-1)
    top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
    rows = []
    for blank, (values, indices) in enumerate(zip(top.values.cpu().tolist(), top.indices.cpu().tolist()), start=1):
        for rank, (p, token_id) in enumerate(zip(values, indices), start=1):
            rows.append(
                {
                    "blank": blank,
                    "rank": rank,
                    "token": tokenizer.convert_ids_to_tokens(token_id),
                    "probability": float(p),
                }
            )
    return pd.DataFrame(rows, columns=list(COLUMNS))


def side_by_side(intact: pd.DataFrame, ablated: pd.DataFrame) -> pd.DataFrame:
    """Two ``blank_predictions`` tables next to each other: blank, rank, intact, p_intact, ablated, p_ablated, same.

    ``same`` is True where the ablated model ranks the same token at that rank.

    Example:
        >>> side_by_side(blank_predictions(m, t, s), ablated_table)  # doctest: +SKIP
    """
    left = intact.rename(columns={"token": "intact", "probability": "p_intact"})
    right = ablated.rename(columns={"token": "ablated", "probability": "p_ablated"})
    table = left.merge(right, on=["blank", "rank"], how="outer").sort_values(["blank", "rank"], ignore_index=True)
    table["same"] = table["intact"] == table["ablated"]
    return table[["blank", "rank", "intact", "p_intact", "ablated", "p_ablated", "same"]]
