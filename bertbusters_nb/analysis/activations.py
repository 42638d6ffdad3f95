"""Outliers in hidden states: per-layer, per-dim magnitude statistics over a dataset.

Statistics are accumulated batch by batch (sums, not stacked activations), so a large
dataset costs memory proportional to layers x hidden size only. ``activation_profile`` is the one
profile the activation criteria (``criteria.activation_criterion``) read; ``activation_stats`` adds
signed means and standard deviations for the descriptive plots.
"""

from __future__ import annotations

import inspect
import string
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..device import autocast
from ..model.discovery import find_norm_sites
from ..model.fingerprint import weights_digest
from ..model.hooks import Trace, first_tensor
from ..shared_results import SharedResult, shared_result, source_digest, tensors_digest

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
    totals: list[torch.Tensor] = []  # sums, squares, |h| sums, token wins, input wins; sized at the first batch
    tokens = inputs = 0
    for batch in tqdm(list(batches), desc="activations", disable=not progress, leave=False):
        batch = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        out = model(**batch, output_hidden_states=True)
        states = torch.stack([h.float() for h in out.hidden_states])  # (L+1, B, T, H)
        mask = batch.get("attention_mask", torch.ones(states.shape[1:3], device=device)).bool()
        L, _, _, H = states.shape
        if not totals:
            totals = [torch.zeros(L, H, dtype=torch.float64, device=device) for _ in range(3)]
            totals += [torch.zeros(L, H, dtype=torch.long, device=device) for _ in range(2)]
        sums, sq, absum, token_wins, input_wins = totals
        real = states[:, mask]  # (L, N, H)
        sums += real.sum(1).double()
        sq += (real.double() ** 2).sum(1)
        absum += real.abs().sum(1).double()
        token_wins += torch.nn.functional.one_hot(real.abs().argmax(-1), H).sum(1)
        per_input = (states.abs() * mask[None, :, :, None]).sum(2) / mask.sum(1)[None, :, None]  # (L, B, H)
        input_wins += torch.nn.functional.one_hot(per_input.argmax(-1), H).sum(1)
        tokens += int(mask.sum())
        inputs += int(mask.shape[0])
    if not totals:
        raise ValueError("No batches given: the dataset is empty.")
    sums, sq, absum, token_wins, input_wins = totals
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
    """Tokenized, padded batches of ``texts`` for ``activation_stats`` / ``activation_profile`` (truncated to
    ``max_length``). A tokenizer without a pad token (decoders such as Llama) pads with its end-of-text token."""
    texts = list(texts)
    if not texts:
        raise ValueError("No texts given: the dataset is empty.")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
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


