"""SIGKILL of a real process mid-run, then resume: the result equals an uninterrupted run's.

The killed runs are real child processes made with ``os.fork`` (a fresh interpreter would spend
most of the test importing transformers); the test kills them with SIGKILL, which no code in
the child can intercept, and then resumes in this process.

Scans: the child runs ``scan_dims`` with a checkpoint on a tiny random BERT; the test polls the
checkpoint and kills the child after a random amount of progress (each checkpoint write is
slowed a little so kills land before, during and after writes), three times. No restart may
see a corrupt checkpoint (CheckpointWarning is an error) or lose finished dims, and the final
table equals an uninterrupted scan's exactly.

Fine-tuning: the child runs ``finetune`` with Trainer checkpoints every 2 steps and is killed
once a complete checkpoint exists; the rerun resumes from it and ends with a valid cache entry
whose weights equal those of an uninterrupted run with the same seed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
import warnings
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest
import torch
import transformers as T
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from bertbusters_nb.evaluation import prepare_mlm_eval, scan
from bertbusters_nb.finetuning import FinetuneSettings, finetune

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
    pytest.mark.usefixtures("one_thread"),
]


def _fork(work: Callable[[], None]) -> int:
    """Run ``work`` in a forked child; returns its pid. The child exits 0 when done, 1 on an error."""
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            work()
            code = 0
        except BaseException:  # noqa: BLE001 - reported through the exit code
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def _kill_when(pid: int, ready: Callable[[], bool], timeout: float, extra_delay: float = 0.0) -> None:
    """SIGKILL ``pid`` once ``ready()`` holds (bounded wait); fails if the child ended first."""
    deadline = time.monotonic() + timeout
    while not ready():
        done, status = os.waitpid(pid, os.WNOHANG)
        assert done == 0, f"the child ended (status {status}) before it could be killed"
        assert time.monotonic() < deadline, "the child made no progress in time"
        time.sleep(0.01)
    time.sleep(extra_delay)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def _mlm_setup():
    words = [f"w{i}" for i in range(60)]
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok = T.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    rng = random.Random(1)
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 20))) for _ in range(12)]
    eval_set = prepare_mlm_eval(tok, texts, max_length=24, batch_size=6, device="cpu")
    torch.manual_seed(0)
    model = T.BertForMaskedLM(
        T.BertConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=32,
        )
    ).eval()
    return model, eval_set


def _rows(path: Path) -> int:
    try:
        return len(json.loads(path.read_text())["rows"])
    except (OSError, ValueError, KeyError):
        return 0


def test_scan_killed_with_sigkill_resumes_to_the_uninterrupted_table(tmp_path, monkeypatch):
    model, eval_set = _mlm_setup()
    options = dict(roles="block_output", checkpoint_every=2, progress=False)  # 32 dims: 16 checkpoint writes
    reference = scan.scan_dims(model, eval_set, **options)
    checkpoint = tmp_path / "scan.json"
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    real_write = scan.atomic_write_json

    def slow_write(path, payload):  # (in the child) a kill can land before, inside or after the write
        time.sleep(0.05 * random.random())
        real_write(path, payload)
        time.sleep(0.05 * random.random())

    def child():
        warnings.simplefilter("error", scan.CheckpointWarning)
        monkeypatch.setattr(scan, "atomic_write_json", slow_write)
        scan.scan_dims(model, eval_set, checkpoint_path=checkpoint, **options)

    seen = 0
    for _ in range(3):  # kill after a random further 2-8 dims, plus up to one write's time
        target = seen + rng.choice((2, 4, 6, 8))
        _kill_when(_fork(child), lambda: _rows(checkpoint) >= target, timeout=60, extra_delay=rng.uniform(0, 0.1))
        now = _rows(checkpoint)
        assert now >= seen, f"a kill lost finished dims (kill seed {seed})"
        seen = now
    assert 0 < seen < 32, f"kill seed {seed}"
    with warnings.catch_warnings():
        warnings.simplefilter("error", scan.CheckpointWarning)  # the checkpoint left by the kills is sound
        resumed = scan.scan_dims(model, eval_set, checkpoint_path=checkpoint, **options)
    pd.testing.assert_frame_equal(resumed, reference, check_exact=True)
    # A kill inside a write can leave a stale temp file (never read: the rename is what publishes a checkpoint).
    others = [p.name for p in tmp_path.iterdir() if p.name != "scan.json"]
    assert all(n.startswith(".scan.json.") and n.endswith(".tmp") for n in others), f"{others} (kill seed {seed})"


SETTINGS = FinetuneSettings(
    epochs=1.0, max_steps=6, batch_size=4, max_length=24, max_train_samples=24, checkpoint_steps=2, learning_rate=1e-3
)


def test_finetune_killed_with_sigkill_resumes_to_the_uninterrupted_result(tiny_bert_dir, tmp_path, monkeypatch):
    reference = finetune(tiny_bert_dir, "rt", SETTINGS, cache_dir=tmp_path / "straight", device="cpu", progress=False)
    cache = tmp_path / "killed"
    real_step = torch.optim.AdamW.step

    def slow_step(self, *args, **kwargs):  # (in the child) so the kill lands mid-run
        time.sleep(0.3)
        return real_step(self, *args, **kwargs)

    def child():
        monkeypatch.setattr(torch.optim.AdamW, "step", slow_step)
        finetune(tiny_bert_dir, "rt", SETTINGS, cache_dir=cache, device="cpu", progress=False)

    _kill_when(
        _fork(child), lambda: any(cache.glob(".work-*/checkpoint-*/trainer_state.json")), timeout=120, extra_delay=0.2
    )
    assert cache.is_dir() and all(p.name.startswith((".work-", ".tmp-")) for p in cache.iterdir())  # no entry yet

    resumed = finetune(tiny_bert_dir, "rt", SETTINGS, cache_dir=cache, device="cpu", progress=False)
    train = resumed.manifest["train"]
    assert not resumed.reused and "checkpoint-" in (train["resumed_from"] or "") and train["steps"] == 6
    want, got = reference.model.state_dict(), resumed.model.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    assert [p.name for p in cache.iterdir()] == [resumed.path.name]  # work folder gone, one valid entry
    again = finetune(tiny_bert_dir, "rt", SETTINGS, cache_dir=cache, device="cpu", progress=False)
    assert again.reused and all(torch.equal(again.model.state_dict()[k], want[k]) for k in want)


def test_a_writer_killed_mid_write_leaves_a_temp_file_that_the_next_write_removes(tmp_path):
    from bertbusters_nb.atomic import atomic_write_bytes, atomic_write_text

    target = tmp_path / "table.csv"
    atomic_write_text(target, "old\n")
    pid = os.fork()
    if pid == 0:  # child: start a write whose data never ends, then wait to be killed
        try:
            import bertbusters_nb.atomic as atomic

            original = os.fsync
            os.fsync = lambda fd: (time.sleep(60), original(fd))  # hold the temp file open, mid-write
            atomic.atomic_write_bytes(target, b"half")
        finally:
            os._exit(0)
    deadline = time.time() + 30
    while not list(tmp_path.glob(".table.csv.*.tmp")) and time.time() < deadline:
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    left = list(tmp_path.glob(".table.csv.*.tmp"))
    assert len(left) == 1 and f".{pid}." in left[0].name  # SIGKILL skipped every cleanup
    assert target.read_text() == "old\n"  # the reader never sees a partial file
    mine = tmp_path / f".table.csv.{os.getpid()}.x.tmp"
    mine.write_text("a live writer's")
    atomic_write_bytes(target, b"new\n")
    assert target.read_text() == "new\n" and oct(target.stat().st_mode & 0o777) == "0o644"
    assert list(tmp_path.glob(".table.csv.*.tmp")) == [mine]  # the dead writer's is gone, a live one's kept
