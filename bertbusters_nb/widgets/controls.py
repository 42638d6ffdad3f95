"""The explorer's controls: ipywidgets wired to an ``Explorer`` through a ``Coalescer``.

One toggle per candidate dim (plus a field and button to add any dim), a layer-range slider, a checkbox
per site role, zero/mean, the sentence, and "suggest dims from the screen" (off at start, so it costs
nothing until asked: when switched on, the screen's ranking for the ticked sites, layers and mode is
computed once and shown as buttons that switch a dim off). For a causal LM, one toggle per verified super
weight (found when the widget is made: ``Explorer.super_weights``) zeroes that scalar, or a line says there is
none. Every change goes through the coalescer, so
a burst of slider moves computes only the latest state; the status line carries ``data-shown`` (the state
the shown view was computed for) so a browser test can check the view is fresh.
"""

from __future__ import annotations

import html
import json
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from .coalescer import Coalescer
from .render import LM_LABELS, ROLE_LABELS, loss_html, predictions_html, ranking_html
from .state import ExplorerState, ScalarKey

if TYPE_CHECKING:
    import pandas as pd

    from .super_weights import SuperWeightSearch

log = logging.getLogger(__name__)


class ExplorerModel(Protocol):
    """What the controls read from an ``explorer.Explorer`` (a Protocol: the explorer makes its widget, so this
    module, below it, never imports it)."""

    kind: str
    n_layers: int
    hidden_size: int
    roles_available: tuple[str, ...]
    top_dims: list[int]
    initial: ExplorerState
    debounce_s: float

    def check_state(self, state: ExplorerState) -> ExplorerState: ...

    def compute_view(self, state: ExplorerState, use_cache: bool = True) -> dict: ...

    def suggest_dims(self, state: ExplorerState | None = None, n: int = 8) -> pd.DataFrame: ...

    def figure_png(self, state: ExplorerState, dpi: int = 80) -> bytes: ...

    def super_weights(self) -> SuperWeightSearch: ...


N_SUGGESTIONS = 8  # dims the screen's ranking shows (each one checked exactly)


def shown_key(state: ExplorerState) -> str:
    """The controls' state a shown result was computed for, as compact JSON (the status line's
    ``data-shown``): a browser test compares it with the controls to prove the view is fresh."""
    return json.dumps(
        {
            "dims": sorted(state.dims),
            "layers": list(state.layers or ()),
            "roles": sorted(state.roles),
            "mode": state.mode,
            "super_weights": [list(key) for key in state.super_weights],
        },
        separators=(",", ":"),
    )


