"""Full scan: every hidden dimension disabled alone in the chosen sites, resumable.

Partial results go to a JSON checkpoint (written atomically: temp file + rename) every
``checkpoint_every`` dims. A killed scan, run again with the same arguments, reads the
checkpoint and computes only the dims still missing, so it ends with the same table as an
uninterrupted scan. The checkpoint carries a schema tag, a key describing the scan (eval
set, model, sites, dims, mode) and a SHA-256 checksum of its content: a corrupt or
truncated file is reported with a ``CheckpointWarning`` and recomputed; a checkpoint of a
different scan is refused (ValueError), never silently mixed in.

Naming, the one rule: a caller that gives a folder (``checkpoint_dir``) gets the file
``checkpoint_name(key)`` = ``scan-<hash of the scan's key>.json`` there, so a scan with any other
model, eval set, sites, mode or dims never meets it (notebooks 03 and 04, sharded scans);
``checkpoint_path`` names one file exactly (tests, scripts).

Table: one row per dim, in the order of ``dims``: ``dim``, the columns of
``evaluate_conditions`` (see ``evaluation.tables``; ``spec`` holds each row's condition), then ``intact_value`` (the
headline metric of the intact model), ``delta`` (value - intact_value) and ``value_kind`` ("exact": the
row was evaluated, as opposed to the "estimate" rows of ``screen.screened_scan``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import pandas as pd
import torch

from ..atomic import atomic_write_json, read_json
from ..model.ablation import Condition, validate_dims
from ..model.discovery import find_norm_sites
from ..model.edits import Mode
from ..model.fingerprint import model_fingerprint  # noqa: F401  (re-exported: scan keys use it)
from ..model.sites import NormSite, select_sites
from .engine import AblationEngine
from .progress import progress_bar
from .sets import EvalSet
from .tables import condition_row, condition_spec, metric_columns, rows_to_table

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

SCHEMA = "bertbusters_nb.scan/1"


class CheckpointWarning(UserWarning):
    """A scan checkpoint could not be trusted and is being recomputed."""


def _checksum(payload: dict) -> str:
    text = json.dumps(payload, sort_keys=True, default=str, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _load_checkpoint(path: Path, key: dict) -> dict | None:
    """The checkpoint's content if it is sound and belongs to this scan; None (with a warning) if corrupt."""
    if not path.exists():
        return None
    try:
        saved = read_json(path)
        ok = (
            isinstance(saved, dict)
            and saved.get("schema") == SCHEMA
            and isinstance(saved.get("rows"), list)
            and saved.get("checksum") == _checksum({k: saved[k] for k in ("schema", "key", "intact", "rows")})
        )
    except (ValueError, KeyError, TypeError, OSError) as exc:
        ok, saved = False, str(exc)
    if not ok:
        warnings.warn(
            f"Scan checkpoint {path} is corrupt or from another version (schema/checksum mismatch); "
            f"recomputing the scan from the start.",
            CheckpointWarning,
            stacklevel=3,
        )
        return None
    if saved["key"] != key:
        differs = sorted(k for k in set(key) | set(saved["key"]) if key.get(k) != saved["key"].get(k))
        raise ValueError(
            f"Scan checkpoint {path} belongs to a different scan (differs in {differs}); delete it "
            f"or pass another checkpoint_path."
        )
    return saved


def checkpoint_name(key: dict) -> str:
    """The file name of a scan's checkpoint in a ``checkpoint_dir``: ``scan-<16 hex digits of its key>.json``."""
    return f"scan-{_checksum(key)[:16]}.json"


def _save_checkpoint(path: Path, key: dict, intact: dict, rows: list[dict]) -> None:
    payload = {"schema": SCHEMA, "key": key, "intact": intact, "rows": rows}
    atomic_write_json(path, {**payload, "checksum": _checksum(payload)})


