"""The published figures a paper-profile run is set beside: one table, keyed by hub model name, with the source.

Never used in place of a computed number: ``reporting.claims`` prints them next to the run's own (dims from the
one detection rule, drops from the run's ablations) and says whether they agree. A model without an entry (the
offline MiniLM, bbmini, SmolLM2) has no published figure, and the notebooks say so.

Example:
    >>> PUBLISHED["bert-base-uncased"].outlier_dims
    (308, 381)
"""

from __future__ import annotations

from dataclasses import dataclass

KOVALEVA_2021 = (
    "Kovaleva, Kulshreshtha, Rogers, Rumshisky 2021, BERT Busters: Outlier Dimensions that Disrupt Transformers "
    "(Findings of ACL 2021, arXiv 2105.06990)"
)
PUCCETTI_2022 = (
    "Puccetti, Rogers, Drozd, Dell'Orletta 2022, Outlier Dimensions that Disrupt Transformers are Driven by "
    "Frequency (Findings of EMNLP 2022, the follow-up)"
)


@dataclass(frozen=True)
class PublishedFigures:
    """What the paper or its follow-up published for one hub model.

    outlier_dims: the LayerNorm outlier dims. dims_source: where. task_drops: task -> the relative drop of the
    fine-tuned model's score with the outlier dims zeroed (0.30 = 30%); drops_source: where, with the wording.
    """

    outlier_dims: tuple[int, ...] = ()
    dims_source: str = ""
    task_drops: tuple[tuple[str, float], ...] = ()
    drops_source: str = ""


PUBLISHED: dict[str, PublishedFigures] = {
    "bert-base-uncased": PublishedFigures(
        (308, 381),
        f"{KOVALEVA_2021}; {PUCCETTI_2022}",
        (("mnli", 0.30),),
        f'{PUCCETTI_2022}: "nearly 30%" relative drop of MNLI accuracy with 48 parameters zeroed '
        "(2 dims x weight and bias x 12 layers)",
    ),
    "roberta-base": PublishedFigures((77, 588), PUCCETTI_2022),
    "google/multiberts-seed_0": PublishedFigures((263, 628), PUCCETTI_2022),
    "google/multiberts-seed_1": PublishedFigures((218, 674), PUCCETTI_2022),
}
# The MultiBERTs release's final checkpoints (step 2,000k) are the seed models above (same run, last step).
PUBLISHED["google/multiberts-seed_0-step_2000k"] = PUBLISHED["google/multiberts-seed_0"]
PUBLISHED["google/multiberts-seed_1-step_2000k"] = PUBLISHED["google/multiberts-seed_1"]

__all__ = ["PUBLISHED", "PublishedFigures", "KOVALEVA_2021", "PUCCETTI_2022"]
