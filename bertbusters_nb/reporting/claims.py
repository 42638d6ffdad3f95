"""Every verdict a notebook states: the claim, whether it held, and the sentence, from the run's numbers.

Notebooks only call these. Each ``Finding`` function takes the numbers the notebook computed (tables,
scalars), applies the claim's threshold (named constants here, so a unit test reaches them) and builds
the evidence sentence; ``RunRecorder.finding(*finding)`` stores it and ``finding.markdown()`` shows it.
The analysis modules and the studies supply numbers and tables only; this module holds every claim text
(findings.json is keyed by it) and every sentence, so a claim is worded in one place.

A claim that the outlier dims matter "more than random dims" has three outcomes (``versus_random``):
``HELD`` (beyond every random draw, and the effect is large: see ``MIN_RELATIVE_CHANGE`` and
``MIN_SPREAD_RATIO``), ``SMALL`` (beyond every random draw but small) and ``NOT_HELD``. A ``Finding``
carries its ``outcome``; ``held`` stays True only for ``HELD``.

Example:
    >>> f = same_dim_in_most_layers(report, k=3.0)               # doctest: +SKIP
    >>> rec.finding(*f); display(Markdown(f.sentence))           # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from ..analysis.baselines import damage, rank_against

if TYPE_CHECKING:
    from ..analysis.outliers import OutlierReport

# --- outcomes and the effect-size rule of every versus-random verdict -----------------------------------

HELD = "held"
SMALL = "beyond every random draw but small"
NOT_HELD = "did not hold"
INCONCLUSIVE = "inconclusive"
OUTCOMES = (HELD, SMALL, NOT_HELD, INCONCLUSIVE)

# Rank among random draws is not size. Beyond every one of 20 draws only says p < 1/21; on an encoder where
# no dim matters much (issue 22: the largest single-dim effect +0.010 nats on an intact 0.246, i.e. 4%) two
# dims gave 0.207 -> 0.213 (+3%), beyond all 20 draws in one sample and inside their spread in another. A
# "held" must survive that, so it also needs:
# - a relative change of the objective (damage / |intact|) of at least 5%: above the 3-4% that one or two
#   unremarkable dims reached there, and far below the paper's own effects (MNLI "nearly 30%", an MLM loss
#   that more than doubles), so every effect the paper calls disruptive passes;
MIN_RELATIVE_CHANGE = 0.05
# - the outlier result at least 3 standard deviations of the random draws beyond their mean: the largest of
#   20 normal draws lies ~1.9 sd out on average, so "beyond every draw" alone is a coin the next sample can
#   flip; 3 sd is what about one draw in 740 reaches, so another 20 draws will not overtake it.
MIN_SPREAD_RATIO = 3.0


@dataclass(frozen=True)
class RandomComparison:
    """An outlier result against random draws of as many dims, in the direction that means damage.

    value: the objective with the outlier dims disabled. intact: the objective of the intact model.
    worse: 'higher' (a loss) or 'lower' (a cosine, an accuracy). random_*: over the draws (sd with ddof 1;
    0 with one draw). beyond: further than every draw. relative_change: damage / |intact| (damage is the
    change from intact in the ``worse`` direction; inf when intact is 0 and there is damage).
    spread_ratio: how many random sds the value lies beyond the random mean, in the ``worse`` direction
    (inf when the draws do not vary and the value is beyond them). share_less_damaging: draws the value beats.
    """

    value: float
    intact: float
    worse: str
    draws: int
    random_mean: float
    random_std: float
    random_min: float
    random_max: float
    beyond: bool
    relative_change: float
    spread_ratio: float
    share_less_damaging: float

    @property
    def outcome(self) -> str:
        return effect_outcome(self.beyond, self.relative_change, self.spread_ratio)

    @property
    def damage(self) -> float:
        return damage(self.value, self.intact, self.worse)


def effect_outcome(beyond: bool, relative_change: float, spread_ratio: float) -> str:
    """The rule: ``NOT_HELD`` unless beyond every draw; then ``HELD`` when the relative change reaches
    ``MIN_RELATIVE_CHANGE`` and the spread ratio ``MIN_SPREAD_RATIO``, else ``SMALL``."""
    if not beyond:
        return NOT_HELD
    large = relative_change >= MIN_RELATIVE_CHANGE and spread_ratio >= MIN_SPREAD_RATIO
    return HELD if large else SMALL


def _ratio(numerator: float, denominator: float) -> float:
    if denominator > 0:
        return numerator / denominator
    return math.inf if numerator > 0 else 0.0


def compare_to_random(
    value: float, random_values: Sequence[float], intact: float, worse: str = "higher"
) -> RandomComparison:
    """``value`` (outlier dims disabled) against ``random_values`` (random draws), with the effect size.

    Example:
        >>> compare_to_random(0.213, [0.207, 0.209, 0.211], intact=0.207).outcome
        'beyond every random draw but small'
    """
    if worse not in ("higher", "lower"):
        raise ValueError("worse must be 'higher' or 'lower'.")
    stats = rank_against(value, random_values)
    sign = 1.0 if worse == "higher" else -1.0
    beyond = value > stats["random_max"] if worse == "higher" else value < stats["random_min"]
    share = stats["share_of_draws_below"] if worse == "higher" else float(np.mean(np.asarray(random_values) > value))
    return RandomComparison(
        value=float(value),
        intact=float(intact),
        worse=worse,
        draws=int(stats["draws"]),
        random_mean=stats["random_mean"],
        random_std=stats["random_std"],
        random_min=stats["random_min"],
        random_max=stats["random_max"],
        beyond=bool(beyond),
        relative_change=_ratio(damage(value, intact, worse), abs(intact)),
        spread_ratio=_ratio(sign * (value - stats["random_mean"]), stats["random_std"]),
        share_less_damaging=share,
    )


def effect_sentence(outcome: str, relative_change: float, spread_ratio: float) -> str:
    """The effect-size clause every versus-random sentence ends with."""
    size = (
        f"Effect size: the damage is {relative_change:.1%} of the intact value, and "
        f"{abs(spread_ratio):.1f} random sd {'beyond' if spread_ratio >= 0 else 'short of'} the random mean"
    )
    rule = f"(a held claim needs >= {MIN_RELATIVE_CHANGE:.0%} and >= {MIN_SPREAD_RATIO:g} sd)"
    if outcome == SMALL:
        return f"{size}: beyond every random draw but small {rule}."
    return f"{size} {rule}."


def versus_random(
    value: float,
    random_values: Sequence[float],
    metric: str,
    worse: str = "higher",
    label: str = "the outlier dims",
    intact: float | None = None,
) -> tuple[str, str]:
    """Did ``value`` move ``metric`` further (in the ``worse`` direction) than every random draw, and by how much?

    Returns ``(outcome, sentence)``: ``HELD``, ``SMALL`` or ``NOT_HELD`` (``effect_outcome``); ``intact`` is
    the intact model's ``metric`` (the reference of the relative change; required).

    Example:
        >>> versus_random(0.7, [0.99, 0.98], "cosine to intact", worse="lower", intact=1.0)[0]
        'held'
    """
    if intact is None:
        raise ValueError("versus_random needs the intact value: a verdict weighs the size of the effect.")
    c = compare_to_random(value, random_values, intact, worse)
    sentence = (
        f"With {label} disabled, {metric} is {value:.4g} (intact {intact:.4g}); over {c.draws} random draws of the "
        f"same size it is {c.random_mean:.4g} ± {c.random_std:.2g} (range {c.random_min:.4g} to "
        f"{c.random_max:.4g}). The outlier result is {'beyond every' if c.beyond else 'not beyond every'} "
        f"random draw ({c.share_less_damaging:.0%} of draws are less damaging). "
        + effect_sentence(c.outcome, c.relative_change, c.spread_ratio)
    )
    return c.outcome, sentence


_VERDICTS = {
    HELD: "**The paper's claim held here.**",
    SMALL: "**Beyond every random draw here, but the effect is small.**",
    NOT_HELD: "**The paper's claim did not hold here.**",
    INCONCLUSIVE: "**Inconclusive here.**",
}


def outcome_of(held: bool | None) -> str:
    """The outcome a plain held / not held / inconclusive verdict stands for."""
    return {True: HELD, False: NOT_HELD, None: INCONCLUSIVE}[held]


def verdict(held: bool | None | str) -> str:
    """The bold verdict for ``held`` (True, False, None) or an outcome (``HELD``, ``SMALL``, ...)."""
    return _VERDICTS[held if isinstance(held, str) else outcome_of(held)]


def summary_verdict(finding: Mapping) -> str:
    """The word SUMMARY.md shows for a recorded finding (a findings.json entry): held, did NOT hold,
    inconclusive, or beyond every random draw but small."""
    outcome = finding.get("outcome") or outcome_of(finding["held"])
    return {HELD: "held", SMALL: SMALL, NOT_HELD: "did NOT hold", INCONCLUSIVE: "inconclusive"}[outcome]


def scan_ranks(scan, dims: Sequence[int], metric: str = "eval_loss") -> str:
    """Where the chosen dims rank among all dims of a single-dim scan (1 = most damaging). A screened scan
    (``value_kind`` with ``estimate`` rows) ranks its exactly evaluated dims only, and says how many those are."""
    exact = scan[scan["value_kind"] == "exact"] if "value_kind" in scan else scan
    ranked = exact.sort_values(metric, ascending=False).reset_index(drop=True)
    ranks = {int(d): int(ranked.index[ranked["dim"] == d][0]) + 1 for d in dims if (ranked["dim"] == d).any()}
    top = ", ".join(f"{int(r.dim)} ({getattr(r, metric):.3f})" for r in ranked.head(3).itertuples())
    if len(exact) == len(scan):
        where = ", ".join(f"dim {d} ranks {r} of {len(ranked)}" for d, r in ranks.items())
        return f"In the single-dim scan ({metric}), the most damaging dims are {top}; {where}."
    where = ", ".join(f"dim {d} ranks {r}" for d, r in ranks.items())
    first = scan.attrs.get("checked_in_order")
    certified = scan.attrs.get("certified_top")
    bound = ""
    if certified is not None:
        bound = (
            f" The screen's bound (its estimate plus the largest underestimate per unit of edit energy measured on the "
            f"exact dims) leaves no other dim able to reach the exact top {certified}: under that bound "
            f"{', '.join(str(int(d)) for d in ranked['dim'].head(certified))} are the top {certified} of all "
            f"{len(scan)} dims."
            if certified
            else " The screen's bound (its estimate plus the largest underestimate per unit of edit energy measured "
            "on the exact dims) cannot rule the other dims out of even the top rank, so this ranking covers the exact "
            "dims only."
        )
    return (
        f"In the screened single-dim scan ({metric}: all {len(scan)} dims estimated, {len(exact)} evaluated exactly: "
        f"{f'the first {first} of its check order' if first else 'its first dims'} and the outlier dims), the most "
        f"damaging dims evaluated exactly are {top}; among those {len(exact)}, {where}.{bound} Notebook 02 checks the "
        f"detection rule against the exhaustive scan."
    )


# Thresholds of the claims (named so a test reaches them; the paper's numbers where it gives them).
SAME_DIM_SHARE = 0.5  # notebook 02: the top dim is beyond k sigma in more than this share of block-output norms
ACTIVATION_INPUT_SHARE = (
    0.9  # notebook 02: an outlier dim is the largest for at least this share of inputs (paper ~95%)
)


@dataclass(frozen=True)
class Finding:
    """One claim of a notebook: its text, whether it held (None: inconclusive), the evidence stored in
    findings.json, the sentence shown in the notebook (the evidence unless set), and the outcome
    (``HELD``, ``SMALL``, ``NOT_HELD``, ``INCONCLUSIVE``; from ``held`` unless set).

    Unpacks as ``(claim, held, evidence, outcome)``, so ``rec.finding(*finding)`` records it.
    """

    claim: str
    held: bool | None
    evidence: str
    sentence: str = ""
    outcome: str = ""

    def __post_init__(self):
        if not self.sentence:
            object.__setattr__(self, "sentence", self.evidence)
        if not self.outcome:
            object.__setattr__(self, "outcome", outcome_of(self.held))
        if self.outcome not in OUTCOMES or (self.held is True) != (self.outcome == HELD):
            raise ValueError(f"Finding {self.claim!r}: outcome {self.outcome!r} does not match held={self.held}.")

    @classmethod
    def of(cls, claim: str, outcome: str, evidence: str, sentence: str = "") -> "Finding":
        """A finding from an outcome (``versus_random``'s first value): held only when ``HELD``."""
        held = None if outcome == INCONCLUSIVE else outcome == HELD
        return cls(claim, held, evidence, sentence, outcome)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.claim, self.held, self.evidence, self.outcome))

    def markdown(self) -> str:
        """The verdict in bold, then the sentence: ``**The paper's claim held here.** ...``."""
        return verdict(self.outcome) + " " + self.sentence

    def headline(self) -> str:
        """``**claim:** held here. evidence`` (``did not hold`` otherwise, inconclusive included)."""
        word = {HELD: "held", SMALL: SMALL}.get(self.outcome, "did not hold")
        return f"**{self.claim}:** {word} here. {self.evidence}"


