"""Task metrics under their GLUE names, for fine-tuned classifiers evaluated under ablations.

Plain numpy, so the numbers do not depend on which optional metric library is installed.
``METRIC_FOR_TASK`` names the headline metric of each task (the one a scan plots);
``TASK_METRICS`` lists every metric reported for it. ``rt`` (Rotten Tomatoes sentences,
the corpus SST-2 was built from) and ``snli`` are the offline stand-ins for SST-2 and MNLI.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

# Headline metric per task (GLUE's own choice; F1 for MRPC/QQP, Pearson for STS-B).
METRIC_FOR_TASK: dict[str, str] = {
    "cola": "matthews_correlation",
    "sst2": "accuracy",
    "mrpc": "f1",
    "qqp": "f1",
    "stsb": "pearson",
    "mnli": "accuracy",
    "mnli_matched": "accuracy",
    "mnli_mismatched": "accuracy",
    "qnli": "accuracy",
    "rte": "accuracy",
    "wnli": "accuracy",
    "rt": "accuracy",
    "snli": "accuracy",
}
# Every metric reported per task, headline first.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    task: {"mrpc": ("f1", "accuracy"), "qqp": ("f1", "accuracy"), "stsb": ("pearson", "spearmanr")}.get(task, (metric,))
    for task, metric in METRIC_FOR_TASK.items()
}
# Output size of the classifier head (1: regression).
NUM_LABELS: dict[str, int] = {
    "cola": 2,
    "sst2": 2,
    "mrpc": 2,
    "qqp": 2,
    "stsb": 1,
    "mnli": 3,
    "mnli_matched": 3,
    "mnli_mismatched": 3,
    "qnli": 2,
    "rte": 2,
    "wnli": 2,
    "rt": 2,
    "snli": 3,
}
# Metrics where larger is better (all of them); kept explicit for plots that flip axes.
HIGHER_IS_BETTER = {
    "accuracy": True,
    "f1": True,
    "matthews_correlation": True,
    "pearson": True,
    "spearmanr": True,
    "eval_loss": False,
    "perplexity": False,
}


def check_task(task: str) -> str:
    """``task`` if it is known, else a ValueError listing the known tasks."""
    if task not in METRIC_FOR_TASK:
        raise ValueError(f"Unknown task {task!r}; pick one of {sorted(METRIC_FOR_TASK)}.")
    return task


def is_regression(task: str) -> bool:
    return NUM_LABELS[check_task(task)] == 1


def accuracy(predictions: Sequence[int], labels: Sequence[int]) -> float:
    p, y = np.asarray(predictions), np.asarray(labels)
    return float((p == y).mean())


def f1(predictions: Sequence[int], labels: Sequence[int], positive: int = 1) -> float:
    """Binary F1 of the ``positive`` class (GLUE's MRPC/QQP); 0.0 when there are no positives at all."""
    p, y = np.asarray(predictions) == positive, np.asarray(labels) == positive
    tp = float((p & y).sum())
    denominator = float(p.sum() + y.sum())
    return 0.0 if denominator == 0 else 2 * tp / denominator


def matthews_correlation(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Matthews correlation (multi-class form, equal to the binary MCC for two classes); 0.0 if undefined."""
    p, y = np.asarray(predictions), np.asarray(labels)
    classes = np.union1d(p, y)
    confusion = np.array([[np.sum((y == a) & (p == b)) for b in classes] for a in classes], dtype=float)
    t, q = confusion.sum(axis=1), confusion.sum(axis=0)  # true / predicted counts per class
    c, s = np.trace(confusion), confusion.sum()
    denominator = np.sqrt(s * s - q @ q) * np.sqrt(s * s - t @ t)
    return 0.0 if denominator == 0 else float((c * s - t @ q) / denominator)


def pearson(predictions: Sequence[float] | np.ndarray, labels: Sequence[float] | np.ndarray) -> float:
    p, y = np.asarray(predictions, dtype=float), np.asarray(labels, dtype=float)
    p, y = p - p.mean(), y - y.mean()
    denominator = np.sqrt((p @ p) * (y @ y))
    return float("nan") if denominator == 0 else float(p @ y / denominator)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their average rank (as scipy.stats.rankdata)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=float)
    ranks[order] = np.arange(1, len(x) + 1)
    _, inverse = np.unique(x, return_inverse=True)
    sums = np.bincount(inverse, weights=ranks)
    counts = np.bincount(inverse)
    return (sums / counts)[inverse]


def spearmanr(predictions: Sequence[float], labels: Sequence[float]) -> float:
    return pearson(_ranks(np.asarray(predictions, dtype=float)), _ranks(np.asarray(labels, dtype=float)))


_FUNCTIONS = {
    "accuracy": accuracy,
    "f1": f1,
    "matthews_correlation": matthews_correlation,
    "pearson": pearson,
    "spearmanr": spearmanr,
}


def to_predictions(task: str, outputs) -> np.ndarray:
    """Model outputs to predictions: argmax over a (N, C) logit array, the score for regression tasks."""
    out = np.asarray(outputs, dtype=float)
    if is_regression(task):
        return out.reshape(len(out), -1)[:, 0] if out.ndim > 1 else out
    return out.argmax(axis=-1) if out.ndim == 2 else out.astype(int)


def compute_metrics(task: str, predictions, labels) -> dict[str, float]:
    """Every metric of ``task`` under its GLUE name; ``predictions`` may be class ids, scores or logits.

    Example:
        >>> compute_metrics("mrpc", [1, 0, 1, 1], [1, 0, 0, 1])
        {'f1': 0.8, 'accuracy': 0.75}
    """
    predictions = to_predictions(check_task(task), predictions)
    labels = np.asarray(labels)
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions but {len(labels)} labels.")
    if len(labels) == 0:
        raise ValueError("No examples: cannot compute metrics on an empty evaluation set.")
    return {name: _FUNCTIONS[name](predictions, labels) for name in TASK_METRICS[task]}
