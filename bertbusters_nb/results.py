"""One place that saves tables, figures, findings and the run's config, atomically.

Every write goes to a temporary file in the same folder and is renamed into place, so a
killed run never leaves a half-written file that a later run would trust.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs on this machine (stale temp files name their writer's pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temp files that writers of ``path`` killed mid-write left behind (their process is gone)."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file + rename (never a partial file).

    The temp file is named ``.<name>.<pid>.<random>.tmp``; ones left by a writer that was killed
    (SIGKILL skips every cleanup) are deleted on the next write of the same file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # readable like any result file (mkstemp makes it private)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=str, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read JSON, turning a corrupt or truncated file into a clear error that names it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is corrupt or truncated ({exc}); delete it to recompute.") from None


@dataclass
class RunRecorder:
    """Saves a notebook run's tables, figures and findings under ``out_dir`` with its config beside them.

    Example:
        >>> rec = RunRecorder("figures/offline/03_mlm", config={"model": "bbmini"})
        >>> rec.table(df, "conditions"); rec.figure(fig, "scan"); rec.finding("...", held=True)  # doctest: +SKIP
    """

    out_dir: str | os.PathLike
    config: dict = field(default_factory=dict)

    def __post_init__(self):
        self.out_dir = Path(self.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.out_dir / "config.json", self.config)

    def table(self, frame: pd.DataFrame, name: str) -> Path:
        """Save a tidy table as CSV (the config lies beside it in config.json)."""
        return atomic_write_text(self.out_dir / f"{name}.csv", frame.to_csv(index=False))

    def figure(self, fig, name: str, dpi: int = 110) -> Path:
        """Save a matplotlib Figure as PNG and return its path; the caller still shows it."""
        import io

        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
        return atomic_write_bytes(self.out_dir / f"{name}.png", buffer.getvalue())

    def finding(self, claim: str, held: bool | None, evidence: str) -> dict:
        """Record whether a claim of the paper held in this run, with the numbers that decide it."""
        path = self.out_dir / "findings.json"
        findings = read_json(path) if path.exists() else []
        findings = [f for f in findings if f["claim"] != claim] + [
            {"claim": claim, "held": held, "evidence": evidence}]
        atomic_write_json(path, findings)
        verdict = {True: "HELD", False: "DID NOT HOLD", None: "INCONCLUSIVE"}[held]
        return {"claim": claim, "verdict": verdict, "evidence": evidence}
