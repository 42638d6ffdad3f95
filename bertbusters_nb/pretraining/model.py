"""The model pre-training starts from: a freshly initialised post-LN ``BertForMaskedLM``, seeded by the config."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Iterator

import torch

from .config import PAD_ID, PretrainConfig

__all__ = ["build_model"]

if TYPE_CHECKING:  # transformers is imported where a model is built, not with the package
    from transformers import PreTrainedModel


def build_model(config: PretrainConfig, vocab_size: int | None = None, seq_len: int | None = None) -> PreTrainedModel:
    """A freshly initialised post-LN ``BertForMaskedLM`` (no dropout, tied embeddings), seeded by config.seed.

    The global torch RNG is restored afterwards, so building a model never shifts other random draws.

    Example:
        >>> model = build_model(PretrainConfig(hidden=128, layers=2, heads=2, intermediate=256), 8192, 128)  # doctest: +SKIP
    """
    from transformers import BertConfig, BertForMaskedLM

    if vocab_size is None or seq_len is None:
        info = config.data_info
        vocab_size, seq_len = vocab_size or info["vocab_size"], seq_len or info["seq_len"]
    bert_config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=config.hidden,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        intermediate_size=config.intermediate,
        max_position_embeddings=seq_len,
        type_vocab_size=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=PAD_ID,
        tie_word_embeddings=True,
    )
    with _seeded(config.seed):
        model = BertForMaskedLM(bert_config)
    return model


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(state)
