"""Figures of the downstream study (notebook 04: fine-tuned tasks, ablations after fine-tuning, the scan).

Each function takes a ``studies.downstream`` table and returns a Figure (this was ``plotting_glue``)."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

OUTLIER_COLOR = "crimson"
RANDOM_COLOR = "grey"


def _grid(n: int, max_cols: int = 2, width: float = 5.5, height: float = 3.2):
    cols = max(1, min(max_cols, n))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return fig, list(axes.flat)[:n]


def _panels(table: pd.DataFrame, keys: Sequence[str] = ("backbone", "task", "split")) -> list[tuple[str, pd.DataFrame]]:
    keys = [k for k in keys if k in table.columns]
    return [
        (" / ".join(map(str, key if isinstance(key, tuple) else (key,))), group)
        for key, group in table.groupby(keys, sort=False)
    ]


def baseline_bars(baseline: pd.DataFrame) -> plt.Figure:
    """Dev score of each fine-tuned pair, with the majority-class rate as a tick on each bar."""
    table = baseline.assign(pair=baseline.backbone + " / " + baseline.task + "\n" + baseline.split)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(table) + 1.5), 3.2))
    sns.barplot(data=table, x="pair", y="value", ax=ax, color="tab:blue")
    ax.scatter(range(len(table)), table["chance"], marker="_", s=900, color="black", zorder=3, label="majority class")
    ax.set_ylim(min(0.0, float(table["value"].min()) - 0.05), 1)
    ax.set_xlabel("")
    ax.set_ylabel(" / ".join(table.metric.unique()))
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Fine-tuned dev score (intact model)")
    fig.tight_layout()
    return fig


def conditions_vs_random(ablations: pd.DataFrame, random: pd.DataFrame) -> plt.Figure:
    """Per pair: the score under each outlier condition (bars) beside the random draws (box + points)."""
    panels = dict(_panels(ablations))
    randoms = dict(_panels(random))
    fig, axes = _grid(len(panels))
    for ax, (label, group) in zip(axes, panels.items()):
        names = list(group.condition)
        colors = ["tab:blue" if n == "none" else OUTLIER_COLOR for n in names]
        ax.bar(range(len(names)), group["value"], color=colors)
        draws = randoms.get(label)
        if draws is not None and len(draws):
            x = len(names)
            ax.boxplot(draws["value"], positions=[x], widths=0.6, showfliers=False)
            jitter = np.random.default_rng(0).uniform(-0.2, 0.2, len(draws))
            ax.scatter(x + jitter, draws["value"], s=8, color=RANDOM_COLOR, zorder=3)
            names = names + [f"random\n({len(draws)} draws)"]
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
        lowest = min(group["value"].min(), draws["value"].min() if draws is not None and len(draws) else 0.0)
        ax.set_ylim(min(0.0, lowest - 0.05), 1.02)  # MCC and Pearson can go below 0
        ax.set_ylabel(group.metric.iloc[0])
        ax.set_title(label, fontsize=9)
    fig.suptitle("Outlier dims disabled after fine-tuning (red) vs random dims (grey)", fontsize=10)
    fig.tight_layout()
    return fig


def relative_change_strip(summary: pd.DataFrame, random: pd.DataFrame) -> plt.Figure:
    """Relative change of the score per pair: every random draw (grey) and the outlier dims (red)."""
    random = random.merge(summary[["backbone", "task", "split", "intact"]], on=["backbone", "task", "split"])
    random = random.assign(
        pair=random.backbone + " / " + random.task + " " + random.split, change=random["value"] / random["intact"] - 1
    )
    summary = summary.assign(pair=summary.backbone + " / " + summary.task + " " + summary.split)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.6 * len(summary) + 1.5), 3.4))
    sns.stripplot(
        data=random,
        x="pair",
        y="change",
        order=list(summary.pair),
        ax=ax,
        color=RANDOM_COLOR,
        size=4,
        jitter=0.2,
        label="random draws",
    )
    ax.scatter(
        range(len(summary)),
        summary["relative_change"],
        color=OUTLIER_COLOR,
        s=60,
        zorder=3,
        marker="D",
        label="outlier dims",
    )
    ax.axhline(0, color="black", lw=0.6)
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:+.0%}"))
    ax.set_xlabel("")
    ax.set_ylabel("change vs intact")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=8)
    ax.set_title("Relative change of the dev score when dims are disabled")
    fig.tight_layout()
    return fig


def scan_grid(scan: pd.DataFrame) -> plt.Figure:
    """Per pair: the dev score (top) and dev loss (bottom) with one dim disabled; x axis: the disabled dim.

    On a small dev subset the score moves in steps of one example, so the loss, which moves
    with every logit, is drawn below it; outlier dims are labelled in both. A screened scan (``value_kind``) draws
    its estimated losses as a grey line and its exactly evaluated dims as points (an estimate has no score).
    """
    panels = _panels(scan)
    fig, axes = plt.subplots(2 * len(panels), 1, figsize=(9.5, 4.6 * len(panels)), squeeze=False, sharex=False)
    for i, (label, group) in enumerate(panels):
        marked = group[group.outlier]
        loss_intact = group["intact_loss"].iloc[0] if "intact_loss" in group else None
        for ax, column, intact in (
            (axes[2 * i, 0], "value", group["intact_value"].iloc[0]),
            (axes[2 * i + 1, 0], "eval_loss", loss_intact),
        ):
            estimated = group["value_kind"].eq("estimate") if "value_kind" in group else group["dim"].isna()
            if estimated.any():  # a screened scan: the estimate as a grey line, exact rows as blue points
                if column == "eval_loss":
                    ax.plot(group["dim"], group[column], lw=0.5, color="lightgrey", label="estimated (screen)")
                exact = group[~estimated]
                ax.scatter(exact["dim"], exact[column], s=12, color="tab:blue", zorder=2, label="evaluated exactly")
            else:
                ax.plot(group["dim"], group[column], lw=0.7, color="tab:blue", marker="." if len(group) < 80 else None)
            if intact is not None:
                ax.axhline(intact, color="grey", ls="--", lw=0.8, label="no ablation")
            ax.scatter(marked["dim"], marked[column], color=OUTLIER_COLOR, zorder=3, label="outlier dims")
            for row in marked.itertuples():
                ax.annotate(
                    str(row.dim),
                    (row.dim, getattr(row, column)),
                    color=OUTLIER_COLOR,
                    fontsize=8,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
            ax.set_xlim(-1, group["dim"].max() + 1)
            ax.legend(fontsize=7, loc="best")
        axes[2 * i, 0].set_ylabel(group.metric.iloc[0])
        axes[2 * i, 0].set_title(f"{label} ({int(group.examples.iloc[0])} dev examples)", fontsize=9)
        axes[2 * i + 1, 0].set_ylabel("dev loss")
        axes[2 * i + 1, 0].set_xlabel("disabled dimension (weight and bias set to 0 in every layer)")
    fig.tight_layout()
    return fig


def outliers_before_after(outliers: pd.DataFrame) -> plt.Figure:
    """Per pair: each dim's largest |z| in the pre-trained backbone (x) and after fine-tuning (y)."""
    panels = _panels(outliers, ("backbone", "task"))
    fig, axes = _grid(len(panels), max_cols=2, width=4.2, height=3.8)
    for ax, (label, group) in zip(axes, panels):
        group = group.fillna({"max_abs_z_before": 0.0, "max_abs_z_after": 0.0})
        ax.scatter(group["max_abs_z_before"], group["max_abs_z_after"], s=6, color=RANDOM_COLOR, label="flagged dims")
        marked = group[group.outlier_before | group.outlier_after]
        ax.scatter(
            marked["max_abs_z_before"],
            marked["max_abs_z_after"],
            s=30,
            color=OUTLIER_COLOR,
            zorder=3,
            label="outlier dims",
        )
        for row in marked.itertuples():
            ax.annotate(str(row.dim), (row.max_abs_z_before, row.max_abs_z_after), fontsize=7, color=OUTLIER_COLOR)
        top = float(max(group["max_abs_z_before"].max(), group["max_abs_z_after"].max(), 1.0)) * 1.05
        ax.plot([0, top], [0, top], color="black", lw=0.6, ls=":")
        ax.set_xlabel("max |z| before fine-tuning")
        ax.set_ylabel("max |z| after")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("LayerNorm outlier strength per dim, before vs after fine-tuning", fontsize=10)
    fig.tight_layout()
    return fig
