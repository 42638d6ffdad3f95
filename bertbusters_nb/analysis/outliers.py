"""Outlier dimensions in normalization parameters (the paper's 3-sigma criterion), as a descriptive report.

Per site, weight and bias separately, a dim is flagged when its value lies more than
``k`` standard deviations from that parameter vector's mean. A dim counts as a model-level
outlier when it is flagged in more than ``min_share`` of the layers considered.

Which dims an experiment disables is decided in one place, ``detection.dims_to_ablate``
(parameters of every norm site and hidden-state magnitudes); ``find_outliers`` describes one
role set's parameters (plots, flag tables). Its thresholds default to the rule's (``rule.DEFAULT_RULE``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from ..model.sites import NormSite
from .rule import DEFAULT_RULE


def parameter_table(sites: Sequence[NormSite], k: float = DEFAULT_RULE.k) -> pd.DataFrame:
    """Tidy table: one row per (site, param, dim) with value, z-score and ``flagged`` (|z| > k).

    Norms without parameters (OLMo's non-affine LayerNorm) have no rows: with no parameter anywhere the table is
    empty, so the parameter criterion flags nothing and the rule rests on its activation part.
    """
    columns = ["site", "role", "layer", "stack", "param", "dim", "value", "z", "flagged"]
    rows = []
    for site in sites:
        for param_name, param in (("weight", site.weight), ("bias", site.bias)):
            if param is None:
                continue
            values = param.detach().float().cpu()
            z = (values - values.mean()) / values.std().clamp_min(1e-12)
            frame = pd.DataFrame({"value": values.numpy(), "z": z.numpy()})
            frame["dim"] = range(len(values))
            frame["site"], frame["role"], frame["layer"], frame["stack"] = site.name, site.role, site.layer, site.stack
            frame["param"] = param_name
            rows.append(frame)
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=bool if c == "flagged" else object) for c in columns})
    table = pd.concat(rows, ignore_index=True)
    table["flagged"] = table["z"].abs() > k
    return table[columns]


@dataclass
class OutlierReport:
    """Result of ``find_outliers``.

    dims: model-level outlier dims, most consistent first. per_dim: one row per dim flagged
    anywhere (layers flagged, max |z|). flags: site x dim table of flags. params: the full
    parameter table. k, min_sites: the thresholds used (min_sites counts norm sites, not layers:
    a layer has several).
    """

    dims: list[int]
    per_dim: pd.DataFrame
    flags: pd.DataFrame
    params: pd.DataFrame
    k: float
    min_sites: int
    n_sites: int

    def summary(self) -> str:
        top = self.per_dim.head(5)
        parts = [
            f"dim {int(r.dim)}: {int(r.sites_flagged)}/{self.n_sites} sites, max|z| {r.max_abs_z:.1f}"
            for r in top.itertuples()
        ]
        return (
            f"outlier dims (|z|>{self.k:g} in >= {self.min_sites} of {self.n_sites} sites): {self.dims}; "
            f"top: " + "; ".join(parts)
        )


def strict_share(n: int, share: float) -> int:
    """Sites needed for 'more than ``share`` of ``n``' (at least 1)."""
    return max(1, math.floor(n * share) + 1)


def find_outliers(
    sites: Sequence[NormSite],
    k: float = DEFAULT_RULE.k,
    min_sites: int | None = None,
    min_share: float = DEFAULT_RULE.min_share,
) -> OutlierReport:
    """Detect outlier dims in ``sites``' norm parameters.

    A dim is kept when weight or bias is beyond ``k`` sigma in at least ``min_sites`` sites
    (default: more than half of them; the follow-up's code used > 3 of 12, min_share=0.25).

    Example:
        >>> report = find_outliers(select_sites(find_norm_sites(model), "block_output"))
        >>> report.dims  # doctest: +SKIP
        [308, 381]
    """
    sites = list(sites)
    if not sites:
        raise ValueError("No sites given; select some with select_sites(find_norm_sites(model), ...).")
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}.")
    params = parameter_table(sites, k)
    if min_sites is None:
        min_sites = strict_share(len(sites), min_share)
    flagged = params[params.flagged]
    flags = (flagged.groupby(["site", "dim"]).size().unstack(fill_value=0) > 0) if len(flagged) else pd.DataFrame()
    per_dim = params.assign(abs_z=params.z.abs()).groupby("dim")["abs_z"].max().rename("max_abs_z").reset_index()
    counts = flagged.groupby("dim")["site"].nunique() if len(flagged) else pd.Series(dtype=int)
    per_dim.insert(1, "sites_flagged", per_dim["dim"].map(counts).fillna(0).astype(int))
    per_dim = (
        per_dim[per_dim.sites_flagged > 0]
        .sort_values(["sites_flagged", "max_abs_z"], ascending=False)
        .reset_index(drop=True)
    )
    dims = [int(d) for d in per_dim.loc[per_dim.sites_flagged >= min_sites, "dim"]]
    return OutlierReport(dims, per_dim, flags, params, k, min_sites, len(sites))
