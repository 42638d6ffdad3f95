"""The evaluation engine: one model, one fixed eval set, many ablation conditions, fast.

What makes it fast, in order of what it saves:

1. Nothing is reloaded: each condition is put in force with ``Condition.apply`` (an
   in-place edit of a few LayerNorm entries, undone on exit), so a forward under an
   ablation costs what a plain forward costs.
2. The eval set is tokenized and masked once, and its batches are views on the device.
3. Masked-LM / causal-LM heads run only on the scored positions (a forward hook on the
   base model hands the head the (1, M, H) hidden states of the M scored tokens instead
   of (B, T, H)): the head is token-wise, so the loss is the same, and for a BERT with a
   large vocabulary the head is a large share of the forward. Where the last layer turns token-wise at a module
   that takes the attention's output and the residual as inputs (the BERT family's ``BertSelfOutput``), it runs
   from there on only at those tokens too (a classification set: each example's first token, which the pooler
   reads); checked against the full forward when the engine starts (``surgery.gather_from``). Measured at one
   thread: bbmini's masked-LM conditions 15% faster, its classification conditions 20-25%.
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

The concerns live in their own modules: ``probe`` (find and check the layer stack), ``surgery``
(stubs, gathering, capture), ``batched`` (K conditions per forward), ``objectives`` (what a forward's output
means: the set's loss, or the embedding distance; the engine's extension point), ``scoring`` (losses and
metrics), ``memory`` (out-of-memory policy); this module plans conditions and schedules them over spans of
batches.

Public surface for other modules (the screen, the probe, a new objective): ``autocast()``, ``forward(inputs)``
(a plain intact forward), ``level_of(sites)`` (where a condition on those sites starts), ``capture_prefix``
(the cached layer inputs of one batch), ``logits`` (shaped outputs of a batch, from a cached layer input or
not), ``score`` (the objective's summed scores), ``intact_outputs()``, and the ``objective`` and ``stack``
attributes.

Example:
    >>> engine = AblationEngine(model, prepare_mlm_eval(tokenizer, texts))
    >>> engine.run([Condition("none"), Condition("outliers", dims=(308, 381))])  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import torch
from torch import nn

from ..device import autocast as autocast_context
from ..device import eval_autocast_dtype as default_autocast_dtype
from ..model.ablation import Condition, validate_dims
from ..model.discovery import find_norm_sites
from ..model.edits import disabled_fill
from ..model.sites import NormSite
from .batched import ConditionsInOneForward
from .memory import back_off, default_cache_budget, is_out_of_memory
from .objectives import Objective, objective_for
from .probe import CacheKey, LayerStack, checked_stack, prefix_matches_full_forward, probe_stack
from .progress import progress_bar
from .scoring import Total, logits_of
from .sets import Batch, EvalSet
from .surgery import (
    capture,
    gather_from,
    gather_scored,
    last_layer_entry,
    same_outputs,
    scored_positions,
    skip_layers,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = [
    "AFTER_LAYERS_ROLES",
    "AUTO_MAX_CONDITIONS",
    "AUTO_TOKENS_PER_FORWARD",
    "AblationEngine",
    "Plan",
    "is_out_of_memory",
]

log = logging.getLogger(__name__)

AFTER_LAYERS_ROLES = ("final", "head")  # norms that run after the last layer of a single-stack model
AUTO_TOKENS_PER_FORWARD = 65536  # conditions_per_forward="auto" on a GPU: stack conditions up to this many tokens
AUTO_MAX_CONDITIONS = 8


@dataclass
class Plan:
    """A condition as the engine runs it: the sites it touches and the first layer it changes."""

    index: int
    condition: Condition
    sites: list[NormSite]
    level: int  # 0: run the full forward; L > 0: start from the intact input of layer L
    via_norm: bool = False  # the input of layer L is layer L-1's terminal norm applied to its cached input

    @property
    def cache_key(self) -> CacheKey:
        return self.level, self.via_norm

    @property
    def intact(self) -> bool:
        return not self.condition.dims


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
    objective: what a forward's output is scored as (``objectives.Objective``); default ``objective_for(eval_set)``
        (the set's loss, or the embedding distance for an embedding set).
    The model is put in eval mode; its parameters are only edited inside contexts that restore them.

    Example:
        >>> engine = AblationEngine(model, eval_set)
        >>> engine.evaluate(Condition("outliers", dims=(308, 381)))["eval_loss"]  # doctest: +SKIP
    """

    def __init__(
        self,
        model: "PreTrainedModel | nn.Module",
        eval_set: EvalSet,
        sites: Sequence[NormSite] | None = None,
        *,
        batch_size: int | str | None = None,
        prefix_cache: bool = True,
        conditions_per_forward: int | str = "auto",
        autocast: torch.dtype | str | None = "auto",
        chunk_size: int = 16,
        cache_budget_bytes: int | None = None,
        objective: Objective | None = None,
        gather_last_layer: bool = True,
    ):
        self.model = model.eval()
        self.device = next(model.parameters()).device
        if eval_set.device != self.device:
            log.info("moving the eval set from %s to the model's device %s", eval_set.device, self.device)
            eval_set = eval_set.to(self.device)
        self.eval_set = eval_set
        self.objective = objective if objective is not None else objective_for(eval_set)
        self.sites = list(sites) if sites is not None else find_norm_sites(model)
        self.autocast_dtype = _autocast_choice(autocast, self.device)
        self.batch_size = self._initial_batch_size(batch_size)
        self.conditions_per_forward = self._initial_k(conditions_per_forward)
        self.chunk_size = max(1, int(chunk_size))
        self.cache_budget_bytes = (
            int(cache_budget_bytes) if cache_budget_bytes is not None else default_cache_budget(self.device)
        )
        self._hidden = max(s.size for s in self.sites)
        self._forward_kwargs = self._extra_forward_kwargs()
        self._base = getattr(model, "base_model", model)
        self._gather = eval_set.kind in ("mlm", "causal") and self._base is not model
        self._gathered = False
        self.stack: LayerStack | None = None
        self._entry: nn.Module | None = None  # where the last layer turns token-wise (``_checked_entry``)
        if prefix_cache:
            self.stack = checked_stack(model, self.autocast_dtype, self._probe_and_check_stack)
        if gather_last_layer:
            self._entry = self._checked_entry()
        self.backoffs = 0  # how many times an out-of-memory error halved the batch or K
        self.objective.start(self.intact_outputs)

    # ------------------------------------------------------------------ setup
    def _initial_batch_size(self, batch_size) -> int:
        if batch_size == "auto":
            return min(len(self.eval_set), 512) if self.device.type == "cuda" else self.eval_set.batch_size
        size = self.eval_set.batch_size if batch_size is None else batch_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"batch_size must be a positive integer, None or 'auto' (got {batch_size!r}).")
        return size

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

    def _probe_and_check_stack(self) -> LayerStack | None:
        """The layer stack if starting from a cached layer input matches the full forward (``probe``); the
        check runs through ``logits``, so ``self.stack`` holds the candidate while it runs."""
        self.stack = probe_stack(self.model, self.sites, lambda: self.forward(self.eval_set.batch(0, 1).inputs))
        return self.stack if self.stack is not None and prefix_matches_full_forward(self) else None

    def _checked_entry(self) -> nn.Module | None:
        """Where the last layer turns token-wise (``surgery.last_layer_entry``), if running it from there on only
        at the tokens the head reads gives the full forward's outputs on the set's first two examples (fp32, to 1e-4
        of the largest output); None for sets whose objective reads every token, or where it does not match."""
        kind = self.eval_set.kind
        if self.stack is None or not (kind == "classification" or (kind == "mlm" and self._gather)):
            return None
        entry = last_layer_entry(self.stack.layers[-1])
        if entry is None:
            return None
        batch = self.eval_set.batch(0, min(len(self.eval_set), 2))  # small, like the stack's probe: no OOM here
        with torch.no_grad():
            self._entry = entry
            try:
                fast = self.logits(batch).float()
            finally:
                self._entry = None
            full = self.logits(batch).float()
        if not same_outputs(fast, full):
            log.info("last-layer gathering off: %s's outputs differ from the full forward's", type(self.model).__name__)
            return None
        return entry

    # --------------------------------------------------------------- forward: the public surface
    def autocast(self) -> contextlib.AbstractContextManager:
        """The engine's autocast context (its dtype chosen when the engine started; fp32: a no-op)."""
        return autocast_context(self.device, self.autocast_dtype)

    def forward(self, inputs: dict[str, torch.Tensor]):
        """A plain intact forward of the model on ``inputs``, without gradients, under ``autocast()``."""
        with torch.no_grad(), self.autocast():
            return self.model(**inputs, **self._forward_kwargs)

    def intact_outputs(self) -> torch.Tensor:
        """The intact model's shaped outputs (``logits``) for every example, float32, concatenated along the
        examples: the reference an objective may compare with (without gradients, outside ``autocast()``: the model's
        own precision)."""
        with torch.no_grad():
            return torch.cat([self.logits(b, 1)[0].float() for b in self.eval_set.batches(self.batch_size)])

    @contextlib.contextmanager
    def _gathering(self, scored: torch.Tensor | None, last_rows: torch.Tensor | None = None):
        """While active, the base model hands the head only the hidden states at ``scored`` (flat indices); with
        ``last_rows``, the last layer runs its token-wise part only at those tokens (``surgery.gather_from``)."""
        self._gathered = False
        if last_rows is not None and self._entry is not None:

            def gathered():
                self._gathered = True

            with gather_from(self._entry, last_rows, self.eval_set.kind == "classification", gathered):
                yield
            return
        if not self._gather or scored is None:
            yield
            return

        def mark():
            self._gathered = True

        with gather_scored(self._base, scored, mark):
            yield

    def capture_prefix(
        self, batch: Batch, keys: Sequence[CacheKey], run_to_end: bool = False, scored: torch.Tensor | None = None
    ) -> tuple[dict[CacheKey, torch.Tensor], torch.Tensor | None]:
        """Intact forward that keeps, for each (level, via_norm) in ``keys``, the input of layer ``level`` or
        (via_norm) the input of layer level-1's terminal norm; stops early unless ``run_to_end``.

        Returns (tensors by key, logits or None).
        """

        def forward():
            with self._gathering(scored):
                return self.model(**batch.inputs, **self._forward_kwargs)

        if self.stack is None:
            raise ValueError(
                "capture_prefix needs a layer stack (level_of gives level 0, nothing to capture, without one)"
            )
        captured, out = capture(self.model, self.stack, keys, run_to_end, forward)
        return captured, None if out is None else logits_of(out)

    def logits(
        self,
        batch: Batch,
        repeats: int = 1,
        key: CacheKey = (0, False),
        cache: torch.Tensor | None = None,
        every_token: bool = False,
    ) -> torch.Tensor:
        """Outputs for ``repeats`` copies of ``batch`` as the objective shapes them (first axis = copy; for the
        set's loss (K, M, V) at the M scored positions or (K, B, C)), starting from ``cache`` at ``key`` =
        (level, via_norm) (see ``surgery.skip_layers``; ``capture_prefix`` fills the cache). Gradients flow
        when the caller enables them. The last layer runs only at the tokens the head reads where the engine
        checked that this matches (one condition per forward); ``every_token`` runs it at every token, for a caller
        whose hooks read the last layer's norms at every token."""
        inputs = batch.inputs if repeats == 1 else {k: v.repeat(repeats, 1) for k, v in batch.inputs.items()}
        scored = self._scored(batch, repeats)
        last_rows = None
        if self._entry is not None and repeats == 1 and not every_token and self.stack is not None:
            if key[0] < len(self.stack.layers):  # the last layer runs (it is not a stub)
                last_rows = self._last_rows(batch, scored)
        with skip_layers(self.stack, key, cache, repeats), self._gathering(scored, last_rows):
            out = self.model(**inputs, **self._forward_kwargs)
        return self._shape_logits(logits_of(out), batch, repeats, scored)

    def _scored(self, batch: Batch, repeats: int) -> torch.Tensor | None:
        return scored_positions(batch, repeats)

    def _last_rows(self, batch: Batch, scored: torch.Tensor | None) -> torch.Tensor | None:
        """The flat token indices the head reads: the scored tokens, or each example's first token."""
        if self.eval_set.kind != "classification":
            return scored
        width = batch.inputs["input_ids"].shape[1]
        return torch.arange(batch.size, device=self.device) * width

    def _shape_logits(self, logits: torch.Tensor, batch: Batch, repeats: int, scored) -> torch.Tensor:
        return self.objective.shape(logits, batch, repeats, scored, self._gathered)

    # ---------------------------------------------------------------- scoring
    def score(self, outputs: torch.Tensor, batch: Batch) -> dict:
        """Per condition (first axis of ``outputs``, from ``logits``): the objective's summed ``loss_sum`` (K,)
        on the device and the ``count``."""
        return self.objective.score(outputs, batch)

    # ---------------------------------------------------------------- running
    def plan(self, conditions: Sequence[Condition]) -> list[Plan]:
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
            plans.append(Plan(i, cond, sites, *self.level_of(sites)))
        return plans

    def level_of(self, sites: Sequence[NormSite]) -> CacheKey:
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

    def _span_stop(self, plans: Sequence[Plan], start: int) -> int:
        """End of the next span of examples: as many whole batches as the prefix cache budget holds."""
        n = len(self.eval_set)
        keys = {p.cache_key for p in plans if p.level > 0}
        if not keys:
            return n  # nothing to cache: every condition runs over the whole set under one context
        per_example = len(keys) * self.eval_set.input_ids.shape[1] * self._hidden * 4
        batches = max(1, self.cache_budget_bytes // (per_example * self.batch_size))
        return min(n, start + batches * self.batch_size)

    def _run_span(self, plans: Sequence[Plan], start: int, stop: int) -> dict[int, Total]:
        """All ``plans`` on examples [start, stop): the intact prefix of each batch once, then condition by
        condition (each condition's context entered once for all the span's batches)."""
        batches = [self.eval_set.batch(i, min(i + self.batch_size, stop)) for i in range(start, stop, self.batch_size)]
        totals = {p.index: Total() for p in plans}
        keys = sorted({p.cache_key for p in plans if p.level > 0})
        caches: list[dict[tuple[int, bool], torch.Tensor]] = [{} for _ in batches]
        with torch.no_grad(), self.autocast():
            intact = [p for p in plans if p.intact] if keys else []
            for b, batch in enumerate(batches if keys else []):
                scored = self._scored(batch, 1)
                caches[b], logits = self.capture_prefix(batch, keys, run_to_end=bool(intact), scored=scored)
                if intact:
                    assert logits is not None  # run_to_end: the forward was not stopped
                    score = self.score(self._shape_logits(logits, batch, 1, scored), batch)
                    for p in intact:
                        totals[p.index].add(score, 0)
            done = {p.index for p in intact}
            todo = [p for p in plans if p.index not in done]
            for key in sorted({p.cache_key for p in todo}):
                group = [p for p in todo if p.cache_key == key]
                for i in range(0, len(group), self.conditions_per_forward):
                    chunk = group[i : i + self.conditions_per_forward]
                    context = (
                        chunk[0].condition.apply(self.sites)
                        if len(chunk) == 1
                        else ConditionsInOneForward(self.model, [(p.condition, p.sites) for p in chunk])
                    )
                    with context:
                        for b, batch in enumerate(batches):
                            score = self.score(self.logits(batch, len(chunk), key, caches[b].get(key)), batch)
                            for j, p in enumerate(chunk):
                                totals[p.index].add(score, j)
        return totals

    def _run_plans(self, plans: Sequence[Plan]) -> list[dict]:
        """``plans`` over the whole eval set, span by span, halving the batch (or K) on out-of-memory.

        Conditions that start from a cached layer input (with the intact model, whose forward fills the
        cache) go in spans the cache budget holds; the others in one span over the whole set.
        """
        totals = {p.index: Total() for p in plans}
        uses_cache = any(p.level > 0 for p in plans)
        groups = [
            [p for p in plans if p.level == 0 and not (uses_cache and p.intact)],
            [p for p in plans if p.level > 0 or (uses_cache and p.intact)],
        ]
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
        return [self.objective.finish(totals[p.index]) for p in plans]

    def _back_off(self, exc: BaseException) -> None:
        self.batch_size, self.conditions_per_forward, what = back_off(
            exc, self.device, self.batch_size, self.conditions_per_forward
        )
        self.backoffs += 1
        log.warning("out of memory (%s); retrying with %s", str(exc).splitlines()[0][:120], what)

    def run(
        self,
        conditions: Sequence[Condition],
        progress: bool = True,
        on_chunk: Callable[[list[tuple[Condition, dict]]], None] | None = None,
    ) -> list[dict]:
        """Metrics for each condition, in order; ``on_chunk`` gets each finished chunk's (condition, metrics)."""
        plans = self.plan(conditions)
        results: dict[int, dict] = {}
        bar = progress_bar(len(plans), progress)
        try:
            for i in range(0, len(plans), self.chunk_size):
                chunk = plans[i : i + self.chunk_size]
                for plan, res in zip(chunk, self._run_plans(chunk)):
                    results[plan.index] = res
                if on_chunk is not None:
                    on_chunk([(p.condition, results[p.index]) for p in chunk])
                bar.update(len(chunk))
        finally:
            bar.close()
        return [results[i] for i in range(len(plans))]

    def evaluate(self, condition: Condition | None = None) -> dict:
        """Metrics of one condition (None: the intact model)."""
        return self.run([condition or Condition("none")], progress=False)[0]


def _autocast_choice(autocast, device: torch.device) -> torch.dtype | None:
    """The engine's ``autocast`` argument as a dtype (None: fp32); see the class docstring."""
    if autocast == "auto":
        return default_autocast_dtype(device)
    if autocast is None or autocast == "fp32" or autocast == torch.float32:
        return None
    if isinstance(autocast, torch.dtype):
        return autocast
    raise ValueError(f"autocast must be 'auto', 'fp32', None or a torch dtype (got {autocast!r}).")
