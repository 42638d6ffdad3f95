"""bertbusters_nb: find, measure and disable outlier dimensions in transformers models.

Importing the package only defines names; it loads no model and touches no global state.
"""
from .ablation import Condition, disabled_dims, state_fingerprint, validate_dims
from .activations import activation_stats, outlier_share
from .baselines import random_dims, rank_against
from .device import best_device
from .loading import ALIASES, ModelLoadError, load_model
from .norms import NormLayoutError, NormSite, find_norm_sites, select_sites, sites_table
from .outliers import OutlierReport, find_outliers, parameter_table
from .results import RunRecorder

__all__ = [
    "Condition", "disabled_dims", "state_fingerprint", "validate_dims", "activation_stats", "outlier_share",
    "random_dims", "rank_against", "best_device", "ALIASES", "ModelLoadError", "load_model", "NormLayoutError",
    "NormSite", "find_norm_sites", "select_sites", "sites_table", "OutlierReport", "find_outliers",
    "parameter_table", "RunRecorder",
]
