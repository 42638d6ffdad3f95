"""The explorer's super weights (a causal LM's): the package's finder on a few of the explorer's own texts, and
the scalars a state zeroes, through the one edit context.

``find_for_explorer`` runs ``analysis.super_weights.find_super_weights`` (spikes of the FFN output projections
over the prompts, candidate scalars, each zeroed alone against random and largest-|w| scalars of its matrix) with
the causal-LM loss on those texts as the objective, so a toggle is offered only for a scalar verified on the
loss the explorer shows. ``ExplorerSuperWeight`` is one verified scalar as a toggle shows it; ``scalars_of``
turns a state's keys (module name, row, col of its ``weight`` tensor) into the finder's (writer, output channel,
input channel), checked, and ``analysis.super_weights.zeroed`` makes the edit (restored bit-exactly on exit).

Example:
    >>> search = find_for_explorer(model, tokenizer, texts[:8], sites)            # doctest: +SKIP
    >>> [s.label for s in search.found]                                           # doctest: +SKIP
    ['layer 11 mlp.down_proj [507, 1229]']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..analysis import super_weights as sw
from ..model.sites import NormSite
from ..model.writers import ResidualWriter
from ..reporting.claims import explorer_super_weights_note
from .state import ScalarKey

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# The explorer's finder: the package's own rule (20 random and 20 largest-|w| controls per matrix). Verification
# measures a matrix's controls only as far as a verdict needs (a candidate is rejected at the first control that
# matches it), so only a verified scalar pays for all 40; with 5 + 5 controls two weak scalars of SmolLM2 passed.
EXPLORER_RULE = sw.SuperWeightRule()


def module_in_block(name: str, layer: int) -> str:
    """A writer's name inside its block (``model.layers.11.mlp.down_proj`` -> ``mlp.down_proj``)."""
    marker = f".{layer}."
    return name.split(marker, 1)[1] if marker in name else name


@dataclass(frozen=True)
class ExplorerSuperWeight:
    """One verified super weight as the explorer offers it.

    key: (module name, row, col) of the module's ``weight`` tensor (GPT-2's ``Conv1D`` is (in, out)): what an
    ``ExplorerState.super_weights`` entry holds. layer: the block. weight: its value. delta: the loss change when
    zeroed alone (the finder's verification); control_max: the largest |change| of its controls.
    """

    key: ScalarKey
    layer: int
    weight: float
    delta: float
    control_max: float

    @property
    def label(self) -> str:
        name, row, col = self.key
        return f"layer {self.layer} {module_in_block(name, self.layer)} [{row}, {col}]"

    @property
    def tooltip(self) -> str:
        return (
            f"{self.key[0]}.weight[{self.key[1]}, {self.key[2]}] = {self.weight:+.4g}: zeroed alone it changed the "
            f"loss by {self.delta:+.4g} (its controls at most {self.control_max:.2g}); switch on to set it to 0"
        )


@dataclass
class SuperWeightSearch:
    """What the finder measured for the explorer: ``found`` (possibly empty), the full ``report`` (spike table,
    candidates, verdicts) and how many prompts it ran on."""

    found: list[ExplorerSuperWeight]
    report: sw.SuperWeightReport
    n_prompts: int

    @property
    def note(self) -> str:
        """The control's sentence: how many were verified, or plainly that there is none and why."""
        return explorer_super_weights_note(
            len(self.found), self.report.spikes, len(self.report.candidates), self.n_prompts, self.report.rule.controls
        )


def _batches(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int) -> list[dict]:
    """The prompts as batches: padded together when the tokenizer can pad, else one text per batch (a decoder's
    tokenizer often has no pad token, and the user's tokenizer is not changed here)."""
    if tokenizer.pad_token is not None:
        return sw.prompt_batches(tokenizer, texts, max_length=max_length)
    batches = []
    for text in texts:
        enc = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
        batches.append({"input_ids": enc["input_ids"], "attention_mask": torch.ones_like(enc["input_ids"])})
    return batches


def find_for_explorer(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    sites: Sequence[NormSite],
    rule: sw.SuperWeightRule = EXPLORER_RULE,
    max_length: int = 32,
    batch_size: int = 16,
    seed: int = 0,
) -> SuperWeightSearch:
    """The verified super weights of a causal LM: ``texts`` are the prompts the spikes are measured on and the
    eval set of the causal-LM loss each candidate is verified on (a few texts keep it cheap)."""
    from ..evaluation.engine import AblationEngine
    from ..evaluation.sets import prepare_causal_eval

    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError("No texts to find super weights on.")
    device = next(model.parameters()).device
    eval_set = prepare_causal_eval(tokenizer, texts, max_length=max_length, batch_size=batch_size, device=device)
    objective = sw.SuffixObjective(AblationEngine(model, eval_set, sites))  # each edit from its writer's layer on
    report = sw.find_super_weights(model, _batches(tokenizer, texts, max_length), objective, rule, sites, seed)
    by_name = {w.name: w for w in report.writers}
    found = []
    for r in report.super_weights.itertuples():
        writer = by_name[str(r.writer)]
        row, col = writer.index(int(r.row), int(r.col))
        found.append(
            ExplorerSuperWeight(
                (writer.name, row, col), int(r.layer), float(r.weight), float(r.delta), float(r.control_max)
            )
        )
    return SuperWeightSearch(found, report, len(texts))


def scalars_of(
    writers: Mapping[str, ResidualWriter], keys: Sequence[ScalarKey]
) -> list[tuple[ResidualWriter, int, int]]:
    """A state's keys as (writer, output channel, input channel) for ``analysis.super_weights.zeroed``; raises
    ValueError naming a key whose module is not a residual writer or whose position is outside its weight."""
    scalars = []
    for name, row, col in keys:
        writer = writers.get(name)
        if writer is None:
            raise ValueError(
                f"{name!r} is not a residual writer (FFN output projection) of this model; "
                f"those are {sorted(writers)[:3]}..."
            )
        shape = tuple(writer.weight.shape)
        if not (0 <= row < shape[0] and 0 <= col < shape[1]):
            raise ValueError(f"[{row}, {col}] is outside {name}.weight, of shape {list(shape)}.")
        out_channel, in_channel = (col, row) if writer.transposed else (row, col)
        scalars.append((writer, out_channel, in_channel))
    return scalars


__all__ = [
    "EXPLORER_RULE",
    "ExplorerSuperWeight",
    "SuperWeightSearch",
    "find_for_explorer",
    "module_in_block",
    "scalars_of",
]
