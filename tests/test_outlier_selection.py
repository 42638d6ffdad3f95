"""Which dims a notebook disables: the one rule's selected dims, or its strongest candidates when none pass."""

from __future__ import annotations

import torch
import transformers as T

from bertbusters_nb.analysis import detection as D
from bertbusters_nb.model.discovery import find_norm_sites


def _model(planted: dict[int, int]):
    """A random 4-layer BERT (hidden 32) with every LayerNorm weight 1 +- 0.05 and bias 0 +- 0.05, and
    dim -> n of its 9 LayerNorms planted (weight 3)."""
    torch.manual_seed(0)
    model = T.BertModel(
        T.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64)
    )
    sites = find_norm_sites(model)
    with torch.no_grad():
        for site in sites:
            site.weight.normal_(1.0, 0.05)
            site.bias.normal_(0.0, 0.05)
        for dim, count in planted.items():
            for site in sites[:count]:
                site.weight[dim] = 3.0
    return model


def test_dims_flagged_in_most_sites_are_returned():
    found = D.detect(_model({7: 9, 20: 6}))
    assert sorted(found.dims) == [7, 20] and found.rule == "params"
    assert found.dims[0] == 7  # flagged in more sites: ranked first


def test_a_minority_dim_is_only_a_candidate():
    found = D.detect(_model({7: 2}), fallback=3)  # flagged in 2 of 9 sites: not an outlier by the rule
    assert found.rule == "strongest candidates"
    assert len(found.dims) == 3 and found.dims[0] == 7 and len(set(found.dims)) == 3


def test_nothing_flagged_still_gives_candidates():
    found = D.detect(_model({}), k=50.0, fallback=2)
    assert found.rule == "strongest candidates" and len(found.dims) == 2


def test_flags_of_a_stored_trajectory_use_the_same_threshold():
    import pandas as pd

    flags = pd.DataFrame(
        {"step": 10, "dim": [1, 2, 3], "sites_flagged": [3, 2, 0], "max_abs_z": [5.0, 9.0, 1.0], "n_sites": 4}
    )
    assert D.dims_from_flags(flags) == [1]  # 3 of 4 is more than half; 2 of 4 is not
    assert D.dims_from_flags(flags, fallback=2) == [1]
    assert D.dims_from_flags(flags.assign(sites_flagged=[2, 2, 0]), fallback=2) == [2, 1]
