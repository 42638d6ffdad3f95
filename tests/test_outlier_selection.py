"""Which dims a notebook disables: the detected outliers, or the strongest candidates when none pass."""
from __future__ import annotations

import torch
import transformers as T

from bertbusters_nb.norms import find_norm_sites, select_sites
from bertbusters_nb.outliers import dims_to_ablate, find_outliers


def _sites(planted: dict[int, int]):
    """Block-output LNs of a random 4-layer BERT (hidden 32), weight 1 +- 0.05, with dim -> n of layers planted."""
    torch.manual_seed(0)
    model = T.BertModel(T.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                     intermediate_size=64))
    sites = select_sites(find_norm_sites(model), "block_output")
    with torch.no_grad():
        for site in sites:
            site.weight.normal_(1.0, 0.05)
            site.bias.normal_(0.0, 0.05)
        for dim, layers in planted.items():
            for site in sites[:layers]:
                site.weight[dim] = 3.0
    return sites


def test_detected_outliers_are_returned_as_they_are():
    report = find_outliers(_sites({7: 4, 20: 3}))
    assert sorted(dims_to_ablate(report)) == [7, 20]


def test_one_flagged_dim_is_topped_up_by_mean_abs_z():
    report = find_outliers(_sites({7: 1}))  # flagged in 1 of 4 layers: not an outlier by the majority rule
    assert not report.dims
    dims = dims_to_ablate(report, fallback=3)
    assert len(dims) == 3 and dims[0] == 7 and len(set(dims)) == 3


def test_nothing_flagged_still_gives_candidates():
    report = find_outliers(_sites({}), k=50.0)
    assert len(report.per_dim) == 0
    assert len(dims_to_ablate(report, fallback=2)) == 2
