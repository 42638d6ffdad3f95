"""reporting.claims: every notebook verdict on hand-made numbers, held and not held, with its sentence."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from bertbusters_nb.analysis.outliers import OutlierReport
from bertbusters_nb.reporting import RunRecorder, claims
from bertbusters_nb.reporting.claims import Finding


def report(dims, sites_flagged, n_sites=4):
    per_dim = pd.DataFrame({"dim": [7, 3][: len(sites_flagged)], "sites_flagged": sites_flagged})
    return OutlierReport(list(dims), per_dim, pd.DataFrame(), pd.DataFrame(), 3.0, 3, n_sites)


def test_finding_unpacks_into_the_recorder_and_shows_its_verdict(tmp_path):
    f = Finding("A claim", True, "the evidence", "the shown sentence")
    assert tuple(f) == ("A claim", True, "the evidence", claims.HELD)
    assert f.markdown() == "**The paper's claim held here.** the shown sentence"
    assert Finding("c", None, "e").sentence == "e"
    assert Finding("c", None, "e").markdown() == "**Inconclusive here.** e"
    assert Finding("c", False, "e").headline() == "**c:** did not hold here. e"
    assert Finding("c", True, "e").headline() == "**c:** held here. e"
    rec = RunRecorder(tmp_path)
    assert rec.finding(*f)["verdict"] == "HELD"
    assert rec.findings() == [{"claim": "A claim", "held": True, "evidence": "the evidence", "outcome": "held"}]
    small = Finding.of("Small", claims.SMALL, "e")
    assert small.held is False and small.markdown().startswith(
        "**Beyond every random draw here, but the effect is small.**"
    )
    assert small.headline() == "**Small:** beyond every random draw but small here. e"
    assert rec.finding(*small)["verdict"] == "BEYOND EVERY RANDOM DRAW BUT SMALL"
    assert rec.findings()[-1] == {"claim": "Small", "held": False, "evidence": "e", "outcome": claims.SMALL}
    assert claims.summary_verdict(rec.findings()[-1]) == "beyond every random draw but small"
    assert claims.summary_verdict({"held": False}) == "did NOT hold"  # a findings.json written before outcomes
    with pytest.raises(ValueError, match="does not match"):
        Finding("c", True, "e", outcome=claims.SMALL)


def test_embeddings_vs_random_both_ways():
    held = claims.embeddings_vs_random(0.75, [0.99, 0.98, 0.97])
    assert (
        held.held is True and held.claim == "Disabling the outlier dims moves sentence embeddings more than random dims"
    )
    assert (
        "mean cosine to the intact embeddings is 0.75" in held.sentence and "beyond every random draw" in held.sentence
    )
    missed = claims.embeddings_vs_random(0.98, [0.99, 0.97, 0.96])
    assert missed.held is False and "not beyond every random draw" in missed.sentence
    small = claims.embeddings_vs_random(0.97, [0.99, 0.98, 0.985])  # beyond every draw, 3% from intact
    assert small.outcome == claims.SMALL and small.held is False


def test_restored_exactly_both_ways():
    ok = claims.restored_exactly(True, 101, 21)
    assert tuple(ok) == (
        "Ablations restore the model bit-exactly",
        True,
        "all 101 tensors identical after 21 conditions: True",
        "held",
    )
    assert ok.sentence == "All parameters identical after 21 ablations: **True**."
    assert claims.restored_exactly(False, 101, 21).held is False
    summary = claims.core_summary(ok, "minilm", [223, 99], "rule summary", "params summary")
    assert summary.startswith("**The paper's claim held here.** All parameters")
    assert summary.endswith(
        "Dims disabled on minilm: [223, 99] (rule summary); block-output parameters alone (a different "
        "criterion, not the dims disabled): params summary."
    )


def test_same_dim_in_most_layers_threshold():
    held = claims.same_dim_in_most_layers(report([7], [3]), k=3.0)  # 3 of 4 sites
    assert held.held is True
    assert held.evidence == (
        "top dim 7 is beyond 3 sigma in 75% of the 4 block-output LayerNorms; "
        "outlier dims (flagged in most layers): [7]"
    )
    assert held.sentence == held.evidence + "."
    half = claims.same_dim_in_most_layers(report([7], [2]), k=3.0)  # exactly half is not "most"
    assert half.held is False and "50% of the 4" in half.evidence
    assert claims.same_dim_in_most_layers(report([], [3]), k=3.0).held is False  # no outlier dims at all


def test_peaks_at_the_outlier_dim_threshold():
    table = pd.DataFrame(
        {"layer": [0, 1, 2], "input_share": [0.1, 0.9, 0.9], "token_share": [0.0, 0.5, 0.7], "ratio": [1.0, 10.0, 20.0]}
    )
    held = claims.peaks_at_the_outlier_dim(table, [7])
    assert held.held is True
    assert held.evidence == (
        "averaged over layers 1-2, an outlier dim ([7]) has the largest magnitude for 90% of "
        "inputs and 60% of tokens (paper: ~95% of inputs); mean |h| there is 15.0x the median dim"
    )
    missed = claims.peaks_at_the_outlier_dim(table.assign(input_share=[1.0, 0.9, 0.85]), [7])
    assert missed.held is False and "for 88% of inputs" in missed.evidence
    summary = claims.position_summary(
        "bbmini", claims.same_dim_in_most_layers(report([7], [3]), 3.0), held, report([7], [3]), table, 3.0
    )
    assert summary == (
        "On **bbmini**, the same dim is beyond 3 sigma in 75% of the block-output LayerNorms "
        "(outlier dims [7]); the outlier dims dominate the hidden states for 90% of inputs, as in the paper."
    )


def test_positions_differ_between_models():
    across = pd.DataFrame(
        {
            "model": ["a", "b"],
            "top_dim": [5, 9],
            "top_dim_sites_flagged": [4, 3],
            "input_share_top_is_outlier": [0.95, 0.5],
        }
    )
    held = claims.positions_differ_between_models(across)
    assert held.held is True
    assert held.evidence == (
        "a: top dim 5 (4 block-output sites), largest for 95% of inputs; "
        "b: top dim 9 (3 block-output sites), largest for 50% of inputs"
    )
    assert claims.positions_differ_between_models(across.assign(top_dim=[5, 5])).held is False
    assert claims.positions_differ_between_models(across.head(1)).held is None


def test_mlm_loss_vs_random_both_ways():
    summary = {"outlier_loss": 6.0, "intact_loss": 2.0, "outlier_delta": 4.0, "random_delta_mean": 0.01}
    held = claims.mlm_loss_vs_random(summary, pd.Series([2.0, 2.02, 2.01]), [81])
    assert held.held is True and held.sentence.startswith(
        "With dims [81] disabled, the MLM loss (nats) is 6 (intact 2);"
    )
    assert held.evidence == held.sentence + (
        " Intact loss 2.000; the outlier ablation adds +4.000, random draws add +0.010 on average."
    )
    assert claims.mlm_loss_vs_random({**summary, "outlier_loss": 2.01}, [2.0, 2.02], [81]).held is False
    issue_22 = claims.mlm_loss_vs_random(
        {"outlier_loss": 0.213, "intact_loss": 0.207, "outlier_delta": 0.006, "random_delta_mean": 0.001},
        [0.207, 0.208, 0.209, 0.210, 0.211] * 4,
        [1, 2],
    )
    assert issue_22.outcome == claims.SMALL and "beyond every random draw but small" in issue_22.sentence
    assert claims.mlm_summary(issue_22, "m", "r").startswith(
        "**Beyond every random draw here, but the effect is small.**"
    )
    assert claims.mlm_summary(held, "bbmini", "scan ranks.") == (
        "**The paper's claim held here.** On **bbmini**: " + held.sentence + " scan ranks."
    )


def test_probe_vs_random_both_ways():
    probe = pd.DataFrame(
        {
            "group": ["none", "outliers", "random", "random"],
            "snli_auc": [0.8, 0.6, 0.79, 0.78],
            "cosine_mean": [1.0, 0.7, 0.99, 0.97],
        }
    )
    held = claims.probe_vs_random(probe, "minilm", [223, 99])
    assert held.held is True
    assert held.claim == "On minilm (no MLM head) the outlier ablation hurts the SNLI probe beyond random dims"
    assert held.evidence == held.sentence + " Embedding cosine to intact: 0.700 vs random 0.980."
    assert claims.probe_vs_random(probe.assign(snli_auc=[0.8, 0.785, 0.79, 0.78]), "minilm", [1]).held is False


def test_emergence_claims_both_ways():
    emerged = pd.DataFrame({"dim": [81], "first_step_in_most_sites": [1000]})
    early = claims.emerges_early(emerged, 10000, 1200, 6.0)
    assert early.held is True and early.claim.startswith("Outlier dims emerge early")
    assert "first stood out in most layers at step 1,000 of 10,000 (10% of training)" in early.sentence
    assert claims.emerges_early(emerged.assign(first_step_in_most_sites=[9000]), 10000, 1200, 6.0).held is False
    ablation = pd.DataFrame(
        {
            "step": [1, 2],
            "delta": [0.1, 3.0],
            "random_max": [0.2, 0.1],
            "random_mean": [0.1, 0.05],
            "random_std": [0.05, 0.02],
            "base_loss": [9.0, 3.0],
            "dims": ["[81]", "[81]"],
            "draws": [20, 20],
        }
    )
    end = claims.matters_at_the_end(ablation)
    assert end.held is True and "raises the MLM loss by +3.000 nats" in end.sentence
    assert claims.matters_at_the_end(ablation.assign(delta=[3.0, 0.05])).outcome == claims.NOT_HELD
    small = claims.matters_at_the_end(ablation.assign(delta=[0.1, 0.12]))  # beyond every draw, +4% of 3.0 nats
    assert small.outcome == claims.SMALL and "+0.120 nats" in small.sentence
    assert claims.matters_at_the_end(None).held is None
    assert claims.emergence_summary(early, end, "live.") == early.markdown() + " " + end.sentence + " Live run: live."


def test_why_claims_both_ways():
    shares = {
        "top": 100,
        "threshold": 12.0,
        "top_any": 0.97,
        "top_special": 0.5,
        "top_delimiter": 0.4,
        "top_first": 0.07,
        "all_any": 0.11,
    }
    assert claims.top_activations_on_special_tokens(shares, "bbmini").held is True
    low = claims.top_activations_on_special_tokens({**shares, "top_any": 0.25}, "bbmini")
    assert (
        low.held is False
        and low.claim == "bbmini: the largest outlier activations sit on special tokens and delimiters"
    )
    assert "25% sit on special tokens" in low.sentence

    heads = pd.DataFrame(
        {"category": ["sink"] * 2, "mass": [0.6, 0.4], "base": [0.1, 0.1], "layer": [0, 1], "head": [0, 0]}
    )
    assert claims.heads_sink(heads, "m").held is True
    assert claims.heads_sink(heads.assign(mass=[0.15, 0.15]), "m").held is False

    per_condition = pd.Series({"none": 0.31, "outliers": 0.15, "random 0": 0.316, "random 1": 0.318})
    removed = claims.sinks_removed_vs_random(per_condition, "m", [81])
    assert removed.held is True and removed.sentence.startswith("Intact: 0.310. With m's dims [81] disabled,")
    assert claims.sinks_removed_vs_random(per_condition.replace({0.15: 0.317}), "m", [81]).held is False

    quant = pd.DataFrame(
        {
            "group": ["fp32", "w8a8", "outliers", "random", "random"],
            "objective": [2.0, 3.0, 2.2, 2.9, 2.95],
            "kind": ["mlm"] * 5,
        }
    )
    rescued = claims.quantization_rescued(quant, "m", 8)
    assert (
        rescued.held is True
        and rescued.claim == "m: keeping the outlier dims in full precision rescues W8A8 beyond random dims"
    )
    assert "recovers 80% of the loss" in rescued.sentence
    assert claims.quantization_rescued(quant.assign(objective=[2.0, 3.0, 2.9, 2.8, 2.95]), "m", 8).held is False

    metrics = pd.DataFrame(
        {
            "excluded": ["none", "outliers", "random 0", "random 1"] * 2,
            "layer": [0] * 4 + [1] * 4,
            "kurtosis": [20.0, 3.0, 19.0, 19.5, 18.0, 3.2, 17.0, 17.5],
            "max_inf_norm": [100.0, 10.0, 99.0, 98.0, 90.0, 9.0, 89.0, 88.0],
        }
    )
    tails = claims.heavy_tails(metrics, "m")
    assert (
        tails.held is True and "kurtosis" in tails.claim and "leaving out the outlier dims it is 3.1" in tails.sentence
    )
    flat = metrics.assign(kurtosis=[20.0, 18.0, 19.0, 19.5, 18.0, 17.0, 17.0, 17.5])
    assert claims.heavy_tails(flat, "m").held is False

    snap = claims.frequency_over_training("bbmini", "no intermediate weights.")
    assert tuple(snap) == (
        "bbmini: the frequency correlation appears when the outlier dim emerges during pre-training",
        None,
        "no intermediate weights.",
        "inconclusive",
    )


class _Counts:
    def describe(self) -> str:
        return "exact counts"


def correlations(partial):
    rows = []
    for layer, value in enumerate(partial):
        for measure in ("pearson", "spearman", "partial_spearman"):
            rows.append(
                {
                    "layer": layer,
                    "dim": 81,
                    "measure": measure,
                    "value": value,
                    "ci_low": value - 0.1,
                    "ci_high": value + 0.1,
                    "types": 50,
                }
            )
    return pd.DataFrame(rows)


def test_frequency_drives_magnitude_both_ways():
    held = claims.frequency_drives_magnitude(correlations([0.5, 0.6, 0.1]), _Counts(), "bbmini")
    assert held.held is True
    assert held.claim == "bbmini: the outlier dim's magnitude on a token rises with the token's pre-training frequency"
    assert "in 2 of 3 layers; strongest at layer 1. Counts: exact counts." in held.sentence
    missed = claims.frequency_drives_magnitude(correlations([0.5, 0.1, 0.1]), _Counts(), "bbmini")
    assert missed.held is False and "in 1 of 3 layers" in missed.sentence


@pytest.mark.parametrize("name", ["SAME_DIM_SHARE", "ACTIVATION_INPUT_SHARE"])
def test_thresholds_are_named(name):
    assert 0 < getattr(claims, name) < 1


def downstream_summary(outliers_disabled, random_min=0.80, random_mean=0.81, random_std=0.01):
    """A DownstreamStudy.summary() row as the claims read it (accuracy; intact 0.82)."""
    return pd.DataFrame(
        {
            "backbone": ["bbmini"],
            "task": ["rt"],
            "split": ["validation"],
            "metric": ["accuracy"],
            "chance": [0.5],
            "intact": [0.82],
            "disabled_dims": ["81 126"],
            "outliers_disabled": [outliers_disabled],
            "relative_change": [outliers_disabled / 0.82 - 1],
            "random_mean": [random_mean],
            "random_std": [random_std],
            "random_min": [random_min],
            "draws": [3],
            "random_relative_change": [random_mean / 0.82 - 1],
            "worse_than_every_draw": [outliers_disabled < random_min],
            "share_of_draws_as_damaging": [0.0],
            "outliers_kept_after_finetuning": [True],
        }
    )


RANDOM = pd.DataFrame(
    {
        "backbone": ["bbmini"] * 3 + ["other"],
        "task": ["rt"] * 4,
        "split": ["validation"] * 4,
        "value": [0.80, 0.82, 0.81, 0.1],
    }
)
SETS = pd.DataFrame(
    {"backbone": ["bbmini"], "task": ["rt"], "before": ["81"], "after": ["81"], "kept": ["81"], "all_kept": [True]}
)


def test_downstream_three_ways():
    text = claims.downstream_versus_random(downstream_summary(0.55), RANDOM)
    assert text.startswith(
        "**bbmini / rt (validation)**: With the outlier dims disabled, accuracy is 0.55 (intact 0.82); over 3 random draws"
    )  # the other backbone's draw is not among them
    assert "beyond every random draw" in text and "not beyond" not in text
    assert "not beyond every random draw" in claims.downstream_versus_random(downstream_summary(0.805), RANDOM)
    outcomes = [claims.downstream_findings(downstream_summary(v), SETS)[0].outcome for v in (0.55, 0.79, 0.805)]
    assert outcomes == [claims.HELD, claims.SMALL, claims.NOT_HELD]  # 0.79: beyond every draw, -3.7%
    findings = claims.downstream_findings(downstream_summary(0.79), SETS)
    assert [f.held for f in findings] == [False, True] and "the detection rule's dims" in findings[1].evidence
    assert claims.findings_markdown(findings).startswith("- **beyond every random draw but small**: Disabling")
    text = claims.downstream_describe(downstream_summary(0.79))
    assert "worse than every one of (but by a small effect)" in text
    assert text.endswith(
        "held in 0 of 1 pairs (1 more beyond every random draw but by a small effect); where it did not, this "
        "small model and short fine-tune do not show the paper's effect."
    )
    assert claims.downstream_describe(downstream_summary(0.55)).endswith("held in every pair.")


def protocol_row(model, outliers_zero, beyond, objective="masked-LM loss"):
    """A row of across_models.run_protocol's table, as the claims read it (intact 3.0, random 3.01 ± 0.01)."""
    return {
        "model": model,
        "objective": objective,
        "placement": "post-LN",
        "roles": "block_output",
        "n_sites": 4,
        "dims": "81",
        "rule": "params",
        "intact": 3.0,
        "outliers_zero": outliers_zero,
        "outliers_mean": 3.0 + (outliers_zero - 3.0) * 0.05,
        "random_mean": 3.01,
        "random_sd": 0.01,
        "random_min": 3.0,
        "random_max": 3.03,
        "draws": 20,
        "beyond_every_draw": beyond,
        "output_dense_zero": float("nan"),
        "largest_dim_detected": True,
        "dims_ratio_peak": 5.0,
        "dims_ratio_layer": 3,
        "top_carrier": "first token",
        "top_carrier_ratio": 4.0,
    }


