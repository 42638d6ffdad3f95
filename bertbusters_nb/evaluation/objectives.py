"""What the engine measures: an objective turns a forward's logits into summed scores and a condition's metrics.

The engine (``AblationEngine``) runs forwards and schedules conditions; the objective it is given decides
what a forward's output means. Two ship with the package:

``LossObjective``      the eval set's own loss: masked-LM / causal-LM cross-entropy per scored token, or the
                       task's loss per example (``scoring``), with perplexity or task metrics.
``EmbeddingDistance``  for an ``EmbeddingEvalSet``: the mean over sentences of 1 - cosine between the ablated
                       and the intact sentence embedding (mean-pooled last hidden state); the intact
                       embeddings are the reference, computed once when the engine starts.

A new objective subclasses ``Objective`` and overrides its public methods; ``objective_for`` picks the default
for an eval set.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .scoring import Total, finish, score, shape_logits
from .sets import Batch, EvalSet

__all__ = ["EmbeddingDistance", "LossObjective", "Objective", "mean_pool", "objective_for"]


class Objective:
    """The engine's extension point: how a forward's output becomes scores (see the module docstring).

    ``name`` says what the metrics' ``eval_loss`` is a value of (a column of the screen's tables).
    """

    name = "eval_loss"

    def __init__(self, eval_set: EvalSet):
        self.eval_set = eval_set

    def start(self, intact_outputs: Callable[[], torch.Tensor]) -> None:
        """Called once when the engine is ready; ``intact_outputs()`` gives the intact model's shaped outputs
        for every example (an objective that compares with the intact model keeps them)."""

    def shape(
        self, logits: torch.Tensor, batch: Batch, repeats: int, scored: torch.Tensor | None, gathered: bool
    ) -> torch.Tensor:
        """The raw logits of ``repeats`` copies of ``batch`` as the scores need them, first axis = condition."""
        return shape_logits(logits, batch, repeats, scored, self.eval_set.kind, gathered)

    def score(self, outputs: torch.Tensor, batch: Batch) -> dict:
        """Per condition (first axis of ``outputs``): ``loss_sum`` (K,) on the device and ``count``."""
        return score(outputs, batch, self.eval_set)

    def finish(self, total: Total) -> dict:
        """A condition's metrics from its running sums over the whole set."""
        return finish(total, self.eval_set)


class LossObjective(Objective):
    """The eval set's own loss (masked LM, causal LM, classification): the engine's default."""


def mean_pool(hidden: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """Mean over the attended tokens (the sentence-transformers recipe), (..., B, T, H) -> (..., B, H)."""
    mask = attention.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(-2) / mask.sum(-2)


class EmbeddingDistance(Objective):
    """Mean over sentences of 1 - cosine(ablated embedding, intact embedding); ``cosine_mean`` is 1 minus that,
    ``cosine_min`` the least similar sentence's cosine.

    ``reference`` holds the intact embeddings (float32, one row per sentence) once the engine has started.
    """

    name = "embedding_distance"

    def __init__(self, eval_set: EvalSet):
        if eval_set.kind != "embedding":
            raise ValueError(f"EmbeddingDistance needs a set from prepare_embedding_eval (got kind {eval_set.kind!r}).")
        super().__init__(eval_set)
        self.reference: torch.Tensor | None = None

    def start(self, intact_outputs: Callable[[], torch.Tensor]) -> None:
        self.reference = intact_outputs()

    def shape(
        self, logits: torch.Tensor, batch: Batch, repeats: int, scored: torch.Tensor | None, gathered: bool
    ) -> torch.Tensor:
        hidden = logits.reshape(repeats, batch.size, *logits.shape[1:])
        return mean_pool(hidden.float(), batch.inputs["attention_mask"])

    def score(self, outputs: torch.Tensor, batch: Batch) -> dict:
        if self.reference is None:
            raise RuntimeError("EmbeddingDistance.score before start(): the intact embeddings are not known yet.")
        intact = self.reference[batch.start : batch.stop]
        cos = F.cosine_similarity(outputs.float(), intact.unsqueeze(0), dim=-1)
        # each batch's least cosine rides in "logits" (kept per batch by the engine's Total) for cosine_min
        return {"loss_sum": (1.0 - cos).double().sum(1), "count": batch.size, "logits": cos.min(1, keepdim=True).values}

    def finish(self, total: Total) -> dict:
        loss = float(total.loss_sum) / total.count if total.count else float("nan")
        least = float(torch.cat(total.logits).min()) if total.logits else float("nan")
        return {
            "eval_loss": loss,
            "cosine_mean": 1.0 - loss,
            "cosine_min": least,
            "tokens": total.count,
            "examples": total.count,
        }


def objective_for(eval_set: EvalSet) -> Objective:
    """The default objective for ``eval_set``: ``EmbeddingDistance`` for embedding sets, its loss otherwise."""
    return EmbeddingDistance(eval_set) if eval_set.kind == "embedding" else LossObjective(eval_set)
