"""Disable chosen hidden dimensions in chosen norm sites, reversibly: ``disabled_dims`` and ``Condition``.

The edit itself (what a disabled dim's weight and bias become: ``edits.disabled_fill``) and the context that
makes it and undoes it (``edits.edited``) live in ``edits``, with every other temporary change to a model.
Every edit happens inside a ``with`` block and is undone on exit, also when the body raises (KeyboardInterrupt
included) and when blocks nest: the original values of exactly the touched entries are saved before the edit
and copied back after, so the model is restored bit for bit without reloading it from disk.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, fields
from typing import Any, Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn

from .edits import MODES, Mode, disabled_fill, edited, eval_mode, norm_dim_edits
from .hooks import Trace, first_tensor
from .sites import NormSite, select_sites
from .tracing import dummy_inputs


def validate_dims(dims: Iterable[int], size: int) -> list[int]:
    """Check ``dims`` against a hidden size: integers, in range, no duplicates, not empty."""
    if isinstance(dims, (str, bytes)) or not isinstance(dims, Iterable):
        raise TypeError(f"dims must be a list of integers, got {dims!r}.")
    dims = list(dims)
    if not dims:
        raise ValueError("dims is empty: pass at least one hidden dimension to disable.")
    bad_type = [
        d
        for d in dims
        if isinstance(d, bool)
        or not isinstance(d, (int,))
        and not (hasattr(d, "__index__") and not isinstance(d, float))
    ]
    if bad_type:
        raise TypeError(f"dims must be integers; got {bad_type}. Convert them with int(...).")
    dims = [int(d) for d in dims]
    bad = [d for d in dims if not 0 <= d < size]
    if bad:
        raise ValueError(f"dims {bad} are out of range: this model's hidden size is {size} (valid: 0..{size - 1}).")
    dupes = sorted({d for d in dims if dims.count(d) > 1})
    if dupes:
        raise ValueError(f"dims {dupes} are listed more than once; pass each dimension once.")
    return dims


@contextlib.contextmanager
def disabled_dims(sites: Sequence[NormSite], dims: Iterable[int], mode: Mode = "zero") -> Iterator[list[NormSite]]:
    """Disable ``dims`` in ``sites`` (effective scale and shift 0, or the site's mean: ``edits.disabled_fill``,
    which knows Gemma's ``x * (1 + w)``); restore bit for bit on exit. A site without affine parameters
    has nothing to disable: ValueError naming it.

    Example:
        >>> with disabled_dims(select_sites(find_norm_sites(model)), [308, 381]):
        ...     loss = model(**batch).loss  # doctest: +SKIP
    """
    sites = list(sites)
    if not sites:
        raise ValueError(
            "No norm sites selected: pick roles/layers that exist (see sites_table(find_norm_sites(model)))."
        )
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}; pick one of {MODES}.")
    sizes = {s.size for s in sites}
    dims = validate_dims(dims, min(sizes))
    for site in sites:
        if not site.can_disable:
            disabled_fill(site, site.weight, mode)  # raises, naming the site and why
    with edited(norm_dim_edits(sites, dims, mode)):
        yield sites


@dataclass(frozen=True)
class Condition:
    """One ablation condition, as data (so it can be tabled, saved and re-run).

    name: label in result tables. dims: hidden dims to disable (empty: intact model).
    roles: site roles touched. layers: layer indices (None: all). mode: 'zero' or 'mean'.
    stack: 'encoder'/'decoder' or None for any.
    """

    name: str
    dims: tuple[int, ...] = ()
    roles: tuple[str, ...] = ("block_output",)
    layers: tuple[int, ...] | None = None
    mode: Mode = "zero"
    stack: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "dims", tuple(int(d) for d in self.dims))
        object.__setattr__(self, "roles", (self.roles,) if isinstance(self.roles, str) else tuple(self.roles))
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(l) for l in self.layers))
        if self.mode not in MODES:
            raise ValueError(f"Unknown mode {self.mode!r}; pick one of {MODES}.")

    def sites(self, all_sites: Sequence[NormSite]) -> list[NormSite]:
        return select_sites(all_sites, roles=self.roles, layers=self.layers, stack=self.stack)

    def apply(self, all_sites: Sequence[NormSite]) -> contextlib.AbstractContextManager:
        """The context that puts this condition in force (a no-op for the intact model)."""
        if not self.dims:
            return contextlib.nullcontext([])
        return disabled_dims(self.sites(all_sites), self.dims, self.mode)

    def to_dict(self) -> dict[str, Any]:
        """Every field as JSON-safe data (tuples as lists, None kept), stored with a result row so that the
        row can be re-run exactly: ``Condition.from_dict(c.to_dict()) == c``.

        Example:
            >>> Condition("outliers", dims=(308, 381)).to_dict()["dims"]
            [308, 381]
        """
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Condition":
        """The condition ``to_dict`` wrote (also after a JSON round trip); unknown keys are an error naming them.

        Example:
            >>> Condition.from_dict(json.loads(json.dumps(c.to_dict()))) == c   # doctest: +SKIP
            True
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"Condition.from_dict: unknown keys {unknown}; a condition has {sorted(known)} "
                f"(pass what Condition.to_dict() wrote)."
            )
        if "name" not in data:
            raise ValueError("Condition.from_dict: 'name' is missing (pass what Condition.to_dict() wrote).")
        return cls(**data)  # __post_init__ turns the lists back into tuples

    def describe(self) -> dict:
        d = asdict(self)
        d["dims"] = " ".join(map(str, self.dims))
        d["roles"] = "+".join(self.roles)
        d["layers"] = "all" if self.layers is None else " ".join(map(str, self.layers))
        return d


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


def state_fingerprint(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every parameter and buffer, to assert bit-exact restoration in tests."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def fingerprints_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """True when two ``state_fingerprint`` results are bit-identical."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def verify_sites(model: nn.Module, sites: Sequence[NormSite], dim: int = 1) -> list[str]:
    """Problems found when disabling dim ``dim`` of each site: on the input the norm gets in a forward pass
    (caught with a ``Trace``), its output with the dim disabled must be its plain output with that dim
    zeroed, other dims bit-identical. Sites without affine parameters must refuse the ablation.
    Empty list: every site verified."""
    with (
        Trace(model, {site.name: site.module for site in sites}, retain_input=True, retain_output=False) as trace,
        torch.no_grad(),
        eval_mode(model),
    ):
        model(**dummy_inputs(model))
    # the first call's input of each site that ran
    inputs = {r.name: (r.calls[0].args, r.calls[0].kwargs) for r in trace.records.values() if r.calls}
    problems = []
    for site in sites:
        if not site.can_disable:
            try:
                with disabled_dims([site], [0]):
                    pass
                problems.append(f"{site.name}: nothing to disable, yet the ablation ran")
            except ValueError:
                pass
            continue
        if site.name not in inputs:
            problems.append(f"{site.name}: did not run")
            continue
        args, kwargs = inputs[site.name]
        d = dim % site.size
        with torch.no_grad(), eval_mode(model):
            before = first_tensor(site.module(*args, **kwargs)).detach().clone()
            with disabled_dims([site], [d]):
                after = first_tensor(site.module(*args, **kwargs)).detach().clone()
        want = before.clone()
        want[..., d] = 0
        if not torch.allclose(after.float(), want.float(), atol=1e-6, rtol=0):
            problems.append(
                f"{site.name} ({site.role}): disabling dim {d} != zeroing it in the output "
                f"(max diff {float((after - want).abs().max()):.3g})"
            )
    return problems
