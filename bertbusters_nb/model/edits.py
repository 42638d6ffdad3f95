"""Every temporary change this package makes to a model's parameters or modes, defined once, and the one
context that makes them and undoes them.

An edit is a small object with one method, ``apply() -> undo``: it saves exactly what it is about to change,
changes it, and returns a function that puts the saved values back bit for bit. ``edited(edits)`` applies
the edits in order inside a ``with`` block (under ``torch.no_grad``) and calls the undo functions in reverse
order on exit, also when the body raises (KeyboardInterrupt included), when an edit fails half-way through
the list (those already made are undone) and when blocks nest (each block restores what it found). Nothing is
reloaded from disk.

Kinds of edit:

* ``ParamFill(param, index, value)``: the entries ``param[index]`` take ``value`` (a number, a tensor, or a
  function of the current entries). ``index`` is anything tensor indexing takes: a LongTensor of hidden dims
  (a norm's weight or bias), ``(row, col)`` (one scalar of a weight matrix), ``...`` (the whole tensor).
* ``EvalMode(model)``: the model in eval mode, each module's own training flag restored.

Edits the package builds from these:

* disabling hidden dims of norm sites (``norm_dim_edits``, used by ``ablation.disabled_dims``): each
  site's weight and bias at those dims take ``disabled_fill`` (below), the one definition of "disable";
* a single scalar of a ``Linear`` / ``Conv1D`` weight (super weights): ``ParamFill(weight, (row, col), 0.0)``
  (``nn.Linear.weight`` is (out, in), GPT-2's ``Conv1D.weight`` is (in, out): name the coordinates of the
  weight tensor itself);
* the site finder's own probes (``discovery``): each norm's weight filled to find the value that zeroes its
  output, and small noise on every norm parameter while tracing.

A new kind is a class with ``apply`` (see ``Edit``); it goes here, next to the others.

Example:
    >>> with edited([ParamFill(layer.weight, (3, 7), 0.0)]):   # doctest: +SKIP
    ...     loss = model(**batch).loss
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Literal, Protocol, Sequence, Union

import torch
from torch import nn

from .sites import NormSite

Undo = Callable[[], None]
Mode = Literal["zero", "mean"]
MODES: tuple[str, ...] = ("zero", "mean")


class Edit(Protocol):
    """One reversible change: ``apply`` saves what it changes, changes it, and returns the undo function."""

    def apply(self) -> Undo: ...


FillValue = Union[torch.Tensor, float, Callable[[torch.Tensor], torch.Tensor]]


@dataclass(frozen=True, eq=False)
class ParamFill:
    """Set ``param[index]`` to ``value``; the undo copies the saved entries back (bit-exact).

    param: a parameter or buffer of the model (edited in place through ``.data``, so autograd is not involved).
    index: what tensor indexing takes: a LongTensor of dims, ``(row, col)`` for one scalar, ``...`` for all.
    value: a number or tensor (broadcast to the entries), or a function of the entries' current values
        (a copy), called when the edit is made.
    """

    param: torch.Tensor
    index: Any
    value: FillValue

    def apply(self) -> Undo:
        data = self.param.data
        original = data[self.index].clone()
        data[self.index] = self.value(original) if callable(self.value) else self.value

        def undo() -> None:
            data[self.index] = original

        return undo


@dataclass(frozen=True, eq=False)
class EvalMode:
    """The model in eval mode (no dropout: every forward deterministic); each module's flag restored."""

    model: nn.Module

    def apply(self) -> Undo:
        flags = [(m, m.training) for m in self.model.modules()]
        self.model.eval()

        def undo() -> None:
            for module, flag in flags:
                module.training = flag

        return undo


@contextlib.contextmanager
def edited(edits: Iterable[Edit]) -> Iterator[list[Edit]]:
    """Make ``edits`` in order for the ``with`` block and undo them in reverse on exit, whatever happens.

    A generator of edits is consumed one edit at a time, each built after the previous one was made. Yields
    the edits made.

    Example:
        >>> with edited([ParamFill(norm.weight, torch.tensor([308]), 0.0), EvalMode(model)]):   # doctest: +SKIP
        ...     out = model(**batch)
    """
    made: list[Edit] = []
    undo: list[Undo] = []
    try:
        with torch.no_grad():
            for edit in edits:
                undo.append(edit.apply())
                made.append(edit)
        yield made
    finally:
        with torch.no_grad():
            for restore in reversed(undo):
                restore()


def eval_mode(model: nn.Module) -> contextlib.AbstractContextManager:
    """The model in eval mode for a ``with`` block; every module's training flag restored on exit."""
    return edited([EvalMode(model)])


# ----------------------------------------------------------------------------- what "disable" means


def disabled_fill(site: NormSite, param: torch.Tensor | None, mode: str = "zero") -> torch.Tensor:
    """The value a disabled dim of ``param`` (the site's weight or bias) takes: the one definition of "disable".

    ``zero``: effective scale and shift 0 (weight ``-scale_offset``, so 0 for ``x * w`` and -1 for Gemma's
    ``x * (1 + w)``; bias 0). ``mean``: the mean effective value over the dims (weight and bias keep their own
    mean; the offset is common to every dim). Raises ValueError for a site that has nothing to disable.
    """
    if not site.can_disable:
        why = "it has no affine parameters" if site.weight is None else "no weight value zeroes its output (probed)"
        raise ValueError(
            f"Cannot disable dims of the norm '{site.name}': {why}, so there is nothing to switch off. "
            "Pick other roles (see sites_table(find_norm_sites(model)))."
        )
    if param is None or site.scale_offset is None:  # can_disable says neither is None
        raise ValueError(f"The norm '{site.name}' has no such parameter to disable.")
    if mode == "mean":
        return param.detach().float().mean().to(param.dtype)
    if mode != "zero":
        raise ValueError(f"Unknown mode {mode!r}; pick 'zero' or 'mean'.")
    fill = -float(site.scale_offset) if param is site.weight else 0.0
    return torch.tensor(fill, dtype=param.dtype, device=param.device)


def norm_dim_edits(sites: Sequence[NormSite], dims: Sequence[int], mode: str = "zero") -> Iterator[ParamFill]:
    """The edits that disable ``dims`` (checked by the caller: ``ablation.validate_dims``) in every site: weight
    and bias at those dims take ``disabled_fill``. A generator, so that under ``edited`` each fill is computed
    just before its edit is made (a ``mean`` fill sees the values the earlier edits left)."""
    indices: dict[torch.device, torch.Tensor] = {}  # one index tensor per device (a GPU copy each is costly)
    for site in sites:
        for param in (site.weight, site.bias):
            if param is None:
                continue
            if param.device not in indices:
                indices[param.device] = torch.tensor(list(dims), device=param.device)
            yield ParamFill(param, indices[param.device], disabled_fill(site, param, mode))
