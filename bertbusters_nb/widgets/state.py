"""What the explorer's controls say, as one frozen, validated, hashable value.

``ExplorerState`` is the only thing that crosses from the controls to the model side: views and
figures are cached by it, and ``condition()`` turns it into the ablation ``Condition`` that is applied
(and undone) for every computation. It knows nothing of a model; ``Explorer.check_state`` checks a
state against one.

Example:
    >>> state = ExplorerState(dims=[81, 31], layers=(1, 3))
    >>> state.condition().layers
    (1, 2, 3)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from ..model.ablation import Condition
from ..model.edits import MODES, Mode
from ..model.sites import ROLES, NormSite

DEFAULT_SENTENCE = "the movie was [MASK] and the acting was [MASK] ."
DEFAULT_PROMPT = "The movie was"  # a causal LM continues the text: no blanks

ScalarKey = tuple[str, int, int]  # (module name, row, col): one weight scalar, in the weight tensor's own layout


@dataclass(frozen=True)
class ExplorerState:
    """What the controls say; hashable, so views can be cached by state.

    dims: hidden dims switched off (sorted, unique; empty: intact model).
    layers: first and last layer (inclusive) whose norms are edited; norms outside the layers
        (embeddings, LM head) ignore it. None: all layers.
    roles: norm-site roles edited (see ``sites.ROLES``); empty: nothing is edited.
    mode: 'zero' (weight and bias set to 0) or 'mean' (set to the site's mean).
    sentence: the user's sentence with [MASK] blanks.
    super_weights: weight scalars zeroed (a causal LM's super weights), each (residual writer's module name,
        row, col) of that module's ``weight`` tensor (sorted, unique; empty: none).
    """

    dims: tuple[int, ...] = ()
    layers: tuple[int, int] | None = None
    roles: tuple[str, ...] = ("block_output",)
    mode: Mode = "zero"
    sentence: str = DEFAULT_SENTENCE
    super_weights: tuple[ScalarKey, ...] = ()

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
        scalars = self.super_weights
        if isinstance(scalars, (str, bytes)) or not isinstance(scalars, Iterable):
            raise TypeError(f"super_weights must be (module name, row, col) triples, got {scalars!r}.")
        keys = set()
        for key in scalars:
            if isinstance(key, (str, bytes)) or len(key) != 3:
                raise TypeError(f"super_weights must be (module name, row, col) triples, got {key!r}.")
            keys.add((str(key[0]), int(key[1]), int(key[2])))
        object.__setattr__(self, "super_weights", tuple(sorted(keys)))

    @property
    def disables_dims(self) -> bool:
        """True when this state switches dims off in some norms."""
        return bool(self.dims) and bool(self.roles)

    @property
    def ablates(self) -> bool:
        """True when this state edits the model at all (dims switched off, or weight scalars zeroed)."""
        return self.disables_dims or bool(self.super_weights)

    @property
    def model_key(self) -> tuple:
        """The part of the state that decides the model's parameters (not the sentence)."""
        if not self.ablates:
            return ()
        dims = (self.dims, self.layers, self.roles, self.mode) if self.disables_dims else ()
        return dims + ((self.super_weights,) if self.super_weights else ())

    @property
    def layer_indices(self) -> tuple[int, ...] | None:
        """The edited layers as indices (None: all layers)."""
        return None if self.layers is None else tuple(range(self.layers[0], self.layers[1] + 1))

    def condition(self) -> Condition:
        """This state's norm edits as an ablation ``Condition`` (no dims when it switches none off; the zeroed
        scalars are applied by the explorer, which knows the modules)."""
        dims = self.dims if self.disables_dims else ()
        roles = self.roles or ("block_output",)
        return Condition("explorer", dims, roles, self.layer_indices, self.mode)

    def touched(self, sites: Sequence[NormSite]) -> list[NormSite]:
        """The norm modules of ``sites`` this state edits (empty when it switches no dim off)."""
        if not self.disables_dims:
            return []
        return self.condition().sites(sites)

    def with_changes(self, **changes) -> ExplorerState:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def describe_sites(self) -> str:
        """Where this state's dims are disabled, in words (roles, layers, mode), whatever its dims."""
        layers = "all layers" if self.layers is None else f"layers {self.layers[0]}-{self.layers[1]}"
        return f"{'+'.join(self.roles) or 'no'} norms, {layers}, set to {'0' if self.mode == 'zero' else 'the mean'}"

    def describe(self) -> str:
        parts = []
        if self.disables_dims:
            layers = "all layers" if self.layers is None else f"layers {self.layers[0]}-{self.layers[1]}"
            parts.append(
                f"dims {' '.join(map(str, self.dims))} set to {'0' if self.mode == 'zero' else 'the mean'} in "
                f"{'+'.join(self.roles)} norms, {layers}"
            )
        if self.super_weights:
            scalars = ", ".join(f"{name}.weight[{row}, {col}]" for name, row, col in self.super_weights)
            parts.append(f"super weight{'s' if len(self.super_weights) > 1 else ''} {scalars} set to 0")
        if parts:
            return "; ".join(parts)
        if not self.dims:
            return "intact model (no dim switched off)"
        return "intact model (no site role chosen)"


__all__ = ["DEFAULT_PROMPT", "DEFAULT_SENTENCE", "ExplorerState", "ScalarKey"]
