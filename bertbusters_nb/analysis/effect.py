"""(c) The effect criterion: each dim disabled alone, scored on the model's own objective (``objective_of``, on the
eval set ``objective_eval_set`` builds).

It is the ground truth that chooses *between* the criteria (``report.criteria_agreement``); it never chooses the
dims an experiment then ablates (``detection.detect`` never calls it). Dims chosen by their effect are judged on
a disjoint split of the texts (``select_dims_by_effect``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from ..device import autocast
from ..evaluation.model_objective import OBJECTIVE_KINDS, objective_of
from ..model.discovery import find_norm_sites
from ..model.sites import NormSite, ablation_roles, select_sites
from .criteria import ranked
from .rule import UNWEIGHED_ROLES

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from ..evaluation.sets import EvalSet


def effect_roles(sites: Sequence[NormSite]) -> tuple[str, ...]:
    """The sites the single-dim scan disables: the one rule, ``sites.ablation_roles`` (block-output norms, else
    the pre-norms); a model with neither (sandwich-only OLMo2, MiniMax) gets its first weighed role."""
    try:
        return ablation_roles(sites)
    except ValueError:
        present = {s.role for s in sites}
        return tuple(sorted(present - set(UNWEIGHED_ROLES)))[:1]


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
    also_check: Iterable[int] = (),
) -> pd.DataFrame:
    """(c) Each dim disabled alone (zeroed) in the ``roles`` sites (default ``effect_roles``): the damage to
    the model's own objective on ``texts``. ``damage``: loss rise (``mlm``/``causal``) or 1 - mean cosine
    of sentence embeddings to the intact model's (``embedding``). Score = damage; ``selected``: the
    ``top`` most damaging. ``method="exact"`` is the exhaustive scan (``scan.scan_dims``); ``method="screen"``
    estimates every dim from gradients and checks the ``screen_top_k`` best exactly (``screen.screened_scan``;
    ``effect_kind`` says which value a row holds; exact rows rank above every estimate, whose ``score`` is NaN),
    and ``also_check`` exactly too (e.g. every criterion's dims, so
    that whether they are among the most damaging rests on exact values).

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
    objective = objective or objective_of(model, tokenizer)
    ctx = autocast(next(model.parameters()).device, autocast_dtype)
    if objective not in OBJECTIVE_KINDS:
        raise ValueError(f"Unknown objective {objective!r}; pick one of {list(OBJECTIVE_KINDS)}.")
    with ctx:
        if method == "screen":
            eval_set = objective_eval_set(objective, tokenizer, texts, max_length, seed)
            out = _screened_effect(model, eval_set, roles, sites, top, progress, screen_top_k, also_check)
            out.attrs["texts"] = len(texts)
            return out
        from ..evaluation.scan import scan_dims

        # one engine for both objectives: its shared prefix skips what no condition touches (a block-output scan
        # of MiniLM starts after layer 0), and exact values equal the screen's exact rows
        eval_set = objective_eval_set(objective, tokenizer, texts, max_length, seed)
        scan = scan_dims(model, eval_set, roles=roles, dims=dims, progress=progress, sites=sites)
        value = scan.cosine_mean if objective == "embedding" else scan.value
        table = pd.DataFrame({"dim": dims, "effect_value": value.to_numpy(), "damage": scan.delta.to_numpy()})
        metric = "embedding cosine" if objective == "embedding" else f"{objective} loss"
    table["score"] = table.damage
    table["effect_rank"] = table.damage.rank(ascending=False, method="min").astype(int)
    table["selected"] = table.effect_rank <= top
    table = table[["dim", "score", "selected", "damage", "effect_value", "effect_rank"]]
    out = ranked(table, f"effect ({metric}, {'+'.join(roles)})")
    out.attrs.update(objective=objective, metric=metric, roles=list(roles), texts=len(texts))
    return out


def objective_eval_set(
    objective: str, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int = 64, seed: int = 42
) -> EvalSet:
    """The eval set scoring ``objective`` (``model_objective.OBJECTIVE_KINDS``) on ``texts``: masked-LM targets
    (seeded masking), next-token targets (a decoder without a pad token pads with its end-of-text token), or
    sentence embeddings."""
    from ..evaluation.sets import prepare_causal_eval, prepare_embedding_eval, prepare_mlm_eval

    if objective == "mlm":
        return prepare_mlm_eval(tokenizer, texts, max_length=max_length, seed=seed)
    if objective == "causal":
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return prepare_causal_eval(tokenizer, texts, max_length=max_length)
    if objective == "embedding":
        return prepare_embedding_eval(tokenizer, texts, max_length=max_length)
    raise ValueError(f"Unknown objective {objective!r}; pick one of {list(OBJECTIVE_KINDS)}.")


def _screened_effect(
    model: torch.nn.Module,
    eval_set: EvalSet,
    roles: tuple[str, ...],
    sites: Sequence[NormSite],
    top: int,
    progress: bool,
    screen_top_k: int,
    also_check: Iterable[int] = (),
) -> pd.DataFrame:
    """``effect_criterion(method="screen")``: ``screen.screened_scan`` on the model's own objective."""
    from ..evaluation.screen import screened_scan

    objective = eval_set.kind
    scan = screened_scan(
        model,
        eval_set,
        roles=roles,
        top_k=screen_top_k,
        sites=sites,
        progress=progress,
        also_check=sorted({int(d) for d in also_check}),
    )
    table = pd.DataFrame(
        {
            "dim": scan.dim.astype(int),
            "damage": scan.effect.astype(float),
            "effect_value": scan.effect.astype(float) + scan.intact_objective.astype(float),
            "effect_kind": scan.value_kind,
        }
    )
    # Exact rows rank above every estimate: an estimate may overshoot (MiniLM's Gauss-Newton estimates put dims
    # whose exact damage is 0.01 at 0.13), so only dims evaluated exactly can be "the most damaging".
    exact = table.effect_kind == "exact"
    table = table.assign(_exact=exact).sort_values(["_exact", "damage", "dim"], ascending=[False, False, True])
    table = table.drop(columns="_exact").reset_index(drop=True)
    table["effect_rank"] = np.arange(1, len(table) + 1)
    table["score"] = table.damage.where(table.effect_kind == "exact")  # an estimate scores nothing: NaN, ranked last
    table["selected"] = table.effect_rank <= top
    out = table[["dim", "score", "selected", "damage", "effect_value", "effect_rank", "effect_kind"]]
    out.attrs["criterion"] = f"effect (screened {objective}, {'+'.join(roles)})"  # order kept: not ``ranked``
    out.attrs.update(objective=objective, metric=f"{objective} (screened)", roles=list(roles))
    return out


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
