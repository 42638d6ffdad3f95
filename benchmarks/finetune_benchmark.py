"""Benchmark: notebook 04's fine-tunes, their training cost (steps x padded tokens) and dev accuracy, per recipe.

The recipes (``VARIANTS``) are changes to notebook 04's parameters cell (read from the notebook, so "notebook" is
always the current one). For each recipe, backbone and task the run

  * fine-tunes through ``studies.downstream.DownstreamStudy`` (the notebook's code path, the package's ``Trainer``
    with its dynamic padding) into a private cache, counting every batch the collator pads: optimizer steps,
    train examples, padded tokens (what the forward and backward pay for), real tokens, train seconds;
  * evaluates the fine-tuned model on the notebook's dev sample (300 examples): the accuracy the recipe must keep;
  * with ``--ablate``, runs the notebook's outlier ablation against random draws and the verdict rule of
    ``reporting.claims.downstream_findings``, so a cheaper recipe is seen to keep the verdicts too.

The lengths part needs no training: the token lengths of each training sample under each tokenizer (what a shorter
``max_length`` would truncate) and the padded tokens one epoch would cost at several lengths, with and without
length grouping (HF's length-grouped sampler, replayed with a seeded generator).

Padded tokens and steps are the machine-independent cost; seconds are what this machine measured under the load
the report states. Run:
    python benchmarks/finetune_benchmark.py                      # lengths + every recipe, writes RESULTS.md
    python benchmarks/finetune_benchmark.py --variants "notebook,1 epoch 2x lr" --backbones bbmini --ablate
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from engine_benchmark import machine, write_section  # noqa: E402

from bertbusters_nb.evaluation.tasks import get_task, load_task, tokenize_split  # noqa: E402
from bertbusters_nb.finetuning import FinetuneSettings  # noqa: E402
from bertbusters_nb.finetuning import trainer as finetuning_trainer  # noqa: E402
from bertbusters_nb.model.loading import resolve  # noqa: E402
from bertbusters_nb.reporting.claims import downstream_findings  # noqa: E402
from bertbusters_nb.runner import declared_parameters  # noqa: E402
from bertbusters_nb.studies.downstream import DownstreamStudy, available_backbones  # noqa: E402

log = logging.getLogger("finetune_benchmark")
NOTEBOOK = REPO / "notebooks" / "04_glue_degradation.ipynb"
TOKENS_FILE = "benchmark_tokens.json"
SETTING_NAMES = [f.name for f in dataclasses.fields(FinetuneSettings)]
FULL_LAST_LAYER = "_full_last_layer"  # a variant key that is not a notebook parameter: see ``full_last_layer``

# Changes to notebook 04's parameters cell; "notebook" is the cell as it stands.
VARIANTS: dict[str, dict] = {
    "notebook": {},
    "1 epoch 2x lr": {
        "epochs": 1.0,
        "learning_rate": 2e-4,
        "backbone_overrides": {"bbmini": {"learning_rate": 6e-4, "max_train_samples": 3000}},
    },
    "1 epoch same lr": {"epochs": 1.0},
    "1.5 epochs 1.5x lr": {
        "epochs": 1.5,
        "learning_rate": 1.5e-4,
        "backbone_overrides": {"bbmini": {"learning_rate": 4.5e-4, "max_train_samples": 3000}},
    },
    # the notebook's recipe with the whole last layer trained at every token (before the first-token-only training)
    "every token": {FULL_LAST_LAYER: True},
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {list(VARIANTS)}")
    p.add_argument("--backbones", default=None, help="default: the notebook's")
    p.add_argument("--tasks", default=None, help="default: the notebook's")
    p.add_argument("--cache-dir", default="/tmp/bertbusters_finetune_benchmark", help="private fine-tune cache")
    p.add_argument("--ablate", action="store_true", help="also the outlier-vs-random ablation and its verdicts")
    p.add_argument("--scan", action="store_true", help="with --ablate: also the single-dim scan's finding")
    p.add_argument("--skip-lengths", action="store_true")
    p.add_argument("--results", default=str(REPO / "benchmarks" / "RESULTS.md"))
    p.add_argument("--json", default="/tmp/finetune_benchmark.json", help="figures, merged over runs")
    return p.parse_args(argv)


class CountingCollator(transformers.DataCollatorWithPadding):
    """The package's collator, counting what it pads into ``CountingCollator.record`` (set per training run)."""

    record: dict = {}

    def __call__(self, features):
        batch = super().__call__(features)
        self.record["batches"] += 1
        self.record["padded_tokens"] += int(batch["input_ids"].numel())
        self.record["real_tokens"] += int(batch["attention_mask"].sum())
        return batch


