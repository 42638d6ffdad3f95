"""Pre-training data-parallel under ``accelerate launch`` (2 CPU processes, gloo) equals the one-process run.

The same command line as one process (``python -m bertbusters_nb.pretraining train``), launched on
two processes: each takes half of every global batch, gradients are all-reduced. The run writes
its checkpoints (main process only, atomically), a second launch resumes from them, and the
weights and losses match a one-process run with the same global batch.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file

from bertbusters_nb import pretraining as pt
from bertbusters_nb.atomic import read_json
from bertbusters_nb.pretraining.tokenizer import prepare_data_from_texts

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parent.parent
WORDS = (
    "the a film movie story actor plot scene good bad great boring funny long short love hate watch "
    "saw man woman dog cat ran sat on in over under because and but very really not quite"
).split()
FLAGS = {
    "hidden": 32,
    "layers": 2,
    "heads": 2,
    "intermediate": 64,
    "batch_size": 8,
    "lr": 3e-3,
    "warmup_steps": 3,
    "log_every": 3,
    "save_every": 3,
    "eval_sequences": 16,
    "eval_batch_size": 16,
    "device": "cpu",
}


def _texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))) + "." for _ in range(n)]


def _launch(out: Path, data_dir: Path, max_steps: int) -> subprocess.CompletedProcess:
    accelerate = Path(sys.executable).with_name("accelerate")
    with socket.socket() as s:  # a free port for the processes' rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    flags = [x for k, v in {**FLAGS, "max_steps": max_steps}.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    # "--multi_gpu" selects accelerate's torchrun launcher; without a GPU its processes use gloo on the CPU.
    return subprocess.run(
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
            "-m",
            "bertbusters_nb.pretraining",
            "train",
            "--out",
            str(out),
            "--no-progress",
            "--data-dir",
            str(data_dir),
            *flags,
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )


def _errors(done: subprocess.CompletedProcess) -> str:
    lines = [l for l in done.stderr.splitlines() if "Warning" not in l and not l.startswith("  ")]
    return "\n".join(lines)[-4000:]


@pytest.mark.slow
def test_two_processes_write_checkpoints_resume_and_match_one_process(tmp_path):
    data_dir = prepare_data_from_texts(
        _texts(600, 0), _texts(60, 1), tmp_path / "data", vocab_size=80, seq_len=32, min_frequency=1
    )
    config = pt.PretrainConfig(data_dir=str(data_dir), max_steps=12, **FLAGS)
    single = pt.pretrain(config, tmp_path / "single", progress=False)
    parallel = tmp_path / "parallel"

    first = _launch(parallel, data_dir, max_steps=6)
    assert first.returncode == 0, _errors(first)
    assert read_json(parallel / "config.json")["environment"]["processes"] == 2  # one run on two processes
    assert [p.name for p in pt.checkpoint_dirs(parallel)] == ["step_00000006"]
    assert not list((parallel / "checkpoints").glob(".tmp-*"))  # written whole, by one process
    second = _launch(parallel, data_dir, max_steps=12)
    assert second.returncode == 0, _errors(second)
    assert "resumed" in second.stderr and "at step 6" in second.stderr
    assert [p.name for p in pt.checkpoint_dirs(parallel)] == ["step_00000012"]

    # Same global batch, same masks: the processes' scaled sums of half-batch losses give the one-process
    # gradient; only the order of fp32 additions differs (per-shard sums, then the all-reduce), which moves
    # the last bits of a step (measured here: 6e-8 after 12 steps) and Adam carries on, so weights agree to
    # ATOL, not exactly. A gradient of one shard alone, or not averaged, moves them by ~lr per step (3e-3;
    # measured: 6e-2 for batches of 4), thousands of times more: `off` checks the tolerance can tell.
    ATOL = 1e-5
    want = load_file(str(tmp_path / "single" / "checkpoints" / "step_00000012" / "model.safetensors"))
    got = load_file(str(parallel / "checkpoints" / "step_00000012" / "model.safetensors"))
    assert want.keys() == got.keys()
    gap = max((want[k] - got[k]).abs().max().item() for k in want)
    assert gap < ATOL, gap
    half = pt.pretrain(
        pt.PretrainConfig(data_dir=str(data_dir), **{**FLAGS, "batch_size": 4, "max_steps": 12}),
        tmp_path / "half",
        progress=False,
    )
    other = load_file(str(half.out_dir / "checkpoints" / "step_00000012" / "model.safetensors"))
    off = max((want[k] - other[k]).abs().max().item() for k in want)
    assert off > 100 * ATOL, off  # the tolerance is far tighter than a wrong gradient's effect

    log_one = pd.read_csv(tmp_path / "single" / "train_log.csv")
    log_two = pd.read_csv(parallel / "train_log.csv")
    assert list(log_two.step) == list(log_one.step) == [0, 3, 6, 9, 12]
    np.testing.assert_allclose(log_two.train_loss[1:], log_one.train_loss[1:], rtol=1e-5)
    np.testing.assert_allclose(log_two.eval_loss, log_one.eval_loss, rtol=1e-5)
    traj = pt.NormTrajectory.load(parallel / "norm_trajectory.npz")
    assert traj.steps == list(log_one.step)
    single_traj = pt.NormTrajectory.load(single.out_dir / "norm_trajectory.npz")
    assert np.array_equal(traj.weight[0], single_traj.weight[0])  # the same seeded initialisation
    np.testing.assert_allclose(np.stack(traj.weight), np.stack(single_traj.weight), rtol=0, atol=ATOL)
