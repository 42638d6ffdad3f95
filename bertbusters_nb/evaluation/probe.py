"""Structure probing for the prefix cache: the model's one layer stack, found once per model and checked.

``probe_stack`` traces one forward (``model.hooks.Trace``) and accepts a stack only when its layers each
run once, in order, return a tensor (or a tuple whose other items are None), and are not shared between
indices (ALBERT). It also finds each layer's terminal norm: a norm whose output IS the layer's output (the
block-output LayerNorm of a post-LN BERT). ``prefix_matches_full_forward`` then compares starting from a
cached layer input with the full forward, through the public methods of a ``PrefixRunner`` (the engine);
``checked_stack`` keeps the result per model and autocast dtype, since the structure does not change with the
weights.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import torch
from torch import nn

from ..model.hooks import Trace
from ..model.sites import NormSite
from .sets import Batch, EvalSet

__all__ = [
    "CacheKey",
    "LayerStack",
    "PrefixRunner",
    "checked_stack",
    "enclosing_layer",
    "prefix_matches_full_forward",
    "probe_stack",
]

log = logging.getLogger(__name__)

CacheKey = tuple[int, bool]  # (level, via_norm): start at layer ``level``, from its terminal norm's input or not

# model -> {autocast dtype: its checked layer stack or None}
_CHECKED_STACKS: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


@dataclass
class LayerStack:
    """The model's single layer stack, as the prefix cache needs it."""

    name: str
    layers: list[nn.Module]
    tuple_len: int  # 0: layers return a tensor; n: a tuple of n whose items after the first are None
    terminal: dict[int, nn.Module] = field(default_factory=dict)  # layer -> norm whose output is its output


class PrefixRunner(Protocol):
    """What the check needs from an engine (``AblationEngine`` is one): its set, its stack, and its public
    forward methods. A Protocol, so that this module, below the engine, never imports it."""

    eval_set: EvalSet
    stack: LayerStack | None
    autocast_dtype: torch.dtype | None

    def autocast(self) -> contextlib.AbstractContextManager: ...

    def logits(
        self, batch: Batch, repeats: int = 1, key: CacheKey = (0, False), cache: torch.Tensor | None = None
    ) -> torch.Tensor: ...

    def capture_prefix(
        self, batch: Batch, keys: Sequence[CacheKey], run_to_end: bool = False, scored: torch.Tensor | None = None
    ) -> tuple[dict[CacheKey, torch.Tensor], torch.Tensor | None]: ...


def enclosing_layer(name: str, modules: dict[str, nn.Module]) -> nn.Module | None:
    """The innermost element of a ModuleList that contains the module called ``name``."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        if parts[cut - 1].isdigit() and isinstance(modules.get(".".join(parts[: cut - 1])), nn.ModuleList):
            return modules[".".join(parts[:cut])]
    return None


def probe_stack(model: nn.Module, sites: Sequence[NormSite], forward: Callable[[], object]) -> LayerStack | None:
    """The single layer stack whose layers each run once, in order, per forward; None if there is none.

    ``forward`` runs one intact forward of ``model`` (the probe traces it).
    """
    layered = [(s.layer, s) for s in sites if s.layer is not None]
    stacks = {s.stack for _i, s in layered}
    if len(stacks) != 1 or getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        log.info("prefix cache off: the model has %d layer stacks", len(stacks))
        return None
    modules = dict(model.named_modules())
    by_index: dict[int, nn.Module] = {}
    for index, site in layered:
        layer = enclosing_layer(site.name, modules)
        if layer is None or by_index.setdefault(index, layer) is not layer:
            log.info("prefix cache off: cannot tell which layer module holds %s", site.name)
            return None
    n = 1 + max(by_index)
    if sorted(by_index) != list(range(n)) or len({id(m) for m in by_index.values()}) != n:
        log.info("prefix cache off: layers are missing or shared between indices")
        return None
    layers = [by_index[i] for i in range(n)]
    layer_names = {f"layer {i}": layer for i, layer in enumerate(layers)}
    norm_names = {f"norm {s.name}": s.module for _i, s in layered if s.stack in stacks}
    with Trace(model, {**layer_names, **norm_names}) as trace:
        forward()
    calls = sorted((call.end, i, call.output) for i in range(n) for call in trace[f"layer {i}"].calls)
    order = [i for _end, i, _out in calls]
    if order != list(range(n)):
        log.info("prefix cache off: layers ran in order %s, not once each in order", order)
        return None
    outputs = [out for _end, _i, out in calls]
    out = outputs[0]
    if isinstance(out, torch.Tensor):
        tuple_len = 0
    elif isinstance(out, tuple) and isinstance(out[0], torch.Tensor) and all(o is None for o in out[1:]):
        tuple_len = len(out)
    else:
        log.info("prefix cache off: layers return %s", type(out).__name__)
        return None
    hidden = [o if tuple_len == 0 else o[0] for o in outputs]
    terminal: dict[int, nn.Module] = {}
    for index, site in layered:
        if site.stack not in stacks:
            continue
        for call in trace[f"norm {site.name}"].calls:
            if call.output is hidden[index]:
                terminal[index] = site.module
    return LayerStack(next(iter(stacks)), layers, tuple_len, terminal)


def prefix_matches_full_forward(runner: PrefixRunner) -> bool:
    """Run two examples intact, fully and twice from the cached input of a middle layer of ``runner.stack``;
    compare the logits.

    Twice, because a layer that changed its input in place would spoil the cache for the next condition.
    """
    stack = runner.stack
    if stack is None:
        return False
    batch = runner.eval_set.batch(0, min(2, len(runner.eval_set)))
    level = max(1, len(stack.layers) // 2)
    keys = [(level, False)] + ([(level, True)] if level - 1 in stack.terminal else [])
    with torch.no_grad(), runner.autocast():
        full = runner.logits(batch, 1)
        cache = runner.capture_prefix(batch, keys, run_to_end=False)[0]
        runs = [runner.logits(batch, 1, key, cache[key]) for key in keys for _ in range(2)]
    tol = 1e-4 if runner.autocast_dtype is None else 5e-2
    diff = max(float((full.float() - run.float()).abs().max()) for run in runs)
    if not diff <= tol * max(1.0, float(full.float().abs().max())):
        log.warning("prefix cache off: starting at layer %d differs from the full forward by %.3g", level, diff)
        return False
    return True


def checked_stack(
    model: nn.Module, autocast_dtype: torch.dtype | None, find: Callable[[], LayerStack | None]
) -> LayerStack | None:
    """``model``'s checked layer stack: ``find()`` (probe and check, e.g. ``probe_stack`` then
    ``prefix_matches_full_forward``) runs once per model and autocast dtype, later engines reuse its answer."""
    known = _CHECKED_STACKS.setdefault(model, {})
    key = str(autocast_dtype)
    if key not in known:
        known[key] = find()
    return known[key]