def scan_dims(
    model: PreTrainedModel | torch.nn.Module,
    eval_set: EvalSet,
    *,
    roles: Iterable[str] | str = ("block_output",),
    layers: Iterable[int] | None = None,
    dims: Iterable[int] | None = None,
    mode: Mode = "zero",
    checkpoint_path: str | Path | None = None,
    progress: bool = True,
    stack: str | None = None,
    sites: Sequence[NormSite] | None = None,
    checkpoint_every: int = 8,
    checkpoint_dir: str | os.PathLike | None = None,
    **engine_options,
) -> pd.DataFrame:
    """Disable each of ``dims`` (default: every hidden dim) alone in the chosen sites; one row per dim.

    ``engine_options`` go to ``AblationEngine``. With ``checkpoint_dir`` (the checkpoint is named by the
    scan: ``checkpoint_name``) or ``checkpoint_path`` (that file) a killed scan resumes.

    Example:
        >>> table = scan_dims(model, eval_set, roles="block_output", checkpoint_dir="figures/03")
        >>> table.nlargest(3, "delta")[["dim", "value", "delta"]]  # doctest: +SKIP
    """
    all_sites = list(sites) if sites is not None else find_norm_sites(model)
    roles = (roles,) if isinstance(roles, str) else tuple(roles)
    layers = None if layers is None else tuple(int(l) for l in layers)
    chosen = select_sites(all_sites, roles=roles, layers=layers, stack=stack)
    size = min(s.size for s in chosen)
    dims = list(range(size)) if dims is None else validate_dims(dims, size)
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1 (got {checkpoint_every}).")
    if checkpoint_path is not None and checkpoint_dir is not None:
        raise ValueError("Pass checkpoint_dir (the scan names its file) or checkpoint_path (one file), not both.")
    engine = AblationEngine(model, eval_set, all_sites, chunk_size=checkpoint_every, **engine_options)
    key = {
        "eval_set": engine.eval_set.fingerprint(),
        "kind": engine.eval_set.kind,
        "model": model_fingerprint(model, all_sites),
        "sites": [s.name for s in chosen],
        "roles": list(roles),
        "layers": None if layers is None else list(layers),
        "stack": stack,
        "mode": mode,
        "dims": dims,
    }
    path = (
        Path(checkpoint_path)
        if checkpoint_path is not None
        else Path(checkpoint_dir) / checkpoint_name(key)
        if checkpoint_dir is not None
        else None
    )
    saved = _load_checkpoint(path, key) if path is not None else None
    rows: list[dict] = list(saved["rows"]) if saved else []
    intact = (
        saved["intact"]
        if saved
        else condition_row(Condition("none"), engine.evaluate(Condition("none")), engine.eval_set, 0)
    )
    done = {row["dim"] for row in rows}
    conditions = {d: Condition(f"dim {d}", (d,), roles, layers, mode, stack) for d in dims}
    todo = [conditions[d] for d in dims if d not in done]
    if saved:
        log.info("resuming scan from %s: %d of %d dims done", path, len(done), len(dims))

    bar = progress_bar(len(dims), progress, initial=len(done))

    def on_chunk(finished):
        for cond, metrics in finished:
            rows.append({"dim": cond.dims[0], **condition_row(cond, metrics, engine.eval_set, len(chosen))})
        if path is not None:
            _save_checkpoint(path, key, intact, rows)
        bar.update(len(finished))

    try:
        if todo:
            engine.run(todo, progress=False, on_chunk=on_chunk)
        elif path is not None and not saved:
            _save_checkpoint(path, key, intact, rows)
    finally:
        bar.close()
    by_dim = {row["dim"]: row for row in rows}
    table = rows_to_table([{k: v for k, v in by_dim[d].items() if k != "dim"} for d in dims], engine.eval_set)
    table.insert(0, "dim", dims)
    table["spec"] = [condition_spec(conditions[d]) for d in dims]  # also for rows of an older checkpoint
    table["intact_value"] = float(intact["value"])
    for metric in metric_columns(engine.eval_set):  # the baseline of every metric, on the scan's own examples
        if metric in intact:
            table[f"intact_{metric}"] = float(intact[metric])
    table["delta"] = table["value"] - table["intact_value"]
    table["value_kind"] = "exact"  # every row evaluated; a screened scan (screen.py) also has "estimate" rows
    return table


# ------------------------------------------------------------------ sharded scans (accelerate)
PART_SCHEMA = "bertbusters_nb.scan-part/1"