@contextmanager
def counting(tokens: dict):
    """Every fine-tune trained inside counts its padded batches into ``tokens[<cache entry name>]``."""
    from transformers import Trainer  # noqa: F401  (importing it replaces sys.modules["transformers"])

    module = sys.modules["transformers"]  # the object the package's ``from transformers import`` reads
    original_collator, original_train = module.DataCollatorWithPadding, finetuning_trainer._train

    def train(model_name, spec, settings, final, *args, **kwargs):
        CountingCollator.record = tokens[Path(final).name] = {"batches": 0, "padded_tokens": 0, "real_tokens": 0}
        original_train(model_name, spec, settings, final, *args, **kwargs)
        CountingCollator.record["load_after"] = os.getloadavg()[0]
        # beside the entry (outside its manifest's checked files), so the counts outlive a killed benchmark run
        (Path(final) / TOKENS_FILE).write_text(json.dumps(CountingCollator.record))

    module.DataCollatorWithPadding, finetuning_trainer._train = CountingCollator, train
    try:
        yield
    finally:
        module.DataCollatorWithPadding, finetuning_trainer._train = original_collator, original_train


@contextmanager
def full_last_layer(active: bool):
    """While ``active``, fine-tunes run the last layer at every token (the package's first-token check says no)."""
    original = finetuning_trainer.checked_first_token_entry
    if active:
        finetuning_trainer.checked_first_token_entry = lambda *_args, **_kwargs: (None, None)
    try:
        yield
    finally:
        finetuning_trainer.checked_first_token_entry = original


def parameters(variant: str) -> dict:
    """Notebook 04's parameters cell with the variant's changes (``backbone_overrides`` replaced whole)."""
    return {**declared_parameters(NOTEBOOK), **VARIANTS[variant]}


def study_for(params: dict, cache_dir: str, backbones, tasks) -> DownstreamStudy:
    """The notebook's study, built from its parameters as its code cell builds it."""
    settings = FinetuneSettings(**{k: params[k] for k in SETTING_NAMES if k in params})
    usable, missing = available_backbones(backbones or params["backbones"])
    if missing:
        log.warning("backbones not built, left out: %s", missing)
    return DownstreamStudy(
        usable,
        tasks or params["tasks"],
        settings,
        roles=params["roles"],
        k=params["k"],
        min_share=params["min_share"],
        device="cpu",
        cache_dir=cache_dir,
        glue_source=params["glue_source"],
        progress=False,
        overrides=params["backbone_overrides"],
    )


def train_part(variant: str, args, known: dict) -> tuple[pd.DataFrame, DownstreamStudy]:
    """Fine-tune (or reuse) every pair of ``variant`` with the counting collator; one row per pair."""
    params = parameters(variant)
    every_token = bool(params.get(FULL_LAST_LAYER))  # same settings, same cache key: a cache of its own
    cache_dir = f"{args.cache_dir}-every-token" if every_token else args.cache_dir
    study = study_for(params, cache_dir, args.backbones, args.tasks)
    with counting(known), full_last_layer(every_token):
        baseline = study.finetune()
    rows = []
    for r in baseline.itertuples():
        s = study.settings_for(r.backbone)
        entry = Path(r.checkpoint).name
        saved = Path(r.checkpoint) / TOKENS_FILE
        tokens = known.setdefault(entry, json.loads(saved.read_text())) if saved.exists() else known.get(entry)
        rows.append(
            {
                "variant": variant,
                "backbone": r.backbone,
                "task": r.task,
                "epochs": s.epochs,
                "learning_rate": s.learning_rate,
                "warmup_ratio": s.warmup_ratio,
                "batch_size": s.batch_size,
                "max_length": s.max_length,
                "train_examples": r.train_examples,
                "steps": r.train_steps,
                "batches": (tokens or {}).get("batches"),
                "padded_tokens": (tokens or {}).get("padded_tokens"),
                "real_tokens": (tokens or {}).get("real_tokens"),
                "train_seconds": r.train_seconds,
                "load_after": (tokens or {}).get("load_after"),
                "train_loss": r.train_loss,
                "dev_accuracy": r.value,
                "dev_examples": r.dev_examples,
                "reused_cache": bool(r.reused_cache),
                "entry": entry,
            }
        )
    return pd.DataFrame(rows), study


