"""The one way this package writes files and folders: complete or not at all (base layer).

A file is written to a temp file in its own folder, fsynced and renamed over the target
(``os.replace`` is atomic on one filesystem), so a reader sees the old content or the new,
never a half-written file. A folder (a checkpoint, a fine-tuning cache entry) is written the
same way one level up: into a temp folder beside the target, every file fsynced, then renamed
into place, so a kill at any moment leaves either no folder or a complete one.

Temp names carry the writer's pid (``.<name>.<pid>.<random>.tmp`` for files,
``.tmp-<name>-<pid>-<random>`` for folders); those of a writer that was killed (SIGKILL skips
every cleanup) are removed by the next write of the same target, a live writer's are kept.

Example:
    >>> atomic_write_json("out/config.json", {"seed": 0})          # doctest: +SKIP
    >>> with atomic_folder("out/checkpoints/step_00000010") as tmp:  # doctest: +SKIP
    ...     atomic_write_bytes(tmp / "model.safetensors", data)
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

__all__ = [
    "pid_alive",
    "remove_stale_temporaries",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "read_json",
    "atomic_folder",
    "remove_stale_folders",
]


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
        pid = tmp.name[len(path.name) + 2 :].split(".", 1)[0]
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
    """:func:`atomic_write_bytes` of ``text`` as UTF-8."""
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """:func:`atomic_write_text` of ``obj`` as indented, key-sorted JSON (the same bytes for the same object)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, default=str, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read JSON, turning a corrupt or truncated file into a clear error that names it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is corrupt or truncated ({exc}); delete it to recompute.") from None


def _folder_prefix(final: Path) -> str:
    return f".tmp-{final.name}-"


def remove_stale_folders(final: str | os.PathLike) -> list[Path]:
    """Delete the temp folders that writers of ``final`` killed mid-write left behind (their process is gone)."""
    final = Path(final)
    prefix = _folder_prefix(final)
    removed = []
    for stale in final.parent.glob(f"{prefix}*"):
        pid = stale.name[len(prefix) :].split("-", 1)[0]
        if stale.is_dir() and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
            removed.append(stale)
    return removed


def _fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (so the rename publishes data that is on disk)."""
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(folder))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where that is not available."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


@contextmanager
def atomic_folder(final: str | os.PathLike) -> Iterator[Path]:
    """Write the folder ``final`` all-or-nothing: yield a temp folder beside it, publish it on normal exit.

    Inside the ``with`` block write every file into the yielded folder. On normal exit every file
    is fsynced and the folder is renamed to ``final`` (an existing ``final`` is swapped with it in
    one ``renameat2`` exchange on Linux, elsewhere moved aside first); on an exception, a kill or
    a crash ``final`` keeps its old content and the temp folder is removed (after SIGKILL: by the
    next writer of ``final``).

    Example:
        >>> with atomic_folder(cache / "entry") as tmp:  # doctest: +SKIP
        ...     model.save_pretrained(tmp)
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_folders(final)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f"{_folder_prefix(final)}{os.getpid()}-"))
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # like any folder (mkdtemp makes it private)
        _fsync_tree(tmp)
        if final.exists() and not _exchange(tmp, final):  # exchanged: tmp now holds the old one, removed below
            aside = Path(tempfile.mkdtemp(dir=final.parent, prefix=f"{_folder_prefix(final)}{os.getpid()}-old-"))
            os.replace(final, aside / final.name)  # no renameat2: a short window with no ``final``
            os.replace(tmp, final)
            shutil.rmtree(aside, ignore_errors=True)
        elif not final.exists():
            os.replace(tmp, final)
        _fsync_dir(final.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
