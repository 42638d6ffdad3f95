"""The vocabulary of normalization sites: what a site is (``NormSite``), the roles a norm can play (``ROLES``,
their families and their words), and how a caller picks sites (``select_sites``, ``default_roles``).

Finding the sites of a model is ``discovery.find_norm_sites``; disabling dims of them is ``ablation``. A role
says what a norm does in the forward pass (see ``discovery`` for how it is traced):

* post-LN, on the stream (``POST_LN_ROLES``): ``block_input`` (the stream normalised on entry to a layer),
  ``attention_output`` / ``cross_attention_output`` (after the sub-layer that reads the previous residual
  point), ``block_output`` (closes the FFN; its output is the layer's output: the paper's sites);
* pre-LN, in front of one sub-layer (``PRE_LN_ROLES``): ``pre_attention``, ``pre_cross_attention``,
  ``pre_ffn``, ``pre_parallel`` (attention and FFN at once: GPT-J, Phi, Falcon, CodeGen);
* sandwich, after a sub-layer (``SANDWICH_ROLES``): ``post_attention``, ``post_cross_attention``, ``post_ffn``
  (Gemma2/3, OLMo2);
* off the stream: ``qk_norm`` (on queries/keys inside a token mixer) and ``inner`` (inside a sub-layer), left
  out of hidden-dim ablation (``HIDDEN_ROLES``): their size is not the stream's;
* outside the layers: ``embeddings``, ``final`` (by call order around their stack) and ``head`` (an LM head's
  own norm).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Sequence

import torch
from torch import nn

if TYPE_CHECKING:
    import pandas as pd

ROLES: tuple[str, ...] = (
    "embeddings",
    "block_input",
    "attention_output",
    "cross_attention_output",
    "block_output",
    "pre_attention",
    "pre_cross_attention",
    "pre_ffn",
    "pre_parallel",
    "post_attention",
    "post_cross_attention",
    "post_ffn",
    "qk_norm",
    "inner",
    "final",
    "head",
)
Role = str
# Roles whose norm sits on the hidden dim of the stream (what a hidden-dim ablation touches by default).
HIDDEN_ROLES: tuple[str, ...] = tuple(r for r in ROLES if r not in ("qk_norm", "inner"))
# The role families (every role of each kind, in ROLES order); a model's placement is the family it has.
POST_LN_ROLES: tuple[str, ...] = ("block_input", "attention_output", "cross_attention_output", "block_output")
PRE_LN_ROLES: tuple[str, ...] = ("pre_attention", "pre_cross_attention", "pre_ffn", "pre_parallel")
SANDWICH_ROLES: tuple[str, ...] = ("post_attention", "post_cross_attention", "post_ffn")


class NormLayoutError(ValueError):
    """The model's normalization layout is not one the site finder can place with certainty."""


@dataclass(frozen=True)
class NormSite:
    """One normalization module of a model.

    name: full module name, e.g. ``bert.encoder.layer.3.output.LayerNorm``.
    role: what it normalises (see ``ROLES`` and the module docstring); ``head`` is an LM head's own norm.
    layer: index within its stack, None outside the layers (embeddings, final, head).
    stack: ``encoder`` or ``decoder``.
    module: the module itself (not compared, not shown).
    scale_offset: the effective scale is ``scale_offset + weight`` (1.0 for Gemma's RMSNorm), or None
        when no weight value zeroes the output (then it cannot be disabled).
    """

    name: str
    role: str
    layer: int | None
    stack: str
    module: nn.Module = field(compare=False, repr=False)
    scale_offset: float | None = field(default=0.0, compare=False, repr=False)
    width: int | None = field(default=None, compare=False, repr=False)

    @property
    def weight(self) -> torch.Tensor | None:
        return getattr(self.module, "weight", None)

    @property
    def bias(self) -> torch.Tensor | None:
        return getattr(self.module, "bias", None)

    @property
    def size(self) -> int:
        if self.weight is not None:
            return int(self.weight.shape[0])
        return int(self.width) if self.width is not None else 0

    @property
    def can_disable(self) -> bool:
        """Whether some parameter value zeroes this norm's output at a dim (False without affine parameters)."""
        return self.weight is not None and self.scale_offset is not None


def select_sites(
    sites: Sequence[NormSite],
    roles: Iterable[str] | str | None = ("block_output",),
    layers: Iterable[int] | range | None = None,
    stack: str | None = None,
) -> list[NormSite]:
    """The sites with one of ``roles`` (None: every hidden-dim role, not ``qk_norm``), in ``layers``
    (None: all) of ``stack`` (None: any).

    Raises ValueError for a role the model does not have or a layer outside it, and for an
    empty selection.

    Example:
        >>> select_sites(find_norm_sites(model), roles="block_output", layers=range(0, 3))  # doctest: +SKIP
    """
    if isinstance(roles, str):
        roles = (roles,)
    present_roles = {s.role for s in sites}
    if roles is not None:
        roles = tuple(roles)
        unknown = [r for r in roles if r not in ROLES]
        if unknown:
            raise ValueError(f"Unknown site role(s) {unknown}; pick from {list(ROLES)}.")
        missing = [r for r in roles if r not in present_roles]
        if missing:
            raise ValueError(f"This model has no {missing} norm sites; it has {sorted(present_roles)}.")
    stacks = {s.stack for s in sites}
    if stack is not None and stack not in stacks:
        raise ValueError(f"Unknown stack {stack!r}; this model has {sorted(stacks)}.")
    wanted = HIDDEN_ROLES if roles is None else roles
    chosen = [s for s in sites if s.role in wanted and (stack is None or s.stack == stack)]
    if layers is not None:
        layers = list(layers)
        n_layers = 1 + max((s.layer for s in sites if s.layer is not None), default=-1)
        bad = [l for l in layers if not isinstance(l, (int,)) or isinstance(l, bool) or not 0 <= l < n_layers]
        if bad:
            raise ValueError(f"Layer(s) {bad} are outside this model: layers run from 0 to {n_layers - 1}.")
        chosen = [s for s in chosen if s.layer is None or s.layer in layers]
    if not chosen:
        raise ValueError(f"No norm sites match roles={roles}, layers={layers}, stack={stack}.")
    return chosen