@torch.no_grad()
def activation_profile(
    model: torch.nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    threshold: float = 6.0,
    norm_outputs: bool = False,
    progress: bool = False,
    autocast_dtype: torch.dtype | None = None,
    stack: str | None = None,
) -> pd.DataFrame:
    """Per (where, layer, dim) over real tokens: mean |h|, max |h|, share of tokens with |h| >= ``threshold``,
    share of tokens / inputs where the dim is the largest, and the layer's median |h| (over all entries,
    averaged over batches). ``where`` is ``hidden`` (the model's hidden states, index 0 = embeddings; of
    ``stack``, ``encoder`` or ``decoder``, in an encoder-decoder) or, with ``norm_outputs``, a norm site's name
    (its output). Sums, not stacked activations: memory is layers x hidden size. ``layer_dominance`` reads the
    per-layer view of given dims from it.

    Example:
        >>> profile = activation_profile(model, text_batches(tokenizer, texts, 64))  # doctest: +SKIP
    """
    device = next(model.parameters()).device
    acc: dict[str, dict[str, torch.Tensor]] = {}
    counts = {"tokens": 0, "inputs": 0, "batches": 0}
    captured: dict[str, torch.Tensor] = {}

    def keep(name: str, output, _call) -> None:  # this batch's norm output; None: the output goes on unchanged
        captured[name] = first_tensor(output)

    traced = {site.name: site.module for site in find_norm_sites(model)} if norm_outputs else {}

    def add(where: str, states: torch.Tensor, mask: torch.Tensor) -> None:  # states (L, B, T, H)
        L, _, _, H = states.shape
        real = states[:, mask].abs()  # (L, N, H)
        per_input = (states.abs() * mask[None, :, :, None]).sum(2) / mask.sum(1)[None, :, None]
        a = acc.setdefault(
            where,
            {
                "abs": torch.zeros(L, H, dtype=torch.float64, device=device),
                "max": torch.zeros(L, H, dtype=torch.float32, device=device),
                "ge": torch.zeros(L, H, dtype=torch.long, device=device),
                "tok": torch.zeros(L, H, dtype=torch.long, device=device),
                "inp": torch.zeros(L, H, dtype=torch.long, device=device),
                "median": torch.zeros(L, dtype=torch.float64, device=device),
            },
        )
        a["abs"] += real.sum(1).double()
        a["max"] = torch.maximum(a["max"], real.amax(1))
        a["ge"] += (real >= threshold).sum(1)
        a["tok"] += torch.nn.functional.one_hot(real.argmax(-1), H).sum(1)
        a["inp"] += torch.nn.functional.one_hot(per_input.argmax(-1), H).sum(1)
        a["median"] += real.flatten(1).median(1).values.double()

    with Trace(model, traced, retain_output=False, edit_output=keep):
        for batch in tqdm(list(batches), desc="activations", disable=not progress, leave=False):
            batch = {
                k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")
            }
            captured.clear()
            with autocast(device, autocast_dtype):
                out = model(**batch, output_hidden_states=True)
            mask = batch.get("attention_mask", torch.ones(batch["input_ids"].shape, device=device)).bool()
            add("hidden", _stacked(hidden_states_of(out, stack), mask, stack), mask)
            for name, value in captured.items():
                if value.dim() == 3 and value.shape[:2] == mask.shape:
                    add(name, value.float()[None], mask)
            counts["tokens"] += int(mask.sum())
            counts["inputs"] += int(mask.shape[0])
            counts["batches"] += 1
    if not counts["batches"]:
        raise ValueError("No batches given: the dataset is empty.")
    frames = []
    for where, a in acc.items():
        L, H = a["abs"].shape
        frame = pd.DataFrame(
            {
                "where": where,
                "layer": np.repeat(np.arange(L), H),
                "dim": np.tile(np.arange(H), L),
                "mean_abs": (a["abs"] / counts["tokens"]).flatten().cpu().numpy(),
                "max_abs": a["max"].flatten().cpu().numpy(),
                "share_ge_threshold": (a["ge"].double() / counts["tokens"]).flatten().cpu().numpy(),
                "token_share": (a["tok"].double() / counts["tokens"]).flatten().cpu().numpy(),
                "input_share": (a["inp"].double() / counts["inputs"]).flatten().cpu().numpy(),
                "layer_median_abs": np.repeat((a["median"] / counts["batches"]).cpu().numpy(), H),
            }
        )
        frame["ratio_to_median_dim"] = frame.mean_abs / frame.groupby("layer").mean_abs.transform("median")
        frames.append(frame)
    profile = pd.concat(frames, ignore_index=True)
    profile.attrs.update(threshold=threshold, **counts)
    return profile