def test_across_models_three_ways_and_zero_vs_mean():
    table = pd.DataFrame(
        [protocol_row("big", 4.0, True), protocol_row("small", 3.06, True), protocol_row("none", 3.02, False)]
    )
    findings = claims.across_models_findings(table)
    assert [f.outcome for f in findings] == [claims.HELD, claims.SMALL, claims.NOT_HELD]
    assert findings[0].claim == "big: disabling the detected dims hurts its objective more than random dims"
    mean = claims.zero_vs_mean(table)
    assert mean.held is True and "big: damage 1 zeroed vs 0.05 at the mean (5% of it)" in mean.evidence
    report = claims.across_models_report(table).splitlines()
    assert report[0].startswith("- **big** **The paper's claim held here.** post-LN")
    assert report[1].startswith("- **small** **Beyond every random draw here, but the effect is small.**")
    assert report[-1].startswith("- **Zero vs mean.** **The paper's claim held here.**")
    assert claims.zero_vs_mean(table.assign(beyond_every_draw=False)).held is None


# --- the effect-size rule of every versus-random verdict: both sides of each boundary -------------------


def test_effect_outcome_on_both_sides_of_each_boundary():
    r, s = claims.MIN_RELATIVE_CHANGE, claims.MIN_SPREAD_RATIO
    assert claims.effect_outcome(True, r, s) == claims.HELD  # at both thresholds
    assert claims.effect_outcome(True, r - 1e-9, s) == claims.SMALL  # relative change just short
    assert claims.effect_outcome(True, r, s - 1e-9) == claims.SMALL  # spread ratio just short
    assert claims.effect_outcome(True, math.inf, math.inf) == claims.HELD
    assert claims.effect_outcome(False, 10.0, 100.0) == claims.NOT_HELD  # a draw as damaging: size does not help


