"""Fine-tune an encoder on a classification task with the Hugging Face ``Trainer``, cached.

The training loop is ``transformers.Trainer``, so the same call runs on a CPU, one GPU, or
several GPUs and machines under ``accelerate launch`` / ``torchrun`` with no change:
``FinetuneSettings.batch_size`` is the total batch, split over the processes.

A finished fine-tune is cached (``finetuning.cache``: key, entry folder, manifest, checks);
a killed run resumes from the Trainer's last complete checkpoint in ``<cache_dir>/.work-*``.

The head reads the first token, so where the last layer turns token-wise at a module that takes the attention's output
and the residual (the BERT family), that part of the last layer trains at the first token only
(``evaluation.surgery.first_token_only``, checked against the full forward before training; the manifest records
``last_layer_first_token_only``): the same gradients for less arithmetic, and on a CPU the same dropout draws.

Command line (also under ``accelerate launch -m`` / ``torchrun -m``)::

    python -m bertbusters_nb.finetuning --model minilm --task rt --epochs 2 --max_train_samples 2000
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..atomic import read_json
from ..evaluation.surgery import checked_first_token_entry, first_token_only
from ..evaluation.tasks import GLUE_HUB, TaskSpec, get_task, load_task, tokenize_split
from ..model.loading import load_model
from .cache import MANIFEST, CacheWarning, cache_key, check_entry, entry_path, write_entry
from .settings import FinetuneSettings

log = logging.getLogger(__name__)


@dataclass
class FinetuneResult:
    """A fine-tuned classifier. model: in eval mode on the chosen device. tokenizer: its tokenizer.
    path: the cache entry it was loaded from. reused: True when no training ran. manifest: the
    entry's finetune.json (key, settings, training loss and time, file hashes)."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    path: Path
    reused: bool
    manifest: dict

    @property
    def train_seconds(self) -> float:
        return float(self.manifest["train"]["seconds"])


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _last_complete_checkpoint(work_dir: Path) -> str | None:
    """The newest ``checkpoint-N`` with trainer_state.json (the Trainer writes that file last)."""
    if not work_dir.is_dir():
        return None
    found = []
    for p in work_dir.glob("checkpoint-*"):
        if p.is_dir() and p.name.split("-")[-1].isdigit():
            if (p / "trainer_state.json").exists():
                found.append(p)
            else:
                log.warning("ignoring incomplete Trainer checkpoint %s", p)
    return str(max(found, key=lambda p: int(p.name.split("-")[-1]))) if found else None


def per_device_batch_size(settings: FinetuneSettings, world_size: int | None = None) -> int:
    """The per-process batch that makes ``settings.batch_size`` the total over processes and accumulation."""
    world = _world_size() if world_size is None else world_size
    per_device, remainder = divmod(settings.batch_size, world * settings.gradient_accumulation_steps)
    if remainder or per_device < 1:
        raise ValueError(
            f"batch_size {settings.batch_size} does not split over {world} process(es) x "
            f"{settings.gradient_accumulation_steps} accumulation step(s); pick a multiple."
        )
    return per_device


def _training_arguments(settings: FinetuneSettings, work_dir: Path, device: str | None, progress: bool):
    from transformers import TrainingArguments

    per_device = per_device_batch_size(settings)
    use_cpu = str(device) == "cpu" or not torch.cuda.is_available()
    bf16 = not use_cpu and torch.cuda.is_bf16_supported()
    return TrainingArguments(
        output_dir=str(work_dir),
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps or -1,
        learning_rate=settings.learning_rate,
        weight_decay=settings.weight_decay,
        warmup_steps=settings.warmup_ratio,
        lr_scheduler_type="linear",
        per_device_train_batch_size=per_device,
        per_device_eval_batch_size=settings.eval_batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        seed=settings.seed,
        eval_strategy="no",
        save_strategy="steps" if settings.checkpoint_steps else "no",
        save_steps=settings.checkpoint_steps or 500,
        save_total_limit=1,
        logging_strategy="steps",
        logging_steps=10,
        report_to="none",
        disable_tqdm=not progress,
        train_sampling_strategy="group_by_length" if settings.group_by_length else "random",
        use_cpu=use_cpu,
        bf16=bf16,
        dataloader_num_workers=0,
    )


