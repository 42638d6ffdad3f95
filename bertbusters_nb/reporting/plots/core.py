"""Figures for the outlier analysis (notebooks 00-03). Every function returns a matplotlib Figure;
saving is RunRecorder's job."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

if TYPE_CHECKING:
    from ...model.sites import NormSite


def norm_parameter_lines(
    sites: Sequence["NormSite"], outlier_dims: Sequence[int] = (), title: str = "", max_cols: int = 4
) -> plt.Figure:
    """One panel per site: LayerNorm weight and bias over all dims, outliers marked (the paper's figure style)."""
    sites = list(sites)
    cols = min(max_cols, len(sites))
    rows = int(np.ceil(len(sites) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.4 * rows), squeeze=False, sharex=True)
    for ax, site in zip(axes.flat, sites):
        if site.weight is None:  # a norm without affine parameters has nothing to draw
            ax.set_title(f"{site.role} L{'' if site.layer is None else site.layer}: no weight", fontsize=8)
            continue
        weight = site.weight.detach().float().cpu().numpy()
        ax.plot(weight, lw=0.7, label="weight", color="tab:blue")
        if site.bias is not None:
            ax.plot(site.bias.detach().float().cpu().numpy(), lw=0.7, label="bias", color="tab:orange")
        for d in outlier_dims:
            if d < len(weight):
                ax.axvline(d, color="crimson", lw=0.8, ls=":", alpha=0.8)
                ax.annotate(str(d), (d, weight[d]), fontsize=7, color="crimson")
        ax.set_title(f"{site.role} L{'' if site.layer is None else site.layer}", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(sites) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title or "LayerNorm parameters per dim (red: outlier dims)", fontsize=10)
    fig.tight_layout()
    return fig


def zscore_heatmap(params: pd.DataFrame, dims: Sequence[int], param: str = "weight", title: str = "") -> plt.Figure:
    """Heatmap of z-scores, sites (rows) by the given dims (columns), from ``parameter_table``."""
    table = params[(params.param == param) & params.dim.isin(list(dims))]
    label = table.role + " L" + table.layer.astype("string").fillna("-")
    pivot = table.assign(site_label=label).pivot_table(index="site_label", columns="dim", values="z", sort=False)
    pivot = pivot[[d for d in dims if d in pivot.columns]]
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * len(pivot.columns), 0.9 + 0.32 * len(pivot)))
    sns.heatmap(
        pivot,
        center=0,
        cmap="RdBu_r",
        annot=len(pivot.columns) <= 12,
        fmt=".1f",
        ax=ax,
        annot_kws={"fontsize": 7},
        cbar_kws={"label": "z-score"},
    )
    ax.set_title(title or f"LayerNorm {param} z-scores at the top dims")
    ax.set_ylabel("")
    fig.tight_layout()
    return fig


def against_random(
    value: float, random_values: Sequence[float], metric: str, label: str = "outlier dims", title: str = ""
) -> plt.Figure:
    """Distribution of a metric over random-dim draws with the outlier-dim result marked."""
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    sns.histplot(list(random_values), ax=ax, color="grey", label=f"random dims ({len(random_values)} draws)")
    ax.axvline(value, color="crimson", lw=2, label=label)
    ax.set_xlabel(metric)
    ax.legend(fontsize=8)
    ax.set_title(title or f"{metric}: outlier dims vs random draws")
    fig.tight_layout()
    return fig


def scan_plot(scan: pd.DataFrame, value: str, highlight: Sequence[int] = (), title: str = "") -> plt.Figure:
    """A metric against the disabled dim (x axis: dim index), highlighted dims labelled.

    The "no ablation" line is the scan's own intact value (column ``intact_<value>``, or
    ``intact_value`` for ``value``), measured on the same examples as every point: a baseline
    from another eval set would make every dim look helpful or harmful. A screened scan (``value_kind``) draws its
    estimates as a grey line and its exactly evaluated dims as points."""
    column = "intact_value" if value == "value" else f"intact_{value}"
    if column not in scan:
        raise ValueError(
            f"The scan table has no {column!r} column to draw its baseline from; "
            f"make it with scan_dims (columns: {list(scan.columns)})."
        )
    baseline = float(scan[column].iloc[0])
    fig, ax = plt.subplots(figsize=(9, 3.2))
    estimated = scan["value_kind"].eq("estimate") if "value_kind" in scan else pd.Series(False, index=scan.index)
    if estimated.any():  # a screened scan: estimates in grey, the dims evaluated exactly as blue points
        by_dim = scan.sort_values("dim")
        ax.plot(by_dim["dim"], by_dim[value], lw=0.5, color="lightgrey", label="estimated (screen)")
        exact = scan[~estimated]
        ax.scatter(exact["dim"], exact[value], s=12, color="tab:blue", zorder=2, label="evaluated exactly")
    else:
        ax.plot(scan["dim"], scan[value], lw=0.7, color="tab:blue")
    for d in highlight:
        row = scan[scan["dim"] == d]
        if len(row):
            ax.scatter(row["dim"], row[value], color="crimson", zorder=3)
            ax.annotate(str(d), (float(row["dim"].iloc[0]), float(row[value].iloc[0])), color="crimson", fontsize=8)
    ax.axhline(baseline, color="grey", ls="--", lw=0.8, label="no ablation (same examples)")
    ax.legend(fontsize=8)
    ax.set_xlabel("disabled dimension")
    ax.set_ylabel(value)
    ax.set_title(title or f"{value} with one dim disabled at a time")
    fig.tight_layout()
    return fig


