"""The residual writers of a model: each block's FFN output projection, found by tracing (not by name).

A residual writer is the module that adds a block's feed-forward output into the residual stream: Llama's
``mlp.down_proj``, BERT's ``output.dense``, GPT-2's ``mlp.c_proj`` (a ``Conv1D``: its weight is (in, out)),
OPT's ``fc2``. Like the norm sites (``discovery``), it is found from what the forward does: in one dummy
forward (``tracing.dummy_inputs``), per layer (the module holding that layer's norm sites), the last weighted
leaf called inside the layer whose output has the stream's width, checked by zeroing its output: the input of
the stream norm that runs next must change (the same layer's block-output LayerNorm in a post-LN model, the
next layer's first norm or the final norm in a pre-LN one). Its weight layout (``x @ W.T`` or ``x @ W``) is
read off the traced call. Module names are never decisive.

Single scalars of a writer's weight are the super weights of Yu et al. (2024); ``zeroed_scalars`` gives the
edits that zero them under the one edit context (``edits.edited``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import pandas as pd
import torch
from torch import nn

from .discovery import find_norm_sites
from .edits import ParamFill, eval_mode
from .hooks import Trace, first_tensor
from .sites import POST_LN_ROLES, PRE_LN_ROLES, NormSite
from .tracing import dummy_inputs

__all__ = ["STREAM_ROLES", "ResidualWriter", "find_residual_writers", "writers_table", "zeroed_scalars"]

# Norms whose input is the residual stream itself (what a residual writer's output reaches next).
STREAM_ROLES: tuple[str, ...] = POST_LN_ROLES + PRE_LN_ROLES + ("final",)


@dataclass(frozen=True)
class ResidualWriter:
    """One block's FFN output projection: the module that adds the feed-forward's output to the stream.

    name: module name. layer: the block's index in its stack. stack: 'encoder' or 'decoder'.
    module: the module (not compared). transposed: its weight is (in, out) (GPT-2's ``Conv1D``: y = x @ W),
    else (out, in) (``nn.Linear``: y = x @ W.T). norm: the stream norm site its output reaches next (the same
    block's block-output LayerNorm in a post-LN model, the next block's first norm or the final norm in a
    pre-LN one). norm_role: that site's role.
    """

    name: str
    layer: int
    stack: str
    module: nn.Module = field(compare=False, repr=False)
    transposed: bool = False
    norm: str = ""
    norm_role: str = ""

    @property
    def weight(self) -> torch.Tensor:
        return _weight_of(self.module)

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[0 if self.transposed else 1])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[1 if self.transposed else 0])

    def index(self, out_channel: int, in_channel: int) -> tuple[int, int]:
        """The position of scalar (output channel j, input channel k) in ``weight``."""
        return (int(in_channel), int(out_channel)) if self.transposed else (int(out_channel), int(in_channel))

    def matrix(self) -> torch.Tensor:
        """The weight as (out, in), a view (no copy)."""
        return self.weight.T if self.transposed else self.weight


def _block_name(site_names: Sequence[str], modules: Mapping[str, nn.Module]) -> str:
    """The module holding one layer's norms: their longest common dotted prefix; for a layer with one norm,
    the innermost ancestor that is an element of a ``ModuleList``."""
    parts = [n.split(".") for n in site_names]
    common: list[str] = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    if len(site_names) > 1 and common:
        return ".".join(common)
    path = parts[0]
    for cut in range(len(path) - 1, 0, -1):
        parent = modules.get(".".join(path[: cut - 1])) if cut > 1 else None
        if isinstance(parent, nn.ModuleList):
            return ".".join(path[:cut])
    raise LookupError(f"no layer module holds the norm {site_names[0]!r} (not inside a ModuleList).")


def _weight_of(module: nn.Module) -> torch.Tensor:
    weight = module.weight
    if not isinstance(weight, torch.Tensor):  # nn.Module's attribute lookup may also give a submodule
        raise TypeError(f"{type(module).__name__}.weight is a {type(weight).__name__}, not a tensor.")
    return weight


def _is_weighted_leaf(module: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return (
        not list(module.children())
        and isinstance(weight, torch.Tensor)
        and weight.dim() == 2
        and not isinstance(module, nn.Embedding)
    )


def _layout(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> bool | None:
    """Whether the traced call computed ``x @ W`` (True), ``x @ W.T`` (False), or neither (None)."""
    w = _weight_of(module).detach().float()
    x, y = x.detach().float().reshape(-1, x.shape[-1]), y.detach().float().reshape(-1, y.shape[-1])
    bias = getattr(module, "bias", None)
    b = bias.detach().float() if isinstance(bias, torch.Tensor) else 0.0
    tol = 1e-3 * (1.0 + float(y.abs().max()))
    for transposed, mat in ((False, w.T), (True, w)):
        if mat.shape == (x.shape[-1], y.shape[-1]) and float((x @ mat + b - y).abs().max()) <= tol:
            return transposed
    return None


def find_residual_writers(model: nn.Module, sites: Sequence[NormSite] | None = None) -> list[ResidualWriter]:
    """Each block's FFN output projection, found by tracing one dummy forward (see the module docstring).

    Raises LookupError when a block has no leaf that writes the stream (named, with what was seen).

    Example:
        >>> [w.name for w in find_residual_writers(model)][:1]  # doctest: +SKIP
        ['model.layers.0.mlp.down_proj']
    """
    sites = list(sites) if sites is not None else find_norm_sites(model)
    modules = dict(model.named_modules())
    stream = [s for s in sites if s.role in STREAM_ROLES]
    width = max(s.size for s in stream)
    layers: dict[tuple[str, int], list[str]] = {}
    for s in sites:
        if s.layer is not None:
            layers.setdefault((s.stack, s.layer), []).append(s.name)
    blocks = {key: _block_name(names, modules) for key, names in layers.items()}
    leaves = {
        name: mod
        for name, mod in modules.items()
        if _is_weighted_leaf(mod) and any(name.startswith(b + ".") for b in blocks.values())
    }
    traced = {**leaves, **{s.name: s.module for s in stream}}
    inputs = dummy_inputs(model)
    with torch.no_grad(), eval_mode(model), Trace(model, traced, retain_input=True, clone=True) as trace:
        model(**inputs)
    writers = []
    for (stack, layer), block in sorted(blocks.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        inside = [
            (trace[n].calls[-1], n)
            for n in leaves
            if n.startswith(block + ".") and trace[n].calls and _width(trace[n].calls[-1].output) == width
        ]
        if not inside:
            raise LookupError(f"block {block!r} has no weighted leaf with an output of the stream's width {width}.")
        for call, name in sorted(inside, key=lambda cn: -cn[0].end):  # the last one called first
            norm = _next_stream_norm(trace, stream, call.end)
            if norm is None or not _writes(model, inputs, {name: modules[name]}, norm, trace[norm.name].calls[0].input):
                continue
            x, y = call.input, first_tensor(call.output)
            transposed = _layout(modules[name], x, y)
            if transposed is None:
                continue
            writers.append(ResidualWriter(name, layer, stack, modules[name], transposed, norm.name, norm.role))
            break
        else:
            raise LookupError(
                f"block {block!r}: none of {[n for _, n in inside]} is a linear map whose output reaches the "
                "next stream norm's input."
            )
    return writers


def _width(output: Any) -> int | None:
    try:
        return int(first_tensor(output).shape[-1])
    except LookupError:
        return None


def _next_stream_norm(trace: Trace, stream: Sequence[NormSite], after: int) -> NormSite | None:
    started = [(c.start, s) for s in stream for c in trace[s.name].calls if c.start > after]
    return min(started, key=lambda cs: cs[0])[1] if started else None


def _writes(model: nn.Module, inputs: dict, writer: dict[str, nn.Module], norm: NormSite, intact: torch.Tensor) -> bool:
    """Whether zeroing the writer's output changes ``norm``'s input (it adds into the stream the norm reads);
    the forward stops at the norm."""

    def zero(_name, output, _call):
        return torch.zeros_like(output) if torch.is_tensor(output) else None

    with (
        torch.no_grad(),
        eval_mode(model),
        Trace(model, writer, retain_output=False, edit_output=zero),
        Trace(model, {norm.name: norm.module}, retain_input=True, retain_output=False, clone=True, stop=True) as seen,
    ):
        model(**inputs)
    return bool(seen[norm.name].calls) and not torch.equal(seen[norm.name].calls[0].input, intact)


def zeroed_scalars(scalars: Iterable[tuple[ResidualWriter, int, int]]) -> Iterator[ParamFill]:
    """The edits that zero each scalar (writer, output channel j, input channel k) of a writer's weight, for
    ``edits.edited`` (restored bit-exactly on exit, whatever happens).

    Example:
        >>> with edited(zeroed_scalars([(writer, 507, 1229)])):  # doctest: +SKIP
        ...     loss = model(**batch).loss
    """
    for writer, row, col in scalars:
        yield ParamFill(writer.weight, writer.index(row, col), 0.0)


def writers_table(writers: Sequence[ResidualWriter]) -> pd.DataFrame:
    """One row per writer: layer, stack, module name, weight layout, (out, in) shape and the norm it feeds."""
    return pd.DataFrame(
        [
            {
                "layer": w.layer,
                "stack": w.stack,
                "writer": w.name,
                "kind": type(w.module).__name__,
                "layout": "x @ W" if w.transposed else "x @ W.T",
                "out": w.out_features,
                "in": w.in_features,
                "feeds_norm": w.norm,
                "norm_role": w.norm_role,
            }
            for w in writers
        ]
    )
