"""Task metrics on hand-made examples, under their GLUE names."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bertbusters_nb.evaluation.metrics import (
    METRIC_FOR_TASK,
    NUM_LABELS,
    TASK_METRICS,
    accuracy,
    compute_metrics,
    f1,
    matthews_correlation,
    pearson,
    spearmanr,
)


def test_accuracy_and_f1_by_hand():
    # tp=2 (idx 0,3), fp=1 (idx 2), fn=1 (idx 4), tn=1 (idx 1)
    preds, labels = [1, 0, 1, 1, 0], [1, 0, 0, 1, 1]
    assert accuracy(preds, labels) == pytest.approx(3 / 5)
    assert f1(preds, labels) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert f1([0, 0], [0, 0]) == 0.0  # no positives anywhere


def test_matthews_correlation_by_hand():
    preds, labels = [1, 0, 1, 1, 0], [1, 0, 0, 1, 1]
    tp, tn, fp, fn = 2, 1, 1, 1
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert matthews_correlation(preds, labels) == pytest.approx(expected)
    assert matthews_correlation([1, 0, 1, 0], [1, 0, 1, 0]) == pytest.approx(1.0)
    assert matthews_correlation([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)
    assert matthews_correlation([1, 1, 1], [1, 0, 1]) == 0.0  # constant prediction: undefined -> 0


def test_pearson_and_spearman_by_hand():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # monotone but not linear: Spearman 1, Pearson below 1
    assert spearmanr([1, 2, 3, 4], [1, 4, 9, 100]) == pytest.approx(1.0)
    assert pearson([1, 2, 3, 4], [1, 4, 9, 100]) < 0.9
    # ties share their average rank: ranks (1.5, 1.5, 3) vs (1, 2, 3)
    assert spearmanr([5, 5, 7], [1, 2, 3]) == pytest.approx(np.corrcoef([1.5, 1.5, 3], [1, 2, 3])[0, 1])


@pytest.mark.filterwarnings("ignore::UserWarning")  # sklearn: "a single label was found"
@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), min_size=2, max_size=40))
def test_agrees_with_sklearn_and_scipy(pairs):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    stats = pytest.importorskip("scipy.stats")
    preds, labels = map(list, zip(*pairs))
    assert matthews_correlation(preds, labels) == pytest.approx(sklearn_metrics.matthews_corrcoef(labels, preds))
    assert f1(preds, labels) == pytest.approx(
        sklearn_metrics.f1_score(labels, preds, labels=[1], average="micro", zero_division=0.0)
    )
    if len(set(preds)) > 1 and len(set(labels)) > 1:
        assert spearmanr(preds, labels) == pytest.approx(stats.spearmanr(preds, labels).statistic)


def test_compute_metrics_uses_glue_names_per_task():
    assert compute_metrics("mrpc", [1, 0, 1, 1], [1, 0, 0, 1]) == {"f1": 0.8, "accuracy": 0.75}
    assert list(compute_metrics("cola", [1, 0], [1, 0])) == ["matthews_correlation"]
    assert list(compute_metrics("stsb", [0.1, 0.5, 0.9], [1.0, 2.0, 4.0])) == ["pearson", "spearmanr"]
    assert list(compute_metrics("qqp", [1, 0], [1, 0])) == ["f1", "accuracy"]
    for task in ("sst2", "mnli", "qnli", "rte", "rt", "snli"):
        assert list(compute_metrics(task, [1, 0], [1, 1])) == ["accuracy"]
    assert NUM_LABELS["rt"] == 2 and NUM_LABELS["snli"] == 3 and NUM_LABELS["stsb"] == 1
    assert all(TASK_METRICS[t][0] == METRIC_FOR_TASK[t] for t in METRIC_FOR_TASK)


def test_compute_metrics_takes_logits():
    logits = np.array([[2.0, 0.1, 0.0], [0.0, 0.0, 3.0], [0.0, 1.0, 0.5]])
    assert compute_metrics("snli", logits, [0, 2, 2]) == {"accuracy": pytest.approx(2 / 3)}
    assert compute_metrics("stsb", np.array([[0.1], [0.2], [0.3]]), [1, 2, 3])["pearson"] == pytest.approx(1.0)


def test_compute_metrics_rejects_bad_input():
    with pytest.raises(ValueError, match="Unknown task"):
        compute_metrics("glue", [1], [1])
    with pytest.raises(ValueError, match="2 predictions but 3 labels"):
        compute_metrics("rt", [1, 0], [1, 0, 1])
    with pytest.raises(ValueError, match="empty"):
        compute_metrics("rt", [], [])
