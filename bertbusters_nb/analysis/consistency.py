"""Position consistency (finding 2): the same outlier dim across layers, sites, inputs and models."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from ..model.discovery import find_norm_sites
from ..model.loading import load_model
from ..model.sites import select_sites
from .activations import activation_stats, magnitude_by_layer, outlier_share, text_batches
from .detection import dims_to_ablate
from .outliers import OutlierReport, find_outliers
from .rule import DEFAULT_RULE


def flag_table(report: OutlierReport, top: int = 10) -> pd.DataFrame:
    """Sites (rows, in layer order) by the ``top`` most-flagged dims: True where |z| > k in weight or bias."""
    dims = report.per_dim.dim.head(top).tolist()
    params = report.params[report.params.dim.isin(dims)]
    flags = params.groupby(["layer", "role", "dim"], dropna=False)["flagged"].any().unstack("dim", fill_value=False)
    return flags.reindex(columns=dims, fill_value=False)


def top_dim_share(report: OutlierReport) -> float:
    """Share of the sites in which the most consistent outlier dim is flagged (0 when none is flagged)."""
    if report.per_dim.empty:
        return 0.0
    return float(report.per_dim.sites_flagged.iloc[0] / report.n_sites)


def model_profile(
    name: str,
    texts: Sequence[str],
    roles: Sequence[str] = ("block_output",),
    k: float = DEFAULT_RULE.k,
    max_length: int = 128,
    device: str | None = None,
    progress: bool = False,
) -> dict:
    """One row for the across-models table: the default dims (``detection.dims_to_ablate``), how consistently
    the ``roles`` sites flag their top dim, and how much the default dims dominate the hidden states on ``texts``.

    Example:
        >>> pd.DataFrame([model_profile(m, texts) for m in ["bbmini", "minilm"]])  # doctest: +SKIP
    """
    model, tokenizer = load_model(name, head="base", device=device)
    sites = select_sites(find_norm_sites(model), roles)
    report = find_outliers(sites, k=k)
    per_dim, top = activation_stats(model, text_batches(tokenizer, texts, max_length), progress=progress)
    dims = dims_to_ablate(model, tokenizer)  # the one rule (parameters of every site + activations)
    share = outlier_share(top, dims)
    magnitude = magnitude_by_layer(per_dim, dims)
    return {
        "model": name,
        "layers": len(sites),
        "hidden": model.config.hidden_size,
        "outlier_dims": " ".join(map(str, dims)),
        "block_output_param_outliers": " ".join(map(str, report.dims)),
        "top_dim": int(report.per_dim.dim.iloc[0]) if len(report.per_dim) else None,
        "top_dim_sites_flagged": f"{int(report.per_dim.sites_flagged.iloc[0])}/{report.n_sites}"
        if len(report.per_dim)
        else "0",
        "input_share_top_is_outlier": float(share.input_share[share.layer > 0].mean()),
        "token_share_top_is_outlier": float(share.token_share[share.layer > 0].mean()),
        "magnitude_ratio": float(magnitude.ratio[magnitude.layer > 0].mean()),
    }


def compare_models(names: Sequence[str], texts: Sequence[str], **options) -> pd.DataFrame:
    """``model_profile`` of each model, one row each (models load one at a time)."""
    if not names:
        raise ValueError("compare_models is empty: name at least one model.")
    return pd.DataFrame([model_profile(name, texts, **options) for name in names])


def run_folder(run: str) -> Path:
    """A pre-training run or exported model folder: an alias (``bbmini``), a path, or a path relative to the
    project checkout (``paths.in_project``: ``models/bbmini/candidates/h256l4s0`` works from the notebooks folder
    too)."""
    from ..model.loading import ALIASES
    from ..paths import ProjectNotFoundError, in_project

    if run in ALIASES:
        return Path(ALIASES[run]())
    try:
        in_checkout = [in_project(run)]
    except ProjectNotFoundError:
        in_checkout = []
    for folder in (Path(run), *in_checkout):
        if (folder / "norm_trajectory.npz").exists():
            return folder
    raise FileNotFoundError(
        f"{run!r} has no norm_trajectory.npz: name a folder written by the pre-training "
        "(models/bbmini, models/bbmini/candidates/*, or a run of `python -m "
        "bertbusters_nb.pretraining train`)."
    )


def positions_across_runs(
    runs: Sequence[str],
    roles: Sequence[str] = ("block_output",),
    k: float = DEFAULT_RULE.k,
    min_share: float = DEFAULT_RULE.min_share,
) -> pd.DataFrame:
    """Outlier positions at the final recorded step of each pre-training run, from its LayerNorm trajectory
    alone (no weights needed): one row per run with its seed and size, to set seeds side by side.

    Example:
        >>> positions_across_runs(["bbmini", "models/bbmini/candidates/h256l4s0"])  # doctest: +SKIP
    """
    from ..atomic import read_json
    from ..pretraining import NormTrajectory
    from .emergence import final_outlier_dims, flags_over_steps

    if not runs:
        raise ValueError("seed_runs is empty: name at least one pre-training run folder.")
    rows = []
    for run in runs:
        folder = run_folder(run)
        config_path = next((folder / n for n in ("training_config.json", "config.json") if (folder / n).exists()), None)
        config = read_json(config_path) if config_path is not None else {}
        flags = flags_over_steps(NormTrajectory.load(folder / "norm_trajectory.npz"), roles=roles, k=k)
        last = flags[flags.step == flags.step.max()].sort_values(["sites_flagged", "max_abs_z"], ascending=False)
        n_sites = int(last.n_sites.iloc[0])
        rows.append(
            {
                "run": run,
                "seed": config.get("seed"),
                "layers": config.get("layers", n_sites),
                "hidden": config.get("hidden"),
                "final_step": int(last.step.iloc[0]),
                "outlier_dims": " ".join(map(str, final_outlier_dims(flags, min_share=min_share))),
                "top_dim": int(last.dim.iloc[0]),
                "top_dim_sites_flagged": f"{int(last.sites_flagged.iloc[0])}/{n_sites}",
                "top_dim_max_abs_z": float(last.max_abs_z.iloc[0]),
            }
        )
    return pd.DataFrame(rows)
