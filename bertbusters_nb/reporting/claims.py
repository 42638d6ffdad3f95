"""Every verdict a notebook states: the claim, whether it held, and the sentence, from the run's numbers.

Notebooks only call these. Each ``Finding`` function takes the numbers the notebook computed (tables,
scalars), applies the claim's threshold (named constants here, so a unit test reaches them) and builds
the evidence sentence; ``RunRecorder.finding(*finding)`` stores it and ``finding.markdown()`` shows it.
The analysis modules supply numbers and their own measured sentences; this module adds the claim
texts that findings.json is keyed by, so a claim is worded in one place.

Example:
    >>> f = same_dim_in_most_layers(report, k=3.0)               # doctest: +SKIP
    >>> rec.finding(*f); display(Markdown(f.sentence))           # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import pandas as pd

from ..analysis.baselines import rank_against

if TYPE_CHECKING:
    from ..analysis.outliers import OutlierReport


def versus_random(
    value: float, random_values: Sequence[float], metric: str, worse: str = "higher", label: str = "the outlier dims"
) -> tuple[bool, str]:
    """Did ``value`` move ``metric`` further (in the ``worse`` direction) than every random draw?

    Returns ``(held, sentence)``; ``held`` is True only when the value is beyond all draws.

    Example:
        >>> versus_random(0.95, [0.99, 0.98], "cosine to intact", worse="lower")[0]
        True
    """
    if worse not in ("higher", "lower"):
        raise ValueError("worse must be 'higher' or 'lower'.")
    stats = rank_against(value, random_values)
    beyond = stats["value"] > stats["random_max"] if worse == "higher" else stats["value"] < stats["random_min"]
    share = stats["share_of_draws_below"] if worse == "higher" else 1 - stats["share_of_draws_below"]
    sentence = (
        f"With {label} disabled, {metric} is {value:.4g}; over {stats['draws']} random draws of the same size it is "
        f"{stats['random_mean']:.4g} ± {stats['random_std']:.2g} (range {stats['random_min']:.4g} to "
        f"{stats['random_max']:.4g}). The outlier result is {'beyond every' if beyond else 'not beyond every'} "
        f"random draw ({share:.0%} of draws are less damaging)."
    )
    return bool(beyond), sentence


def verdict(held: bool | None) -> str:
    return {
        True: "**The paper's claim held here.**",
        False: "**The paper's claim did not hold here.**",
        None: "**Inconclusive here.**",
    }[held]


def scan_ranks(scan, dims: Sequence[int], metric: str = "eval_loss") -> str:
    """Where the chosen dims rank among all dims of a single-dim scan (1 = most damaging)."""
    ranked = scan.sort_values(metric, ascending=False).reset_index(drop=True)
    ranks = {int(d): int(ranked.index[ranked["dim"] == d][0]) + 1 for d in dims if (ranked["dim"] == d).any()}
    top = ", ".join(f"{int(r.dim)} ({getattr(r, metric):.3f})" for r in ranked.head(3).itertuples())
    where = ", ".join(f"dim {d} ranks {r} of {len(ranked)}" for d, r in ranks.items())
    return f"In the single-dim scan ({metric}), the most damaging dims are {top}; {where}."


# Thresholds of the claims (named so a test reaches them; the paper's numbers where it gives them).
SAME_DIM_SHARE = 0.5  # notebook 02: the top dim is beyond k sigma in more than this share of block-output norms
ACTIVATION_INPUT_SHARE = (
    0.9  # notebook 02: an outlier dim is the largest for at least this share of inputs (paper ~95%)
)


@dataclass(frozen=True)
class Finding:
    """One claim of a notebook: its text, whether it held (None: inconclusive), the evidence stored in
    findings.json, and the sentence shown in the notebook (the evidence unless set).

    Unpacks as ``(claim, held, evidence)``, so ``rec.finding(*finding)`` records it.
    """

    claim: str
    held: bool | None
    evidence: str
    sentence: str = ""

    def __post_init__(self):
        if not self.sentence:
            object.__setattr__(self, "sentence", self.evidence)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.claim, self.held, self.evidence))

    def markdown(self) -> str:
        """The verdict in bold, then the sentence: ``**The paper's claim held here.** ...``."""
        return verdict(self.held) + " " + self.sentence

    def headline(self) -> str:
        """``**claim:** held here. evidence`` (``did not hold`` otherwise, inconclusive included)."""
        return f"**{self.claim}:** {'held' if self.held else 'did not hold'} here. {self.evidence}"


