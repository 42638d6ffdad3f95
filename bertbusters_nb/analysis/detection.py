"""Which hidden dims matter: outlier detection by several criteria, and the project's one rule.

Three kinds of evidence, each a named, parameterised criterion returning the same per-dim
table (``dim``, ``score`` (larger = more outlying), ``selected``, then its own evidence columns),
sorted by score:

(a) ``parameter_criterion``: norm weight and bias beyond ``k`` sigma, counted over the sites of a
    role set (the paper's 3-sigma test, the follow-up's "more than a share of layers").
(b) ``activation_criterion``: hidden-state magnitudes per layer against the layer's median, with
    presets ``magnitude`` (mean |h| many times the median dim's), ``llm_int8`` (Dettmers et al.
    2022: |h| >= 6 in >= 25% of layers and >= 6% of positions), ``massive`` (Sun et al. 2024: max
    |h| >= 100 and ~1000x the median |h|) and ``dominance`` (the paper's "largest dim for most inputs").
(c) ``effect_criterion``: the single-dim scan on the model's own objective (masked-LM loss,
    causal-LM loss, or embedding cosine for an encoder without a head). It is the ground truth that
    chooses *between* (a) and (b); it never chooses the dims an experiment then ablates.

``dims_to_ablate`` is the one rule the whole project uses (see ``DEFAULT_RULE`` and README
"Which dims: the detection rule"): the union of (a) over every non-head norm site and (b)
``magnitude``, ordered by a rank combination. ``detection_report`` puts every criterion's evidence
side by side and measures each criterion's agreement with the scan.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..model.discovery import find_norm_sites
from ..model.hooks import Trace, first_tensor
from ..model.sites import NormSite, select_sites
from .outliers import parameter_table, strict_share

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Roles whose parameters are weighed by default: every site on the hidden dim except an LM head's own norm.
PARAM_ROLES_ALL = "all"
_NOT_WEIGHED = ("head", "qk_norm")

# The default rule, set from the agreement measured on MiniLM, bbmini (+ seed candidates) and SmolLM2
# (README, "Which dims: the detection rule"; notebook 02 recomputes the table).
DEFAULT_RULE: dict[str, Any] = {
    "param_roles": PARAM_ROLES_ALL,
    "k": 3.0,
    "min_share": 0.5,
    "activation_ratio": 20.0,
    "activation_layer_share": 0.5,
    "n_texts": 32,
    "max_length": 64,
    "fallback": 2,
}

RULE_CRITERION = "default rule (params all | activations magnitude)"  # its name in agreement tables

ACTIVATION_PRESETS: dict[str, dict[str, Any]] = {
    # mean |h| of the dim at least `ratio` times the layer's median dim, in at least `layer_share` of layers
    "magnitude": {"ratio": DEFAULT_RULE["activation_ratio"], "layer_share": DEFAULT_RULE["activation_layer_share"]},
    # LLM.int8: |h| >= 6 in >= 6% of positions (sequence positions = tokens here), in >= 25% of layers
    "llm_int8": {"threshold": 6.0, "position_share": 0.06, "layer_share": 0.25},
    # massive activations: max |h| >= 100 and >= 1000x the layer's median |h|, in some layer
    "massive": {"min_abs": 100.0, "ratio": 1000.0},
    # the paper's dominance: largest mean-|h| dim for at least half of the inputs, averaged over layers
    "dominance": {"input_share": 0.5},
}


# ----------------------------------------------------------------------------- helpers


def _sites_of(model_or_sites) -> list[NormSite]:
    if isinstance(model_or_sites, torch.nn.Module):
        return find_norm_sites(model_or_sites)
    return list(model_or_sites)


def param_sites(sites: Sequence[NormSite], roles: Iterable[str] | str = PARAM_ROLES_ALL) -> list[NormSite]:
    """The sites of ``roles`` (``"all"``: every site but an LM head's own norm)."""
    if roles == PARAM_ROLES_ALL or roles is None:
        chosen = [s for s in sites if s.role not in _NOT_WEIGHED]
        if not chosen:
            raise ValueError("This model has no norm sites outside its LM head; nothing to weigh.")
        return chosen
    return select_sites(sites, roles)


def effect_roles(sites: Sequence[NormSite]) -> tuple[str, ...]:
    """The sites the single-dim scan disables: block-output norms (post-LN), else the pre-norms (pre-LN)."""
    present = {s.role for s in sites}
    if "block_output" in present:
        return ("block_output",)
    pre = tuple(r for r in ("pre_attention", "pre_cross_attention", "pre_ffn", "pre_parallel") if r in present)
    if pre:
        return pre
    return tuple(sorted(present - set(_NOT_WEIGHED)))[:1]


def _finish(table: pd.DataFrame, name: str) -> pd.DataFrame:
    table = table.sort_values(["score", "dim"], ascending=[False, True]).reset_index(drop=True)
    table.attrs["criterion"] = name
    return table


# ----------------------------------------------------------------------------- (a) parameters


def parameter_counts(params: pd.DataFrame, k: float = 3.0, which: Sequence[str] = ("weight", "bias")) -> pd.DataFrame:
    """Per dim, from a long parameter table (site, param, dim, z; ``outliers.parameter_table`` or a
    ``NormTrajectory.table`` step): sites where weight or bias is beyond ``k`` sigma, weight and bias
    apart, how many of the weight flags are unusually *small* (the norm damps the dim), max |z|."""
    params = params[params.param.isin(list(which))]
    n_sites = int(params.site.nunique())
    if n_sites == 0:
        raise ValueError(f"No {list(which)} parameters in these sites (RMSNorm has no bias: use which=('weight',)).")
    t = params.assign(abs_z=params.z.abs(), hit=params.z.abs() > k)
    t["low"] = t.hit & (t.z < 0) & (t.param == "weight")
    per_site = t.groupby(["dim", "site"]).agg(hit=("hit", "any"), low=("low", "any"), abs_z=("abs_z", "max"))
    out = per_site.groupby("dim").agg(
        param_sites=("hit", "sum"),
        param_low_weight_sites=("low", "sum"),
        param_max_abs_z=("abs_z", "max"),
        param_mean_abs_z=("abs_z", "mean"),
    )
    for name in ("weight", "bias"):
        sub = t[t.param == name]
        counts = sub.groupby(["dim", "site"]).hit.any().groupby("dim").sum() if len(sub) else pd.Series(dtype=int)
        out[f"param_{name}_sites"] = counts.reindex(out.index, fill_value=0).astype(int)
    out = out.reset_index()
    out["param_sites"] = out.param_sites.astype(int)
    out["param_low_weight_sites"] = out.param_low_weight_sites.astype(int)
    out["n_param_sites"] = n_sites
    out["param_share"] = out.param_sites / n_sites
    return out


def parameter_criterion(
    model_or_sites,
    roles: Iterable[str] | str = PARAM_ROLES_ALL,
    k: float = 3.0,
    min_share: float = 0.5,
    which: Sequence[str] = ("weight", "bias"),
    params: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """(a) Dims whose norm weight or bias is beyond ``k`` sigma in more than ``min_share`` of the sites
    of ``roles``. Score: sites flagged, ties broken by max |z|. ``params``: a long parameter table to use
    instead of the model's (e.g. one step of a pre-training run's LayerNorm trajectory).

    Example:
        >>> parameter_criterion(model, roles="all").head(3)  # doctest: +SKIP
    """

    if k <= 0:
        raise ValueError(f"k must be positive, got {k}.")
    if not 0 <= min_share < 1:
        raise ValueError(f"min_share must be in [0, 1), got {min_share}.")
    if params is None:
        sites = param_sites(_sites_of(model_or_sites), roles)
        params = parameter_table(sites, k)
    return criterion_from_counts(
        parameter_counts(params, k, which),
        min_share,
        f"parameters ({roles if isinstance(roles, str) else '+'.join(roles)}, {k:g} sigma, > {min_share:.0%} of sites)",
    )


def criterion_from_counts(
    table: pd.DataFrame, min_share: float = DEFAULT_RULE["min_share"], name: str = "parameters"
) -> pd.DataFrame:
    """(a) from per-dim counts (``dim``, ``param_sites``, ``param_max_abs_z``, ``n_param_sites``), e.g. the
    flags of a stored LayerNorm trajectory (``emergence.flags_over_steps``): selected when flagged in
    more than ``min_share`` of the sites."""
    table = table.copy()
    need = strict_share(int(table.n_param_sites.iloc[0]), min_share)
    top_z = float(table.param_max_abs_z.max()) + 1.0
    table.insert(1, "score", table.param_sites + table.param_max_abs_z / top_z)
    table.insert(2, "selected", table.param_sites >= need)
    table["param_sites_needed"] = need
    return _finish(table, name)


# ----------------------------------------------------------------------------- (b) activations


@torch.no_grad()
def activation_profile(
    model: torch.nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    threshold: float = 6.0,
    norm_outputs: bool = False,
    progress: bool = False,
    autocast_dtype: torch.dtype | None = None,
) -> pd.DataFrame:
    """Per (where, layer, dim) over real tokens: mean |h|, max |h|, share of tokens with |h| >= ``threshold``,
    share of tokens / inputs where the dim is the largest, and the layer's median |h| (over all entries,
    averaged over batches). ``where`` is ``hidden`` (the model's hidden states, index 0 = embeddings) or,
    with ``norm_outputs``, a norm site's name (its output). Sums, not stacked activations: memory is
    layers x hidden size.

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
            if autocast_dtype is not None:
                with torch.autocast(device.type, dtype=autocast_dtype):
                    out = model(**batch, output_hidden_states=True)
            else:
                out = model(**batch, output_hidden_states=True)
            mask = batch.get("attention_mask", torch.ones(batch["input_ids"].shape, device=device)).bool()
            add("hidden", torch.stack([h.float() for h in out.hidden_states]), mask)
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


def activation_criterion(
    profile: pd.DataFrame, preset: str = "magnitude", where: str = "hidden", skip_embeddings: bool = True, **overrides
) -> pd.DataFrame:
    """(b) Dims outlying in the hidden states, by one of ``ACTIVATION_PRESETS`` (thresholds overridable).

    ``profile`` comes from ``activation_profile``. Layer 0 of ``hidden`` (the embedding output) is left
    out unless ``skip_embeddings=False``. Scores: ``magnitude``, the median over layers of mean |h| over
    the median dim's; ``llm_int8``, layers meeting the position share (ties: mean share); ``massive``,
    the largest max |h| over the layer's median |h|; ``dominance``, the mean input share.

    Example:
        >>> activation_criterion(profile, "massive").head(3)  # doctest: +SKIP
    """
    if preset not in ACTIVATION_PRESETS:
        raise ValueError(f"Unknown activation preset {preset!r}; pick one of {list(ACTIVATION_PRESETS)}.")
    opts = {**ACTIVATION_PRESETS[preset], **overrides}
    unknown = set(overrides) - set(ACTIVATION_PRESETS[preset])
    if unknown:
        raise ValueError(
            f"Preset {preset!r} has no option(s) {sorted(unknown)}; it takes {list(ACTIVATION_PRESETS[preset])}."
        )
    p = profile[profile["where"] == where]
    if p.empty:
        raise ValueError(f"The activation profile has no {where!r} rows (norm outputs need norm_outputs=True).")
    if skip_embeddings and where == "hidden" and p.layer.nunique() > 1:
        p = p[p.layer > 0]
    n_layers = int(p.layer.nunique())
    g = p.groupby("dim")
    base = pd.DataFrame(
        {
            "act_ratio_median": g.ratio_to_median_dim.median(),
            "act_ratio_max": g.ratio_to_median_dim.max(),
            "act_max_abs": g.max_abs.max(),
            "act_massive_ratio": (p.max_abs / p.layer_median_abs.clip(lower=1e-12)).groupby(p.dim).max(),
            "act_input_share": g.input_share.mean(),
            "act_token_share": g.token_share.mean(),
        }
    )
    if preset == "magnitude":
        hits = (p.ratio_to_median_dim >= opts["ratio"]).groupby(p.dim).sum()
        base["act_layers"] = hits
        base["score"] = base.act_ratio_median
        base["selected"] = hits >= max(1, math.ceil(n_layers * opts["layer_share"]))
    elif preset == "llm_int8":
        if not math.isclose(profile.attrs.get("threshold", opts["threshold"]), opts["threshold"]):
            raise ValueError(
                f"The profile counted |h| >= {profile.attrs.get('threshold')}; rerun activation_profile "
                f"with threshold={opts['threshold']}."
            )
        hits = (p.share_ge_threshold >= opts["position_share"]).groupby(p.dim).sum()
        base["act_layers"] = hits
        base["act_share_ge_threshold"] = g.share_ge_threshold.mean()
        base["score"] = hits + base.act_share_ge_threshold.clip(upper=0.999)
        base["selected"] = hits >= max(1, math.ceil(n_layers * opts["layer_share"]))
    elif preset == "massive":
        ok = (p.max_abs >= opts["min_abs"]) & (p.max_abs >= opts["ratio"] * p.layer_median_abs)
        base["act_layers"] = ok.groupby(p.dim).sum()
        base["score"] = base.act_massive_ratio
        base["selected"] = base.act_layers > 0
    else:  # dominance
        base["act_layers"] = (p.input_share >= opts["input_share"]).groupby(p.dim).sum()
        base["score"] = base.act_input_share
        base["selected"] = base.act_input_share >= opts["input_share"]
    base["n_act_layers"] = n_layers
    table = base.reset_index()
    cols = ["dim", "score", "selected"] + [c for c in table.columns if c not in ("dim", "score", "selected")]
    return _finish(table[cols], f"activations ({preset}, {where})")


def texts_for_activations(n_texts: int = 32, seed: int = 0) -> list[str]:
    """Default texts for the activation criterion: offline movie reviews from the *train* split, so that
    the held-out texts notebooks judge ablations on are never the ones that chose the dims."""
    from ..data import load_texts, sample_texts

    return sample_texts(load_texts("movie_reviews", split="train"), n_texts, seed=seed)


def _batches(tokenizer, texts: Sequence[str], max_length: int, batch_size: int = 16):
    from .activations import text_batches

    if tokenizer.pad_token is None:  # decoders (Llama) ship without one
        tokenizer.pad_token = tokenizer.eos_token
    return text_batches(tokenizer, texts, max_length=max_length, batch_size=batch_size)


# ----------------------------------------------------------------------------- (c) effect


def objective_of(model: torch.nn.Module) -> str:
    """The model's own objective: ``mlm`` (masked-LM head), ``causal`` (causal-LM head) or ``embeddings``."""
    name = type(model).__name__
    if "MaskedLM" in name or "ForPreTraining" in name:
        return "mlm"
    if "CausalLM" in name or "LMHead" in name:
        return "causal"
    return "embeddings"


def effect_criterion(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    roles: Iterable[str] | None = None,
    dims: Iterable[int] | None = None,
    objective: str | None = None,
    max_length: int = 64,
    method: str = "exact",
    top: int = 4,
    progress: bool = False,
    autocast_dtype: torch.dtype | None = None,
    seed: int = 42,
    screen_top_k: int = 16,
) -> pd.DataFrame:
    """(c) Each dim disabled alone (zeroed) in the ``roles`` sites (default ``effect_roles``): the damage to
    the model's own objective on ``texts``. ``damage``: loss rise (``mlm``/``causal``) or 1 - mean cosine
    of sentence embeddings to the intact model's (``embeddings``). Score = damage; ``selected``: the
    ``top`` most damaging. ``method="exact"`` is the exhaustive scan (``scan.scan_dims``); ``method="screen"``
    estimates every dim from gradients and checks the ``screen_top_k`` best exactly (``screen.screened_scan``;
    ``effect_kind`` says which value a row holds).

    Example:
        >>> effect_criterion(model, tokenizer, heldout_texts[:32], dims=range(64)).head()  # doctest: +SKIP
    """
    if method not in ("exact", "screen"):
        raise ValueError(
            f"Unknown effect method {method!r}; pick 'exact' (the exhaustive scan) or 'screen' "
            f"(screen.screened_scan: every dim estimated from gradients, the top ones checked exactly)."
        )
    texts = list(texts)
    if not texts:
        raise ValueError("effect_criterion needs texts to measure the damage on.")
    sites = find_norm_sites(model)
    roles = tuple(effect_roles(sites) if roles is None else ([roles] if isinstance(roles, str) else roles))
    chosen = select_sites(sites, roles)
    size = min(s.size for s in chosen)
    dims = list(range(size)) if dims is None else [int(d) for d in dims]
    objective = objective or objective_of(model)
    ctx = torch.autocast(next(model.parameters()).device.type, dtype=autocast_dtype) if autocast_dtype else _null()
    with ctx:
        if method == "screen":
            return _screened_effect(
                model, tokenizer, texts, roles, sites, objective, max_length, top, progress, seed, screen_top_k
            )
        if objective == "embeddings":
            from ..evaluation.embeddings import embedding_drift
            from ..model.ablation import Condition

            drift = embedding_drift(
                model,
                tokenizer,
                texts,
                [Condition(f"dim {d}", (d,), roles) for d in dims],
                progress=progress,
                max_length=max_length,
            )
            table = pd.DataFrame({"dim": dims, "effect_value": drift.cosine_mean.to_numpy()})
            table["damage"] = 1.0 - table.effect_value
            metric = "embedding cosine"
        else:
            from ..evaluation.scan import scan_dims
            from ..evaluation.sets import prepare_causal_eval, prepare_mlm_eval

            if objective == "mlm":
                eval_set = prepare_mlm_eval(tokenizer, texts, max_length=max_length, seed=seed)
            elif objective == "causal":
                if tokenizer.pad_token is None:
                    tokenizer.pad_token = tokenizer.eos_token
                eval_set = prepare_causal_eval(tokenizer, texts, max_length=max_length)
            else:
                raise ValueError(f"Unknown objective {objective!r}; pick mlm, causal or embeddings.")
            scan = scan_dims(model, eval_set, roles=roles, dims=dims, progress=progress, sites=sites)
            table = pd.DataFrame({"dim": dims, "effect_value": scan.value.to_numpy(), "damage": scan.delta.to_numpy()})
            metric = f"{objective} loss"
    table["score"] = table.damage
    table["effect_rank"] = table.damage.rank(ascending=False, method="min").astype(int)
    table["selected"] = table.effect_rank <= top
    table = table[["dim", "score", "selected", "damage", "effect_value", "effect_rank"]]
    out = _finish(table, f"effect ({metric}, {'+'.join(roles)})")
    out.attrs.update(objective=objective, metric=metric, roles=list(roles), texts=len(texts))
    return out


def _screened_effect(
    model, tokenizer, texts, roles, sites, objective, max_length, top, progress, seed, screen_top_k
) -> pd.DataFrame:
    """``effect_criterion(method="screen")``: ``screen.screened_scan`` on the model's own objective."""
    from ..evaluation.screen import prepare_embedding_eval, screened_scan
    from ..evaluation.sets import prepare_causal_eval, prepare_mlm_eval

    if objective == "embeddings":
        eval_set = prepare_embedding_eval(tokenizer, texts, max_length=max_length)
    elif objective == "mlm":
        eval_set = prepare_mlm_eval(tokenizer, texts, max_length=max_length, seed=seed)
    else:
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        eval_set = prepare_causal_eval(tokenizer, texts, max_length=max_length)
    scan = screened_scan(model, eval_set, roles=roles, top_k=screen_top_k, sites=sites, progress=progress)
    table = pd.DataFrame(
        {
            "dim": scan.dim.astype(int),
            "damage": scan.effect.astype(float),
            "effect_value": scan.effect.astype(float) + scan.intact_objective.astype(float),
            "effect_kind": scan.value_kind,
        }
    )
    table["score"] = table.damage
    table["effect_rank"] = table.damage.rank(ascending=False, method="min").astype(int)
    table["selected"] = table.effect_rank <= top
    table = table[["dim", "score", "selected", "damage", "effect_value", "effect_rank", "effect_kind"]]
    out = _finish(table, f"effect (screened {objective}, {'+'.join(roles)})")
    out.attrs.update(objective=objective, metric=f"{objective} (screened)", roles=list(roles), texts=len(texts))
    return out


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def split_texts(texts: Sequence[str], seed: int = 0, share: float = 0.5) -> tuple[list[str], list[str]]:
    """Two disjoint halves of ``texts`` (seeded shuffle; duplicates of a text stay on one side)."""
    unique = list(dict.fromkeys(texts))
    if len(unique) < 2:
        raise ValueError("Need at least two distinct texts to split into a selection and an evaluation set.")
    random.Random(seed).shuffle(unique)
    cut = min(len(unique) - 1, max(1, round(len(unique) * share)))
    return unique[:cut], unique[cut:]


@dataclass
class EffectSelection:
    """Dims chosen by their effect on ``selection_texts``, judged on the disjoint ``evaluation_texts``."""

    dims: list[int]
    selection: pd.DataFrame
    evaluation: pd.DataFrame
    selection_texts: list[str] = field(repr=False)
    evaluation_texts: list[str] = field(repr=False)


def select_dims_by_effect(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    count: int = 2,
    seed: int = 0,
    **effect_options,
) -> EffectSelection:
    """Effect-selected dims, honestly: the ``count`` most damaging dims on one half of ``texts``, and the
    same scan on the other, disjoint half (``evaluation``) to judge them. Choosing dims by their effect and
    judging them on the same data proves nothing.

    Example:
        >>> chosen = select_dims_by_effect(model, tokenizer, heldout_texts[:64], count=2)  # doctest: +SKIP
        >>> chosen.evaluation.set_index("dim").loc[chosen.dims, "effect_rank"]  # doctest: +SKIP
    """
    first, second = split_texts(texts, seed)
    selection = effect_criterion(model, tokenizer, first, top=count, **effect_options)
    dims = [int(d) for d in selection.dim.head(count)]
    evaluation = effect_criterion(model, tokenizer, second, top=count, **effect_options)
    return EffectSelection(dims, selection, evaluation, first, second)


# ----------------------------------------------------------------------------- the one rule


@dataclass
class Detection:
    """What ``detect`` found. dims: the default dims to ablate, strongest first. rule: how they were chosen
    ('params+activations', or 'strongest candidates' when no dim passed either criterion, e.g. at
    initialisation). table: per dim, the evidence of both criteria and the combined rank."""

    dims: list[int]
    rule: str
    table: pd.DataFrame
    params: pd.DataFrame
    activations: pd.DataFrame | None
    settings: dict

    def summary(self) -> str:
        parts = []
        for r in self.table[self.table.dim.isin(self.dims)].itertuples():
            bits = [f"params {int(r.param_sites)}/{int(r.n_param_sites)} sites (max|z| {r.param_max_abs_z:.1f})"]
            if "act_ratio_median" in self.table:
                bits.append(
                    f"mean|h| {r.act_ratio_median:.1f}x the median dim (>= {self.settings['activation_ratio']:g}x "
                    f"in {int(r.act_layers)}/{int(r.n_act_layers)} layers)"
                )
            parts.append(f"dim {int(r.dim)}: " + ", ".join(bits))
        return f"outlier dims ({self.rule}): {self.dims}; " + "; ".join(parts)


def combine(
    params: pd.DataFrame, activations: pd.DataFrame | None, fallback: int = 2
) -> tuple[list[int], str, pd.DataFrame]:
    """The rule on precomputed criterion tables: union of the selected dims of (a) and (b), ordered by the
    mean of their ranks under the two scores; when neither selects a dim, the ``fallback`` best by that
    same rank combination (rule 'strongest candidates')."""
    table = params.rename(columns={"score": "param_score", "selected": "param_selected"})
    table["param_rank"] = table.param_score.rank(ascending=False, method="min")
    if activations is not None:
        act = activations.rename(columns={"score": "act_score", "selected": "act_selected"})
        act["act_rank"] = act.act_score.rank(ascending=False, method="min")
        table = table.merge(act, on="dim", how="outer")
        table["param_selected"] = table.param_selected.fillna(False).astype(bool)
        table["act_selected"] = table.act_selected.fillna(False).astype(bool)
        worst = len(table)
        table["combined_rank"] = (table.param_rank.fillna(worst) + table.act_rank.fillna(worst)) / 2
        table["selected"] = table.param_selected | table.act_selected
    else:
        table["combined_rank"] = table.param_rank
        table["selected"] = table.param_selected
    table = table.sort_values(["selected", "combined_rank", "dim"], ascending=[False, True, True]).reset_index(
        drop=True
    )
    dims = [int(d) for d in table.dim[table.selected]]
    if dims:
        return dims, "params+activations" if activations is not None else "params", table
    return [int(d) for d in table.dim.head(fallback)], "strongest candidates", table


def detect(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase | None = None,
    texts: Sequence[str] | None = None,
    *,
    param_roles: Iterable[str] | str = DEFAULT_RULE["param_roles"],
    k: float = DEFAULT_RULE["k"],
    min_share: float = DEFAULT_RULE["min_share"],
    activation_ratio: float = DEFAULT_RULE["activation_ratio"],
    activation_layer_share: float = DEFAULT_RULE["activation_layer_share"],
    n_texts: int = DEFAULT_RULE["n_texts"],
    max_length: int = DEFAULT_RULE["max_length"],
    fallback: int = DEFAULT_RULE["fallback"],
    profile: pd.DataFrame | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> Detection:
    """The project's one rule, from parameters and activations only (never from an effect).

    (a) norm weight/bias beyond ``k`` sigma in more than ``min_share`` of every non-head norm site, or
    (b) mean |h| at least ``activation_ratio`` x the median dim's in at least ``activation_layer_share`` of
    the layers, on ``texts`` (default: ``n_texts`` offline *train* reviews, ``texts_for_activations``).
    Without a tokenizer only (a) is used. When no dim passes (a model at initialisation), the ``fallback``
    strongest candidates by the same rank combination are returned, and ``rule`` says so.

    Example:
        >>> found = detect(model, tokenizer)  # doctest: +SKIP
        >>> found.dims, found.rule  # doctest: +SKIP
        ([99, 223], 'params+activations')
    """
    params = parameter_criterion(model, roles=param_roles, k=k, min_share=min_share)
    activations = None
    if profile is None and tokenizer is not None:
        texts = texts_for_activations(n_texts) if texts is None else list(texts)
        profile = activation_profile(model, _batches(tokenizer, texts, max_length), autocast_dtype=autocast_dtype)
    if profile is not None:
        activations = activation_criterion(
            profile, "magnitude", ratio=activation_ratio, layer_share=activation_layer_share
        )
    dims, rule, table = combine(params, activations, fallback)
    settings = dict(
        param_roles=param_roles,
        k=k,
        min_share=min_share,
        activation_ratio=activation_ratio,
        activation_layer_share=activation_layer_share,
        n_texts=n_texts,
        max_length=max_length,
        fallback=fallback,
        activations=activations is not None,
    )
    return Detection(dims, rule, table, params, activations, settings)


def dims_to_ablate(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase | None = None,
    texts: Sequence[str] | None = None,
    **options,
) -> list[int]:
    """The default dims to ablate (``detect(...).dims``): every notebook, the explorer, pre-training and
    fine-tuning call this. See ``detect`` for the rule and its options.

    Example:
        >>> dims_to_ablate(*load_model("minilm"))  # doctest: +SKIP
        [99, 223, ...]
    """
    return detect(model, tokenizer, texts, **options).dims


def dims_from_flags(flags: pd.DataFrame, min_share: float = DEFAULT_RULE["min_share"], fallback: int = 0) -> list[int]:
    """The rule's parameter part on stored per-dim flag counts of one step (``emergence.flags_over_steps``:
    ``dim``, ``sites_flagged``, ``max_abs_z``, ``n_sites``), for runs whose weights are gone (activations
    need weights). With no dim passing: the ``fallback`` strongest candidates (0: none)."""
    counts = flags.rename(
        columns={"sites_flagged": "param_sites", "max_abs_z": "param_max_abs_z", "n_sites": "n_param_sites"}
    )
    dims, _, _ = combine(criterion_from_counts(counts, min_share), None, fallback)
    return dims


# ----------------------------------------------------------------------------- report and agreement


def criteria_tables(
    model: torch.nn.Module,
    profile: pd.DataFrame | None,
    k: float = DEFAULT_RULE["k"],
    min_share: float = DEFAULT_RULE["min_share"],
    role_sets: Sequence[Iterable[str] | str] | None = None,
) -> dict[str, pd.DataFrame]:
    """Every magnitude criterion on one model: (a) per role set (block output, attention output,
    embeddings, pre-norms, all: those the model has), (b) every activation preset, and the default rule."""
    sites = find_norm_sites(model)
    present = {s.role for s in sites}
    if role_sets is None:
        role_sets = [
            r
            for r in (("block_output",), ("attention_output",), ("embeddings",), ("pre_attention", "pre_ffn"))
            if set(r) & present
        ] + [PARAM_ROLES_ALL]
    tables: dict[str, pd.DataFrame] = {}
    for roles in role_sets:
        roles = (roles,) if isinstance(roles, str) and roles != PARAM_ROLES_ALL else roles
        usable = roles if roles == PARAM_ROLES_ALL else tuple(r for r in roles if r in present)
        label = "params: " + (usable if isinstance(usable, str) else "+".join(usable))
        tables[label] = parameter_criterion(sites, roles=usable, k=k, min_share=min_share)
    if profile is not None:
        for preset in ACTIVATION_PRESETS:
            tables[f"activations: {preset}"] = activation_criterion(profile, preset)
    params = tables["params: all"]
    acts = tables.get("activations: magnitude")
    dims, rule, combined = combine(params, acts, DEFAULT_RULE["fallback"])
    rule_table = pd.DataFrame(
        {
            "dim": combined.dim,
            "score": -combined.combined_rank,
            "selected": combined.dim.isin(dims) & (rule != "strongest candidates"),
        }
    )
    tables[RULE_CRITERION] = _finish(rule_table, "default rule")
    return tables


def agreement(tables: Mapping[str, pd.DataFrame], effect: pd.DataFrame, top: int = 4) -> pd.DataFrame:
    """Per criterion, its agreement with the effect ranking: the dims it selects, precision and recall of
    that set against the ``top`` most damaging dims, whether it names the most damaging dim, the effect
    rank of its own top dim, and the Spearman correlation of its score with the damage (over the scanned
    dims; a dim a criterion does not score counts as its lowest score)."""
    truth = [int(d) for d in effect.dim.head(top)]
    damage = effect.set_index("dim").damage
    rank = effect.set_index("dim").effect_rank
    rows = []
    for name, t in tables.items():
        chosen = [int(d) for d in t.dim[t.selected]]
        hits = [d for d in chosen if d in truth]
        score = t.set_index("dim").score.reindex(damage.index)
        score = score.fillna(score.min() - 1 if score.notna().any() else 0)
        top_dim = int(t.dim.iloc[0])
        rows.append(
            {
                "criterion": name,
                "dims": " ".join(map(str, chosen[:8])) + (" ..." if len(chosen) > 8 else ""),
                "n_dims": len(chosen),
                "precision": len(hits) / len(chosen) if chosen else float("nan"),
                "recall": len(hits) / len(truth),
                "names_most_damaging": truth[0] in chosen,
                "top_dim": top_dim,
                "top_dim_effect_rank": int(rank.get(top_dim, -1)),
                "spearman": float(score.rank().corr(damage.rank())),
            }
        )
    out = pd.DataFrame(rows)
    out.attrs["most_damaging"] = truth
    return out


@dataclass
class DetectionReport:
    """``detection_report``'s result. detection: the default rule's ``Detection``. per_dim: every
    criterion's evidence side by side (one row per dim; effect columns where scanned). agreement: per
    criterion, its agreement with the effect ranking (None without a scan). effect: the scan table."""

    detection: Detection
    per_dim: pd.DataFrame
    agreement: pd.DataFrame | None
    effect: pd.DataFrame | None
    tables: dict[str, pd.DataFrame]


def _evidence_columns(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    merged = None
    for name, t in tables.items():
        if name.startswith("params: "):
            tag = name.split(": ", 1)[1].replace("+", "_")
            cols = {"param_sites": f"sites[{tag}]", "param_max_abs_z": f"max|z|[{tag}]"}
            part = t[["dim", *cols]].rename(columns=cols)
        elif name == "activations: magnitude":
            part = t[
                [
                    "dim",
                    "act_ratio_median",
                    "act_layers",
                    "act_max_abs",
                    "act_massive_ratio",
                    "act_input_share",
                    "act_token_share",
                ]
            ]
        elif name == "activations: llm_int8":
            part = t[["dim", "act_layers"]].rename(columns={"act_layers": "int8_layers"})
        else:
            continue
        merged = part if merged is None else merged.merge(part, on="dim", how="outer")
    return merged


def detection_report(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    activation_texts: Sequence[str] | None = None,
    effect_texts: Sequence[str] | None = None,
    effect_dims: Iterable[int] | None = None,
    top: int = 4,
    max_length: int = 64,
    autocast_dtype: torch.dtype | None = None,
    progress: bool = False,
    **rule_options,
) -> DetectionReport:
    """Every criterion's evidence per dim, the default rule's dims, and (with ``effect_texts``) each
    criterion's agreement with the single-dim scan on those texts (``effect_dims``: scan a subset only).
    Activation texts default to offline *train* reviews; give effect texts from another split.

    Example:
        >>> report = detection_report(model, tokenizer, effect_texts=heldout[:32])  # doctest: +SKIP
        >>> report.agreement  # doctest: +SKIP
    """
    texts = (
        texts_for_activations(rule_options.get("n_texts", DEFAULT_RULE["n_texts"]))
        if activation_texts is None
        else list(activation_texts)
    )
    profile = None
    if tokenizer is not None:
        profile = activation_profile(
            model, _batches(tokenizer, texts, max_length), autocast_dtype=autocast_dtype, progress=progress
        )
    found = detect(model, tokenizer, profile=profile, max_length=max_length, **rule_options)
    tables = criteria_tables(model, profile, k=found.settings["k"], min_share=found.settings["min_share"])
    per_dim = _evidence_columns(tables)
    per_dim.insert(1, "default", per_dim.dim.isin(found.dims) & (found.rule != "strongest candidates"))
    effect = table = None
    if effect_texts is not None:
        if overlap := set(effect_texts) & set(texts):
            raise ValueError(
                f"{len(overlap)} effect texts are also activation texts: judge the criteria on "
                f"texts that did not choose the dims (another split)."
            )
        effect = effect_criterion(
            model,
            tokenizer,
            effect_texts,
            dims=effect_dims,
            max_length=max_length,
            top=top,
            autocast_dtype=autocast_dtype,
            progress=progress,
        )
        per_dim = per_dim.merge(effect[["dim", "damage", "effect_rank"]], on="dim", how="left")
        table = agreement(tables, effect, top)
    order = ["default", "damage"] if effect is not None else ["default"]
    per_dim = per_dim.sort_values(order, ascending=False, na_position="last").reset_index(drop=True)
    return DetectionReport(found, per_dim, table, effect, tables)


# ----------------------------------------------------------------------------- command line


def _head_for(name: str) -> str:
    """The head to load a model with, from its config's architectures (MLM, causal LM, else the encoder)."""
    from transformers import AutoConfig

    from ..model.loading import resolve

    try:
        architectures = getattr(AutoConfig.from_pretrained(resolve(name)), "architectures", None) or []
    except (OSError, ValueError):
        return "base"
    if any("MaskedLM" in a or "ForPreTraining" in a for a in architectures):
        return "mlm"
    if any("CausalLM" in a or "LMHead" in a for a in architectures):
        return "causal-lm"
    return "base"


def main_detect(
    model_name: str,
    roles: Sequence[str] | None = None,
    as_json: bool = False,
    n_texts: int = 32,
    scan_texts: int = 0,
    device: str | None = "cpu",
    out=None,
) -> int:
    """``python -m bertbusters_nb detect MODEL``: the report and the default dims; ``--json``: one JSON object
    whose ``dims`` key holds the default. ``scan_texts`` > 0 also scans that many held-out reviews and
    prints each criterion's agreement with the scan."""
    import json
    import sys

    from ..model.loading import load_model

    out = out or sys.stdout
    model, tokenizer = load_model(model_name, head=_head_for(model_name), device=device)
    options = {"n_texts": n_texts}
    if roles:
        options["param_roles"] = tuple(roles)
    effect_texts = None
    if scan_texts:
        from ..data import load_texts, sample_texts

        effect_texts = sample_texts(load_texts("movie_reviews", split="heldout"), scan_texts, seed=0)
    report = detection_report(model, tokenizer, effect_texts=effect_texts, **options)
    found = report.detection
    if as_json:
        payload = {
            "model": model_name,
            "dims": found.dims,
            "rule": found.rule,
            "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in found.settings.items()},
            "per_dim": json.loads(report.per_dim.head(20).to_json(orient="records")),
            "agreement": None if report.agreement is None else json.loads(report.agreement.to_json(orient="records")),
        }
        print(json.dumps(payload), file=out)
        return 0
    with pd.option_context("display.width", 200, "display.max_columns", 40):
        print(f"{model_name}: {type(model).__name__}", file=out)
        print(found.summary(), file=out)
        print("\nevidence per dim (top 15):", file=out)
        print(report.per_dim.head(15).round(2).to_string(index=False), file=out)
        if report.agreement is not None:
            print(
                f"\nagreement with the single-dim scan on {scan_texts} held-out reviews "
                f"(most damaging: {report.agreement.attrs['most_damaging']}):",
                file=out,
            )
            print(report.agreement.round(3).to_string(index=False), file=out)
    print(f"\ndims to ablate: {found.dims}", file=out)
    return 0


def agreement_across_models(
    models: Sequence[str],
    n_effect_texts: int = 32,
    max_length: int = 64,
    top: int = 4,
    effect_dims: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> pd.DataFrame:
    """Notebook 02's table "which criterion finds the dims that matter": for each model (alias, folder or hub
    name, loaded one at a time with its own head), every criterion's agreement with the single-dim scan on
    ``n_effect_texts`` held-out reviews (activations on train reviews). ``effect_dims``: scan only the first
    that many dims plus every dim some criterion ranks in its top 8 (a cheaper, stated subset).

    Example:
        >>> agreement_across_models(["minilm", "bbmini"], n_effect_texts=16)  # doctest: +SKIP
    """
    from ..data import load_texts, sample_texts
    from ..model.loading import load_model

    if not models:
        raise ValueError("No models given: name at least one (e.g. ['minilm', 'bbmini']).")
    heldout = sample_texts(load_texts("movie_reviews", split="heldout"), n_effect_texts, seed=seed)
    frames = []
    for name in tqdm(list(models), desc="models", disable=not progress):
        model, tokenizer = load_model(name, head=_head_for(name), device="cpu")
        dims = None
        if effect_dims is not None:
            profile = activation_profile(model, _batches(tokenizer, texts_for_activations(), max_length))
            tables = criteria_tables(model, profile)
            dims = sorted(
                set(range(min(effect_dims, model.config.hidden_size)))
                | {int(d) for t in tables.values() for d in t.dim.head(8)}
            )
        report = detection_report(
            model, tokenizer, effect_texts=heldout, effect_dims=dims, top=top, max_length=max_length
        )
        table = report.agreement.assign(
            model=name,
            most_damaging=" ".join(map(str, report.agreement.attrs["most_damaging"])),
            scanned_dims=len(report.effect),
            objective=report.effect.attrs["metric"],
        )
        frames.append(table)
        del model
    out = pd.concat(frames, ignore_index=True)
    return out[
        [
            "model",
            "objective",
            "most_damaging",
            "scanned_dims",
            *[c for c in out.columns if c not in ("model", "objective", "most_damaging", "scanned_dims")],
        ]
    ]


def rule_finding(agreement_table: pd.DataFrame, min_precision: float = 0.5) -> tuple[str, bool | None, str]:
    """(claim, held, evidence) for notebook 02: on every model the default rule names the scan's most damaging
    dim, and at least ``min_precision`` of its dims are among the scan's most damaging (issue 13's target)."""
    rows = agreement_table[agreement_table.criterion == RULE_CRITERION]
    claim = (
        "The default rule names each model's most damaging dim, and at least half of its dims are among "
        "the scan's most damaging"
    )
    if rows.empty:
        return claim, None, "No model was scanned."
    held = bool(rows.names_most_damaging.all() and (rows.precision.fillna(0) >= min_precision).all())
    evidence = "; ".join(
        f"{r.model}: default dims [{r.dims}], scan's most damaging [{r.most_damaging}] "
        f"(precision {r.precision:.2f}, recall {r.recall:.2f}, Spearman {r.spearman:.2f})"
        for r in rows.itertuples()
    )
    return claim, held, evidence
