"""bertbusters_nb: find, measure and disable outlier dimensions in transformers models.

Importing the package only defines names; it loads no model, touches no global state and imports neither torch nor
transformers: each public name below is imported from its module on first use (PEP 562 module ``__getattr__``), so
``python -m bertbusters_nb run ...`` starts in about a second and only the notebooks' kernels pay for torch.
``import bertbusters_nb as bb; bb.load_model(...)`` and ``from bertbusters_nb import detect`` work as usual, and
submodules are imported where they are used: ``from bertbusters_nb.evaluation import evaluate_conditions``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same names, for type checkers and editors
    from . import reporting
    from .analysis import detection, outliers
    from .analysis.activations import activation_stats, outlier_share
    from .analysis.baselines import random_dims, rank_against
    from .analysis.detection import detect, dims_to_ablate
    from .analysis.outliers import OutlierReport, find_outliers, parameter_table
    from .analysis.rule import DEFAULT_RULE, DetectionRule
    from .device import best_device
    from .model.ablation import Condition, disabled_dims, fingerprints_equal, state_fingerprint, validate_dims
    from .model.discovery import find_norm_sites
    from .model.loading import ALIASES, ModelLoadError, load_model
    from .model.sites import NormLayoutError, NormSite, select_sites, sites_table
    from .reporting import RunRecorder, notebook_parameters

# public name -> the module that defines it (a module itself when the name is one)
_HOMES = {
    "Condition": "model.ablation",
    "disabled_dims": "model.ablation",
    "fingerprints_equal": "model.ablation",
    "state_fingerprint": "model.ablation",
    "validate_dims": "model.ablation",
    "activation_stats": "analysis.activations",
    "outlier_share": "analysis.activations",
    "random_dims": "analysis.baselines",
    "rank_against": "analysis.baselines",
    "best_device": "device",
    "ALIASES": "model.loading",
    "ModelLoadError": "model.loading",
    "load_model": "model.loading",
    "NormLayoutError": "model.sites",
    "NormSite": "model.sites",
    "select_sites": "model.sites",
    "sites_table": "model.sites",
    "find_norm_sites": "model.discovery",
    "OutlierReport": "analysis.outliers",
    "find_outliers": "analysis.outliers",
    "parameter_table": "analysis.outliers",
    "dims_to_ablate": "analysis.detection",
    "detect": "analysis.detection",
    "DetectionRule": "analysis.rule",
    "DEFAULT_RULE": "analysis.rule",
    "RunRecorder": "reporting",
    "notebook_parameters": "reporting",
}
_MODULES = {"detection": "analysis.detection", "outliers": "analysis.outliers", "reporting": "reporting"}

__all__ = [
    "Condition",
    "disabled_dims",
    "fingerprints_equal",
    "state_fingerprint",
    "validate_dims",
    "activation_stats",
    "outlier_share",
    "random_dims",
    "rank_against",
    "best_device",
    "ALIASES",
    "ModelLoadError",
    "load_model",
    "NormLayoutError",
    "NormSite",
    "select_sites",
    "sites_table",
    "find_norm_sites",
    "OutlierReport",
    "find_outliers",
    "parameter_table",
    "dims_to_ablate",
    "detect",
    "DetectionRule",
    "DEFAULT_RULE",
    "RunRecorder",
    "notebook_parameters",
    "detection",
    "outliers",
    "reporting",
]


assert set(__all__) == {*_HOMES, *_MODULES}


def __getattr__(name: str) -> Any:
    """Import a public name (or a subpackage such as ``bb.model``) on first use, then keep it as an attribute."""
    if name in _MODULES:
        value: Any = importlib.import_module(f"{__name__}.{_MODULES[name]}")
    elif name in _HOMES:
        value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    elif not name.startswith("__"):
        try:
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