def _as_finding(claim: str, result: tuple[bool | None, str], suffix: str = "") -> Finding:
    held, evidence = result
    return Finding(claim, held, evidence, evidence + suffix)


# --- 00 · the core on MiniLM ---------------------------------------------------------------------------


def embeddings_vs_random(outlier_cosine: float, random_cosines: Sequence[float]) -> Finding:
    """Notebook 00: the outlier ablation moves sentence embeddings (mean cosine to intact) below every random draw."""
    held, sentence = versus_random(
        outlier_cosine, random_cosines, "mean cosine to the intact embeddings", worse="lower"
    )
    return Finding("Disabling the outlier dims moves sentence embeddings more than random dims", held, sentence)


def restored_exactly(restored: bool, n_tensors: int, n_conditions: int) -> Finding:
    """Notebook 00: every parameter is bit-identical after all ablations (``restored`` from ``fingerprints_equal``)."""
    restored = bool(restored)
    return Finding(
        "Ablations restore the model bit-exactly",
        restored,
        f"all {n_tensors} tensors identical after {n_conditions} conditions: {restored}",
        f"All parameters identical after {n_conditions} ablations: **{restored}**.",
    )


def core_summary(
    embeddings: Finding, model_name: str, dims: Sequence[int], detection_summary: str, parameter_summary: str
) -> str:
    """Notebook 00's closing paragraph: the embedding verdict, the dims disabled and why."""
    return (
        embeddings.markdown() + f" Dims disabled on {model_name}: {dims} ({detection_summary}); "
        f"block-output parameters alone: {parameter_summary}."
    )


# --- 01 · emergence ------------------------------------------------------------------------------------


def emerges_early(emerged: pd.DataFrame, last_step: int, breakout: int | None, plateau: float | None) -> Finding:
    """Notebook 01: the top final outlier dim stood out in most layers early (``emergence.emergence_verdict``)."""
    from ..analysis.emergence import emergence_verdict

    return _as_finding(
        "Outlier dims emerge early in pre-training, about when the loss starts to improve",
        emergence_verdict(emerged, last_step, breakout, plateau),
    )


def matters_at_the_end(ablation: pd.DataFrame | None) -> Finding:
    """Notebook 01: at the last snapshot the outlier ablation beats every random draw (``emergence.ablation_verdict``)."""
    from ..analysis.emergence import ablation_verdict

    return _as_finding(
        "At the end of pre-training the outlier dims matter more than every random draw", ablation_verdict(ablation)
    )


def emergence_summary(early: Finding, at_the_end: Finding, live_text: str) -> str:
    """Notebook 01's closing paragraph."""
    return early.markdown() + " " + at_the_end.sentence + " Live run: " + live_text


# --- 02 · position consistency -------------------------------------------------------------------------


def same_dim_in_most_layers(report: "OutlierReport", k: float, min_share: float = SAME_DIM_SHARE) -> Finding:
    """Notebook 02: the top dim of the block-output ``report`` is beyond ``k`` sigma in more than ``min_share``
    of its sites (and the report names outlier dims)."""
    from ..analysis.consistency import top_dim_share

    share = top_dim_share(report)
    held = bool(report.dims) and share > min_share
    evidence = (
        f"top dim {int(report.per_dim.dim.iloc[0])} is beyond {k:g} sigma in {share:.0%} of the "
        f"{report.n_sites} block-output LayerNorms; outlier dims (flagged in most layers): {report.dims}"
    )
    return Finding("The outlier is at the same dimension in most layers", held, evidence, evidence + ".")


def peaks_at_the_outlier_dim(
    layer_table: pd.DataFrame, dims: Sequence[int], min_input_share: float = ACTIVATION_INPUT_SHARE
) -> Finding:
    """Notebook 02: averaged over layers after the embeddings (``layer > 0`` of ``layer_table``: columns
    ``input_share``, ``token_share``, ``ratio``), an outlier dim is the largest for >= ``min_input_share`` of inputs."""
    inner = layer_table[layer_table.layer > 0]
    input_share = float(inner.input_share.mean())
    held = input_share >= min_input_share
    evidence = (
        f"averaged over layers 1-{int(inner.layer.max())}, an outlier dim ({dims}) has the largest "
        f"magnitude for {input_share:.0%} of inputs and {inner.token_share.mean():.0%} of tokens "
        f"(paper: ~95% of inputs); mean |h| there is {inner.ratio.mean():.1f}x the median dim"
    )
    return Finding("Hidden states peak at the outlier dim for ~95% of inputs", held, evidence, evidence + ".")


