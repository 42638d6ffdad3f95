"""The explorer's loading policy: the head a checkpoint has decides what the explorer shows.

A masked LM is loaded with its MLM head (fill-in-the-blank and MLM loss), a decoder with its causal-LM
head (next tokens and causal-LM loss), anything else as the bare encoder (sentence-embedding cosine), so
one call works for bbmini, SmolLM2 and MiniLM alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..model.loading import CAUSAL_TYPES, Head

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def load_for_explorer(
    name_or_path: str, device: str | None = "auto"
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """Load a model with its MLM head when the checkpoint has one, else the bare encoder (e.g. MiniLM).

    Example:
        >>> model, tokenizer = load_for_explorer("bbmini")  # doctest: +SKIP
    """
    from transformers import AutoConfig

    from ..model.loading import load_model, resolve

    try:
        config = AutoConfig.from_pretrained(resolve(name_or_path))
    except (OSError, ValueError):
        return load_model(name_or_path, head="mlm", device=device)  # raises ModelLoadError saying why
    architectures = getattr(config, "architectures", None) or []
    head: Head = "mlm" if any("MaskedLM" in a or "ForPreTraining" in a for a in architectures) else "base"
    if getattr(config, "model_type", "") in CAUSAL_TYPES:
        head = "causal-lm"  # a decoder: next-token predictions instead of fill-in-the-blank
    return load_model(name_or_path, head=head, device=device)


__all__ = ["load_for_explorer"]
