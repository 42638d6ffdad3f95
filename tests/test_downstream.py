"""The notebook-04 study on a tiny BERT with a planted outlier dim: stages, tables, verdicts, figures."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import transformers as T  # noqa: E402

from bertbusters_nb.data import assets  # noqa: E402
from bertbusters_nb.evaluation.conditions import layer_ranges, outlier_conditions  # noqa: E402
from bertbusters_nb.finetuning import FinetuneSettings  # noqa: E402
from bertbusters_nb.reporting import claims  # noqa: E402
from bertbusters_nb.reporting.plots import downstream as plotting_glue  # noqa: E402
from bertbusters_nb.studies.downstream import (  # noqa: E402
    DownstreamStudy,
    available_backbones,
    chance_score,
)

PLANTED = 5


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A 3-layer BERT (hidden 24) whose LayerNorm weight is 8 at dim 5 in every layer (attention and block
    output: the rule weighs every norm site, as in a real model whose outlier shows in both)."""
    tokenizer = T.AutoTokenizer.from_pretrained(assets.minilm_dir())
    torch.manual_seed(0)
    model = T.BertModel(
        T.BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=24,
            num_hidden_layers=3,
            num_attention_heads=2,
            intermediate_size=48,
            max_position_embeddings=64,
        )
    )
    with torch.no_grad():
        for layer in model.encoder.layer:
            layer.output.LayerNorm.weight[PLANTED] = 8.0
            layer.attention.output.LayerNorm.weight[PLANTED] = 8.0
    folder = tmp_path_factory.mktemp("tiny-outlier-bert")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def study(tiny_dir, tmp_path_factory):
    settings = FinetuneSettings(
        epochs=1.0,
        max_steps=2,
        batch_size=8,
        max_length=24,
        max_train_samples=16,
        max_eval_samples=24,
        checkpoint_steps=0,
    )
    s = DownstreamStudy(
        [tiny_dir], ["rt", "snli"], settings, device="cpu", progress=False, cache_dir=tmp_path_factory.mktemp("cache")
    )
    s.finetune()
    s.outliers()
    s.ablate(layer_parts=3)
    s.random_baseline(draws=20, seed=0)
    s.scan(tasks=["rt"], max_samples=8, every=4, checkpoint_dir=tmp_path_factory.mktemp("scan"))
    s.screened_scan(tasks=["rt"], top_k=3)
    return s


def test_layer_ranges_cover_every_layer_once():
    assert layer_ranges(6, 3) == [(0, 1), (2, 3), (4, 5)]
    assert layer_ranges(2, 3) == [(0,), (1,)]
    assert sum(layer_ranges(12, 5), ()) == tuple(range(12))
    with pytest.raises(ValueError):
        layer_ranges(0, 3)


def test_outlier_conditions_each_alone_together_and_by_layer_range():
    names = [c.name for c in outlier_conditions([7, 9], ["block_output"], n_layers=6, parts=3)]
    assert names == [
        "none",
        "single: 7",
        "single: 9",
        "outliers: all",
        "outliers: layers 0-1",
        "outliers: layers 2-3",
        "outliers: layers 4-5",
    ]
    single = outlier_conditions([7], ["block_output"], n_layers=2, parts=2)
    assert [c.name for c in single] == [
        "none",
        "single: 7",
        "outliers: all",
        "outliers: layers 0",
        "outliers: layers 1",
    ]
    assert [c.name for c in outlier_conditions([7], ["block_output"])] == ["none", "single: 7", "outliers: all"]


def test_chance_is_the_majority_answer_in_the_task_metric():
    assert chance_score("rt", [0, 1, 1, 1]) == 0.75
    assert chance_score("cola", [0, 1, 1, 1]) == 0.0  # MCC of a constant answer
    assert chance_score("stsb", [0.5, 2.0]) == 0.0


def test_missing_backbones_are_named_not_fatal(tmp_path):
    usable, missing = available_backbones(["minilm", str(tmp_path / "nothing-here"), "bert-base-uncased"])
    assert usable == ["minilm", "bert-base-uncased"] and list(missing) == [str(tmp_path / "nothing-here")]
    assert "Left out" in claims.backbones_note(usable, missing)


def test_stages_need_the_finetune_first(tiny_dir):
    fresh = DownstreamStudy([tiny_dir], ["rt"], FinetuneSettings())
    with pytest.raises(RuntimeError, match="finetune"):
        fresh.ablate()
    with pytest.raises(ValueError, match="Unknown task"):
        DownstreamStudy([tiny_dir], ["sst-2"], FinetuneSettings())


