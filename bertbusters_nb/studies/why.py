"""Notebook 07's subjects: a model with its tokenizer, objective, outlier dims and token counts, loaded once.

The dims come from the project's one detection rule (``detection.dims_to_ablate``), called in one
line (``detect_dims``) so a change of rule is a one-line swap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch

from ..analysis import frequency
from ..model.discovery import find_norm_sites
from ..model.loading import CAUSAL_TYPES, load_config, load_model, resolve
from ..model.sites import NormSite

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# alias -> (head to load, objective kind for quantization.quantization_table)
KNOWN = {"bbmini": ("mlm", "mlm"), "minilm": ("base", "embedding"), "smollm2": ("causal-lm", "causal")}


def detect_dims(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, k: float = 3.0) -> list[int]:
    """The dims to study: the project's one rule (parameters + activations; never an effect measured here)."""
    from ..analysis.detection import dims_to_ablate

    return dims_to_ablate(model, tokenizer, k=k)


@dataclass
class Subject:
    """One model under study. kind: 'mlm', 'causal' or 'embedding' (no LM head). counts: token counts."""

    name: str
    model: torch.nn.Module
    tokenizer: object
    kind: str
    sites: list[NormSite]
    dims: list[int]
    counts: frequency.TokenCounts
    roles: tuple[str, ...]  # the sites an ablation disables (detection.effect_roles: block output, else pre-norms)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def layers(self) -> int:
        return int(self.model.config.num_hidden_layers)


def _head_and_kind(name: str) -> tuple[str, str]:
    if name in KNOWN:
        return KNOWN[name]
    model_type = load_config(name).model_type  # ModelLoadError naming the cause, as load_model's
    return ("causal-lm", "causal") if model_type in CAUSAL_TYPES else ("mlm", "mlm")


def load_subject(
    name: str,
    device: str = "auto",
    k: float = 3.0,
    corpora: Sequence[str] = frequency.DEFAULT_PROXY_CORPORA,
    proxy_max_texts: int | None = None,
    exact_max_texts: int | None = None,
) -> Subject:
    """Load ``name`` with the head its objective needs, detect its outlier dims, count its tokens.

    Counts are exact for a model folder with a ``training_config.json`` (pre-trained by this project), else a
    proxy over ``corpora`` (first ``proxy_max_texts`` texts each).

    Example:
        >>> subject = load_subject("bbmini")  # doctest: +SKIP
        >>> subject.dims, subject.counts.exact  # doctest: +SKIP
        ([81, 126, 31], True)
    """
    head, kind = _head_and_kind(name)
    model, tokenizer = load_model(name, head=head, device=None if device == "auto" else device)
    sites = find_norm_sites(model)
    dims = detect_dims(model, tokenizer, k)
    folder = Path(resolve(name))
    if (folder / "training_config.json").exists():
        counts = frequency.pretraining_token_counts(folder, max_texts=exact_max_texts)
    else:
        counts = frequency.proxy_token_counts(tokenizer, corpora, max_texts=proxy_max_texts)
    from ..analysis.detection import effect_roles

    return Subject(name, model, tokenizer, kind, sites, dims, counts, effect_roles(sites))


def random_draws(subject: Subject, draws: int, seed: int = 0) -> list[tuple[int, ...]]:
    """``draws`` seeded random sets of as many dims as the subject's outliers, the outliers excluded."""
    from ..analysis.baselines import random_dims

    return random_dims(subject.hidden_size, len(subject.dims), draws, exclude=subject.dims, seed=seed)


def has_trajectory(subject: Subject) -> bool:
    """Whether the subject's folder carries its pre-training LayerNorm trajectory (a model trained here)."""
    return (Path(resolve(subject.name)) / "norm_trajectory.npz").exists()


def conditions(subject: Subject, draws: int, seed: int = 0) -> list:
    """Intact, the outlier dims disabled, and ``draws`` random sets of as many dims (outliers excluded), all on
    the subject's ablation roles."""
    from ..model.ablation import Condition

    randoms = random_draws(subject, draws, seed)
    return [Condition("none"), Condition("outliers", tuple(subject.dims), subject.roles)] + [
        Condition(f"random {i}", d, subject.roles) for i, d in enumerate(randoms)
    ]


def random_excluded(subject: Subject, draws: int, seed: int = 0) -> dict[str, tuple[int, ...]]:
    """Dim sets to leave out of ``quantization.outlier_metrics``: none, the outliers, and random draws."""
    randoms = random_draws(subject, draws, seed)
    return {"none": (), "outliers": tuple(subject.dims), **{f"random {i}": d for i, d in enumerate(randoms)}}
