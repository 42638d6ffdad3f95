"""The one detection rule's settings: every threshold the project's outlier criteria use, in one frozen dataclass.

``DEFAULT_RULE`` holds the values measured on MiniLM, bbmini (+ seed candidates) and SmolLM2 (README, "Which
dims: the detection rule"; notebook 02 recomputes the agreement table). Every signature that needs a
threshold takes its default from here (``k: float = DEFAULT_RULE.k``), so changing the rule changes them all.
``detection.detect`` applies the rule; ``criteria`` holds the criteria it combines.

Example:
    >>> from dataclasses import replace
    >>> strict = replace(DEFAULT_RULE, k=4.0)
    >>> strict.k, DEFAULT_RULE.k
    (4.0, 3.0)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

# Roles whose parameters are weighed by default: every site on the hidden dim except these (an LM head's own norm,
# per-head query/key norms).
PARAM_ROLES_ALL = "all"
UNWEIGHED_ROLES = ("head", "qk_norm")


@dataclass(frozen=True)
class DetectionRule:
    """Which hidden dims are outliers: (a) norm parameters or (b) hidden-state magnitudes, never an effect.

    param_roles: norm roles whose weight and bias are weighed (``"all"``: every site but an LM head's own norm).
    k: a parameter entry is an outlier beyond ``k`` standard deviations of its vector's mean (the paper's 3 sigma).
    min_share: (a) selects a dim flagged in more than this share of the weighed sites ("most layers").
    activation_ratio: (b) a layer counts when the dim's mean |h| is at least this many times the median dim's.
    activation_layer_share: (b) selects a dim that counts in at least this share of the layers.
    n_texts: offline *train* reviews the activations are measured on (held-out texts judge ablations).
    max_length: tokens per activation text.
    fallback: when no dim passes (a model at initialisation), the rule returns this many strongest candidates.
    """

    param_roles: str | tuple[str, ...] = PARAM_ROLES_ALL
    k: float = 3.0
    min_share: float = 0.5
    activation_ratio: float = 20.0
    activation_layer_share: float = 0.5
    n_texts: int = 32
    max_length: int = 64
    fallback: int = 2

    def __post_init__(self) -> None:
        if self.k <= 0:
            raise ValueError(f"k must be positive, got {self.k}.")
        if not 0 <= self.min_share < 1:
            raise ValueError(f"min_share must be in [0, 1), got {self.min_share}.")
        if not 0 < self.activation_layer_share <= 1:
            raise ValueError(f"activation_layer_share must be in (0, 1], got {self.activation_layer_share}.")
        if self.activation_ratio <= 0 or self.n_texts < 1 or self.max_length < 1 or self.fallback < 0:
            raise ValueError(
                "activation_ratio must be positive, n_texts and max_length at least 1, fallback at least 0 "
                f"(got {self.activation_ratio}, {self.n_texts}, {self.max_length}, {self.fallback})."
            )
        if not isinstance(self.param_roles, str):  # a list from a command line or JSON: keep the rule hashable
            object.__setattr__(self, "param_roles", tuple(self.param_roles))

    def with_options(self, **options) -> DetectionRule:
        """A copy with some settings changed; an unknown name is refused with the list of known ones."""
        unknown = sorted(set(options) - {f.name for f in fields(self)})
        if unknown:
            raise ValueError(
                f"The detection rule has no setting(s) {unknown}; it has {[f.name for f in fields(self)]}."
            )
        return replace(self, **options)

    def as_dict(self) -> dict:
        """The settings as plain JSON values (role tuples as lists)."""
        return {name: list(v) if isinstance(v, tuple) else v for name, v in asdict(self).items()}


DEFAULT_RULE = DetectionRule()
