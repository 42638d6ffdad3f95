"""Next-token predictions of a causal LM: the decoder's counterpart of fill-in-the-blank.

The table has ``fill_mask.blank_predictions``'s columns (blank, rank, token, probability; ``blank`` is always 1,
the position after the text), so ``fill_mask.side_by_side`` compares intact and ablated
predictions of either kind. Like ``blank_predictions`` it uses the model as it is when called, so it
shows an ablation's effect when called inside one.

Example:
    >>> next_tokens(model, tokenizer, "The movie was", top_k=3)  # doctest: +SKIP
       blank  rank   token  probability
    0      1     1   Ġgood        0.081
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
import torch

from ..model.loading import CAUSAL_TYPES
from .fill_mask import COLUMNS, has_mlm_head

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def is_causal_lm(model: PreTrainedModel | torch.nn.Module) -> bool:
    """True for a decoder-only model with its LM head (GPT-2, Pythia, Llama/SmolLM2, ...)."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    return config.model_type in CAUSAL_TYPES and has_mlm_head(model)


@torch.no_grad()
def next_tokens(
    model: PreTrainedModel | torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    top_k: int = 5,
    max_length: int = 128,
) -> pd.DataFrame:
    """Top-``top_k`` tokens the causal LM predicts right after ``text`` (the last ``max_length`` tokens of it).

    Tokens are shown as text (``convert_tokens_to_string``: a byte-level 'Ġgood' reads ' good').
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text is empty: write the beginning of a sentence for the model to continue.")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer (got {top_k!r}).")
    if not is_causal_lm(model):
        raise ValueError(f"{type(model).__name__} is not a causal LM with its head; load it with head='causal-lm'.")
    device = next(model.parameters()).device
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=True)["input_ids"][:, -max_length:].to(device)
    logits = model(input_ids=ids, use_cache=False).logits[0, -1].float()
    probs = logits.softmax(-1)
    top = probs.topk(min(top_k, probs.shape[-1]))
    rows = [
        {
            "blank": 1,
            "rank": rank,
            "token": tokenizer.convert_tokens_to_string([str(tokenizer.convert_ids_to_tokens(i))]),
            "probability": float(p),
        }
        for rank, (p, i) in enumerate(zip(top.values.cpu().tolist(), top.indices.cpu().tolist()), start=1)
    ]
    return pd.DataFrame(rows, columns=list(COLUMNS))