def positions_differ_between_models(across: pd.DataFrame) -> Finding:
    """Notebook 02: every model of ``consistency.compare_models`` has its own top dim (None with one model)."""
    distinct = across.top_dim.nunique() == len(across)
    evidence = "; ".join(
        f"{r.model}: top dim {r.top_dim} ({r.top_dim_sites_flagged} block-output sites), "
        f"largest for {r.input_share_top_is_outlier:.0%} of inputs"
        for r in across.itertuples()
    )
    return Finding(
        "Outlier positions differ between models", bool(distinct) if len(across) > 1 else None, evidence, evidence + "."
    )


def positions_differ_between_seeds(across_seeds: pd.DataFrame) -> Finding:
    """Notebook 02: runs of one recipe with other seeds put the outlier elsewhere (``consistency.seeds_finding``)."""
    from ..analysis.consistency import seeds_finding

    return _as_finding("Outlier positions differ between seeds of the same recipe", seeds_finding(across_seeds), ".")


def rule_names_damaging_dims(agreement: pd.DataFrame) -> Finding:
    """Notebook 02: the default rule against the single-dim scan (``detection.rule_finding``)."""
    from ..analysis.detection import rule_finding

    claim, held, evidence = rule_finding(agreement)
    return Finding(claim, held, evidence, evidence + ".")


def position_summary(
    model_name: str, same_dim: Finding, peaks: Finding, report: "OutlierReport", layer_table: pd.DataFrame, k: float
) -> str:
    """Notebook 02's closing paragraph (``consistency.conclusion`` on the two findings' numbers)."""
    from ..analysis.consistency import conclusion, top_dim_share

    input_share = float(layer_table[layer_table.layer > 0].input_share.mean())
    return conclusion(
        model_name, bool(same_dim.held), bool(peaks.held), top_dim_share(report), input_share, report.dims, k
    )


# --- 03 · masked-LM degradation ------------------------------------------------------------------------


def mlm_loss_vs_random(summary: Mapping[str, float], random_losses: Sequence[float], dims: Sequence[int]) -> Finding:
    """Notebook 03: the outlier ablation raises the MLM loss beyond every random draw
    (``summary`` from ``mlm_effects.loss_summary``)."""
    held, sentence = versus_random(summary["outlier_loss"], random_losses, "the MLM loss (nats)", label=f"dims {dims}")
    evidence = (
        sentence + f" Intact loss {summary['intact_loss']:.3f}; the outlier ablation adds "
        f"{summary['outlier_delta']:+.3f}, random draws add {summary['random_delta_mean']:+.3f} on average."
    )
    return Finding("Disabling the outlier dims raises MLM loss beyond every random draw", held, evidence, sentence)


def probe_vs_random(probe: pd.DataFrame, model_name: str, dims: Sequence[int]) -> Finding:
    """Notebook 03, a model without an MLM head: the SNLI probe AUC with the outlier dims disabled against random
    draws (``probe``: one row per condition, ``group`` 'outliers' / 'random', ``snli_auc``, ``cosine_mean``)."""
    outlier = probe[probe.group == "outliers"].iloc[0]
    random = probe[probe.group == "random"]
    held, sentence = versus_random(
        outlier.snli_auc, random.snli_auc, "the SNLI probe AUC", worse="lower", label=f"{model_name} dims {dims}"
    )
    evidence = sentence + (
        f" Embedding cosine to intact: {outlier.cosine_mean:.3f} vs random {random.cosine_mean.mean():.3f}."
    )
    return Finding(
        f"On {model_name} (no MLM head) the outlier ablation hurts the SNLI probe beyond random dims",
        held,
        evidence,
        sentence,
    )


def mlm_summary(mlm: Finding, model_name: str, scan_rank: str) -> str:
    """Notebook 03's closing paragraph: the loss verdict and where the dims rank in the scan."""
    return verdict(mlm.held) + f" On **{model_name}**: " + mlm.sentence + " " + scan_rank


# --- 07 · why the outliers exist -----------------------------------------------------------------------


