"""The shared results cache: a later notebook reads what an earlier one computed, says which run computed it, and
never reads a result whose model, inputs, settings or code differ."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from conftest import tiny_model
from test_evaluation import TOK, random_texts

from bertbusters_nb import shared_results as sr
from bertbusters_nb.analysis.activations import shared_activation_profile, text_batches
from bertbusters_nb.model.edits import ParamFill, edited
from bertbusters_nb.model.fingerprint import weights_digest

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(sr.RESULTS_ENV, str(tmp_path / "results"))
    monkeypatch.setitem(sr._run, "label", "")  # noqa: SLF001 (each test names its own runs)
    return tmp_path / "results"


def counting(table: pd.DataFrame):
    calls = []

    def compute() -> pd.DataFrame:
        calls.append(1)
        out = table.copy()
        out.attrs.update(tokens=12, threshold=6.0)
        return out

    return compute, calls


def test_a_later_run_reads_the_table_and_names_the_run_that_computed_it(cache):
    table = pd.DataFrame({"dim": [0, 1, 2], "mean_abs": [0.1, 2.5, 1e-9]})
    compute, calls = counting(table)
    sr.set_run_label("offline/02_position_consistency")
    first = sr.shared_result("profile", {"model": "m", "n": 3}, compute)
    assert not first.reused and first.provenance == "computed in this run (offline/02_position_consistency)"
    sr.set_run_label("offline/06_across_architectures")
    again = sr.shared_result("profile", {"n": 3, "model": "m"}, compute)  # the same key in another order
    assert calls == [1] and again.reused
    pd.testing.assert_frame_equal(again.table, first.table)
    assert again.table.attrs == {"tokens": 12, "threshold": 6.0}
    assert again.computed_by == "offline/02_position_consistency"
    assert again.provenance.startswith(
        "read from the shared results cache: computed by offline/02_position_consistency"
    )
    other = sr.shared_result("profile", {"model": "m", "n": 4}, compute)  # another key: computed again
    assert calls == [1, 1] and not other.reused


def test_a_damaged_or_foreign_entry_is_computed_again(cache):
    compute, calls = counting(pd.DataFrame({"x": [1.0, 2.0]}))
    first = sr.shared_result("t", {"k": 1}, compute)
    (first.path / "table.parquet").write_bytes(b"not parquet")
    assert not sr.shared_result("t", {"k": 1}, compute).reused and len(calls) == 2
    meta = json.loads((first.path / "meta.json").read_text())
    meta["key"] = {"k": 2}  # a folder that holds another key's result (a digest collision) is never read
    (first.path / "meta.json").write_text(json.dumps(meta))
    assert not sr.shared_result("t", {"k": 1}, compute).reused and len(calls) == 3
    assert sr.shared_result("t", {"k": 1}, compute).reused and len(calls) == 3


def test_off_computes_every_time_and_stores_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(sr.RESULTS_ENV, "off")
    compute, calls = counting(pd.DataFrame({"x": [1.0]}))
    for _ in range(2):
        assert not sr.shared_result("t", {"k": 1}, compute).reused
    assert calls == [1, 1] and sr.results_dir() is None


def test_the_weights_digest_sees_one_edited_scalar_and_its_undo():
    model = tiny_model("bert")
    weight = model.bert.encoder.layer[1].output.dense.weight
    before = weights_digest(model)
    with edited([ParamFill(weight, (3, 5), 0.0)]):
        assert weights_digest(model) != before
    assert weights_digest(model) == before


def test_a_profile_is_shared_only_for_the_same_weights_and_inputs(cache):
    model = tiny_model("bert").eval()
    batches = text_batches(TOK, random_texts(6), max_length=16, batch_size=4)
    first = shared_activation_profile(model, batches)
    again = shared_activation_profile(model, text_batches(TOK, random_texts(6), max_length=16, batch_size=4))
    assert not first.reused and again.reused
    pd.testing.assert_frame_equal(again.table, first.table)
    assert again.table.attrs == first.table.attrs
    other_texts = shared_activation_profile(model, text_batches(TOK, random_texts(6, seed=1), max_length=16))
    assert not other_texts.reused
    norm = model.bert.encoder.layer[0].output.LayerNorm
    with edited([ParamFill(norm.weight, torch.tensor([3]), 0.0)]):  # the same model with one dim disabled
        edited_profile = shared_activation_profile(model, batches)
    assert not edited_profile.reused
    assert not edited_profile.table.mean_abs.equals(first.table.mean_abs)


def test_detection_says_where_its_activation_profile_came_from(cache):
    import bertbusters_nb as bb
    from bertbusters_nb.data import load_texts

    model, tokenizer = bb.load_model("bbmini", head="mlm", device="cpu")
    texts = load_texts("movie_reviews", split="train")[:16]
    sr.set_run_label("offline/00_core_minilm")
    first = bb.detect(model, tokenizer, texts)
    sr.set_run_label("offline/03_mlm_degradation")
    again = bb.detect(model, tokenizer, texts)
    assert first.dims == again.dims and 81 in first.dims
    pd.testing.assert_frame_equal(first.table, again.table)
    assert first.profile_source == "computed in this run (offline/00_core_minilm)"
    assert "computed by offline/00_core_minilm" in again.summary()
    assert bb.detect(model).profile_source == ""  # parameters only: no profile


def test_the_recorder_names_the_run(tmp_path, cache):
    from bertbusters_nb.reporting.recorder import RunRecorder

    RunRecorder(tmp_path / "figures" / "offline" / "07_why_outliers")
    assert sr.run_label() == "offline/07_why_outliers"
    RunRecorder(tmp_path / "figures" / "smoke" / "attempts" / "03_mlm_degradation", config={"profile": "smoke"})
    assert sr.run_label() == "smoke/03_mlm_degradation"  # the runner's attempt folder


def test_two_runs_computing_the_same_result_at_once_both_succeed(cache):
    """Both compute (each waits for the other inside ``compute``, so neither can read the other's), both publish
    atomically, and a third call reads one whole entry."""
    import threading

    both_inside = threading.Barrier(2, timeout=60)
    table = pd.DataFrame({"dim": range(64), "mean_abs": [float(i) for i in range(64)]})

    def compute() -> pd.DataFrame:
        both_inside.wait()
        return table.copy()

    results: list[sr.SharedResult] = []
    threads = [threading.Thread(target=lambda: results.append(sr.shared_result("t", {"k": 1}, compute)))]
    threads.append(threading.Thread(target=lambda: results.append(sr.shared_result("t", {"k": 1}, compute))))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(results) == 2 and not any(r.reused for r in results)
    third = sr.shared_result("t", {"k": 1}, lambda: pytest.fail("the entry should have been read"))
    assert third.reused
    pd.testing.assert_frame_equal(third.table, table)
    assert [p.name for p in third.path.parent.iterdir()] == [third.path.name]  # no temp folder left behind
