"""The interactive explorer: switch hidden dims off in chosen LayerNorms and watch the model break.

Three layers, so that everything but the wiring is testable without a browser:

* ``ExplorerState``: what the controls say (dims, layer range, site roles, zero/mean, sentence).
* ``Explorer``: the model side. ``compute_view(state)`` returns the numbers and tables for a
  state (MLM loss on a small fixed eval set and its change from the intact model, top-k
  fill-in-the-blank predictions intact vs ablated; for an encoder without an MLM head, the
  cosine between ablated and intact sentence embeddings; for a causal LM, the causal-LM loss and
  next-token predictions for the user's text); ``figure(state)`` draws the per-layer
  LayerNorm parameters with the disabled dims marked. Intact results are computed once and
  cached, every ablation runs inside ``Condition.apply`` (restored on exit).
* ``ExplorerWidget``: ipywidgets controls wired to the explorer through a ``Coalescer``, so
  a burst of slider moves computes only the latest state.

Displaying an ``Explorer`` in JupyterLab shows the live widget; a frontend without widgets
(papermill, nbconvert, GitHub) shows the static HTML view of the same state instead.

Example:
    >>> ex = Explorer(model, tokenizer, texts)                 # doctest: +SKIP
    >>> ex                                                      # live widget in JupyterLab  # doctest: +SKIP
    >>> view = ex.compute_view(ex.state_with(dims=ex.outlier_dims))  # doctest: +SKIP
    >>> view["loss"] - view["loss_intact"]                      # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import io
import json
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Sequence

import pandas as pd
import torch

from .ablation import MODES, Condition
from .fill_mask import count_blanks, fill_mask, has_mlm_head, side_by_side
from .next_token import CAUSAL_MODEL_TYPES, is_causal_lm, next_tokens
from .norms import ROLES, NormSite, disabled_fill, find_norm_sites, select_sites

log = logging.getLogger(__name__)

DEFAULT_SENTENCE = "the movie was [MASK] and the acting was [MASK] ."
DEFAULT_PROMPT = "The movie was"  # a causal LM continues the text: no blanks
LM_LABELS = {"mlm": ("MLM loss", "masked tokens"), "causal": ("causal-LM loss", "next tokens")}
SHORT_ROLE_LABELS = {"embeddings": "emb", "attention_output": "attn", "block_output": "block",
                     "cross_attention_output": "cross", "pre_attention": "pre-attn", "pre_cross_attention": "pre-cross",
                     "pre_ffn": "pre-FFN", "pre_parallel": "pre-par", "post_attention": "post-attn",
                     "post_cross_attention": "post-cross", "post_ffn": "post-FFN", "qk_norm": "q/k", "inner": "inner",
                     "final": "final", "head": "head"}
PANEL_ROLES = ("block_output", "pre_ffn", "pre_parallel", "pre_attention", "attention_output")  # first present
ROLE_LABELS = {"embeddings": "embeddings", "attention_output": "attention output", "block_output": "block output",
               "cross_attention_output": "cross-attention output", "pre_attention": "pre-attention",
               "pre_cross_attention": "pre-cross-attention", "pre_ffn": "pre-FFN", "pre_parallel": "pre-parallel",
               "post_attention": "post-attention", "post_cross_attention": "post-cross-attention",
               "post_ffn": "post-FFN", "qk_norm": "query/key", "inner": "inner", "final": "final", "head": "LM head"}


# ----------------------------------------------------------------------------- state
@dataclass(frozen=True)
class ExplorerState:
    """What the controls say; hashable, so views can be cached by state.

    dims: hidden dims switched off (sorted, unique; empty: intact model).
    layers: first and last layer (inclusive) whose norms are edited; norms outside the layers
        (embeddings, LM head) ignore it. None: all layers.
    roles: norm-site roles edited (see ``norms.ROLES``); empty: nothing is edited.
    mode: 'zero' (weight and bias set to 0) or 'mean' (set to the site's mean).
    sentence: the user's sentence with [MASK] blanks.
    """

    dims: tuple[int, ...] = ()
    layers: tuple[int, int] | None = None
    roles: tuple[str, ...] = ("block_output",)
    mode: str = "zero"
    sentence: str = DEFAULT_SENTENCE

    def __post_init__(self):
        dims = self.dims
        if isinstance(dims, (str, bytes)) or not isinstance(dims, Iterable):
            raise TypeError(f"dims must be a sequence of integers, got {dims!r}.")
        object.__setattr__(self, "dims", tuple(sorted({int(d) for d in dims})))
        roles = (self.roles,) if isinstance(self.roles, str) else tuple(self.roles)
        unknown = [r for r in roles if r not in ROLES]
        if unknown:
            raise ValueError(f"Unknown site role(s) {unknown}; pick from {list(ROLES)}.")
        object.__setattr__(self, "roles", tuple(r for r in ROLES if r in roles))
        if self.layers is not None:
            first, last = (int(v) for v in self.layers)
            if first > last:
                raise ValueError(f"layers must be (first, last) with first <= last, got {self.layers}.")
            object.__setattr__(self, "layers", (first, last))
        if self.mode not in MODES:
            raise ValueError(f"Unknown mode {self.mode!r}; pick one of {MODES}.")
        object.__setattr__(self, "sentence", str(self.sentence))

    @property
    def ablates(self) -> bool:
        """True when this state edits the model at all."""
        return bool(self.dims) and bool(self.roles)

    @property
    def model_key(self) -> tuple:
        """The part of the state that decides the model's parameters (not the sentence)."""
        if not self.ablates:
            return ()
        return (self.dims, self.layers, self.roles, self.mode)

    def condition(self) -> Condition:
        """This state as an ablation ``Condition`` (no dims when it edits nothing)."""
        layers = None if self.layers is None else tuple(range(self.layers[0], self.layers[1] + 1))
        dims = self.dims if self.ablates else ()
        roles = self.roles or ("block_output",)
        return Condition("explorer", dims, roles, layers, self.mode)

    def with_changes(self, **changes) -> "ExplorerState":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def describe(self) -> str:
        if not self.dims:
            return "intact model (no dim switched off)"
        if not self.roles:
            return "intact model (no site role chosen)"
        layers = "all layers" if self.layers is None else f"layers {self.layers[0]}-{self.layers[1]}"
        return (f"dims {' '.join(map(str, self.dims))} set to {'0' if self.mode == 'zero' else 'the mean'} in "
                f"{'+'.join(self.roles)} norms, {layers}")


# ----------------------------------------------------------------------------- coalescing
_NOTHING = object()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class Coalescer:
    """Run ``compute`` on the latest submitted value only, after ``delay_s`` of quiet; hand it to ``deliver``.

    Inside a running asyncio loop (a Jupyter kernel, where widget events arrive) ``submit``
    returns at once and (re)starts a timer; when it fires, the newest pending value is computed
    and delivered. Values superseded before their turn are never computed, and a result whose
    value was superseded while it was computed is not delivered. Computing happens on the loop
    itself (no threads): the model is never used by two computations at once, and events
    that arrive during a computation wait in the kernel's queue and then only replace the
    pending value. Without a running loop (plain Python, tests) ``submit`` computes at once.

    Counters: ``submitted``, ``computed``, ``delivered``, ``superseded``.

    Example:
        >>> c = Coalescer(lambda x: x * 2, print, delay_s=0.0)
        >>> c.submit(3)
        6
    """

    def __init__(self, compute: Callable[[Any], Any], deliver: Callable[[Any], None], delay_s: float = 0.15,
                 on_error: Callable[[BaseException, Any], None] | None = None,
                 loop: asyncio.AbstractEventLoop | None = None):
        if delay_s < 0:
            raise ValueError(f"delay_s must be >= 0, got {delay_s}.")
        self.compute, self.deliver, self.delay_s = compute, deliver, float(delay_s)
        self.on_error = on_error
        self.loop = loop
        self._pending: Any = _NOTHING
        self._timer: asyncio.TimerHandle | None = None
        self._busy = False
        self.submitted = self.computed = self.delivered = self.superseded = 0

    @property
    def idle(self) -> bool:
        """True when nothing is pending, scheduled or being computed."""
        return self._pending is _NOTHING and self._timer is None and not self._busy

    def submit(self, value: Any) -> None:
        """Ask for ``value`` to be computed; replaces any value still waiting."""
        if self._pending is not _NOTHING:
            self.superseded += 1
        self._pending = value
        self.submitted += 1
        loop = self.loop or _running_loop()
        if loop is None:
            self._drain()
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_later(self.delay_s, self._fire)

    def flush(self) -> None:
        """Compute and deliver the pending value now (if any), cancelling the timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._drain()

    def _fire(self) -> None:
        self._timer = None
        self._drain()

    def _drain(self) -> None:
        if self._busy:  # re-entered from inside compute/deliver: the running drain picks the value up
            return
        self._busy = True
        try:
            while self._pending is not _NOTHING:
                value, self._pending = self._pending, _NOTHING
                try:
                    result = self.compute(value)
                except Exception as exc:  # noqa: BLE001 - reported to the UI, the explorer keeps running
                    self.computed += 1
                    if self.on_error is None:
                        raise
                    self.on_error(exc, value)
                    continue
                self.computed += 1
                if self._pending is not _NOTHING:  # superseded while it was computed: drop it
                    continue
                self.deliver(result)
                self.delivered += 1
        finally:
            self._busy = False


# ----------------------------------------------------------------------------- the model side
def load_for_explorer(name_or_path: str, device: str | None = "auto"):
    """Load a model with its MLM head when the checkpoint has one, else the bare encoder (e.g. MiniLM).

    Example:
        >>> model, tokenizer = load_for_explorer("bbmini")  # doctest: +SKIP
    """
    from transformers import AutoConfig

    from .loading import load_model, resolve

    try:
        config = AutoConfig.from_pretrained(resolve(name_or_path))
    except (OSError, ValueError):
        return load_model(name_or_path, head="mlm", device=device)  # raises ModelLoadError saying why
    architectures = getattr(config, "architectures", None) or []
    head = "mlm" if any("MaskedLM" in a or "ForPreTraining" in a for a in architectures) else "base"
    if getattr(config, "model_type", "") in CAUSAL_MODEL_TYPES:
        head = "causal-lm"  # a decoder: next-token predictions instead of fill-in-the-blank
    return load_model(name_or_path, head=head, device=device)


def candidate_dims(model: torch.nn.Module, tokenizer, count: int, **rule_options) -> tuple[list[int], list[int]]:
    """(``count`` dims to offer as toggles, the default dims to ablate among them), both from the one rule
    (``detection.detect``): the default dims first, then the next strongest candidates by its rank combination.
    ``tokenizer`` None: parameters only."""
    from .detection import detect

    found = detect(model, tokenizer, **rule_options)
    dims = list(found.dims[:count])
    for d in found.table.dim:
        if len(dims) >= count:
            break
        if int(d) not in dims:
            dims.append(int(d))
    return dims, [d for d in found.dims if d in dims]


class Explorer:
    """One model, a small fixed eval set and cached intact results; computes the view of any state.

    model, tokenizer: a masked-LM (BertForMaskedLM, ...), or an encoder without an MLM head (MiniLM, a
        fine-tuned classifier: its encoder's sentence embeddings are compared); see ``load_for_explorer``.
    texts: the fixed eval texts (masked once, seeded) for the loss, or embedded for the cosine.
    sentence: the initial fill-in-the-blank sentence. roles: roles edited at the start.
    n_top_dims: how many candidate dims get a toggle. top_k: predictions per blank.
    max_length, batch_size, mask_prob, seed: of the eval set. k: the outlier criterion (sigmas).
    outlier_roles: roles whose parameters the rule weighs (None: every site, the project default; the
    candidate dims come from ``detection.detect``, parameters and activations). debounce_s: quiet time before
    the widget computes. cache_size: computed views kept (by state). cpu_threads: torch threads while the
    explorer computes on a CPU (restored after each computation; None or 0: leave torch's setting). On a
    small CPU shared with other work, 1 is several times faster than oversubscribed threads.

    Example:
        >>> ex = Explorer(model, tokenizer, texts[:32])  # doctest: +SKIP
        >>> ex.compute_view(ex.state_with(dims=ex.outlier_dims))["loss_delta"]  # doctest: +SKIP
    """

    def __init__(self, model: torch.nn.Module, tokenizer, texts: Sequence[str], *, sentence: str = DEFAULT_SENTENCE,
                 roles: Sequence[str] = ("block_output",), n_top_dims: int = 6, top_k: int = 5,
                 max_length: int = 64, batch_size: int = 64, mask_prob: float = 0.15, seed: int = 42,
                 k: float = 3.0, outlier_roles: Sequence[str] | None = None, debounce_s: float = 0.15,
                 cache_size: int = 64, cpu_threads: int | None = None):
        texts = list(texts)
        if not texts:
            raise ValueError("texts is empty: the explorer needs a few eval texts (e.g. 16 held-out reviews).")
        self.model, self.tokenizer, self.texts = model.eval(), tokenizer, texts
        self.top_k, self.max_length, self.batch_size = int(top_k), int(max_length), int(batch_size)
        self.debounce_s = float(debounce_s)
        self.cpu_threads = int(cpu_threads or 0)
        self.sites = find_norm_sites(model)
        self.roles_available = tuple(r for r in ROLES if any(s.role == r for s in self.sites))
        self.n_layers = 1 + max((s.layer for s in self.sites if s.layer is not None), default=0)
        self.hidden_size = min(s.size for s in self.sites)
        rule = {"k": k} if outlier_roles is None else {
            "k": k, "param_roles": [r for r in outlier_roles if r in self.roles_available] or [self.roles_available[0]]}
        self.top_dims, self.outlier_dims = candidate_dims(model, tokenizer, n_top_dims, **rule)
        if is_causal_lm(model):
            self.kind = "causal"
        else:
            self.kind = "mlm" if has_mlm_head(model) and tokenizer.mask_token is not None else "embeddings"
        if self.kind == "causal" and sentence == DEFAULT_SENTENCE:
            sentence = DEFAULT_PROMPT
        if tuple(roles) == ("block_output",) and "block_output" not in self.roles_available:
            roles = tuple(r for r in ("pre_attention", "pre_ffn") if r in self.roles_available) or roles  # pre-LN
        missing = [r for r in ([roles] if isinstance(roles, str) else roles) if r not in self.roles_available]
        if missing:
            raise ValueError(f"This model has no {missing} norm sites; it has {list(self.roles_available)}.")
        self.initial = ExplorerState((), (0, self.n_layers - 1), roles, "zero", sentence)
        self._views: OrderedDict[ExplorerState, dict] = OrderedDict()
        self._cache_size = int(cache_size)
        self._sentence_cache: dict[str, Any] = {}
        self._figures: dict[tuple, Any] = {}
        self._pngs: dict[tuple, bytes] = {}
        with self.threads():
            self._prepare(texts, max_length, mask_prob, seed, batch_size)

    def _prepare(self, texts, max_length, mask_prob, seed, batch_size) -> None:
        """The fixed eval set and the intact results every view compares with."""
        model, tokenizer = self.model, self.tokenizer
        start = time.perf_counter()
        if self.kind in LM_LABELS:
            from .engine import AblationEngine
            from .masking import prepare_causal_eval, prepare_mlm_eval

            device = next(model.parameters()).device
            if self.kind == "mlm":
                self.eval_set = prepare_mlm_eval(tokenizer, texts, max_length=max_length, mask_prob=mask_prob,
                                                 seed=seed, batch_size=batch_size, device=device)
            else:
                self.eval_set = prepare_causal_eval(tokenizer, texts, max_length=max_length, batch_size=batch_size,
                                                    device=device)
            self.engine = AblationEngine(model, self.eval_set, self.sites, prefix_cache=True)
            self.intact_metrics = self.engine.evaluate()
        else:
            self.eval_set = self.engine = None
            self.intact_embeddings = self._embeddings(texts)
            self.intact_metrics = {}
        log.info("explorer ready in %.2fs (%s, %d texts)", time.perf_counter() - start, self.kind, len(texts))

    @contextlib.contextmanager
    def threads(self):
        """While active, torch uses ``cpu_threads`` threads (when set and the model is on the CPU)."""
        if not self.cpu_threads or next(self.model.parameters()).device.type != "cpu":
            yield
            return
        before = torch.get_num_threads()
        torch.set_num_threads(self.cpu_threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    # ------------------------------------------------------------- states
    def state_with(self, **changes) -> ExplorerState:
        """The initial state (intact, all layers, the chosen roles) with some fields changed."""
        return self.initial.with_changes(**changes)

    def check_state(self, state: ExplorerState) -> ExplorerState:
        """Raise ValueError naming the problem when ``state`` does not fit this model."""
        bad = [d for d in state.dims if not 0 <= d < self.hidden_size]
        if bad:
            raise ValueError(f"dims {bad} are out of range: the hidden size is {self.hidden_size} "
                             f"(valid: 0..{self.hidden_size - 1}).")
        if state.layers is not None and not (0 <= state.layers[0] <= state.layers[1] < self.n_layers):
            raise ValueError(f"layers {state.layers} are outside this model (0..{self.n_layers - 1}).")
        missing = [r for r in state.roles if r not in self.roles_available]
        if missing:
            raise ValueError(f"This model has no {missing} norm sites; it has {list(self.roles_available)}.")
        return state

    def touched_sites(self, state: ExplorerState) -> list[NormSite]:
        """The norm modules this state edits (empty for an intact state)."""
        if not state.ablates:
            return []
        return state.condition().sites(self.sites)

    # ------------------------------------------------------------- computing
    def _embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        from .embeddings import sentence_embeddings

        encoder = getattr(self.model, "base_model", self.model)  # a classifier's encoder: its hidden states
        return sentence_embeddings(encoder, self.tokenizer, list(texts), batch_size=self.batch_size,
                                   max_length=self.max_length)

    def _predict(self, sentence: str) -> pd.DataFrame:
        if self.kind == "causal":
            return next_tokens(self.model, self.tokenizer, sentence, top_k=self.top_k, max_length=self.max_length)
        return fill_mask(self.model, self.tokenizer, sentence, top_k=self.top_k, max_length=self.max_length)

    def _sentence_intact(self, sentence: str):
        """Intact predictions (MLM) or embedding (encoder) of ``sentence``, cached; None when it has no blank."""
        if sentence not in self._sentence_cache:
            if self.kind == "mlm":
                value = self._predict(sentence) if count_blanks(sentence, self.tokenizer) else None
            elif self.kind == "causal":
                value = self._predict(sentence) if sentence.strip() else None
            else:
                value = self._embeddings([sentence]) if sentence.strip() else None
            if len(self._sentence_cache) > 256:
                self._sentence_cache.clear()
            self._sentence_cache[sentence] = value
        return self._sentence_cache[sentence]

    def compute_view(self, state: ExplorerState, use_cache: bool = True) -> dict:
        """Numbers and tables of ``state``: a dict with the keys below (None where they do not apply).

        state, kind ('mlm' / 'causal' / 'embeddings'), description, sites (names edited), n_sites, note (a
        message for the user, '' when none), loss_intact, loss, loss_delta, perplexity_intact,
        perplexity, tokens (scored masked tokens), cosine_mean, cosine_min (embeddings of the eval
        texts vs intact), sentence_cosine, predictions (``side_by_side`` table), changed_predictions
        (count of ranks whose token changed), seconds, cached.

        Example:
            >>> view = ex.compute_view(ex.state_with(dims=(308,)))  # doctest: +SKIP
        """
        with self.threads():
            return self._compute_view(state, use_cache)

    def _compute_view(self, state: ExplorerState, use_cache: bool) -> dict:
        state = self.check_state(state)
        if use_cache and state in self._views:
            self._views.move_to_end(state)
            return {**self._views[state], "cached": True}
        start = time.perf_counter()
        sites = self.touched_sites(state)
        condition = state.condition()
        view: dict[str, Any] = {
            "state": state, "kind": self.kind, "description": state.describe(), "sites": [s.name for s in sites],
            "n_sites": len(sites), "note": "", "loss_intact": None, "loss": None, "loss_delta": None,
            "perplexity_intact": None, "perplexity": None, "tokens": None, "cosine_mean": None, "cosine_min": None,
            "sentence_cosine": None, "predictions": None, "changed_predictions": None, "cached": False}
        notes = []
        if state.dims and not state.roles:
            notes.append("No site role is ticked, so nothing is switched off.")
        sentence_intact = self._sentence_intact(state.sentence)
        if self.kind in LM_LABELS:
            if sentence_intact is None:
                notes.append("Your sentence has no [MASK]: type [MASK] where a word should be guessed."
                             if self.kind == "mlm" else "Type the beginning of a sentence: the model predicts "
                             "the next token.")
            metrics = self.engine.evaluate(condition) if state.ablates else self.intact_metrics
            if not state.ablates and not use_cache:
                metrics = self.engine.evaluate(condition)
            view.update(loss_intact=self.intact_metrics["eval_loss"], loss=metrics["eval_loss"],
                        loss_delta=metrics["eval_loss"] - self.intact_metrics["eval_loss"],
                        perplexity_intact=self.intact_metrics["perplexity"], perplexity=metrics["perplexity"],
                        tokens=metrics["tokens"])
            if sentence_intact is not None:
                if state.ablates or not use_cache:
                    with condition.apply(self.sites):
                        ablated = self._predict(state.sentence)
                else:
                    ablated = sentence_intact
                table = side_by_side(sentence_intact, ablated)
                view.update(predictions=table, changed_predictions=int((~table["same"]).sum()))
        else:
            if state.ablates or not use_cache:
                with condition.apply(self.sites):
                    ablated = self._embeddings(self.texts)
                    sentence_ablated = self._embeddings([state.sentence]) if sentence_intact is not None else None
            else:
                ablated, sentence_ablated = self.intact_embeddings, sentence_intact
            cos = torch.nn.functional.cosine_similarity(self.intact_embeddings, ablated, dim=-1)
            view.update(cosine_mean=float(cos.mean()), cosine_min=float(cos.min()))
            if sentence_ablated is not None:
                view["sentence_cosine"] = float(torch.nn.functional.cosine_similarity(
                    sentence_intact, sentence_ablated, dim=-1)[0])
            notes.append("This encoder has no MLM head: the view compares its sentence embeddings with the "
                         "intact model's instead of losses and predictions.")
        view["note"] = " ".join(notes)
        view["seconds"] = time.perf_counter() - start
        if use_cache:
            self._views[state] = view
            while len(self._views) > self._cache_size:
                self._views.popitem(last=False)
        return view

    def recheck_intact(self) -> bool:
        """Recompute the intact results from scratch (after any ablations) and compare them bit for bit
        with those cached at the start: True when every touched parameter came back exactly."""
        with self.threads():  # same thread count as the cached results: reductions split the same way
            fresh = self.compute_view(self.initial, use_cache=False)
            if self.kind in LM_LABELS:
                same = fresh["loss"] == self.intact_metrics["eval_loss"]
                cached = self._sentence_intact(self.initial.sentence)
                if cached is not None:
                    same = same and self._predict(self.initial.sentence).equals(cached)
                return bool(same)
            return bool(torch.equal(self._embeddings(self.texts), self.intact_embeddings))

    def summarize(self, view: dict) -> tuple[str, bool, str]:
        """(claim, held, evidence) for ``RunRecorder.finding``: the ablated view hurts the model and the
        intact model comes back exactly when the dims are switched on again (recomputed, not cached)."""
        restored = self.recheck_intact()
        dims = " ".join(map(str, view["state"].dims))
        if self.kind in LM_LABELS:
            loss_name, scored = LM_LABELS[self.kind]
            table = view["predictions"]
            where = f"{table.blank.nunique()} blank(s)" if self.kind == "mlm" else "the next token"
            guesses = (("no [MASK] in the sentence" if self.kind == "mlm" else "no text to continue") if table is None
                       else f"{view['changed_predictions']} of the {len(table)} top-{self.top_k} guesses for "
                       f"{where} changed")
            claim = (f"Switching the top outlier dims off raises the {loss_name}; switching them on again restores "
                     f"it exactly")
            held = bool(view["loss_delta"] is not None and view["loss_delta"] > 0 and restored)
            evidence = (f"dims {dims} off in {view['n_sites']} norm modules: {loss_name} {view['loss_intact']:.4f} -> "
                        f"{view['loss']:.4f} ({view['loss_delta']:+.4f}) on {view['tokens']} {scored} of "
                        f"{len(self.texts)} texts; {guesses}; intact loss and predictions recomputed afterwards "
                        f"identical: {restored}.")
        else:
            claim = "Switching the top outlier dims off moves sentence embeddings; switching them on again restores them exactly"
            held = bool(view["cosine_mean"] is not None and view["cosine_mean"] < 1.0 and restored)
            evidence = (f"dims {dims} off in {view['n_sites']} norm modules: mean cosine to the intact embeddings "
                        f"{view['cosine_mean']:.4f} (min {view['cosine_min']:.4f}) over {len(self.texts)} texts; "
                        f"intact embeddings recomputed afterwards identical: {restored}.")
        return claim, held, evidence

    # ------------------------------------------------------------- figure
    def plotted_sites(self) -> list[NormSite]:
        """Sites drawn in the figure, the same for every state (so a new state only redraws its marks): one
        panel per layer for the layers' output norm (block output; pre-FFN in a pre-LN model) plus the norms
        outside the layers (embeddings, final, LM head). A layer's panel shows the dims disabled in ANY of
        that layer's norms, its label says which."""
        layered = next((r for r in PANEL_ROLES if r in self.roles_available), None)
        return [s for s in self.sites if s.layer is None or s.role == layered]

    def figure(self, state: ExplorerState):
        """Per-layer LayerNorm weight and bias, candidate dims dotted, the disabled dims marked where they are
        disabled (crimson band; a cross at the value the drawn parameters are set to); panels the state leaves
        alone are faded. A new Figure, for saving (``figure_png`` is the fast path for the widget).

        Example:
            >>> rec.figure(ex.figure(ex.state_with(dims=ex.outlier_dims)), "explorer")  # doctest: +SKIP
        """
        import matplotlib.pyplot as plt

        from .plotting import norm_parameter_lines

        state = self.check_state(state)
        sites = self.plotted_sites()
        fig = norm_parameter_lines(sites, self.top_dims, title=" ")
        plt.close(fig)  # kept out of pyplot's registry: a notebook shows it only when asked to
        fig.suptitle("")
        self._marks(fig, sites, state)
        return fig

    def figure_png(self, state: ExplorerState, dpi: int = 80) -> bytes:
        """``figure(state)`` as PNG bytes, fast: the parameter lines are drawn once and kept as a bitmap; a
        new state only draws its marks on a copy of it (Agg blitting). Cached by state."""
        state = self.check_state(state)
        key = (state.model_key, dpi)
        if key in self._pngs:
            return self._pngs[key]
        sites = self.plotted_sites()
        fig, canvas, background = self._base_figure(sites, dpi)
        canvas.restore_region(background)
        marks = self._marks(fig, sites, state)
        try:
            for artist in marks:
                (artist.axes or fig).draw_artist(artist)
            png = _rgba_to_png(canvas)
        finally:
            for artist in marks:
                artist.remove()
        self._pngs[key] = png
        if len(self._pngs) > self._cache_size:
            self._pngs.pop(next(iter(self._pngs)))
        return png

    def _base_figure(self, sites: Sequence[NormSite], dpi: int):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        import matplotlib.pyplot as plt

        from .plotting import norm_parameter_lines

        if dpi not in self._figures:
            fig = norm_parameter_lines(sites, self.top_dims, title=" ")
            plt.close(fig)
            fig.suptitle("")
            fig.set_dpi(dpi)
            canvas = FigureCanvasAgg(fig)
            canvas.draw()
            self._figures[dpi] = (fig, canvas, canvas.copy_from_bbox(fig.bbox))
        return self._figures[dpi]

    def _marks(self, fig, sites: Sequence[NormSite], state: ExplorerState) -> list:
        """Add the state's marks to ``fig`` (one axes per site of ``sites``, in order) and return them."""
        from matplotlib.patches import Rectangle

        touched = self.touched_sites(state)
        by_panel: dict[tuple, list[str]] = {}
        for t in touched:
            key = (t.stack, t.layer) if t.layer is not None else (t.name,)
            by_panel.setdefault(key, []).append(SHORT_ROLE_LABELS.get(t.role, t.role))
        names = {t.name for t in touched}
        half = max(0.5, self.hidden_size / 200)  # band half-width in dims: visible at any hidden size
        marks = []
        for ax, site in zip(fig.axes, sites):
            roles = by_panel.get((site.stack, site.layer) if site.layer is not None else (site.name,))
            if not roles:
                if touched:
                    marks.append(ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, color="white",
                                                        alpha=0.55, lw=0, zorder=5)))
                continue
            marks.append(ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, fill=False,
                                                edgecolor="crimson", lw=2.5, clip_on=False, zorder=6)))
            marks.append(ax.text(0.99, 0.97, "off: " + ", ".join(roles), transform=ax.transAxes, ha="right",
                                 va="top", color="crimson", fontsize=7, zorder=8,
                                 bbox={"facecolor": "white", "alpha": 0.85, "linewidth": 0, "pad": 1.5}))
            for d in state.dims:
                marks.append(ax.axvspan(d - half, d + half, color="crimson", alpha=0.3, lw=0, zorder=4))
                if site.name not in names:
                    continue
                for param in (site.weight, site.bias):
                    if param is not None:
                        new = float(disabled_fill(site, param, state.mode)) if site.can_disable else float("nan")
                        marks.extend(ax.plot([d], [new], marker="x", color="crimson", ms=6, mew=2, zorder=7))
        marks.append(fig.text(0.5, 0.995, f"LayerNorm weight and bias per dim · {state.describe()}", ha="center",
                              va="top", fontsize=9, color="crimson" if touched else "black"))
        return marks

    # ------------------------------------------------------------- display
    def widget(self) -> "ExplorerWidget":
        """The live ipywidgets explorer (made once, then reused)."""
        if getattr(self, "_widget", None) is None:
            self._widget = ExplorerWidget(self)
        return self._widget

    def static_html(self, state: ExplorerState | None = None) -> str:
        """A self-contained HTML view (tables and the figure inline) for frontends without widgets."""
        state = state or self.current_state()
        view = self.compute_view(state)
        png = base64.b64encode(self.figure_png(state, dpi=80)).decode()
        return (f"<div class='bb-explorer-static'>{view_html(view)}"
                f"<img alt='LayerNorm parameters' src='data:image/png;base64,{png}'/></div>")

    def current_state(self) -> ExplorerState:
        widget = getattr(self, "_widget", None)
        return widget.state() if widget is not None else self.initial

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        state = self.current_state()
        view = self.compute_view(state)
        bundle = {"text/plain": view_text(view), "text/html": self.static_html(state)}
        try:
            widget_bundle = self.widget()._repr_mimebundle_(include=include, exclude=exclude) or {}
        except Exception as exc:  # noqa: BLE001 - no widget support: the static view is all there is
            log.info("no live widget (%s); showing the static view", exc)
            widget_bundle = {}
        bundle.update({k: v for k, v in widget_bundle.items() if k != "text/plain"})
        return bundle


