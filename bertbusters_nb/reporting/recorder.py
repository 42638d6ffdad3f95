"""One place that saves a notebook run's tables, figures, findings and config, atomically.

Every write goes through ``bertbusters_nb.atomic`` (a temporary file in the same folder renamed
into place), so a killed run never leaves a half-written file that a later run would trust.
The config comes from ``notebook_parameters(globals())``, so it is never retyped by hand.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..atomic import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from ..paths import in_project
from ..shared_results import set_run_label

__all__ = ["RunRecorder"]


@dataclass(init=False)
class RunRecorder:
    """Saves a notebook run's tables, figures and findings under ``out_dir`` with its config beside them.

    A relative ``out_dir`` (a notebook's ``"figures/offline/00_core_minilm"``) is taken from the project root
    (``paths.in_project``), so a kernel started in ``notebooks/`` writes to the top-level ``figures/``.

    Example:
        >>> rec = RunRecorder(out_dir, config=bb.notebook_parameters(globals()))   # doctest: +SKIP
        >>> rec.table(df, "conditions"); rec.figure(fig, "scan"); rec.finding(*finding)  # doctest: +SKIP
    """

    out_dir: Path
    config: dict

    def __init__(self, out_dir: str | os.PathLike, config: dict | None = None) -> None:
        self.out_dir = in_project(out_dir)  # relative: from the project root, wherever the kernel started
        self.config = {} if config is None else config
        self.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.out_dir / "config.json", self.config)
        # results this run puts into the shared cache name it: profile and notebook ("offline/02_position_consistency"),
        # whether the runner has it write into an attempt folder or not
        set_run_label(f"{self.config.get('profile') or self.out_dir.parent.name}/{self.out_dir.name}")

    def table(self, frame: pd.DataFrame | None, name: str) -> Path | None:
        """Save a tidy table as CSV (the config lies beside it in config.json). ``None`` (a record this run does
        not have, e.g. notebook 01's per-snapshot ablation of a hub checkpoint series) writes nothing."""
        if frame is None:
            return None
        return atomic_write_text(self.out_dir / f"{name}.csv", frame.to_csv(index=False))

    def figure(self, fig, name: str, dpi: int = 110) -> Path:
        """Save a matplotlib Figure as PNG and return its path; the caller still shows it."""
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
        return atomic_write_bytes(self.out_dir / f"{name}.png", buffer.getvalue())

    def finding(self, claim: str, held: bool | None, evidence: str, outcome: str | None = None) -> dict:
        """Record whether a claim of the paper held in this run, with the numbers that decide it
        (``rec.finding(*finding)`` with a ``reporting.claims.Finding``). ``outcome``: one of
        ``claims.OUTCOMES`` (held, beyond every random draw but small, did not hold, inconclusive); from
        ``held`` when not given."""
        from .claims import outcome_of, summary_verdict

        entry = {"claim": claim, "held": held, "evidence": evidence, "outcome": outcome or outcome_of(held)}
        path = self.out_dir / "findings.json"
        findings = read_json(path) if path.exists() else []
        atomic_write_json(path, [f for f in findings if f["claim"] != claim] + [entry])
        return {"claim": claim, "verdict": summary_verdict(entry).upper(), "evidence": evidence}

    def record(self, findings: Sequence) -> list:
        """Record every ``reporting.claims.Finding`` of ``findings`` (``finding(*f)`` each) and return them."""
        for f in findings:
            self.finding(*f)
        return list(findings)

    def tables(self, tables: Mapping[str, pd.DataFrame | None]) -> list[Path]:
        """Save every table of a name -> table mapping (a study's ``tables()``; a None table writes nothing)."""
        saved = (self.table(frame, name) for name, frame in tables.items())
        return [path for path in saved if path is not None]

    def findings(self) -> list[dict]:
        """Every finding recorded so far in this run's folder (claim, held, evidence), in order."""
        path = self.out_dir / "findings.json"
        return read_json(path) if path.exists() else []