def test_thresholds_are_documented_values():
    assert claims.MIN_RELATIVE_CHANGE == 0.05 and claims.MIN_SPREAD_RATIO == 3.0
    assert claims.OUTCOMES == ("held", "beyond every random draw but small", "did not hold", "inconclusive")


def test_compare_to_random_relative_change_and_spread_ratio():
    draws = [0.9, 1.0, 1.1]  # mean 1.0, sd 0.1
    up = claims.compare_to_random(1.5, draws, intact=1.0)
    assert up.beyond and up.relative_change == pytest.approx(0.5) and up.spread_ratio == pytest.approx(5.0)
    assert up.outcome == claims.HELD and up.damage == pytest.approx(0.5)
    down = claims.compare_to_random(0.5, draws, intact=1.0, worse="lower")
    assert down.beyond and down.relative_change == pytest.approx(0.5) and down.spread_ratio == pytest.approx(5.0)
    # spread boundary: 1.0 + 3 sd = 1.3 with a 30% change
    assert claims.compare_to_random(1.31, draws, intact=1.0).outcome == claims.HELD
    assert claims.compare_to_random(1.29, draws, intact=1.0).outcome == claims.SMALL
    # relative boundary: draws that do not vary (sd 0, ratio inf); intact 2.0, 5% is 2.1
    flat = [2.0, 2.0]
    assert claims.compare_to_random(2.11, flat, intact=2.0).outcome == claims.HELD
    assert claims.compare_to_random(2.09, flat, intact=2.0).outcome == claims.SMALL
    assert claims.compare_to_random(2.0, flat, intact=2.0).outcome == claims.NOT_HELD
    with pytest.raises(ValueError, match="worse"):
        claims.compare_to_random(1.0, draws, intact=1.0, worse="up")