def frequency_drives_magnitude(correlations: pd.DataFrame, counts: Any, name: str) -> Finding:
    """Notebook 07 (Puccetti 2022): per-layer frequency correlations of one model (``frequency.layers_verdict``)."""
    from ..analysis.frequency import layers_verdict

    return _as_finding(
        f"{name}: the outlier dim's magnitude on a token rises with the token's pre-training frequency",
        layers_verdict(correlations, counts, name),
    )


def frequency_over_training(name: str, sentence: str) -> Finding:
    """Notebook 07: inconclusive by construction, the sentence says what intermediate record is missing."""
    return Finding(
        f"{name}: the frequency correlation appears when the outlier dim emerges during pre-training", None, sentence
    )


def top_activations_on_special_tokens(shares: Mapping, name: str) -> Finding:
    """Notebook 07 (Bondarenko 2023): where the top share of |h| sits (``frequency.top_tokens_verdict``)."""
    from ..analysis.frequency import top_tokens_verdict

    return _as_finding(
        f"{name}: the largest outlier activations sit on special tokens and delimiters",
        top_tokens_verdict(shares, name),
    )


def heads_sink(intact: pd.DataFrame, name: str) -> Finding:
    """Notebook 07 (Sun 2024): attention-sink mass of the intact model (``attention_sinks.sink_verdict``)."""
    from ..analysis.attention_sinks import sink_verdict

    return _as_finding(
        f"{name}: attention heads put their mass on special tokens, delimiters and the first token",
        sink_verdict(intact, name),
    )


def sinks_removed_vs_random(per_condition: pd.Series, name: str, dims: Sequence[int]) -> Finding:
    """Notebook 07: mean sink mass with the outlier dims disabled against random draws (``per_condition`` from
    ``attention_sinks.mean_sink``: 'none', 'outliers', 'random ...')."""
    held, sentence = versus_random(
        per_condition["outliers"],
        per_condition.filter(like="random"),
        "the mean sink mass over heads",
        worse="lower",
        label=f"{name}'s dims {dims}",
    )
    sentence = f"Intact: {per_condition['none']:.3f}. " + sentence
    return Finding(f"{name}: disabling the outlier dims removes attention-sink mass beyond random dims", held, sentence)


def quantization_rescued(table: pd.DataFrame, name: str, bits: int) -> Finding:
    """Notebook 07 (LLM.int8): keeping the outlier dims in full precision (``quantization.quantization_verdict``)."""
    from ..analysis.quantization import quantization_verdict

    return _as_finding(
        f"{name}: keeping the outlier dims in full precision rescues W{bits}A{bits} beyond random dims",
        quantization_verdict(table, name),
    )


def heavy_tails(metrics: pd.DataFrame, name: str) -> Finding:
    """Notebook 07 (Bondarenko 2023): kurtosis with and without the outlier dims (``quantization.kurtosis_verdict``)."""
    from ..analysis.quantization import kurtosis_verdict

    return _as_finding(
        f"{name}: the outlier dims are what makes the hidden states heavy-tailed (kurtosis)",
        kurtosis_verdict(metrics, name),
    )


# --- 04 · downstream, 06 · across architectures: the studies' findings in sentences -------------------


def downstream_versus_random(study: Any) -> str:
    """Notebook 04: per fine-tuned pair, where the outlier result falls among the random draws (markdown).

    ``study``: a ``studies.downstream.DownstreamStudy`` after ``random_baseline`` (its ``summary()`` and
    ``tables["random"]``)."""
    random = study.tables["random"]
    parts = []
    for r in study.summary().itertuples():
        draws = random[(random.backbone == r.backbone) & (random.task == r.task) & (random.split == r.split)]
        parts.append(
            f"**{r.backbone} / {r.task} ({r.split})**: "
            + versus_random(r.outliers_disabled, draws["value"], r.metric, worse="lower", label="the outlier dims")[1]
        )
    return "\n\n".join(parts)


def across_models_report(table: pd.DataFrame) -> str:
    """Notebook 06: what the run found, one line per model and one for zero vs mean, from the protocol's table
    (``studies.across_models.findings`` and ``zero_vs_mean_finding``)."""
    from ..studies.across_models import findings, zero_vs_mean_finding

    lines = [f"- **{claim.split(':')[0]}** {verdict(held)} {evidence}" for claim, held, evidence in findings(table)]
    claim, held, evidence = zero_vs_mean_finding(table)
    lines.append(f"- **Zero vs mean.** {verdict(held)} {evidence}")
    return "\n".join(lines)
