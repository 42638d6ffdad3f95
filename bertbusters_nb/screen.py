"""Moved to bertbusters_nb.evaluation.screen (this path works for one release)."""

from ._moved import forward

__getattr__, __dir__ = forward(__name__, "bertbusters_nb.evaluation.screen")
