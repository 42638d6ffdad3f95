"""The one way this package hooks into a forward pass: a ``with Trace(...)`` block.

Everything that captures, probes or edits what a module sees or returns goes through
``Trace`` (after baukit's ``nethook.Trace``/``TraceDict`` and TransformerLens's hook points):
it registers a pre- and a post-hook on each named module, keeps every call's inputs and/or
output, can replace them (``edit_input``, ``edit_output``), can end the forward as soon as
every traced module has returned once (``stop=True``), and ALWAYS removes its hooks on exit,
also when the body raises (KeyboardInterrupt included) and when traces nest. Nobody calls
``register_forward_hook`` by hand.

Example:
    >>> with Trace(model, ["encoder.layer.0", "encoder.layer.1.output.LayerNorm"], stop=True) as trace:
    ...     model(**batch)                                    # doctest: +SKIP
    >>> trace["encoder.layer.1.output.LayerNorm"].output     # doctest: +SKIP

Design choices: a stopped forward raises the private ``_StopForward``, a ``BaseException`` so that
a model's own ``except Exception`` cannot swallow it, and only the trace that raised it catches it
(an outer trace's stop passes through an inner one). Kept objects are the module's own (identity
kept, ``out is other_out`` works) unless ``detach`` or ``clone`` asks for copies; ``clone`` copies at
hook time, so a later in-place change by the model (Falcon's ``mlp_output += attention_output``)
cannot alter what was kept.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch
from torch import nn

__all__ = ["Call", "Record", "Trace", "first_tensor"]


@dataclass
class Call:
    """One call of a traced module.

    index: 0 for the module's first call in this trace, 1 for the next, ...
    start, end: the trace's clock (one tick per hook, all traced modules together) when the module was
        entered and when it returned (end -1: it has not returned, e.g. the forward stopped inside it).
    args, kwargs: its inputs after ``edit_input`` (empty unless ``retain_input``).
    output: what it returned after ``edit_output`` (None unless ``retain_output``).
    """

    index: int
    start: int
    end: int = -1
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    output: Any = None

    @property
    def input(self) -> torch.Tensor:
        """The hidden-state input: the first positional tensor, else ``hidden_states=``; LookupError if neither."""
        if self.args and torch.is_tensor(self.args[0]):
            return self.args[0]
        if torch.is_tensor(self.kwargs.get("hidden_states")):
            return self.kwargs["hidden_states"]
        raise LookupError(
            "this call had no tensor as first positional input nor a hidden_states= tensor "
            "(or the trace did not keep inputs: pass retain_input=True)."
        )


@dataclass
class Record:
    """Every call of one traced module; ``input``/``output`` are the last call's (baukit's meaning)."""

    name: str
    module: nn.Module
    calls: list[Call] = field(default_factory=list)

    def _last(self) -> Call:
        if not self.calls:
            raise LookupError(f"module {self.name!r} did not run in this trace's forward.")
        return self.calls[-1]

    @property
    def output(self) -> Any:
        return self._last().output

    @property
    def input(self) -> torch.Tensor:
        return self._last().input


class _StopForward(BaseException):
    """Raised by a trace's post-hook to end the forward early; caught by that trace's ``__exit__`` only."""

    def __init__(self, trace: "Trace"):
        super().__init__("stopped by Trace(stop=True) once every traced module had returned")
        self.trace = trace


EditInput = Callable[[str, Call], "tuple[tuple, dict] | None"]
EditOutput = Callable[[str, Any, Call], Any]


class Trace:
    """Hooks on named modules for the duration of a ``with`` block.

    modules: a module name of ``model`` (``model.named_modules()``), several names, or a mapping
        name -> module (for modules already at hand). An unknown name is a LookupError naming close ones.
    retain_input / retain_output: keep each call's (args, kwargs) / output in ``trace[name].calls``.
    detach / clone: keep detached tensors / detached copies taken at hook time (default: the objects themselves).
    edit_input(name, call) -> (args, kwargs) or None: replaces the inputs (``call.args``/``call.kwargs`` hold them).
    edit_output(name, output, call) -> new output or None: replaces what the module returns (``call.args``
        still holds its inputs here, kept or not).
    stop: end the forward as soon as every traced module has returned once; the ``with`` block then
        continues after its body (statements after the model call in the body are skipped, as in baukit).

    Example:
        >>> with Trace(model, "encoder.layer.3", stop=True) as trace:
        ...     model(**batch)                                # doctest: +SKIP
        >>> hidden = trace.output[0]                          # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        modules: str | Iterable[str] | Mapping[str, nn.Module],
        *,
        retain_input: bool = False,
        retain_output: bool = True,
        detach: bool = False,
        clone: bool = False,
        edit_input: EditInput | None = None,
        edit_output: EditOutput | None = None,
        stop: bool = False,
    ):
        self.model = model
        self.modules = _resolve(model, modules)
        self.retain_input, self.retain_output = retain_input, retain_output
        self.detach, self.clone = detach or clone, clone
        self.edit_input, self.edit_output, self.stop = edit_input, edit_output, stop
        self.records: dict[str, Record] = {name: Record(name, mod) for name, mod in self.modules.items()}
        self.stopped = False
        self._clock = 0
        self._open: dict[str, list[tuple[Call, tuple, dict]]] = {}
        self._returned: set[str] = set()
        self._handles: list = []

    # ------------------------------------------------------------------ access
    def __getitem__(self, name: str) -> Record:
        try:
            return self.records[name]
        except KeyError:
            raise LookupError(f"{name!r} is not traced here; traced: {list(self.records)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def _only(self) -> Record:
        if len(self.records) != 1:
            raise LookupError(f"this trace holds {len(self.records)} modules; use trace[name].")
        return next(iter(self.records.values()))

    @property
    def output(self) -> Any:
        """The output of the only traced module (its last call)."""
        return self._only().output

    @property
    def input(self) -> torch.Tensor:
        """The hidden-state input of the only traced module (its last call)."""
        return self._only().input

    # ------------------------------------------------------------------ hooks
    def _keep(self, obj: Any) -> Any:
        if self.clone:
            return _map_tensors(obj, lambda t: t.detach().clone())
        if self.detach:
            return _map_tensors(obj, torch.Tensor.detach)
        return obj

    def _pre(self, name: str):
        def hook(_module, args, kwargs):
            self._clock += 1
            record = self.records[name]
            call = Call(index=len(record.calls), start=self._clock)
            record.calls.append(call)
            new = None
            if self.edit_input is not None:
                call.args, call.kwargs = args, kwargs
                new = self.edit_input(name, call)
                if new is not None:
                    args, kwargs = new
            if self.retain_input:
                call.args, call.kwargs = self._keep(tuple(args)), self._keep(dict(kwargs))
            else:
                call.args, call.kwargs = (), {}
            self._open.setdefault(name, []).append((call, args, kwargs))
            return None if new is None else (args, kwargs)  # None: the module gets its inputs untouched

        return hook

    def _post(self, name: str):
        def hook(_module, _args, _kwargs, output):
            self._clock += 1
            call, args, kwargs = self._open[name].pop()
            call.end = self._clock
            new = None
            if self.edit_output is not None:
                kept = call.args, call.kwargs
                call.args, call.kwargs = args, kwargs
                try:
                    new = self.edit_output(name, output, call)
                finally:
                    call.args, call.kwargs = kept
                if new is not None:
                    output = new
            if self.retain_output:
                call.output = self._keep(output)
            self._returned.add(name)
            if self.stop and len(self._returned) == len(self.records):
                self.stopped = True
                raise _StopForward(self)
            return None if new is None else output  # None: the module's own output goes on

        return hook

    def __enter__(self) -> "Trace":
        try:
            for name, module in self.modules.items():
                self._handles.append(module.register_forward_pre_hook(self._pre(name), with_kwargs=True))
                self._handles.append(module.register_forward_hook(self._post(name), with_kwargs=True))
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Remove every hook this trace registered (``__exit__`` does it; safe to call twice)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._open.clear()

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close()
        return isinstance(exc, _StopForward) and exc.trace is self


def first_tensor(obj: Any) -> torch.Tensor:
    """The hidden states of a module output: the tensor itself, the first item of a tuple/list, or
    ``last_hidden_state`` of a model output; LookupError otherwise."""
    if torch.is_tensor(obj):
        return obj
    if isinstance(obj, (tuple, list)) and obj and torch.is_tensor(obj[0]):
        return obj[0]
    hidden = getattr(obj, "last_hidden_state", None)
    if torch.is_tensor(hidden):
        return hidden
    raise LookupError(f"no hidden-state tensor in a {type(obj).__name__} output.")


def _resolve(model: nn.Module, modules: str | Iterable[str] | Mapping[str, nn.Module]) -> dict[str, nn.Module]:
    if isinstance(modules, Mapping):
        resolved = dict(modules)
        bad = [n for n, m in resolved.items() if not isinstance(m, nn.Module)]
        if bad:
            raise TypeError(f"Trace: {bad} map to objects that are not torch.nn.Module.")
    else:
        names = [modules] if isinstance(modules, str) else list(modules)
        known = dict(model.named_modules())
        resolved = {}
        for name in names:
            if name not in known:
                close = difflib.get_close_matches(name, list(known), n=3)
                raise LookupError(
                    f"{type(model).__name__} has no module named {name!r}"
                    + (f"; close: {close}" if close else "")
                    + " (see model.named_modules())."
                )
            resolved[name] = known[name]
    return resolved


def _map_tensors(obj: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``obj`` with ``fn`` applied to every tensor inside tuples, lists and dicts (a dict subclass such as a
    ModelOutput comes back as its own type when it can be rebuilt from keyword arguments, else as a dict)."""
    if torch.is_tensor(obj):
        return fn(obj)
    if isinstance(obj, tuple):
        items = [_map_tensors(o, fn) for o in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)
    if isinstance(obj, list):
        return [_map_tensors(o, fn) for o in obj]
    if isinstance(obj, dict):
        mapped = {k: _map_tensors(v, fn) for k, v in obj.items()}
        if type(obj) is dict:
            return mapped
        try:
            return type(obj)(**mapped)
        except Exception:  # noqa: BLE001 - a dict subclass that cannot be rebuilt: keep the values
            return mapped
    return obj