def _process_state():
    """accelerate's PartialState (rank, world size, barrier) under ``accelerate launch``; one process otherwise."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def _part_path(parts_dir: Path, rank: int, world: int) -> Path:
    return parts_dir / f"part-{rank:03d}-of-{world:03d}.json"


def merge_scan_parts(parts_dir: str | Path, world: int | None = None) -> pd.DataFrame:
    """The full scan table from the parts a sharded scan wrote in ``parts_dir`` (rows in the scan's dim order).

    Raises FileNotFoundError naming the missing parts (a process that did not finish) and ValueError when
    the parts belong to different scans.
    """
    parts_dir = Path(parts_dir)
    files = sorted(parts_dir.glob("part-*-of-*.json"))
    if not files:
        raise FileNotFoundError(f"No scan parts in {parts_dir}: run sharded_scan (under accelerate launch) first.")
    world = world or int(files[0].stem.rsplit("-", 1)[1])
    missing = [
        str(_part_path(parts_dir, r, world)) for r in range(world) if not _part_path(parts_dir, r, world).exists()
    ]
    if missing:
        raise FileNotFoundError(f"Scan parts missing (a process did not finish; rerun it to resume): {missing}")
    parts = [read_json(_part_path(parts_dir, r, world)) for r in range(world)]
    if any(p.get("schema") != PART_SCHEMA for p in parts) or any(p["key"] != parts[0]["key"] for p in parts):
        raise ValueError(f"The parts in {parts_dir} are not all from one scan; delete the folder and rerun.")
    columns = parts[0]["columns"]
    by_dim = {row["dim"]: row for p in parts for row in p["rows"]}
    table = pd.DataFrame([by_dim[d] for d in parts[0]["key"]["dims"]], columns=columns)
    if "seed" in table:
        table["seed"] = table["seed"].astype("Int64")
    return table


def sharded_scan(
    model: PreTrainedModel | torch.nn.Module,
    eval_set: EvalSet,
    parts_dir: str | Path,
    dims: Iterable[int] | None = None,
    **scan_options,
) -> pd.DataFrame:
    """``scan_dims`` with its dims split across the processes of ``accelerate launch`` (one process: all dims).

    Process r of w scans dims[r::w] (resumable through its own checkpoint in ``parts_dir``), writes its rows
    atomically to ``parts_dir/part-r-of-w.json``, waits for the others, and every process returns the
    merged table (``merge_scan_parts``), equal to a single-process ``scan_dims``. Works for verifying a
    screen's top dims too (pass them as ``dims``).

    Example (``accelerate launch --multi_gpu --num_processes 2 my_scan.py``: one process per GPU, or without a
    GPU two CPU processes on gloo; ``--cpu --num_processes 2`` would need MPI and runs a single process):
        >>> table = sharded_scan(model, eval_set, "figures/scan_parts", roles="block_output")  # doctest: +SKIP
    """
    state = _process_state()
    rank, world = state.process_index, state.num_processes
    parts_dir = Path(parts_dir)
    parts_dir.mkdir(parents=True, exist_ok=True)
    sites = scan_options.get("sites")
    all_sites = list(sites) if sites is not None else find_norm_sites(model)
    roles = scan_options.get("roles", ("block_output",))
    roles = (roles,) if isinstance(roles, str) else tuple(roles)
    layers = scan_options.get("layers")
    chosen = select_sites(
        all_sites, roles=roles, layers=None if layers is None else tuple(layers), stack=scan_options.get("stack")
    )
    size = min(s.size for s in chosen)
    dims = list(range(size)) if dims is None else validate_dims(dims, size)
    mine = dims[rank::world]
    key = {
        "eval_set": eval_set.fingerprint(),
        "model": model_fingerprint(model, all_sites),
        "sites": [s.name for s in chosen],
        "mode": scan_options.get("mode", "zero"),
        "dims": dims,
        "world": world,
    }
    if mine:
        part = scan_dims(
            model,
            eval_set,
            dims=mine,
            progress=scan_options.pop("progress", rank == 0),
            checkpoint_dir=parts_dir,
            **scan_options,
        )  # named by its key, which holds its dims
        rows = [{c: _plain(v) for c, v in zip(part.columns, values)} for values in part.itertuples(index=False)]
        columns = list(part.columns)
    else:
        rows, columns = [], None
    atomic_write_json(
        _part_path(parts_dir, rank, world),
        {"schema": PART_SCHEMA, "key": key, "rank": rank, "columns": columns, "rows": rows},
    )
    state.wait_for_everyone()
    table = merge_scan_parts(parts_dir, world)
    state.wait_for_everyone()  # nobody removes or rewrites a part before every process has read them
    return table


def _plain(value):
    """A table cell as JSON keeps it exactly (floats round-trip through repr; pandas NA -> None)."""
    if value is None or value is pd.NA:
        return None
    if hasattr(value, "item"):
        return value.item()
    return value
