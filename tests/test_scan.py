"""Full scan: equals per-condition evaluation, resumes after a kill, refuses or recomputes bad checkpoints."""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest
import transformers as T
from conftest import tiny_model
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from bertbusters_nb.evaluation import evaluate_conditions, prepare_mlm_eval, row_condition
from bertbusters_nb.evaluation.engine import AblationEngine
from bertbusters_nb.evaluation.scan import CheckpointWarning, checkpoint_name, scan_dims
from bertbusters_nb.model.ablation import Condition

WORDS = [f"w{i}" for i in range(100)]


def _tokenizer():
    vocab = {tok: i for i, tok in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return T.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


_rng = random.Random(1)
TEXTS = [" ".join(_rng.choice(WORDS) for _ in range(_rng.randint(5, 20))) for _ in range(12)]
MODEL = tiny_model("bert")
EVAL_SET = prepare_mlm_eval(_tokenizer(), TEXTS, max_length=24, batch_size=6, device="cpu")
DIMS = list(range(10))


class Killed(Exception):
    pass


def test_scan_equals_evaluate_conditions_and_reports_deltas():
    table = scan_dims(MODEL, EVAL_SET, roles="block_output", layers=(1, 2), dims=DIMS, progress=False)
    conditions = [Condition("none")] + [Condition(f"dim {d}", (d,), layers=(1, 2)) for d in DIMS]
    ref = evaluate_conditions(MODEL, EVAL_SET, conditions, progress=False, prefix_cache=False)
    assert table["dim"].tolist() == DIMS and table["condition"].tolist() == ref["condition"].tolist()[1:]
    np.testing.assert_allclose(table["value"], ref["value"].iloc[1:], atol=1e-5)
    np.testing.assert_allclose(table["intact_value"], ref["value"].iloc[0], atol=1e-6)
    np.testing.assert_allclose(table["delta"], table["value"] - table["intact_value"])
    assert (table["n_sites"] == 2).all() and (table["layers"] == "1 2").all()


def test_killed_scan_resumes_to_the_same_table(tmp_path, monkeypatch):
    full = scan_dims(MODEL, EVAL_SET, dims=DIMS, progress=False)
    path = tmp_path / "scan.json"
    original = AblationEngine._run_plans
    calls = []

    def dies_on_third_chunk(self, plans):
        calls.append(len(plans))
        if len(calls) == 4:  # call 1: the intact model; 2, 3: chunks of 3 dims; 4: killed
            raise Killed
        return original(self, plans)

    monkeypatch.setattr(AblationEngine, "_run_plans", dies_on_third_chunk)
    with pytest.raises(Killed):
        scan_dims(MODEL, EVAL_SET, dims=DIMS, checkpoint_path=path, checkpoint_every=3, progress=False)
    monkeypatch.setattr(AblationEngine, "_run_plans", original)
    saved = json.loads(path.read_text())
    assert [r["dim"] for r in saved["rows"]] == [0, 1, 2, 3, 4, 5]
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files

    resumed_calls = []
    monkeypatch.setattr(
        AblationEngine, "_run_plans", lambda self, plans: resumed_calls.append(len(plans)) or original(self, plans)
    )
    resumed = scan_dims(MODEL, EVAL_SET, dims=DIMS, checkpoint_path=path, checkpoint_every=3, progress=False)
    assert resumed_calls == [3, 1]  # only dims 6..9 were computed again; the intact value came from the file
    pd.testing.assert_frame_equal(resumed, full)
    # a finished checkpoint answers without computing anything
    resumed_calls.clear()
    again = scan_dims(MODEL, EVAL_SET, dims=DIMS, checkpoint_path=path, checkpoint_every=3, progress=False)
    assert resumed_calls == [] and again.equals(full)


@pytest.mark.parametrize("damage", ["truncate", "edit_value", "wrong_schema"])
def test_corrupt_checkpoint_is_recomputed_with_a_warning(tmp_path, damage):
    path = tmp_path / "scan.json"
    full = scan_dims(MODEL, EVAL_SET, dims=DIMS[:4], checkpoint_path=path, progress=False)
    text = path.read_text()
    if damage == "truncate":
        path.write_text(text[: len(text) // 2])
    else:
        saved = json.loads(text)
        if damage == "edit_value":
            saved["rows"][1]["value"] += 1.0  # checksum no longer matches
        else:
            saved["schema"] = "bertbusters_nb.scan/0"
        path.write_text(json.dumps(saved))
    with pytest.warns(CheckpointWarning, match="corrupt"):
        again = scan_dims(MODEL, EVAL_SET, dims=DIMS[:4], checkpoint_path=path, progress=False)
    pd.testing.assert_frame_equal(again, full)
    assert json.loads(path.read_text())["rows"][1]["value"] == full["value"].iloc[1]  # rewritten soundly


def test_checkpoint_of_another_scan_is_refused(tmp_path):
    path = tmp_path / "scan.json"
    scan_dims(MODEL, EVAL_SET, dims=DIMS[:3], checkpoint_path=path, progress=False)
    with pytest.raises(ValueError, match=r"different scan \(differs in \['dims', 'mode'\]\)"):
        scan_dims(MODEL, EVAL_SET, dims=DIMS[:4], mode="mean", checkpoint_path=path, progress=False)


def test_scan_default_dims_cover_the_hidden_size_and_validate():
    table = scan_dims(MODEL, EVAL_SET, roles="head", progress=False)  # one site: cheap, and the cached path
    assert table["dim"].tolist() == list(range(MODEL.config.hidden_size))
    with pytest.raises(ValueError, match="out of range"):
        scan_dims(MODEL, EVAL_SET, dims=[40], progress=False)
    with pytest.raises(ValueError, match="no \\['pre_ffn'\\]"):
        scan_dims(MODEL, EVAL_SET, roles="pre_ffn", progress=False)


def test_notebook_scan_on_the_first_examples_only(tmp_path):
    from bertbusters_nb.evaluation.mlm_effects import run_scan

    small = run_scan(MODEL, EVAL_SET, ["block_output"], 4, str(tmp_path / "scan.json"), max_examples=5)
    reference = scan_dims(MODEL, EVAL_SET.head(5), dims=[0, 1, 2, 3], progress=False)
    np.testing.assert_allclose(small["value"], reference["value"], atol=1e-6)
    assert (small["tokens"] == EVAL_SET.head(5).n_targets).all()
    whole = run_scan(MODEL, EVAL_SET, ["block_output"], 4, str(tmp_path / "scan.json"))
    assert (whole["tokens"] == EVAL_SET.n_targets).all()
    assert len(list(tmp_path.glob("scan-*.json"))) == 2  # one checkpoint per eval set


def test_a_scan_row_reruns_exactly_from_its_stored_condition():
    table = scan_dims(MODEL, EVAL_SET, roles="block_output", layers=(1, 2), dims=DIMS[:4], mode="mean", progress=False)
    for _, row in table.iterrows():
        condition = row_condition(row)
        assert condition == Condition(f"dim {row['dim']}", (row["dim"],), ("block_output",), (1, 2), "mean")
        again = evaluate_conditions(MODEL, EVAL_SET, [condition], progress=False)
        assert again["value"].iloc[0] == row["value"]


def test_checkpoint_dir_names_the_file_by_the_scan(tmp_path):
    """One naming rule: in a checkpoint_dir the file is checkpoint_name(the scan's key); another scan gets
    another file (never the ValueError of a shared path), the same scan resumes from its own."""
    first = scan_dims(MODEL, EVAL_SET, dims=DIMS[:3], checkpoint_dir=tmp_path, progress=False)
    other = scan_dims(MODEL, EVAL_SET, dims=DIMS[:3], mode="mean", checkpoint_dir=tmp_path, progress=False)
    files = sorted(p.name for p in tmp_path.glob("scan-*.json"))
    assert len(files) == 2 and all(len(name) == len("scan-") + 16 + len(".json") for name in files)
    saved = {json.loads((tmp_path / name).read_text())["key"]["mode"]: name for name in files}
    assert saved["zero"] == checkpoint_name(json.loads((tmp_path / saved["zero"]).read_text())["key"])
    again = scan_dims(MODEL, EVAL_SET, dims=DIMS[:3], checkpoint_dir=tmp_path, progress=False)
    pd.testing.assert_frame_equal(again, first)
    assert not other["value"].equals(first["value"])
    with pytest.raises(ValueError, match="not both"):
        scan_dims(MODEL, EVAL_SET, dims=DIMS[:3], checkpoint_dir=tmp_path, checkpoint_path=tmp_path / "x.json")
