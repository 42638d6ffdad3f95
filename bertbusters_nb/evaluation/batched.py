"""K conditions in one forward: the batch is repeated K times and every touched norm applies condition k's
weight and bias to slice k (a ``Trace`` edit of the norm's output).

Condition k's parameters are taken from the model while ``ablation.disabled_dims`` holds condition k in
force, so they are what the one definition of "disable" (``edits.disabled_fill``) makes them, bit for bit;
FLOPs are those of K forwards (it pays on a GPU that one small batch does not fill, not on a CPU).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..model.ablation import Condition, disabled_dims
from ..model.hooks import Trace
from ..model.sites import NormSite

__all__ = ["ConditionsInOneForward"]


class ConditionsInOneForward:
    """While active, a forward of K stacked copies of a batch computes condition k on copy k.

    conditions: (condition, the sites it touches) for each of the K conditions, in the batch's order.

    Example:
        >>> with ConditionsInOneForward(model, [(c, c.sites(sites)) for c in conditions]):
        ...     logits = model(**{k: v.repeat(len(conditions), 1) for k, v in batch.items()}).logits  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, conditions: Sequence[tuple[Condition, Sequence[NormSite]]]):
        self.model = model
        self.conditions = [(cond, list(sites)) for cond, sites in conditions]
        self._trace: Trace | None = None

    def _parameters(self) -> dict[int, tuple[NormSite, list, list]]:
        """For each touched norm module: its site and the K weights and biases (intact where k does not touch it)."""
        k = len(self.conditions)
        touched: dict[int, tuple[NormSite, list, list]] = {}
        for _cond, sites in self.conditions:
            for site in sites:
                touched.setdefault(id(site.module), (site, [None] * k, [None] * k))
        for j, (cond, sites) in enumerate(self.conditions):
            if sites:
                with disabled_dims(sites, cond.dims, cond.mode):
                    self._copy(touched, {id(s.module) for s in sites}, j)
        self._copy(touched, set(touched), None)  # the intact parameters wherever a condition leaves a norm alone
        return touched

    @staticmethod
    def _copy(touched, ids, j) -> None:
        for key in ids:
            site, weights, biases = touched[key]
            for slot in range(len(weights)) if j is None else (j,):
                if weights[slot] is None:
                    weights[slot] = site.module.weight.detach().clone()
                    biases[slot] = None if site.bias is None else site.bias.detach().clone()

    def __enter__(self) -> "ConditionsInOneForward":
        touched = self._parameters()
        edits = {
            site.name: _edit(site, torch.stack(weights), None if site.bias is None else torch.stack(biases))
            for site, weights, biases in touched.values()
        }  # (K, H) each
        trace = Trace(
            self.model,
            {site.name: site.module for site, _w, _b in touched.values()},
            retain_output=False,
            edit_output=lambda name, _out, call: edits[name](call.args[0]),
        )
        self._trace = trace.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._trace is not None:
            self._trace.close()
            self._trace = None


def _edit(site: NormSite, weight: torch.Tensor, bias: torch.Tensor | None):
    """The norm's output for K stacked slices of its input ``x``, slice k with weight[k] and bias[k] (K, H)."""
    module = site.module
    k = weight.shape[0]

    if isinstance(module, nn.LayerNorm):

        def layer_norm(x):
            normed = F.layer_norm(x, module.normalized_shape, None, None, module.eps)
            shaped = normed.reshape(k, -1, normed.shape[-1])  # (K, B*T, H)
            y = shaped * weight.unsqueeze(1).to(shaped.dtype)
            if bias is not None:
                y = y + bias.unsqueeze(1).to(shaped.dtype)
            return y.reshape(normed.shape)

        return layer_norm

    def generic(x):  # RMSNorm and other norm classes: forward each slice with its own parameters
        pieces = []
        saved_w = module.weight.data
        saved_b = None if site.bias is None else site.bias.data
        try:
            for j, piece in enumerate(x.chunk(k, dim=0)):
                module.weight.data = weight[j]
                if bias is not None:
                    site.bias.data = bias[j]
                pieces.append(module.forward(piece))
        finally:
            module.weight.data = saved_w
            if saved_b is not None:
                site.bias.data = saved_b
        return torch.cat(pieces, dim=0)

    return generic
