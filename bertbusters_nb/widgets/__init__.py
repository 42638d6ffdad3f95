"""The interactive explorer: switch hidden dims off in chosen LayerNorms and watch the model break.

One concern per module, lowest first, so that everything but the wiring is testable without a browser:

* ``state``: ``ExplorerState``, what the controls say (dims, layer range, site roles, zero/mean, sentence).
* ``coalescer``: ``Coalescer``, a debouncer on the kernel's event loop: a burst of changes computes the latest only.
* ``loading``: ``load_for_explorer``, the head a checkpoint has decides what is shown.
* ``dims``: which dims are offered: the one rule's candidates, and the screen's ranking on demand.
* ``super_weights``: a causal LM's verified super weights for the explorer (the package's finder on a few of its
  texts) and the scalars a state zeroes.
* ``render``: the LayerNorm figure (Agg blitting, palette PNG) and the text/HTML of a view.
* ``finding``: the explorer's claim and its evidence sentence (notebook 05).
* ``explorer``: ``Explorer``, the model side: ``compute_view(state)``, ``figure(state)``, ``suggest_dims()``;
  ``explore()`` builds one from a model or a name.
* ``controls``: ``ExplorerWidget``, ipywidgets wired to the explorer through the coalescer.

Displaying an ``Explorer`` in JupyterLab shows the live widget; a frontend without widgets
(papermill, nbconvert, GitHub) shows the static HTML view of the same state instead.
``from bertbusters_nb import widgets; widgets.Explorer(...)`` works as it did when this was one file.

Example:
    >>> ex = Explorer(model, tokenizer, texts)                 # doctest: +SKIP
    >>> ex                                                      # live widget in JupyterLab  # doctest: +SKIP
    >>> view = ex.compute_view(ex.state_with(dims=ex.outlier_dims))  # doctest: +SKIP
    >>> view["loss"] - view["loss_intact"]                      # doctest: +SKIP
"""

from __future__ import annotations

from .coalescer import Coalescer
from .controls import N_SUGGESTIONS, ExplorerWidget, shown_key
from .dims import RANKING_COLUMNS, candidate_dims, screen_ranking_table
from .explorer import Explorer, explore
from .loading import load_for_explorer
from .render import (
    LM_LABELS,
    PANEL_ROLES,
    ROLE_LABELS,
    SHORT_ROLE_LABELS,
    NormFigure,
    loss_html,
    predictions_html,
    static_view_html,
    view_html,
    view_table,
    view_text,
)
from .state import DEFAULT_PROMPT, DEFAULT_SENTENCE, ExplorerState
from .super_weights import ExplorerSuperWeight, SuperWeightSearch, find_for_explorer

__all__ = [
    "DEFAULT_PROMPT",
    "DEFAULT_SENTENCE",
    "LM_LABELS",
    "N_SUGGESTIONS",
    "PANEL_ROLES",
    "RANKING_COLUMNS",
    "ROLE_LABELS",
    "SHORT_ROLE_LABELS",
    "Coalescer",
    "Explorer",
    "ExplorerState",
    "ExplorerSuperWeight",
    "ExplorerWidget",
    "NormFigure",
    "SuperWeightSearch",
    "candidate_dims",
    "explore",
    "find_for_explorer",
    "load_for_explorer",
    "loss_html",
    "predictions_html",
    "screen_ranking_table",
    "shown_key",
    "static_view_html",
    "view_html",
    "view_table",
    "view_text",
]