def outcome_from_summary(
    value: float, intact: float, worse: str, random_mean: float, random_std: float, beyond: bool
) -> tuple[str, float, float]:
    """(outcome, relative change, spread ratio) from a table's summary numbers of the random draws (the
    studies' tables keep the mean, sd and whether the value is beyond every draw, not the draws)."""
    sign = 1.0 if worse == "higher" else -1.0
    relative = _ratio(sign * (value - intact), abs(intact))
    spread = _ratio(sign * (value - random_mean), 0.0 if pd.isna(random_std) else random_std)
    return effect_outcome(bool(beyond), relative, spread), relative, spread


# --- the published figures beside the run's (reporting.published) --------------------------------------

# "Nearly 30%" carries no error bar; a run's relative drop agrees with a published one within 10 points (0.20
# to 0.40 for MNLI): wide enough for "nearly" and for another fine-tuning seed, narrow enough that a drop of
# a few percent, or none, reads as a disagreement.
PUBLISHED_DROP_TOLERANCE = 0.10


def published_dims_agreement(published: Sequence[int], computed: Sequence[int]) -> str:
    """'agree' (every published dim is among the run's), 'partly' (some are) or 'disagree' (none)."""
    shared = set(map(int, published)) & set(map(int, computed))
    return "agree" if shared == set(map(int, published)) else "partly" if shared else "disagree"


def published_dims_note(model_name: str, dims: Sequence[int]) -> str:
    """The published outlier dims of ``model_name`` beside the run's (``dims``, from the one rule), and whether
    they agree; for a model without a published figure, says so."""
    from .published import PUBLISHED

    entry = PUBLISHED.get(model_name)
    computed = [int(d) for d in dims]
    if entry is None or not entry.outlier_dims:
        return f"There is no published figure for {model_name}: the dims {computed} are this run's only."
    published = list(entry.outlier_dims)
    agreement = published_dims_agreement(published, computed)
    words = {
        "agree": "They agree: every published dim is among this run's.",
        "partly": "They agree in part: this run finds "
        f"{sorted(set(published) & set(computed))} of them, not {sorted(set(published) - set(computed))}.",
        "disagree": "They disagree: none of the published dims is among this run's.",
    }[agreement]
    return (
        f"Published outlier dims of {model_name}: {published} ({entry.dims_source}). This run's rule: "
        f"{computed}. {words}"
    )


def published_dims_table(model_dims: Mapping[str, Sequence[int]]) -> pd.DataFrame:
    """One row per model: the run's dims, the published ones (empty when none), the agreement and the source."""
    from .published import PUBLISHED

    rows = []
    for model, dims in model_dims.items():
        entry = PUBLISHED.get(model)
        published = list(entry.outlier_dims) if entry is not None else []
        rows.append(
            {
                "model": model,
                "dims (this run)": " ".join(map(str, dims)),
                "published dims": " ".join(map(str, published)) or "none published",
                "agreement": published_dims_agreement(published, dims) if published else "-",
                "source": entry.dims_source if entry is not None else "",
            }
        )
    return pd.DataFrame(rows)


def published_drops_note(summary: pd.DataFrame) -> str:
    """Notebook 04: for each pair of ``DownstreamStudy.summary()`` whose backbone and task have a published
    relative drop, the run's drop beside it and whether they agree (``PUBLISHED_DROP_TOLERANCE``)."""
    from .published import PUBLISHED

    lines = []
    for r in summary.itertuples():
        entry = PUBLISHED.get(r.backbone)
        if entry is None or r.task not in dict(entry.task_drops):
            continue
        drops = dict(entry.task_drops)
        drop = -float(r.relative_change)
        agree = abs(drop - drops[r.task]) <= PUBLISHED_DROP_TOLERANCE
        lines.append(
            f"- **{r.backbone} / {r.task} ({r.split})**: this run's drop {drop:.1%} with dims [{r.disabled_dims}] "
            f"zeroed; published: {drops[r.task]:.0%} ({entry.drops_source}). "
            f"{'They agree' if agree else 'They disagree'} (within {PUBLISHED_DROP_TOLERANCE:.0%} points or not)."
        )
    if not lines:
        backbones = ", ".join(dict.fromkeys(summary.backbone))
        return f"There is no published downstream figure for these backbones and tasks ({backbones})."
    return "\n".join(lines)


# --- 00 · the core on MiniLM ---------------------------------------------------------------------------


def embeddings_vs_random(outlier_cosine: float, random_cosines: Sequence[float]) -> Finding:
    """Notebook 00: the outlier ablation moves sentence embeddings (mean cosine to intact, 1 for the intact
    model) below every random draw, by a large effect."""
    outcome, sentence = versus_random(
        outlier_cosine, random_cosines, "mean cosine to the intact embeddings", worse="lower", intact=1.0
    )
    return Finding.of("Disabling the outlier dims moves sentence embeddings more than random dims", outcome, sentence)


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
        f"block-output parameters alone (a different criterion, not the dims disabled): {parameter_summary}."
    )


