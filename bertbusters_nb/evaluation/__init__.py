"""Evaluate a model, intact or under ablation conditions, on fixed eval sets (layer 3: uses model/ and data/).

Modules, one concern each:

=============  ==========================================================================================
sets           fixed, seeded eval sets: masked-LM, causal-LM, classification, sentence embeddings
metrics        task metrics (GLUE names); tasks: the task table (GLUE, offline tasks, loading)
tables         result tables: ``condition_row``, ``rows_to_table``, ``evaluate``, ``evaluate_conditions``
engine         ``AblationEngine``: plans conditions and schedules them over spans of batches; built on
               probe (the layer stack and its check), surgery (forward edits: stubs, gathering, capture),
               batched (K conditions in one forward), scoring (losses and metrics), memory (out-of-memory policy)
objectives     what the engine scores (its extension point): the set's loss, or the embedding distance
scan           every hidden dim disabled alone, resumable and shardable; progress: the one progress bar
screen         fast scans: every dim's effect estimated from gradients, the top ones checked exactly
conditions     the standard condition sets; embeddings, fill_mask, mlm_effects, next_token: other probes
=============  ==========================================================================================

Example:
    >>> from bertbusters_nb.evaluation import evaluate_conditions, prepare_mlm_eval
    >>> table = evaluate_conditions(model, prepare_mlm_eval(tokenizer, texts), [Condition("none")])  # doctest: +SKIP
"""

from ..model.ablation import Condition
from .engine import AblationEngine
from .metrics import METRIC_FOR_TASK, NUM_LABELS, TASK_METRICS, compute_metrics
from .scan import scan_dims
from .sets import (
    CausalEvalSet,
    ClassificationEvalSet,
    EvalSet,
    MLMEvalSet,
    mask_tokens,
    prepare_causal_eval,
    prepare_classification_eval,
    prepare_mlm_eval,
)
from .tables import (
    DESCRIPTION_COLUMNS,
    TRAILING_COLUMNS,
    condition_row,
    condition_spec,
    evaluate,
    evaluate_conditions,
    metric_columns,
    primary_metric,
    row_condition,
    rows_to_table,
    table_columns,
)

__all__ = [
    "AblationEngine",
    "CausalEvalSet",
    "ClassificationEvalSet",
    "Condition",
    "DESCRIPTION_COLUMNS",
    "EvalSet",
    "METRIC_FOR_TASK",
    "MLMEvalSet",
    "NUM_LABELS",
    "TASK_METRICS",
    "TRAILING_COLUMNS",
    "compute_metrics",
    "condition_row",
    "condition_spec",
    "evaluate",
    "evaluate_conditions",
    "mask_tokens",
    "metric_columns",
    "prepare_causal_eval",
    "prepare_classification_eval",
    "prepare_mlm_eval",
    "primary_metric",
    "row_condition",
    "rows_to_table",
    "scan_dims",
    "table_columns",
]
