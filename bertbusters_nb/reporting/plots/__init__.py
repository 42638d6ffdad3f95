"""Figures; every function returns a matplotlib Figure and saving is ``RunRecorder``'s job.

``core``: the outlier analysis (notebooks 00-03: parameters, z-scores, scans, against random draws,
pre-training trajectories); ``downstream``: the fine-tuned tasks of notebook 04; ``why``: frequency,
attention sinks and quantization of notebook 07. All their names are importable from here.
"""

from __future__ import annotations

from .core import (
    ablation_over_steps,
    against_random,
    bar_conditions,
    layer_lines,
    loss_curves,
    norm_parameter_lines,
    parameters_over_steps,
    plot_flags_over_steps,
    scan_plot,
    zscore_heatmap,
)
from .downstream import baseline_bars, conditions_vs_random, outliers_before_after, relative_change_strip, scan_grid
from .why import correlation_by_layer, frequency_scatter, kurtosis_by_layer, quantization_bars, sink_heatmaps

__all__ = [
    "ablation_over_steps",
    "against_random",
    "bar_conditions",
    "layer_lines",
    "loss_curves",
    "norm_parameter_lines",
    "parameters_over_steps",
    "plot_flags_over_steps",
    "scan_plot",
    "zscore_heatmap",
    "baseline_bars",
    "conditions_vs_random",
    "outliers_before_after",
    "relative_change_strip",
    "scan_grid",
    "correlation_by_layer",
    "frequency_scatter",
    "kurtosis_by_layer",
    "quantization_bars",
    "sink_heatmaps",
]