def test_issue_22_example_is_small_not_held():
    """An intact loss 0.207 -> 0.213 (+0.006 nats, 3%) beyond 20 random draws (max 0.211)."""
    draws = [0.206, 0.207, 0.208, 0.209, 0.210, 0.211, 0.207, 0.208, 0.209, 0.208] * 2
    outcome, sentence = claims.versus_random(0.213, draws, "the MLM loss (nats)", intact=0.207)
    assert max(draws) == 0.211 and outcome == claims.SMALL
    assert "beyond every random draw (100% of draws are less damaging)" in sentence
    assert (
        "the damage is 2.9% of the intact value, and 3.2 random sd beyond the random mean" in sentence
        and "beyond every random draw but small" in sentence
    )
    with pytest.raises(ValueError, match="intact"):
        claims.versus_random(0.213, draws, "loss")


def test_heavy_tails_three_ways():
    def metrics(without):
        return pd.DataFrame(
            {
                "excluded": ["none", "outliers", "random 0", "random 1", "random 2"],
                "layer": [0] * 5,
                "kurtosis": [20.0, without, 19.0, 19.5, 19.2],
                "max_inf_norm": [100.0, 10.0, 99.0, 98.0, 97.0],
            }
        )

    assert claims.heavy_tails(metrics(3.0), "m").outcome == claims.HELD
    small = claims.heavy_tails(metrics(12.0), "m")  # below every draw, but 60% of the full kurtosis
    assert small.outcome == claims.SMALL and "beyond every random draw but small" in small.evidence
    assert claims.heavy_tails(metrics(19.1), "m").outcome == claims.NOT_HELD


