"""The evaluation engine: one model, one fixed eval set, many ablation conditions, fast.

What makes it fast, in order of what it saves:

1. Nothing is reloaded: each condition is put in force with ``Condition.apply`` (an
   in-place edit of a few LayerNorm entries, undone on exit), so a forward under an
   ablation costs what a plain forward costs.
2. The eval set is tokenized and masked once, and its batches are views on the device.
3. Masked-LM / causal-LM heads run only on the scored positions (a forward hook on the
   base model hands the head the (1, M, H) hidden states of the M scored tokens instead
   of (B, T, H)): the head is token-wise, so the loss is the same, and for a BERT with a
   large vocabulary the head is a large share of the forward.
4. Shared prefix: a condition that touches only layers >= L computes exactly what the
   intact model computes up to layer L. The engine runs the intact prefix of each batch
   once, keeps the input of each needed layer L (for as many batches as
   ``cache_budget_bytes`` holds: a span), and runs every such condition from there, with
   layers < L replaced by stubs (a temporary ``forward`` attribute, removed in a
   ``finally``). Where a layer ends in a norm whose output IS the layer's output (the
   block-output LayerNorm of a post-LN BERT), a condition whose first touched site is
   that norm starts one layer later: the engine keeps the norm's intact input and the
   stub returns the (ablated) norm applied to it, so a scan over the block-output norms
   of all layers skips the whole first layer. This is checked against the full forward when the engine starts, and
   switched off with a warning where it does not match (or where layers are shared,
   as in ALBERT). Within a span the loop is condition-outer, so each condition's
   context is entered once per span (once for the whole set when nothing is cached),
   not once per batch, and losses stay on the device until the condition is done.
5. Optionally K conditions in one forward (``conditions_per_forward``): the batch is
   repeated K times and each touched norm gets a hook that applies each condition's own
   weight and bias to its slice. FLOPs are the same as K forwards; it pays on a GPU that
   a single small batch does not fill, not on a CPU.
6. bf16 autocast on CUDA, and on a CPU where a once-per-process probe finds it pays
   (``device.eval_autocast_dtype``; ``BERTBUSTERS_FP32=1`` or ``autocast=None`` forces fp32); losses are
   accumulated in float64.
7. Out-of-memory back-off: on an OOM the batch (or K) is halved and the failed batch is
   retried; results are sums over tokens, so they do not depend on the batch size.

Example:
    >>> engine = AblationEngine(model, prepare_mlm_eval(tokenizer, texts))
    >>> engine.run([Condition("none"), Condition("outliers", dims=(308, 381))])  # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import gc
import inspect
import logging
import math
import weakref
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .ablation import Condition, validate_dims
from .device import eval_autocast_dtype as default_autocast_dtype
from .masking import Batch, EvalSet
from .metrics import compute_metrics, is_regression
from .norms import NormSite, disabled_fill, find_norm_sites

log = logging.getLogger(__name__)

AFTER_LAYERS_ROLES = ("final", "head")  # norms that run after the last layer of a single-stack model
AUTO_TOKENS_PER_FORWARD = 65536  # conditions_per_forward="auto" on a GPU: stack conditions up to this many tokens
AUTO_MAX_CONDITIONS = 8


# model -> {autocast dtype: its checked layer stack or None}: the structure does not change with the weights
_CHECKED_STACKS: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


class _PrefixCaptured(Exception):
    """Raised from a hook to stop a forward once the needed layer inputs are captured."""


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA/CPU allocation failures (which the engine answers by halving the batch)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


@dataclass
class _Plan:
    """A condition as the engine runs it: the sites it touches and the first layer it changes."""

    index: int
    condition: Condition
    sites: list[NormSite]
    level: int  # 0: run the full forward; L > 0: start from the intact input of layer L
    via_norm: bool = False  # the input of layer L is layer L-1's terminal norm applied to its cached input

    @property
    def cache_key(self) -> tuple[int, bool]:
        return self.level, self.via_norm

    @property
    def intact(self) -> bool:
        return not self.condition.dims


@dataclass
class _Stack:
    """The model's single layer stack, as the prefix cache needs it."""

    name: str
    layers: list[nn.Module]
    tuple_len: int  # 0: layers return a tensor; n: a tuple of n whose items after the first are None
    terminal: dict[int, nn.Module] = field(default_factory=dict)  # layer -> norm whose output is its output