# ----------------------------------------------------------------------------- rendering views
def _rgba_to_png(canvas) -> bytes:
    """The Agg canvas' pixels as a palette PNG: a line plot needs few colours, and a 128-colour palette with
    the fastest zlib level encodes in about half the time of full RGBA, at well under half the bytes."""
    from PIL import Image

    width, height = canvas.get_width_height(physical=True)
    image = Image.frombuffer("RGBA", (width, height), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
    image = image.convert("RGB").quantize(colors=128, method=Image.Quantize.FASTOCTREE)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _fmt(value, spec: str = ".4f") -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def view_table(view: dict) -> pd.DataFrame:
    """One-row tidy summary of a view (for ``RunRecorder.table``)."""
    state = view["state"]
    keys = ("kind", "n_sites", "loss_intact", "loss", "loss_delta", "perplexity_intact", "perplexity", "tokens",
            "cosine_mean", "cosine_min", "sentence_cosine", "changed_predictions")
    row = {"dims": " ".join(map(str, state.dims)), "layers": "all" if state.layers is None else
           f"{state.layers[0]}-{state.layers[1]}", "roles": "+".join(state.roles), "mode": state.mode,
           "sentence": state.sentence, **{k: view[k] for k in keys}}
    return pd.DataFrame([row])


def view_text(view: dict) -> str:
    """Plain-text view: the numbers and, for a masked LM, the predictions table."""
    lines = [f"Explorer: {view['description']} ({view['n_sites']} norm modules edited)"]
    if view["kind"] in LM_LABELS:
        loss_name, scored = LM_LABELS[view["kind"]]
        lines.append(f"{loss_name}: intact {_fmt(view['loss_intact'])} -> now {_fmt(view['loss'])} "
                     f"(change {_fmt(view['loss_delta'], '+.4f')}) on {view['tokens']} {scored}")
        if view["predictions"] is not None:
            lines.append(view["predictions"].to_string(index=False, float_format=lambda p: f"{p:.3f}"))
    else:
        lines.append(f"Sentence-embedding cosine to the intact model: mean {_fmt(view['cosine_mean'])}, "
                     f"min {_fmt(view['cosine_min'])}; your sentence {_fmt(view['sentence_cosine'])}")
    if view["note"]:
        lines.append(view["note"])
    return "\n".join(lines)


def loss_html(view: dict) -> str:
    """The headline numbers as HTML (class names ``bb-loss-*`` / ``bb-cos-*`` for tests and styling)."""
    e = html.escape
    if view["kind"] in LM_LABELS:
        loss_name, scored = LM_LABELS[view["kind"]]
        delta = view["loss_delta"] or 0.0
        color = "crimson" if delta > 1e-9 else ("seagreen" if delta < -1e-9 else "black")
        body = (f"<b>{loss_name}</b> on {view['tokens']} {scored}: intact "
                f"<span class='bb-loss-intact'>{_fmt(view['loss_intact'])}</span> &rarr; now "
                f"<b class='bb-loss-ablated'>{_fmt(view['loss'])}</b> "
                f"(<span class='bb-loss-delta' style='color:{color}'>{_fmt(view['loss_delta'], '+.4f')}</span>; "
                f"perplexity {_fmt(view['perplexity_intact'], '.1f')} &rarr; {_fmt(view['perplexity'], '.1f')})")
    else:
        body = (f"<b>Sentence-embedding cosine to the intact model</b>: mean "
                f"<b class='bb-cos-mean'>{_fmt(view['cosine_mean'])}</b>, min "
                f"<span class='bb-cos-min'>{_fmt(view['cosine_min'])}</span>; your sentence "
                f"<span class='bb-cos-sentence'>{_fmt(view['sentence_cosine'])}</span>")
    desc = f"<div class='bb-desc'>{e(view['description'])} · {view['n_sites']} norm modules edited</div>"
    note = f"<div class='bb-note' style='color:#a35'>{e(view['note'])}</div>" if view["note"] else ""
    return f"<div class='bb-loss'>{body}{desc}{note}</div>"


def predictions_html(view: dict) -> str:
    """Side-by-side top-k predictions as an HTML table (class ``bb-predictions``), changed ranks highlighted."""
    table = view["predictions"]
    if table is None:
        return "<div class='bb-predictions-empty'></div>"
    e = html.escape
    rows = []
    for r in table.itertuples():
        style = "" if r.same else " style='background:#fde2e4'"
        cells = (r.blank, r.rank, e(str(r.intact)), _fmt(r.p_intact, ".3f"), e(str(r.ablated)), _fmt(r.p_ablated, ".3f"))
        rows.append(f"<tr{style}>" + "".join(f"<td style='padding:1px 8px'>{c}</td>" for c in cells) + "</tr>")
    head = "<tr>" + "".join(f"<th style='padding:1px 8px'>{h}</th>" for h in
                            ("blank", "rank", "intact", "p", "ablated", "p")) + "</tr>"
    return (f"<table class='bb-predictions' style='border-collapse:collapse;font-size:12px'>"
            f"<thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>")


def view_html(view: dict) -> str:
    """Loss (or cosine) line plus predictions table, as HTML."""
    return loss_html(view) + predictions_html(view)


# ----------------------------------------------------------------------------- the widget layer
def shown_key(state: ExplorerState) -> str:
    """The controls' state a shown result was computed for, as compact JSON (the status line's
    ``data-shown``): a browser test compares it with the controls to prove the view is fresh."""
    return json.dumps({"dims": sorted(state.dims), "layers": list(state.layers or ()), "roles": sorted(state.roles),
                       "mode": state.mode}, separators=(",", ":"))


class ExplorerWidget:
    """ipywidgets controls wired to an ``Explorer`` through a ``Coalescer`` (see the module docstring).

    Controls: one toggle per candidate dim (plus a field and button to add any dim), a layer-range
    slider, a checkbox per site role, zero/mean, and the sentence. Views: loss line, predictions
    table, the LayerNorm figure and a status line (``data-computed`` / ``data-submitted`` counters).
    """

    def __init__(self, explorer: Explorer):
        import ipywidgets as W

        self.explorer = ex = explorer
        self.W = W
        self.dim_buttons: dict[int, Any] = {}
        self.dim_box = W.HBox(layout=W.Layout(flex_flow="row wrap"))
        for d in ex.top_dims:
            self._add_dim_button(d, value=False)
        self.new_dim = W.BoundedIntText(value=ex.top_dims[0] if ex.top_dims else 0, min=0, max=ex.hidden_size - 1,
                                        description="any dim:", layout=W.Layout(width="170px"))
        self.new_dim.add_class("bb-new-dim")
        self.add_button = W.Button(description="switch off", tooltip="add this dim (switched off)",
                                   layout=W.Layout(width="90px"))
        self.add_button.add_class("bb-add-dim")
        self.add_button.on_click(self._on_add)
        last = ex.n_layers - 1
        self.layers = W.IntRangeSlider(value=(0, last), min=0, max=last, step=1, description="layers:",
                                       continuous_update=True, layout=W.Layout(width="420px"))
        self.layers.add_class("bb-layers")
        self.roles = {}
        for role in ex.roles_available:
            box = W.Checkbox(value=role in ex.initial.roles, description=ROLE_LABELS.get(role, role), indent=False,
                             layout=W.Layout(width="auto"))
            box.add_class(f"bb-role-{role}")
            self.roles[role] = box
        self.mode = W.ToggleButtons(options=[("zero", "zero"), ("mean", "mean")], value="zero",
                                    tooltips=["weight and bias set to 0", "set to the layer's mean"],
                                    style={"button_width": "60px"})
        self.mode.add_class("bb-mode")
        self.sentence = W.Text(value=ex.initial.sentence, description="sentence:", continuous_update=False,
                               placeholder=("the start of a sentence; press Enter" if ex.kind == "causal" else
                                            "a sentence with [MASK]; press Enter"),
                               layout=W.Layout(width="640px"))
        self.sentence.add_class("bb-sentence")
        self.status = W.HTML()
        self.loss = W.HTML()
        self.predictions = W.HTML()
        self.plot = W.Image(format="png", layout=W.Layout(max_width="100%", height="auto", align_self="flex-start",
                                                          object_fit="contain"))
        self.coalescer = Coalescer(self._compute, self._show, delay_s=ex.debounce_s, on_error=self._error)
        header = W.HTML("<b>Switch hidden dims off</b> (toggles: the model's strongest LayerNorm dims; "
                        "crimson = off). Embeddings and LM-head norms ignore the layer range.")
        self.box = W.VBox([
            header, W.HBox([self.dim_box, self.new_dim, self.add_button], layout=W.Layout(flex_flow="row wrap")),
            self.layers, W.HBox([W.Label("site roles:"), *self.roles.values()]),
            W.HBox([W.Label("disabled dims are set to:"), self.mode]), self.sentence, self.status, self.loss,
            self.predictions, self.plot])
        self.box.add_class("bb-explorer")
        for control in (self.layers, self.mode, self.sentence, *self.roles.values()):
            control.observe(self._changed, names="value")
        self._generation = 0
        self._show(self._compute(self.state()))

    # ------------------------------------------------------------- controls
    def _add_dim_button(self, dim: int, value: bool) -> None:
        button = self.W.ToggleButton(value=value, description=str(dim), tooltip=f"switch dim {dim} off",
                                     layout=self.W.Layout(width="64px"))
        button.add_class("bb-dim-toggle")
        button.add_class(f"bb-dim-{dim}")
        button.observe(self._dim_toggled, names="value")
        self._style_dim(button)
        self.dim_buttons[dim] = button
        self.dim_box.children = tuple(self.dim_box.children) + (button,)

    @staticmethod
    def _style_dim(button) -> None:
        button.button_style = "danger" if button.value else ""
        button.icon = "power-off" if button.value else ""

    def _dim_toggled(self, change) -> None:
        self._style_dim(change["owner"])
        self._changed(change)

    def _on_add(self, _button=None) -> None:
        dim = int(self.new_dim.value)
        if dim in self.dim_buttons:
            self.dim_buttons[dim].value = True  # fires the update
            return
        self._add_dim_button(dim, value=True)
        self._changed(None)

    def state(self) -> ExplorerState:
        """The state the controls show now."""
        return ExplorerState(
            dims=tuple(d for d, b in self.dim_buttons.items() if b.value), layers=tuple(self.layers.value),
            roles=tuple(r for r, box in self.roles.items() if box.value), mode=self.mode.value,
            sentence=self.sentence.value)

    def set_state(self, state: ExplorerState) -> None:
        """Move the controls to ``state`` (each change goes through the coalescer like a user's)."""
        state = self.explorer.check_state(state)
        for d in state.dims:
            if d not in self.dim_buttons:
                self._add_dim_button(d, value=False)
        for d, button in self.dim_buttons.items():
            button.value = d in state.dims
        self.layers.value = state.layers or (0, self.explorer.n_layers - 1)
        for role, box in self.roles.items():
            box.value = role in state.roles
        self.mode.value = state.mode
        self.sentence.value = state.sentence

    # ------------------------------------------------------------- updates
    def _changed(self, _change) -> None:
        self.status.value = self._status_html("computing…")
        self.coalescer.submit(self.state())

    def _compute(self, state: ExplorerState) -> tuple[ExplorerState, dict, bytes, float]:
        start = time.perf_counter()
        view = self.explorer.compute_view(state)
        png = self.explorer.figure_png(state)
        return state, view, png, time.perf_counter() - start

    def _show(self, result) -> None:
        state, view, png, seconds = result
        self._generation += 1
        self._shown = shown_key(state)
        self.loss.value = loss_html(view)
        self.predictions.value = predictions_html(view)
        self.plot.value = png
        self.last_view, self.last_seconds = view, seconds
        cached = " (cached)" if view.get("cached") else ""
        self.status.value = self._status_html(f"updated in {seconds:.2f} s{cached}")

    def _error(self, exc: BaseException, state) -> None:
        log.warning("explorer update failed for %s: %s", state, exc)
        self.status.value = self._status_html(f"<span style='color:crimson'>{html.escape(str(exc))}</span>")

    def _status_html(self, text: str) -> str:
        c = self.coalescer
        shown = html.escape(getattr(self, "_shown", ""), quote=True)
        return (f"<span class='bb-status' data-generation='{self._generation}' data-computed='{c.computed}' "
                f"data-submitted='{c.submitted}' data-shown='{shown}' style='color:#555;font-size:12px'>"
                f"view {self._generation} · {text}"
                f" · {c.computed} of {c.submitted} changes computed</span>")

    def _repr_mimebundle_(self, **kwargs) -> dict:
        return self.box._repr_mimebundle_(**kwargs)


def explore(model, tokenizer=None, texts: Sequence[str] | None = None, n_texts: int = 16, seed: int = 42,
            device: str | None = "auto", cpu_threads: int | None = 1, **options) -> Explorer:
    """The explorer for a model (or a model name/alias) on ``texts`` (default: ``n_texts`` held-out movie
    reviews), computing with ``cpu_threads`` torch threads on a CPU (1: the fastest on a small shared CPU).

    Display the result (last line of a cell) to get the live widget in JupyterLab, or the
    static view in a headless run. ``options`` go to ``Explorer``.

    Example:
        >>> explore(model, tokenizer, texts=texts[:16])  # the last line of a notebook cell  # doctest: +SKIP
        >>> explore("bbmini")                             # doctest: +SKIP
    """
    if isinstance(model, str):
        model, tokenizer = load_for_explorer(model, device=device)
    if tokenizer is None:
        raise ValueError("Pass the tokenizer along with the model (or a model name to load both).")
    if texts is None:
        from .data import load_texts, sample_texts

        texts = sample_texts(load_texts("movie_reviews", split="heldout"), n_texts, seed=seed)
    return Explorer(model, tokenizer, texts, seed=seed, cpu_threads=cpu_threads, **options)
