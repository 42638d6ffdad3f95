"""Notebook 08's chain, per model: super weight -> massive activation -> norm input -> norm output -> effect.

For one model: its residual writers and verified super weights (``analysis.super_weights``), the dims of the
massive activations they create before and after the stream norm, whether those are the detection rule's dims
(``analysis.detection.dims_to_ablate``), the objective with the super weight(s) zeroed, the rule's dims
disabled, and both, against random scalars and random dims, the attention-sink mass with the super weight(s)
zeroed, and Yu et al.'s check that restoring the super activation alone recovers most of the change.
Numbers only; the sentences are in ``reporting.claims``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import pandas as pd
import torch

from ..analysis import super_weights as sw
from ..analysis.attention_sinks import SINK, sink_scores
from ..analysis.detection import dims_to_ablate
from ..analysis.effect import effect_roles
from ..evaluation.conditions import random_dims
from ..evaluation.engine import AblationEngine
from ..evaluation.model_objective import objective_of
from ..evaluation.sets import prepare_causal_eval, prepare_embedding_eval, prepare_mlm_eval
from ..model.ablation import Condition
from ..model.discovery import find_norm_sites
from ..model.loading import Head, load_model, resolve
from ..model.sites import NormSite

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["Chain", "chain_effects", "load_chain", "massive_dims", "restoration", "sink_change", "summary_row"]

# alias -> head to load (a hub name: a causal LM head for a decoder, else the masked-LM head when it has one)
HEADS: dict[str, Head] = {"bbmini": "mlm", "minilm": "base", "smollm2": "causal-lm"}


@dataclass
class Chain:
    """One model traced from weights to effect. kind: its objective ('mlm', 'causal' or 'embedding')."""

    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    kind: str
    sites: list[NormSite]
    dims: list[int]
    roles: tuple[str, ...]
    engine: AblationEngine
    report: sw.SuperWeightReport

    @property
    def hidden_size(self) -> int:
        return int(self.sites[0].size if not self.report.writers else self.report.writers[0].out_features)

    def objective(self) -> float:
        """The model's objective on the fixed eval set, with whatever edit is in force."""
        return float(self.engine.evaluate()["eval_loss"])


def _head(name: str) -> Head:
    if name in HEADS:
        return HEADS[name]
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(resolve(name))
    decoder = any("CausalLM" in a or "LMHead" in a for a in (config.architectures or []))
    return "causal-lm" if decoder else "mlm"


def _eval_set(kind: str, tokenizer, texts: Sequence[str], max_length: int, batch_size: int, device):
    if kind == "mlm":
        return prepare_mlm_eval(tokenizer, texts, max_length=max_length, batch_size=batch_size, device=device)
    if kind == "causal":
        return prepare_causal_eval(tokenizer, texts, max_length=max_length, batch_size=batch_size, device=device)
    return prepare_embedding_eval(tokenizer, texts, max_length=max_length, batch_size=batch_size, device=device)


def load_chain(
    name: str,
    prompts: Sequence[str],
    eval_texts: Sequence[str],
    rule: sw.SuperWeightRule = sw.SuperWeightRule(),
    device: str = "auto",
    device_map: str | None = None,
    max_length: int = 64,
    batch_size: int = 16,
    seed: int = 0,
) -> Chain:
    """Load ``name`` with its own objective's head, find its super weights over ``prompts``, verified on
    ``eval_texts``; the rule's dims for comparison.

    Example:
        >>> chain = load_chain("smollm2", prompts, eval_texts)  # doctest: +SKIP
        >>> chain.report.super_weights[["layer", "row", "col", "delta"]]  # doctest: +SKIP
    """
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    if device_map:
        from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

        auto = AutoModelForCausalLM if _head(name) == "causal-lm" else AutoModelForMaskedLM
        model = auto.from_pretrained(resolve(name), device_map=device_map, dtype=torch.bfloat16).eval()
        tokenizer = AutoTokenizer.from_pretrained(resolve(name))
    else:
        model, tokenizer = load_model(name, head=_head(name), device=None if device == "auto" else device)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    kind = objective_of(model, tokenizer)
    sites = find_norm_sites(model)
    dims = dims_to_ablate(model, tokenizer)
    device_of = next(model.parameters()).device
    engine = AblationEngine(model, _eval_set(kind, tokenizer, eval_texts, max_length, batch_size, device_of), sites)
    objective = sw.SuffixObjective(engine)  # a scalar edit in layer L is evaluated from layer L on
    batches = sw.prompt_batches(tokenizer, prompts, max_length=max_length, batch_size=batch_size)
    report = sw.find_super_weights(model, batches, objective, rule, sites, seed)
    return Chain(name, model, tokenizer, kind, sites, dims, effect_roles(sites), engine, report)


def massive_dims(chain: Chain) -> pd.DataFrame:
    """The spiking channels (every layer's largest, spike or not), with whether each is a rule dim and what
    the stream norm does to it: ``norm_in_ratio`` (the norm's input at that dim over its median dim) and
    ``norm_out_ratio`` (its output): a post-LN LayerNorm damps the massive activation inside itself."""
    table = chain.report.spikes.copy()
    table.insert(0, "model", chain.name)
    table["rule_dim"] = table.channel.isin(chain.dims)
    table["damping"] = table.norm_in_ratio / table.norm_out_ratio.clip(lower=1e-12)
    return table


@contextlib.contextmanager
def _none():
    yield


def dims_can_be_disabled(chain: Chain) -> bool:
    """Whether the chain's ablation roles hold norms whose dims can be switched off (OLMo's non-affine
    LayerNorms cannot: then the dim conditions are left out and only the super-weight rows remain)."""
    chosen = [site for site in chain.sites if site.role in chain.roles]
    return bool(chosen) and all(site.can_disable for site in chosen)


