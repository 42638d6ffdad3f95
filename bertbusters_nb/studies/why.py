"""Notebook 07's study: its subjects (a model with its tokenizer, objective, outlier dims and token counts, loaded
once) and ``run_study``, every measurement over every subject as tidy tables (numbers only).

The dims come from the project's one detection rule (``detection.dims_to_ablate``, its settings
``rule.DEFAULT_RULE``); the objective kind from the loaded model (``evaluation.model_objective.objective_of``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import pandas as pd

from ..analysis import frequency
from ..analysis.detection import dims_to_ablate
from ..analysis.rule import DEFAULT_RULE
from ..evaluation.model_objective import objective_of
from ..model.discovery import find_norm_sites
from ..model.loading import CAUSAL_TYPES, load_config, load_model, resolve
from ..model.sites import NormSite

# alias -> head to load (the objective kind then follows from the model: evaluation.model_objective.objective_of)
if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from ..model.loading import Head

KNOWN: dict[str, Head] = {"bbmini": "mlm", "minilm": "base", "smollm2": "causal-lm"}


@dataclass
class Subject:
    """One model under study. kind: 'mlm', 'causal' or 'embedding' (no LM head). counts: token counts."""

    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    kind: str
    sites: list[NormSite]
    dims: list[int]
    counts: frequency.TokenCounts
    roles: tuple[str, ...]  # the sites an ablation disables (effect.effect_roles: block output, else pre-norms)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def layers(self) -> int:
        return int(self.model.config.num_hidden_layers)


def _head(name: str) -> Head:
    if name in KNOWN:
        return KNOWN[name]
    model_type = load_config(name).model_type  # ModelLoadError naming the cause, as load_model's
    return "causal-lm" if model_type in CAUSAL_TYPES else "mlm"


def load_subject(
    name: str,
    device: str = "auto",
    k: float = DEFAULT_RULE.k,
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
    model, tokenizer = load_model(name, head=_head(name), device=None if device == "auto" else device)
    kind = objective_of(model, tokenizer)
    sites = find_norm_sites(model)
    dims = dims_to_ablate(model, tokenizer, k=k)  # the one rule: parameters + activations, never an effect
    folder = Path(resolve(name))
    if (folder / "training_config.json").exists():
        counts = frequency.pretraining_token_counts(folder, max_texts=exact_max_texts)
    else:
        counts = frequency.proxy_token_counts(tokenizer, corpora, max_texts=proxy_max_texts)
    from ..analysis.effect import effect_roles

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


# --- the study: every model of notebook 07 through every measurement, as tidy tables -------------------


@dataclass(frozen=True)
class WhySettings:
    """How notebook 07 measures (its parameters cell, one field each).

    k: the detection threshold (the snapshot timeline's). max_length / batch_size: tokenization and batching.
    min_occurrences / n_boot: a token type's minimum count in the texts, bootstrap resamples of the correlations.
    top_share: the share of the largest |h| whose tokens are examined. attention_texts / quant_texts: the first
    texts used for the attention sinks / the quantization. random_draws / seed: the random-dims control.
    bits: the fake quantization's bits.
    """

    k: float
    max_length: int = 64
    batch_size: int = 16
    min_occurrences: int = 3
    n_boot: int = 500
    top_share: float = 0.01
    attention_texts: int = 12
    quant_texts: int = 16
    random_draws: int = 10
    bits: int = 8
    seed: int = 0


@dataclass
class WhyResult:
    """What ``run_study`` measured, one tidy table per measurement (a ``model`` column in each).

    overview: one row per model. correlations: per model, layer and measure (``frequency.layer_correlations``).
    scatter: per token type at each model's best layer. emergence: the snapshot timeline of models trained here.
    snapshots: model -> (snapshot weight files, logged steps). top_tokens: the tokens of the largest |h|.
    shares: per model, where the largest |h| sit (``frequency.top_activation_tokens``' shares). sinks: sink
    scores per condition. quantization: W8A8 conditions. kurtosis: Bondarenko's metrics. subjects: the models;
    settings: how they were measured.
    """

    subjects: list[Subject]
    settings: WhySettings
    overview: pd.DataFrame
    correlations: pd.DataFrame
    scatter: pd.DataFrame
    emergence: pd.DataFrame
    snapshots: dict
    top_tokens: pd.DataFrame
    shares: pd.DataFrame
    sinks: pd.DataFrame
    quantization: pd.DataFrame
    kurtosis: pd.DataFrame

    def tables(self) -> dict[str, pd.DataFrame]:
        """Name -> table, as ``RunRecorder.table`` saves them."""
        return {
            "models": self.overview,
            "frequency_correlations": self.correlations,
            "frequency_by_token": self.scatter,
            "emergence": self.emergence,
            "top_tokens": self.top_tokens,
            "top_token_shares": self.shares,
            "attention_sinks": self.sinks,
            "quantization": self.quantization,
            "kurtosis": self.kurtosis,
        }


def load_subjects(names: Sequence[str], k: float, device: str = "auto", **counting) -> list[Subject]:
    """``load_subject`` for each name (``counting``: corpora, proxy_max_texts, exact_max_texts)."""
    return [load_subject(name, device=device, k=k, **counting) for name in names]


def overview(subjects: Sequence[Subject]) -> pd.DataFrame:
    """One row per model: objective, size, the rule's dims, the roles an ablation disables, the counts used."""
    return pd.DataFrame(
        [
            {
                "model": s.name,
                "objective": s.kind,
                "layers": s.layers,
                "hidden": s.hidden_size,
                "outlier dims": s.dims,
                "ablation roles": "+".join(s.roles),
                "counts": s.counts.describe(),
            }
            for s in subjects
        ]
    )


def _frequency(subjects: Sequence[Subject], texts: Sequence[str], settings: WhySettings):
    occurrences = {
        s.name: frequency.token_occurrences(
            s.model, s.tokenizer, texts, s.dims, settings.max_length, settings.batch_size, progress=False
        )
        for s in subjects
    }
    correlations = pd.concat(
        [
            frequency.layer_correlations(
                occurrences[s.name], s.counts, s.dims[0], settings.n_boot, settings.seed, settings.min_occurrences
            ).assign(model=s.name)
            for s in subjects
        ],
        ignore_index=True,
    )
    partial = correlations[correlations.measure == "partial_spearman"]
    best = partial.groupby("model", sort=False).value.idxmax()
    scatter = pd.concat(
        [
            frequency.frequency_table(
                occurrences[s.name],
                s.counts,
                int(correlations.layer[best[s.name]]),
                s.dims[0],
                settings.min_occurrences,
            ).assign(model=s.name)
            for s in subjects
        ],
        ignore_index=True,
    )
    return occurrences, correlations, scatter


def _top_tokens(subjects: Sequence[Subject], occurrences: dict, top_share: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    tokens, shares = [], []
    for s in subjects:
        table, share = frequency.top_activation_tokens(occurrences[s.name], s.dims[0], top_share=top_share)
        tokens.append(table.assign(model=s.name))
        shares.append({"model": s.name, **share})
    return pd.concat(tokens, ignore_index=True), pd.DataFrame(shares)


def _emergence(subjects: Sequence[Subject], k: float) -> tuple[pd.DataFrame, dict]:
    frames, snapshots = [], {}
    for s in filter(has_trajectory, subjects):
        emerged, files, steps = frequency.snapshot_availability(resolve(s.name), s.dims, k=k)
        frames.append(emerged.assign(model=s.name))
        snapshots[s.name] = (len(files), steps)
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["model"])), snapshots


def run_study(subjects: Sequence[Subject], texts: Sequence[str], settings: WhySettings) -> WhyResult:
    """Notebook 07's measurements on every subject: token frequency against outlier magnitude, the tokens that
    carry the largest activations, attention sinks with the outlier dims disabled against random draws, W8A8 with
    the outlier dims kept in full precision against random dims, and kurtosis without them. Numbers only:
    ``reporting.claims.why_findings`` states them.

    Example:
        >>> result = run_study(load_subjects(["bbmini"], k=3.0), texts, WhySettings(k=3.0))  # doctest: +SKIP
    """
    from ..analysis import attention_sinks, quantization
    from ..analysis.activations import text_batches

    subjects = list(subjects)
    occurrences, correlations, scatter = _frequency(subjects, texts, settings)
    top_tokens, shares = _top_tokens(subjects, occurrences, settings.top_share)
    emergence, snapshots = _emergence(subjects, settings.k)
    draws, seed = settings.random_draws, settings.seed
    sinks = pd.concat(
        [
            attention_sinks.sink_under_conditions(
                s.model,
                s.tokenizer,
                list(texts)[: settings.attention_texts],
                conditions(s, draws, seed),
                s.sites,
                settings.max_length,
                settings.batch_size,
                progress=False,
            ).assign(model=s.name)
            for s in subjects
        ],
        ignore_index=True,
    )
    quant = pd.concat(
        [
            quantization.quantization_table(
                s.model,
                s.tokenizer,
                list(texts)[: settings.quant_texts],
                s.kind,
                s.dims,
                random_draws(s, draws, seed),
                settings.bits,
                settings.max_length,
                settings.batch_size,
                seed,
                progress=False,
                sites=s.sites,
            ).assign(model=s.name)
            for s in subjects
        ],
        ignore_index=True,
    )
    kurtosis = pd.concat(
        [
            quantization.outlier_metrics(
                s.model,
                text_batches(s.tokenizer, texts, settings.max_length, settings.batch_size),
                random_excluded(s, draws, seed),
            ).assign(model=s.name)
            for s in subjects
        ],
        ignore_index=True,
    )
    return WhyResult(
        subjects,
        settings,
        overview(subjects),
        correlations,
        scatter,
        emergence,
        snapshots,
        top_tokens,
        shares,
        sinks,
        quant,
        kurtosis,
    )
