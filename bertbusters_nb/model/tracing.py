"""Dummy forwards under forcings, and the tensor comparisons that read them: the machinery ``dataflow`` uses
to trace what each norm reads and feeds.

A ``Tracer`` runs the model on one dummy input (``dummy_inputs``: ``SEQ_LEN`` random token ids) with hooks on
the layers, the norms and the parametrised sub-layer modules; each ``run`` is one forward in which chosen
inputs and outputs are replaced (a layer's input moved, a norm's output moved, the parametrised leaves forced
to output zeros) and returns every call of every watched module in call order. The comparisons
(``differs``, ``changed_at``, ``changed_elsewhere``, ``changed_before``, ``same_values``) tell what moved;
``perturbed`` makes the moves (everywhere, at ``PROBE_TOKEN`` only, or everywhere but there). Everything
draws from the tracer's one seeded generator, so a trace is the same on every run.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass

import torch
from torch import nn

from .edits import ParamFill, edited
from .hooks import Trace
from .sites import NormLayoutError

SEQ_LEN = 7  # dummy input length (decoder side: SEQ_LEN - 1), chosen unlike any hidden or head size
PROBE_TOKEN = 3  # the token a perturbation changes


def float_tensors(obj, depth: int = 0) -> list[torch.Tensor]:
    """Floating-point tensors in an argument / output structure, in order."""
    if torch.is_tensor(obj):
        return [obj] if obj.is_floating_point() else []
    if depth > 3:
        return []
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in float_tensors(o, depth + 1)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in float_tensors(o, depth + 1)]
    return []


def same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.numel() == b.numel() and a.numel() > 0 and torch.equal(a.reshape(-1), b.reshape(-1))


def zero_padded(t: torch.Tensor, x: torch.Tensor) -> bool:
    """``t`` is ``x`` with zeros added before and / or after it along one non-last dim."""
    if t.dim() != x.dim() or t.dim() < 2 or t.shape == x.shape:
        return False
    diff = [d for d in range(t.dim()) if t.shape[d] != x.shape[d]]
    if len(diff) != 1 or diff[0] == t.dim() - 1 or t.shape[diff[0]] < x.shape[diff[0]]:
        return False
    d, n = diff[0], x.shape[diff[0]]
    for lo in range(t.shape[d] - n + 1):
        if torch.equal(t.narrow(d, lo, n), x):
            rest = torch.cat([t.narrow(d, 0, lo), t.narrow(d, lo + n, t.shape[d] - lo - n)], dim=d)
            return not bool(rest.any())
    return False


def seq_length(t: torch.Tensor) -> int | None:
    """Sequence length of a traced tensor: the dummy input's length when a non-last dim has it (heads may
    outnumber tokens), else its longest non-last dim (models that pad or prepend tokens; the batch is 1)."""
    if t.dim() < 2:
        return None
    for length in (SEQ_LEN, SEQ_LEN - 1):
        if length in t.shape[:-1]:
            return length
    return max(t.shape[:-1])


def seq_dim(t: torch.Tensor, length: int | None) -> int | None:
    if length is None or length <= 1:
        return None
    for d in range(t.dim()):
        if t.shape[d] == length and (d < t.dim() - 1 or t.dim() == 1):
            return d
    return None


def perturbed(
    base: torch.Tensor, gen: torch.Generator, token: int | None, length: int | None, others: bool = False
) -> torch.Tensor:
    """A perturbation of ``base``: everywhere (token None), only at ``token`` along the sequence dim, or
    (``others``) at every token but ``token``."""
    scale = float(base.float().std()) if base.numel() > 1 else 1.0
    noise = torch.randn(base.shape, generator=gen).to(base.dtype) * (0.5 * (scale or 1.0) + 0.1)
    if token is not None:
        d = seq_dim(base, length)
        if d is None:
            raise NormLayoutError(
                f"A layer input of shape {tuple(base.shape)} has no sequence dim of length "
                f"{length}; cannot trace the norms."
            )
        mask = torch.zeros(base.shape[d], dtype=base.dtype)
        mask[_clamp(token, base.shape[d])] = 1
        if others:
            mask = 1 - mask
        noise = noise * mask.reshape([-1 if i == d else 1 for i in range(base.dim())])
    return base + noise.to(base.device)


def differs(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> bool:
    """Changed beyond float noise (kernels that regroup tokens, e.g. MoE, are not bit-stable)."""
    if a.numel() == 0:
        return False
    tol = 1e-4 * (float(scale.float().abs().max()) + 1e-6)
    return bool(((a.float() - b.float()).abs() > tol).any())


def _clamp(token: int, length: int) -> int:
    """The probe token of a sequence shorter than the dummy input (Funnel pools 7 tokens to 4, then 2): its last."""
    return min(token, length - 1)


def changed_elsewhere(base: torch.Tensor, new: torch.Tensor, token: int, length: int | None) -> bool:
    if base.shape != new.shape:
        return False
    d = seq_dim(base, length)
    if d is None:
        return False
    token = _clamp(token, base.shape[d])
    keep = [i for i in range(base.shape[d]) if i != token]
    idx = torch.tensor(keep, device=base.device)
    return differs(base.index_select(d, idx), new.index_select(d, idx), base)


def changed_at(base: torch.Tensor, new: torch.Tensor, token: int, length: int | None) -> bool:
    d = seq_dim(base, length)
    if d is None or base.shape != new.shape:
        return False
    idx = torch.tensor([_clamp(token, base.shape[d])], device=base.device)
    return differs(base.index_select(d, idx), new.index_select(d, idx), base)


def changed_before(base: torch.Tensor, new: torch.Tensor, token: int, length: int | None) -> bool:
    d = seq_dim(base, length)
    if d is None or base.shape != new.shape:
        return False
    idx = torch.arange(_clamp(token, base.shape[d]), device=base.device)
    return differs(base.index_select(d, idx), new.index_select(d, idx), base)


@dataclass
class TracedCall:
    """One call of a traced module: its float tensor inputs and outputs (copies, in ``float_tensors`` order) and
    the trace clock when it was entered and when it returned."""

    inputs: list[torch.Tensor]
    outputs: list[torch.Tensor]
    start: int
    end: int


def _vocab_size(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    vocab = getattr(config, "vocab_size", None)
    if not isinstance(vocab, int) and config is not None and hasattr(config, "get_text_config"):
        vocab = getattr(config.get_text_config(), "vocab_size", None)
    return vocab if isinstance(vocab, int) and vocab > 1 else 8


def _dummy_ids(model: nn.Module) -> tuple[torch.Tensor, torch.Generator]:
    """``SEQ_LEN`` token ids drawn from a generator seeded 0 (above the usual special ids when the vocabulary
    allows), on the model's device, and that generator (the tracer draws its perturbations from it next)."""
    gen = torch.Generator().manual_seed(0)
    vocab = _vocab_size(model)
    low = 4 if vocab > 12 else 0
    ids = torch.randint(low, vocab, (1, SEQ_LEN), generator=gen).to(next(model.parameters()).device)
    return ids, gen


