"""Figures of notebook 07 (frequency, attention sinks, quantization); each returns a matplotlib Figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..claims import MIN_CORRELATION


def frequency_scatter(tables: pd.DataFrame, title: str = "") -> plt.Figure:
    """Per model (column ``model``): each token type's corpus count (log) against its mean |h| at the outlier dim."""
    models = list(dict.fromkeys(tables.model))
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.6), squeeze=False)
    for ax, model in zip(axes[0], models):
        t = tables[tables.model == model]
        kind = np.where(t.special, "special", np.where(t.delimiter, "delimiter", "other"))
        sns.scatterplot(
            x=t["count"] + 1,
            y=t.mean_abs,
            hue=kind,
            hue_order=["other", "delimiter", "special"],
            palette={"other": "tab:blue", "delimiter": "tab:orange", "special": "tab:red"},
            s=14,
            alpha=0.7,
            ax=ax,
            legend=ax is axes[0][0],
        )
        ax.set_xscale("log")
        ax.set(
            xlabel="corpus count + 1",
            ylabel="mean |h| at the outlier dim",
            title=f"{model}: dim {int(t.dim.iloc[0])}, layer {int(t.layer.iloc[0])}",
        )
    fig.suptitle(title or "token frequency vs outlier magnitude")
    fig.tight_layout()
    return fig


def correlation_by_layer(correlations: pd.DataFrame, measure: str = "partial_spearman", title: str = "") -> plt.Figure:
    """Per model, the correlation ``measure`` at each layer with its bootstrap CI; the dotted line is the threshold."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for model, t in correlations[correlations.measure == measure].groupby("model", sort=False):
        ax.errorbar(
            t.layer, t.value, yerr=[t.value - t.ci_low, t.ci_high - t.value], marker="o", capsize=3, label=model
        )
    ax.axhline(MIN_CORRELATION, ls=":", color="gray")
    ax.axhline(0, color="black", lw=0.5)
    ax.set(xlabel="layer (0 = embeddings)", ylabel=measure.replace("_", " "), title=title or f"{measure} by layer")
    ax.legend()
    fig.tight_layout()
    return fig


def sink_heatmaps(
    sinks: pd.DataFrame, conditions: tuple[str, str] = ("none", "outliers"), title: str = ""
) -> plt.Figure:
    """Per model (rows), the sink mass of each (layer, head), intact and with the outlier dims disabled (columns)."""
    sink = sinks[sinks.category == "sink"]
    models = list(dict.fromkeys(sink.model))
    fig, axes = plt.subplots(len(models), 2, figsize=(9, 2.6 * len(models)), squeeze=False)
    for row, model in zip(axes, models):
        for ax, condition in zip(row, conditions):
            t = sink[(sink.model == model) & (sink.condition == condition)]
            grid = t.pivot(index="layer", columns="head", values="mass")
            sns.heatmap(grid, vmin=0, vmax=1, cmap="viridis", ax=ax, cbar=ax is row[1])
            ax.set_title(f"{model}: {condition}")
    fig.suptitle(title or "attention mass on special tokens, delimiters and the first token")
    fig.tight_layout()
    return fig


def kurtosis_by_layer(metrics: pd.DataFrame, title: str = "") -> plt.Figure:
    """Per model, kurtosis per layer with all dims, without the outlier dims, and without random dims (mean, range)."""
    models = list(dict.fromkeys(metrics.model))
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.4), squeeze=False)
    for ax, model in zip(axes[0], models):
        t = metrics[metrics.model == model]
        for label, color in (("none", "black"), ("outliers", "tab:red")):
            s = t[t.excluded == label]
            ax.plot(
                s.layer,
                s["kurtosis"],
                marker="o",
                color=color,
                label="all dims" if label == "none" else "without outliers",
            )
        r = t[t.excluded.str.startswith("random")].groupby("layer")["kurtosis"]
        if len(r.mean()):
            ax.fill_between(r.min().index, r.min(), r.max(), color="tab:blue", alpha=0.3, label="without random dims")
        ax.axhline(3, ls=":", color="gray")
        ax.set_yscale("log")
        ax.set(xlabel="layer (0 = embeddings)", ylabel="kurtosis of a token's hidden vector", title=model)
        ax.legend(fontsize=8)
    fig.suptitle(title or "Bondarenko's kurtosis metric by layer")
    fig.tight_layout()
    return fig


def quantization_bars(tables: pd.DataFrame, title: str = "") -> plt.Figure:
    """Per model, the objective's rise over fp32: W8A8, W8A8 keeping the outlier dims, W8A8 keeping random dims."""
    t = tables[tables.group != "fp32"]
    g = sns.catplot(
        data=t,
        x="group",
        y="delta",
        col="model",
        kind="bar",
        errorbar=("pi", 100),
        sharey=False,
        order=["w8a8", "outliers", "random"],
        height=3.2,
        aspect=1.1,
    )
    g.set_axis_labels("", "rise over fp32")
    g.figure.suptitle(title or "simulated per-tensor W8A8 (random: mean and range over draws)")
    g.figure.tight_layout()
    return g.figure