def shared_activation_profile(
    model: torch.nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    threshold: float = 6.0,
    norm_outputs: bool = False,
    autocast_dtype: torch.dtype | None = None,
    stack: str | None = None,
    progress: bool = False,
) -> SharedResult:
    """``activation_profile`` through the shared results cache: keyed by every weight's bytes, the batches'
    token ids, the settings, the device type and this module's source, so a notebook that profiles the same model
    on the same inputs as an earlier one (the rule's detection, in most notebooks) reads its table. Only for a
    model whose forward is its weights: an edit made by hooks would not be in the key."""
    batches = [dict(b) for b in batches]
    device = next(model.parameters()).device
    config = getattr(model, "config", None)
    key = {
        "weights": weights_digest(model),
        "model": type(model).__name__,
        "config": {k: str(v) for k, v in config.to_dict().items() if k != "_name_or_path"}
        if config is not None
        else None,
        "inputs": tensors_digest(b[k] for b in batches for k in sorted(b) if isinstance(b[k], torch.Tensor)),
        "threshold": threshold,
        "norm_outputs": norm_outputs,
        "autocast": str(autocast_dtype),
        "stack": stack,
        "device": device.type,
        "training": model.training,  # dropout on: another profile
        "code": source_digest(__file__, inspect.getfile(autocast), inspect.getfile(Trace)),  # this, precision, hooks
    }
    return shared_result(
        "activation_profile",
        key,
        lambda: activation_profile(
            model, batches, threshold, norm_outputs, progress=progress, autocast_dtype=autocast_dtype, stack=stack
        ),
    )


TOKEN_KINDS = ("first token", "special", "punctuation", "other")


def hidden_states_of(output, stack: str | None = None) -> tuple[torch.Tensor, ...]:
    """The hidden states (embeddings first) in a forward's ``output``: of ``stack`` (``encoder`` / ``decoder``)
    in an encoder-decoder, else the model's own (a decoder-only output's ``decoder_hidden_states`` as fallback)."""
    if stack == "encoder" and getattr(output, "encoder_hidden_states", None) is not None:
        return output.encoder_hidden_states
    if stack == "decoder" and getattr(output, "decoder_hidden_states", None) is not None:
        return output.decoder_hidden_states
    states = getattr(output, "hidden_states", None)
    if states is None:
        states = getattr(output, "decoder_hidden_states", None)
    if states is None:
        raise ValueError("The model returned no hidden states (it was called with output_hidden_states=True).")
    return states


def _stacked(states: Sequence[torch.Tensor], mask: torch.Tensor, stack: str | None) -> torch.Tensor:
    """(L+1, B, T, H) in fp32; a decoder's states must line up with the input tokens the mask counts."""
    stacked = torch.stack([h.float() for h in states])
    if stacked.shape[1:3] != mask.shape:
        raise ValueError(f"{stack or 'the model'}'s hidden states do not align with the input tokens")
    return stacked


def layer_dominance(profile: pd.DataFrame, dims: Sequence[int], where: str = "hidden") -> pd.DataFrame:
    """Per layer of an ``activation_profile``: dims_mean_abs (mean |h| at ``dims``), median_abs (the median dim's
    mean |h|; of an even count, the lower middle one), ratio (the two's), max_abs (largest |h| of the layer),
    max_dim (where) and max_ratio (max_abs / median_abs): how strongly ``dims`` and the layer's peak dominate.

    Example:
        >>> layer_dominance(activation_profile(model, batches), [81]).ratio.max()  # doctest: +SKIP
    """
    p = profile[profile["where"] == where]
    if p.empty:
        raise ValueError(f"The activation profile has no {where!r} rows.")
    n_layers, hidden = int(p.layer.max()) + 1, int(p.dim.max()) + 1
    mean_abs = torch.tensor(p.mean_abs.to_numpy().reshape(n_layers, hidden)).float()
    max_abs = torch.tensor(p.max_abs.to_numpy().reshape(n_layers, hidden))
    at = torch.tensor([int(d) for d in dims], dtype=torch.long)
    layer_max, layer_dim = max_abs.max(1)
    per_layer = pd.DataFrame(
        {
            "layer": np.arange(n_layers),
            "dims_mean_abs": mean_abs[:, at].mean(1).numpy(),
            "median_abs": mean_abs.median(1).values.numpy(),
            "max_abs": layer_max.numpy(),
            "max_dim": layer_dim.numpy(),
        }
    )
    per_layer["ratio"] = per_layer.dims_mean_abs / per_layer.median_abs
    per_layer["max_ratio"] = per_layer.max_abs / per_layer.median_abs
    return per_layer