# --- 01 · emergence ------------------------------------------------------------------------------------


def emerges_early(
    emerged: pd.DataFrame, last_step: int, breakout: int | None, plateau: float | None, early_share: float = 0.5
) -> Finding:
    """Notebook 01: held when the most consistent final outlier dim (first row of ``emerged``, from
    ``emergence.emergence_steps``) stood out in most layers within the first ``early_share`` of training."""
    claim = "Outlier dims emerge early in pre-training, about when the loss starts to improve"
    if emerged.empty:
        return Finding(claim, False, "No dim stands out beyond the threshold in most layers at the end of training.")
    top = emerged.iloc[0]
    if top.first_step_in_most_sites is None or pd.isna(top.first_step_in_most_sites):
        return Finding(claim, None, f"Dim {top.dim} is an outlier at the end but was never recorded as one before.")
    first = int(top.first_step_in_most_sites)
    others = ", ".join(
        f"dim {int(r.dim)} at step {int(r.first_step_in_most_sites):,}"
        for r in emerged.iloc[1:].itertuples()
        if r.first_step_in_most_sites is not None and not pd.isna(r.first_step_in_most_sites)
    )
    if plateau is None:
        around = " (no unigram reference to date the loss breakout)"
    elif breakout is None:
        around = f"; the eval loss never went 1 nat below the unigram entropy ({plateau:.2f})"
    else:
        around = (
            f"; the eval loss went 1 nat below the unigram entropy ({plateau:.2f}), i.e. left the "
            f"context-free plateau, at step {breakout:,}"
        )
    evidence = (
        f"The most consistent outlier dim, {int(top.dim)}, first stood out in most layers at step {first:,} "
        f"of {last_step:,} ({first / last_step:.0%} of training){'; then ' + others if others else ''}{around}."
    )
    return Finding(claim, bool(first <= early_share * last_step), evidence)


def matters_at_the_end(ablation: pd.DataFrame | None) -> Finding:
    """Notebook 01: at the last snapshot of the per-snapshot ablation record (``trajectory.ablation_trajectory``:
    step, base_loss, delta, random_mean, random_std, random_max, draws, dims), the outlier ablation raises the
    loss beyond every random draw, by a large effect (``effect_outcome``: relative to the intact loss)."""
    claim = "At the end of pre-training the outlier dims matter more than every random draw"
    if ablation is None or ablation.empty:
        return Finding(claim, None, "No per-snapshot ablation record.")
    return Finding.of(claim, *_ablation_text(ablation))


def _ablation_text(ablation: pd.DataFrame) -> tuple[str, str]:
    ordered = ablation.sort_values("step").reset_index(drop=True)
    last = ordered.iloc[-1]
    beyond = (ordered.delta > ordered.random_max).tolist()
    relative = _ratio(float(last.delta), abs(float(last.base_loss)))
    spread = _ratio(float(last.delta - last.random_mean), 0.0 if pd.isna(last.random_std) else float(last.random_std))
    outcome = effect_outcome(bool(beyond[-1]), relative, spread)
    since = ""
    if beyond[-1]:
        start = len(beyond) - next(i for i, b in enumerate(reversed(beyond)) if not b) if not all(beyond) else 0
        since = f"; it has exceeded every draw at every snapshot since step {int(ordered.step[start]):,}"
    return outcome, (
        f"At step {int(last.step):,}, zeroing dims {last.dims} raises the MLM loss by {last.delta:+.3f} nats; "
        f"{int(last.draws)} random draws raise it by {last.random_mean:+.3f} on average "
        f"(max {last.random_max:+.3f}){since}. " + effect_sentence(outcome, relative, spread)
    )


