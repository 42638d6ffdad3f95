"""Where one notebook run writes, and how its results replace the last good ones in one step (app layer).

Per profile P and notebook N, under the figures folder:

- ``P/N/``: the last good run of N: its executed notebook, tables, figures, ``config.json``, ``findings.json``,
  ``run.log`` and ``.done.json`` (fingerprint, parameters, when it finished).
- ``P/attempts/N/``: a run of N in progress, or the last one that failed, was interrupted or was killed: the
  same files as far as it got, and ``attempt.json`` (status, error, failing cell, the pid that ran it).

A run writes only into its attempt folder (the runner passes it as the notebook's ``out_dir``). When the
notebook finishes, the attempt folder becomes the results folder through ``atomic.atomic_folder`` (renamed
beside it, then exchanged with it in one ``renameat2``), so a reader sees the old results or the new ones,
never a mix; a failed, refused, interrupted or killed run leaves every byte of ``P/N/`` as it was.

Resume: a re-run with the same fingerprint (notebook bytes and parameters) continues in the kept attempt
folder, so whatever the notebook checkpoints under ``out_dir`` (scan checkpoints, notebook 01's live
pre-training) is reused. A run with another fingerprint starts a fresh attempt folder, seeded with the scan
checkpoints (``scan-*.json``, named by each scan's key, see ``evaluation.scan.checkpoint_name``, so a changed
scan never reads another's) of the last good run and of the old attempt. Fine-tunes are cached elsewhere
(``finetuning.cache``) and reused by any run.

Example:
    >>> folders = RunFolders.of(Path("figures"), "offline", "03_mlm_degradation")  # doctest: +SKIP
    >>> folders.results, folders.attempt  # doctest: +SKIP
    (PosixPath('figures/offline/03_mlm_degradation'), PosixPath('figures/offline/attempts/03_mlm_degradation'))
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import atomic_folder, atomic_write_bytes, atomic_write_json, pid_alive, read_json

log = logging.getLogger(__name__)

ATTEMPTS = "attempts"  # figures/<profile>/attempts/<notebook>/
DONE = ".done.json"  # in a results folder: the finished run's fingerprint, parameters and time
ATTEMPT = "attempt.json"  # in an attempt folder: its status
LOG = "run.log"  # the cells' stdout and stderr, then the outcome
CARRY_OVER = ("scan-*.json",)  # self-checking, key-named checkpoints: safe to hand to a run with other parameters


class RunRefusedError(ValueError):
    """A run cannot start (another process is running the same notebook into the same folder)."""


def now() -> str:
    """The current UTC time as ``2026-12-03T06:40:12Z`` (how run records say when)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class RunFolders:
    """The results folder and the attempt folder of one notebook in one profile."""

    results: Path
    attempt: Path

    @classmethod
    def of(cls, figures_dir: str | os.PathLike, profile: str, notebook: str) -> "RunFolders":
        base = Path(figures_dir) / profile
        return cls(base / notebook, base / ATTEMPTS / notebook)


def read_record(path: Path) -> dict | None:
    """A run record (``.done.json`` or ``attempt.json``); None when absent, ``{"unreadable": why}`` when corrupt."""
    if not path.is_file():
        return None
    try:
        record = read_json(path)
    except (OSError, ValueError) as exc:
        return {"unreadable": str(exc)}
    return record if isinstance(record, dict) else {"unreadable": f"{path} holds no JSON object"}


def attempt_status(record: dict) -> str:
    """'running' (its process is alive), 'interrupted' (marked running, its process is gone: killed),
    'failed', or 'unreadable'."""
    if "unreadable" in record:
        return "unreadable"
    status = record.get("status", "unreadable")
    if status == "running":
        same_host = record.get("host") in (None, socket.gethostname())
        pid = record.get("pid")
        alive = isinstance(pid, int) and (pid_alive(pid) if same_host else True)
        return "running" if alive else "interrupted"
    return status