def default_roles(sites: Sequence[NormSite]) -> tuple[tuple[str, ...], str]:
    """The roles that stand for the paper's block-output LayerNorms in this model, and why (one sentence).

    Post-LN (BERT-like): ``block_output``, the norm whose output is each layer's output. Pre-LN: no norm
    writes the stream, so the norm before the feed-forward (``pre_ffn``, else the parallel one, else the one
    before attention) stands in: it is the last norm of each layer and reads the whole residual stream.
    """
    present = {s.role for s in sites}
    if "block_output" in present:
        return ("block_output",), (
            "post-LN model: the block-output norms, whose output is each layer's output, are the paper's sites"
        )
    for role, what in (
        ("pre_ffn", "the norm before each feed-forward"),
        ("pre_parallel", "the one norm before each layer's parallel attention and feed-forward"),
        ("pre_attention", "the norm before each attention"),
    ):
        if role in present:
            return (role,), (
                f"pre-LN model: no norm writes the residual stream, so {what} ({role}) stands in "
                "for the paper's block-output LayerNorms: it reads the whole stream, and its weight "
                "scales the outlier dims before the sub-layer"
            )
    if "block_input" in present:
        return ("block_input",), (
            "norm-on-entry model: each layer normalises the incoming stream and carries the "
            "normalised stream on (block_input), so that norm, which reads the previous "
            "layer's output and writes the stream, stands in for the paper's block-output "
            "LayerNorms"
        )
    raise ValueError(f"This model has no layer norms to stand in for block-output sites (roles: {sorted(present)}).")


def norm_placement(sites: Sequence[NormSite], stack: str | None = None) -> str:
    """'post-LN' (a norm on the residual stream after a sub-layer: ``block_output`` or ``attention_output``),
    'pre-LN' (norms only in front of sub-layers: a ``PRE_LN_ROLES`` role) or 'unknown', for ``stack`` (None:
    the whole model)."""
    roles = {s.role for s in sites if stack is None or s.stack == stack}
    if roles & {"block_output", "attention_output"}:
        return "post-LN"
    if roles & set(PRE_LN_ROLES):
        return "pre-LN"
    return "unknown"


def ablation_roles(sites: Sequence[NormSite], stack: str | None = None) -> tuple[str, ...]:
    """The roles a hidden-dim ablation disables in ``stack`` (None: the whole model): the block-output norms
    when the model has them (post-LN: the paper's sites, they ARE the residual stream), else every pre-LN role
    it has (``PRE_LN_ROLES`` order: GPT-2, Pythia, Llama get ``pre_attention`` + ``pre_ffn``). ValueError when
    it has neither (sandwich-only OLMo2, MiniMax's norm on entry): the caller decides what stands in.

    Example:
        >>> ablation_roles(find_norm_sites(gpt2))  # doctest: +SKIP
        ('pre_attention', 'pre_ffn')
    """
    present = {s.role for s in sites if stack is None or s.stack == stack}
    if "block_output" in present:
        return ("block_output",)
    pre = tuple(r for r in PRE_LN_ROLES if r in present)
    if not pre:
        raise ValueError(f"No block-output or pre-LN norms to disable (roles: {sorted(present)}).")
    return pre


ROLE_LABELS = {
    "embeddings": "embedding",
    "block_input": "block-input",
    "attention_output": "attention-output",
    "cross_attention_output": "cross-attention-output",
    "block_output": "block-output",
    "pre_attention": "pre-attention",
    "pre_cross_attention": "pre-cross-attention",
    "pre_ffn": "pre-FFN",
    "pre_parallel": "pre-parallel",
    "post_attention": "post-attention",
    "post_cross_attention": "post-cross-attention",
    "post_ffn": "post-FFN",
    "qk_norm": "query/key",
    "inner": "inner",
    "final": "final",
    "head": "LM-head",
}


def role_label(roles: Iterable[str] | str) -> str:
    """Words for a role set in titles and sentences, e.g. ``block-output`` or ``pre-FFN``."""
    roles = (roles,) if isinstance(roles, str) else tuple(roles)
    return " + ".join(ROLE_LABELS.get(r, r) for r in roles)


def companion_roles(sites: Sequence[NormSite], roles: Iterable[str]) -> tuple[str, ...]:
    """The model's other hidden-dim roles worth showing next to ``roles``: layer roles first (ROLES order), then
    the embedding norm; final and head norms are left out (one site each, shown in the every-site heatmap)."""
    present = {s.role for s in sites}
    roles = set(roles)
    layered = tuple(
        r for r in HIDDEN_ROLES if r in present and r not in roles and r not in ("embeddings", "final", "head")
    )
    return layered + (("embeddings",) if "embeddings" in present and "embeddings" not in roles else ())


def sites_table(sites: Sequence[NormSite]) -> "pd.DataFrame":
    """A tidy table of the sites (name, role, layer, stack, size, has_bias) to show what an ablation touches."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "name": s.name,
                "role": s.role,
                "layer": s.layer,
                "stack": s.stack,
                "size": s.size,
                "has_bias": s.bias is not None,
            }
            for s in sites
        ]
    )
