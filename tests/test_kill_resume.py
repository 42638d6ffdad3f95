"""SIGKILL of a real process mid-run, then resume: the result equals an uninterrupted run's.

Scans: a subprocess runs ``scan_dims`` with a checkpoint on a tiny random BERT; the test polls
the checkpoint and kills the process with SIGKILL after a random amount of progress (each
checkpoint write is slowed a little so kills land before, during and after writes), several
times; the last run finishes. No restart may see a corrupt checkpoint (CheckpointWarning is
an error in the child), and the final table equals an uninterrupted scan's exactly.

Fine-tuning: a subprocess runs ``finetune`` with Trainer checkpoints every 2 steps and is
killed once a complete checkpoint exists; the rerun resumes from it and ends with a valid
cache entry whose losses and weights equal those of an uninterrupted run with the same seed.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "OMP_NUM_THREADS": "1"}

SCAN_SCRIPT = r'''
import json, random, sys, time, warnings
import torch
torch.set_num_threads(1)
import transformers as T
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from bertbusters_nb import scan
from bertbusters_nb.evaluation import prepare_mlm_eval

warnings.simplefilter("error", scan.CheckpointWarning)  # a restart must never find a corrupt checkpoint
checkpoint, out, slow = sys.argv[1], sys.argv[2], float(sys.argv[3])
words = [f"w{i}" for i in range(60)]
vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words)}
backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
backend.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
tok = T.PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                sep_token="[SEP]", mask_token="[MASK]")
rng = random.Random(1)
texts = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 20))) for _ in range(12)]
eval_set = prepare_mlm_eval(tok, texts, max_length=24, batch_size=6, device="cpu")
torch.manual_seed(0)
model = T.BertForMaskedLM(T.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                                       num_attention_heads=2, intermediate_size=64, max_position_embeddings=32)).eval()
real_write = scan.atomic_write_json
def slow_write(path, payload):  # a kill can land before, inside or after the write
    time.sleep(slow * random.random())
    real_write(path, payload)
    time.sleep(slow * random.random())
scan.atomic_write_json = slow_write
table = scan.scan_dims(model, eval_set, roles="block_output", checkpoint_path=checkpoint, checkpoint_every=2,
                       progress=False)
with open(out, "w") as f:
    json.dump(table.to_dict(orient="list"), f)
'''


def _rows(path: Path) -> int:
    try:
        return len(json.loads(path.read_text())["rows"])
    except (OSError, ValueError, KeyError):
        return 0


def _scan(checkpoint: Path, out: Path, slow: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SCAN_SCRIPT, str(checkpoint), str(out), str(slow)], cwd=REPO,
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 240) -> None:
    _, stderr = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, stderr[-3000:]


def test_scan_killed_with_sigkill_resumes_to_the_uninterrupted_table(tmp_path):
    rng = random.Random(int(time.time()))  # random kill points; the seed is printed on failure
    seed = rng.randrange(1 << 30)
    rng = random.Random(seed)
    reference = _scan(tmp_path / "straight.json", tmp_path / "straight-table.json", 0.0)
    checkpoint, out = tmp_path / "killed.json", tmp_path / "killed-table.json"
    seen, kills = 0, 0
    for _ in range(3):  # 32 dims, a checkpoint every 2: kill after a random further 2-8 dims
        target = seen + rng.choice((2, 4, 6, 8))
        proc = _scan(checkpoint, out, 0.15)
        deadline = time.monotonic() + 120
        while proc.poll() is None and _rows(checkpoint) < target and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, f"scan ended before it could be killed (seed {seed}): {proc.stderr.read()[-2000:]}"
        time.sleep(rng.uniform(0.0, 0.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stderr.close()
        kills += proc.returncode == -signal.SIGKILL
        assert not out.exists()
        now = _rows(checkpoint)
        assert now >= seen, f"a kill lost finished dims (seed {seed})"
        seen = now
    assert kills == 3 and 0 < seen < 32
    _finish(_scan(checkpoint, out, 0.0))
    _finish(reference)
    assert json.loads(out.read_text()) == json.loads((tmp_path / "straight-table.json").read_text())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]  # no temp leftovers


FINETUNE_SCRIPT = r'''
import json, sys
import torch
torch.set_num_threads(1)
from bertbusters_nb.finetuning import FinetuneSettings, finetune
settings = FinetuneSettings(epochs=1.0, max_steps=6, batch_size=4, max_length=24, max_train_samples=24,
                            checkpoint_steps=2, learning_rate=1e-3)
result = finetune(sys.argv[1], "rt", settings, cache_dir=sys.argv[2], device="cpu", progress=False)
weights = {k: v.flatten()[:50].tolist() for k, v in sorted(result.model.state_dict().items())}
train = result.manifest["train"]
print("RESULT " + json.dumps({"path": str(result.path), "reused": result.reused, "steps": train["steps"],
                              "resumed_from": train["resumed_from"], "loss_history": train["loss_history"],
                              "weights": weights}))
'''


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    import torch
    import transformers as T

    from bertbusters_nb import assets

    tokenizer = T.AutoTokenizer.from_pretrained(assets.minilm_dir())
    torch.manual_seed(0)
    config = T.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=64)
    folder = tmp_path_factory.mktemp("tiny-bert")
    T.BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def _finetune(model: str, cache: Path, slow: bool = False) -> subprocess.Popen:
    script = FINETUNE_SCRIPT
    if slow:  # slow each optimizer step so the kill lands mid-run
        script = script.replace("from bertbusters_nb.finetuning", "import time, torch.optim\n"
                                "_step = torch.optim.AdamW.step\n"
                                "def _slow(self, *a, **k):\n    time.sleep(0.3)\n    return _step(self, *a, **k)\n"
                                "torch.optim.AdamW.step = _slow\nfrom bertbusters_nb.finetuning", 1)
    return subprocess.Popen([sys.executable, "-c", script, model, str(cache)], cwd=REPO, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finetune_result(proc: subprocess.Popen) -> dict:
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    return json.loads([l for l in stdout.splitlines() if l.startswith("RESULT ")][-1][len("RESULT "):])


def test_finetune_killed_with_sigkill_resumes_to_the_uninterrupted_result(tiny_dir, tmp_path):
    straight = _finetune(tiny_dir, tmp_path / "straight")
    cache = tmp_path / "killed"
    proc = _finetune(tiny_dir, cache, slow=True)
    deadline = time.monotonic() + 180
    found: list[Path] = []
    while proc.poll() is None and not found and time.monotonic() < deadline:
        found = list(cache.glob(".work-*/checkpoint-*/trainer_state.json"))
        time.sleep(0.05)
    assert proc.poll() is None and found, f"no checkpoint before the run ended: {proc.communicate()[1][-2000:]}"
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not [p for p in cache.iterdir() if not p.name.startswith((".work-", ".tmp-"))]  # no entry yet

    resumed = _finetune_result(_finetune(tiny_dir, cache))
    reference = _finetune_result(straight)
    assert resumed["resumed_from"] and "checkpoint-" in resumed["resumed_from"] and not resumed["reused"]
    assert resumed["steps"] == reference["steps"] == 6
    assert resumed["weights"] == reference["weights"]
    assert [p.name for p in cache.iterdir()] == [Path(resumed["path"]).name]  # work folder removed, entry valid
    again = _finetune_result(_finetune(tiny_dir, cache))
    assert again["reused"] and again["weights"] == reference["weights"]
