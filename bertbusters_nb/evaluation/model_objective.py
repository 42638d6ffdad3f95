"""Which objective a model is scored on: its own. One vocabulary for the whole package.

``mlm``        a masked-LM head (and, given a tokenizer, a mask token): masked-LM loss.
``causal``     a causal-LM head: next-token loss.
``embedding``  anything else (an encoder without a head, an encoder-decoder): 1 - cosine of mean-pooled
               sentence embeddings to the intact model's. The same word as an ``EvalSet``'s ``kind``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .fill_mask import has_mlm_head

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

OBJECTIVE_KINDS = ("mlm", "causal", "embedding")


def objective_of(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase | None = None) -> str:
    """The model's own objective, one of ``OBJECTIVE_KINDS``, from its class and head (see the module docstring).

    Example:
        >>> objective_of(load_model("bbmini", head="mlm")[0])  # doctest: +SKIP
        'mlm'
    """
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        return "embedding"
    name = type(model).__name__
    if "CausalLM" in name or "LMHead" in name:
        return "causal"
    masked = "MaskedLM" in name or "ForPreTraining" in name
    if masked and has_mlm_head(model) and (tokenizer is None or tokenizer.mask_token is not None):
        return "mlm"
    return "embedding"
