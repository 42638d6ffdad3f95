"""The downstream experiment (notebook 04): fine-tune, then disable outlier dims, against random dims.

For every (backbone, task) pair a ``DownstreamStudy`` fine-tunes the backbone (cached, see
``finetuning``), detects the outlier dims of the pre-trained backbone and of the fine-tuned
model, and evaluates on the dev set(s): the intact model; each outlier dim alone, all of them
together, and all of them per layer range; ``draws`` random sets of the same size; and the
single-dim scan over every hidden dim. Each stage is one method returning a tidy table, so a
notebook shows the stages in order; ``summary`` and ``describe`` turn them into one row per
pair and into prose, from the numbers of the run.

The dims disabled are those of the PRE-TRAINED backbone (as in the paper: known outliers of
bert-base, zeroed after fine-tuning); whether fine-tuning keeps them is reported beside.

Example:
    >>> study = DownstreamStudy(["minilm"], ["rt"], FinetuneSettings(epochs=1, max_train_samples=256))
    >>> study.finetune(); study.ablate(); study.random_baseline(draws=20)  # doctest: +SKIP
    >>> study.summary()  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..analysis.baselines import random_dims, rank_against
from ..analysis.detection import detect
from ..analysis.outliers import OutlierReport, find_outliers
from ..analysis.rule import DEFAULT_RULE
from ..evaluation.conditions import outlier_conditions
from ..evaluation.tasks import GLUE_HUB, get_task, load_task, task_columns
from ..finetuning import FinetuneResult, FinetuneSettings, finetune
from ..model.ablation import Condition
from ..model.discovery import find_norm_sites
from ..model.loading import ALIASES, load_model, resolve
from ..model.sites import NormSite, select_sites

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

PAIR_COLUMNS = ["backbone", "task", "split"]


def available_backbones(backbones: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """``(usable, missing)``: aliases and local folders that hold a model now; hub names count as usable.

    ``missing`` maps each unusable backbone to the reason, for the notebook to say (e.g. the
    project's own ``bbmini`` before it has been pre-trained).
    """
    usable, missing = [], {}
    for name in backbones:
        try:
            source = Path(resolve(name))
        except OSError as exc:  # an alias whose asset package is not installed
            missing[name] = str(exc)
            continue
        local = str(name) in ALIASES or source.exists() or str(name).startswith((".", "/", "~"))
        if local and not (source / "config.json").exists():
            missing[name] = f"{source} holds no model yet (no config.json)"
        else:
            usable.append(name)
    return usable, missing


def check_overrides(overrides: Mapping[str, Mapping[str, Any]], settings: FinetuneSettings) -> dict:
    """``overrides`` as a plain dict, after checking that every name is a fine-tuning setting and that the
    values build valid settings (the error names the valid settings)."""
    if not isinstance(overrides, Mapping) or not all(isinstance(v, Mapping) for v in overrides.values()):
        raise ValueError(
            f"overrides must map a backbone to a dict of settings, e.g. "
            f"{{'bbmini': {{'learning_rate': 3e-4}}}} (got {overrides!r})."
        )
    names = {f.name for f in dataclasses.fields(FinetuneSettings)}
    for backbone, changes in overrides.items():
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"Unknown fine-tuning setting(s) {unknown} for {backbone!r}; valid: {sorted(names)}.")
        dataclasses.replace(settings, **changes)  # raises on invalid values
    return {backbone: dict(changes) for backbone, changes in overrides.items()}


def chance_score(task: str, labels: Sequence) -> float:
    """The headline metric of always answering the most frequent label (0.0 for regression tasks)."""
    from ..evaluation.metrics import compute_metrics

    spec = get_task(task)
    if spec.is_regression:
        return 0.0
    values, counts = np.unique(np.asarray(labels), return_counts=True)
    return float(compute_metrics(task, [values[counts.argmax()]] * len(labels), labels)[spec.metric])


def prepare_dev_set(tokenizer: PreTrainedTokenizerBase, data, task: str, max_length: int, batch_size: int, device):
    """A classification eval set of ``data``, examples ordered by length (less padding per batch;
    the metrics do not depend on the order)."""
    from ..evaluation import prepare_classification_eval

    spec = get_task(task)
    texts, pairs, labels = task_columns(data, spec)
    lengths = [len(t) + (len(pairs[i]) if pairs else 0) for i, t in enumerate(texts)]
    order = sorted(range(len(texts)), key=lengths.__getitem__)
    texts, labels = [texts[i] for i in order], [labels[i] for i in order]
    pairs = None if pairs is None else [pairs[i] for i in order]
    return prepare_classification_eval(
        tokenizer, texts, labels, task, text_pairs=pairs, max_length=max_length, batch_size=batch_size, device=device
    ), labels


@dataclass
class Pair:
    """One backbone fine-tuned on one task, with what the study measured on it."""

    backbone: str
    task: str
    tuned: FinetuneResult
    sites: list[NormSite]
    n_layers: int
    hidden: int
    eval_sets: dict = field(default_factory=dict)  # split -> ClassificationEvalSet
    chance: dict = field(default_factory=dict)  # split -> score of the majority-class answer
    before: OutlierReport | None = None
    after: OutlierReport | None = None
    dims: list[int] = field(default_factory=list)  # the one rule's dims on the pre-trained backbone (disabled)
    dims_source: str = ""
    dims_after: list[int] = field(default_factory=list)  # the one rule's dims on the fine-tuned model

    @property
    def label(self) -> str:
        return f"{self.backbone} / {self.task}"


class DownstreamStudy:
    """Fine-tune every backbone on every task, then measure what disabling outlier dims does.

    backbones / tasks: names (see ``loading.ALIASES`` and ``tasks.TASKS``). settings: the
    fine-tuning recipe (``max_eval_samples`` also sizes the dev sets). roles: norm-site roles
    the ablations touch. k / min_share: the descriptive before/after flag tables (``outliers.find_outliers``);
    the dims disabled come from the one rule, ``detection.dims_to_ablate``, on the pre-trained backbone.
    overrides: per-backbone changes to ``settings``, e.g. ``{"bbmini": {"learning_rate": 3e-4}}``
    (a small model trained from scratch wants a larger rate than a distilled one). Overrides of a
    backbone that is not in the study (say, one left out because it is not built) are ignored.
    """

    def __init__(
        self,
        backbones: Sequence[str],
        tasks: Sequence[str],
        settings: FinetuneSettings,
        *,
        roles: Sequence[str] = ("block_output",),
        k: float = DEFAULT_RULE.k,
        min_share: float = DEFAULT_RULE.min_share,
        device: str | None = "auto",
        cache_dir: str | os.PathLike | None = None,
        glue_source: str = GLUE_HUB,
        progress: bool = True,
        overrides: Mapping[str, Mapping[str, object]] | None = None,
    ):
        if not backbones or not tasks:
            raise ValueError("Give at least one backbone and one task.")
        for task in tasks:
            get_task(task)
        self.backbones, self.tasks, self.settings = list(backbones), list(tasks), settings
        self.overrides = check_overrides(overrides or {}, settings)
        unused = sorted(set(self.overrides) - set(self.backbones))
        if unused:
            log.info("overrides for backbones not in this study ignored: %s", unused)
        self.roles, self.k, self.min_share = tuple(roles), float(k), float(min_share)
        self.device, self.cache_dir, self.glue_source, self.progress = device, cache_dir, glue_source, progress
        self.pairs: list[Pair] = []
        self.tables: dict[str, pd.DataFrame] = {}

    def settings_for(self, backbone: str) -> FinetuneSettings:
        """The fine-tuning settings of ``backbone``: the shared ones with its overrides applied."""
        return dataclasses.replace(self.settings, **self.overrides.get(backbone, {}))

    # ------------------------------------------------------------ stage 1
    def finetune(self) -> pd.DataFrame:
        """Fine-tune (or reuse) every pair and evaluate it intact: one row per pair and dev split."""
        from ..evaluation import evaluate

        rows, self.pairs = [], []
        for backbone in self.backbones:
            for task in self.tasks:
                spec, settings = get_task(task), self.settings_for(backbone)
                tuned = finetune(
                    backbone,
                    task,
                    settings,
                    cache_dir=self.cache_dir,
                    device=self.device,
                    glue_source=self.glue_source,
                    progress=self.progress,
                )
                sites = find_norm_sites(tuned.model)
                chosen = select_sites(sites, roles=self.roles)
                pair = Pair(
                    backbone,
                    task,
                    tuned,
                    sites,
                    n_layers=1 + max(s.layer for s in chosen if s.layer is not None),
                    hidden=min(s.size for s in chosen),
                )
                data = load_task(
                    task, max_train_samples=1, max_eval_samples=settings.max_eval_samples, glue_source=self.glue_source
                )
                for split in spec.eval_splits:
                    pair.eval_sets[split], labels = prepare_dev_set(
                        tuned.tokenizer,
                        data[split],
                        task,
                        settings.max_length,
                        settings.eval_batch_size,
                        next(tuned.model.parameters()).device,
                    )
                    pair.chance[split] = chance_score(task, labels)
                    metrics = evaluate(tuned.model, pair.eval_sets[split])
                    rows.append(
                        {
                            "backbone": backbone,
                            "task": task,
                            "split": split,
                            "metric": spec.metric,
                            "value": metrics[spec.metric],
                            "chance": pair.chance[split],
                            "eval_loss": metrics["eval_loss"],
                            "dev_examples": len(labels),
                            "learning_rate": settings.learning_rate,
                            "train_examples": tuned.manifest["train"]["examples"],
                            "train_steps": tuned.manifest["train"]["steps"],
                            "train_loss": tuned.manifest["train"]["train_loss"],
                            "train_seconds": tuned.train_seconds,
                            "reused_cache": tuned.reused,
                            "checkpoint": str(tuned.path),
                        }
                    )
                self.pairs.append(pair)
        self.tables["baseline"] = pd.DataFrame(rows)
        return self.tables["baseline"]

    def _need(self, stage: str) -> None:
        if not self.pairs:
            raise RuntimeError(f"Run finetune() before {stage}().")

    # ------------------------------------------------------------ stage 2
    def outliers(self) -> pd.DataFrame:
        """Outlier dims of the pre-trained backbone and of each fine-tuned model, side by side, per dim."""
        self._need("outliers")
        before_cache: dict[str, OutlierReport] = {}
        rule_cache: dict[str, tuple[list[int], str]] = {}
        frames = []
        for pair in self.pairs:
            if pair.backbone not in before_cache:
                base, base_tokenizer = load_model(pair.backbone, head="base", device=self.device)
                before_cache[pair.backbone] = find_outliers(
                    select_sites(find_norm_sites(base), roles=self.roles), k=self.k, min_share=self.min_share
                )
                found = detect(base, base_tokenizer)  # the one rule, on the pre-trained backbone
                rule_cache[pair.backbone] = found.dims, found.rule
            pair.before = before_cache[pair.backbone]
            pair.after = find_outliers(select_sites(pair.sites, roles=self.roles), k=self.k, min_share=self.min_share)
            dims, rule = rule_cache[pair.backbone]
            pair.dims = list(dims)
            pair.dims_after = list(detect(pair.tuned.model, pair.tuned.tokenizer).dims)  # the same rule, fine-tuned
            pair.dims_source = (
                f"pre-trained backbone, detection.dims_to_ablate ({rule})"
                if rule != "strongest candidates"
                else "no dim met the rule on the backbone; its strongest candidates instead"
            )
            merged = pair.before.per_dim.merge(
                pair.after.per_dim, on="dim", how="outer", suffixes=("_before", "_after")
            )
            merged = merged.fillna({"sites_flagged_before": 0, "sites_flagged_after": 0})
            merged["outlier_before"] = merged.dim.isin(pair.before.dims)
            merged["outlier_after"] = merged.dim.isin(pair.after.dims)
            merged["disabled"] = merged.dim.isin(pair.dims)
            merged.insert(0, "task", pair.task)
            merged.insert(0, "backbone", pair.backbone)
            frames.append(
                merged.sort_values(["outlier_before", "outlier_after", "sites_flagged_before"], ascending=False)
            )
        self.tables["outliers"] = pd.concat(frames, ignore_index=True)
        self.tables["outliers"][["sites_flagged_before", "sites_flagged_after"]] = self.tables["outliers"][
            ["sites_flagged_before", "sites_flagged_after"]
        ].astype(int)
        return self.tables["outliers"]

    def outlier_sets(self) -> pd.DataFrame:
        """One row per pair: the one rule's dims (``detection.detect``) on the pre-trained backbone (``before``,
        the dims disabled) and on the fine-tuned model (``after``), and which survived; beside them, labelled as
        the different criterion they are, the block-output parameters alone (``params_before``/``params_after``:
        beyond ``k`` sigma in more than ``min_share`` of the block-output norms, the flag table's criterion)."""
        self._need("outlier_sets")
        if "outliers" not in self.tables:
            self.outliers()
        rows = []
        for p in self.pairs:
            if p.before is None or p.after is None:  # outliers() sets both on every pair
                raise RuntimeError(f"No outlier reports for {p.backbone} on {p.task}: run outliers() first.")
            rows.append(
                {
                    "backbone": p.backbone,
                    "task": p.task,
                    "before": " ".join(map(str, p.dims)),
                    "after": " ".join(map(str, p.dims_after)),
                    "kept": " ".join(map(str, sorted(set(p.dims) & set(p.dims_after)))),
                    "all_kept": _all_kept(p),
                    "disabled_because": p.dims_source,
                    "params_before": " ".join(map(str, p.before.dims)),
                    "params_after": " ".join(map(str, p.after.dims)),
                }
            )
        return pd.DataFrame(rows)

    # ------------------------------------------------------------ stage 3
    def _evaluate(self, pair: Pair, conditions: Sequence[Condition], name: str) -> pd.DataFrame:
        from ..evaluation import evaluate_conditions

        frames = []
        for split, eval_set in pair.eval_sets.items():
            table = evaluate_conditions(
                pair.tuned.model, eval_set, conditions, sites=pair.sites, progress=self.progress
            )
            intact = self.tables["baseline"].set_index(PAIR_COLUMNS).loc[(pair.backbone, pair.task, split), "value"]
            table.insert(0, "split", split)
            table.insert(0, "task", pair.task)
            table.insert(0, "backbone", pair.backbone)
            table["intact_value"] = float(intact)
            table["relative_change"] = table["value"] / table["intact_value"] - 1
            frames.append(table)
        log.info("%s: %s done", pair.label, name)
        return pd.concat(frames, ignore_index=True)

    def ablate(self, layer_parts: int = 3) -> pd.DataFrame:
        """Each outlier dim alone, all together, and all together per layer range, on every dev split."""
        self._need("ablate")
        if "outliers" not in self.tables:
            self.outliers()
        frames = [
            self._evaluate(
                p, outlier_conditions(p.dims, self.roles, n_layers=p.n_layers, parts=layer_parts), "ablations"
            )
            for p in self.pairs
        ]
        self.tables["ablations"] = pd.concat(frames, ignore_index=True)
        return self.tables["ablations"]

    def random_baseline(self, draws: int = 20, seed: int = 0) -> pd.DataFrame:
        """``draws`` random sets of as many dims as disabled (outliers excluded), all layers, per pair."""
        self._need("random_baseline")
        if draws < 20:
            log.warning("only %d random draws; the comparison needs 20 or more to say much", draws)
        if "outliers" not in self.tables:
            self.outliers()
        frames = []
        for p in self.pairs:
            sets = random_dims(p.hidden, len(p.dims), draws, exclude=p.dims, seed=seed)
            conditions = [Condition(f"random {i}", dims, self.roles) for i, dims in enumerate(sets)]
            frames.append(self._evaluate(p, conditions, "random draws"))
        self.tables["random"] = pd.concat(frames, ignore_index=True)
        return self.tables["random"]

    # ------------------------------------------------------------ stage 4
    def scan(
        self,
        tasks: Sequence[str] | None = None,
        max_samples: int | None = None,
        every: int = 1,
        checkpoint_dir: str | os.PathLike | None = None,
        method: str = "exact",
        top_k: int = 16,
    ) -> pd.DataFrame:
        """Every hidden dim disabled alone (all layers, ``roles``), on the first dev split of each pair.

        tasks: limit the scan to these tasks (None: all). max_samples: scan a seeded subset of the
        dev set of this size (the scan costs one dev pass per hidden dim). every: scan every n-th
        dim only, plus the outlier dims (1: every dim, the paper's scan; more: a quick look).
        checkpoint_dir: keep resumable partial results there.

        ``method="screen"``: every dim's effect on the dev loss estimated at once (``screen.screened_scan_dims``), the
        first ``top_k`` dims of the screen's check order and the outlier dims evaluated exactly with every metric
        (``value_kind`` says which rows are exact; estimates have no score, and ``damage_rank`` ranks exact rows
        first); ``every`` does not apply (the screen costs the same for every dim).
        """
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer (got {every!r}).")
        if method not in ("exact", "screen"):
            raise ValueError(f"Unknown scan method {method!r}; pick 'exact' (one dev pass per dim) or 'screen'.")
        from ..checks import count
        from ..evaluation import evaluate, scan_dims
        from ..evaluation.screen import screened_scan_dims

        max_samples = count("max_samples", max_samples, zero_means="the whole dev set", none_ok=True) or None

        self._need("scan")
        frames = []
        for p, split, eval_set in self._scan_dev_sets(tasks, max_samples):
            # the checkpoint is named by the scan's key (evaluation.scan.checkpoint_name), so a changed run
            # never meets a checkpoint of another scan
            options = dict(roles=self.roles, checkpoint_dir=checkpoint_dir, progress=self.progress, sites=p.sites)
            if method == "screen":
                table = screened_scan_dims(p.tuned.model, eval_set, top_k=top_k, also_check=p.dims, **options)
            else:
                table = scan_dims(
                    p.tuned.model, eval_set, dims=sorted(set(range(0, p.hidden, every)) | set(p.dims)), **options
                )
            table.insert(0, "split", split)
            table.insert(0, "task", p.task)
            table.insert(0, "backbone", p.backbone)
            table["outlier"] = table.dim.isin(p.dims)
            table["intact_loss"] = float(evaluate(p.tuned.model, eval_set)["eval_loss"])
            table["loss_delta"] = table["eval_loss"] - table["intact_loss"]
            # 1 = most damaging: the largest rise in dev loss (on a small subset the score moves in steps of one
            # example and ties; the loss moves with every logit), ties broken by the lower score; exact rows first
            table["_estimated"] = table["value_kind"].eq("estimate")
            order = table.sort_values(
                ["_estimated", "loss_delta", "value"], ascending=[True, False, True], kind="mergesort"
            ).index
            table = table.drop(columns="_estimated")
            table.loc[order, "damage_rank"] = np.arange(1, len(table) + 1)
            table["damage_rank"] = table["damage_rank"].astype(int)
            frames.append(table)
        if not frames:
            raise ValueError(f"No pair to scan: tasks={tasks} matches none of {self.tasks}.")
        self.tables["scan"] = pd.concat(frames, ignore_index=True)
        return self.tables["scan"]

    def _scan_dev_sets(self, tasks: Sequence[str] | None, max_samples: int | None):
        """(pair, split, eval set) for each pair of ``tasks`` (None: all): the first dev split, its first
        ``max_samples`` examples (None: as many as the ablations use)."""
        if "outliers" not in self.tables:
            self.outliers()
        for p in self.pairs:
            if tasks is not None and p.task not in tasks:
                continue
            spec, settings = get_task(p.task), self.settings_for(p.backbone)
            split = spec.eval_splits[0]
            data = load_task(
                p.task,
                max_train_samples=1,
                max_eval_samples=max_samples or settings.max_eval_samples,
                glue_source=self.glue_source,
            )[split]
            eval_set, _ = prepare_dev_set(
                p.tuned.tokenizer,
                data,
                p.task,
                settings.max_length,
                settings.eval_batch_size,
                next(p.tuned.model.parameters()).device,
            )
            yield p, split, eval_set

    def screened_scan(self, tasks: Sequence[str] | None = None, top_k: int = 16) -> pd.DataFrame:
        """Every hidden dim's effect on the dev loss of the whole dev set, estimated (``screen.screened_scan``),
        with the top ``top_k`` by |estimate| and the outlier dims checked exactly (``value_kind`` says which).

        The exact scan costs one dev pass per dim, which is why ``scan`` runs on a subset; the screen
        costs a few passes for all dims, so it runs on the same dev examples as the ablations.
        """
        from ..evaluation.screen import screened_scan

        self._need("screened_scan")
        frames = []
        for p, split, eval_set in self._scan_dev_sets(tasks, None):
            table = screened_scan(
                p.tuned.model,
                eval_set,
                roles=self.roles,
                top_k=top_k,
                also_check=p.dims,
                sites=p.sites,
                progress=self.progress,
            )
            for column, value in (("split", split), ("task", p.task), ("backbone", p.backbone)):
                table.insert(0, column, value)
            table["outlier"] = table.dim.isin(p.dims)
            table["examples"] = len(eval_set)
            frames.append(table)
        if not frames:
            raise ValueError(f"No pair to scan: tasks={tasks} matches none of {self.tasks}.")
        self.tables["screened_scan"] = pd.concat(frames, ignore_index=True)
        return self.tables["screened_scan"]

    # ------------------------------------------------------------ summary
    def summary(self) -> pd.DataFrame:
        """One row per pair and dev split: intact, outliers disabled, random draws, layer ranges, scan."""
        for stage in ("baseline", "ablations", "random"):
            if stage not in self.tables:
                raise RuntimeError(f"Run the {stage} stage before summary().")
        rows = []
        for p in self.pairs:
            for split in p.eval_sets:
                rows.append(self._summary_row(p, split))
        return pd.DataFrame(rows)

    def _summary_row(self, p: Pair, split: str) -> dict:
        pick = lambda t: t[(t.backbone == p.backbone) & (t.task == p.task) & (t.split == split)]  # noqa: E731
        ablations, random = pick(self.tables["ablations"]), pick(self.tables["random"])
        intact = float(ablations.loc[ablations.condition == "none", "value"].iloc[0])
        together = float(ablations.loc[ablations.condition == "outliers: all", "value"].iloc[0])
        stats = rank_against(together, random["value"])
        single = ablations[ablations.condition.str.fullmatch(r"single: \d+")]
        ranges = ablations[ablations.condition.str.startswith("outliers: layers")]
        row = {
            "backbone": p.backbone,
            "task": p.task,
            "split": split,
            "metric": get_task(p.task).metric,
            "chance": p.chance[split],
            "intact": intact,
            "disabled_dims": " ".join(map(str, p.dims)),
            "outliers_disabled": together,
            "relative_change": _relative(together, intact),
            "worst_single_outlier": float(single["value"].min()) if len(single) else float("nan"),
            "worst_layer_range": (ranges.loc[ranges["value"].idxmin(), "layers"] if len(ranges) else ""),
            "random_mean": stats["random_mean"],
            "random_std": stats["random_std"],
            "random_min": stats["random_min"],
            "random_max": stats["random_max"],
            "draws": stats["draws"],
            "random_relative_change": _relative(stats["random_mean"], intact),
            "worse_than_every_draw": bool(together < stats["random_min"]),
            "share_of_draws_as_damaging": float((random["value"] <= together).mean()),
            "outliers_kept_after_finetuning": _all_kept(p),
        }
        scan = self.tables.get("scan")
        if scan is not None:
            mine = scan[(scan.backbone == p.backbone) & (scan.task == p.task) & (scan.split == split)]
            if len(mine):
                worst = mine.loc[mine["damage_rank"].idxmin()]
                row.update(
                    {
                        "scan_intact": float(mine.intact_value.iloc[0]),
                        "scan_examples": int(mine.examples.iloc[0]),
                        "scan_intact_loss": float(mine.intact_loss.iloc[0]),
                        "scan_most_damaging_dim": int(worst.dim),
                        "scan_most_damaging_value": float(worst.value),
                        "scan_most_damaging_loss_delta": float(worst.loss_delta),
                        "scan_most_damaging_is_outlier": bool(worst.outlier),
                        "scan_outlier_ranks": " ".join(str(int(r)) for r in mine[mine.outlier].damage_rank),
                        "scan_dims": len(mine),
                        "scan_exact_dims": int(mine["value_kind"].eq("exact").sum()),
                        # a screened scan's depth of certified ranks (NaN for an exact scan: every row is exact)
                        "scan_certified_top": (
                            int(mine["certified_top"].iloc[0]) if "certified_top" in mine else float("nan")
                        ),
                    }
                )
        return row


def _all_kept(pair: Pair) -> bool:
    """Whether the rule's dims of the backbone are all still the rule's dims after fine-tuning."""
    return bool(pair.dims) and set(pair.dims) <= set(pair.dims_after)


def _relative(value: float, intact: float) -> float:
    """``value / intact - 1``; NaN when the intact score is 0 (an MCC or F1 of 0: a fine-tune that predicts one
    class), where a relative change has no meaning (it raised ZeroDivisionError in the paper profile's CoLA)."""
    return value / intact - 1 if intact != 0 else float("nan")
