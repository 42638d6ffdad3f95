"""Old path, kept for one release: the atomic writers live in ``bertbusters_nb.atomic``, ``RunRecorder``
in ``bertbusters_nb.reporting.recorder``. Package code imports those, never this file."""

from __future__ import annotations

from ._moved import forward as _forward

# The writers live in the base layer (atomic.py); re-exported here for old imports.
from .atomic import (  # noqa: F401
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    pid_alive,
    read_json,
    remove_stale_temporaries,
)

_recorder, _ = _forward(__name__, "bertbusters_nb.reporting.recorder")


def __getattr__(name: str):
    """``RunRecorder`` moved to ``bertbusters_nb.reporting.recorder``: warns once with the new path and forwards."""
    if name == "RunRecorder":
        return _recorder(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
