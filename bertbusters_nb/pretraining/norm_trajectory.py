"""NormTrajectory: the LayerNorm weight and bias of every norm site at each log point of a run.

The trainer records one per log point and saves it with every checkpoint and in the run folder
(``norm_trajectory.npz``); the post-hoc analysis reads it (``analysis.emergence``, ``analysis.trajectory``).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

__all__ = ["NormTrajectory"]


@dataclass
class NormTrajectory:
    """LayerNorm weight and bias of every norm site at each log point.

    steps: (C,). weight, bias: (C, S, H) float32. names, roles: (S,) site names and roles
    (discovery.find_norm_sites); layers: (S,) layer index, -1 outside the layers.

    Example:
        >>> traj = NormTrajectory.load("bertbusters_nb/data/bbmini/norm_trajectory.npz")  # doctest: +SKIP
        >>> traj.table(roles=["block_output"]).head()  # doctest: +SKIP
    """

    names: list[str]
    roles: list[str]
    layers: list[int]
    steps: list[int] = field(default_factory=list)
    weight: list[np.ndarray] = field(default_factory=list)
    bias: list[np.ndarray] = field(default_factory=list)

    @classmethod
    def for_model(cls, model: torch.nn.Module) -> "NormTrajectory":
        from ..model.discovery import find_norm_sites

        sites = find_norm_sites(model)
        return cls(
            [s.name for s in sites], [s.role for s in sites], [-1 if s.layer is None else s.layer for s in sites]
        )

    def record(self, model: torch.nn.Module, step: int) -> None:
        modules = dict(model.named_modules())
        self.steps.append(int(step))
        self.weight.append(np.stack([modules[n].weight.detach().float().cpu().numpy() for n in self.names]))
        self.bias.append(np.stack([modules[n].bias.detach().float().cpu().numpy() for n in self.names]))

    def truncate(self, step: int) -> None:
        keep = [i for i, s in enumerate(self.steps) if s <= step]
        self.steps = [self.steps[i] for i in keep]
        self.weight = [self.weight[i] for i in keep]
        self.bias = [self.bias[i] for i in keep]

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            steps=np.array(self.steps, dtype=np.int64),
            weight=np.stack(self.weight),
            bias=np.stack(self.bias),
            names=np.array(self.names),
            roles=np.array(self.roles),
            layers=np.array(self.layers, dtype=np.int64),
        )
        return buffer.getvalue()

    @classmethod
    def load(cls, path: str | os.PathLike) -> "NormTrajectory":
        with np.load(path, allow_pickle=False) as z:
            return cls(
                [str(n) for n in z["names"]],
                [str(r) for r in z["roles"]],
                [int(l) for l in z["layers"]],
                [int(s) for s in z["steps"]],
                list(z["weight"]),
                list(z["bias"]),
            )

    def table(self, roles: Sequence[str] | None = None, layers: Sequence[int] | None = None):
        """Tidy DataFrame: step, site, role, layer, param ('weight'/'bias'), dim, value, z (within site x param)."""
        import pandas as pd

        frames = []
        for param, arrays in (("weight", self.weight), ("bias", self.bias)):
            values = np.stack(arrays)  # (C, S, H)
            z = (values - values.mean(-1, keepdims=True)) / values.std(-1, ddof=1, keepdims=True).clip(1e-12)
            C, S, H = values.shape
            frame = pd.DataFrame(
                {
                    "step": np.repeat(self.steps, S * H),
                    "site": np.tile(np.repeat(self.names, H), C),
                    "role": np.tile(np.repeat(self.roles, H), C),
                    "layer": np.tile(np.repeat(self.layers, H), C),
                    "param": param,
                    "dim": np.tile(np.arange(H), C * S),
                    "value": values.ravel(),
                    "z": z.ravel(),
                }
            )
            frames.append(frame)
        table = pd.concat(frames, ignore_index=True)
        if roles is not None:
            table = table[table.role.isin(list(roles))]
        if layers is not None:
            table = table[table.layer.isin(list(layers))]
        return table.reset_index(drop=True)
