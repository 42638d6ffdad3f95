"""Forward surgery: the temporary edits of a forward that make the engine fast, each undone on exit.

``gather_scored``  the base model hands the head only the hidden states of the scored tokens (a
                   ``Trace`` edit of the base model's output): the head is token-wise, so the loss is the same.
``skip_layers``    layers < L replaced by stubs (a ``forward`` attribute, deleted in a ``finally``); the
                   last one returns a cached intact layer input (or its terminal norm applied to one).
``capture``        an intact forward that keeps the inputs the stubs need, stopping early (``Trace(stop=True)``).
``scored_positions``  the flat indices of the scored tokens of K repeats of a batch.
``gather_from``    the last layer runs its token-wise part (from ``last_layer_entry`` on: in a BERT-family layer
                   the attention's output projection, the feed-forward block and both LayerNorms) only at the
                   tokens the head reads: the scored tokens of a masked-LM set, the first token of each example of a
                   classification set. Attention still reads every token's keys and values.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from ..model.hooks import Trace, first_tensor
from .probe import CacheKey, LayerStack
from .sets import Batch

__all__ = [
    "capture",
    "checked_first_token_entry",
    "first_token_only",
    "gather_from",
    "gather_scored",
    "last_layer_entry",
    "last_layer_entry_of",
    "same_outputs",
    "scored_positions",
    "skip_layers",
]


@contextlib.contextmanager
def gather_scored(base: nn.Module, scored: torch.Tensor, on_gathered: Callable[[], None]) -> Iterator[None]:
    """While active, ``base`` (the model's base model) returns as ``last_hidden_state`` only the hidden states
    at ``scored`` (flat indices), shaped (1, M, H); ``on_gathered`` is called when it did."""

    def edit(_name, out, _call):
        hidden = getattr(out, "last_hidden_state", None)
        if hidden is None or hidden.dim() != 3:
            return out
        out.last_hidden_state = hidden.reshape(-1, hidden.shape[-1]).index_select(0, scored).unsqueeze(0)
        on_gathered()
        return out

    with Trace(base, {"base_model": base}, retain_output=False, edit_output=edit):
        yield


@contextlib.contextmanager
def skip_layers(stack: LayerStack | None, key: CacheKey, cache: torch.Tensor | None, repeats: int) -> Iterator[None]:
    """Replace layers < ``level`` by stubs; the last one returns ``cache`` (repeated for K conditions), or,
    with ``via_norm``, layer level-1's terminal norm (as the active condition has it) applied to ``cache``."""
    level, via_norm = key
    if level == 0:
        yield
        return
    if stack is None or cache is None:
        raise ValueError(f"starting at layer {level} needs the layer stack and its cached input")
    value = cache if repeats == 1 else cache.repeat(repeats, *([1] * (cache.dim() - 1)))
    norm = stack.terminal[level - 1] if via_norm else None

    def wrap(h):
        return h if stack.tuple_len == 0 else (h,) + (None,) * (stack.tuple_len - 1)

    def passthrough(*args, **kwargs):
        return wrap(args[0] if args else kwargs["hidden_states"])

    def cached(*_args, **_kwargs):
        return wrap(value if norm is None else norm(value))

    patched = stack.layers[:level]
    try:
        for i, layer in enumerate(patched):
            layer.forward = cached if i == level - 1 else passthrough
        yield
    finally:
        for layer in patched:
            if "forward" in vars(layer):
                del layer.forward


def capture(
    model: nn.Module, stack: LayerStack, keys: Sequence[CacheKey], run_to_end: bool, forward: Callable[[], object]
) -> tuple[dict[CacheKey, torch.Tensor], object | None]:
    """Run ``forward`` (an intact forward of ``model``) keeping, for each (level, via_norm) in ``keys``, the
    input of layer ``level`` (layer level-1's output) or, with via_norm, the input of layer level-1's terminal
    norm; stop as soon as all are kept unless ``run_to_end``.

    Returns (tensors by key, the forward's output or None when it was stopped).
    """
    wanted = sorted(set(keys))
    modules = {key: stack.terminal[key[0] - 1] if key[1] else stack.layers[key[0] - 1] for key in wanted}
    out = None
    with Trace(
        model, {str(key): module for key, module in modules.items()}, retain_input=True, stop=not run_to_end
    ) as trace:
        out = forward()
    captured = {
        key: trace[str(key)].input if key[1] else first_tensor(trace[str(key)].output)
        for key in wanted
        if trace[str(key)].calls
    }
    return captured, None if trace.stopped else out


def scored_positions(batch: Batch, repeats: int) -> torch.Tensor | None:
    """The flat indices of the scored tokens in ``repeats`` copies of ``batch`` stacked along the batch axis."""
    if batch.scored is None:
        return None
    if repeats == 1:
        return batch.scored
    stride = batch.targets.numel()
    offsets = torch.arange(repeats, device=batch.scored.device).unsqueeze(1) * stride
    return (offsets + batch.scored.unsqueeze(0)).reshape(-1)


def last_layer_entry(layer: nn.Module) -> nn.Module | None:
    """The first submodule of ``layer`` whose forward takes ``(hidden_states, input_tensor)``: in a BERT-family layer
    the attention's output projection (``BertSelfOutput``), where the layer turns token-wise. None where there is
    none (a pre-LN decoder adds its residuals inside the layer's own forward)."""
    for module in layer.modules():
        if module is not layer and last_layer_entry_of(module) is not None:
            return module
    return None


def _on_both_inputs(args: tuple, kwargs: dict, fn: Callable[[torch.Tensor], torch.Tensor]) -> tuple[tuple, dict]:
    """``(hidden_states, input_tensor)`` of a ``last_layer_entry`` call, passed positionally or by name, through ``fn``."""
    if len(args) >= 2:
        return (fn(args[0]), fn(args[1]), *args[2:]), kwargs
    kwargs = dict(kwargs)
    if args:
        args = (fn(args[0]),)
    else:
        kwargs["hidden_states"] = fn(kwargs["hidden_states"])
    kwargs["input_tensor"] = fn(kwargs["input_tensor"])
    return args, kwargs


@contextlib.contextmanager
def gather_from(
    entry: nn.Module, rows: torch.Tensor, per_example: bool, on_gathered: Callable[[], None]
) -> Iterator[None]:
    """While active, ``entry`` (``last_layer_entry`` of the last layer) and everything after it run only at the flat
    token indices ``rows``: both its inputs are gathered to (1, M, H), or with ``per_example`` (one index per example)
    to (B, 1, H), so the base model returns only what the head reads; ``on_gathered`` is called when it did."""

    def gather(t: torch.Tensor) -> torch.Tensor:
        flat = t.reshape(-1, t.shape[-1]).index_select(0, rows)
        return flat.unsqueeze(1) if per_example else flat.unsqueeze(0)

    def pre(_module, args, kwargs):
        out = _on_both_inputs(args, kwargs, gather)
        on_gathered()
        return out

    handle = entry.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def first_token_only(entry: nn.Module | None, layer: nn.Module | None = None) -> Iterator[None]:
    """While active, the last layer runs from ``entry`` on at each example's first token only (B, 1, H): what a
    sequence-classification head of the BERT family reads, in training too (gradients reach every token through
    the last layer's attention). ``None``: nothing changes.

    The dropouts of ``layer`` (the last layer) that see the first token only still draw a mask for every token and
    keep its first row: on a CPU that is what ``F.dropout`` draws for the full tensor, so the random stream, and with
    it every later dropout mask of the training run, stays the one the full layer would have used."""
    if entry is None:
        yield
        return
    full: dict[str, torch.Size] = {}

    def first(t: torch.Tensor) -> torch.Tensor:
        full["shape"] = t.shape
        return t[:, :1]

    handle = entry.register_forward_pre_hook(
        lambda _m, args, kwargs: _on_both_inputs(args, kwargs, first), with_kwargs=True
    )
    dropouts = [m for m in (layer.modules() if layer is not None else []) if isinstance(m, nn.Dropout)]

    def full_mask_dropout(module: nn.Dropout) -> Callable[[torch.Tensor], torch.Tensor]:
        def forward(x: torch.Tensor) -> torch.Tensor:
            shape = full.get("shape")
            if not module.training or module.p == 0 or shape is None or x.dim() != 3 or x.shape[1] != 1:
                return nn.Dropout.forward(module, x)
            if shape[1] == 1 or x.shape[0] != shape[0]:
                return nn.Dropout.forward(module, x)
            noise = torch.empty((shape[0], shape[1], x.shape[2]), dtype=x.dtype, device=x.device)
            noise.bernoulli_(1 - module.p).div_(1 - module.p)
            return x * noise[:, :1]

        return forward

    try:
        for module in dropouts:
            module.forward = full_mask_dropout(module)  # type: ignore[method-assign,assignment]
        yield
    finally:
        handle.remove()
        for module in dropouts:
            if "forward" in vars(module):
                del module.forward


def checked_first_token_entry(
    model: nn.Module, inputs: dict[str, torch.Tensor]
) -> tuple[nn.Module, nn.Module] | tuple[None, None]:
    """(entry, last layer): the last layer's ``last_layer_entry`` of a sequence-classification ``model`` if running
    it at the first token only gives the model's logits on ``inputs`` (eval mode, fp32, to 1e-4 of the largest);
    (None, None) otherwise. Pass both to ``first_token_only``."""
    from .probe import enclosing_layer

    modules = dict(model.named_modules())
    entries = [(name, m) for name, m in modules.items() if m is last_layer_entry_of(m)]
    layers = [enclosing_layer(name, modules) for name, _m in entries]
    if not entries or layers[-1] is None:
        return None, None
    layer = layers[-1]
    entry = last_layer_entry(layer)
    if entry is None:
        return None, None
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            full = model(**inputs).logits.float()
            with first_token_only(entry, layer):
                fast = model(**inputs).logits.float()
    finally:
        model.train(was_training)
    return (entry, layer) if same_outputs(fast, full) else (None, None)


def same_outputs(fast: torch.Tensor, full: torch.Tensor) -> bool:
    """Whether a shortcut's outputs are the full forward's: same shape, equal to 1e-4 of the largest |output|."""
    return fast.shape == full.shape and torch.allclose(fast, full, rtol=0, atol=1e-4 * float(full.abs().max()))


def last_layer_entry_of(module: nn.Module) -> nn.Module | None:
    """``module`` itself if its forward takes ``(hidden_states, input_tensor)`` (see ``last_layer_entry``)."""
    try:
        names = list(inspect.signature(module.forward).parameters)[:2]
    except (TypeError, ValueError):
        return None
    return module if names == ["hidden_states", "input_tensor"] else None