def ablation_part(variant: str, study: DownstreamStudy, params: dict, scan: bool) -> pd.DataFrame:
    """The notebook's ablation, random draws (and with ``scan`` its single-dim scan) on ``study``'s fine-tunes;
    one row per finding of ``claims.downstream_findings``, the vs-random rows with their numbers."""
    outlier_sets = study.outlier_sets()
    study.ablate(layer_parts=params["layer_parts"])
    study.random_baseline(draws=params["random_draws"], seed=params["random_seed"])
    if scan:
        study.scan(tasks=params["scan_tasks"], max_samples=params["scan_samples"], every=params["scan_every"])
    summary = study.summary()
    findings = downstream_findings(summary, outlier_sets)
    numbers = [
        {
            "dims": r.disabled_dims,
            "intact": r.intact,
            "outliers_disabled": r.outliers_disabled,
            "relative_change": r.relative_change,
            "random_mean": r.random_mean,
            "random_std": r.random_std,
            "random_min": r.random_min,
        }
        for r in summary.itertuples()
    ]
    kinds = ["vs random"] * len(summary) + ["survives"] * len(outlier_sets)
    kinds += ["scan"] * (len(findings) - len(kinds))
    rows = []
    for i, (kind, finding) in enumerate(zip(kinds, findings)):
        row = {"variant": variant, "finding": kind, "claim": finding.claim, "outcome": finding.outcome}
        row.update(numbers[i] if i < len(numbers) else {})
        if kind == "scan":
            row["evidence"] = finding.evidence
        rows.append(row)
    return pd.DataFrame(rows)


def padded_per_epoch(lengths: np.ndarray, batch: int, grouped: bool, seed: int) -> int:
    """Padded tokens of one epoch: batches padded to their longest, drawn as HF's sampler draws them."""
    from transformers.trainer_pt_utils import get_length_grouped_indices

    generator = torch.Generator().manual_seed(seed)
    if grouped:
        order = get_length_grouped_indices(lengths.tolist(), batch, generator=generator)
    else:
        order = torch.randperm(len(lengths), generator=generator).tolist()
    ordered = lengths[order]
    return int(sum(ordered[i : i + batch].max() * len(ordered[i : i + batch]) for i in range(0, len(ordered), batch)))


def lengths_part(params: dict, backbones, tasks, cuts=(64, 48, 40, 32)) -> pd.DataFrame:
    """Token lengths of each training sample (untruncated) and one epoch's padded tokens per max length."""
    from transformers import AutoTokenizer

    rows = []
    usable, _ = available_backbones(backbones or params["backbones"])
    for backbone in usable:
        over = params["backbone_overrides"].get(backbone, {})
        n, batch = (
            over.get("max_train_samples", params["max_train_samples"]),
            over.get("batch_size", params["batch_size"]),
        )
        tokenizer = AutoTokenizer.from_pretrained(resolve(backbone))
        for task in tasks or params["tasks"]:
            spec = get_task(task)
            data = load_task(task, max_train_samples=n, glue_source=params["glue_source"])[spec.train_split]
            full = np.array([len(ids) for ids in tokenize_split(data, tokenizer, spec, 10**6)["input_ids"]])
            row = {
                "backbone": backbone,
                "task": task,
                "examples": len(full),
                "mean": float(full.mean()),
                "p50": float(np.percentile(full, 50)),
                "p95": float(np.percentile(full, 95)),
                "max": int(full.max()),
            }
            for cut in cuts:
                cut_lengths = np.minimum(full, cut)
                row[f"truncated@{cut}"] = float((full > cut).mean())
                row[f"tokens_lost@{cut}"] = float(1 - cut_lengths.sum() / full.sum())
                row[f"padded@{cut}"] = padded_per_epoch(cut_lengths, batch, True, params["seed"])
            row["padded@64_ungrouped"] = padded_per_epoch(np.minimum(full, 64), batch, False, params["seed"])
            row["padded@64_batch_x2"] = padded_per_epoch(np.minimum(full, 64), 2 * batch, True, params["seed"])
            row["real_tokens"] = int(np.minimum(full, 64).sum())
            rows.append(row)
    return pd.DataFrame(rows)


