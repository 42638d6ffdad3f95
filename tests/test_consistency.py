"""Outlier positions across pre-training runs of our own (notebook 02, across seeds)."""

from __future__ import annotations

import pytest


def test_outlier_positions_across_our_own_seeds():
    from bertbusters_nb.analysis.consistency import positions_across_runs
    from bertbusters_nb.reporting.claims import positions_differ_between_seeds

    table = positions_across_runs(["bbmini", "models/bbmini/candidates/h256l4s0"])
    assert table.seed.tolist() == [1, 0]
    assert table.top_dim.tolist() == [81, 209]  # recorded in bertbusters_nb/data/bbmini/METRICS.json and README
    held, evidence = positions_differ_between_seeds(table).held, positions_differ_between_seeds(table).evidence
    assert held is True and "81" in evidence and "209" in evidence
    same = positions_across_runs(["bbmini", "bbmini"])
    assert positions_differ_between_seeds(same).held is False
    with pytest.raises(FileNotFoundError, match="norm_trajectory"):
        positions_across_runs(["models/nothing-here"])
