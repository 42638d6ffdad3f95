"""One cache of computed results that several notebooks (and later runs) need: a later one reads what an
earlier one computed, and says so.

A result is a pandas table with a few JSON values (its ``attrs``), stored in ``<cache>/<kind>/<digest>/`` as
``table.parquet`` and ``meta.json``. The digest hashes the *key*: everything the result depends on (a model's
weights, ``model.fingerprint.weights_digest``; the exact inputs; the settings; the source of the code that computes
it), so a changed model, input or computation never reads an old result. ``meta.json`` holds the key itself
(checked on every read: a folder whose key differs, or that does not read, is computed again), which run computed it
and when. The run is the notebook's
run folder while a ``RunRecorder`` is open (``set_run_label``), else the process; ``SharedResult.provenance`` is
the sentence a table or figure built on the result shows.

Folder: ``$BERTBUSTERS_RESULTS`` or ``~/.cache/bertbusters_nb/results`` (beside the other caches);
``BERTBUSTERS_RESULTS=off`` computes every time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

import pandas as pd
import torch

from .atomic import atomic_folder, read_json

__all__ = [
    "RESULTS_ENV",
    "SharedResult",
    "results_dir",
    "run_label",
    "set_run_label",
    "shared_result",
    "source_digest",
    "tensors_digest",
]

log = logging.getLogger(__name__)

RESULTS_ENV = "BERTBUSTERS_RESULTS"
_run = {"label": ""}


def results_dir() -> Path | None:
    """The cache folder, or None when ``$BERTBUSTERS_RESULTS`` is ``off``."""
    value = os.environ.get(RESULTS_ENV, "")
    if value.strip().lower() in ("off", "0", "no", "false"):
        return None
    return Path(value) if value else Path.home() / ".cache" / "bertbusters_nb" / "results"


def set_run_label(label: str) -> None:
    """Name the run that computes results from now on (``RunRecorder`` sets its run folder, e.g.
    ``offline/02_position_consistency``)."""
    _run["label"] = str(label)


def run_label() -> str:
    """The run named by ``set_run_label``, else this process."""
    return _run["label"] or f"process {os.getpid()}"


def _digest(parts: Iterable[bytes]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    t = tensor.detach().contiguous().cpu()
    return f"{t.dtype}{tuple(t.shape)}".encode() + t.reshape(-1).view(torch.uint8).numpy().tobytes()


def tensors_digest(tensors: Iterable[torch.Tensor]) -> str:
    """A hash of tensors' dtypes, shapes and bytes, in order (e.g. a list of batches' token ids)."""
    return _digest(_tensor_bytes(t) for t in tensors)


def source_digest(*paths: str | os.PathLike) -> str:
    """A hash of source files: put the computing module's file in a key, and editing it invalidates its results."""
    return _digest(Path(p).read_bytes() for p in paths)


@dataclass
class SharedResult:
    """A result and where it came from. reused: read from the cache in this call. computed_by / computed_at:
    the run that computed it and when (UTC)."""

    table: pd.DataFrame
    reused: bool
    computed_by: str
    computed_at: str
    path: Path | None

    @property
    def provenance(self) -> str:
        if not self.reused:
            return f"computed in this run ({self.computed_by})"
        return f"read from the shared results cache: computed by {self.computed_by} at {self.computed_at}"


def _read(folder: Path, key_json: str) -> SharedResult | None:
    try:
        meta = read_json(folder / "meta.json")
        if json.dumps(meta["key"], sort_keys=True) != key_json:
            return None
        table = pd.read_parquet(folder / "table.parquet")
        table.attrs.update(meta.get("attrs", {}))
        return SharedResult(table, True, str(meta["computed_by"]), str(meta["computed_at"]), folder)
    except (OSError, ValueError, KeyError) as error:
        log.warning("shared result %s unreadable (%s); computing it again", folder, error)
        return None


def shared_result(kind: str, key: Mapping, compute: Callable[[], pd.DataFrame]) -> SharedResult:
    """``compute()``'s table for ``key``: read from the cache when an earlier run stored it, else computed and
    stored (atomically; two runs computing it at once both succeed, the last rename wins). ``key`` must be
    JSON-serialisable and hold everything the result depends on; the table's ``attrs`` must be JSON values.

    Example:
        >>> result = shared_result("profile", {"texts": tensors_digest(ids), "n": 48}, lambda: profile())
        >>> result.table, result.provenance  # doctest: +SKIP
    """
    key_json = json.dumps(dict(key), sort_keys=True)
    root = results_dir()
    folder = None if root is None else root / kind / _digest([kind.encode(), key_json.encode()])
    if folder is not None and folder.is_dir():
        found = _read(folder, key_json)
        if found is not None:
            return found
    table = compute()
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    result = SharedResult(table, False, run_label(), stamp, folder)
    if folder is not None:
        meta = {"key": json.loads(key_json), "computed_by": result.computed_by, "computed_at": stamp}
        meta["attrs"] = dict(table.attrs)
        try:
            with atomic_folder(folder) as tmp:
                table.to_parquet(tmp / "table.parquet", index=False)
                (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
        except OSError as error:  # a full or read-only disk costs the reuse, never the result
            log.warning("could not store shared result %s (%s)", folder, error)
    return result