def dummy_inputs(model: nn.Module, ids: torch.Tensor | None = None) -> dict:
    """The keyword arguments of the site finder's dummy forward: ``input_ids`` (``SEQ_LEN`` seeded random ids
    unless ``ids`` is given), ``decoder_input_ids`` (the first ``SEQ_LEN - 1``) for an encoder-decoder, and
    ``use_cache=False`` where the model takes it (hybrid Mamba + attention caches fail on a plain forward).

    Example:
        >>> model(**dummy_inputs(model))  # doctest: +SKIP
    """
    ids = _dummy_ids(model)[0] if ids is None else ids
    kwargs: dict[str, torch.Tensor | bool] = {"input_ids": ids}
    if "use_cache" in inspect.signature(model.forward).parameters:
        kwargs["use_cache"] = False
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        kwargs["decoder_input_ids"] = ids[:, : SEQ_LEN - 1]
    return kwargs


class Tracer:
    """Hooks on layers, norms and sub-layer modules; each ``run`` is one forward under given forcings.

    layers / norms / watched: name -> module of the layers, the norms and the parametrised sub-layer modules
    whose calls ``run`` returns; leaves: the parametrised leaf modules ``run(zero_leaves=True)`` forces to zeros
    (the caller may narrow it after a first run). ``gen``: the one generator perturbations draw from.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: dict[str, nn.Module],
        norms: dict[str, nn.Module],
        watched: dict[str, nn.Module],
        leaves: dict[str, nn.Module],
    ):
        self.model, self.layers, self.norms, self.watched, self.leaves = model, layers, norms, watched, leaves
        self.config = getattr(model, "config", None)
        self.ids, self.gen = _dummy_ids(model)
        self.ran_once = False

    def run(self, *, layer_input=None, norm_output=None, module_input=None, zero_leaves: bool = False):
        """One forward. ``layer_input`` / ``module_input``: (name, call) -> replacement of the first tensor input;
        ``norm_output``: (name, call) -> replacement output. Returns {name: [TracedCall per call]}."""
        layer_input, norm_output, module_input = layer_input or {}, norm_output or {}, module_input or {}

        def edit_input(name, call):
            forced = layer_input if name in self.layers else module_input
            new = forced.get((name, call.index))
            if new is None:
                return None
            args, kwargs = call.args, call.kwargs
            if isinstance(new, list):  # every float input replaced, in float_tensors order
                it = iter(new)
                return _substitute(args, it), _substitute(kwargs, it)
            if args and torch.is_tensor(args[0]):
                return (new,) + tuple(args[1:]), kwargs
            if torch.is_tensor(kwargs.get("hidden_states")):
                return args, {**kwargs, "hidden_states": new}
            raise NormLayoutError(f"Cannot find the hidden-state input of '{name}' to trace it.")

        def edit_output(name, out, call):
            if zero_leaves and name in self.leaves:
                return _zero_like(out)
            new = norm_output.get((name, call.index)) if name in self.norms else None
            if new is None:
                return None
            return new if torch.is_tensor(out) else (new,) + tuple(out[1:])

        # clone: copies taken at hook time, since a model may later change a tensor in place
        # (Falcon: mlp_output += attention_output)
        trace = Trace(
            self.model,
            {**self.layers, **self.norms, **self.watched},
            retain_input=True,
            clone=True,
            edit_input=edit_input,
            edit_output=edit_output,
        )
        others = {n: m for n, m in self.leaves.items() if n not in self.watched} if zero_leaves else {}
        zeroed = Trace(self.model, others, retain_output=False, edit_output=lambda _n, out, _c: _zero_like(out))
        with trace, zeroed, torch.no_grad():
            first = not self.ran_once
            try:
                self.model(**dummy_inputs(self.model, self.ids))
                self.ran_once = True
            except NormLayoutError:
                raise
            except Exception as exc:  # noqa: BLE001 - re-raised with our message on top
                if not first:  # the plain forward worked: this error is the model's or the caller's, as is
                    raise
                raise NormLayoutError(
                    f"Could not run a {SEQ_LEN}-token dummy forward of this "
                    f"{getattr(self.config, 'model_type', type(self.model).__name__)!r} model to trace its "
                    f"norms ({type(exc).__name__}: {exc}). Pass a model that takes input_ids."
                ) from exc
        ran = sorted((r for r in trace.records.values() if r.calls), key=lambda r: r.calls[0].start)  # call order
        return {
            r.name: [
                TracedCall(float_tensors(c.args) + float_tensors(c.kwargs), float_tensors(c.output), c.start, c.end)
                for c in r.calls
            ]
            for r in ran
        }


def _substitute(obj, it, depth: int = 0):
    """``obj`` with its float tensors (in ``float_tensors`` order) replaced by the next items of ``it``."""
    if torch.is_tensor(obj):
        return next(it) if obj.is_floating_point() else obj
    if depth > 3:
        return obj
    if isinstance(obj, tuple):
        return tuple(_substitute(o, it, depth + 1) for o in obj)
    if isinstance(obj, list):
        return [_substitute(o, it, depth + 1) for o in obj]
    if isinstance(obj, dict):
        return {k: _substitute(v, it, depth + 1) for k, v in obj.items()}
    return obj


def jittered(norms: dict[str, nn.Module]) -> contextlib.AbstractContextManager:
    """Small distinct noise on every norm's parameters for a ``with`` block (two norms of one input must not
    give equal outputs while tracing), restored bit for bit on exit (``edits.edited``)."""
    gen = torch.Generator().manual_seed(1)

    def noisy(param: torch.Tensor) -> ParamFill:
        noise = torch.randn(param.shape, generator=gen).to(device=param.device, dtype=param.dtype)
        return ParamFill(param, ..., lambda now: now + noise * (0.1 * (float(now.float().abs().mean()) + 0.1)))

    return edited(noisy(p) for m in norms.values() for p in m.parameters(recurse=False))


def _zero_like(out):
    if torch.is_tensor(out):
        return torch.zeros_like(out) if out.is_floating_point() else out
    if isinstance(out, tuple):
        return tuple(_zero_like(o) for o in out)
    return out
