"""Simulated 8-bit quantization (W8A8 fake-quant) in plain PyTorch, and Bondarenko's outlier metrics.

``w8a8(model, ...)`` puts every ``nn.Linear`` (except the output embedding, kept in full precision as
LLM.int8 keeps the LM head) under symmetric per-tensor fake quantization of its weight and of its
input: ``round(x / s).clamp(-q, q) * s`` with ``q = 2**(bits-1) - 1`` and ``s = max|x| / q`` (the
input's scale is taken per forward, dynamic min-max). The weight is not edited in place (tied
weights would change the embedding too): each Linear gets a forward pre-hook that swaps in the
quantized input and records the module, and a temporary instance ``forward`` that multiplies by
the quantized weight; both are removed in a ``finally``, so the model is left exactly as it was.

``keep_dims`` keeps those input columns (and the matching weight columns) in full precision, in the
Linears that read the normalized residual stream (their input IS a norm site's output: Q/K/V and the
first feed-forward layer), as LLM.int8's mixed-precision decomposition does for its outlier features;
the scales are then taken over the other columns.

``outlier_metrics`` gives, per layer output, the kurtosis of each token's hidden vector (Pearson's,
3 for a Gaussian) averaged over tokens, and the max infinity norm over tokens (Bondarenko et al. 2023).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..model.discovery import find_norm_sites
from ..model.hooks import Trace, first_tensor
from .frequency import base_model_of

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def fake_quant(x: torch.Tensor, bits: int = 8, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric per-tensor fake quantization of ``x``; ``keep`` (bool over the last dim) stays exact.

    Example:
        >>> x = torch.tensor([-127., 0., 3., 127.]) * 0.01
        >>> bool(torch.equal(fake_quant(x), x))  # values on the 8-bit grid come back unchanged
        True
    """
    if bits < 2:
        raise ValueError(f"bits must be >= 2, got {bits}.")
    qmax = 2 ** (bits - 1) - 1
    body = x if keep is None else x.masked_fill(keep, 0)
    scale = body.detach().abs().amax()
    if scale == 0:
        return x.clone()
    scale = scale / qmax
    quantized = torch.round(x / scale).clamp(-qmax, qmax) * scale
    return quantized if keep is None else torch.where(keep, x, quantized)


@torch.no_grad()
def residual_readers(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], sites: Sequence | None = None
) -> list[str]:
    """Names of the Linears whose input is a norm site's output tensor (found by one forward, not by names).

    Example:
        >>> residual_readers(model, tokenizer(["a text"], return_tensors="pt"))[:3]  # doctest: +SKIP
        ['bert.encoder.layer.0.attention.self.query', ...]
    """
    device = next(model.parameters()).device
    norms = {s.name: s.module for s in (find_norm_sites(model) if sites is None else sites)}
    linears = {name: m for name, m in model.named_modules() if _is_linear(m)}
    inputs = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    # both traces keep the tensors themselves alive, so no later tensor can reuse their memory during the forward
    with Trace(model, norms) as norm_trace, Trace(model, linears, retain_input=True, retain_output=False) as reads:
        base_model_of(model)(**inputs)
    norm_out = [first_tensor(call.output) for record in norm_trace.records.values() for call in record.calls]
    read = [(name, call.input) for name, record in reads.records.items() for call in record.calls]
    same = lambda a, b: a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()  # noqa: E731
    return sorted({name for name, x in read if any(same(x, out) for out in norm_out)})


def _is_linear(module: nn.Module) -> bool:
    """An ``nn.Linear``, or transformers' ``Conv1D`` (GPT-2's projections: a Linear with its weight stored
    transposed, in x out): without it GPT-2's blocks would not be quantized at all."""
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, (nn.Linear, Conv1D))


def _weight_out_in(module: nn.Module) -> torch.Tensor:
    """The weight as ``F.linear`` takes it (out x in): Conv1D stores it in x out."""
    weight = module.get_parameter("weight").detach()
    return weight if isinstance(module, nn.Linear) else weight.t()


