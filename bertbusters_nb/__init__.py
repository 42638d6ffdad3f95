"""bertbusters_nb: find, measure and disable outlier dimensions in transformers models.

Importing the package only defines names; it loads no model and touches no global state.
Submodules with heavier imports (evaluation, pretraining, finetuning, widgets, runner) are
imported where they are used: ``from bertbusters_nb.evaluation import evaluate_conditions``.
"""

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
    "find_norm_sites",
    "select_sites",
    "sites_table",
    "OutlierReport",
    "dims_to_ablate",
    "detect",
    "DetectionRule",
    "DEFAULT_RULE",
    "detection",
    "find_outliers",
    "parameter_table",
    "RunRecorder",
    "outliers",
    "reporting",
    "notebook_parameters",
]