def test_rule_names_damaging_dims():
    from bertbusters_nb.analysis.detection import RULE_CRITERION

    agreement = pd.DataFrame(
        {
            "criterion": [RULE_CRITERION, "other"],
            "model": ["m", "m"],
            "dims": ["81", "5"],
            "most_damaging": ["81 3", "81 3"],
            "names_most_damaging": [True, False],
            "precision": [1.0, 0.0],
            "recall": [0.5, 0.0],
            "spearman": [0.9, 0.1],
        }
    )
    held = claims.rule_names_damaging_dims(agreement)
    assert held.held is True and "m: default dims [81], scan's most damaging [81 3] (precision 1.00" in held.evidence
    assert claims.rule_names_damaging_dims(agreement.assign(precision=[0.4, 0.0])).held is False
    assert claims.rule_names_damaging_dims(agreement.iloc[1:]).held is None


# --- the published figures beside the run's -----------------------------------------------------------


def test_published_dims_one_table_keyed_by_hub_name():
    from bertbusters_nb.reporting.published import PUBLISHED, PUCCETTI_2022

    assert PUBLISHED["bert-base-uncased"].outlier_dims == (308, 381)
    assert {
        m: PUBLISHED[m].outlier_dims for m in ("roberta-base", "google/multiberts-seed_0", "google/multiberts-seed_1")
    } == {
        "roberta-base": (77, 588),
        "google/multiberts-seed_0": (263, 628),
        "google/multiberts-seed_1": (218, 674),
    }
    assert dict(PUBLISHED["bert-base-uncased"].task_drops) == {"mnli": 0.30}
    assert PUBLISHED["roberta-base"].dims_source == PUCCETTI_2022
    assert not {"minilm", "bbmini", "smollm2"} & set(PUBLISHED)  # the offline models have no published figure