def chain_effects(chain: Chain, draws: int = 5, seed: int = 0) -> pd.DataFrame:
    """The objective under: intact; the super weight(s) zeroed; the rule's dims disabled (on the ablation roles);
    both; and ``draws`` random dim sets of the same size (alone and with the super weight(s) zeroed). The random
    scalars are ``chain.report.controls`` (one at a time). One row per condition: group, condition, objective,
    delta (to intact). Without a verified super weight the 'super weight' rows are absent."""
    scalars = chain.report.scalars()
    size = chain.report.writers[0].out_features
    randoms = random_dims(size, len(chain.dims), draws, exclude=chain.dims, seed=seed)
    conditions = [Condition("intact")]
    if dims_can_be_disabled(chain):
        conditions += [Condition("outlier dims", tuple(chain.dims), chain.roles)]
        conditions += [Condition(f"random dims {i}", d, chain.roles) for i, d in enumerate(randoms)]
    groups = {"intact": "intact", "outlier dims": "outlier dims"}
    rows = []
    for zeroing in [False, True] if scalars else [False]:
        with sw.zeroed(scalars) if zeroing else _none():
            results = chain.engine.run(conditions, progress=False)
        for cond, res in zip(conditions, results):
            group = groups.get(cond.name, "random dims")
            if zeroing:
                group = "super weight" if group == "intact" else f"super weight + {group}"
            rows.append({"group": group, "condition": cond.name, "objective": float(res["eval_loss"])})
    table = pd.DataFrame(rows)
    intact = float(table.objective[table.group == "intact"].iloc[0])
    table["delta"] = table.objective - intact
    table.insert(0, "model", chain.name)
    controls = chain.report.controls
    if not controls.empty:
        extra = controls.assign(
            model=chain.name,
            group="random scalar " + controls.kind,
            condition=[
                f"{w.rsplit('.', 2)[-2]}[{r},{c}]" for w, r, c in zip(controls.writer, controls.row, controls.col)
            ],
            objective=intact + controls.delta,
        )[["model", "group", "condition", "objective", "delta"]]
        table = pd.concat([table, extra], ignore_index=True)
    return table


def restoration(chain: Chain) -> pd.DataFrame:
    """Yu et al.'s check per verified super weight: the objective intact, with the weight zeroed, and with the
    weight zeroed but its contribution added back at the tokens where it is massive (at least
    ``rule.spike_ratio`` times the writer's median channel maximum): ``recovered`` is the share of the change
    that restoring the super activation alone undoes."""
    rows = []
    intact = chain.objective()
    spikes = chain.report.spikes
    for writer, row, col in chain.report.scalars():
        median = float(spikes[(spikes.writer == writer.name)].out_median.iloc[0])
        threshold = chain.report.rule.spike_ratio * median
        with sw.zeroed([(writer, row, col)]):
            zeroed = chain.objective()
        with sw.restored_activation(chain.model, writer, row, col, threshold), sw.zeroed([(writer, row, col)]):
            restored = chain.objective()
        change = zeroed - intact
        rows.append(
            {
                "model": chain.name,
                "layer": writer.layer,
                "module": writer.name,
                "out_channel": row,
                "in_channel": col,
                "intact": intact,
                "zeroed": zeroed,
                "restored": restored,
                "recovered": (zeroed - restored) / change if change else float("nan"),
            }
        )
    columns = ["model", "layer", "module", "out_channel", "in_channel", "intact", "zeroed", "restored", "recovered"]
    return pd.DataFrame(rows, columns=columns)


def sink_change(chain: Chain, texts: Sequence[str], max_length: int = 64, batch_size: int = 16) -> pd.DataFrame:
    """Mean attention mass on sink tokens (special, delimiter or first) per layer, intact and with the super
    weight(s) zeroed; empty without a verified super weight."""
    scalars = chain.report.scalars()
    if not scalars:
        return pd.DataFrame(columns=["model", "layer", "intact", "super weight zeroed"])
    frames = {}
    for label, context in (("intact", _none), ("super weight zeroed", lambda: sw.zeroed(scalars))):
        with context():
            table = sink_scores(chain.model, chain.tokenizer, texts, max_length, batch_size)
        frames[label] = table[table.category == SINK].groupby("layer")["mass"].mean()
    out = pd.DataFrame(frames).reset_index()
    out.insert(0, "model", chain.name)
    return out


def summary_row(chain: Chain, effects: pd.DataFrame, restored: pd.DataFrame) -> dict:
    """One line per model for the README-style table: super weights found, spike dims, rule dims, effects."""
    found = sw.super_weight_table(chain.report, chain.name)
    spikes = chain.report.spikes[chain.report.spikes.spike]
    by_group = effects.groupby("group").delta
    randoms = effects[effects.group.str.startswith("random scalar")]
    return {
        "model": chain.name,
        "objective": chain.kind,
        "super weights": "; ".join(
            f"layer {r.layer} {r.module.rsplit('.', 2)[-2]}.{r.module.rsplit('.', 1)[-1]}{r['index']}"
            for _, r in found.iterrows()
        )
        or "none",
        "spike dims": sorted(set(int(c) for c in spikes.channel)),
        "spike layers": sorted(set(int(layer) for layer in spikes.layer)),
        "rule dims": list(chain.dims),
        "delta super weight": float(by_group.max().get("super weight", float("nan"))),
        "max |delta| random scalar": float(randoms.delta.abs().max()) if not randoms.empty else float("nan"),
        "delta outlier dims": float(by_group.max().get("outlier dims", float("nan"))),
        "recovered by restoring": float(restored.recovered.mean()) if not restored.empty else float("nan"),
    }