def bar_conditions(table: pd.DataFrame, value: str, label: str = "condition", title: str = "") -> plt.Figure:
    """Bar chart of a metric per condition (e.g. by layer range or site role)."""
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(table) + 2), 3.2))
    sns.barplot(data=table, x=label, y=value, ax=ax, color="tab:blue")
    ax.tick_params(axis="x", rotation=45, labelsize=8)
    ax.set_title(title or value)
    fig.tight_layout()
    return fig


def layer_lines(table: pd.DataFrame, columns: Sequence[str], title: str = "") -> plt.Figure:
    """One panel per column, value against layer (layer 0 = embeddings output)."""
    fig, axes = plt.subplots(1, len(columns), figsize=(3.6 * len(columns), 3.0), squeeze=False)
    for ax, column in zip(axes.flat, columns):
        ax.plot(table["layer"], table[column], marker="o")
        ax.set_xlabel("layer")
        ax.set_title(column, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def loss_curves(log: pd.DataFrame | None, plateau: float | None = None, title: str = "") -> plt.Figure:
    """Training and eval MLM loss against step, with the unigram plateau as a dashed line. ``log`` is None for a
    series of hub checkpoints (the MultiBERTs publish no training log): the figure says so instead of failing."""
    fig, ax = plt.subplots(figsize=(7, 3.4))
    if log is None:
        ax.text(0.5, 0.5, "no training log: this checkpoint series publishes none", ha="center", va="center")
        ax.set_axis_off()
        ax.set_title(title)
        return fig
    if "train_loss" in log:
        ax.plot(log["step"], log["train_loss"], label="train loss", lw=1)
    ax.plot(log["step"], log["eval_loss"], label="eval loss", lw=1.5)
    if plateau is not None:
        ax.axhline(plateau, color="grey", ls="--", lw=1, label=f"unigram entropy {plateau:.2f}")
    ax.set_xlabel("step")
    ax.set_ylabel("MLM loss (nats)")
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def parameters_over_steps(snapshots: pd.DataFrame, title: str = "") -> plt.Figure:
    """Weight (top row) and bias (bottom row) over dims, one column per step (from middle_layer_snapshots)."""
    steps = sorted(snapshots.step.unique())
    fig, axes = plt.subplots(2, len(steps), figsize=(3.2 * len(steps), 4.2), squeeze=False, sharex=True)
    for col, step in enumerate(steps):
        for row, param in enumerate(("weight", "bias")):
            part = snapshots[(snapshots.step == step) & (snapshots.param == param)]
            axes[row, col].plot(part["dim"], part["value"], lw=0.7, color="tab:blue" if row == 0 else "tab:orange")
            axes[row, col].set_title(f"step {step:,} · {param}", fontsize=8)
            axes[row, col].tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_flags_over_steps(
    flags: pd.DataFrame, dims: Sequence[int], breakout: int | None = None, title: str = ""
) -> plt.Figure:
    """Sites in which each dim is beyond the threshold (left) and its max |z| (right), against step
    (``flags``: the table ``emergence.flags_over_steps`` computes)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for dim in dims:
        part = flags[flags.dim == dim].sort_values("step")
        axes[0].plot(part.step, part.sites_flagged, marker=".", label=f"dim {dim}")
        axes[1].plot(part.step, part.max_abs_z, marker=".", label=f"dim {dim}")
    if len(flags):
        axes[0].axhline(flags.n_sites.iloc[0] / 2, color="grey", ls=":", lw=1, label="half the sites")
    for ax, label in zip(axes, ("sites flagged", "max |z| over sites")):
        if breakout is not None:
            ax.axvline(breakout, color="crimson", ls="--", lw=1, label="loss leaves plateau")
        ax.set_xlabel("step")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def ablation_over_steps(ablation: pd.DataFrame | None, title: str = "") -> plt.Figure:
    """Loss rise from zeroing the outlier dims vs the random draws' mean and max, against step. ``None`` (a hub
    checkpoint series has no per-snapshot ablation record): the figure says so instead of failing."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    if ablation is None:
        ax.text(0.5, 0.5, "no per-snapshot ablation record for this series", ha="center", va="center")
        ax.set_axis_off()
        ax.set_title(title)
        return fig
    ax.plot(ablation.step, ablation.delta, marker="o", color="crimson", label="outlier dims")
    ax.plot(ablation.step, ablation.random_mean, color="grey", label="random dims (mean)")
    ax.fill_between(
        ablation.step, ablation.random_min, ablation.random_max, color="grey", alpha=0.3, label="random dims (range)"
    )
    ax.set_xlabel("step")
    ax.set_ylabel("MLM loss rise (nats)")
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return fig
