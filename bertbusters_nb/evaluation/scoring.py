"""Scoring: from logits to summed losses on the device, and from running sums to a condition's metrics.

Losses are summed per condition in float64 and stay on the device until a condition is done (a GPU
never waits for the host); ``finish`` turns the sums into the table's metrics.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .metrics import compute_metrics, is_regression
from .sets import Batch, ClassificationEvalSet, EvalSet

__all__ = ["Total", "finish", "logits_of", "safe_exp", "score", "shape_logits"]


def logits_of(out) -> torch.Tensor:
    """The logits of a model output (``.logits`` or its first item)."""
    logits = getattr(out, "logits", None)
    return logits if logits is not None else out[0]


def safe_exp(x: float) -> float:
    """exp(x), inf instead of OverflowError (the perplexity of a broken model)."""
    try:
        return math.exp(x)
    except OverflowError:
        return float("inf")


def shape_logits(
    logits: torch.Tensor, batch: Batch, repeats: int, scored: torch.Tensor | None, kind: str, gathered: bool
) -> torch.Tensor:
    """Logits as (K, M, V) at the M scored positions (LMs; ``gathered``: the head saw only those) or (K, B, C)."""
    if kind == "classification":
        return logits.reshape(repeats, batch.size, -1)
    if scored is None or batch.scored is None:
        raise ValueError("A language-model batch needs its scored positions (EvalSet.batch sets them).")
    if not gathered:
        logits = logits.reshape(-1, logits.shape[-1]).index_select(0, scored)
    return logits.reshape(repeats, batch.scored.numel(), -1)


def score(logits: torch.Tensor, batch: Batch, eval_set: EvalSet) -> dict:
    """Per condition (first axis of ``logits``): summed loss (K,) on the device, the count, and
    (classification) the logits; nothing is copied to the host here, so a GPU never waits."""
    k = logits.shape[0]
    if isinstance(eval_set, ClassificationEvalSet):
        labels = batch.targets
        if is_regression(eval_set.task):
            losses = ((logits[..., 0].float() - labels.float()) ** 2).sum(1)
        else:
            flat = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.repeat(k), reduction="none")
            losses = flat.reshape(k, -1).sum(1)
        return {"loss_sum": losses.double(), "count": batch.size, "logits": logits.float()}
    if batch.scored is None:
        raise ValueError("A language-model batch needs its scored positions (EvalSet.batch sets them).")
    targets = batch.targets.reshape(-1).index_select(0, batch.scored)
    flat = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.repeat(k), reduction="none")
    return {"loss_sum": flat.reshape(k, -1).double().sum(1), "count": int(targets.numel())}


class Total:
    """Running sums of one condition over batches (the loss stays on the device until the end)."""

    def __init__(self):
        self.loss_sum: torch.Tensor | float = 0.0
        self.count = 0
        self.logits: list[torch.Tensor] = []

    def add(self, score: dict, j: int) -> None:
        """Add condition ``j``'s part of one batch's ``score``."""
        self.loss_sum = self.loss_sum + score["loss_sum"][j]
        self.count += score["count"]
        if "logits" in score:
            self.logits.append(score["logits"][j])

    def merge(self, other: "Total") -> None:
        self.loss_sum = self.loss_sum + other.loss_sum
        self.count += other.count
        self.logits += other.logits


def finish(total: Total, eval_set: EvalSet) -> dict:
    """The metrics of one condition: eval_loss (mean per scored token / example), perplexity or task metrics."""
    count = total.count
    loss = float(total.loss_sum) / count if count else float("nan")
    if isinstance(eval_set, ClassificationEvalSet):
        logits = torch.cat(total.logits).cpu().numpy()
        labels = eval_set.targets.cpu().numpy()
        return {"eval_loss": loss, **compute_metrics(eval_set.task, logits, labels), "tokens": count, "examples": count}
    return {"eval_loss": loss, "perplexity": safe_exp(loss), "tokens": count, "examples": len(eval_set)}