class AblationEngine:
    """Evaluates conditions on one model and one eval set; see the module docstring for how.

    model: a transformers model (MLM, causal LM or sequence classification head, matching the set).
    eval_set: from ``prepare_mlm_eval`` / ``prepare_causal_eval`` / ``prepare_classification_eval``.
    sites: the model's norm sites (default ``find_norm_sites(model)``).
    batch_size: examples per forward; None: the set's; "auto": as large as fits (CUDA: from 512 down).
    prefix_cache: reuse the intact forward up to the first layer a condition touches.
    conditions_per_forward: K conditions per batched forward; "auto": 1 on a CPU (no gain there), and on a
        GPU as many as bring a forward to ~64k tokens, at most 8 (a small batch does not fill a GPU, and
        an in-place context per condition and forward costs a GPU more than the per-condition norm hooks).
    autocast: dtype for autocast; None or "fp32": plain fp32; "auto": ``device.eval_autocast_dtype`` (bf16 on
        CUDA and on CPUs where bf16 pays, fp32 elsewhere or when the environment sets BERTBUSTERS_FP32=1).
    chunk_size: conditions per chunk (``run``'s progress and ``on_chunk`` come per chunk).
    cache_budget_bytes: memory for cached layer inputs (default: 1/4 of free GPU memory, 2 GiB on CPU).
    The model is put in eval mode; its parameters are only edited inside contexts that restore them.

    Example:
        >>> engine = AblationEngine(model, eval_set)
        >>> engine.evaluate(Condition("outliers", dims=(308, 381)))["eval_loss"]  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, eval_set: EvalSet, sites: Sequence[NormSite] | None = None, *,
                 batch_size: int | str | None = None, prefix_cache: bool = True,
                 conditions_per_forward: int | str = "auto", autocast: torch.dtype | str | None = "auto",
                 chunk_size: int = 16, cache_budget_bytes: int | None = None):
        self.model = model.eval()
        self.device = next(model.parameters()).device
        if eval_set.device != self.device:
            log.info("moving the eval set from %s to the model's device %s", eval_set.device, self.device)
            eval_set = eval_set.to(self.device)
        self.eval_set = eval_set
        self.sites = list(sites) if sites is not None else find_norm_sites(model)
        self.autocast_dtype = _autocast_choice(autocast, self.device)
        self.batch_size = self._initial_batch_size(batch_size)
        self.conditions_per_forward = self._initial_k(conditions_per_forward)
        self.chunk_size = max(1, int(chunk_size))
        self.cache_budget_bytes = int(cache_budget_bytes) if cache_budget_bytes is not None else self._default_budget()
        self._hidden = max(s.size for s in self.sites)
        self._forward_kwargs = self._extra_forward_kwargs()
        self._base = getattr(model, "base_model", model)
        self._gather = eval_set.kind in ("mlm", "causal") and self._base is not model
        self._gathered = False
        self.stack = self._checked_stack() if prefix_cache else None
        self.backoffs = 0  # how many times an out-of-memory error halved the batch or K

    # ------------------------------------------------------------------ setup
    def _initial_batch_size(self, batch_size) -> int:
        if batch_size == "auto":
            return min(len(self.eval_set), 512) if self.device.type == "cuda" else self.eval_set.batch_size
        size = self.eval_set.batch_size if batch_size is None else batch_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"batch_size must be a positive integer, None or 'auto' (got {batch_size!r}).")
        return size

    def _default_budget(self) -> int:
        """Bytes the prefix cache may hold: a quarter of the free GPU memory, or 2 GiB on the CPU."""
        if self.device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(self.device)
            return free // 4
        return 2 * 1024 ** 3

    def _initial_k(self, k) -> int:
        if k == "auto":  # on a GPU, enough conditions per forward to reach ~64k tokens (at most 8); 1 on a CPU
            if self.device.type != "cuda":
                return 1
            tokens = self.batch_size * self.eval_set.input_ids.shape[1]
            return max(1, min(AUTO_MAX_CONDITIONS, AUTO_TOKENS_PER_FORWARD // max(1, tokens)))
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"conditions_per_forward must be a positive integer or 'auto' (got {k!r}).")
        return k

    def _extra_forward_kwargs(self) -> dict:
        try:
            params = inspect.signature(self.model.forward).parameters
        except (TypeError, ValueError):
            return {}
        return {"use_cache": False} if "use_cache" in params else {}

    def _checked_stack(self) -> _Stack | None:
        """The layer stack if starting from a cached layer input matches the full forward; probed once per model."""
        known = _CHECKED_STACKS.setdefault(self.model, {})
        key = str(self.autocast_dtype)
        if key not in known:
            self.stack = self._probe_stack()
            known[key] = self.stack if self.stack is not None and self._prefix_matches_full_forward() else None
        return known[key]

    def _probe_stack(self) -> _Stack | None:
        """The single layer stack whose layers each run once, in order, per forward; None if there is none."""
        layered = [s for s in self.sites if s.layer is not None]
        stacks = {s.stack for s in layered}
        if len(stacks) != 1 or getattr(getattr(self.model, "config", None), "is_encoder_decoder", False):
            log.info("prefix cache off: the model has %d layer stacks", len(stacks))
            return None
        modules = dict(self.model.named_modules())
        by_index: dict[int, nn.Module] = {}
        for site in layered:
            layer = _enclosing_layer(site.name, modules)
            if layer is None or by_index.setdefault(site.layer, layer) is not layer:
                log.info("prefix cache off: cannot tell which layer module holds %s", site.name)
                return None
        n = 1 + max(by_index)
        if sorted(by_index) != list(range(n)) or len({id(m) for m in by_index.values()}) != n:
            log.info("prefix cache off: layers are missing or shared between indices")
            return None
        layers = [by_index[i] for i in range(n)]
        calls: list[int] = []
        outputs: list = []
        norm_outputs: list[tuple[int, nn.Module, torch.Tensor]] = []

        def record(i):
            def hook(_module, _args, out):  # returns None: the output is left as it is
                calls.append(i)
                outputs.append(out)
            return hook

        def record_norm(i, module):
            def hook(_module, _args, out):
                norm_outputs.append((i, module, out))
            return hook

        hooks = [layer.register_forward_hook(record(i)) for i, layer in enumerate(layers)]
        hooks += [s.module.register_forward_hook(record_norm(s.layer, s.module)) for s in layered
                  if s.stack in stacks]
        try:
            self._model_forward(self.eval_set.batch(0, 1).inputs)
        finally:
            for h in hooks:
                h.remove()
        if calls != list(range(n)):
            log.info("prefix cache off: layers ran in order %s, not once each in order", calls)
            return None
        out = outputs[0]
        if isinstance(out, torch.Tensor):
            tuple_len = 0
        elif isinstance(out, tuple) and isinstance(out[0], torch.Tensor) and all(o is None for o in out[1:]):
            tuple_len = len(out)
        else:
            log.info("prefix cache off: layers return %s", type(out).__name__)
            return None
        hidden = [o if tuple_len == 0 else o[0] for o in outputs]
        terminal = {i: module for i, module, normed in norm_outputs if normed is hidden[i]}
        return _Stack(next(iter(stacks)), layers, tuple_len, terminal)

    def _prefix_matches_full_forward(self) -> bool:
        """Run two examples intact, fully and twice from the cached input of a middle layer; compare the logits.

        Twice, because a layer that changed its input in place would spoil the cache for the next condition.
        """
        batch = self.eval_set.batch(0, min(2, len(self.eval_set)))
        level = max(1, len(self.stack.layers) // 2)
        keys = [(level, False)] + ([(level, True)] if level - 1 in self.stack.terminal else [])
        with torch.no_grad(), self._autocast():
            full = self._logits(batch, 1)
            cache = self._capture(batch, keys, run_to_end=False)[0]
            runs = [self._logits(batch, 1, key, cache[key]) for key in keys for _ in range(2)]
        tol = 1e-4 if self.autocast_dtype is None else 5e-2
        diff = max(float((full.float() - run.float()).abs().max()) for run in runs)
        if not diff <= tol * max(1.0, float(full.float().abs().max())):
            log.warning("prefix cache off: starting at layer %d differs from the full forward by %.3g", level, diff)
            return False
        return True

    # --------------------------------------------------------------- forward
    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def _model_forward(self, inputs: dict[str, torch.Tensor]):
        with torch.no_grad(), self._autocast():
            return self.model(**inputs, **self._forward_kwargs)

    @contextlib.contextmanager
    def _gathering(self, scored: torch.Tensor | None):
        """While active, the base model hands the head only the hidden states at ``scored`` (flat indices)."""
        if not self._gather or scored is None:
            self._gathered = False
            yield
            return

        def hook(_module, _args, out):
            hidden = getattr(out, "last_hidden_state", None)
            if hidden is None or hidden.dim() != 3:
                return out
            out.last_hidden_state = hidden.reshape(-1, hidden.shape[-1]).index_select(0, scored).unsqueeze(0)
            self._gathered = True
            return out

        self._gathered = False
        handle = self._base.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    @contextlib.contextmanager
    def _skipping(self, key: tuple[int, bool], cache: torch.Tensor | None, repeats: int):
        """Replace layers < ``level`` by stubs; the last one returns ``cache`` (repeated for K conditions), or,
        with ``via_norm``, layer level-1's terminal norm (as the active condition has it) applied to ``cache``."""
        level, via_norm = key
        if level == 0:
            yield
            return
        stack = self.stack
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

    def _capture(self, batch: Batch, keys: Sequence[tuple[int, bool]], run_to_end: bool,
                 scored: torch.Tensor | None = None):
        """Intact forward that keeps, for each (level, via_norm) in ``keys``, the input of layer ``level`` or
        (via_norm) the input of layer level-1's terminal norm; stops early unless ``run_to_end``.

        Returns (tensors by key, logits or None).
        """
        captured: dict[tuple[int, bool], torch.Tensor] = {}
        wanted = set(keys)
        hooks = []
        for key in wanted:
            level, via_norm = key
            if via_norm:
                def hook(_m, args, _out, key=key):
                    captured[key] = args[0]
                    if not run_to_end and len(captured) == len(wanted):
                        raise _PrefixCaptured
                hooks.append(self.stack.terminal[level - 1].register_forward_hook(hook))
            else:
                def hook(_m, _a, out, key=key):
                    captured[key] = out if isinstance(out, torch.Tensor) else out[0]
                    if not run_to_end and len(captured) == len(wanted):
                        raise _PrefixCaptured
                hooks.append(self.stack.layers[level - 1].register_forward_hook(hook))
        logits = None
        try:
            with self._gathering(scored):
                out = self.model(**batch.inputs, **self._forward_kwargs)
            logits = _logits_of(out)
        except _PrefixCaptured:
            pass
        finally:
            for h in hooks:
                h.remove()
        return captured, logits

    def _logits(self, batch: Batch, repeats: int, key: tuple[int, bool] = (0, False),
                cache: torch.Tensor | None = None):
        """Logits for ``repeats`` copies of ``batch`` (scored positions only for LMs), (K, M, V) or (K, B, C),
        starting from ``cache`` at ``key`` = (level, via_norm) (see ``_skipping``)."""
        inputs = batch.inputs if repeats == 1 else {k: v.repeat(repeats, 1) for k, v in batch.inputs.items()}
        scored = self._scored(batch, repeats)
        with self._skipping(key, cache, repeats), self._gathering(scored):
            out = self.model(**inputs, **self._forward_kwargs)
        return self._shape_logits(_logits_of(out), batch, repeats, scored)

    def _scored(self, batch: Batch, repeats: int) -> torch.Tensor | None:
        if batch.scored is None:
            return None
        if repeats == 1:
            return batch.scored
        stride = batch.targets.numel()
        offsets = torch.arange(repeats, device=batch.scored.device).unsqueeze(1) * stride
        return (offsets + batch.scored.unsqueeze(0)).reshape(-1)

    def _shape_logits(self, logits: torch.Tensor, batch: Batch, repeats: int, scored) -> torch.Tensor:
        if self.eval_set.kind == "classification":
            return logits.reshape(repeats, batch.size, -1)
        if not self._gathered:
            logits = logits.reshape(-1, logits.shape[-1]).index_select(0, scored)
        return logits.reshape(repeats, batch.scored.numel(), -1)

    # ---------------------------------------------------------------- scoring
    def _score(self, logits: torch.Tensor, batch: Batch) -> dict:
        """Per condition (first axis of ``logits``): summed loss (K,) on the device, the count, and
        (classification) the logits; nothing is copied to the host here, so a GPU never waits."""
        k = logits.shape[0]
        if self.eval_set.kind == "classification":
            labels = batch.targets
            if is_regression(self.eval_set.task):
                losses = ((logits[..., 0].float() - labels.float()) ** 2).sum(1)
            else:
                flat = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.repeat(k),
                                       reduction="none")
                losses = flat.reshape(k, -1).sum(1)
            return {"loss_sum": losses.double(), "count": batch.size, "logits": logits.float()}
        targets = batch.targets.reshape(-1).index_select(0, batch.scored)
        flat = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.repeat(k), reduction="none")
        return {"loss_sum": flat.reshape(k, -1).double().sum(1), "count": int(targets.numel())}

    # ---------------------------------------------------------------- running
    def plan(self, conditions: Sequence[Condition]) -> list[_Plan]:
        """Each condition with its sites and the layer it starts from (0 without a prefix cache)."""
        plans = []
        for i, cond in enumerate(conditions):
            if not isinstance(cond, Condition):
                raise TypeError(f"conditions[{i}] is a {type(cond).__name__}, not a Condition.")
            sites = cond.sites(self.sites) if cond.dims else []
            if sites:
                validate_dims(cond.dims, min(s.size for s in sites))
                for site in sites:
                    if not site.can_disable:
                        disabled_fill(site, site.weight, cond.mode)  # raises: nothing to disable there
            plans.append(_Plan(i, cond, sites, *self._level(sites)))
        return plans

    def _level(self, sites: Sequence[NormSite]) -> tuple[int, bool]:
        """(level, via_norm): the first layer a condition changes, and whether it starts from layer level-1's
        terminal norm (the condition touches that norm, whose output is the layer's output)."""
        if self.stack is None or not sites:
            return 0, False
        n = len(self.stack.layers)
        levels = []
        for site in sites:
            if site.layer is not None and site.stack == self.stack.name:
                terminal = self.stack.terminal.get(site.layer) is site.module
                levels.append(site.layer + 1 if terminal else site.layer)
            elif site.layer is None and site.role in AFTER_LAYERS_ROLES:
                levels.append(n)
            else:
                return 0, False
        level = min(levels)
        via_norm = level > 0 and any(s.layer == level - 1 and s.stack == self.stack.name for s in sites)
        return level, via_norm

    def _span_stop(self, plans: Sequence[_Plan], start: int) -> int:
        """End of the next span of examples: as many whole batches as the prefix cache budget holds."""
        n = len(self.eval_set)
        keys = {p.cache_key for p in plans if p.level > 0}
        if not keys:
            return n  # nothing to cache: every condition runs over the whole set under one context
        per_example = len(keys) * self.eval_set.input_ids.shape[1] * self._hidden * 4
        batches = max(1, self.cache_budget_bytes // (per_example * self.batch_size))
        return min(n, start + batches * self.batch_size)

    def _run_span(self, plans: Sequence[_Plan], start: int, stop: int) -> dict[int, _Total]:
        """All ``plans`` on examples [start, stop): the intact prefix of each batch once, then condition by
        condition (each condition's context entered once for all the span's batches)."""
        batches = [self.eval_set.batch(i, min(i + self.batch_size, stop)) for i in range(start, stop, self.batch_size)]
        totals = {p.index: _Total() for p in plans}
        keys = sorted({p.cache_key for p in plans if p.level > 0})
        caches: list[dict[tuple[int, bool], torch.Tensor]] = [{} for _ in batches]
        with torch.no_grad(), self._autocast():
            intact = [p for p in plans if p.intact] if keys else []
            for b, batch in enumerate(batches if keys else []):
                scored = self._scored(batch, 1)
                caches[b], logits = self._capture(batch, keys, run_to_end=bool(intact), scored=scored)
                if intact:
                    score = self._score(self._shape_logits(logits, batch, 1, scored), batch)
                    for p in intact:
                        totals[p.index].add(score, 0)
            done = {p.index for p in intact}
            todo = [p for p in plans if p.index not in done]
            for key in sorted({p.cache_key for p in todo}):
                group = [p for p in todo if p.cache_key == key]
                for i in range(0, len(group), self.conditions_per_forward):
                    chunk = group[i:i + self.conditions_per_forward]
                    context = chunk[0].condition.apply(self.sites) if len(chunk) == 1 else _PerConditionNorms(chunk)
                    with context:
                        for b, batch in enumerate(batches):
                            score = self._score(self._logits(batch, len(chunk), key, caches[b].get(key)), batch)
                            for j, p in enumerate(chunk):
                                totals[p.index].add(score, j)
        return totals

    def _run_plans(self, plans: Sequence[_Plan]) -> list[dict]:
        """``plans`` over the whole eval set, span by span, halving the batch (or K) on out-of-memory.

        Conditions that start from a cached layer input (with the intact model, whose forward fills the
        cache) go in spans the cache budget holds; the others in one span over the whole set.
        """
        totals = {p.index: _Total() for p in plans}
        uses_cache = any(p.level > 0 for p in plans)
        groups = [[p for p in plans if p.level == 0 and not (uses_cache and p.intact)],
                  [p for p in plans if p.level > 0 or (uses_cache and p.intact)]]
        for group in (g for g in groups if g):
            n, start = len(self.eval_set), 0
            while start < n:
                stop = self._span_stop(group, start)
                try:
                    span = self._run_span(group, start, stop)
                except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
                    if not is_out_of_memory(exc):
                        raise
                    self._back_off(exc)
                    continue
                for index, part in span.items():
                    totals[index].merge(part)
                start = stop
        return [self._finish(totals[p.index]) for p in plans]

    def _back_off(self, exc: BaseException) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if self.conditions_per_forward > 1:
            self.conditions_per_forward //= 2
            what = f"conditions_per_forward={self.conditions_per_forward}"
        elif self.batch_size > 1:
            self.batch_size //= 2
            what = f"batch_size={self.batch_size}"
        else:
            raise exc
        self.backoffs += 1
        log.warning("out of memory (%s); retrying with %s", str(exc).splitlines()[0][:120], what)

    def _finish(self, total: _Total) -> dict:
        count = total.count
        loss = float(total.loss_sum) / count if count else float("nan")
        if self.eval_set.kind == "classification":
            logits = torch.cat(total.logits).cpu().numpy()
            labels = self.eval_set.targets.cpu().numpy()
            return {"eval_loss": loss, **compute_metrics(self.eval_set.task, logits, labels),
                    "tokens": count, "examples": count}
        return {"eval_loss": loss, "perplexity": _safe_exp(loss), "tokens": count, "examples": len(self.eval_set)}

    def run(self, conditions: Sequence[Condition], progress: bool = True,
            on_chunk: Callable[[list[tuple[Condition, dict]]], None] | None = None) -> list[dict]:
        """Metrics for each condition, in order; ``on_chunk`` gets each finished chunk's (condition, metrics)."""
        plans = self.plan(conditions)
        results: list[dict | None] = [None] * len(plans)
        bar = _progress(len(plans), progress)
        try:
            for i in range(0, len(plans), self.chunk_size):
                chunk = plans[i:i + self.chunk_size]
                for plan, res in zip(chunk, self._run_plans(chunk)):
                    results[plan.index] = res
                if on_chunk is not None:
                    on_chunk([(p.condition, results[p.index]) for p in chunk])
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        return results  # type: ignore[return-value]

    def evaluate(self, condition: Condition | None = None) -> dict:
        """Metrics of one condition (None: the intact model)."""
        return self.run([condition or Condition("none")], progress=False)[0]


class _Total:
    """Running sums of one condition over batches (the loss stays on the device until the end)."""

    def __init__(self):
        self.loss_sum: torch.Tensor | float = 0.0
        self.count = 0
        self.logits: list[torch.Tensor] = []

    def add(self, score: dict, j: int) -> None:
        self.loss_sum = self.loss_sum + score["loss_sum"][j]
        self.count += score["count"]
        if "logits" in score:
            self.logits.append(score["logits"][j])

    def merge(self, other: "_Total") -> None:
        self.loss_sum = self.loss_sum + other.loss_sum
        self.count += other.count
        self.logits += other.logits


class _PerConditionNorms:
    """K conditions in one forward: each touched norm applies condition k's weight/bias to slice k of the batch."""

    def __init__(self, plans: Sequence[_Plan]):
        self.plans = list(plans)
        self.handles: list = []

    def __enter__(self):
        k = len(self.plans)
        touched: dict[int, tuple[NormSite, list[int | None]]] = {}
        for j, plan in enumerate(self.plans):
            for site in plan.sites:
                touched.setdefault(id(site.module), (site, [None] * k))[1][j] = j
        try:
            for site, members in touched.values():
                self.handles.append(site.module.register_forward_hook(self._hook(site, members)))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _hook(self, site: NormSite, members: list[int | None]):
        k = len(self.plans)
        module = site.module
        weights, biases = [], []
        for j, plan in enumerate(self.plans):
            w = module.weight.detach().clone()
            b = None if site.bias is None else site.bias.detach().clone()
            if members[j] is not None:
                dims = torch.tensor(plan.condition.dims, device=w.device)
                for param, original in ((w, module.weight), (b, site.bias)):
                    if param is not None:
                        fill = disabled_fill(site, original, plan.condition.mode).to(param.dtype)
                        param[dims] = fill
            weights.append(w)
            biases.append(b)
        weight = torch.stack(weights)  # (K, H)
        bias = None if site.bias is None else torch.stack(biases)  # (K, H)

        if isinstance(module, nn.LayerNorm):
            def hook(_m, args, _out):
                x = args[0]
                normed = F.layer_norm(x, module.normalized_shape, None, None, module.eps)
                shaped = normed.reshape(k, -1, normed.shape[-1])  # (K, B*T, H)
                y = shaped * weight.unsqueeze(1).to(shaped.dtype)
                if bias is not None:
                    y = y + bias.unsqueeze(1).to(shaped.dtype)
                return y.reshape(normed.shape)
            return hook

        def generic_hook(_m, args, _out):  # RMSNorm and other norm classes: forward each slice with its params
            x = args[0]
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
        return generic_hook

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        return False


def _autocast_choice(autocast, device: torch.device) -> torch.dtype | None:
    """The engine's ``autocast`` argument as a dtype (None: fp32); see the class docstring."""
    if autocast == "auto":
        return default_autocast_dtype(device)
    if autocast is None or autocast == "fp32" or autocast == torch.float32:
        return None
    if isinstance(autocast, torch.dtype):
        return autocast
    raise ValueError(f"autocast must be 'auto', 'fp32', None or a torch dtype (got {autocast!r}).")


def _enclosing_layer(name: str, modules: dict[str, nn.Module]) -> nn.Module | None:
    """The innermost element of a ModuleList that contains the module called ``name``."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        if parts[cut - 1].isdigit() and isinstance(modules.get(".".join(parts[:cut - 1])), nn.ModuleList):
            return modules[".".join(parts[:cut])]
    return None


def _logits_of(out) -> torch.Tensor:
    logits = getattr(out, "logits", None)
    return logits if logits is not None else out[0]


def _safe_exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return float("inf")


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="conditions", unit="cond")
