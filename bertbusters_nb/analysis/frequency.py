"""Token frequency against outlier magnitude (Puccetti et al. 2022), and which tokens carry the outliers.

Two ingredients, then statistics:

- ``pretraining_token_counts``: for a model pre-trained by this project (bbmini), the EXACT count of
  every token id in its pre-training data, rebuilt from the corpora with the package's own
  tokenizer and packing functions and checked against the SHA-1 of the train chunks the run
  recorded in ``training_config.json``. ``proxy_token_counts``: for any other model, counts over
  the offline corpora with that model's tokenizer (a proxy: its real pre-training data is not here).
- ``token_occurrences``: per real token of some texts, its id, position, category (special,
  delimiter, first) and the hidden-state value of each studied dim at each layer, in one tidy table.

``frequency_table`` reduces the occurrences to one row per token type at one (layer, dim);
``frequency_correlation`` gives Pearson (on log counts) and Spearman correlations with bootstrap
confidence intervals, and partial correlations controlling for the type's mean position and for
special tokens.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..shared_results import shared_result, source_digest
from .rule import DEFAULT_RULE

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

DELIMITERS = frozenset(
    ".,;:!?"
)  # Bondarenko et al. 2023 name [SEP], "." and ","; the other punctuation marks join them
CATEGORIES = ("special", "delimiter", "first")
DEFAULT_PROXY_CORPORA = ("movie_reviews", "snli", "kjv")


@dataclass
class TokenCounts:
    """Per token id, its count in a corpus.

    counts: int64 array of length vocab size. source: what was counted. exact: True when the counts are
    the model's own pre-training data, verified by the train chunks' SHA-1. tokens: total counted.
    """

    counts: np.ndarray
    source: str
    exact: bool
    tokens: int

    def describe(self) -> str:
        kind = "exact pre-training counts" if self.exact else "proxy counts (not the model's pre-training data)"
        return f"{kind}: {self.tokens:,} tokens of {self.source}"


def _cached(key: dict, compute) -> tuple[np.ndarray, dict]:
    """Counts through the shared results cache (``shared_results``): computed once per key on this machine."""

    def table() -> pd.DataFrame:
        counts, meta = compute()
        frame = pd.DataFrame({"count": np.asarray(counts, dtype=np.int64)})
        frame.attrs.update(meta)
        return frame

    result = shared_result("token_counts", {**key, "code": source_digest(__file__)}, table)
    return result.table["count"].to_numpy(), dict(result.table.attrs)


def _vocab_key(tokenizer) -> str:
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha1(json.dumps(vocab).encode()).hexdigest()


def pretraining_token_counts(
    model_dir: str | os.PathLike, max_texts: int | None = None, cache: bool = True
) -> TokenCounts:
    """Exact per-token counts of a project-trained model's pre-training data (``bertbusters_nb/data/bbmini``).

    Rebuilds the packed train chunks from the corpora named in ``training_config.json`` with the
    model's tokenizer (``pretraining.tokenizer.encode_texts`` + ``pack_chunks``: the very functions that
    built them) and compares their SHA-1 with the recorded one; ``exact`` says whether they match.
    ``max_texts`` keeps the first N texts per corpus (smoke runs; never exact).

    Example:
        >>> counts = pretraining_token_counts("bertbusters_nb/data/bbmini")  # doctest: +SKIP
        >>> counts.exact, counts.tokens  # doctest: +SKIP
        (True, 10652928)
    """
    from transformers import AutoTokenizer

    from ..data import load_texts
    from ..pretraining import tokenizer as tt

    model_dir = Path(model_dir)
    config_path = model_dir / "training_config.json"
    if not config_path.exists():
        raise FileNotFoundError(
            f"{config_path} is missing: exact counts need a model pre-trained by this project "
            f"(use proxy_token_counts for other models)."
        )
    info = json.loads(config_path.read_text())["data"]
    corpora, seq_len = list(info["corpora"]), int(info["seq_len"])

    def compute():
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        texts = [t for c in corpora for t in load_texts(c, split="train")[:max_texts]]
        chunks = tt.pack_chunks(
            tt.encode_texts(tokenizer, texts), seq_len, tokenizer.cls_token_id, tokenizer.sep_token_id
        )
        sha1 = hashlib.sha1(chunks.tobytes()).hexdigest()
        counts = np.bincount(chunks.ravel().astype(np.int64), minlength=len(tokenizer))
        return counts, {"sha1": sha1, "tokens": int(chunks.size)}

    key = {
        "kind": "pretraining",
        "dir": str(model_dir.resolve()),
        "sha1": info.get("train_sha1"),
        "max_texts": max_texts,
    }
    counts, meta = _cached(key, compute) if cache else compute()
    exact = max_texts is None and meta["sha1"] == info.get("train_sha1")
    if max_texts is None and not exact:
        log.warning("rebuilt train chunks of %s do not match the recorded SHA-1; counts are approximate", model_dir)
    return TokenCounts(
        counts, f"{model_dir.name}'s pre-training data ({', '.join(corpora)}, train split)", exact, int(meta["tokens"])
    )


def _whole_texts(tokenizer):
    """A copy of the fast tokenizer's backend that neither pads nor truncates.

    The backend keeps whatever padding and truncation the last ``tokenizer(...)`` call or the saved
    ``tokenizer.json`` set (MiniLM's pads every text to 128), so counting through it directly counted
    padding and cut long texts, depending on what ran before.
    """
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.no_truncation()
    return backend


def proxy_token_counts(
    tokenizer: PreTrainedTokenizerBase,
    corpora: Sequence[str] = DEFAULT_PROXY_CORPORA,
    max_texts: int | None = None,
    cache: bool = True,
) -> TokenCounts:
    """Per-token counts of the offline corpora (train split) with ``tokenizer``, special tokens included.

    A proxy for models whose pre-training data is not here (MiniLM, SmolLM2, hub models).

    Example:
        >>> proxy_token_counts(tokenizer, ["movie_reviews"], max_texts=2000).tokens  # doctest: +SKIP
    """
    from ..data import load_texts

    def compute():
        texts = [t for c in corpora for t in load_texts(c, split="train")[:max_texts]]
        backend = _whole_texts(tokenizer)
        counts = np.zeros(len(tokenizer), dtype=np.int64)
        for start in range(0, len(texts), 2048):
            for enc in backend.encode_batch(texts[start : start + 2048], add_special_tokens=True):
                np.add.at(counts, np.asarray(enc.ids, dtype=np.int64), 1)
        return counts, {"tokens": int(counts.sum())}

    key = {
        "kind": "proxy",
        "vocab": _vocab_key(tokenizer),
        "corpora": list(corpora),
        "max_texts": max_texts,
        "whole_texts": True,
    }  # counts before this key counted the backend's padding when it had some
    counts, meta = _cached(key, compute) if cache else compute()
    limit = f", first {max_texts:,} texts each" if max_texts else ""
    return TokenCounts(
        counts, f"the offline corpora ({', '.join(corpora)}{limit}) as a proxy", False, int(meta["tokens"])
    )


_CATEGORY_IDS: dict[int, tuple[object, torch.Tensor, torch.Tensor]] = {}


def _category_ids(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """(special ids, delimiter ids) of a tokenizer, computed once per tokenizer object (decoding a vocabulary is slow)."""
    cached = _CATEGORY_IDS.get(id(tokenizer))
    if cached is not None and cached[0] is tokenizer:
        return cached[1], cached[2]
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
    ids = sorted(set(tokenizer.get_vocab().values()))
    pieces = tokenizer.batch_decode([[i] for i in ids])
    delimiter = torch.tensor([i for i, p in zip(ids, pieces) if p.strip() in DELIMITERS], dtype=torch.long)
    _CATEGORY_IDS[id(tokenizer)] = (tokenizer, special, delimiter)
    return special, delimiter


def token_categories(tokenizer: PreTrainedTokenizerBase, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Boolean masks of ``input_ids``' shape: 'special' (the tokenizer's special ids), 'delimiter'
    (a token that decodes to one of ``DELIMITERS``) and 'first' (position 0).

    Example:
        >>> masks = token_categories(tokenizer, torch.tensor([[101, 1996, 1012, 102]]))  # doctest: +SKIP
        >>> masks["delimiter"].tolist()  # doctest: +SKIP
        [[False, False, True, False]]
    """
    special_ids, delimiter_ids = _category_ids(tokenizer)
    special_ids, delimiter_ids = special_ids.to(input_ids.dtype), delimiter_ids.to(input_ids.dtype)
    first = torch.zeros_like(input_ids, dtype=torch.bool)
    first[..., 0] = True
    return {
        "special": torch.isin(input_ids, special_ids.to(input_ids.device)),
        "delimiter": torch.isin(input_ids, delimiter_ids.to(input_ids.device)),
        "first": first,
    }


def base_model_of(model: torch.nn.Module) -> torch.nn.Module:
    """The model without its task head (``base_model``; the model itself where it has none): hidden states and
    attentions come from it without computing a vocabulary-sized head."""
    base = getattr(model, "base_model", model)
    return base if base is not None else model


@torch.no_grad()
def token_occurrences(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    dims: Sequence[int],
    max_length: int = 128,
    batch_size: int = 32,
    progress: bool = True,
) -> pd.DataFrame:
    """One row per (real token, layer, dim): text, position, token_id, token, special / delimiter / first,
    layer (0 = embeddings), dim, value and abs of the hidden state there.

    Example:
        >>> occ = token_occurrences(model, tokenizer, texts[:8], dims=[81])  # doctest: +SKIP
    """
    from ..analysis.activations import text_batches

    dims = [int(d) for d in dims]
    if not dims:
        raise ValueError("dims is empty: pass the outlier dims to measure (e.g. from outliers.dims_to_ablate).")
    device = next(model.parameters()).device
    frames = []
    offset = 0
    for batch in tqdm(
        text_batches(tokenizer, texts, max_length, batch_size), desc="hidden states", disable=not progress, leave=False
    ):
        inputs = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        states = torch.stack(base_model_of(model)(**inputs, output_hidden_states=True).hidden_states)  # (L+1, B, T, H)
        picked = states[..., dims].float().cpu()  # (L+1, B, T, D)
        ids = batch["input_ids"]
        mask = batch["attention_mask"].bool()
        cats = token_categories(tokenizer, ids)
        b, t = torch.nonzero(mask, as_tuple=True)
        L = picked.shape[0]
        values = picked[:, b, t, :]  # (L+1, N, D)
        n = len(b)
        frame = pd.DataFrame(
            {
                "text": np.tile((b + offset).numpy(), L * len(dims)),
                "position": np.tile(t.numpy(), L * len(dims)),
                "token_id": np.tile(ids[b, t].numpy(), L * len(dims)),
                **{c: np.tile(cats[c][b, t].numpy(), L * len(dims)) for c in CATEGORIES},
                "layer": np.repeat(np.arange(L), n * len(dims)),
                "dim": np.tile(np.repeat(np.array(dims), n), L),
                "value": values.permute(0, 2, 1).reshape(-1).numpy(),
            }
        )
        frames.append(frame)
        offset += ids.shape[0]
    occ = pd.concat(frames, ignore_index=True)
    occ["abs"] = occ["value"].abs()
    tokens = tokenizer.convert_ids_to_tokens(sorted(occ.token_id.unique().tolist()))
    occ.insert(3, "token", occ.token_id.map(dict(zip(sorted(occ.token_id.unique().tolist()), tokens))))
    return occ


def frequency_table(
    occurrences: pd.DataFrame, counts: TokenCounts, layer: int, dim: int, min_occurrences: int = 3
) -> pd.DataFrame:
    """One row per token type seen at least ``min_occurrences`` times at (layer, dim): token, corpus count,
    log_count (log1p), mean |h|, occurrences, mean position, special.

    Example:
        >>> frequency_table(occ, counts, layer=2, dim=81).head()  # doctest: +SKIP
    """
    chosen = occurrences[(occurrences.layer == layer) & (occurrences.dim == dim)]
    if chosen.empty:
        raise ValueError(
            f"No occurrences at layer {layer}, dim {dim}: measured layers "
            f"{sorted(occurrences.layer.unique())}, dims {sorted(occurrences.dim.unique())}."
        )
    table = chosen.groupby(["token_id", "token"], as_index=False).agg(
        mean_abs=("abs", "mean"),
        occurrences=("abs", "size"),
        mean_position=("position", "mean"),
        special=("special", "max"),
        delimiter=("delimiter", "max"),
    )
    table = table[table.occurrences >= min_occurrences].copy()
    table["count"] = counts.counts[table.token_id.to_numpy()]
    table["log_count"] = np.log1p(table["count"].astype(float))
    table.insert(0, "layer", layer)
    table.insert(1, "dim", dim)
    return table.sort_values("count", ascending=False).reset_index(drop=True)


def _rank(x: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis (ties share their mean rank)."""
    from scipy.stats import rankdata

    return rankdata(x, axis=-1)


def _corr_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``a`` with the same row of ``b`` (NaN where one is constant)."""
    a = a - a.mean(-1, keepdims=True)
    b = b - b.mean(-1, keepdims=True)
    denom = np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 1e-12, (a * b).sum(-1) / np.where(denom > 1e-12, denom, 1.0), np.nan)


def _residual_rows(y: np.ndarray, covariates: np.ndarray) -> np.ndarray:
    """Residuals of each row of ``y`` (B, n) after least squares on its covariates (B, n, k) and an intercept
    (normal equations with a tiny ridge, so a covariate that is constant in a row simply drops out)."""
    design = np.concatenate([np.ones(y.shape + (1,)), covariates], axis=-1)  # (B, n, k+1)
    scale = np.sqrt((design**2).mean(-2, keepdims=True)).clip(1e-12)  # equilibrate the columns
    design = design / scale
    gram = design.transpose(0, 2, 1) @ design + 1e-9 * np.eye(design.shape[-1])  # ridge: constant columns drop out
    beta = np.linalg.solve(gram, design.transpose(0, 2, 1) @ y[..., None])  # (B, k+1, 1)
    return y - (design @ beta)[..., 0]


def _partial_rows(x: np.ndarray, y: np.ndarray, covariates: np.ndarray, rank: bool) -> np.ndarray:
    if rank:
        x, y = _rank(x), _rank(y)
        covariates = np.stack([_rank(covariates[..., j]) for j in range(covariates.shape[-1])], axis=-1)
    return _corr_rows(_residual_rows(x, covariates), _residual_rows(y, covariates))


def partial_correlation(x: np.ndarray, y: np.ndarray, covariates: np.ndarray, rank: bool = False) -> float:
    """Correlation of ``x`` and ``y`` after regressing both on ``covariates`` (n, k) by least squares;
    ``rank=True`` ranks every column first (partial Spearman).

    Example:
        >>> rng = np.random.default_rng(0); z = rng.normal(size=500)
        >>> round(partial_correlation(z + rng.normal(size=500) * .1, z + rng.normal(size=500) * .1, z[:, None]), 1)
        0.0
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    covariates = np.asarray(covariates, float).reshape(len(x), -1)
    return float(_partial_rows(x[None], y[None], covariates[None], rank)[0])


def _measures(x: np.ndarray, y: np.ndarray, cov: np.ndarray, index: np.ndarray) -> dict[str, np.ndarray]:
    """The four correlations on the rows of ``index`` (B, n): one value per resample."""
    xs, ys, cs = x[index], y[index], cov[index]
    return {
        "pearson": _corr_rows(xs, ys),
        "spearman": _corr_rows(_rank(xs), _rank(ys)),
        "partial_pearson": _partial_rows(xs, ys, cs, False),
        "partial_spearman": _partial_rows(xs, ys, cs, True),
    }


def frequency_correlation(table: pd.DataFrame, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Pearson (log count vs mean |h|), Spearman, and both partial on (mean position, special), each with a
    percentile bootstrap CI over token types (resamples computed together). One row per measure: measure,
    value, ci_low, ci_high, types, boot.

    Example:
        >>> frequency_correlation(frequency_table(occ, counts, 2, 81), n_boot=500)  # doctest: +SKIP
    """
    if len(table) < 5:
        raise ValueError(
            f"Only {len(table)} token types: too few for a correlation (use more texts or a lower min_occurrences)."
        )
    x, y = table.log_count.to_numpy(float), table.mean_abs.to_numpy(float)
    cov = table[["mean_position", "special"]].to_numpy(float)
    n = len(table)
    point = _measures(x, y, cov, np.arange(n)[None])
    rng = np.random.default_rng(seed)
    boots: dict[str, list[np.ndarray]] = {k: [] for k in point}
    for start in range(0, n_boot, 100):  # 100 resamples at a time bounds the memory
        part = _measures(x, y, cov, rng.integers(0, n, (min(100, n_boot - start), n)))
        for k, v in part.items():
            boots[k].append(v)
    alpha = (1 - level) / 2
    rows = []
    for k, v in point.items():
        b = np.concatenate(boots[k])
        rows.append(
            {
                "measure": k,
                "value": float(v[0]),
                "ci_low": float(np.nanquantile(b, alpha)),
                "ci_high": float(np.nanquantile(b, 1 - alpha)),
                "types": n,
                "boot": n_boot,
            }
        )
    return pd.DataFrame(rows)


def top_activation_tokens(
    occurrences: pd.DataFrame, dim: int, layer: int | None = None, top_share: float = 0.01, n_tokens: int = 10
) -> tuple[pd.DataFrame, dict]:
    """Which tokens carry the largest |h| at ``dim`` (over all layers but the embeddings, or one ``layer``).

    Returns ``(tokens, shares)``: the ``n_tokens`` most frequent token strings among the top ``top_share`` of
    occurrences (with their share), and the share of those top occurrences on special tokens, delimiters, the
    first token and any of them, beside the same shares among all occurrences (the base rate).
    """
    chosen = occurrences[
        (occurrences.dim == dim) & ((occurrences.layer > 0) if layer is None else (occurrences.layer == layer))
    ]
    if chosen.empty:
        raise ValueError(f"No occurrences at dim {dim} (layer {layer}).")
    threshold = chosen["abs"].quantile(1 - top_share)
    top = chosen[chosen["abs"] >= threshold]
    anyof = lambda f: f.special | f.delimiter | f.first  # noqa: E731
    shares = {"top": len(top), "threshold": float(threshold)}
    for name, frame in (("top", top), ("all", chosen)):
        for c in CATEGORIES:
            shares[f"{name}_{c}"] = float(frame[c].mean())
        shares[f"{name}_any"] = float(anyof(frame).mean())
    tokens = top.token.value_counts().head(n_tokens).rename_axis("token").reset_index(name="occurrences")
    tokens["share_of_top"] = tokens.occurrences / len(top)
    tokens["mean_abs"] = tokens.token.map(top.groupby("token")["abs"].mean())
    return tokens, shares


def layer_correlations(
    occurrences: pd.DataFrame, counts: TokenCounts, dim: int, n_boot: int = 500, seed: int = 0, min_occurrences: int = 3
) -> pd.DataFrame:
    """``frequency_correlation`` at every measured layer for ``dim``; one row per (layer, measure)."""
    frames = []
    for layer in sorted(occurrences.layer.unique()):
        table = frequency_table(occurrences, counts, int(layer), dim, min_occurrences)
        corr = frequency_correlation(table, n_boot=n_boot, seed=seed)
        corr.insert(0, "layer", int(layer))
        corr.insert(1, "dim", int(dim))
        frames.append(corr)
    return pd.concat(frames, ignore_index=True)


def snapshot_availability(
    model_dir: str | os.PathLike, dims: Sequence[int], k: float = DEFAULT_RULE.k
) -> tuple[pd.DataFrame, list[Path], list[int]]:
    """Over a project-trained model's training: when did ``dims`` stand out, and can the frequency correlation be
    measured at the snapshots? Returns the emergence table (from the LayerNorm trajectory), the snapshot weight
    files present and the trajectory's logged steps (``reporting.claims.snapshot_sentence`` words them).

    The correlation needs hidden states, hence whole intermediate weights (``snapshots/step_N.safetensors`` of the
    run folder); a model folder that carries only ``norm_trajectory.npz`` allows the parameter-based timeline only.
    """
    from ..pretraining import NormTrajectory
    from .emergence import emergence_steps, flags_over_steps

    model_dir = Path(model_dir)
    path = model_dir / "norm_trajectory.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the snapshot study needs a model pre-trained by this project.")
    trajectory = NormTrajectory.load(path)
    emerged = emergence_steps(flags_over_steps(trajectory, k=k), dims)
    snapshots = (
        sorted((model_dir / "snapshots").glob("step_*.safetensors")) if (model_dir / "snapshots").exists() else []
    )
    return emerged, snapshots, [int(s) for s in trajectory.steps]
