"""Issue 18's renames and moves in reporting: the new names, and the old ones warning and forwarding for one release."""

from __future__ import annotations

import importlib
import warnings

import matplotlib
import pandas as pd
import pytest
import torch
import transformers as T

matplotlib.use("Agg")

from bertbusters_nb import find_norm_sites, find_outliers, select_sites  # noqa: E402
from bertbusters_nb.reporting import plots  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "old, new, name",
    [
        ("bertbusters_nb.plotting", "bertbusters_nb.reporting.plots.core", "scan_plot"),
        ("bertbusters_nb.plotting_glue", "bertbusters_nb.reporting.plots.downstream", "baseline_bars"),
        ("bertbusters_nb.plotting_why", "bertbusters_nb.reporting.plots.why", "sink_heatmaps"),
        ("bertbusters_nb.results", "bertbusters_nb.reporting.recorder", "RunRecorder"),
    ],
)
def test_old_paths_warn_and_forward(old, new, name):
    module = importlib.reload(importlib.import_module(old))  # a fresh shim warns once per name, whatever ran before
    with pytest.warns(FutureWarning, match=new.replace(".", r"\.")):
        value = getattr(module, name)
    assert value is getattr(importlib.import_module(new), name)


def test_the_old_reporting_names_stay_without_warning():
    import bertbusters_nb as bb

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        held, sentence = bb.reporting.versus_random(0.5, [0.9, 0.8], "cosine", worse="lower")
        assert held and bb.reporting.verdict(held).startswith("**The paper's claim held")
        assert bb.RunRecorder is bb.reporting.RunRecorder


def flags_table():
    return pd.DataFrame(
        {
            "step": [0, 100, 0, 100],
            "dim": [5, 5, 9, 9],
            "sites_flagged": [0, 4, 1, 1],
            "max_abs_z": [1.0, 8.0, 3.5, 3.6],
            "n_sites": [4] * 4,
        }
    )


def test_plot_flags_over_steps_is_the_figure_and_the_old_name_warns():
    fig = plots.plot_flags_over_steps(flags_table(), [5, 9], breakout=50, title="t")
    assert [ax.get_ylabel() for ax in fig.axes] == ["sites flagged", "max |z| over sites"]
    assert [line.get_label() for line in fig.axes[0].get_lines()][:2] == ["dim 5", "dim 9"]
    with pytest.warns(FutureWarning, match="plot_flags_over_steps"):
        old = plots.core.flags_over_steps(flags_table(), [5, 9])
    assert len(old.axes) == 2


def test_blank_predictions_and_the_old_fill_mask_name():
    from bertbusters_nb.data import assets
    from bertbusters_nb.evaluation.fill_mask import blank_predictions, fill_mask

    tokenizer = T.AutoTokenizer.from_pretrained(assets.minilm_dir())
    torch.manual_seed(0)
    model = T.BertForMaskedLM(
        T.BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    ).eval()
    table = blank_predictions(model, tokenizer, "the movie was [MASK] and [MASK] .", top_k=2)
    assert list(table.columns) == ["blank", "rank", "token", "probability"] and len(table) == 4
    with pytest.warns(FutureWarning, match="blank_predictions"):
        old = fill_mask(model, tokenizer, "the movie was [MASK] and [MASK] .", top_k=2)
    pd.testing.assert_frame_equal(old, table)


def test_min_sites_and_the_old_min_layers_keyword():
    torch.manual_seed(0)
    model = T.BertModel(
        T.BertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, vocab_size=120)
    ).eval()
    with torch.no_grad():
        for layer in model.encoder.layer:
            layer.output.LayerNorm.weight[7] = 40.0  # one dim stands out in every block-output norm
    sites = select_sites(find_norm_sites(model), "block_output")
    report = find_outliers(sites, k=3, min_sites=2)
    assert report.dims == [7] and report.min_sites == 2 and "in >= 2 of 3 sites" in report.summary()
    with pytest.warns(FutureWarning, match="min_sites"):
        old = find_outliers(sites, k=3, min_layers=2)
    assert old.dims == report.dims and old.min_sites == 2
    with pytest.warns(FutureWarning, match="min_sites"):
        assert report.min_layers == 2
    assert find_outliers(sites, k=3, min_sites=4).dims == []  # more sites than there are: none qualifies
    with pytest.raises(TypeError, match="min_sites only"):
        find_outliers(sites, k=3, min_sites=2, min_layers=2)