def markdown_table(frame: pd.DataFrame) -> str:
    def cell(v):
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.0f}" if abs(v) >= 1000 else f"{v:.4g}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def report(figures: dict) -> str:
    parts = [
        "## Fine-tuning cost of notebook 04 (offline profile)",
        "",
        "Written by `benchmarks/finetune_benchmark.py` (private cache, CPU, the notebook's `DownstreamStudy` code path).",
        f"Machine at the start: {figures['machine']}; load average at the end {figures['load_end']:.1f}; "
        f"run {figures['started']}, {figures['wall_s']:.0f} s. Seconds vary with the load; steps and padded "
        "tokens (every token of every padded batch, counted at the collator) do not.",
    ]
    if figures.get("lengths"):
        lengths = pd.DataFrame(figures["lengths"])
        parts += [
            "",
            "### Token lengths of the training samples (untruncated) and one epoch's padded tokens",
            "",
            "`truncated@L`: share of examples longer than L; `tokens_lost@L`: share of real tokens cut; "
            "`padded@L`: padded tokens of one epoch at max length L with length grouping; "
            "`padded@64_ungrouped`: the plain shuffle; `padded@64_batch_x2`: grouped, twice the batch.",
            "",
            markdown_table(lengths.round(4)),
        ]
    runs = pd.DataFrame(figures["runs"])
    if len(runs):
        base = runs[runs.variant == "notebook"].set_index(["backbone", "task"])
        runs["dev_change"] = [
            r.dev_accuracy - base.dev_accuracy.get((r.backbone, r.task), float("nan")) for r in runs.itertuples()
        ]
        replay = {}
        if figures.get("lengths"):  # one epoch's padded tokens, replayed (the lengths part), times the epochs
            per_epoch = pd.DataFrame(figures["lengths"]).set_index(["backbone", "task"])
            replay = {
                (r.backbone, r.task, r.variant): r.epochs
                * per_epoch.loc[(r.backbone, r.task), f"padded@{r.max_length}"]
                for r in runs.itertuples()
                if (r.backbone, r.task) in per_epoch.index and f"padded@{r.max_length}" in per_epoch
            }
        runs["padded_replayed"] = [replay.get((r.backbone, r.task, r.variant), float("nan")) for r in runs.itertuples()]
        base_replay = runs[runs.variant == "notebook"].set_index(["backbone", "task"]).padded_replayed
        runs["token_share"] = [
            r.padded_replayed / base_replay.get((r.backbone, r.task), float("nan")) for r in runs.itertuples()
        ]
        columns = [
            "variant",
            "backbone",
            "task",
            "epochs",
            "learning_rate",
            "train_examples",
            "steps",
            "batches",
            "padded_tokens",
            "padded_replayed",
            "token_share",
            "train_seconds",
            "load_after",
            "dev_accuracy",
            "dev_change",
        ]
        parts += [
            "",
            "### Recipes: cost and dev accuracy",
            "",
            f"Dev accuracy on the notebook's {int(runs.dev_examples.iloc[0])} dev examples (one example = "
            f"{1 / runs.dev_examples.iloc[0]:.4f}); `batches`: batches the collator padded (a batch fetched past "
            "`max_steps` counts too); `padded_tokens`: counted at the collator (blank: not counted, the run that "
            "trained it was stopped before saving); `padded_replayed`: epochs x one epoch replayed (lengths part); "
            "`token_share`: replayed padded tokens against the notebook's recipe; `load_after`: the "
            "1-minute load average when the fine-tune finished (the machine is shared); a fine-tune reused from the "
            "cache keeps the seconds, load and tokens of the run that trained it.",
            "",
            markdown_table(runs.sort_values(["backbone", "task"], kind="stable")[columns]),
        ]
    if figures.get("verdicts"):
        verdicts = pd.DataFrame(figures["verdicts"])
        parts += [
            "",
            "### Notebook 04's findings on each recipe's fine-tunes (`claims.downstream_findings`)",
            "",
            markdown_table(verdicts.sort_values(["claim", "variant"], kind="stable")),
        ]
    return "\n".join(parts)


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.backbones = args.backbones.split(",") if args.backbones else None
    args.tasks = args.tasks.split(",") if args.tasks else None
    json_path = Path(args.json)
    figures = json.loads(json_path.read_text()) if json_path.exists() else {"runs": [], "verdicts": [], "tokens": {}}
    figures.update(machine=machine(), started=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    start = time.perf_counter()

    def save():
        figures["wall_s"], figures["load_end"] = time.perf_counter() - start, os.getloadavg()[0]
        json_path.write_text(json.dumps(figures, indent=1, default=str))

    if not args.skip_lengths:
        figures["lengths"] = lengths_part(parameters("notebook"), None, None).to_dict("records")
        save()
    for variant in [v for v in args.variants.split(",") if v]:
        runs, study = train_part(variant, args, figures["tokens"])
        done = set(zip(runs.variant, runs.backbone, runs.task))
        figures["runs"] = [r for r in figures["runs"] if (r["variant"], r["backbone"], r["task"]) not in done]
        figures["runs"] += runs.to_dict("records")
        save()
        log.info("%s:\n%s", variant, runs[["backbone", "task", "steps", "padded_tokens", "dev_accuracy"]])
        if args.ablate:
            verdicts = ablation_part(variant, study, parameters(variant), args.scan)
            figures["verdicts"] = [
                r
                for r in figures["verdicts"]
                if (r["variant"], r["claim"]) not in set(zip(verdicts.variant, verdicts.claim))
            ] + verdicts.to_dict("records")
            save()
    save()
    write_section(Path(args.results), "finetune: notebook 04 offline", report(figures))
    return figures


if __name__ == "__main__":
    main()
