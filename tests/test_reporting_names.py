"""Reporting's names: the reporting API at the package top, the flag figure, blank predictions, min_sites."""

from __future__ import annotations

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


def test_the_reporting_names_at_the_package_top_do_not_warn():
    import bertbusters_nb as bb

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        outcome, sentence = bb.reporting.versus_random(0.5, [0.9, 0.8], "cosine", worse="lower", intact=1.0)
        assert outcome == "held" and bb.reporting.verdict(outcome).startswith("**The paper's claim held")
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


def test_plot_flags_over_steps_is_the_figure():
    fig = plots.plot_flags_over_steps(flags_table(), [5, 9], breakout=50, title="t")
    assert [ax.get_ylabel() for ax in fig.axes] == ["sites flagged", "max |z| over sites"]
    assert [line.get_label() for line in fig.axes[0].get_lines()][:2] == ["dim 5", "dim 9"]
    assert not hasattr(plots.core, "flags_over_steps")  # the table keeps that name (analysis.emergence)


def test_blank_predictions():
    from bertbusters_nb.data import assets
    from bertbusters_nb.evaluation.fill_mask import blank_predictions

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


def test_min_sites_counts_norm_sites():
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
    assert find_outliers(sites, k=3, min_sites=4).dims == []  # more sites than there are: none qualifies
