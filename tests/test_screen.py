"""Screened scans: gradient estimates of every dim's effect, exact checks of the top k, the embedding objective."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_model
from test_evaluation import TOK, random_texts

from bertbusters_nb.evaluation import prepare_classification_eval, prepare_mlm_eval, scan_dims
from bertbusters_nb.evaluation.embeddings import sentence_embeddings
from bertbusters_nb.evaluation.engine import AblationEngine
from bertbusters_nb.evaluation.screen import (
    agreement,
    estimate_effects,
    exact_effects,
    screen_ranking,
    screened_scan,
)
from bertbusters_nb.evaluation.sets import prepare_causal_eval, prepare_embedding_eval
from bertbusters_nb.model.ablation import Condition, fingerprints_equal, state_fingerprint
from bertbusters_nb.model.discovery import find_norm_sites
from bertbusters_nb.model.sites import select_sites
from bertbusters_nb.reporting import claims

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = random_texts(16, seed=3)


def mlm_set():
    return prepare_mlm_eval(TOK, TEXTS, seed=1, batch_size=8)


def test_first_order_estimate_is_the_derivative_of_the_exact_effect_along_the_edit():
    """The estimate is grad . delta: a tiny scaled edit (t * delta) changes the loss by t * estimate."""
    model, es = tiny_model("bert"), mlm_set()
    sites = select_sites(find_norm_sites(model), roles="block_output")
    est = estimate_effects(model, es).set_index("dim")["estimate"]
    engine = AblationEngine(model, es, prefix_cache=False, autocast=None)
    base = engine.evaluate()["eval_loss"]
    t = 1e-3
    for d in (0, 5):
        with torch.no_grad():
            saved = [(p, p.data[d].clone()) for s in sites for p in (s.weight, s.bias)]
            for p, v in saved:
                p.data[d] = v * (1 - t)  # move t of the way to zero
        try:
            moved = engine.evaluate()["eval_loss"]
        finally:
            with torch.no_grad():
                for p, v in saved:
                    p.data[d] = v
        assert (moved - base) / t == pytest.approx(est[d], rel=0.05, abs=1e-5)


def test_screened_scan_checks_top_k_exactly_and_says_which_value_each_row_holds():
    model, es = tiny_model("bert"), mlm_set()
    before = state_fingerprint(model)
    table = screened_scan(model, es, roles="block_output", top_k=4, progress=False, autocast=None)
    assert fingerprints_equal(before, state_fingerprint(model))  # every edit undone bit for bit
    assert len(table) == 32 and sorted(table["dim"]) == list(range(32))
    exact_rows = table[table["value_kind"] == "exact"]
    assert len(exact_rows) == 4 and set(table["value_kind"]) == {"exact", "estimate"}
    assert set(exact_rows["estimate_rank"]) == {1, 2, 3, 4}  # the 4 largest estimates were checked
    assert table["exact"].isna().sum() == 28
    assert table["value_kind"].tolist()[:4] == ["exact"] * 4  # checked dims come first, by exact effect
    assert exact_rows["exact"].is_monotonic_decreasing
    scan = scan_dims(model, es, dims=exact_rows["dim"].tolist(), progress=False, autocast=None).set_index("dim")
    for _, row in exact_rows.iterrows():  # the exact values are the scan's deltas
        assert row["exact"] == pytest.approx(scan.loc[row["dim"], "delta"], abs=1e-9)
    assert (scan["value_kind"] == "exact").all()
    assert screen_ranking(table, 2) == exact_rows["dim"].tolist()[:2]


@pytest.mark.parametrize("method", ["midpoint", "integrated", "second_order"])
def test_variants_run_and_restore_the_model(method):
    model, es = tiny_model("bert"), mlm_set()
    before = state_fingerprint(model)
    est = estimate_effects(model, es, method=method, steps=2, probes=2)
    assert fingerprints_equal(before, state_fingerprint(model))
    assert est["estimate"].notna().all() and len(est) == 32 and (est["method"] == method).all()


def test_second_order_recovers_a_quadratic_effect_better_than_first_order():
    """On a small edit set with curvature, adding the Hessian term moves the estimate towards the exact value."""
    model, es = tiny_model("bert"), mlm_set()
    exact = exact_effects(model, es, progress=False, autocast=None).set_index("dim")["exact"]
    first = estimate_effects(model, es, method="gradient").set_index("dim")["estimate"]
    second = estimate_effects(model, es, method="second_order", probes=8).set_index("dim")["estimate"]
    assert (second - exact).abs().mean() < (first - exact).abs().mean()


def test_classification_and_causal_objectives():
    gpt2 = tiny_model("gpt2")
    from bertbusters_nb.evaluation import prepare_causal_eval

    causal = prepare_causal_eval(TOK, TEXTS[:8], batch_size=4)
    est = estimate_effects(gpt2, causal, roles="pre_ffn")
    assert len(est) == 32 and (est["objective"] == "eval_loss").all() and est["estimate"].abs().sum() > 0
    import transformers as T
    from conftest import TINY

    torch.manual_seed(0)
    clf = T.BertForSequenceClassification(T.BertConfig(**TINY, num_labels=2)).eval()
    labelled = prepare_classification_eval(TOK, TEXTS, [i % 2 for i in range(16)], task="rt", batch_size=8)
    table = screened_scan(clf, labelled, top_k=2, progress=False, autocast=None)
    assert (table["value_kind"] == "exact").sum() == 2 and table["effect"].notna().all()


def test_embedding_objective_is_one_minus_cosine_to_the_intact_embedding(minilm):
    model, tokenizer = minilm
    texts = ["a fine film with a dull middle", "the plot went nowhere", "great acting, weak script"]
    es = prepare_embedding_eval(tokenizer, texts, batch_size=2)
    exact = exact_effects(model, es, dims=[0, 223], progress=False, autocast=None).set_index("dim")
    sites = find_norm_sites(model)
    intact = sentence_embeddings(model, tokenizer, texts)
    for d in (0, 223):
        with Condition("d", (d,)).apply(sites):
            ablated = sentence_embeddings(model, tokenizer, texts)
        expected = float((1 - torch.nn.functional.cosine_similarity(intact, ablated, dim=-1)).mean())
        assert exact.loc[d, "exact"] == pytest.approx(expected, abs=1e-5)
    est = estimate_effects(model, es, probes=2)
    assert (est["method"] == "gauss_newton").all() and (est["estimate"] >= 0).all()


def test_agreement_measures_rank_and_recall():
    exact = [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]
    out = agreement([6, 5, 4, 3, 2, 1], exact, top=(2,), within=(2, 3))
    assert out == {"spearman": pytest.approx(1.0), "recall_top2_in2": 1.0, "recall_top2_in3": 1.0}
    flipped = agreement([0, 1, 2, 3, 4, 5], exact, top=(2,), within=(2,))
    assert flipped["spearman"] == pytest.approx(-1.0) and flipped["recall_top2_in2"] == 0.0


def test_bad_arguments_name_the_fix():
    model, es = tiny_model("bert"), mlm_set()
    with pytest.raises(ValueError, match="Unknown method"):
        estimate_effects(model, es, method="newton")
    with pytest.raises(ValueError, match="embedding sets"):
        estimate_effects(model, es, method="gauss_newton")
    with pytest.raises(ValueError, match="top_k"):
        screened_scan(model, es, top_k=-1)


def test_screen_summary_names_checked_dims_and_the_exact_scans_top_dims_found():
    model, es = tiny_model("bert"), mlm_set()
    table = screened_scan(model, es, top_k=3, progress=False, autocast=None)
    scan = scan_dims(model, es, progress=False, autocast=None)
    text = claims.screen_summary(table, scan, n=5)
    first = int(table["dim"].iloc[0])
    assert f"{first} (" in text and "top 3 checked exactly" in text and "on 16 examples" in text
    exact_top = scan.nlargest(5, "delta")["dim"].tolist()
    found = len(set(exact_top) & set(table.loc[table["value_kind"] == "exact", "dim"]))
    assert f"{found} {'is' if found == 1 else 'are'} among the screen's checked dims" in text


@pytest.mark.parametrize("arch,roles,layers", [("bert", "block_output", (1,)), ("llama", "pre_ffn", (1,))])
def test_estimate_from_the_cached_prefix_equals_the_full_forwards(arch, roles, layers):
    """Sites in later layers: the screen runs from the engine's cached intact state there (no gradient
    through the layers before); the estimates are those of the full forward and backward."""
    model = tiny_model(arch)
    es = (
        prepare_mlm_eval(TOK, TEXTS, seed=1, batch_size=8)
        if arch == "bert"
        else prepare_causal_eval(TOK, TEXTS, batch_size=8)
    )
    cached = AblationEngine(model, es, autocast=None)
    assert cached.stack is not None  # the prefix cache is on for this model
    full = AblationEngine(model, es, prefix_cache=False, autocast=None)
    for method in ("gradient", "fisher"):
        a = estimate_effects(model, es, roles=roles, layers=layers, method=method, engine=cached)
        b = estimate_effects(model, es, roles=roles, layers=layers, method=method, engine=full)
        assert a["estimate"].tolist() == pytest.approx(b["estimate"].tolist(), rel=1e-4, abs=1e-7)


def test_also_check_adds_exact_rows_for_the_given_dims():
    model, es = tiny_model("bert"), mlm_set()
    table = screened_scan(model, es, top_k=2, also_check=[7, 30], progress=False, autocast=None)
    exact = table[table["value_kind"] == "exact"]
    assert {7, 30} <= set(exact["dim"]) and len(exact) == len({7, 30} | set(exact.nsmallest(2, "estimate_rank")["dim"]))
    with pytest.raises(ValueError):
        screened_scan(model, es, top_k=2, also_check=[99], progress=False)


def test_check_order_takes_estimate_abs_and_energy_lists_in_turn():
    import pandas as pd

    from bertbusters_nb.evaluation.screen import check_order

    frame = pd.DataFrame(
        {"dim": [0, 1, 2, 3, 4], "estimate": [0.5, -2.0, 0.1, 0.0, 0.3], "energy": [1.0, 2.0, 3.0, 9.0, 0.0]}
    )
    assert check_order(frame, "estimate") == [0, 4, 2, 3, 1]
    assert check_order(frame, "abs") == [1, 0, 4, 2, 3]
    assert check_order(frame, "energy") == [3, 2, 1, 0, 4]
    assert check_order(frame) == [0, 1, 3, 4, 2]  # 0 (estimate), 1 (abs), 3 (energy), 4 (estimate), 2 (energy)
    with pytest.raises(ValueError, match="rank_by"):
        check_order(frame, "size")


def test_energy_is_the_squared_output_of_the_chosen_sites_over_real_tokens():
    from bertbusters_nb.model.hooks import Trace, first_tensor

    model, es = tiny_model("bert"), mlm_set()
    sites = select_sites(find_norm_sites(model), roles="block_output")
    est = estimate_effects(model, es, roles="block_output", prefix_cache=False)
    expected = torch.zeros(sites[0].size, dtype=torch.float64)
    with torch.no_grad(), Trace(model, {s.name: s.module for s in sites}) as trace:
        for batch in es.batches(es.batch_size):
            before = {s.name: len(trace[s.name].calls) for s in sites}
            model(**batch.inputs)
            mask = batch.inputs["attention_mask"].bool()
            for s in sites:
                for call in trace[s.name].calls[before[s.name] :]:
                    expected += (first_tensor(call.output).double()[mask] ** 2).sum(0)
    assert est["energy"].tolist() == pytest.approx(expected.tolist(), rel=1e-6)


def test_every_screened_row_stores_the_condition_that_reproduces_its_exact_value():
    from bertbusters_nb.evaluation.tables import row_condition

    model, es = tiny_model("bert"), mlm_set()
    table = screened_scan(model, es, top_k=2, progress=False, autocast=None)
    engine = AblationEngine(model, es, autocast=None)
    intact = engine.evaluate()["eval_loss"]
    for _, row in table[table["value_kind"] == "exact"].iterrows():
        condition = row_condition(row)
        assert condition.dims == (int(row["dim"]),)
        assert engine.evaluate(condition)["eval_loss"] - intact == pytest.approx(row["exact"], abs=1e-9)
    assert table["spec"].notna().all()


def test_unsettled_dims_are_those_whose_error_bound_reaches_the_exact_top():
    """The bound is the estimate plus the largest underestimate per unit of energy measured on verified dims."""
    import pandas as pd

    from bertbusters_nb.evaluation.screen import error_per_energy, unsettled

    estimates = pd.DataFrame(
        {"dim": range(8), "estimate": [5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.4, 0.1], "energy": [10, 8, 6, 4, 2, 1, 30, 1.0]}
    )
    verified = pd.DataFrame({"dim": [0, 1, 2, 3, 4], "exact": [6.0, 4.0, 3.0, 2.0, 1.0]})
    assert error_per_energy(estimates, verified) == pytest.approx(0.1)  # dim 0: under by 1.0 at energy 10
    # 5th largest exact is 1.0; bounds: dim 5: 0.5 + 0.1, dim 6: 0.4 + 3.0 (a large edit), dim 7: 0.1 + 0.1
    assert unsettled(estimates, verified, n_top=5) == [6]
    assert unsettled(estimates, verified.head(4), n_top=5) == [4, 5, 6, 7]  # fewer than n_top verified
    exact_all = pd.concat([verified, pd.DataFrame({"dim": [6], "exact": [0.2]})], ignore_index=True)
    assert unsettled(estimates, exact_all, n_top=5) == []


def test_adaptive_screen_verifies_until_the_exact_top_five_is_found():
    """top_k='auto' stops only when no unverified dim can reach the exact top 5; the exact scan of every dim
    then has its top 5 among the verified dims, and the rows of verified dims hold the exact values."""
    from bertbusters_nb.evaluation.screen import AUTO_TOP, unsettled

    model, es = tiny_model("bert"), mlm_set()
    table = screened_scan(model, es, top_k="auto", progress=False, autocast=None)
    verified = table[table["value_kind"] == "exact"]
    assert table.attrs["checked_in_order"] == len(verified) and table.attrs["error_per_energy"] >= 0
    assert sorted(table.loc[table["value_kind"] == "exact", "estimate_rank"]) == list(range(1, len(verified) + 1))
    everything = exact_effects(model, es, progress=False, autocast=None)
    top = set(everything.nlargest(AUTO_TOP, "exact")["dim"])
    assert top <= set(verified["dim"])
    merged = verified.merge(everything, on="dim", suffixes=("", "_all"))
    assert merged["exact"].tolist() == pytest.approx(merged["exact_all"].tolist(), abs=1e-9)
    if len(verified) < len(table):  # it stopped early: nothing unverified could still reach the top
        assert unsettled(table[["dim", "estimate", "energy"]], verified[["dim", "exact"]]) == []


def test_a_screened_mlm_scan_has_the_exact_scans_columns_and_ranks_only_exact_rows(tmp_path):
    from bertbusters_nb.evaluation.mlm_effects import run_scan
    from bertbusters_nb.reporting import plots

    model, es = tiny_model("bert"), mlm_set()
    scan = run_scan(model, es, ["block_output"], 0, tmp_path, method="screen", also_check=[30])
    exhaustive = run_scan(model, es, ["block_output"], 0, tmp_path)
    assert sorted(scan["dim"]) == list(range(32)) and set(scan["value_kind"]) == {"exact", "estimate"}
    exact = scan[scan["value_kind"] == "exact"].set_index("dim")
    assert 30 in exact.index and len(exact) == 17  # the first 16 of the check order and the outlier dim
    truth = exhaustive.set_index("dim")
    assert exact["eval_loss"].to_numpy() == pytest.approx(truth.loc[exact.index, "eval_loss"].to_numpy(), abs=1e-5)
    assert exact["delta"].to_numpy() == pytest.approx(truth.loc[exact.index, "delta"].to_numpy(), abs=1e-5)
    assert scan["intact_eval_loss"].iloc[0] == pytest.approx(truth["intact_eval_loss"].iloc[0], abs=1e-6)
    text = claims.scan_ranks(scan, [30], "eval_loss")
    rank = int(exact["eval_loss"].rank(ascending=False, method="first")[30])
    assert "17 evaluated exactly" in text and f"dim 30 ranks {rank}" in text and "of 32" not in text
    from bertbusters_nb.evaluation.screen import certified_top

    certified = certified_top(scan[["dim", "estimate", "energy"]], exact.reset_index()[["dim", "exact"]])
    assert scan.attrs["certified_top"] == certified
    assert (f"exact top {certified}:" in text) if certified else ("cannot rule the other dims out" in text)
    assert "ranks" in claims.scan_ranks(exhaustive, [30]) and "of 32" in claims.scan_ranks(exhaustive, [30])
    assert plots.scan_plot(scan, "eval_loss", highlight=[30]).axes[0].get_legend() is not None
    with pytest.raises(ValueError, match="scan method"):
        run_scan(model, es, ["block_output"], 0, tmp_path, method="fast")


def test_adaptive_checks_go_to_the_highest_bound_and_stop_when_settled():
    """After the first n_top dims of the check order, each round verifies the unsettled dims whose bound is highest
    (not the next ones in the check order), and nothing is verified once no unverified dim can reach the top."""
    import pandas as pd

    from bertbusters_nb.evaluation.screen import unsettled, verify_until_settled

    estimates = pd.DataFrame(
        {
            "dim": range(10),
            "estimate": [5.0, 4.0, 3.0, 2.0, 1.0, 0.9, 0.8, 0.7, 0.6, 0.1],
            "energy": [10, 8, 6, 4, 2, 1, 1, 1, 1, 40.0],
        }
    )
    truth = {0: 6.0, 1: 4.0, 2: 3.0, 3: 2.0, 4: 1.0, 5: 0.9, 6: 0.8, 7: 0.7, 8: 0.6, 9: 3.5}
    asked: list[list[int]] = []

    def verify(dims):
        asked.append(list(dims))
        return pd.DataFrame({"dim": dims, "exact": [truth[d] for d in dims]})

    exact, ratio = verify_until_settled(estimates, list(range(10)), verify, n_top=5, step=1)
    # dim 9's bound (0.1 + 0.1 * 40) is the only one that reaches the 5th effect (1.0): it is checked next, and
    # then (the 5th effect now 2.0) nothing unverified can reach the top
    assert asked == [[0, 1, 2, 3, 4], [9]]
    assert exact["dim"].tolist() == [0, 1, 2, 3, 4, 9] and ratio == pytest.approx(0.1)
    assert unsettled(estimates, exact, n_top=5) == []


def test_certification_floor_counts_what_the_tightest_valid_ratio_leaves_open():
    import pandas as pd

    from bertbusters_nb.evaluation.screen import certification_floor

    estimates = pd.DataFrame(
        {"dim": range(8), "estimate": [5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.4, 0.1], "energy": [10, 8, 6, 4, 2, 1, 30, 1.0]}
    )
    exact = pd.DataFrame({"dim": range(8), "exact": [6.0, 4.0, 3.0, 2.0, 1.0, 0.6, 0.4, 0.1]})
    # outside the top 5 the largest underestimate per energy is dim 5's 0.1: bounds 0.6, 3.4 (dim 6), 0.2
    assert certification_floor(estimates, exact, n_top=5) == 6
    exact.loc[exact["dim"] == 7, "exact"] = 0.2  # dim 7 now under by 0.1 per energy unit too: same ratio
    assert certification_floor(estimates, exact, n_top=5) == 6
    exact.loc[exact["dim"] == 5, "exact"] = 0.95  # ratio 0.45: bounds 0.95 (dim 5, short of 1.0), dim 6, 0.55
    assert certification_floor(estimates, exact, n_top=5) == 6
    exact.loc[exact["dim"] == 7, "exact"] = 0.9  # ratio 0.8: dim 5 reaches 1.3, dim 7 0.9 (< 1.0), dim 6 yes
    assert certification_floor(estimates, exact, n_top=5) == 7


def test_the_screen_benchmarks_report_states_the_totals_and_floors_it_was_given():
    """The report's total over the models is the sum of their exact scans over the sum of their screened scans, and
    each row shows its certification floor as checks and dims/floor (benchmarks/screen_benchmark.py)."""
    import argparse
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import screen_benchmark

    def row(dims, exact_s, screened_s, floor):
        return {
            "objective": "mlm loss",
            "sites": "block_output",
            "examples": 4,
            "tokens": 64,
            "dims": dims,
            "checked": 16,
            "exact_cpu_s": exact_s,
            "screened_cpu_s": screened_s,
            "screen_method": "gradient",
            "rank_by": "mixed",
            "speedup": exact_s / screened_s,
            "speedup_ceiling": dims / 16,
            "screened_top5_recall": 1.0,
            "certification_floor": floor,
            "error_per_energy": None,
            "methods": [],
        }

    figures = {
        "machine": "test",
        "measured": "2026-12-04 11:35",
        "scan": {"a": row(256, 30.0, 3.0, 128), "b": row(576, 90.0, 3.0, 36), "c": {"error": "not here"}},
    }
    text = screen_benchmark.report(figures, argparse.Namespace(top_k=16, threads=1))
    assert "measured 2026-12-04 11:35" in text
    assert "exact full scans 120.0 CPU s, screened scans 6.0 CPU s, **20.0x**" in text
    assert "| 128 | 2.0x |" in text and "| 36 | 16.0x |" in text
    assert "the exact top 5 was in the checked set on 2 of 2" in text


def test_certified_top_is_the_deepest_rank_no_unverified_bound_reaches():
    import pandas as pd

    from bertbusters_nb.evaluation.screen import certified_top

    estimates = pd.DataFrame(
        {"dim": range(8), "estimate": [5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.4, 0.1], "energy": [10, 8, 6, 4, 2, 1, 30, 1.0]}
    )
    verified = pd.DataFrame({"dim": [0, 1, 2, 3, 4], "exact": [6.0, 4.0, 3.0, 2.0, 1.0]})
    # ratio 0.1 (dim 0); unverified bounds 0.6, 3.4 (dim 6), 0.2: dim 6 reaches the 3rd effect (3.0), not the 2nd
    assert certified_top(estimates, verified, n_max=5) == 2
    assert certified_top(estimates, verified, n_max=1) == 1
    with_six = pd.concat([verified, pd.DataFrame({"dim": [6], "exact": [0.3]})], ignore_index=True)
    assert certified_top(estimates, with_six, n_max=5) == 5
    only_one = pd.DataFrame({"dim": [1], "exact": [3.0]})  # dim 0's estimate (5.0) alone reaches it
    assert certified_top(estimates, only_one, n_max=5) == 0
