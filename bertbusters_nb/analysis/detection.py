"""The project's one rule: which hidden dims to ablate, from parameters and activations only (never an effect).

``detect`` applies ``rule.DEFAULT_RULE`` (or a given ``DetectionRule``): the union of (a) the parameter criterion
over every non-head norm site and (b) the ``magnitude`` activation criterion (``criteria``), ordered by a rank
combination (``combine``). ``dims_to_ablate`` is what every notebook, the explorer, pre-training and fine-tuning
call; ``dims_from_flags`` is the rule's parameter part on stored flags of a run whose weights are gone. README,
"Which dims: the detection rule", says why; ``detection_report`` sets it beside the other criteria and the scan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import pandas as pd
import torch

from .activations import shared_activation_profile, text_batches
from .criteria import activation_criterion, criterion_from_counts, parameter_criterion, texts_for_activations
from .rule import DEFAULT_RULE, DetectionRule

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

RULE_CRITERION = "default rule (params all | activations magnitude)"  # its name in agreement tables


@dataclass
class Detection:
    """What ``detect`` found. dims: the default dims to ablate, strongest first. rule: how they were chosen
    ('params+activations', or 'strongest candidates' when no dim passed either criterion, e.g. at
    initialisation). table: per dim, the evidence of both criteria and the combined rank. params, activations:
    the two criteria's tables (activations None without a tokenizer or profile). settings: the rule applied.
    profile_source: where the activation profile came from (computed in this run, or read from the shared results
    cache and computed by which run; '' when it was given or not used)."""

    dims: list[int]
    rule: str
    table: pd.DataFrame
    params: pd.DataFrame
    activations: pd.DataFrame | None
    settings: DetectionRule
    profile_source: str = ""

    def summary(self) -> str:
        parts = []
        for r in self.table[self.table.dim.isin(self.dims)].itertuples():
            bits = [f"params {int(r.param_sites)}/{int(r.n_param_sites)} sites (max|z| {r.param_max_abs_z:.1f})"]
            if "act_ratio_median" in self.table:
                bits.append(
                    f"mean|h| {r.act_ratio_median:.1f}x the median dim (>= {self.settings.activation_ratio:g}x "
                    f"in {int(r.act_layers)}/{int(r.n_act_layers)} layers)"
                )
            parts.append(f"dim {int(r.dim)}: " + ", ".join(bits))
        source = f" (activation profile {self.profile_source})" if self.profile_source else ""
        return f"outlier dims ({self.rule}): {self.dims}; " + "; ".join(parts) + source


def combine(
    params: pd.DataFrame, activations: pd.DataFrame | None, fallback: int = DEFAULT_RULE.fallback
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
    rule: DetectionRule = DEFAULT_RULE,
    profile: pd.DataFrame | None = None,
    autocast_dtype: torch.dtype | None = None,
    **options,
) -> Detection:
    """The project's one rule, from parameters and activations only (never from an effect).

    (a) norm weight/bias beyond ``rule.k`` sigma in more than ``rule.min_share`` of the sites of
    ``rule.param_roles`` (default: every non-head norm site), or (b) mean |h| at least ``rule.activation_ratio``
    x the median dim's in at least ``rule.activation_layer_share`` of the layers, on ``texts`` (default:
    ``rule.n_texts`` offline *train* reviews, ``criteria.texts_for_activations``). Without a tokenizer only (a)
    is used. When no dim passes (a model at initialisation), the ``rule.fallback`` strongest candidates by the
    same rank combination are returned, and ``Detection.rule`` says so. ``options`` change single settings of
    ``rule`` (``detect(model, k=4.0)``); an unknown name is refused.

    Example:
        >>> found = detect(model, tokenizer)  # doctest: +SKIP
        >>> found.dims, found.rule  # doctest: +SKIP
        ([99, 223], 'params+activations')
    """
    rule = rule.with_options(**options) if options else rule
    params = parameter_criterion(model, roles=rule.param_roles, k=rule.k, min_share=rule.min_share)
    activations, source = None, ""
    if profile is None and tokenizer is not None:  # the same model and texts as an earlier notebook: its profile
        texts = texts_for_activations(rule.n_texts) if texts is None else list(texts)
        batches = text_batches(tokenizer, texts, max_length=rule.max_length, batch_size=16)
        shared = shared_activation_profile(model, batches, autocast_dtype=autocast_dtype)
        profile, source = shared.table, shared.provenance
    if profile is not None:
        activations = activation_criterion(
            profile, "magnitude", ratio=rule.activation_ratio, layer_share=rule.activation_layer_share
        )
    dims, how, table = combine(params, activations, rule.fallback)
    return Detection(dims, how, table, params, activations, rule, source)


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


def dims_from_flags(flags: pd.DataFrame, min_share: float = DEFAULT_RULE.min_share, fallback: int = 0) -> list[int]:
    """The rule's parameter part on stored per-dim flag counts of one step (``emergence.flags_over_steps``:
    ``dim``, ``sites_flagged``, ``max_abs_z``, ``n_sites``), for runs whose weights are gone (activations
    need weights). With no dim passing: the ``fallback`` strongest candidates (0: none)."""
    counts = flags.rename(
        columns={"sites_flagged": "param_sites", "max_abs_z": "param_max_abs_z", "n_sites": "n_param_sites"}
    )
    dims, _, _ = combine(criterion_from_counts(counts, min_share), None, fallback)
    return dims
