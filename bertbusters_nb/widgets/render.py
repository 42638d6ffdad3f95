"""Drawing and formatting a view: the LayerNorm figure (matplotlib, Agg blitting, palette PNG) and HTML/text.

Everything here turns numbers the explorer computed into pixels or markup; nothing touches the model.
``NormFigure`` draws one model's per-layer LayerNorm weight and bias once and keeps the drawing as a
bitmap, so a new state only draws its marks (crimson bands, crosses at the new values) on a copy and is
encoded as a 128-colour PNG: fast enough to follow a slider. ``view_text`` / ``view_html`` /
``loss_html`` / ``predictions_html`` format ``Explorer.compute_view``'s dict; class names ``bb-*`` are
what the browser test and styling look for.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence

import pandas as pd

from ..model.edits import disabled_fill
from ..model.sites import ROLE_LABELS as NORM_ROLE_LABELS
from ..model.sites import NormSite
from ..reporting.claims import LM_LABELS  # the loss names and what each scores, worded once
from .state import ExplorerState

SHORT_ROLE_LABELS = {
    "embeddings": "emb",
    "attention_output": "attn",
    "block_output": "block",
    "cross_attention_output": "cross",
    "pre_attention": "pre-attn",
    "pre_cross_attention": "pre-cross",
    "pre_ffn": "pre-FFN",
    "pre_parallel": "pre-par",
    "post_attention": "post-attn",
    "post_cross_attention": "post-cross",
    "post_ffn": "post-FFN",
    "qk_norm": "q/k",
    "inner": "inner",
    "final": "final",
    "head": "head",
}
PANEL_ROLES = ("block_output", "pre_ffn", "pre_parallel", "pre_attention", "attention_output")  # first present
ROLE_LABELS = NORM_ROLE_LABELS  # the toggles' labels: one table for every role name, in model/norms


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
    keys = (
        "kind",
        "n_sites",
        "loss_intact",
        "loss",
        "loss_delta",
        "perplexity_intact",
        "perplexity",
        "tokens",
        "cosine_mean",
        "cosine_min",
        "sentence_cosine",
        "changed_predictions",
    )
    row = {
        "dims": " ".join(map(str, state.dims)),
        "layers": "all" if state.layers is None else f"{state.layers[0]}-{state.layers[1]}",
        "roles": "+".join(state.roles),
        "mode": state.mode,
        "sentence": state.sentence,
        "super_weights": " ".join(f"{name}[{row},{col}]" for name, row, col in state.super_weights),
        **{k: view[k] for k in keys},
    }
    return pd.DataFrame([row])


def view_text(view: dict) -> str:
    """Plain-text view: the numbers and, for a masked LM, the predictions table."""
    lines = [f"Explorer: {view['description']} ({view['n_sites']} norm modules edited)"]
    if view["kind"] in LM_LABELS:
        loss_name, scored = LM_LABELS[view["kind"]]
        lines.append(
            f"{loss_name}: intact {_fmt(view['loss_intact'])} -> now {_fmt(view['loss'])} "
            f"(change {_fmt(view['loss_delta'], '+.4f')}) on {view['tokens']} {scored}"
        )
        if view["predictions"] is not None:
            lines.append(view["predictions"].to_string(index=False, float_format=lambda p: f"{p:.3f}"))
    else:
        lines.append(
            f"Sentence-embedding cosine to the intact model: mean {_fmt(view['cosine_mean'])}, "
            f"min {_fmt(view['cosine_min'])}; your sentence {_fmt(view['sentence_cosine'])}"
        )
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
        body = (
            f"<b>{loss_name}</b> on {view['tokens']} {scored}: intact "
            f"<span class='bb-loss-intact'>{_fmt(view['loss_intact'])}</span> &rarr; now "
            f"<b class='bb-loss-ablated'>{_fmt(view['loss'])}</b> "
            f"(<span class='bb-loss-delta' style='color:{color}'>{_fmt(view['loss_delta'], '+.4f')}</span>; "
            f"perplexity {_fmt(view['perplexity_intact'], '.1f')} &rarr; {_fmt(view['perplexity'], '.1f')})"
        )
    else:
        body = (
            f"<b>Sentence-embedding cosine to the intact model</b>: mean "
            f"<b class='bb-cos-mean'>{_fmt(view['cosine_mean'])}</b>, min "
            f"<span class='bb-cos-min'>{_fmt(view['cosine_min'])}</span>; your sentence "
            f"<span class='bb-cos-sentence'>{_fmt(view['sentence_cosine'])}</span>"
        )
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
        cells = (
            r.blank,
            r.rank,
            e(str(r.intact)),
            _fmt(r.p_intact, ".3f"),
            e(str(r.ablated)),
            _fmt(r.p_ablated, ".3f"),
        )
        rows.append(f"<tr{style}>" + "".join(f"<td style='padding:1px 8px'>{c}</td>" for c in cells) + "</tr>")
    head = (
        "<tr>"
        + "".join(f"<th style='padding:1px 8px'>{h}</th>" for h in ("blank", "rank", "intact", "p", "ablated", "p"))
        + "</tr>"
    )
    return (
        f"<table class='bb-predictions' style='border-collapse:collapse;font-size:12px'>"
        f"<thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"
    )


def view_html(view: dict) -> str:
    """Loss (or cosine) line plus predictions table, as HTML."""
    return loss_html(view) + predictions_html(view)


def static_view_html(view: dict, png: bytes) -> str:
    """A self-contained HTML view (tables and the figure inline) for frontends without widgets."""
    data = base64.b64encode(png).decode()
    return (
        f"<div class='bb-explorer-static'>{view_html(view)}"
        f"<img alt='LayerNorm parameters' src='data:image/png;base64,{data}'/></div>"
    )


class NormFigure:
    """One model's per-layer LayerNorm parameters, with a state's disabled dims marked.

    sites: every norm site of the model (``find_norm_sites``); candidate_dims: dotted in every panel;
    cache_size: PNGs kept (by the state's ``model_key`` and dpi). ``figure(state)`` is a new Figure for
    saving, ``png(state)`` the fast path for the widget (see the module docstring).
    """

    def __init__(self, sites: Sequence[NormSite], candidate_dims: Sequence[int], cache_size: int = 64):
        self.sites = list(sites)
        self.candidate_dims = list(candidate_dims)
        self.roles_available = tuple(dict.fromkeys(s.role for s in self.sites))
        self.hidden_size = min(s.size for s in self.sites)
        self._cache_size = int(cache_size)
        self._figures: dict[int, tuple] = {}
        self._pngs: dict[tuple, bytes] = {}

    def plotted_sites(self) -> list[NormSite]:
        """Sites drawn in the figure, the same for every state (so a new state only redraws its marks): one
        panel per layer for the layers' output norm (block output; pre-FFN in a pre-LN model) plus the norms
        outside the layers (embeddings, final, LM head). A layer's panel shows the dims disabled in ANY of
        that layer's norms, its label says which."""
        layered = next((r for r in PANEL_ROLES if r in self.roles_available), None)
        return [s for s in self.sites if s.layer is None or s.role == layered]

    def figure(self, state: ExplorerState, written_dims: Mapping[tuple[str, int, int], int] | None = None):
        """Per-layer LayerNorm weight and bias, candidate dims dotted, the disabled dims marked where they are
        disabled (crimson band; a cross at the value the drawn parameters are set to); panels the state leaves
        alone are faded. ``written_dims``: the hidden dim each of the state's zeroed scalars writes (a dashed
        orange line in every panel). A new Figure."""
        import matplotlib.pyplot as plt

        from ..reporting.plots.core import norm_parameter_lines

        sites = self.plotted_sites()
        fig = norm_parameter_lines(sites, self.candidate_dims, title=" ")
        plt.close(fig)  # kept out of pyplot's registry: a notebook shows it only when asked to
        fig.suptitle("")
        self._marks(fig, sites, state, written_dims)
        return fig

    def png(
        self, state: ExplorerState, dpi: int = 80, written_dims: Mapping[tuple[str, int, int], int] | None = None
    ) -> bytes:
        """``figure(state)`` as PNG bytes, fast: the parameter lines are drawn once and kept as a bitmap; a
        new state only draws its marks on a copy of it (Agg blitting). Cached by state."""
        key = (state.model_key, dpi)
        if key in self._pngs:
            return self._pngs[key]
        sites = self.plotted_sites()
        fig, canvas, background = self._base_figure(sites, dpi)
        canvas.restore_region(background)
        marks = self._marks(fig, sites, state, written_dims)
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

    def clear_pngs(self) -> None:
        """Forget the encoded PNGs (the drawn parameter lines are kept)."""
        self._pngs.clear()

    def _base_figure(self, sites: Sequence[NormSite], dpi: int):
        import matplotlib.pyplot as plt
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        from ..reporting.plots.core import norm_parameter_lines

        if dpi not in self._figures:
            fig = norm_parameter_lines(sites, self.candidate_dims, title=" ")
            plt.close(fig)
            fig.suptitle("")
            fig.set_dpi(dpi)
            canvas = FigureCanvasAgg(fig)
            canvas.draw()
            self._figures[dpi] = (fig, canvas, canvas.copy_from_bbox(fig.bbox))
        return self._figures[dpi]

    def _marks(
        self,
        fig,
        sites: Sequence[NormSite],
        state: ExplorerState,
        written_dims: Mapping[tuple[str, int, int], int] | None = None,
    ) -> list:
        """Add the state's marks to ``fig`` (one axes per site of ``sites``, in order) and return them."""
        from matplotlib.patches import Rectangle

        marks = []
        written = sorted({int(d) for key, d in (written_dims or {}).items() if key in state.super_weights})
        for ax in fig.axes[: len(sites)]:  # a zeroed super weight writes into the stream at one dim, every layer on
            for d in written:
                marks.append(ax.axvline(d, color="darkorange", ls="--", lw=1.2, zorder=4))

        touched = state.touched(self.sites)
        by_panel: dict[tuple, list[str]] = {}
        for t in touched:
            key = (t.stack, t.layer) if t.layer is not None else (t.name,)
            by_panel.setdefault(key, []).append(SHORT_ROLE_LABELS.get(t.role, t.role))
        names = {t.name for t in touched}
        half = max(0.5, self.hidden_size / 200)  # band half-width in dims: visible at any hidden size
        for ax, site in zip(fig.axes, sites):
            roles = by_panel.get((site.stack, site.layer) if site.layer is not None else (site.name,))
            if not roles:
                if touched:
                    marks.append(
                        ax.add_patch(
                            Rectangle((0, 0), 1, 1, transform=ax.transAxes, color="white", alpha=0.55, lw=0, zorder=5)
                        )
                    )
                continue
            marks.append(
                ax.add_patch(
                    Rectangle(
                        (0, 0),
                        1,
                        1,
                        transform=ax.transAxes,
                        fill=False,
                        edgecolor="crimson",
                        lw=2.5,
                        clip_on=False,
                        zorder=6,
                    )
                )
            )
            marks.append(
                ax.text(
                    0.99,
                    0.97,
                    "off: " + ", ".join(roles),
                    transform=ax.transAxes,
                    ha="right",
                    va="top",
                    color="crimson",
                    fontsize=7,
                    zorder=8,
                    bbox={"facecolor": "white", "alpha": 0.85, "linewidth": 0, "pad": 1.5},
                )
            )
            for d in state.dims:
                marks.append(ax.axvspan(d - half, d + half, color="crimson", alpha=0.3, lw=0, zorder=4))
                if site.name not in names:
                    continue
                for param in (site.weight, site.bias):
                    if param is not None:
                        new = float(disabled_fill(site, param, state.mode)) if site.can_disable else float("nan")
                        marks.extend(ax.plot([d], [new], marker="x", color="crimson", ms=6, mew=2, zorder=7))
        marks.append(
            fig.text(
                0.5,
                0.995,
                f"LayerNorm weight and bias per dim · {state.describe()}",
                ha="center",
                va="top",
                fontsize=9,
                color="crimson" if touched or state.super_weights else "black",
            )
        )
        return marks


def ranking_html(where: str, loss_name: str) -> str:
    """The label of the screen's ranking (class ``bb-suggest-label``): what it ranks and where."""
    return (
        f"<span class='bb-suggest-label' style='font-size:12px'>screen: dims most harmful alone "
        f"({html.escape(loss_name)} change; the screen's top and the rule's dims, checked exactly) in "
        f"{html.escape(where)}; click to switch off:</span>"
    )


__all__ = [
    "LM_LABELS",
    "PANEL_ROLES",
    "ROLE_LABELS",
    "SHORT_ROLE_LABELS",
    "NormFigure",
    "loss_html",
    "predictions_html",
    "ranking_html",
    "static_view_html",
    "view_html",
    "view_table",
    "view_text",
]