def emergence_live_summary(record: Any, flags: pd.DataFrame, dims: Sequence[int], ablation: pd.DataFrame) -> str:
    """Notebook 01: what the live run showed, from its own records (``record``: an ``emergence.EmergenceRecord``
    with its train log and unigram plateau; ``flags``: ``emergence.flags_over_steps``; ``ablation``: its
    per-snapshot ablation table)."""
    log, plateau = record.log, record.plateau
    last = flags[flags.step == flags.step.max()]
    most = int(last.sites_flagged.max()) if len(last) else 0
    unigram = f" (unigram plateau {plateau:.2f})" if plateau is not None else ""
    ablation_text = _ablation_text(ablation)[1] if ablation is not None and len(ablation) else "No ablation record."
    return (
        f"{int(log.step.iloc[-1])} steps ({int(log.tokens.iloc[-1]):,} tokens): eval loss "
        f"{log.eval_loss.iloc[0]:.2f} -> {log.eval_loss.iloc[-1]:.2f}{unigram}; at the end the most-flagged dim is "
        f"beyond the threshold in {most} of {int(last.n_sites.iloc[0])} sites (top dims {list(dims)}). " + ablation_text
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
    """Notebook 02: runs of one recipe with other seeds put the outlier elsewhere: every run's top dim differs
    from the others' and is an outlier there (``consistency.positions_across_runs``; None with fewer than two)."""
    evidence = "; ".join(
        f"{r.run} (seed {r.seed}, {r.layers} layers): outlier dims [{r.outlier_dims}], top dim "
        f"{r.top_dim} in {r.top_dim_sites_flagged} block-output LayerNorms"
        for r in across_seeds.itertuples()
    )
    held = (
        None
        if len(across_seeds) < 2
        else bool(across_seeds.top_dim.nunique() == len(across_seeds) and (across_seeds.outlier_dims != "").all())
    )
    return Finding("Outlier positions differ between seeds of the same recipe", held, evidence, evidence + ".")


RULE_MIN_PRECISION = 0.5  # notebook 02: at least half of the rule's dims are among the scan's most damaging (issue 13)


def rule_names_damaging_dims(agreement: pd.DataFrame, min_precision: float = RULE_MIN_PRECISION) -> Finding:
    """Notebook 02: on every model the default rule names the scan's most damaging dim, and at least
    ``min_precision`` of its dims are among the scan's most damaging (``agreement``: the detection report's
    agreement table, rows of the default rule's criterion)."""
    from ..analysis.detection import RULE_CRITERION

    rows = agreement[agreement.criterion == RULE_CRITERION]
    claim = (
        "The default rule names each model's most damaging dim, and at least half of its dims are among "
        "the scan's most damaging"
    )
    if rows.empty:
        return Finding(claim, None, "No model was scanned.", "No model was scanned.")
    held = bool(rows.names_most_damaging.all() and (rows.precision.fillna(0) >= min_precision).all())
    evidence = "; ".join(
        f"{r.model}: default dims [{r.dims}], scan's most damaging [{r.most_damaging}] "
        f"(precision {r.precision:.2f}, recall {r.recall:.2f}, Spearman {r.spearman:.2f}"
        + (
            f"; screened scan: {r.verified_dims} of {r.scanned_dims} dims evaluated exactly, the rest estimated)"
            if getattr(r, "scan_method", "exact") == "screen"
            else ")"
        )
        for r in rows.itertuples()
    )
    return Finding(claim, held, evidence, evidence + ".")


def position_summary(
    model_name: str, same_dim: Finding, peaks: Finding, report: "OutlierReport", layer_table: pd.DataFrame, k: float
) -> str:
    """Notebook 02's closing paragraph, from the two findings' numbers."""
    from ..analysis.consistency import top_dim_share

    share = top_dim_share(report)
    input_share = float(layer_table[layer_table.layer > 0].input_share.mean())
    position = (
        f"the same dim is beyond {k:g} sigma in {share:.0%} of the block-output LayerNorms (outlier dims "
        f"{list(report.dims)})"
        if same_dim.held
        else f"no dim is beyond {k:g} sigma in most block-output LayerNorms (the most consistent one: "
        f"{share:.0%} of them), so the paper's cross-layer pattern is not present in this model"
    )
    activation = (
        f"the outlier dims dominate the hidden states for {input_share:.0%} of inputs, as in the paper"
        if peaks.held
        else f"the outlier dims are the largest hidden-state dim for only {input_share:.0%} of inputs, "
        f"short of the paper's ~95%"
    )
    return f"On **{model_name}**, {position}; {activation}."


# --- 03 · masked-LM degradation ------------------------------------------------------------------------


def mlm_loss_vs_random(summary: Mapping[str, float], random_losses: Sequence[float], dims: Sequence[int]) -> Finding:
    """Notebook 03: the outlier ablation raises the MLM loss beyond every random draw, by a large effect
    (``summary`` from ``mlm_effects.loss_summary``)."""
    outcome, sentence = versus_random(
        summary["outlier_loss"],
        random_losses,
        "the MLM loss (nats)",
        label=f"dims {dims}",
        intact=summary["intact_loss"],
    )
    evidence = (
        sentence + f" Intact loss {summary['intact_loss']:.3f}; the outlier ablation adds "
        f"{summary['outlier_delta']:+.3f}, random draws add {summary['random_delta_mean']:+.3f} on average."
    )
    return Finding.of(
        "Disabling the outlier dims raises MLM loss beyond every random draw", outcome, evidence, sentence
    )


def probe_vs_random(probe: pd.DataFrame, model_name: str, dims: Sequence[int]) -> Finding:
    """Notebook 03, a model without an MLM head: the SNLI probe AUC with the outlier dims disabled against random
    draws (``probe``: one row per condition, ``group`` 'none' (intact) / 'outliers' / 'random',
    ``snli_auc``, ``cosine_mean``)."""
    intact = probe[probe.group == "none"].iloc[0]
    outlier = probe[probe.group == "outliers"].iloc[0]
    random = probe[probe.group == "random"]
    outcome, sentence = versus_random(
        outlier.snli_auc,
        random.snli_auc,
        "the SNLI probe AUC",
        worse="lower",
        label=f"{model_name} dims {dims}",
        intact=intact.snli_auc,
    )
    evidence = sentence + (
        f" Embedding cosine to intact: {outlier.cosine_mean:.3f} vs random {random.cosine_mean.mean():.3f}."
    )
    return Finding.of(
        f"On {model_name} (no MLM head) the outlier ablation hurts the SNLI probe beyond random dims",
        outcome,
        evidence,
        sentence,
    )


def mlm_summary(mlm: Finding, model_name: str, scan_rank: str) -> str:
    """Notebook 03's closing paragraph: the loss verdict and where the dims rank in the scan."""
    return verdict(mlm.outcome) + f" On **{model_name}**: " + mlm.sentence + " " + scan_rank


def screen_summary(table: pd.DataFrame, scan: pd.DataFrame | None = None, n: int = 5, delta: str = "delta") -> str:
    """Notebooks 03 and 04: one markdown sentence on ``evaluation.screen.screened_scan``'s ``table``: the screen's
    most damaging checked dims, and (given an exact scan table with the objective's change in column ``delta``,
    e.g. ``scan_dims`` on a subset) how many of that scan's top ``n`` dims the screen checked."""
    checked = table[table["value_kind"] == "exact"]
    top = ", ".join(f"{int(r.dim)} ({r.exact:+.3f})" for r in checked.head(3).itertuples())
    examples = table.attrs.get("examples")
    text = (
        f"The screened scan{f' on {examples} examples' if examples else ''} (every dim's effect estimated by "
        f"`{table['method'].iloc[0]}`, the top {len(checked)} checked exactly) finds as most damaging "
        f"{top} ({table['objective'].iloc[0]} change)."
    )
    if scan is not None and len(scan):
        exact_top = scan.nlargest(n, delta)["dim"].astype(int).tolist()
        found = [d for d in exact_top if d in set(checked["dim"].astype(int))]
        on = f" on {int(scan['examples'].iloc[0])} examples" if "examples" in scan.columns else ""
        verb = "is" if len(found) == 1 else "are"
        text += (
            f" Of the top {len(exact_top)} dims of the exact scan{on} {exact_top}, {len(found)} {verb} among the "
            f"screen's checked dims."
        )
    return text


# --- 04 · downstream after fine-tuning -----------------------------------------------------------------


def backbones_note(usable: Sequence[str], missing: Mapping[str, str]) -> str:
    """Notebook 04: which backbones this run uses and why any are left out (``downstream.available_backbones``)."""
    text = f"Backbones in this run: {', '.join(f'`{b}`' for b in usable) or 'none'}."
    for name, why in missing.items():
        hint = " (the project's own pre-trained small BERT; `make bbmini` builds it)" if name == "bbmini" else ""
        text += f" Left out: `{name}`{hint}: {why}."
    return text


def downstream_screened_summary(screened: pd.DataFrame, scan: pd.DataFrame | None) -> str:
    """Notebook 04: per scanned pair of ``DownstreamStudy.screened_scan``'s table, ``screen_summary`` against the
    pair's subset scan (``scan``: the study's ``scan`` table, or None)."""
    lines = []
    for (backbone, task), group in screened.groupby(["backbone", "task"], sort=False):
        exact = None if scan is None else scan[(scan.backbone == backbone) & (scan.task == task)]
        group = group.reset_index(drop=True)
        group.attrs.update(examples=int(group["examples"].iloc[0]))
        lines.append(f"- **{backbone} / {task}**: " + screen_summary(group, exact, delta="loss_delta"))
    return "\n".join(lines)


def _downstream_outcome(r) -> tuple[str, float, float]:
    return outcome_from_summary(
        r.outliers_disabled, r.intact, "lower", r.random_mean, r.random_std, r.worse_than_every_draw
    )


def _scanned(row) -> str:
    """What a summary row's single-dim scan ranked: every dim of an exact scan, or a screened scan's exact dims."""
    exact = getattr(row, "scan_exact_dims", row.scan_dims)
    if pd.isna(exact) or int(exact) == int(row.scan_dims):
        return f"{int(row.scan_dims)} dims"
    certified = getattr(row, "scan_certified_top", None)
    depth = (
        ""
        if certified is None or pd.isna(certified)
        else f"; the screen's bound certifies the top {int(certified)} by dev loss for all dims"
        if int(certified)
        else "; the screen's bound certifies none of these ranks for all dims"
    )
    return f"the {int(exact)} dims evaluated exactly (screened scan: all {int(row.scan_dims)} estimated{depth})"


def downstream_findings(summary: pd.DataFrame, outlier_sets: pd.DataFrame) -> list[Finding]:
    """Notebook 04: per pair and dev split (``DownstreamStudy.summary()``), the outlier ablation lowers the
    metric beyond every random draw by a large effect; per pair (``outlier_sets()``), the rule's dims of the
    backbone are still the rule's dims after fine-tuning; per scanned pair, the scan's most damaging dim is an
    outlier dim."""
    out = []
    for r in summary.itertuples():
        outcome, relative, spread = _downstream_outcome(r)
        evidence = (
            f"{r.metric} intact {r.intact:.3f} (majority class {r.chance:.3f}); dims "
            f"[{r.disabled_dims}] disabled in all layers: {r.outliers_disabled:.3f} "
            f"({r.relative_change:+.1%}); {r.draws} random draws: {r.random_mean:.3f} ± "
            f"{r.random_std:.3f} (min {r.random_min:.3f}, {r.random_relative_change:+.1%} on average); "
            f"{r.share_of_draws_as_damaging:.0%} of draws as damaging. " + effect_sentence(outcome, relative, spread)
        )
        claim = (
            f"Disabling the outlier dims after fine-tuning ({r.backbone}, {r.task} {r.split}) lowers "
            f"{r.metric} more than every random draw of as many dims"
        )
        out.append(Finding.of(claim, outcome, evidence))
    for r in outlier_sets.itertuples():
        out.append(
            Finding(
                f"The outlier dims of {r.backbone} survive fine-tuning on {r.task}",
                bool(r.all_kept),
                f"the detection rule's dims before: [{r.before}]; after: [{r.after}]; kept: [{r.kept}].",
            )
        )
    if "scan_dims" in summary:
        for r in summary.dropna(subset=["scan_dims"]).itertuples():
            held = bool(r.scan_most_damaging_is_outlier) and r.scan_most_damaging_loss_delta > 0
            evidence = (
                f"most damaging of {_scanned(r)} (largest dev-loss rise, {int(r.scan_examples)} dev "
                f"examples): dim {int(r.scan_most_damaging_dim)}, loss {r.scan_intact_loss:.3f} "
                f"{r.scan_most_damaging_loss_delta:+.3f}, {r.metric} {r.scan_intact:.3f} -> "
                f"{r.scan_most_damaging_value:.3f}; damage ranks of the outlier dims [{r.disabled_dims}]: "
                f"{r.scan_outlier_ranks} (1 = most damaging)."
            )
            claim = f"In the single-dim scan ({r.backbone}, {r.task}) the most damaging dim is an outlier dim"
            out.append(Finding(claim, held, evidence))
    return out


def findings_markdown(findings: Sequence[Finding]) -> str:
    """A markdown list of findings: ``- **held**: claim. evidence``."""
    return "\n".join(
        f"- **{summary_verdict({'held': f.held, 'outcome': f.outcome})}**: {f.claim}. {f.evidence}" for f in findings
    )


def downstream_describe(summary: pd.DataFrame) -> str:
    """Notebook 04's closing paragraphs: per pair what this run found, then the verdict over all pairs."""
    lines = []
    outcomes = []
    for r in summary.itertuples():
        outcome, relative, spread = _downstream_outcome(r)
        outcomes.append(outcome)
        sensible = r.intact > r.chance + 0.05
        where = {
            HELD: "worse than every one of",
            SMALL: "worse than every one of (but by a small effect)",
            NOT_HELD: "NOT worse than every one of",
        }[outcome]
        scan = (
            f" Single-dim scan ({int(r.scan_examples)} dev examples): the most damaging dim is "
            f"{int(r.scan_most_damaging_dim)} (dev loss {r.scan_most_damaging_loss_delta:+.3f}), "
            f"{'an outlier dim' if r.scan_most_damaging_is_outlier else 'not an outlier dim'}; the outlier dims "
            f"rank {r.scan_outlier_ranks} of {_scanned(r)}."
            if "scan_dims" in summary and not pd.isna(r.scan_dims)
            else ""
        )
        kept = (
            " The backbone's outlier dims are still outliers after fine-tuning."
            if r.outliers_kept_after_finetuning
            else " Fine-tuning changed which dims are outliers."
        )
        lines.append(
            f"- **{r.backbone} on {r.task}** ({r.split}): fine-tuned {r.metric} {r.intact:.3f} vs majority "
            f"class {r.chance:.3f}"
            f"{'' if sensible else ' (not clearly above chance: the fine-tune is too weak to say much)'}. "
            f"Disabling dims [{r.disabled_dims}] in every layer gives {r.outliers_disabled:.3f} "
            f"({r.relative_change:+.1%}), {where} the {r.draws} random draws "
            f"({r.random_mean:.3f} ± {r.random_std:.3f}, {r.random_relative_change:+.1%} on average)." + scan + kept
        )
    held, small = outcomes.count(HELD), outcomes.count(SMALL)
    effect = (
        "The paper's downstream claim held in every pair."
        if held == len(outcomes)
        else f"The paper's downstream claim held in {held} of {len(outcomes)} pairs"
        + (f" ({small} more beyond every random draw but by a small effect)" if small else "")
        + "; where it did not, this small model and short fine-tune do not show the paper's effect."
    )
    return "\n".join(lines + ["", effect])


def downstream_versus_random(summary: pd.DataFrame, random: pd.DataFrame) -> str:
    """Notebook 04: per fine-tuned pair, where the outlier result falls among the random draws (markdown).

    ``summary``: ``DownstreamStudy.summary()``; ``random``: its ``tables["random"]`` (one row per draw)."""
    parts = []
    for r in summary.itertuples():
        draws = random[(random.backbone == r.backbone) & (random.task == r.task) & (random.split == r.split)]
        _, sentence = versus_random(
            r.outliers_disabled, draws["value"], r.metric, worse="lower", label="the outlier dims", intact=r.intact
        )
        parts.append(f"**{r.backbone} / {r.task} ({r.split})**: " + sentence)
    return "\n\n".join(parts)


# --- 06 · across architectures -------------------------------------------------------------------------

# Sun et al. (2024): set to their mean, LLaMA2-7B's massive activations cost 0.01 of perplexity, zeroed
# they cost thousands. "Mean replacement recovers" here: its damage is at most this share of zeroing's.
MEAN_RECOVERY_SHARE = 0.1


def _worse(row) -> str:
    from ..studies.across_models import OBJECTIVE_LABELS

    return "lower" if row.objective == OBJECTIVE_LABELS["embedding"] else "higher"


def across_model_finding(row: pd.Series) -> Finding:
    """Notebook 06, one model (a row of ``across_models.run_protocol``'s table): do its detected dims hurt its
    objective beyond every random draw, by a large effect?"""
    worse = _worse(row)
    outcome, relative, spread = outcome_from_summary(
        row.outliers_zero, row.intact, worse, row.random_mean, row.random_sd, row.beyond_every_draw
    )
    claim = f"{row.model}: disabling the detected dims hurts its objective more than random dims"
    mean_note = f"set to the mean instead: {row.outliers_mean:.4g}"
    dense = (
        ""
        if row.output_dense_zero is None
        or (isinstance(row.output_dense_zero, float) and math.isnan(row.output_dense_zero))
        else (
            f" The GPT-2 analogue (each block's attention and MLP output projections zeroed at those dims): "
            f"{row.output_dense_zero:.4g}."
        )
    )
    largest = (
        ""
        if row.largest_dim_detected
        else f" The layer-peak activation dim {row.largest_activation_dim} (max |h| {row.largest_activation:.4g}, "
        f"{row.largest_activation_ratio:.0f}x the median dim, layer {row.largest_activation_layer}) is not "
        f"among them; zeroing it alone gives {row.largest_dim_zero:.4g}."
    )
    evidence = (
        f"{row.placement}, {row.roles} norms ({row.n_sites} sites), dims {row.dims} ({row.rule}); "
        f"{row.objective} intact {row.intact:.4g} -> {row.outliers_zero:.4g} zeroed ({mean_note}); "
        f"{int(row.draws)} random draws {row.random_mean:.4g} ± {row.random_sd:.2g} (max damage "
        f"{row.random_max if worse == 'higher' else row.random_min:.4g}); beyond every draw: "
        f"{bool(row.beyond_every_draw)}. {effect_sentence(outcome, relative, spread)} Mean |h| at the dims peaks "
        f"at {row.dims_ratio_peak:.1f}x the median dim (layer {row.dims_ratio_layer}), carried most by: "
        f"{row.top_carrier} ({row.top_carrier_ratio:.1f}x other tokens).{largest}{dense}"
    )
    return Finding.of(claim, outcome, evidence)


def across_models_findings(table: pd.DataFrame) -> list[Finding]:
    """Notebook 06: ``across_model_finding`` per model of the protocol's ``table``."""
    return [across_model_finding(row) for _, row in table.iterrows()]


def zero_vs_mean_sentence(table: pd.DataFrame) -> str:
    """Sun et al.'s zero-vs-mean contrast, per model, from the run's numbers."""
    parts = []
    for _, row in table.iterrows():
        z, m = damage(row.outliers_zero, row.intact, _worse(row)), damage(row.outliers_mean, row.intact, _worse(row))
        if z > 0:
            parts.append(f"{row.model}: damage {z:.3g} zeroed vs {m:.3g} at the mean ({m / z:.0%} of it)")
        else:
            parts.append(f"{row.model}: no damage zeroed ({z:.3g}), {m:.3g} at the mean")
    return "; ".join(parts) + "."


def zero_vs_mean(table: pd.DataFrame) -> Finding:
    """Notebook 06, Sun et al.'s contrast for norm parameters: among the models whose zeroed dims beat every
    random draw, does setting them to the site's mean instead cost at most ``MEAN_RECOVERY_SHARE`` of the
    damage? None when no model qualifies."""
    claim = (
        f"Setting the detected dims' norm weight and bias to the site's mean instead of zero leaves the "
        f"model close to intact (at most {MEAN_RECOVERY_SHARE:.0%} of zeroing's damage), as Sun et al. found "
        f"for massive activations"
    )
    hit = table[table.beyond_every_draw]
    if hit.empty:
        return Finding(claim, None, "No model's zeroed dims beat every random draw, so there is no damage to recover.")
    recovered = [
        damage(row.outliers_mean, row.intact, _worse(row))
        <= MEAN_RECOVERY_SHARE * damage(row.outliers_zero, row.intact, _worse(row))
        for _, row in hit.iterrows()
    ]
    note = (
        " Our mean mode sets the norm PARAMETERS at those dims to the mean of the site's weight (and bias) "
        "vector; Sun et al. set the ACTIVATIONS to their mean over tokens, a different intervention."
    )
    return Finding(claim, bool(all(recovered)), zero_vs_mean_sentence(hit) + note)


def across_models_report(table: pd.DataFrame) -> str:
    """Notebook 06: what the run found, one line per model and one for zero vs mean, from the protocol's table."""
    lines = [f"- **{f.claim.split(':')[0]}** {f.markdown()}" for f in across_models_findings(table)]
    lines.append(f"- **Zero vs mean.** {zero_vs_mean(table).markdown()}")
    return "\n".join(lines)


# --- 07 · why the outliers exist -----------------------------------------------------------------------

MIN_CORRELATION = 0.3  # Puccetti: a "moderate" correlation, the weakest effect we would call an explanation
TOP_TOKENS_MAJORITY = 0.5  # Bondarenko: a majority of the top activations on special tokens / delimiters / first
SINK_FACTOR = 2.0  # Sun: heads "sink" when their mean sink mass is at least twice the sink tokens' base rate
# LLM.int8: keeping the outlier dims in full precision must win back at least half of what W8A8 lost (the
# size condition of that versus-random claim; below it, beating every draw is "beyond every draw but small").
RECOVERED_MAJORITY = 0.5
# Bondarenko: leaving the outlier dims out must at least halve the mean kurtosis (the size condition).
KURTOSIS_SHARE = 0.5


def frequency_correlation_holds(correlation: pd.DataFrame) -> bool | None:
    """One layer's ``frequency.frequency_correlation`` rows: the partial Spearman correlation (position and special
    tokens controlled) is at least ``MIN_CORRELATION`` with a CI above 0 (None when undefined)."""
    row = correlation.set_index("measure").loc["partial_spearman"]
    if np.isnan(row.value):
        return None
    return bool(row.value >= MIN_CORRELATION and row.ci_low > 0)


def frequency_sentence(correlation: pd.DataFrame, counts: Any, label: str) -> str:
    """One layer's correlations in words (``counts``: ``frequency.TokenCounts``)."""
    by = correlation.set_index("measure")
    row, raw, pearson = by.loc["partial_spearman"], by.loc["spearman"], by.loc["pearson"]
    held = frequency_correlation_holds(correlation)
    if held is None:
        return f"{label}: the correlation is undefined (constant magnitudes or counts)."
    return (
        f"{label}: over {int(row.types)} token types, Pearson r(log count, mean |h|) = {pearson.value:.2f} "
        f"[{pearson.ci_low:.2f}, {pearson.ci_high:.2f}], Spearman {raw.value:.2f} [{raw.ci_low:.2f}, "
        f"{raw.ci_high:.2f}]; controlling for mean position and special tokens, Spearman {row.value:.2f} "
        f"[{row.ci_low:.2f}, {row.ci_high:.2f}] (95% bootstrap CIs; counts: {counts.describe()}). "
        f"{'A' if held else 'No'} positive correlation of at least {MIN_CORRELATION} with a CI above 0."
    )


def frequency_drives_magnitude(correlations: pd.DataFrame, counts: Any, name: str) -> Finding:
    """Notebook 07 (Puccetti 2022): held when ``frequency_correlation_holds`` in more than half of the layers
    (the project's "most layers"; ``correlations`` from ``frequency.layer_correlations``)."""
    per_layer = {int(layer): frequency_correlation_holds(frame) for layer, frame in correlations.groupby("layer")}
    partial = correlations[correlations.measure == "partial_spearman"].set_index("layer")
    held_layers = [layer for layer, h in per_layer.items() if h]
    values = ", ".join(
        f"{layer}: {partial.loc[layer, 'value']:.2f} [{partial.loc[layer, 'ci_low']:.2f}, "
        f"{partial.loc[layer, 'ci_high']:.2f}]"
        for layer in sorted(per_layer)
    )
    evidence = (
        f"{name}, dim {int(correlations.dim.iloc[0])}: partial Spearman correlation of corpus count and "
        f"mean |h| (position and special tokens controlled), by layer (0 = embeddings): {values}. It reaches "
        f"{MIN_CORRELATION} with a CI above 0 in {len(held_layers)} of {len(per_layer)} layers; strongest at "
        f"layer {int(partial.value.idxmax())}. Counts: {counts.describe()}."
    )
    return Finding(
        f"{name}: the outlier dim's magnitude on a token rises with the token's pre-training frequency",
        len(held_layers) > len(per_layer) / 2,
        evidence,
    )


def snapshot_sentence(
    emerged: pd.DataFrame, snapshots: int, model_name: str, trajectory_steps: Sequence[int], k: float
) -> str:
    """Notebook 07: when the dims stood out (``emerged``: ``emergence.emergence_steps``) and whether intermediate
    weights (``snapshots`` files) allow the frequency correlation over training."""
    onset = ", ".join(
        f"dim {int(r.dim)} from step {r.first_step_in_most_sites:,}"
        if pd.notna(r.first_step_in_most_sites)
        else f"dim {int(r.dim)} never"
        for r in emerged.itertuples()
    )
    where = (
        f"{snapshots} snapshot weight files are present: run token_occurrences on each to follow the correlation"
        if snapshots
        else f"{model_name} carries no intermediate weights (only the LayerNorm trajectory, {len(trajectory_steps)} "
        f"log points to step {trajectory_steps[-1]:,}), so the frequency correlation cannot be measured over "
        f"training here; a rebuild with its COMMAND.sh (CUDA GPU) keeps fp16 snapshots in the run folder, on which "
        f"the same functions run unchanged"
    )
    return (
        f"In the LayerNorm trajectory the outlier dims stand out in most block-output LayerNorms ({k:g} "
        f"sigma): {onset}. {where}."
    )


def frequency_over_training(name: str, sentence: str) -> Finding:
    """Notebook 07: inconclusive by construction, the sentence says what intermediate record is missing."""
    return Finding(
        f"{name}: the frequency correlation appears when the outlier dim emerges during pre-training", None, sentence
    )


def top_activations_on_special_tokens(shares: Mapping, name: str, majority: float = TOP_TOKENS_MAJORITY) -> Finding:
    """Notebook 07 (Bondarenko 2023: >97% of BERT-base's outliers sit on [SEP], '.' and ','): held when a
    ``majority`` of the top activations sit on special tokens, delimiters or the first token, above their base
    rate (``shares`` from ``frequency.top_activation_tokens``)."""
    held = bool(shares["top_any"] >= majority and shares["top_any"] > shares["all_any"])
    evidence = (
        f"{name}: of the top {int(shares['top']):,} activations (|h| >= {shares['threshold']:.3g}), "
        f"{shares['top_any']:.0%} sit on special tokens, delimiters or the first token (special "
        f"{shares['top_special']:.0%}, delimiters {shares['top_delimiter']:.0%}, first {shares['top_first']:.0%}); "
        f"among all tokens these make up {shares['all_any']:.0%} (published for BERT-base: >97%)."
    )
    return Finding(f"{name}: the largest outlier activations sit on special tokens and delimiters", held, evidence)


def heads_sink(intact: pd.DataFrame, name: str, factor: float = SINK_FACTOR) -> Finding:
    """Notebook 07 (Sun 2024): held when the intact model's mean sink mass over heads is at least ``factor``
    times the sink tokens' base rate (``intact``: ``attention_sinks.sink_scores`` rows)."""
    from ..analysis.attention_sinks import SINK

    sink = intact[intact.category == SINK]
    mass, base = float(sink.mass.mean()), float(sink.base.mean())
    top = sink.sort_values("mass", ascending=False).iloc[0]
    evidence = (
        f"{name}: averaged over its {len(sink)} heads, {mass:.0%} of the attention goes to special tokens, "
        f"delimiters or the first token, which make up {base:.0%} of the keys ({mass / max(base, 1e-12):.1f}x); "
        f"{float((sink.mass >= 0.5).mean()):.0%} of the heads put at least half their mass there (the most, layer "
        f"{int(top.layer)} head {int(top['head'])}: {top.mass:.0%})."
    )
    return Finding(
        f"{name}: attention heads put their mass on special tokens, delimiters and the first token",
        bool(mass >= factor * base),
        evidence,
    )


def sinks_removed_vs_random(per_condition: pd.Series, name: str, dims: Sequence[int]) -> Finding:
    """Notebook 07: mean sink mass with the outlier dims disabled against random draws, by a large effect
    (``per_condition`` from ``attention_sinks.mean_sink``: 'none', 'outliers', 'random ...')."""
    outcome, sentence = versus_random(
        per_condition["outliers"],
        per_condition.filter(like="random"),
        "the mean sink mass over heads",
        worse="lower",
        label=f"{name}'s dims {dims}",
        intact=per_condition["none"],
    )
    sentence = f"Intact: {per_condition['none']:.3f}. " + sentence
    return Finding.of(
        f"{name}: disabling the outlier dims removes attention-sink mass beyond random dims", outcome, sentence
    )


def quantization_rescued(table: pd.DataFrame, name: str, bits: int) -> Finding:
    """Notebook 07 (LLM.int8; Bondarenko: the outliers make W8A8 fail): keeping the outlier dims in full precision
    does better than keeping any random draw of as many dims (``table``: ``quantization.quantization_table``).
    Held when it also wins back at least ``RECOVERED_MAJORITY`` of W8A8's loss and lies ``MIN_SPREAD_RATIO``
    random sds beyond the draws' mean; beyond every draw without that: small."""
    from ..analysis.quantization import OBJECTIVE_NAMES

    claim = f"{name}: keeping the outlier dims in full precision rescues W{bits}A{bits} beyond random dims"
    by = table.set_index("group")
    fp, q = float(table.objective.iloc[0]), float(by.loc["w8a8", "objective"])
    kept = float(by.loc["outliers", "objective"])
    random = table[table.group == "random"].objective.to_numpy(float)
    sd = random.std(ddof=1) if len(random) > 1 else 0.0
    lost = q - fp
    what = OBJECTIVE_NAMES[str(table.kind.iloc[0])]
    if lost <= 0:
        return Finding(
            claim,
            False,
            f"{name}: {what} {fp:.4g} in fp32 and {q:.4g} with W8A8: quantization does not raise it here, so there "
            f"is nothing for the outlier dims to recover (kept: {kept:.4g}; random draws {random.mean():.4g} ± "
            f"{sd:.2g}).",
        )
    recovered = (q - kept) / lost
    random_recovered = (q - random) / lost
    spread = _ratio(random.mean() - kept, sd)
    beyond = bool(kept < random.min())
    outcome = (
        NOT_HELD if not beyond else HELD if recovered >= RECOVERED_MAJORITY and spread >= MIN_SPREAD_RATIO else SMALL
    )
    evidence = (
        f"{name}: {what} {fp:.4g} in fp32, {q:.4g} with W8A8 ({lost:+.3g}); keeping the "
        f"outlier dims in full precision gives {kept:.4g} (recovers {recovered:.0%} of the loss), keeping as "
        f"many random dims {random.mean():.4g} ± {sd:.2g} over {len(random)} draws (best {random.min():.4g}, "
        f"recovers at most {np.nanmax(random_recovered):.0%}). "
        + _size_clause(outcome, f"recovers {recovered:.0%} (needs >= {RECOVERED_MAJORITY:.0%})", spread)
    )
    return Finding.of(claim, outcome, evidence)


def _size_clause(outcome: str, size: str, spread: float) -> str:
    rule = f"{abs(spread):.1f} random sd {'beyond' if spread >= 0 else 'short of'} their mean (needs >= {MIN_SPREAD_RATIO:g})"
    if outcome == SMALL:
        return f"Effect size: {size}, {rule}: beyond every random draw but small."
    return f"Effect size: {size}, {rule}."


def kurtosis_sentence(metrics: pd.DataFrame, label: str) -> str:
    """What the kurtosis and max infinity norm are with all dims, without the outlier dims, and without random dims
    (``metrics`` from ``quantization.outlier_metrics`` with labels 'none', 'outliers' and 'random ...')."""
    mean_k = metrics.groupby("excluded")["kurtosis"].mean()
    full = metrics[metrics.excluded == "none"].set_index("layer")
    without = metrics[metrics.excluded == "outliers"].set_index("layer")
    randoms = mean_k[[e for e in mean_k.index if e.startswith("random")]]
    spread = (
        (
            f"leaving out as many random dims {randoms.mean():.1f} (range {randoms.min():.1f} to "
            f"{randoms.max():.1f}, {len(randoms)} draws)"
        )
        if len(randoms)
        else "no random draws"
    )
    return (
        f"{label}: the kurtosis of a token's hidden vector, averaged over layers, is {mean_k['none']:.1f} "
        f"(Gaussian: 3; largest {full['kurtosis'].max():.1f} at layer {int(full['kurtosis'].idxmax())}); leaving "
        f"out the outlier dims it is {mean_k['outliers']:.1f}, {spread}. The max infinity norm over layers is "
        f"{full.max_inf_norm.max():.3g} ({without.max_inf_norm.max():.3g} without the outlier dims)."
    )


def heavy_tails(metrics: pd.DataFrame, name: str) -> Finding:
    """Notebook 07 (Bondarenko 2023): are the outlier dims what makes the hidden states heavy-tailed? Leaving them
    out must bring the mean kurtosis below every random draw's; held when it also falls to at most
    ``KURTOSIS_SHARE`` of its full value and ``MIN_SPREAD_RATIO`` random sds below their mean, else small."""
    mean_k = metrics.groupby("excluded")["kurtosis"].mean()
    randoms = mean_k[[e for e in mean_k.index if e.startswith("random")]].to_numpy(float)
    beyond = bool(len(randoms) and mean_k["outliers"] < randoms.min())
    sd = randoms.std(ddof=1) if len(randoms) > 1 else 0.0
    spread = _ratio(randoms.mean() - mean_k["outliers"], sd) if len(randoms) else 0.0
    share = mean_k["outliers"] / mean_k["none"]
    large = share <= KURTOSIS_SHARE and spread >= MIN_SPREAD_RATIO
    outcome = NOT_HELD if not beyond else HELD if large else SMALL
    evidence = (
        kurtosis_sentence(metrics, name)
        + " "
        + _size_clause(
            outcome,
            f"without the outlier dims {share:.0%} of the full kurtosis (needs <= {KURTOSIS_SHARE:.0%})",
            spread,
        )
    )
    return Finding.of(
        f"{name}: the outlier dims are what makes the hidden states heavy-tailed (kurtosis)", outcome, evidence
    )


# --- 07 · the study's findings, section by section (``studies.why.run_study``'s result) ----------------


def _per_model(table: pd.DataFrame, name: str) -> pd.DataFrame:
    return table[table.model == name]


def frequency_findings(result: Any) -> list[Finding]:
    """Notebook 07 section 1: ``frequency_drives_magnitude`` per model of a ``studies.why.WhyResult``."""
    return [
        frequency_drives_magnitude(_per_model(result.correlations, s.name), s.counts, s.name) for s in result.subjects
    ]


def over_training_findings(result: Any) -> list[Finding]:
    """Notebook 07: per model trained here (one with a snapshot timeline), whether the correlation can be
    followed over training (inconclusive by construction without intermediate weights)."""
    findings = []
    for s in result.subjects:
        if s.name in result.snapshots:
            n_files, steps = result.snapshots[s.name]
            emerged = _per_model(result.emergence, s.name)
            sentence = snapshot_sentence(emerged, n_files, s.name, steps, result.settings.k)
            findings.append(frequency_over_training(s.name, sentence))
    return findings


def top_token_findings(result: Any) -> list[Finding]:
    """Notebook 07 section 2: ``top_activations_on_special_tokens`` per model."""
    shares = result.shares.set_index("model")
    return [top_activations_on_special_tokens(shares.loc[s.name].to_dict(), s.name) for s in result.subjects]


def sink_findings(result: Any) -> list[Finding]:
    """Notebook 07 section 3: per model, ``heads_sink`` (intact) and ``sinks_removed_vs_random``."""
    from ..analysis.attention_sinks import mean_sink

    findings = []
    for s in result.subjects:
        table = _per_model(result.sinks, s.name)
        findings.append(heads_sink(table[table.condition == "none"], s.name))
        findings.append(sinks_removed_vs_random(mean_sink(table), s.name, s.dims))
    return findings


def quantization_findings(result: Any) -> list[Finding]:
    """Notebook 07 section 4: ``quantization_rescued`` per model."""
    return [
        quantization_rescued(_per_model(result.quantization, s.name), s.name, result.settings.bits)
        for s in result.subjects
    ]


def kurtosis_findings(result: Any) -> list[Finding]:
    """Notebook 07 section 4b: ``heavy_tails`` per model."""
    return [heavy_tails(_per_model(result.kurtosis, s.name), s.name) for s in result.subjects]


def findings_table(findings: Sequence[Finding]) -> pd.DataFrame:
    """One row per finding: claim and outcome (notebook 07's closing table)."""
    return pd.DataFrame([{"claim": f.claim, "outcome": f.outcome} for f in findings])


# --- 05 · the explorer ---------------------------------------------------------------------------------

LM_LABELS = {"mlm": ("MLM loss", "masked tokens"), "causal": ("causal-LM loss", "next tokens")}  # loss, scored


def explorer_finding(kind: str, view: Mapping, restored: bool, n_texts: int, top_k: int) -> Finding:
    """Notebook 05: the ablated ``view`` (``Explorer.compute_view``) of a model of ``kind`` ('mlm', 'causal',
    'embedding') hurts (loss up, or embeddings moved) and the intact model came back bit for bit
    (``restored``); ``n_texts``: eval texts; ``top_k``: predictions per blank."""
    dims = " ".join(map(str, view["state"].dims))
    if kind in LM_LABELS:
        loss_name, scored = LM_LABELS[kind]
        table = view["predictions"]
        where = f"{table.blank.nunique()} blank(s)" if kind == "mlm" and table is not None else "the next token"
        guesses = (
            ("no [MASK] in the sentence" if kind == "mlm" else "no text to continue")
            if table is None
            else f"{view['changed_predictions']} of the {len(table)} top-{top_k} guesses for {where} changed"
        )
        claim = (
            f"Switching the top outlier dims off raises the {loss_name}; switching them on again restores it exactly"
        )
        held = bool(view["loss_delta"] is not None and view["loss_delta"] > 0 and restored)
        evidence = (
            f"dims {dims} off in {view['n_sites']} norm modules: {loss_name} {view['loss_intact']:.4f} -> "
            f"{view['loss']:.4f} ({view['loss_delta']:+.4f}) on {view['tokens']} {scored} of "
            f"{n_texts} texts; {guesses}; intact loss and predictions recomputed afterwards "
            f"identical: {restored}."
        )
    else:
        claim = (
            "Switching the top outlier dims off moves sentence embeddings; switching them on again restores them "
            "exactly"
        )
        held = bool(view["cosine_mean"] is not None and view["cosine_mean"] < 1.0 and restored)
        evidence = (
            f"dims {dims} off in {view['n_sites']} norm modules: mean cosine to the intact embeddings "
            f"{view['cosine_mean']:.4f} (min {view['cosine_min']:.4f}) over {n_texts} texts; "
            f"intact embeddings recomputed afterwards identical: {restored}."
        )
    return Finding(claim, held, evidence)


def explorer_super_weights_note(
    n_found: int, spikes: pd.DataFrame, n_candidates: int, n_prompts: int, n_controls: int
) -> str:
    """Notebook 05: what the explorer's super-weight control says (``spikes``: ``super_weights.spike_table`` over
    ``n_prompts`` prompts; ``n_candidates``: scalars verified, ``n_found`` of them super weights, each against
    ``n_controls`` random and as many largest-|w| scalars)."""
    spiking = spikes[spikes.spike] if "spike" in spikes else spikes.iloc[0:0]
    if n_found:
        return (
            f"{n_found} super weight{'s' if n_found > 1 else ''} verified on {n_prompts} prompts (each zeroed alone "
            f"changes the causal-LM loss beyond {n_controls} random and {n_controls} largest-|w| scalars of its "
            "matrix); switch one on to set it to 0:"
        )
    if spiking.empty:
        largest = f"{spikes.out_ratio.max():.1f}x" if len(spikes) else "not measured"
        return (
            f"No super weight in this model: on {n_prompts} prompts no FFN output channel spikes "
            f"(the largest is {largest} its layer's median), so there is no scalar to switch off."
        )
    return (
        f"No super weight in this model: {len(spiking)} spiking FFN output channel(s) on {n_prompts} prompts, "
        f"{n_candidates} candidate scalar(s) zeroed one at a time, none beyond its controls, so there is no scalar "
        "to switch off."
    )


# ----------------------------------------------------------------------------- notebook 08: super weights
def _coords(table: pd.DataFrame) -> str:
    return ", ".join(
        f"layer {int(r.layer)} `{r.module}{list(r['index'])}` ({r.weight:+.3g})" for _, r in table.iterrows()
    )


def super_weights_found(name: str, found: pd.DataFrame, spikes: pd.DataFrame, verdicts: pd.DataFrame) -> Finding:
    """Notebook 08 (Yu et al. 2024): held when at least one scalar of an FFN output projection, zeroed alone,
    changes the objective beyond every random and largest-|w| scalar of its matrix (``found``:
    ``super_weights.super_weight_table``; ``spikes``: the spike table; ``verdicts``: every candidate)."""
    spiking = spikes[spikes.spike]
    where = (
        f"{len(spiking)} spike(s) in the FFN output projections (dims {sorted(set(map(int, spiking.channel)))} in "
        f"layers {sorted(set(map(int, spiking.layer)))})"
        if len(spiking)
        else f"no spike: the largest output channel of any layer is {spikes.out_ratio.max():.1f}x its layer's median"
    )
    if found.empty:
        tried = f"; {len(verdicts)} candidate scalar(s) tried, none beyond its controls" if len(verdicts) else ""
        return Finding(f"{name}: a single weight scalar creates a massive activation", False, f"{where}{tried}.")
    effects = "; ".join(
        f"zeroing layer {int(r.layer)} [{int(r.out_channel)}, {int(r.in_channel)}] changes the objective by "
        f"{r.delta:+.4g} against at most {r.control_max:.2g} for any of its controls (|w| rank {int(r.w_rank)})"
        for _, r in found.iterrows()
    )
    return Finding(
        f"{name}: a single weight scalar creates a massive activation",
        True,
        f"{where}; verified super weight(s): {_coords(found)}; {effects}.",
    )


def massive_dims_are_rule_dims(name: str, massive: pd.DataFrame, rule_dims: Sequence[int]) -> Finding:
    """Notebook 08: held when a dim that spikes in an FFN output projection is one of the detection rule's dims
    (``massive``: ``studies.super_weights.massive_dims``)."""
    spiking = sorted(set(map(int, massive[massive.spike].channel)))
    shared = sorted(set(spiking) & set(map(int, rule_dims)))
    if not spiking:
        return Finding(
            f"{name}: the massive-activation dims are the rule's outlier dims",
            None,
            f"no FFN output channel spikes here, so there is no massive-activation dim to compare with the rule's "
            f"dims {list(rule_dims)}.",
        )
    return Finding(
        f"{name}: the massive-activation dims are the rule's outlier dims",
        bool(shared),
        f"spiking dims {spiking}; the rule's dims {list(rule_dims)}; shared: {shared or 'none'}.",
    )


def norm_damps_massive_activation(name: str, massive: pd.DataFrame) -> Finding:
    """Notebook 08: held when, at the spiking dims, the stream norm's output is far less extreme than its input
    (its input at least 10x its median dim, its output less than a tenth of that ratio)."""
    spiking = massive[massive.spike]
    if spiking.empty:
        return Finding(f"{name}: the norm after the stream damps the massive activation", None, "no spike to follow.")
    top = spiking.sort_values("norm_in_ratio", ascending=False).iloc[0]
    held = bool(top.norm_in_ratio >= 10 and top.norm_out_ratio < top.norm_in_ratio / 10)
    return Finding(
        f"{name}: the norm after the stream damps the massive activation",
        held,
        f"dim {int(top.channel)} after layer {int(top.layer)}: the norm's input there is {top.norm_in_ratio:.0f}x "
        f"its median dim ({top.norm_in_max:.4g}), its output {top.norm_out_ratio:.1f}x ({top.norm_out_max:.3g}) "
        f"(`{top.norm}`): read at the norm's output, the massive activation is {'gone' if held else 'still there'}.",
    )


def restoring_super_activation_recovers(name: str, restored: pd.DataFrame, share: float = 0.5) -> Finding:
    """Notebook 08 (Yu et al.'s check): held when adding the super activation back alone (the weight still zeroed)
    undoes at least ``share`` of the damage the zeroing did, for every verified super weight whose zeroing raised
    the objective (a loss). A verified scalar whose zeroing *lowered* it did no damage, so there is nothing to
    recover: it is listed with its numbers and not counted (SmolLM2's layer-10 pair, 2026-12-03)."""
    claim = f"{name}: restoring the super activation alone recovers the model"
    if restored.empty:
        return Finding(claim, None, "no super weight.")
    parts = "; ".join(
        f"layer {int(r.layer)} [{int(r.out_channel)}, {int(r.in_channel)}]: {r.intact:.4g} intact, {r.zeroed:.4g} "
        f"zeroed, {r.restored:.4g} with the super activation restored ({r.recovered:.0%} recovered)"
        for _, r in restored.iterrows()
    )
    damaging = restored[restored.zeroed > restored.intact]
    harmless = len(restored) - len(damaging)
    note = (
        f" Not counted: {harmless} of the {len(restored)} verified scalars lowered the loss when zeroed (no damage to "
        f"recover)."
        if harmless
        else ""
    )
    if damaging.empty:
        return Finding(claim, None, parts + "." + note)
    return Finding(claim, bool((damaging.recovered >= share).all()), parts + "." + note)


def published_super_weights_note(name: str, found: pd.DataFrame) -> str:
    """Whether the package found the published super weights of ``name`` (``reporting.published.SUPER_WEIGHTS``),
    or, for a planted model (``model.planted``: ``planted:llama``, ...), the scalar planted in it."""
    from ..model.planted import plant_of
    from .published import SUPER_WEIGHTS

    plant = plant_of(name)
    if plant is not None:
        planted_at = {(int(r.layer), int(r.out_channel), int(r.in_channel)) for _, r in found.iterrows()}
        hit = (plant.layer, plant.row, plant.col) in planted_at
        return (
            f"{name}: the super weight planted at layer {plant.layer} (output channel {plant.row}, input channel "
            f"{plant.col}; a random model built with it, not a published figure) — {'found' if hit else 'NOT found'}."
        )
    published = SUPER_WEIGHTS.get(name)
    if not published:
        return f"{name}: no published super weight to compare with."
    got = {(int(r.layer), tuple(int(i) for i in r["index"])) for _, r in found.iterrows()}
    parts = [
        f"layer {p.layer} {list(p.index)}: {'found' if (p.layer, p.index) in got else 'NOT found'}" for p in published
    ]
    return f"{name}: published super weight(s) ({published[0].source}) — " + "; ".join(parts) + "."


def rogue_dims_dominate_similarity(
    name: str, shares: pd.DataFrame, separation: pd.DataFrame, dims: Sequence[int], top: int = 3
) -> Finding:
    """Notebook 08 (Timkey & van Schijndel 2021): held when ``top`` dims carry at least half of the mean cosine
    of sentence-pair embeddings (``shares``: ``similarity.cosine_shares``); the evidence adds the rule's dims'
    share and the SNLI separation (``similarity.separation_table``) raw and standardised."""
    top_share = float(shares.share.head(top).sum())
    rule_share = float(shares[shares.dim.isin(list(dims))].share.sum())
    auc = separation.set_index("condition").auc
    randoms = separation[separation.group == "random dims"].auc
    evidence = (
        f"the {top} largest dims ({', '.join(map(str, shares.dim.head(top)))}) carry {top_share:.1%} of the mean "
        f"cosine, the rule's dims {list(dims)} {rule_share:.1%}; SNLI entailment-vs-contradiction AUC of the "
        f"cosine {auc['raw']:.3f} raw, {auc['all dims standardised']:.3f} with every dim standardised, "
        f"{auc['outlier dims standardised']:.3f} with the rule's dims standardised alone (random dims: "
        f"{randoms.min():.3f}-{randoms.max():.3f})."
    )
    return Finding(
        f"{name}: a few rogue dims dominate the cosine similarity of its embeddings", top_share >= 0.5, evidence
    )
