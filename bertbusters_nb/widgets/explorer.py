"""The explorer's model side: one model, a fixed eval set, cached intact results, the view of any state.

``Explorer.compute_view(state)`` returns the numbers and tables for an ``ExplorerState`` (MLM loss on a
small fixed eval set and its change from the intact model, top-k fill-in-the-blank predictions intact vs
ablated; for an encoder without an MLM head, the cosine between ablated and intact sentence embeddings;
for a causal LM, the causal-LM loss and next-token predictions for the user's text). Intact results are
computed once and cached; every ablation runs inside ``Condition.apply`` (restored on exit). For a causal LM
a state can also zero weight scalars (its super weights: ``super_weights()`` runs the package's finder when
first asked), through the one edit context (``analysis.super_weights.zeroed``, restored bit-exactly).
``suggest_dims`` ranks dims by the screen on the same texts and objective, on demand.
Drawing and formatting live in ``render``, the controls in ``controls``.

Displaying an ``Explorer`` in JupyterLab shows the live widget; a frontend without widgets
(papermill, nbconvert, GitHub) shows the static HTML view of the same state instead.

Example:
    >>> ex = Explorer(model, tokenizer, texts)                 # doctest: +SKIP
    >>> ex                                                      # live widget in JupyterLab  # doctest: +SKIP
    >>> view = ex.compute_view(ex.state_with(dims=ex.outlier_dims))  # doctest: +SKIP
    >>> view["loss"] - view["loss_intact"]                      # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from ..analysis.rule import DEFAULT_RULE
from ..analysis.super_weights import SuperWeightRule, zeroed
from ..evaluation.fill_mask import (
    blank_predictions,
    count_blanks,
    side_by_side,
)
from ..evaluation.model_objective import objective_of
from ..evaluation.next_token import next_tokens
from ..model.discovery import find_norm_sites
from ..model.sites import ROLES, NormSite
from ..model.writers import ResidualWriter, find_residual_writers
from ..reporting.claims import Finding, explorer_finding
from .dims import candidate_dims, screen_ranking_table
from .loading import load_for_explorer
from .render import LM_LABELS, NormFigure, static_view_html, view_text
from .state import DEFAULT_PROMPT, DEFAULT_SENTENCE, ExplorerState
from .super_weights import EXPLORER_RULE, SuperWeightSearch, find_for_explorer, scalars_of

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from ..evaluation.engine import AblationEngine
    from ..evaluation.sets import EmbeddingEvalSet, EvalSet
    from .controls import ExplorerWidget

log = logging.getLogger(__name__)


class Explorer:
    """One model, a small fixed eval set and cached intact results; computes the view of any state.

    model, tokenizer: a masked-LM (BertForMaskedLM, ...), or an encoder without an MLM head (MiniLM, a
        fine-tuned classifier: its encoder's sentence embeddings are compared); see ``load_for_explorer``.
    texts: the fixed eval texts (masked once, seeded) for the loss, or embedded for the cosine.
    sentence: the initial fill-in-the-blank sentence. roles: roles edited at the start.
    n_top_dims: how many candidate dims get a toggle. top_k: predictions per blank.
    max_length, batch_size, mask_prob, seed: of the eval set. k: the outlier criterion (sigmas).
    outlier_roles: roles whose parameters the rule weighs (None: every site, the project default; the
    candidate dims come from ``analysis.detection.detect``, parameters and activations). debounce_s: quiet time before
    the widget computes. cache_size: computed views kept (by state). cpu_threads: torch threads while the
    explorer computes on a CPU (restored after each computation; None or 0: leave torch's setting). On a
    small CPU shared with other work, 1 is several times faster than oversubscribed threads.
    super_weight_texts, super_weight_max_length: a causal LM's super weights are found on the first this many
    texts, truncated to this many tokens (the prompts, and the loss each candidate is verified on; few keep it
    cheap). super_weight_rule: the finder's thresholds (None: ``super_weights.EXPLORER_RULE``, the package's
    own rule).

    Example:
        >>> ex = Explorer(model, tokenizer, texts[:32])  # doctest: +SKIP
        >>> ex.compute_view(ex.state_with(dims=ex.outlier_dims))["loss_delta"]  # doctest: +SKIP
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        texts: Sequence[str],
        *,
        sentence: str = DEFAULT_SENTENCE,
        roles: Sequence[str] = ("block_output",),
        n_top_dims: int = 6,
        top_k: int = 5,
        max_length: int = 64,
        batch_size: int = 64,
        mask_prob: float = 0.15,
        seed: int = 42,
        k: float = DEFAULT_RULE.k,
        outlier_roles: Sequence[str] | None = None,
        debounce_s: float = 0.15,
        cache_size: int = 64,
        cpu_threads: int | None = None,
        super_weight_texts: int = 4,
        super_weight_max_length: int = 32,
        super_weight_rule: SuperWeightRule | None = None,
    ):
        texts = list(texts)
        if not texts:
            raise ValueError("texts is empty: the explorer needs a few eval texts (e.g. 16 held-out reviews).")
        self.model, self.tokenizer, self.texts = model.eval(), tokenizer, texts
        self.top_k, self.max_length, self.batch_size = int(top_k), int(max_length), int(batch_size)
        self.debounce_s = float(debounce_s)
        self.cpu_threads = int(cpu_threads or 0)
        self.super_weight_texts = max(1, int(super_weight_texts))
        self.super_weight_max_length = max(8, int(super_weight_max_length))
        self.super_weight_rule = super_weight_rule or EXPLORER_RULE
        self._super_weights: SuperWeightSearch | None = None
        self._writers: dict[str, ResidualWriter] | None = None
        self.sites = find_norm_sites(model)
        self.roles_available = tuple(r for r in ROLES if any(s.role == r for s in self.sites))
        self.n_layers = 1 + max((s.layer for s in self.sites if s.layer is not None), default=0)
        self.hidden_size = min(s.size for s in self.sites)
        rule = (
            {"k": k}
            if outlier_roles is None
            else {
                "k": k,
                "param_roles": [r for r in outlier_roles if r in self.roles_available] or [self.roles_available[0]],
            }
        )
        self.top_dims, self.outlier_dims = candidate_dims(model, tokenizer, n_top_dims, **rule)
        self.kind = objective_of(model, tokenizer)  # 'mlm', 'causal' or 'embedding' (no LM head)
        if self.kind == "causal" and sentence == DEFAULT_SENTENCE:
            sentence = DEFAULT_PROMPT
        if tuple(roles) == ("block_output",) and "block_output" not in self.roles_available:
            roles = tuple(r for r in ("pre_attention", "pre_ffn") if r in self.roles_available) or roles  # pre-LN
        missing = [r for r in ([roles] if isinstance(roles, str) else roles) if r not in self.roles_available]
        if missing:
            raise ValueError(f"This model has no {missing} norm sites; it has {list(self.roles_available)}.")
        self.initial = ExplorerState(
            (), (0, self.n_layers - 1), (roles,) if isinstance(roles, str) else tuple(roles), "zero", sentence
        )
        self._views: OrderedDict[ExplorerState, dict] = OrderedDict()
        self._cache_size = int(cache_size)
        self._sentence_cache: dict[str, Any] = {}
        self._rankings: dict[tuple, pd.DataFrame] = {}
        self._embedding_set: EmbeddingEvalSet | None = None
        self.eval_set: EvalSet | None = None  # the LM objectives' fixed set and engine (None for embeddings)
        self.engine: AblationEngine | None = None
        self.device = next(model.parameters()).device
        self.drawing = NormFigure(self.sites, self.top_dims, cache_size=cache_size)
        with self.threads():
            self._prepare(texts, max_length, mask_prob, seed, batch_size)

    def _prepare(self, texts, max_length, mask_prob, seed, batch_size) -> None:
        """The fixed eval set and the intact results every view compares with."""
        model, tokenizer = self.model, self.tokenizer
        start = time.perf_counter()
        if self.kind in LM_LABELS:
            from ..evaluation.engine import AblationEngine
            from ..evaluation.sets import prepare_causal_eval, prepare_mlm_eval

            device = self.device
            if self.kind == "mlm":
                self.eval_set = prepare_mlm_eval(
                    tokenizer,
                    texts,
                    max_length=max_length,
                    mask_prob=mask_prob,
                    seed=seed,
                    batch_size=batch_size,
                    device=device,
                )
            else:
                self.eval_set = prepare_causal_eval(
                    tokenizer, texts, max_length=max_length, batch_size=batch_size, device=device
                )
            self.engine = AblationEngine(model, self.eval_set, self.sites, prefix_cache=True)
            self.intact_metrics = self.engine.evaluate()
        else:
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
            raise ValueError(
                f"dims {bad} are out of range: the hidden size is {self.hidden_size} "
                f"(valid: 0..{self.hidden_size - 1})."
            )
        if state.layers is not None and not (0 <= state.layers[0] <= state.layers[1] < self.n_layers):
            raise ValueError(f"layers {state.layers} are outside this model (0..{self.n_layers - 1}).")
        missing = [r for r in state.roles if r not in self.roles_available]
        if missing:
            raise ValueError(f"This model has no {missing} norm sites; it has {list(self.roles_available)}.")
        if state.super_weights:
            scalars_of(self.writers(), state.super_weights)  # raises naming a scalar this model does not have
        return state

    # ------------------------------------------------------------- super weights (causal LMs)
    def writers(self) -> dict[str, ResidualWriter]:
        """The model's residual writers (FFN output projections, found by tracing) by module name."""
        if self._writers is None:
            found = (
                self._super_weights.report.writers
                if self._super_weights
                else find_residual_writers(self.model, self.sites)
            )
            self._writers = {w.name: w for w in found}
        return self._writers

    def super_weights(self) -> SuperWeightSearch:
        """A causal LM's verified super weights (``super_weights.find_for_explorer`` on the first
        ``super_weight_texts`` texts), computed when first asked, then kept. Raises ValueError for another kind
        of model: the explorer offers super weights for decoders only.

        Example:
            >>> [s.label for s in ex.super_weights().found]  # doctest: +SKIP
        """
        if self.kind != "causal":
            raise ValueError(f"Super weights are offered for causal LMs only; this model's objective is {self.kind!r}.")
        if self._super_weights is None:
            with self.threads():
                self._super_weights = find_for_explorer(
                    self.model,
                    self.tokenizer,
                    self.texts[: self.super_weight_texts],
                    self.sites,
                    self.super_weight_rule,
                    max_length=self.super_weight_max_length,
                    batch_size=self.batch_size,
                )
            self._writers = {w.name: w for w in self._super_weights.report.writers}
        return self._super_weights

    def zeroed(self, state: ExplorerState) -> contextlib.AbstractContextManager:
        """The weight scalars ``state`` zeroes, set to 0 for a ``with`` block and restored bit-exactly on exit
        (nothing when it zeroes none)."""
        if not state.super_weights:
            return contextlib.nullcontext()
        return zeroed(scalars_of(self.writers(), state.super_weights))

    def touched_sites(self, state: ExplorerState) -> list[NormSite]:
        """The norm modules this state edits (empty for an intact state)."""
        return state.touched(self.sites)

    # ------------------------------------------------------------- computing
    def _embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        from ..evaluation.embeddings import sentence_embeddings

        encoder = getattr(self.model, "base_model", self.model)  # a classifier's encoder: its hidden states
        return sentence_embeddings(
            encoder, self.tokenizer, list(texts), batch_size=self.batch_size, max_length=self.max_length
        )

    def _predict(self, sentence: str) -> pd.DataFrame:
        if self.kind == "causal":
            return next_tokens(self.model, self.tokenizer, sentence, top_k=self.top_k, max_length=self.max_length)
        return blank_predictions(self.model, self.tokenizer, sentence, top_k=self.top_k, max_length=self.max_length)

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

        state, kind ('mlm' / 'causal' / 'embedding'), description, sites (names edited), n_sites,
        super_weights (the zeroed scalars, as (module name, row, col) of its weight), note (a
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
            "state": state,
            "kind": self.kind,
            "description": state.describe(),
            "sites": [s.name for s in sites],
            "n_sites": len(sites),
            "super_weights": list(state.super_weights),
            "note": "",
            "loss_intact": None,
            "loss": None,
            "loss_delta": None,
            "perplexity_intact": None,
            "perplexity": None,
            "tokens": None,
            "cosine_mean": None,
            "cosine_min": None,
            "sentence_cosine": None,
            "predictions": None,
            "changed_predictions": None,
            "cached": False,
        }
        notes = []
        if state.dims and not state.roles:
            notes.append("No site role is ticked, so nothing is switched off.")
        sentence_intact = self._sentence_intact(state.sentence)
        if self.kind in LM_LABELS:
            if sentence_intact is None:
                notes.append(
                    "Your sentence has no [MASK]: type [MASK] where a word should be guessed."
                    if self.kind == "mlm"
                    else "Type the beginning of a sentence: the model predicts the next token."
                )
            engine = self.engine
            assert engine is not None  # _prepare makes it for an LM objective
            if state.ablates or not use_cache:
                with self.zeroed(state):
                    metrics = engine.evaluate(condition)
            else:
                metrics = self.intact_metrics
            view.update(
                loss_intact=self.intact_metrics["eval_loss"],
                loss=metrics["eval_loss"],
                loss_delta=metrics["eval_loss"] - self.intact_metrics["eval_loss"],
                perplexity_intact=self.intact_metrics["perplexity"],
                perplexity=metrics["perplexity"],
                tokens=metrics["tokens"],
            )
            if sentence_intact is not None:
                if state.ablates or not use_cache:
                    with self.zeroed(state), condition.apply(self.sites):
                        ablated = self._predict(state.sentence)
                else:
                    ablated = sentence_intact
                table = side_by_side(sentence_intact, ablated)
                view.update(predictions=table, changed_predictions=int((~table["same"]).sum()))
        else:
            if state.ablates or not use_cache:
                with self.zeroed(state), condition.apply(self.sites):
                    ablated = self._embeddings(self.texts)
                    sentence_ablated = self._embeddings([state.sentence]) if sentence_intact is not None else None
            else:
                ablated, sentence_ablated = self.intact_embeddings, sentence_intact
            cos = torch.nn.functional.cosine_similarity(self.intact_embeddings, ablated, dim=-1)
            view.update(cosine_mean=float(cos.mean()), cosine_min=float(cos.min()))
            if sentence_ablated is not None:
                view["sentence_cosine"] = float(
                    torch.nn.functional.cosine_similarity(sentence_intact, sentence_ablated, dim=-1)[0]
                )
            notes.append(
                "This encoder has no MLM head: the view compares its sentence embeddings with the "
                "intact model's instead of losses and predictions."
            )
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

    def summarize(self, view: dict) -> Finding:
        """The explorer's finding (``rec.finding(*finding)``, ``reporting.claims.explorer_finding``): the ablated view hurts the model and the
        intact model comes back exactly when the dims are switched on again (recomputed, not cached)."""
        return explorer_finding(self.kind, view, self.recheck_intact(), len(self.texts), self.top_k)

    # ------------------------------------------------------------- the screen's ranking
    def suggest_dims(self, state: ExplorerState | None = None, n: int = 8) -> pd.DataFrame:
        """The ``n`` dims the screen ranks most harmful to switch off alone, at the sites, layers and mode of
        ``state`` (default: what the controls show; its dims are ignored), on this explorer's eval texts and
        objective (its loss, or the embedding distance for an encoder without an LM head), among the screen's
        first ``n`` and the rule's dims (``outlier_dims``), all checked exactly; see
        ``dims.screen_ranking_table`` for the columns. Computed when first asked (a forward and a backward
        over the texts plus one exact evaluation per checked dim), then cached by (roles, layers, mode, n).

        Example:
            >>> ex.suggest_dims(n=5)[["rank", "dim", "effect"]]  # doctest: +SKIP
        """
        state = self.check_state(state or self.current_state())
        if not state.roles:
            raise ValueError("No site role is ticked: tick at least one to rank dims there.")
        key = (state.roles, state.layers, state.mode, int(n))
        if key not in self._rankings:
            with self.threads():
                self._rankings[key] = self._screen(state, n)
        return self._rankings[key].copy()

    def _screen(self, state: ExplorerState, n: int) -> pd.DataFrame:
        if self.kind in LM_LABELS:
            assert self.eval_set is not None  # _prepare makes it for an LM objective
            model, eval_set, sites = self.model, self.eval_set, self.sites
        else:  # the screen's embedding objective, on the encoder whose embeddings the view compares
            from ..evaluation.sets import prepare_embedding_eval

            if self._embedding_set is None:
                self._embedding_set = prepare_embedding_eval(
                    self.tokenizer,
                    self.texts,
                    max_length=self.max_length,
                    batch_size=self.batch_size,
                    device=self.device,
                )
            model, eval_set, sites = getattr(self.model, "base_model", self.model), self._embedding_set, None
        return screen_ranking_table(
            model,
            eval_set,
            roles=state.roles,
            layers=state.layer_indices,
            mode=state.mode,
            n=n,
            sites=sites,
            also_check=self.outlier_dims,
        )

    # ------------------------------------------------------------- figure
    def plotted_sites(self) -> list[NormSite]:
        """Sites drawn in the figure, the same for every state (see ``render.NormFigure.plotted_sites``)."""
        return self.drawing.plotted_sites()

    def figure(self, state: ExplorerState):
        """Per-layer LayerNorm weight and bias, candidate dims dotted, the disabled dims marked where they are
        disabled (crimson band; a cross at the value the drawn parameters are set to); panels the state leaves
        alone are faded. A new Figure, for saving (``figure_png`` is the fast path for the widget).

        Example:
            >>> rec.figure(ex.figure(ex.state_with(dims=ex.outlier_dims)), "explorer")  # doctest: +SKIP
        """
        return self.drawing.figure(self.check_state(state), self._written_dims(state))

    def figure_png(self, state: ExplorerState, dpi: int = 80) -> bytes:
        """``figure(state)`` as PNG bytes, fast: the parameter lines are drawn once and kept as a bitmap; a
        new state only draws its marks on a copy of it (Agg blitting). Cached by state."""
        return self.drawing.png(self.check_state(state), dpi, self._written_dims(state))

    def _written_dims(self, state: ExplorerState) -> dict[tuple[str, int, int], int]:
        """Each zeroed scalar's hidden dim (the output channel it writes into the stream), marked in the figure."""
        scalars = scalars_of(self.writers(), state.super_weights) if state.super_weights else []
        return {key: out_channel for key, (_, out_channel, _) in zip(state.super_weights, scalars)}

    # ------------------------------------------------------------- display
    def widget(self) -> ExplorerWidget:
        """The live ipywidgets explorer (made once, then reused)."""
        if getattr(self, "_widget", None) is None:
            from .controls import ExplorerWidget

            self._widget = ExplorerWidget(self)
        return self._widget

    def static_html(self, state: ExplorerState | None = None) -> str:
        """A self-contained HTML view (tables and the figure inline) for frontends without widgets."""
        state = state or self.current_state()
        return static_view_html(self.compute_view(state), self.figure_png(state, dpi=80))

    def current_state(self) -> ExplorerState:
        """What the live widget's controls show (the initial state before the widget is made)."""
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


def explore(
    model: torch.nn.Module | str,
    tokenizer: PreTrainedTokenizerBase | None = None,
    texts: Sequence[str] | None = None,
    n_texts: int = 16,
    seed: int = 42,
    device: str | None = "auto",
    cpu_threads: int | None = 1,
    **options,
) -> Explorer:
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
        from ..data.corpus import explorer_texts

        texts = explorer_texts(n_texts, seed=seed)
    return Explorer(model, tokenizer, texts, seed=seed, cpu_threads=cpu_threads, **options)


__all__ = ["Explorer", "explore"]
