"""atomic.py: writes complete or absent, folders replaced all-or-nothing, killed writers' temps reclaimed."""

from __future__ import annotations

import os
import signal

import pytest

from bertbusters_nb import atomic
from bertbusters_nb.atomic import (
    atomic_folder,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    read_json,
    remove_stale_folders,
)


def test_an_interrupted_file_write_leaves_the_old_content(tmp_path, monkeypatch):
    target = tmp_path / "t.json"
    atomic_write_json(target, {"a": 1})
    before = target.read_bytes()

    def broken_fsync(fd):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk gone"):
        atomic_write_text(target, "half")
    monkeypatch.undo()
    assert target.read_bytes() == before and read_json(target) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]  # no temp file left behind


def test_read_json_names_a_corrupt_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": ')
    with pytest.raises(ValueError, match="bad.json is corrupt.*delete it"):
        read_json(bad)


def _write_folder(final, files):
    with atomic_folder(final) as tmp:
        for name, data in files.items():
            atomic_write_bytes(tmp / name, data)


def test_folder_is_published_complete(tmp_path):
    final = tmp_path / "ckpt" / "step_1"
    _write_folder(final, {"a.bin": b"A", "b.bin": b"B"})
    assert sorted(p.name for p in final.iterdir()) == ["a.bin", "b.bin"]
    assert (final / "a.bin").read_bytes() == b"A" and oct(final.stat().st_mode & 0o777) == "0o755"
    assert [p.name for p in final.parent.iterdir()] == ["step_1"]


def test_folder_replace_is_all_or_nothing(tmp_path):
    final = tmp_path / "entry"
    _write_folder(final, {"old.bin": b"old"})
    with pytest.raises(RuntimeError, match="mid-write"):
        with atomic_folder(final) as tmp:
            atomic_write_bytes(tmp / "new.bin", b"new")
            raise RuntimeError("killed mid-write")
    assert [p.name for p in final.iterdir()] == ["old.bin"] and (final / "old.bin").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]  # the temp folder is gone
    _write_folder(final, {"new.bin": b"new"})  # a completed replace shows only the new content
    assert [p.name for p in final.iterdir()] == ["new.bin"]
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]


def test_folder_replace_without_renameat2_also_replaces(tmp_path, monkeypatch):
    final = tmp_path / "entry"
    _write_folder(final, {"old.bin": b"old"})
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    _write_folder(final, {"new.bin": b"new"})
    assert [p.name for p in final.iterdir()] == ["new.bin"]
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]


def test_a_writer_killed_mid_folder_leaves_a_temp_that_the_next_writer_removes(tmp_path):
    final = tmp_path / "entry"
    _write_folder(final, {"old.bin": b"old"})
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: half-write the folder, say so, then wait to be killed
        try:
            os.close(read_end)
            with atomic_folder(final) as tmp:
                (tmp / "half.bin").write_bytes(b"half")
                os.write(write_end, b"x")
                signal.pause()
        finally:
            os._exit(0)
    os.close(write_end)
    assert os.read(read_end, 1) == b"x"
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    left = [p for p in tmp_path.iterdir() if p.name != "entry"]
    assert len(left) == 1 and left[0].name.startswith(f".tmp-entry-{pid}-")  # SIGKILL skipped every cleanup
    assert [p.name for p in final.iterdir()] == ["old.bin"]  # the reader still sees the old, complete folder
    mine = tmp_path / f".tmp-entry-{os.getpid()}-live"
    mine.mkdir()
    assert remove_stale_folders(final) == left  # the dead writer's is gone, a live one's kept
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["entry", mine.name])
