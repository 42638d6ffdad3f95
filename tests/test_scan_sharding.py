"""Scans sharded across processes with accelerate (2 CPU processes, gloo) give the single-process table."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from shard_setup import tiny_scan_setup

from bertbusters_nb.evaluation.scan import merge_scan_parts, scan_dims, sharded_scan

pytestmark = pytest.mark.usefixtures("one_thread")
HERE = Path(__file__).resolve().parent


def test_two_processes_under_accelerate_launch_merge_to_the_single_process_table(tmp_path):
    model, eval_set = tiny_scan_setup()
    single = scan_dims(model, eval_set, dims=list(range(12)), progress=False, autocast=None)
    accelerate = Path(sys.executable).with_name("accelerate")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{HERE.parent}{os.pathsep}{HERE}"}
    out = tmp_path / "merged.pkl"
    with socket.socket() as s:  # a free port for the processes' rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # "--multi_gpu" selects accelerate's torchrun launcher; without a GPU its processes use gloo on the CPU
    # ("--cpu --num_processes 2" would need MPI and runs one process).
    done = subprocess.run(
        [
            str(accelerate),
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(port),
            str(HERE / "scan_shard_worker.py"),
            str(tmp_path / "parts"),
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    merged = pd.read_pickle(out)
    assert merged.attrs.pop("world") == 2
    parts = sorted(p.name for p in (tmp_path / "parts").glob("part-*.json"))
    assert parts == ["part-000-of-002.json", "part-001-of-002.json"]
    pd.testing.assert_frame_equal(merged, single)
    again = merge_scan_parts(tmp_path / "parts")  # the merge alone, from the files
    pd.testing.assert_frame_equal(again, single)


def test_one_process_shards_nothing_and_a_missing_part_is_named(tmp_path):
    model, eval_set = tiny_scan_setup()
    table = sharded_scan(model, eval_set, tmp_path / "parts", dims=[1, 4], progress=False, autocast=None)
    pd.testing.assert_frame_equal(table, scan_dims(model, eval_set, dims=[1, 4], progress=False, autocast=None))
    (tmp_path / "parts" / "part-000-of-001.json").rename(tmp_path / "parts" / "part-000-of-002.json")
    with pytest.raises(FileNotFoundError, match="part-001-of-002"):
        merge_scan_parts(tmp_path / "parts")