def test_the_planted_outlier_is_found_before_and_after_and_disabled(study):
    sets = study.outlier_sets()
    assert list(sets.before) == [str(PLANTED)] * 2 and sets.all_kept.all()
    assert list(sets.after) == [str(PLANTED)] * 2  # the one rule on the fine-tuned model, not the parameters alone
    assert {"params_before", "params_after"} <= set(sets.columns)  # the other criterion, labelled apart
    assert all(p.dims == [PLANTED] for p in study.pairs)
    table = study.tables["outliers"]
    assert table[table.dim == PLANTED].disabled.all()


def test_tables_have_one_row_per_pair_condition_and_draw(study):
    baseline = study.tables["baseline"]
    assert list(baseline.task) == ["rt", "snli"] and (baseline.dev_examples == 24).all()
    assert ((baseline.value >= 0) & (baseline.value <= 1)).all()
    ablations = study.tables["ablations"]
    assert len(ablations) == 2 * 6  # none, dim 5, together, 3 layer ranges
    none = ablations[ablations.condition == "none"].set_index("task").value
    assert none.to_dict() == baseline.set_index("task").value.to_dict()  # the engine agrees with evaluate()
    random = study.tables["random"]
    assert len(random) == 2 * 20 and not random.dims.str.split().explode().astype(int).eq(PLANTED).any()
    scan = study.tables["scan"]
    assert set(scan.task) == {"rt"} and PLANTED in set(scan.dim) and set(range(0, 24, 4)) <= set(scan.dim)
    assert sorted(scan.damage_rank) == list(range(1, len(scan) + 1))
    top = scan.loc[scan.damage_rank.idxmin()]
    assert top.loss_delta == scan.loss_delta.max()


def test_summary_findings_and_prose_come_from_the_tables(study):
    summary = study.summary()
    assert len(summary) == 2 and summary.draws.eq(20).all()
    row = summary.iloc[0]
    assert row.worse_than_every_draw == (row.outliers_disabled < row.random_min)
    findings = claims.downstream_findings(summary, study.outlier_sets())
    assert len(findings) == 2 + 2 + 1 and all(isinstance(f.held, bool) for f in findings)
    assert f"{row.intact:.3f}" in findings[0].evidence
    text = claims.downstream_describe(summary)
    assert "rt" in text and "snli" in text and f"{row.intact:.3f}" in text
    assert "random draws" in claims.downstream_versus_random(summary, study.tables["random"])
    assert claims.findings_markdown([claims.Finding("c", True, "e")]) == "- **held**: c. e"


def test_the_figures_draw_from_the_tables(study):
    t = study.tables
    figures = [
        plotting_glue.baseline_bars(t["baseline"]),
        plotting_glue.conditions_vs_random(t["ablations"], t["random"]),
        plotting_glue.relative_change_strip(study.summary(), t["random"]),
        plotting_glue.scan_grid(t["scan"]),
        plotting_glue.outliers_before_after(t["outliers"]),
    ]
    assert all(isinstance(f, plt.Figure) for f in figures)
    plt.close("all")


def test_per_backbone_overrides_change_only_that_backbone(tiny_dir):
    settings = FinetuneSettings(learning_rate=1e-4)
    s = DownstreamStudy([tiny_dir, "minilm"], ["rt"], settings, overrides={tiny_dir: {"learning_rate": 3e-4}})
    assert s.settings_for(tiny_dir).learning_rate == 3e-4
    assert s.settings_for("minilm") == settings
    with pytest.raises(ValueError, match="Unknown fine-tuning setting.*learning_rate"):
        DownstreamStudy([tiny_dir], ["rt"], settings, overrides={tiny_dir: {"lr": 3e-4}})
    with pytest.raises(ValueError, match="Invalid fine-tuning settings"):
        DownstreamStudy([tiny_dir], ["rt"], settings, overrides={tiny_dir: {"learning_rate": -1.0}})
    with pytest.raises(ValueError, match="must map a backbone"):
        DownstreamStudy([tiny_dir], ["rt"], settings, overrides={tiny_dir: 3e-4})


