"""Evaluate a model, intact or under many ablation conditions, on one fixed eval set.

The package ``bertbusters_nb.evaluation`` re-exports these functions; the work is split by concern
(see the package docstring): ``sets`` (fixed eval sets), ``metrics`` (task metrics), ``engine`` (the
fast forward machinery) and ``scan`` (every hidden dim disabled alone, resumable).

Result table of ``evaluate_conditions`` (one row per condition, in the given order):

=============  ========================================================================
condition      the condition's name
dims           disabled dims, space separated ('' for the intact model); n_dims: count
roles          site roles touched, '+'-joined; layers: 'all' or space-separated indices
stack          'encoder' / 'decoder' / 'any'; mode: 'zero' or 'mean'
n_sites        number of norm modules the condition edits (0 for the intact model)
metric, value  the headline metric's name and value: eval_loss for masked/causal LM,
               ``METRIC_FOR_TASK[task]`` for classification
eval_loss      mean loss per scored token (LM) or per example (classification)
perplexity     exp(eval_loss), LMs only
<task metrics> classification only: every metric of ``TASK_METRICS[task]`` (GLUE names)
tokens         scored tokens (LM: masked / next tokens) or examples (classification)
examples       texts in the eval set; seed: the masking seed (None without masking)
kind           'mlm', 'causal' or 'classification'
spec           the condition itself as JSON text (``Condition.to_dict``): ``row_condition(row)`` rebuilds it,
               so any row can be re-run exactly (on the same model and eval set)
=============  ========================================================================

Example:
    >>> eval_set = prepare_mlm_eval(tokenizer, texts, seed=42)
    >>> table = evaluate_conditions(model, eval_set, [Condition("none"), Condition("outliers", (308, 381))])
    ...  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import pandas as pd
import torch

from ..model.ablation import Condition
from ..model.sites import NormSite
from .engine import AblationEngine
from .metrics import METRIC_FOR_TASK, TASK_METRICS
from .sets import ClassificationEvalSet, EvalSet

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

DESCRIPTION_COLUMNS = ("condition", "dims", "n_dims", "roles", "layers", "stack", "mode", "n_sites")
TRAILING_COLUMNS = ("tokens", "examples", "seed", "kind", "spec")


def primary_metric(eval_set: EvalSet) -> str:
    """The metric a table's ``value`` column holds for this set."""
    if isinstance(eval_set, ClassificationEvalSet):
        return METRIC_FOR_TASK[eval_set.task]
    return "eval_loss"


def metric_columns(eval_set: EvalSet) -> tuple[str, ...]:
    """The metric columns of a result table for this set, in order."""
    if isinstance(eval_set, ClassificationEvalSet):
        return ("eval_loss",) + TASK_METRICS[eval_set.task]
    if eval_set.kind == "embedding":  # EmbeddingDistance: eval_loss is 1 - cosine_mean
        return ("eval_loss", "cosine_mean")
    return ("eval_loss", "perplexity")


def table_columns(eval_set: EvalSet) -> list[str]:
    """The columns of a result table for this set, in order (schema in the module docstring)."""
    return [*DESCRIPTION_COLUMNS, "metric", "value", *metric_columns(eval_set), *TRAILING_COLUMNS]


def condition_row(condition: Condition, metrics: dict, eval_set: EvalSet, n_sites: int) -> dict:
    """One row of the result table (schema in the module docstring)."""
    described = condition.describe()
    metric = primary_metric(eval_set)
    row = {
        "condition": condition.name,
        "dims": described["dims"],
        "n_dims": len(condition.dims),
        "roles": described["roles"],
        "layers": described["layers"],
        "stack": condition.stack or "any",
        "mode": condition.mode,
        "n_sites": int(n_sites),
        "metric": metric,
        "value": float(metrics[metric]),
    }
    row.update({name: float(metrics[name]) for name in metric_columns(eval_set)})
    row.update(
        {
            "tokens": int(metrics["tokens"]),
            "examples": int(metrics["examples"]),
            "seed": eval_set.seed,
            "kind": eval_set.kind,
            "spec": condition_spec(condition),
        }
    )
    return row


def condition_spec(condition: Condition) -> str:
    """The condition as the ``spec`` cell of a result row: ``Condition.to_dict`` as compact, key-sorted JSON."""
    return json.dumps(condition.to_dict(), sort_keys=True, separators=(",", ":"))


def row_condition(row: Mapping[str, Any] | pd.Series) -> Condition:
    """The condition a result row (of ``evaluate_conditions``, ``scan_dims``, or a CSV of one) was computed under.

    Example:
        >>> table = evaluate_conditions(model, eval_set, conditions)  # doctest: +SKIP
        >>> evaluate_conditions(model, eval_set, [row_condition(table.iloc[3])])  # the same numbers  # doctest: +SKIP
    """
    spec = row.get("spec") if hasattr(row, "get") else None
    if not isinstance(spec, str):
        raise ValueError(
            "This row has no 'spec' cell (a table from before conditions were stored with their "
            "rows?): re-run it with evaluate_conditions or scan_dims to get one."
        )
    return Condition.from_dict(json.loads(spec))


def rows_to_table(rows: Sequence[dict], eval_set: EvalSet) -> pd.DataFrame:
    """The result table of ``rows`` (``condition_row`` dicts), columns in schema order."""
    table = pd.DataFrame(list(rows), columns=table_columns(eval_set))
    table["seed"] = table["seed"].astype("Int64")
    return table


def evaluate(model: PreTrainedModel | torch.nn.Module, eval_set: EvalSet, **engine_options) -> dict:
    """Metrics of the intact model: eval_loss, perplexity, tokens (LM) or eval_loss + task metrics.

    Example:
        >>> evaluate(model, prepare_mlm_eval(tokenizer, texts))  # doctest: +SKIP
        {'eval_loss': 2.31, 'perplexity': 10.1, 'tokens': 4873, 'examples': 256}
    """
    engine_options.setdefault("prefix_cache", False)  # one condition: nothing to share
    return AblationEngine(model, eval_set, **engine_options).evaluate(Condition("none"))


def evaluate_conditions(
    model: PreTrainedModel | torch.nn.Module,
    eval_set: EvalSet,
    conditions: Sequence[Condition],
    sites: Sequence[NormSite] | None = None,
    progress: bool = True,
    **engine_options,
) -> pd.DataFrame:
    """One row per condition (schema in the module docstring), with a progress bar over conditions.

    ``engine_options`` go to ``AblationEngine`` (batch_size, prefix_cache, conditions_per_forward, autocast).

    Example:
        >>> conditions = [Condition("none"), Condition("outliers", dims=(308, 381))]
        >>> evaluate_conditions(model, eval_set, conditions)[["condition", "value"]]  # doctest: +SKIP
    """
    conditions = list(conditions)
    if not conditions:
        raise ValueError("conditions is empty: pass at least one Condition (Condition('none') is the intact model).")
    engine = AblationEngine(model, eval_set, sites, **engine_options)
    plans = engine.plan(conditions)
    results = engine.run(conditions, progress=progress)
    return rows_to_table(
        [condition_row(p.condition, r, engine.eval_set, len(p.sites)) for p, r in zip(plans, results)], engine.eval_set
    )


__all__ = [
    "DESCRIPTION_COLUMNS",
    "TRAILING_COLUMNS",
    "condition_row",
    "condition_spec",
    "evaluate",
    "evaluate_conditions",
    "metric_columns",
    "primary_metric",
    "row_condition",
    "rows_to_table",
    "table_columns",
]