def _skipped(model, skip_output_embeddings: bool) -> set[int]:
    out = model.get_output_embeddings() if skip_output_embeddings and hasattr(model, "get_output_embeddings") else None
    return {id(out)} if isinstance(out, nn.Linear) else set()


@contextlib.contextmanager
def w8a8(
    model: torch.nn.Module,
    bits: int = 8,
    keep_dims: Sequence[int] = (),
    readers: Iterable[str] = (),
    skip_output_embeddings: bool = True,
) -> Iterator[list[str]]:
    """Fake-quantize every Linear's weight and input (per tensor, ``bits``) inside the block; yields the names.

    ``keep_dims`` stay in full precision in the Linears named in ``readers`` (see ``residual_readers``).

    Example:
        >>> with w8a8(model):
        ...     loss = evaluate(model, eval_set)["eval_loss"]  # doctest: +SKIP
    """
    keep_dims = [int(d) for d in keep_dims]
    readers = set(readers)
    if keep_dims and not readers:
        raise ValueError(
            "keep_dims needs the Linears that read the residual stream: pass readers=residual_readers(...)."
        )
    skipped = _skipped(model, skip_output_embeddings)
    chosen = [(n, m) for n, m in model.named_modules() if _is_linear(m) and id(m) not in skipped]
    patched, names = [], []
    kept: dict[str, torch.Tensor | None] = {}

    def quantize_input(name: str, call):
        return (fake_quant(call.args[0], bits, kept[name]), *call.args[1:]), call.kwargs

    try:
        for name, module in chosen:
            keep = None
            weight = _weight_out_in(module)
            if keep_dims and name in readers:
                keep = torch.zeros(weight.shape[1], dtype=torch.bool, device=weight.device)
                keep[keep_dims] = True
            with torch.no_grad():
                weight = fake_quant(weight, bits, keep)

            def forward(x, weight=weight, bias=module.bias):
                return F.linear(x, weight, bias)

            kept[name] = keep
            module.forward = forward
            patched.append(module)
            names.append(name)
        with Trace(model, dict(chosen), retain_output=False, edit_input=quantize_input):
            yield names
    finally:
        for module in patched:
            if "forward" in module.__dict__:
                del module.forward


def _objective_fn(
    model,
    tokenizer,
    texts: Sequence[str],
    kind: str,
    max_length: int,
    batch_size: int,
    seed: int,
    sites: Sequence | None = None,
):
    if kind in ("mlm", "causal"):
        from ..evaluation import evaluate
        from ..evaluation.sets import prepare_causal_eval, prepare_mlm_eval

        eval_set = (
            prepare_mlm_eval(tokenizer, texts, max_length=max_length, seed=seed, batch_size=batch_size)
            if kind == "mlm"
            else prepare_causal_eval(tokenizer, texts, max_length=max_length, batch_size=batch_size)
        )
        return lambda: float(
            evaluate(model, eval_set, sites=sites, autocast=None)["eval_loss"]
        )  # fp32: the reference is fp32
    if kind == "embedding":
        from ..evaluation.embeddings import sentence_embeddings

        reference = sentence_embeddings(model, tokenizer, list(texts), batch_size, max_length)
        return lambda: float(
            1
            - F.cosine_similarity(
                sentence_embeddings(model, tokenizer, list(texts), batch_size, max_length), reference
            ).mean()
        )
    raise ValueError(f"Unknown objective kind {kind!r}; pick 'mlm', 'causal' or 'embedding'.")


OBJECTIVE_NAMES = {
    "mlm": "masked-LM loss (nats)",
    "causal": "causal-LM loss (nats)",
    "embedding": "1 - cosine to the fp32 embeddings",
}


