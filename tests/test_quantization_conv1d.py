"""W8A8 on GPT-2: its projections are transformers' Conv1D (weight stored in x out), not nn.Linear.

Found by the paper profile's notebook 07 (bert-base-uncased, roberta-base, gpt2): GPT-2 had no residual readers,
so ``w8a8(keep_dims=...)`` refused it, and without keep_dims its blocks were not quantized at all."""

from __future__ import annotations

import torch
from conftest import tiny_model
from transformers.pytorch_utils import Conv1D

from bertbusters_nb.analysis.quantization import residual_readers, w8a8


def test_gpt2_conv1d_projections_are_readers_and_are_quantized():
    model = tiny_model("gpt2")
    batch = {"input_ids": torch.tensor([[1, 5, 9, 17, 33, 2]])}
    readers = residual_readers(model, batch)
    conv = {n for n, m in model.named_modules() if isinstance(m, Conv1D)}
    assert readers and set(readers) <= conv  # c_attn and c_fc read the normalized residual stream
    with torch.no_grad():
        intact = model(**batch).logits
        with w8a8(model, bits=4) as names:
            quantized = model(**batch).logits
        with w8a8(model, bits=4, keep_dims=[0, 3], readers=readers) as kept_names:
            kept = model(**batch).logits
        after = model(**batch).logits
    assert conv <= set(names) and set(names) == set(kept_names)
    assert not torch.equal(quantized, intact) and not torch.equal(kept, quantized)
    assert torch.equal(after, intact)  # restored


def test_conv1d_at_full_precision_bits_matches_the_module():
    model = tiny_model("gpt2")
    batch = {"input_ids": torch.tensor([[1, 5, 9, 17, 33, 2]])}
    with torch.no_grad():
        intact = model(**batch).logits
        with w8a8(model, bits=16):
            close = model(**batch).logits
    assert torch.allclose(close, intact, atol=1e-2)
