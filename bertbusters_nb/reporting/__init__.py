"""Reporting, the layer above the analyses: claims (every verdict and its sentence), the run recorder, plots.

``claims`` holds each notebook's verdicts (threshold, outcome: held, beyond every random draw but small, did
not hold or inconclusive, and the sentence) as functions with unit tests; ``published`` the paper's and the
follow-up's published figures that claims set beside a run's; ``recorder.RunRecorder`` saves tables, figures, findings and the config atomically;
``parameters.notebook_parameters`` captures a notebook's parameters for that config; ``plots`` draws
(matplotlib; imported on use: ``from bertbusters_nb.reporting import plots``). The names of the old
``reporting.py`` (``versus_random``, ``verdict``, ``scan_ranks``) are here as before.
"""

from __future__ import annotations

from . import claims
from .claims import Finding, scan_ranks, verdict, versus_random
from .parameters import notebook_parameters
from .recorder import RunRecorder

__all__ = ["claims", "Finding", "scan_ranks", "verdict", "versus_random", "notebook_parameters", "RunRecorder"]
