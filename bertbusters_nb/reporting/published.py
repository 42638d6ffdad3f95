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

# ----------------------------------------------------------------------------- super weights (notebook 08)
YU_2024 = (
    "Yu, Wang, Sun, Zeng, Ermon, Lin, Chen 2024, The Super Weight in Large Language Models (arXiv 2411.07191), "
    "Table 2 and its code repository mengxiayu/LLMSuperWeight"
)


@dataclass(frozen=True)
class PublishedSuperWeight:
    """One published super weight: ``layer``'s FFN output projection (``mlp.down_proj``), ``index`` in the
    weight tensor's own layout ((out, in) for ``nn.Linear``), and where it was published."""

    layer: int
    index: tuple[int, int]
    source: str


SUPER_WEIGHTS: dict[str, tuple[PublishedSuperWeight, ...]] = {
    "mistralai/Mistral-7B-v0.1": (PublishedSuperWeight(1, (2070, 7310), YU_2024),),
    "huggyllama/llama-7b": (PublishedSuperWeight(2, (3968, 7003), YU_2024),),
    # Yu et al. list two for OLMo-1B (the 0724 release): [1764, 1710] (reproduced by a third party, who zeroed it
    # in allenai/OLMo-1B-0724-hf: WikiText-2 perplexity 17.4 -> 2884) and [1764, 8041] (as recalled from their
    # Table 2; not in the stored pages). The issue names allenai/OLMo-1B-hf; both keys carry the same entries.
    "allenai/OLMo-1B-0724-hf": (
        PublishedSuperWeight(1, (1764, 1710), YU_2024),
        PublishedSuperWeight(1, (1764, 8041), f"{YU_2024} (as recalled)"),
    ),
    "HuggingFaceTB/SmolLM2-1.7B": (
        PublishedSuperWeight(1, (749, 4987), "a third-party report quoted in issue 25 (WikiText-2 ppl 6.93 -> 9.07e7)"),
    ),
}
SUPER_WEIGHTS["allenai/OLMo-1B-hf"] = SUPER_WEIGHTS["allenai/OLMo-1B-0724-hf"]
__all__ += ["PublishedSuperWeight", "SUPER_WEIGHTS", "YU_2024"]