def test_published_dims_note_agree_partly_disagree_and_none():
    assert claims.published_dims_note("bert-base-uncased", [381, 308, 12]).endswith(
        "This run's rule: [381, 308, 12]. They agree: every published dim is among this run's."
    )
    assert "They agree in part: this run finds [308] of them, not [381]." in claims.published_dims_note(
        "bert-base-uncased", [308]
    )
    assert "They disagree" in claims.published_dims_note("roberta-base", [5, 6])
    assert claims.published_dims_note("minilm", [223, 99]) == (
        "There is no published figure for minilm: the dims [223, 99] are this run's only."
    )
    table = claims.published_dims_table({"roberta-base": ["77", "588"], "bbmini": [81]})
    assert list(table.agreement) == ["agree", "-"] and list(table["published dims"]) == ["77 588", "none published"]


def test_published_drops_note_both_sides_of_the_tolerance():
    def summary(backbone, task, change):
        return pd.DataFrame(
            {
                "backbone": [backbone],
                "task": [task],
                "split": ["validation_matched"],
                "relative_change": [change],
                "disabled_dims": ["308 381"],
            }
        )

    near = claims.published_drops_note(summary("bert-base-uncased", "mnli", -0.205))
    assert "this run's drop 20.5%" in near and "published: 30%" in near and "They agree" in near
    assert "They disagree" in claims.published_drops_note(summary("bert-base-uncased", "mnli", -0.195))
    assert "They disagree" in claims.published_drops_note(summary("bert-base-uncased", "mnli", -0.405))
    assert claims.published_drops_note(summary("minilm", "snli", -0.3)) == (
        "There is no published downstream figure for these backbones and tasks (minilm)."
    )


def test_restoration_counts_only_the_scalars_whose_zeroing_did_damage():
    """Yu et al.'s check is about recovering from damage: a verified scalar whose zeroing lowered the loss is listed
    but not counted, and with none that did damage there is no verdict."""

    def rows(*triples):
        return pd.DataFrame(
            [
                {"layer": i, "out_channel": 1, "in_channel": 2, "intact": a, "zeroed": z, "restored": r}
                for i, (a, z, r) in enumerate(triples)
            ]
        ).assign(recovered=lambda t: (t.zeroed - t.restored) / (t.zeroed - t.intact))

    held = claims.restoring_super_activation_recovers("m", rows((3.0, 9.0, 3.1), (3.0, 2.9, 2.9)))
    assert held.held is True and "Not counted: 1 of the 2" in held.evidence
    not_held = claims.restoring_super_activation_recovers("m", rows((3.0, 9.0, 8.0), (3.0, 2.9, 2.9)))
    assert not_held.held is False
    assert claims.restoring_super_activation_recovers("m", rows((3.0, 2.9, 2.9))).held is None
    assert claims.restoring_super_activation_recovers("m", rows((3.0, 9.0, 3.0))).evidence.endswith("recovered).")