class ExplorerWidget:
    """ipywidgets controls wired to an ``Explorer`` through a ``Coalescer`` (see the module docstring).

    Controls: one toggle per candidate dim (plus a field and button to add any dim), a layer-range
    slider, a checkbox per site role, zero/mean, the sentence, and the screen's suggestions (``suggest``
    toggle, ``suggestion_buttons``), and for a causal LM its super weights (``super_weight_buttons``, one
    toggle per verified scalar, by the state's key; ``super_weight_label`` says how many, or that there is none).
    Views: loss line, predictions table, the LayerNorm figure and a status line (``data-computed`` /
    ``data-submitted`` counters).
    """

    def __init__(self, explorer: ExplorerModel, n_suggestions: int = N_SUGGESTIONS):
        import ipywidgets as W

        self.explorer = ex = explorer
        self.W = W
        self.dim_buttons: dict[int, Any] = {}
        self.dim_box = W.HBox(layout=W.Layout(flex_flow="row wrap"))
        for d in ex.top_dims:
            self._add_dim_button(d, value=False)
        self.new_dim = W.BoundedIntText(
            value=ex.top_dims[0] if ex.top_dims else 0,
            min=0,
            max=ex.hidden_size - 1,
            description="any dim:",
            layout=W.Layout(width="170px"),
        )
        self.new_dim.add_class("bb-new-dim")
        self.add_button = W.Button(
            description="switch off", tooltip="add this dim (switched off)", layout=W.Layout(width="90px")
        )
        self.add_button.add_class("bb-add-dim")
        self.add_button.on_click(self._on_add)
        last = ex.n_layers - 1
        self.layers = W.IntRangeSlider(
            value=(0, last),
            min=0,
            max=last,
            step=1,
            description="layers:",
            continuous_update=True,
            layout=W.Layout(width="420px"),
        )
        self.layers.add_class("bb-layers")
        self.roles = {}
        for role in ex.roles_available:
            box = W.Checkbox(
                value=role in ex.initial.roles,
                description=ROLE_LABELS.get(role, role),
                indent=False,
                layout=W.Layout(width="auto"),
            )
            box.add_class(f"bb-role-{role}")
            self.roles[role] = box
        self.mode = W.ToggleButtons(
            options=[("zero", "zero"), ("mean", "mean")],
            value="zero",
            tooltips=["weight and bias set to 0", "set to the layer's mean"],
            style={"button_width": "60px"},
        )
        self.mode.add_class("bb-mode")
        self.sentence = W.Text(
            value=ex.initial.sentence,
            description="sentence:",
            continuous_update=False,
            placeholder=(
                "the start of a sentence; press Enter" if ex.kind == "causal" else "a sentence with [MASK]; press Enter"
            ),
            layout=W.Layout(width="640px"),
        )
        self.sentence.add_class("bb-sentence")
        self.n_suggestions = int(n_suggestions)
        self.suggest = W.ToggleButton(
            value=False,
            description="suggest dims from the screen",
            tooltip="rank every dim by the screen (gradients, top ones checked exactly) "
            "for the ticked sites, layers and mode",
            layout=W.Layout(width="auto"),
        )
        self.suggest.add_class("bb-suggest")
        self.suggest.observe(self._suggest_toggled, names="value")
        self.suggestion_label = W.HTML()
        self.suggestion_buttons: dict[int, Any] = {}
        self.suggestion_box = W.HBox(layout=W.Layout(flex_flow="row wrap"))
        self.suggestion_box.add_class("bb-suggestions")
        self.suggestions_for: ExplorerState | None = None
        self.super_weight_buttons: dict[ScalarKey, Any] = {}
        self.super_weight_label = W.HTML()
        self.super_weight_label.add_class("bb-super-weights-label")
        self.super_weight_box = W.HBox(layout=W.Layout(flex_flow="row wrap"))
        self.super_weight_box.add_class("bb-super-weights")
        self.super_weight_row = self._super_weight_row() if ex.kind == "causal" else None  # encoders: no control
        self.status = W.HTML()
        self.loss = W.HTML()
        self.predictions = W.HTML()
        self.plot = W.Image(
            format="png",
            layout=W.Layout(max_width="100%", height="auto", align_self="flex-start", object_fit="contain"),
        )
        self.coalescer = Coalescer(self._compute, self._show, delay_s=ex.debounce_s, on_error=self._error)
        header = W.HTML(
            "<b>Switch hidden dims off</b> (toggles: the model's strongest LayerNorm dims; "
            "crimson = off). Embeddings and LM-head norms ignore the layer range."
        )
        self.box = W.VBox(
            [
                header,
                W.HBox([self.dim_box, self.new_dim, self.add_button], layout=W.Layout(flex_flow="row wrap")),
                self.layers,
                W.HBox([W.Label("site roles:"), *self.roles.values()]),
                W.HBox([W.Label("disabled dims are set to:"), self.mode]),
                self.sentence,
                W.HBox(
                    [self.suggest, self.suggestion_label, self.suggestion_box], layout=W.Layout(flex_flow="row wrap")
                ),
                *([self.super_weight_row] if self.super_weight_row is not None else []),
                self.status,
                self.loss,
                self.predictions,
                self.plot,
            ]
        )
        self.box.add_class("bb-explorer")
        for control in (self.layers, self.mode, self.sentence, *self.roles.values()):
            control.observe(self._changed, names="value")
        self._generation = 0
        self._show(self._compute(self.state()))

    # ------------------------------------------------------------- super weights (causal LMs)
    def _super_weight_row(self):
        """The super-weight control: the finder's sentence and one toggle per verified scalar (none: no toggle).
        An error of the finder is shown in its place; the rest of the explorer keeps working."""
        W = self.W
        try:
            search = self.explorer.super_weights()
        except Exception as exc:  # noqa: BLE001 - reported in the control, the explorer keeps running
            log.warning("super weights not found: %s", exc)
            self.super_weight_label.value = (
                f"<span style='color:crimson;font-size:12px'>super weights: {html.escape(str(exc))}</span>"
            )
            return W.HBox([self.super_weight_label])
        self.super_weight_label.value = (
            f"<span class='bb-super-weights-note' style='font-size:12px'>{html.escape(search.note)}</span>"
        )
        for found in search.found:
            self._add_super_weight_button(found.key, found.label, found.tooltip, value=False)
        return W.HBox([self.super_weight_label, self.super_weight_box], layout=W.Layout(flex_flow="row wrap"))

    def _add_super_weight_button(self, key: ScalarKey, label: str, tooltip: str, value: bool) -> None:
        button = self.W.ToggleButton(
            value=value, description=label, tooltip=tooltip, layout=self.W.Layout(width="auto")
        )
        button.add_class("bb-super-weight-toggle")
        button.observe(self._dim_toggled, names="value")
        self._style_dim(button)
        self.super_weight_buttons[key] = button
        self.super_weight_box.children = tuple(self.super_weight_box.children) + (button,)

    # ------------------------------------------------------------- controls
    def _add_dim_button(self, dim: int, value: bool) -> None:
        button = self.W.ToggleButton(
            value=value, description=str(dim), tooltip=f"switch dim {dim} off", layout=self.W.Layout(width="64px")
        )
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
        self.switch_off(int(self.new_dim.value))

    def switch_off(self, dim: int) -> None:
        """Switch ``dim`` off (a toggle is added for a dim that has none); goes through the coalescer."""
        if dim in self.dim_buttons:
            self.dim_buttons[dim].value = True  # fires the update
            return
        self._add_dim_button(dim, value=True)
        self._changed(None)

    def state(self) -> ExplorerState:
        """The state the controls show now."""
        return ExplorerState(
            dims=tuple(d for d, b in self.dim_buttons.items() if b.value),
            layers=tuple(self.layers.value),
            roles=tuple(r for r, box in self.roles.items() if box.value),
            mode=self.mode.value,
            sentence=self.sentence.value,
            super_weights=tuple(k for k, b in self.super_weight_buttons.items() if b.value),
        )

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
        for key in state.super_weights:
            if key not in self.super_weight_buttons:
                name, row, col = key
                self._add_super_weight_button(key, f"{name} [{row}, {col}]", "a weight scalar set to 0", value=False)
        for key, button in self.super_weight_buttons.items():
            button.value = key in state.super_weights

    # ------------------------------------------------------------- the screen's suggestions
    def _suggest_toggled(self, change) -> None:
        if change["new"]:
            self.show_suggestions()
        else:
            self._clear_suggestions()

    def show_suggestions(self) -> None:
        """Compute (or reuse) the screen's ranking for the controls' sites, layers and mode and show it as
        buttons, most harmful first; a click switches that dim off. Errors go to the status line."""
        state = self.state()
        self.status.value = self._status_html("screening every dim…")
        try:
            ranking = self.explorer.suggest_dims(state, n=self.n_suggestions)
        except Exception as exc:  # noqa: BLE001 - reported to the UI, the explorer keeps running
            self._error(exc, state)
            return
        self._clear_suggestions()
        buttons = []
        for r in ranking.itertuples():
            button = self.W.Button(
                description=f"{r.dim} ({r.effect:+.3g})",
                layout=self.W.Layout(width="auto"),
                tooltip=f"rank {r.rank}: switching dim {r.dim} off alone changes the "
                f"{r.objective} by {r.effect:+.4g} ({r.value_kind}); click to switch it off",
            )
            button.add_class("bb-suggest-dim")
            button.add_class(f"bb-suggest-{r.dim}")
            button.on_click(lambda _b, dim=int(r.dim): self.switch_off(dim))
            self.suggestion_buttons[int(r.dim)] = button
            buttons.append(button)
        self.suggestion_box.children = tuple(buttons)
        self.suggestions_for = state
        self._mark_stale_suggestions(state)
        self.status.value = self._status_html("computing…" if not self.coalescer.idle else "screen ranking shown")

    def _clear_suggestions(self) -> None:
        self.suggestion_buttons = {}
        self.suggestion_box.children = ()
        self.suggestion_label.value = ""
        self.suggestions_for = None

    # ------------------------------------------------------------- updates
    def _changed(self, _change) -> None:
        self.status.value = self._status_html("computing…")
        state = self.state()
        self._mark_stale_suggestions(state)
        self.coalescer.submit(state)

    def _mark_stale_suggestions(self, state: ExplorerState) -> None:
        """Say so when the shown ranking was computed for other sites, layers or mode than ticked now."""
        shown = self.suggestions_for
        if shown is None:
            return
        loss_name = LM_LABELS[self.explorer.kind][0] if self.explorer.kind in LM_LABELS else "embedding distance"
        label = ranking_html(shown.describe_sites(), loss_name)
        if (shown.roles, shown.layers, shown.mode) != (state.roles, state.layers, state.mode):
            label += (
                "<span class='bb-suggest-stale' style='font-size:12px;color:#a35'> (not the sites ticked "
                "now: switch the toggle off and on to rank there)</span>"
            )
        self.suggestion_label.value = label

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
        return (
            f"<span class='bb-status' data-generation='{self._generation}' data-computed='{c.computed}' "
            f"data-submitted='{c.submitted}' data-shown='{shown}' style='color:#555;font-size:12px'>"
            f"view {self._generation} · {text}"
            f" · {c.computed} of {c.submitted} changes computed</span>"
        )

    def _repr_mimebundle_(self, **kwargs) -> dict:
        return self.box._repr_mimebundle_(**kwargs)


__all__ = ["N_SUGGESTIONS", "ExplorerWidget", "shown_key"]
