"""Tokens/s of bertbusters_nb's pre-training step versus a plain Hugging Face ``Trainer``, same config.

Both train the same post-LN BertForMaskedLM (same init, data chunks, batch, AdamW settings,
warm-up + constant LR, clip 1.0, 15% masking) on the same device. Ours computes the head on
the masked positions only; the Trainer runs BertForMaskedLM's own forward (head at every
position, loss on labels != -100) with DataCollatorForLanguageModeling.

    python benchmarks/pretraining_throughput.py                   # ~1 minute each on the CPU
    python benchmarks/pretraining_throughput.py --seconds 20 --hidden 256

Needs the data folder (``python -m bertbusters_nb.pretraining prepare --out .gpu/data``).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bertbusters_nb import pretraining as pt
from bertbusters_nb.pretraining.tokenizer import load_chunks


class _Chunks(torch.utils.data.Dataset):
    def __init__(self, chunks: np.ndarray):
        self.chunks = chunks

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.chunks[i].astype(np.int64).tolist()}


def trainer_throughput(config: pt.PretrainConfig, seconds: float, warmup: int = 3, max_steps: int = 10_000) -> float:
    """Tokens/s of transformers.Trainer on the same model and data, timed after ``warmup`` steps."""
    from transformers import AutoTokenizer, DataCollatorForLanguageModeling, Trainer, TrainerCallback, TrainingArguments

    info = config.data_info
    model = pt.build_model(config, info["vocab_size"], info["seq_len"])
    tokenizer = AutoTokenizer.from_pretrained(Path(config.data_dir) / "tokenizer")
    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            marks.append(time.perf_counter())
            if len(marks) > warmup and marks[-1] - marks[warmup] > seconds:
                control.should_training_stop = True

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=config.batch_size,
            max_steps=max_steps,
            learning_rate=config.lr,
            warmup_steps=config.warmup_steps,
            lr_scheduler_type="constant_with_warmup",
            weight_decay=config.weight_decay,
            max_grad_norm=config.clip,
            adam_beta1=config.beta1,
            adam_beta2=config.beta2,
            adam_epsilon=config.eps,
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=config.device == "cpu",
            seed=config.seed,
            dataloader_num_workers=0,
            bf16=torch.cuda.is_available() and config.device != "cpu",
        )
        collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=config.mask_rate)
        Trainer(
            model=model,
            args=args,
            train_dataset=_Chunks(load_chunks(config.data_dir)),
            data_collator=collator,
            callbacks=[Clock()],
        ).train()
    steps = len(marks) - 1 - warmup
    return steps * config.batch_size * info["seq_len"] / (marks[-1] - marks[warmup])


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=".gpu/data")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=60.0, help="timed seconds per trainer")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = pt.PretrainConfig(
        data_dir=args.data_dir,
        hidden=args.hidden,
        layers=args.layers,
        heads=args.heads,
        intermediate=4 * args.hidden,
        batch_size=args.batch_size,
        device=args.device,
    )
    ours = pt.run_throughput(config, steps=100_000, warmup=3, seconds=args.seconds)
    print(f"bertbusters_nb pretrain step : {ours:10,.0f} tokens/s", flush=True)
    theirs = trainer_throughput(config, args.seconds)
    print(f"HF Trainer (full MLM head)   : {theirs:10,.0f} tokens/s")
    print(f"ratio                        : {ours / theirs:10.2f}x")
    numbers = {
        "ours_tokens_per_s": ours,
        "trainer_tokens_per_s": theirs,
        "ratio": ours / theirs,
        "config": config.to_dict(),
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
    }
    if args.json:
        Path(args.json).write_text(json.dumps(numbers, indent=2) + "\n")


if __name__ == "__main__":
    main()
