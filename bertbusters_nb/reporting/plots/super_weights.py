"""Notebook 08's figure: the chain weight -> activation spike -> norm input -> norm output -> effect."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd


def chain_figure(massive: pd.DataFrame, effects: pd.DataFrame, name: str = "") -> plt.Figure:
    """Left: per layer, the largest FFN-output channel (its max |y| over the layer's median channel), the stream
    norm's input and its output at that dim (log scale), spikes marked. Right: the objective change with the super
    weight(s) zeroed, the outlier dims disabled, both, and the random controls (scalars and dims)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    top = massive.sort_values("out_ratio", ascending=False).groupby("layer", sort=True).head(1).sort_values("layer")
    for column, label, style in (
        ("out_ratio", "FFN output (writer)", "-o"),
        ("norm_in_ratio", "norm input", "-s"),
        ("norm_out_ratio", "norm output", "-^"),
    ):
        left.plot(top.layer, top[column], style, label=label, markersize=4)
    spikes = top[top.spike]
    left.scatter(spikes.layer, spikes.out_ratio, s=120, facecolors="none", edgecolors="red", label="spike")
    for _, r in spikes.iterrows():
        left.annotate(
            f"dim {int(r.channel)}", (r.layer, r.out_ratio), fontsize=7, xytext=(3, 3), textcoords="offset points"
        )
    left.set_yscale("log")
    left.set_xlabel("layer")
    left.set_ylabel("max |value| / median dim")
    left.set_title(f"{name}: weight -> spike -> norm input -> norm output")
    left.legend(fontsize=7)
    order = effects.groupby("group", sort=False).delta
    summary = pd.DataFrame({"mean": order.mean(), "max": order.max(), "min": order.min()})
    summary = summary.drop(index="intact", errors="ignore")
    right.barh(
        summary.index, summary["mean"], xerr=[summary["mean"] - summary["min"], summary["max"] - summary["mean"]]
    )
    right.axvline(0, color="black", linewidth=0.8)
    right.set_xlabel("objective change (range over draws)")
    right.set_title("effect")
    right.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return fig