def _train(
    model_name: str,
    spec: TaskSpec,
    settings: FinetuneSettings,
    final: Path,
    key: dict,
    device: str | None,
    glue_source: str,
    progress: bool,
) -> None:
    """Train and write the cache entry atomically (main process), resuming from a checkpoint when one exists."""
    from transformers import DataCollatorWithPadding, Trainer, set_seed

    data = load_task(spec.name, max_train_samples=settings.max_train_samples, glue_source=glue_source)
    set_seed(settings.seed)  # before loading: the classifier head's initialisation depends on it
    model, tokenizer = load_model(model_name, head="classification", num_labels=spec.num_labels, device="cpu")
    if spec.label_names:
        model.config.id2label = dict(enumerate(spec.label_names))
        model.config.label2id = {name: i for i, name in enumerate(spec.label_names)}
    train = tokenize_split(data[spec.train_split], tokenizer, spec, settings.max_length)
    work_dir = final.parent / f".work-{final.name}"
    args = _training_arguments(settings, work_dir, device, progress)
    trainer = Trainer(
        model=model.train(),
        args=args,
        train_dataset=train,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    resume = _last_complete_checkpoint(work_dir)
    if resume:
        log.info("resuming fine-tuning from %s", resume)
    # the head reads the first token: the last layer's token-wise part runs there only (checked on two examples)
    entry, last_layer = checked_first_token_entry(
        model, trainer.data_collator([train[i] for i in range(min(2, len(train)))])
    )
    start = time.perf_counter()
    with first_token_only(entry, last_layer):
        output = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - start
    if trainer.is_world_process_zero():
        losses = [(h["step"], h["loss"]) for h in trainer.state.log_history if "loss" in h]
        write_entry(
            model,  # trained in place by the Trainer
            tokenizer,
            final,
            {
                "key": key,
                "settings": dataclasses.asdict(settings),
                "task": spec.name,
                "model": model_name,
                "train": {
                    "seconds": seconds,
                    "steps": trainer.state.global_step,
                    "examples": len(train),
                    "train_loss": output.training_loss,
                    "loss_history": losses,
                    "resumed_from": resume,
                    "processes": _world_size(),
                    "device": str(args.device),
                    "bf16": args.bf16,
                    "last_layer_first_token_only": entry is not None,
                },
                "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
            },
        )
        shutil.rmtree(work_dir, ignore_errors=True)
    _barrier()


def finetune(
    model: str | os.PathLike,
    task: str,
    settings: FinetuneSettings | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    device: str | None = "auto",
    glue_source: str = GLUE_HUB,
    progress: bool = True,
    recompute: bool = False,
) -> FinetuneResult:
    """Fine-tuned ``model`` (alias, folder or hub name) on ``task``: from the cache, or trained and cached.

    Example:
        >>> result = finetune("minilm", "rt", FinetuneSettings(epochs=2, max_train_samples=2000, max_length=64))
        >>> result.model, result.reused  # doctest: +SKIP
        (BertForSequenceClassification(...), False)
    """
    settings = settings or FinetuneSettings()
    spec = get_task(task)
    key = cache_key(model, task, settings, glue_source)
    final = entry_path(model, task, settings, cache_dir, glue_source)
    problem: str | None
    if recompute:
        problem = "recompute asked for"
    else:
        problem = check_entry(final, key) if final.exists() else "absent"
        if problem not in (None, "absent"):
            warnings.warn(
                f"The cached fine-tune {final} is unusable ({problem}); recomputing it.", CacheWarning, stacklevel=2
            )
            log.warning("cached fine-tune %s unusable (%s); recomputing", final, problem)
    reused = problem is None
    if not reused:
        log.info("fine-tuning %s on %s -> %s", model, task, final)
        _train(str(model), spec, settings, final, key, device, glue_source, progress)
        problem = check_entry(final, key)
        if problem is not None:
            raise RuntimeError(f"Fine-tuning finished but the cache entry {final} does not check out ({problem}).")
    tuned, tokenizer = load_model(final, head="classification", device=None if device == "auto" else device)
    return FinetuneResult(tuned, tokenizer, final, reused, read_json(final / MANIFEST))