def test_an_override_reaches_the_fine_tune(tiny_dir, tmp_path):
    settings = FinetuneSettings(
        epochs=1.0,
        max_steps=1,
        batch_size=8,
        max_length=16,
        max_train_samples=8,
        max_eval_samples=8,
        checkpoint_steps=0,
    )
    s = DownstreamStudy(
        [tiny_dir],
        ["rt"],
        settings,
        device="cpu",
        progress=False,
        cache_dir=tmp_path,
        overrides={tiny_dir: {"learning_rate": 7e-4}},
    )
    baseline = s.finetune()
    assert baseline.learning_rate.tolist() == [7e-4]
    assert s.pairs[0].tuned.manifest["settings"]["learning_rate"] == 7e-4


def test_the_screened_scan_covers_every_dim_on_the_whole_dev_set_and_checks_the_outliers(study):
    screened, scan = study.tables["screened_scan"], study.tables["scan"]
    assert set(screened.task) == {"rt"} and sorted(screened.dim) == list(range(24))
    exact = screened[screened.value_kind == "exact"]
    assert PLANTED in set(exact.dim) and 3 <= len(exact) <= 3 + screened.outlier.sum()
    assert screened.examples.iloc[0] == 24 > scan.examples.iloc[0]  # the whole dev set, not the subset
    text = claims.downstream_screened_summary(screened, scan)
    assert (
        text.startswith("- **") and "rt" in text and "of the top 5 dims of the exact scan on 8 examples" in text.lower()
    )


def test_a_screened_scan_holds_exact_rows_with_every_metric_and_ranks_them_first(study, tmp_path):
    from bertbusters_nb.reporting.plots import downstream as plotting

    exact_scan = study.tables["scan"]
    try:
        screened = study.scan(tasks=["rt"], method="screen", top_k=3, checkpoint_dir=tmp_path)
        summary = study.summary()
    finally:
        study.tables["scan"] = exact_scan
    assert sorted(screened.dim) == list(range(24)) and set(screened.value_kind) == {"exact", "estimate"}
    exact = screened[screened.value_kind == "exact"].set_index("dim")
    assert PLANTED in exact.index and 3 <= len(exact) <= 3 + screened.outlier.sum()
    assert exact["value"].notna().all() and screened.loc[screened.value_kind == "estimate", "value"].isna().all()
    assert exact.damage_rank.max() == len(exact)  # exact rows rank first, by their dev-loss rise
    assert exact.sort_values("damage_rank").loss_delta.is_monotonic_decreasing
    # the exact rows are the exhaustive scan's values on the same dev examples
    from bertbusters_nb.evaluation import scan_dims

    pair = next(p for p in study.pairs if p.task == "rt")
    _, _, eval_set = next(study._scan_dev_sets(["rt"], None))
    truth = scan_dims(pair.tuned.model, eval_set, dims=list(exact.index), sites=pair.sites, progress=False)
    assert exact["eval_loss"].to_numpy() == pytest.approx(truth.set_index("dim").eval_loss.to_numpy(), abs=1e-5)
    row = summary[summary.task == "rt"].iloc[0]
    assert row.scan_exact_dims == len(exact) and row.scan_dims == 24
    text = claims.downstream_describe(summary)
    assert f"the {len(exact)} dims evaluated exactly (screened scan: all 24 estimated" in text
    # how deep the exact ranking holds for all dims: certified_top of the dev-loss rise, stated in the text
    from bertbusters_nb.evaluation.screen import certified_top

    rise = exact.reset_index()[["dim"]].assign(exact=exact["loss_delta"].to_numpy())
    certified = certified_top(screened[["dim", "estimate", "energy"]], rise)
    assert screened["certified_top"].eq(certified).all() and row.scan_certified_top == certified
    assert (f"certifies the top {certified} by dev loss" if certified else "certifies none of these ranks") in text
    assert plotting.scan_grid(screened).axes
    with pytest.raises(ValueError, match="scan method"):
        study.scan(tasks=["rt"], method="fast")


def test_the_backbones_detection_runs_on_the_studys_device(study, monkeypatch):
    """The pre-trained backbone is loaded where the study runs (a GPU in the paper profile), not pinned to the CPU."""
    from bertbusters_nb.studies import downstream

    asked = []

    def refuse(name, **options):
        asked.append(options.get("device"))
        raise RuntimeError("stop after recording the device")

    monkeypatch.setattr(downstream, "load_model", refuse)
    monkeypatch.setattr(study, "device", "cuda:7")
    with pytest.raises(RuntimeError, match="stop after recording"):
        study.outliers()
    assert asked == ["cuda:7"]