def quantization_table(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    kind: str,
    outlier_dims: Sequence[int],
    random_draws: Sequence[Sequence[int]],
    bits: int = 8,
    max_length: int = 128,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
    sites: Sequence | None = None,
) -> pd.DataFrame:
    """The objective in fp32, with W8A8, with W8A8 keeping the outlier dims in full precision, and keeping each
    random draw of as many dims. One row per condition: condition, group, dims, objective, delta (vs fp32).

    ``kind``: 'mlm' / 'causal' (eval loss on the texts) or 'embedding' (1 - cosine of mean-pooled embeddings to
    fp32's, for an encoder without an LM head). ``sites``: the model's norm sites (default: found here).
    """
    sites = (
        list(sites) if sites is not None else find_norm_sites(model)
    )  # found outside w8a8 (its tracer sees patched Linears)
    objective = _objective_fn(model, tokenizer, texts, kind, max_length, batch_size, seed, sites)
    from .activations import text_batches

    readers = residual_readers(model, text_batches(tokenizer, texts[:2], max_length, 2)[0], sites)
    conditions = [
        ("fp32", "fp32", None),
        (f"w{bits}a{bits}", "w8a8", ()),
        (f"w{bits}a{bits} + outliers kept", "outliers", tuple(outlier_dims)),
    ]
    conditions += [(f"w{bits}a{bits} + random {i} kept", "random", tuple(d)) for i, d in enumerate(random_draws)]
    rows = []
    for name, group, dims in tqdm(conditions, desc="quantization", disable=not progress, leave=False):
        if dims is None:
            value = objective()
        else:
            with w8a8(model, bits, dims, readers):
                value = objective()
        rows.append({"condition": name, "group": group, "dims": " ".join(map(str, dims or ())), "objective": value})
    table = pd.DataFrame(rows)
    table["delta"] = table.objective - table.objective.iloc[0]
    table["kind"] = kind
    table["readers"] = len(readers)
    return table


@torch.no_grad()
def outlier_metrics(
    model: torch.nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    excluded: Mapping[str, Sequence[int]] | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Per layer output (0 = embeddings): mean over real tokens of the kurtosis of the token's hidden vector
    (Pearson's, Gaussian 3) and the max infinity norm over tokens (Bondarenko et al.'s two metrics).

    ``excluded`` maps a label to dims left out before measuring (default: {"none": ()}); all labels come from
    the same forwards. One row per (excluded, layer).

    Example:
        >>> outlier_metrics(model, text_batches(tokenizer, texts), {"none": (), "outliers": (81,)})  # doctest: +SKIP
    """
    excluded = {"none": ()} if excluded is None else dict(excluded)
    device = next(model.parameters()).device
    kurt_sum: dict[str, torch.Tensor] = {}
    inf_max: dict[str, torch.Tensor] = {}
    tokens = 0
    for batch in tqdm(list(batches), desc="kurtosis", disable=not progress, leave=False):
        inputs = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        states = torch.stack(
            base_model_of(model)(**inputs, output_hidden_states=True).hidden_states
        ).float()  # (L+1, B, T, H)
        real = states[:, inputs["attention_mask"].bool()]  # (L+1, N, H)
        for label, dims in excluded.items():
            keep = torch.ones(real.shape[-1], dtype=torch.bool, device=real.device)
            keep[[int(d) for d in dims]] = False
            part = real[..., keep]
            k = kurtosis(part).sum(1).double()  # (L+1,)
            inf = part.abs().amax((1, 2))
            kurt_sum[label] = kurt_sum[label] + k if label in kurt_sum else k
            inf_max[label] = torch.maximum(inf_max[label], inf) if label in inf_max else inf
        tokens += real.shape[1]
    if not kurt_sum:
        raise ValueError("No batches given: the dataset is empty.")
    return pd.concat(
        [
            pd.DataFrame(
                {
                    "excluded": label,
                    "layer": np.arange(len(kurt_sum[label])),
                    "kurtosis": (kurt_sum[label] / tokens).cpu().numpy(),
                    "max_inf_norm": inf_max[label].cpu().numpy(),
                }
            )
            for label in excluded
        ],
        ignore_index=True,
    )


def kurtosis(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Pearson's kurtosis E[(x - mean)^4] / var^2 along ``dim`` (3 for a Gaussian, 1.8 for a uniform).

    Example:
        >>> round(float(kurtosis(torch.tensor([-1., 1., -1., 1.]))), 3)
        1.0
    """
    centred = x - x.mean(dim, keepdim=True)
    var = centred.pow(2).mean(dim)
    return centred.pow(4).mean(dim) / var.pow(2).clamp_min(1e-30)