def token_kinds(input_ids: torch.Tensor, mask: torch.Tensor, tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """Per token, its index in ``TOKEN_KINDS``: 0 first token, 1 special/delimiter, 2 punctuation, 3 other
    (-1 padding)."""
    special = set(int(i) for i in getattr(tokenizer, "all_special_ids", []) or [])
    vocab_punct: dict[int, bool] = {}
    kinds = torch.full(input_ids.shape, 3, dtype=torch.long)
    ids = input_ids.cpu()
    for (b, t), token in np.ndenumerate(ids.numpy()):
        token = int(token)
        if token in special:
            kinds[b, t] = 1
        else:
            if token not in vocab_punct:
                text = tokenizer.convert_tokens_to_string([str(tokenizer.convert_ids_to_tokens(token))]).strip()
                vocab_punct[token] = bool(text) and all(c in string.punctuation for c in text)
            if vocab_punct[token]:
                kinds[b, t] = 2
    kinds[:, 0] = 0
    kinds[~mask.cpu().bool()] = -1
    return kinds


@torch.no_grad()
def carriers_by_token_kind(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    batches: Iterable[Mapping[str, torch.Tensor]],
    dims: Sequence[int],
    stack: str | None = None,
) -> pd.DataFrame:
    """Which tokens carry ``dims``: per layer and kind of token (``TOKEN_KINDS``), its share of the tokens, the
    mean |h| at ``dims`` on it, and its share of the summed |h| at ``dims`` (mass_share; sums to 1 per layer).

    Example:
        >>> carriers_by_token_kind(model, tokenizer, text_batches(tokenizer, texts), [81])  # doctest: +SKIP
    """
    device = next(model.parameters()).device
    dims_t = torch.tensor([int(d) for d in dims], device=device)
    kind_abs: torch.Tensor | None = None
    kind_count: torch.Tensor | None = None
    tokens = 0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        out = model(**batch, output_hidden_states=True)
        mask = batch.get("attention_mask", torch.ones(batch["input_ids"].shape, device=device)).bool()
        states = _stacked(hidden_states_of(out, stack), mask, stack)  # (L+1, B, T, H)
        kinds = token_kinds(batch["input_ids"], mask, tokenizer).to(device)
        real = states[:, mask].abs()  # (L+1, N, H)
        k_real = kinds[mask]
        if kind_abs is None or kind_count is None:
            kind_abs = torch.zeros(real.shape[0], len(TOKEN_KINDS), dtype=torch.float64, device=device)
            kind_count = torch.zeros(len(TOKEN_KINDS), dtype=torch.long, device=device)
        at = real.index_select(2, dims_t).mean(2)  # (L+1, N): mean |h| over the chosen dims
        for k in range(len(TOKEN_KINDS)):
            chosen = k_real == k
            kind_abs[:, k] += at[:, chosen].sum(1).double()
            kind_count[k] += int(chosen.sum())
        tokens += int(mask.sum())
    if kind_abs is None or kind_count is None:
        raise ValueError("No batches given: the dataset is empty.")
    rows = []
    total = kind_abs.sum(1)
    for layer in range(kind_abs.shape[0]):
        for k, kind in enumerate(TOKEN_KINDS):
            n = int(kind_count[k])
            rows.append(
                {
                    "layer": layer,
                    "kind": kind,
                    "token_share": n / tokens,
                    "mean_abs_at_dims": float(kind_abs[layer, k] / n) if n else float("nan"),
                    "mass_share": float(kind_abs[layer, k] / total[layer]) if total[layer] > 0 else float("nan"),
                }
            )
    return pd.DataFrame(rows)
