"""One protocol over many architectures (notebook 06): encoders, encoder-decoders and decoders alike.

Per model (and per stack of an encoder-decoder, BART's encoder and decoder apart):

1. Sites and norm placement: post-LN (a norm on the residual stream after each sub-layer: BERT,
   RoBERTa, ELECTRA, XLNet, BART) or pre-LN (a norm in front of each sub-layer, the residual stream
   itself never normalised inside the layers: GPT-2, Pythia, Llama/SmolLM2).
2. The dims the project's one rule detects (``analysis.detection.detect``, on the whole model).
3. Activation dominance: mean |h| at those dims against the median dim of each layer, the largest
   single activation of each layer (a "massive activation", Sun et al. 2024) and which tokens carry
   the detected dims (first token, special/delimiter tokens, punctuation, other).
4. The model's objective with the dims disabled against 20+ random draws of as many dims: masked-LM
   loss (an MLM head), causal-LM loss (a decoder), embedding cosine to the intact model (no head).
5. Zero vs mean replacement (Sun et al. 2024 on LLaMA2-7B: perplexity 5.12 -> 8115 zeroed, 5.13 at
   the mean: does that hold for norm parameters?).

Which sites are disabled (``sites.ablation_roles``). In a post-LN model the block-output LayerNorm IS the
residual stream: zeroing its weight and bias at dim d removes d from everything downstream, which is
the paper's intervention. In a pre-LN model no norm sits on the residual stream: a pre-attention or
pre-FFN norm only feeds its sub-layer, so zeroing it at d hides d from that sub-layer while the
stream keeps carrying it, and only the final norm removes it for the head. The paper's GPT-2
analogue (Kovaleva et al., Sec. 5) is therefore not a norm but the output dense layer of each block
(attention and MLP output projections), whose row d is what each block writes into dim d of the
stream. The protocol disables the pre-norms (the norm-parameter claim under test) and, for pre-LN
models, also the output projections at the same dims (``output_dense_disabled``), and tables both.

Example:
    >>> result = run_protocol(["minilm", "bbmini", "smollm2"], texts)  # doctest: +SKIP
    >>> result.table                                                     # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from ..analysis.activations import activation_profile, carriers_by_token_kind, layer_dominance, text_batches
from ..analysis.baselines import damage, random_dims, rank_against
from ..analysis.detection import detect
from ..device import bf16_gemms
from ..evaluation.model_objective import objective_of
from ..model.ablation import Condition
from ..model.discovery import find_norm_sites
from ..model.edits import ParamFill, edited
from ..model.loading import CAUSAL_TYPES, Head
from ..model.sites import PRE_LN_ROLES, NormSite, ablation_roles, norm_placement, select_sites

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from ..evaluation.engine import AblationEngine

log = logging.getLogger(__name__)

# Output projections of a pre-LN block (what it writes into the residual stream), by model type.
OUTPUT_DENSE: dict[str, tuple[str, ...]] = {
    "llama": ("self_attn.o_proj", "mlp.down_proj"),
    "mistral": ("self_attn.o_proj", "mlp.down_proj"),
    "qwen2": ("self_attn.o_proj", "mlp.down_proj"),
    "gpt2": ("attn.c_proj", "mlp.c_proj"),
    "gpt_neox": ("attention.dense", "mlp.dense_4h_to_h"),
}
TINY_RANDOM = {"tiny-random-llama": "llama", "tiny-random-gpt2": "gpt2", "tiny-random-bert": "bert"}
# the objective kinds of ``evaluation.model_objective.objective_of``, as the tables name them
OBJECTIVE_LABELS = {"mlm": "masked-LM loss", "causal": "causal-LM loss", "embedding": "embedding cosine to intact"}


# ----------------------------------------------------------------------------- loading
def tiny_random_model(kind: str = "llama", seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A randomly initialised 3-layer model (hidden 64) with bbmini's tokenizer: the smoke profile's
    stand-in for a pretrained model (seconds, offline). ``kind``: 'llama', 'gpt2' (pre-LN decoders) or
    'bert' (a post-LN encoder with an MLM head)."""
    import transformers as T
    from transformers import AutoTokenizer

    from ..model.loading import resolve

    tokenizer = AutoTokenizer.from_pretrained(resolve("bbmini"))
    torch.manual_seed(seed)
    vocab = len(tokenizer)
    model: PreTrainedModel
    if kind == "llama":
        model = T.LlamaForCausalLM(
            T.LlamaConfig(
                vocab_size=vocab,
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=3,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=256,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    elif kind == "gpt2":
        model = T.GPT2LMHeadModel(
            T.GPT2Config(
                vocab_size=vocab,
                n_embd=64,
                n_layer=3,
                n_head=4,
                n_positions=256,
                bos_token_id=tokenizer.cls_token_id,
                eos_token_id=tokenizer.sep_token_id,
            )
        )
    elif kind == "bert":
        model = T.BertForMaskedLM(
            T.BertConfig(
                vocab_size=vocab,
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=3,
                num_attention_heads=4,
                max_position_embeddings=256,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    else:
        raise ValueError(f"Unknown tiny model kind {kind!r}; pick one of {sorted(set(TINY_RANDOM.values()))}.")
    return model.eval(), tokenizer


def load_for_protocol(name: str, device: str | None = "auto") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) with the head the protocol scores: an MLM head where the checkpoint has one,
    a causal-LM head for decoders, else the bare model (MiniLM, ELECTRA's discriminator, XLNet, BART).
    ``tiny-random-llama`` / ``tiny-random-gpt2`` build a random tiny decoder (smoke profile)."""
    from ..model.loading import load_config, load_model

    if name in TINY_RANDOM:
        model, tokenizer = tiny_random_model(TINY_RANDOM[name])
        from ..device import best_device

        target = best_device(None if device == "auto" else device)
        return model.to(target), tokenizer
    config = load_config(name)  # ModelLoadError naming the cause, as load_model's
    architectures = " ".join(getattr(config, "architectures", None) or [])
    head: Head
    if config.model_type in CAUSAL_TYPES:
        head = "causal-lm"
    elif "MaskedLM" in architectures and not getattr(config, "is_encoder_decoder", False):
        head = "mlm"
    else:
        head = "base"
    return load_model(name, head=head, device=None if device == "auto" else device)


# ----------------------------------------------------------------------------- sites and dims
def stacks_of(sites: Sequence[NormSite]) -> list[str | None]:
    """[None] for a single-stack model; ['encoder', 'decoder'] for an encoder-decoder (analysed apart)."""
    stacks = sorted({s.stack for s in sites})
    return [*stacks] if len(stacks) > 1 else [None]


# ----------------------------------------------------------------------------- the GPT-2 analogue
def output_dense_modules(model: PreTrainedModel, sites: Sequence[NormSite]) -> list[nn.Module]:
    """Each layer's output projections (attention and MLP), for the model types in ``OUTPUT_DENSE``."""
    names = OUTPUT_DENSE.get(model.config.model_type)
    if names is None:
        raise ValueError(
            f"No output-projection layout known for {model.config.model_type!r}; known: "
            f"{sorted(OUTPUT_DENSE)} (add it to bertbusters_nb.across_models.OUTPUT_DENSE)."
        )
    modules = dict(model.named_modules())
    prefixes = sorted({s.name.rsplit(".", 1)[0] for s in sites if s.layer is not None and s.role in PRE_LN_ROLES})
    found = []
    for prefix in prefixes:
        for name in names:
            if f"{prefix}.{name}" not in modules:
                raise ValueError(f"{prefix}.{name} is missing from this {model.config.model_type!r} model.")
            found.append(modules[f"{prefix}.{name}"])
    return found


@contextlib.contextmanager
def output_dense_disabled(model: PreTrainedModel, sites: Sequence[NormSite], dims: Sequence[int]) -> Iterator[int]:
    """Zero what every block writes into ``dims`` of the residual stream (the output rows of its attention
    and MLP projections, and their bias there); restored bit-exactly on exit. Yields the modules edited."""
    modules = output_dense_modules(model, sites)
    fills = []
    for module in modules:
        weight, bias = module.get_parameter("weight"), getattr(module, "bias", None)
        index = torch.tensor(list(dims), device=weight.device)
        # nn.Linear stores (out, in); GPT-2's Conv1D stores (in, out)
        rows = (slice(None), index) if type(module).__name__ == "Conv1D" else index
        fills.append(ParamFill(weight, rows, 0.0))
        if bias is not None:
            fills.append(ParamFill(bias, index, 0.0))
    with edited(fills):
        yield len(modules)


# ----------------------------------------------------------------------------- the objective
_DEFAULT = object()


@dataclass
class Objective:
    """One model's objective on a fixed set of texts: ``score(conditions)`` -> values, in order."""

    kind: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    texts: list[str]
    max_length: int
    batch_size: int
    autocast: object = "auto"
    seed: int = 42
    _engine: AblationEngine | None = field(default=None, repr=False)
    _intact_embeddings: torch.Tensor | None = field(default=None, repr=False)  # the cosine's reference

    @property
    def label(self) -> str:
        return OBJECTIVE_LABELS[self.kind]

    @property
    def worse(self) -> str:
        return "lower" if self.kind == "embedding" else "higher"

    def engine(self, autocast=_DEFAULT):
        """The engine on the fixed eval set (made once); with ``autocast`` (None = fp32), a fresh one."""
        from ..evaluation.engine import AblationEngine
        from ..evaluation.sets import prepare_causal_eval, prepare_mlm_eval

        fresh = autocast is not _DEFAULT
        if self._engine is None or fresh:
            device = next(self.model.parameters()).device
            if self.kind == "mlm":
                eval_set = prepare_mlm_eval(
                    self.tokenizer,
                    self.texts,
                    max_length=self.max_length,
                    seed=self.seed,
                    batch_size=self.batch_size,
                    device=device,
                )
            else:
                eval_set = prepare_causal_eval(
                    self.tokenizer, self.texts, max_length=self.max_length, batch_size=self.batch_size, device=device
                )
            engine = AblationEngine(self.model, eval_set, autocast=autocast if fresh else self.autocast)
            if fresh:
                return engine
            self._engine = engine
        return self._engine

    def _embeddings(self) -> torch.Tensor:
        from ..evaluation.embeddings import sentence_embeddings

        return sentence_embeddings(
            self.model, self.tokenizer, self.texts, batch_size=self.batch_size, max_length=self.max_length
        )

    def score(self, conditions: Sequence[Condition], progress: bool = False) -> list[float]:
        """The objective under each condition (mean loss, or mean cosine of sentence embeddings to intact)."""
        if self.kind != "embedding":
            return [float(r["eval_loss"]) for r in self.engine().run(list(conditions), progress=progress)]
        if self._intact_embeddings is None:  # for the cosine, the intact embeddings play the engine's part
            self._intact_embeddings = self._embeddings()
        intact = self._intact_embeddings
        sites = find_norm_sites(self.model)
        values = []
        for condition in tqdm(conditions, desc="conditions", disable=not progress, leave=False):
            with condition.apply(sites):
                ablated = self._embeddings()
            values.append(float(torch.nn.functional.cosine_similarity(intact, ablated, dim=-1).mean()))
        return values

    def intact(self) -> float:
        return 1.0 if self.kind == "embedding" else self.score([Condition("none")])[0]

    def precision(self) -> str:
        if self.kind == "embedding":
            return "fp32"
        dtype = self.engine().autocast_dtype
        return "fp32" if dtype is None else str(dtype).replace("torch.", "").replace("bfloat16", "bf16")


# ----------------------------------------------------------------------------- the protocol
@dataclass
class ModelResult:
    """Everything the protocol measured on one model (one stack of an encoder-decoder)."""

    row: dict
    draws: pd.DataFrame
    per_layer: pd.DataFrame
    carriers: pd.DataFrame
    sites: pd.DataFrame


def run_model(
    name: str,
    texts: Sequence[str],
    *,
    random_draws: int = 20,
    max_length: int = 64,
    batch_size: int = 16,
    activation_texts: int = 32,
    device: str | None = "auto",
    autocast="auto",
    compare_precision: bool = True,
    seed: int = 0,
    progress: bool = True,
    model: PreTrainedModel | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> list[ModelResult]:
    """The protocol (module docstring) on model ``name``: one result per stack."""
    if model is None:
        model, tokenizer = load_for_protocol(name, device)
    if tokenizer is None:
        raise ValueError(f"run_model({name!r}, model=...) needs the model's tokenizer too.")
    model.eval()
    sites = find_norm_sites(model)
    objective = Objective(
        objective_of(model, tokenizer), model, tokenizer, list(texts), max_length, batch_size, autocast
    )
    subject = ModelUnderTest(name, model, tokenizer, sites, objective, objective.intact(), list(texts))
    settings = ProtocolSettings(
        random_draws, max_length, batch_size, activation_texts, compare_precision, seed, progress
    )
    return [_run_stack(subject, stack, settings) for stack in stacks_of(sites)]


@dataclass(frozen=True)
class ProtocolSettings:
    """How much the protocol measures on each stack (``run_model``'s keyword arguments of the same names)."""

    random_draws: int = 20
    max_length: int = 64
    batch_size: int = 16
    activation_texts: int = 32
    compare_precision: bool = True
    seed: int = 0
    progress: bool = True


@dataclass
class ModelUnderTest:
    """One loaded model under the protocol: what all its stacks share (its sites, objective and intact value)."""

    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    sites: list[NormSite]
    objective: Objective
    intact: float
    texts: list[str]


def _run_stack(subject: ModelUnderTest, stack: str | None, settings: ProtocolSettings) -> ModelResult:
    """The protocol (module docstring) on one stack of ``subject``'s model."""
    name, model, tokenizer, sites = subject.name, subject.model, subject.tokenizer, subject.sites
    objective, intact, texts = subject.objective, subject.intact, subject.texts
    placement = norm_placement(sites, stack)
    roles = ablation_roles(sites, stack)
    chosen = select_sites(sites, roles=roles, stack=stack)
    detected = detect(model, tokenizer)  # the one rule, on its own train texts, never the judged ones
    dims = tuple(detected.dims)
    hidden = min(s.size for s in chosen)
    label = name if stack is None else f"{name} ({stack})"

    batches = text_batches(
        tokenizer,
        list(texts)[: settings.activation_texts],
        max_length=settings.max_length,
        batch_size=settings.batch_size,
    )
    per_layer = layer_dominance(activation_profile(model, batches, stack=stack), dims)
    carriers = carriers_by_token_kind(model, tokenizer, batches, dims, stack)
    peak = per_layer.loc[per_layer.max_ratio.idxmax()]
    massive_dim = int(peak.max_dim)

    draws = random_dims(hidden, len(dims), settings.random_draws, exclude=dims, seed=settings.seed)
    conditions = [
        Condition("outliers zero", dims, roles, stack=stack),
        Condition("outliers mean", dims, roles, mode="mean", stack=stack),
    ]
    if massive_dim not in dims:
        conditions.append(Condition("largest activation dim zero", (massive_dim,), roles, stack=stack))
    conditions += [Condition(f"random {i}", d, roles, stack=stack) for i, d in enumerate(draws)]
    values = dict(zip([c.name for c in conditions], objective.score(conditions, progress=settings.progress)))
    random_values = [values[f"random {i}"] for i in range(len(draws))]
    stats = rank_against(values["outliers zero"], random_values)
    if objective.worse == "higher":
        beyond = values["outliers zero"] > stats["random_max"]
    else:
        beyond = values["outliers zero"] < stats["random_min"]

    dense = None
    if placement == "pre-LN" and model.config.model_type in OUTPUT_DENSE and objective.kind != "embedding":
        with output_dense_disabled(model, chosen, dims):
            dense = objective.score([Condition("none")])[0]
    precision_diff = None
    if settings.compare_precision and objective.kind != "embedding":  # the same two conditions in the other precision
        other = torch.bfloat16 if objective.precision() == "fp32" else None
        reference = objective.engine(autocast=other).run(
            [Condition("none"), Condition("outliers zero", dims, roles, stack=stack)], progress=False
        )
        sign = 1.0 if other is not None else -1.0  # always bf16 minus fp32
        precision_diff = (
            sign * (reference[0]["eval_loss"] - intact),
            sign * (reference[1]["eval_loss"] - values["outliers zero"]),
        )

    best_layer = per_layer.loc[per_layer.ratio.idxmax()]
    top_carrier = carriers[carriers.layer == int(best_layer.layer)].sort_values("mean_abs_at_dims", ascending=False)
    row = {
        "model": label,
        "model_type": model.config.model_type,
        "stack": stack or "-",
        "placement": placement,
        "layers": 1 + max(s.layer for s in chosen if s.layer is not None),
        "hidden": hidden,
        "roles": "+".join(roles),
        "n_sites": len(chosen),
        "dims": " ".join(map(str, dims)),
        "rule": detected.rule,
        "rule_profile": detected.profile_source,  # computed here, or read from the shared results cache (whose run)
        "objective": objective.label,
        "precision": objective.precision(),
        "texts": len(texts),
        "max_length": settings.max_length,
        "intact": intact,
        "outliers_zero": values["outliers zero"],
        "outliers_mean": values["outliers mean"],
        "random_mean": stats["random_mean"],
        "random_sd": stats["random_std"],
        "random_min": stats["random_min"],
        "random_max": stats["random_max"],
        "draws": len(draws),
        "beyond_every_draw": bool(beyond),
        "dims_ratio_peak": float(best_layer.ratio),
        "dims_ratio_layer": int(best_layer.layer),
        "top_carrier": str(top_carrier.kind.iloc[0]),
        "top_carrier_ratio": float(
            top_carrier.mean_abs_at_dims.iloc[0]
            / carriers[(carriers.layer == int(best_layer.layer)) & (carriers.kind == "other")].mean_abs_at_dims.iloc[0]
        ),
        "largest_activation": float(peak.max_abs),
        "largest_activation_dim": massive_dim,
        "largest_activation_layer": int(peak.layer),
        "largest_activation_ratio": float(peak.max_ratio),
        "largest_dim_detected": massive_dim in dims,
        "largest_dim_zero": values.get("largest activation dim zero", values["outliers zero"]),
        "output_dense_zero": dense,
        "bf16_minus_fp32_intact": None if precision_diff is None else precision_diff[0],
        "bf16_minus_fp32_outliers": None if precision_diff is None else precision_diff[1],
        "bf16_gemms": None if precision_diff is None else bf16_gemms(objective.engine().device),
    }
    draw_table = pd.DataFrame({"model": label, "condition": list(values), "value": list(values.values())})
    return ModelResult(
        row,
        draw_table,
        per_layer.assign(model=label),
        carriers.assign(model=label),
        _sites_summary(sites, stack, roles).assign(model=label),
    )


def _sites_summary(sites: Sequence[NormSite], stack: str | None, roles: Sequence[str]) -> pd.DataFrame:
    chosen = [s for s in sites if stack is None or s.stack == stack]
    rows: dict[str, dict[str, Any]] = {}
    for s in chosen:
        entry = rows.setdefault(
            s.role,
            {
                "role": s.role,
                "stack": s.stack,
                "sites": 0,
                "class": type(s.module).__name__,
                "has_bias": s.bias is not None,
                "ablated": s.role in roles,
            },
        )
        entry["sites"] += 1
    return pd.DataFrame(list(rows.values()))


@dataclass
class ProtocolResult:
    """The protocol over several models: ``table`` (one tidy row per model/stack) and the long tables."""

    table: pd.DataFrame
    draws: pd.DataFrame
    per_layer: pd.DataFrame
    carriers: pd.DataFrame
    sites: pd.DataFrame
    seconds: dict[str, float]

    def timing(self, total_seconds: float | None = None) -> pd.DataFrame:
        """Seconds per model (loading included) and, when given, for the whole run: one tidy row each."""
        rows = [{"what": name, "seconds": round(s, 1)} for name, s in self.seconds.items()]
        if total_seconds is not None:
            rows.append({"what": "total", "seconds": round(float(total_seconds), 1)})
        return pd.DataFrame(rows)


def run_protocol(models: Sequence[str], texts: Sequence[str], progress: bool = True, **options) -> ProtocolResult:
    """``run_model`` for each name in ``models`` (loaded one at a time and released), collected.

    Example:
        >>> result = run_protocol(["minilm", "bbmini", "smollm2"], texts, random_draws=20)  # doctest: +SKIP
    """
    import gc
    import time

    if not models:
        raise ValueError("models is empty: name at least one model (e.g. 'minilm', 'bbmini', 'smollm2').")
    results: list[ModelResult] = []
    seconds = {}
    for name in tqdm(list(models), desc="models", disable=not progress):
        start = time.perf_counter()
        results += run_model(name, texts, progress=False, **options)
        seconds[name] = time.perf_counter() - start
        gc.collect()
    return ProtocolResult(
        pd.DataFrame([r.row for r in results]),
        pd.concat([r.draws for r in results]),
        pd.concat([r.per_layer for r in results]),
        pd.concat([r.carriers for r in results]),
        pd.concat([r.sites for r in results]),
        seconds,
    )


# ----------------------------------------------------------------------------- reporting
def summary_table(table: pd.DataFrame) -> pd.DataFrame:
    """The cross-model table for the README: the columns a reader needs, rounded."""
    cols = [
        "model",
        "placement",
        "roles",
        "dims",
        "objective",
        "intact",
        "outliers_zero",
        "outliers_mean",
        "random_mean",
        "random_sd",
        "random_max",
        "beyond_every_draw",
        "dims_ratio_peak",
        "top_carrier",
        "largest_activation_dim",
        "largest_activation_ratio",
        "largest_dim_zero",
        "output_dense_zero",
    ]
    return table[cols].round(3)


def figure(result: ProtocolResult):
    """Top: per model, damage of the detected dims (zero, mean) against the random draws. Bottom: mean |h| at
    the detected dims over the median dim, per layer (log scale)."""
    import matplotlib.pyplot as plt

    table = result.table
    n = len(table)
    fig, axes = plt.subplots(2, n, figsize=(3.2 * n, 5.6), squeeze=False)
    for j, row in enumerate(table.itertuples()):
        worse = "lower" if row.objective == OBJECTIVE_LABELS["embedding"] else "higher"
        draws = result.draws[(result.draws.model == row.model) & result.draws.condition.str.startswith("random")]
        ax = axes[0, j]
        jitter = np.random.default_rng(j).uniform(-0.15, 0.15, len(draws))
        ax.scatter(
            jitter,
            [damage(v, row.intact, worse) for v in draws.value],
            color="grey",
            alpha=0.6,
            s=14,
            label=f"random dims, zero ({len(draws)})",
        )
        ax.scatter(
            [0.6],
            [damage(row.outliers_zero, row.intact, worse)],
            color="crimson",
            marker="D",
            s=50,
            label="detected dims, zero",
            zorder=5,
        )
        ax.scatter(
            [0.85],
            [damage(row.outliers_mean, row.intact, worse)],
            color="tab:blue",
            marker="o",
            s=40,
            label="detected dims, mean",
            zorder=5,
        )
        ax.set_xlim(-0.4, 1.1)
        values = [damage(v, row.intact, worse) for v in [*draws.value, row.outliers_zero, row.outliers_mean]]
        ax.set_ylim(min(min(values) * 1.5, -1e-3), max(max(values) * 3.0, 1e-2))  # room above the markers
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_title(f"{row.model}\n{row.placement} · dims {row.dims}", fontsize=8)
        ax.set_ylabel("loss increase" if worse == "higher" else "1 - cosine", fontsize=8)
        ax.set_xticks([])
        ax.tick_params(labelsize=7)
        layers = result.per_layer[result.per_layer.model == row.model]
        ax = axes[1, j]
        ax.plot(layers.layer, layers.ratio, marker=".", color="crimson", label="detected dims")
        ax.plot(layers.layer, layers.max_ratio, marker=".", color="black", lw=0.8, label="largest activation")
        ax.set_yscale("log")
        ax.set_xlabel("layer (0 = embeddings)", fontsize=8)
        ax.set_ylabel("|h| / median dim", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle("Detected dims disabled vs 20+ random draws (grey), and their activation dominance", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    handles = [h for ax in (axes[0, 0], axes[1, 0]) for h in ax.get_legend_handles_labels()[0]]
    labels = [l for ax in (axes[0, 0], axes[1, 0]) for l in ax.get_legend_handles_labels()[1]]
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=7, frameon=False)
    plt.close(fig)
    return fig


PRE_LN_SITE_NOTE = (
    "In a pre-LN model (GPT-2, Pythia, Llama/SmolLM2) no norm sits on the residual stream: each pre-attention "
    "and pre-FFN norm only feeds its own sub-layer, and the final norm feeds the head. Zeroing a pre-norm's "
    "weight at dim d therefore hides d from that sub-layer while the stream keeps carrying it. The protocol "
    "disables the pre-norms (the norm-parameter claim under test, the same kind of site as in the post-LN "
    "models). The paper's GPT-2 experiment disabled the output dense layer of each block instead: its row d is "
    "what the block writes into dim d of the stream, the closest pre-LN counterpart of a post-LN block-output "
    "LayerNorm. Both are measured below for the pre-LN models, at the same detected dims."
)


def analogue_table(table: pd.DataFrame) -> pd.DataFrame:
    """Pre-LN models: the objective with the pre-norms zeroed vs the blocks' output projections zeroed."""
    pre = table[table.placement == "pre-LN"]
    return (
        pre[["model", "dims", "objective", "intact", "outliers_zero", "output_dense_zero", "random_max"]]
        .rename(columns={"outliers_zero": "pre_norms_zero", "random_max": "pre_norms_random_max"})
        .reset_index(drop=True)
    )


def precision_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per LM-objective model: the run's precision, bf16 minus fp32 for the intact and zeroed losses, and how the
    bf16 matrix products ran (``device.bf16_gemms``: natively, or as fp32 products of the bf16 operands)."""
    lm = table[table.bf16_minus_fp32_intact.notna()]
    columns = ["model", "precision", "intact", "outliers_zero", "bf16_minus_fp32_intact", "bf16_minus_fp32_outliers"]
    return lm[columns + ["bf16_gemms"]].reset_index(drop=True)