def check_not_running(folders: RunFolders) -> None:
    """Refuse to start when another live process is running this notebook into this attempt folder."""
    record = read_record(folders.attempt / ATTEMPT)
    if record and attempt_status(record) == "running" and record.get("pid") != os.getpid():
        raise RunRefusedError(
            f"{folders.attempt.name} is being run by process {record.get('pid')} (since {record.get('started')}) "
            f"into {folders.attempt}; wait for it or stop it. If no such run is going on, delete that folder."
        )


def _carried_checkpoints(folders: RunFolders) -> dict[str, bytes]:
    """The key-named checkpoints of the last good run and of the old attempt (the good run's win)."""
    found: dict[str, bytes] = {}
    for folder in (folders.attempt, folders.results):  # later wins: a finished run's scans are complete
        for pattern in CARRY_OVER:
            for path in folder.glob(pattern) if folder.is_dir() else ():
                found[path.name] = path.read_bytes()
    return found


def open_attempt(folders: RunFolders, record: dict[str, Any]) -> bool:
    """Make the attempt folder for a run described by ``record`` (its ``fingerprint`` decides) and mark it running.

    Returns True when it resumes a kept attempt of the same fingerprint (its files stay), False when it starts
    a fresh folder (holding only the carried-over checkpoints)."""
    old = read_record(folders.attempt / ATTEMPT)
    resumed = (
        old is not None and bool(old) and old.get("fingerprint") == record["fingerprint"] and folders.attempt.is_dir()
    )
    if not resumed:
        carried = _carried_checkpoints(folders)
        shutil.rmtree(folders.attempt, ignore_errors=True)
        folders.attempt.mkdir(parents=True)
        for name, data in carried.items():
            atomic_write_bytes(folders.attempt / name, data)
        if carried:
            log.info("%s: carried over %d scan checkpoint(s): %s", folders.attempt.name, len(carried), sorted(carried))
    else:
        log.info("%s: resuming the kept attempt in %s", folders.attempt.name, folders.attempt)
    started = now()
    atomic_write_json(
        folders.attempt / ATTEMPT,
        {**record, "status": "running", "pid": os.getpid(), "host": socket.gethostname(), "started": started},
    )
    with open(folders.attempt / LOG, "a" if resumed else "w") as handle:
        handle.write(f"=== {folders.attempt.name}: run started {started}{' (resuming)' if resumed else ''}\n")
    return resumed


def close_attempt(folders: RunFolders, status: str, **fields: Any) -> None:
    """Mark the kept attempt ``status`` ('failed' or 'interrupted') with the error fields, in its record and log."""
    record = read_record(folders.attempt / ATTEMPT) or {}
    record = {k: v for k, v in record.items() if k != "unreadable"}
    record.update(status=status, finished=now(), **fields)
    atomic_write_json(folders.attempt / ATTEMPT, record)
    with open(folders.attempt / LOG, "a") as handle:
        handle.write(f"=== {status} {record['finished']}: {fields.get('error', '')}\n")


def publish(folders: RunFolders, done: dict[str, Any], out_dir_param: str | None) -> None:
    """Turn the finished attempt into the results folder in one step, with ``done`` as its ``.done.json``.

    ``config.json`` (written by ``RunRecorder`` with the attempt folder as ``out_dir``) is made to name the
    results folder, where its files now are."""
    attempt = folders.attempt
    config = attempt / "config.json"
    if out_dir_param is not None and config.is_file():
        values = read_record(config)
        if values and values.get("out_dir") == out_dir_param:
            atomic_write_json(config, {**values, "out_dir": str(folders.results)})
    record = read_record(attempt / ATTEMPT) or {}
    atomic_write_json(attempt / DONE, {**done, "started": record.get("started"), "finished": now()})
    (attempt / ATTEMPT).unlink(missing_ok=True)
    with open(attempt / LOG, "a") as handle:
        handle.write(f"=== finished {now()}; published to {folders.results}\n")
    with atomic_folder(folders.results) as staging:
        os.replace(attempt, staging)  # one rename (onto the empty temp folder); atomic_folder publishes it
    try:
        attempt.parent.rmdir()  # attempts/ when no other attempt is kept
    except OSError:
        pass
