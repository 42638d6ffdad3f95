"""Determinism on the CPU: the same seed gives identical numbers in two fresh processes.

One script runs, in a fresh interpreter, a few pre-training steps (tokenizer trained from
texts, data folder, seeded model and masking), the masking of ``prepare_mlm_eval``, draws of
``random_dims``, a ``scan_dims`` table on a tiny random BERT, and a few fine-tuning steps
(``finetune`` with its own cache in a temporary folder). It prints one JSON object; the test
runs it twice in separate processes and compares the two objects exactly (floats included).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import hashlib, json, random, sys, tempfile
from pathlib import Path
import torch
torch.set_num_threads(1)
import transformers as T
from bertbusters_nb import pretraining as pt
from bertbusters_nb.data import assets
from bertbusters_nb.analysis.baselines import random_dims
from bertbusters_nb.evaluation import evaluate, prepare_classification_eval, prepare_mlm_eval
from bertbusters_nb.finetuning import FinetuneSettings, finetune
from bertbusters_nb.evaluation.scan import scan_dims
from bertbusters_nb.pretraining.tokenizer import train_tokenizer

work = Path(sys.argv[1])
words = ("the a film movie story actor plot scene good bad great boring funny long short love hate watch "
         "saw man woman dog cat ran sat on in over under because and but very really not quite").split()
rng = random.Random(0)
texts = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 30))) + "." for _ in range(300)]
out = {}

def digest(*tensors):
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()

# 0. WordPiece training (known to vary: see test_wordpiece_training_gives_the_same_vocabulary)
vocab = train_tokenizer(texts, vocab_size=80, min_frequency=1).get_vocab()
out["trained_vocab"] = sorted(vocab, key=vocab.get)

# 1. pre-training: a few steps on a data folder prepared once by the test
data = Path(sys.argv[2])
config = pt.PretrainConfig(data_dir=str(data), hidden=32, layers=2, heads=2, intermediate=64, batch_size=8, lr=3e-3,
                           warmup_steps=2, max_steps=6, log_every=2, save_every=6, eval_sequences=16,
                           eval_batch_size=16, device="cpu")
result = pt.pretrain(config, work / "run", progress=False)
out["pretrain_log"] = [{k: v for k, v in row.items() if k != "seconds"} for row in result.log]

# 2. masking of the MLM eval set, 3. random draws
tokenizer = T.AutoTokenizer.from_pretrained(data / "tokenizer")
eval_set = prepare_mlm_eval(tokenizer, texts[:24], max_length=32, batch_size=8, seed=7, device="cpu")
out["mlm_eval_set"] = digest(eval_set.input_ids, eval_set.attention_mask, eval_set.targets)
out["random_dims"] = random_dims(32, 3, draws=5, exclude=[1, 2], seed=11)

# 4. a scan table on a tiny random BERT
torch.manual_seed(0)
model = T.BertForMaskedLM(T.BertConfig(vocab_size=80, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=64, max_position_embeddings=64)).eval()
table = scan_dims(model, eval_set, dims=range(6), checkpoint_path=work / "scan.json", progress=False)
out["scan"] = table.to_dict(orient="list")

# 5. a few fine-tuning steps, then evaluation
tok = T.AutoTokenizer.from_pretrained(assets.minilm_dir())
torch.manual_seed(0)
T.BertModel(T.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(work / "tiny")
tok.save_pretrained(work / "tiny")
settings = FinetuneSettings(epochs=1.0, max_steps=3, batch_size=8, max_length=24, max_train_samples=24,
                            checkpoint_steps=0, learning_rate=1e-3)
tuned = finetune(str(work / "tiny"), "rt", settings, cache_dir=work / "cache", device="cpu", progress=False)
labelled = [(t, i % 2) for i, t in enumerate(texts[:16])]
cls_set = prepare_classification_eval(tuned.tokenizer, [t for t, _ in labelled], [y for _, y in labelled], task="rt",
                                      max_length=24, device="cpu")
out["finetune_train"] = {k: tuned.manifest["train"][k] for k in ("steps", "train_loss", "loss_history")}
out["finetune_eval"] = evaluate(tuned.model, cls_set)
out["finetune_weights"] = digest(*tuned.model.state_dict().values())
print("RESULT " + json.dumps(out, sort_keys=True, default=float))
"""


WORDS = (
    "the a film movie story actor plot scene good bad great boring funny long short love hate watch "
    "saw man woman dog cat ran sat on in over under because and but very really not quite"
).split()


def _run(tmp: Path, data: Path) -> subprocess.Popen:
    tmp.mkdir()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "PYTHONHASHSEED": "random",
        "BERTBUSTERS_FINETUNED": str(tmp / "cache"),
    }
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(tmp), str(data)],
        cwd=REPO,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _result(proc: subprocess.Popen) -> dict:
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    line = [l for l in stdout.splitlines() if l.startswith("RESULT ")]
    assert line, stdout[-2000:] + stderr[-2000:]
    return json.loads(line[-1][len("RESULT ") :])


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[dict, dict]:
    """The script's output from two fresh interpreters (string hashing randomised), run side by side."""
    import random

    from bertbusters_nb.pretraining.tokenizer import prepare_data_from_texts

    root = tmp_path_factory.mktemp("determinism")
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))) + "." for _ in range(300)]
    data = prepare_data_from_texts(texts[:250], texts[250:], root / "data", vocab_size=80, seq_len=32, min_frequency=1)
    first, second = _run(root / "a", data), _run(root / "b", data)
    return _result(first), _result(second)


def test_same_seed_gives_identical_numbers_in_fresh_processes(two_runs):
    a, b = two_runs
    assert set(a) == {
        "trained_vocab",
        "pretrain_log",
        "mlm_eval_set",
        "random_dims",
        "scan",
        "finetune_train",
        "finetune_eval",
        "finetune_weights",
    }
    assert len(a["pretrain_log"]) == 4 and len(a["scan"]["dim"]) == 6 and a["finetune_train"]["steps"] == 3
    for key in sorted(set(a) - {"trained_vocab"}):
        assert a[key] == b[key], f"{key} differs between two runs with the same seed"


@pytest.mark.xfail(
    strict=False,
    reason="HF tokenizers' WordPiece/BPE trainer breaks frequency ties in hash-map "
    "order: ids (and, on tiny corpora, the vocabulary itself) can differ between processes. "
    "Prepare the data folder once and reuse it; pre-training from a given folder is deterministic.",
)
def test_wordpiece_training_gives_the_same_vocabulary(two_runs):
    a, b = two_runs
    assert a["trained_vocab"] == b["trained_vocab"]
