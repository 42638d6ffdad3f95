"""Fine-tune an encoder on a classification task with the Hugging Face ``Trainer``, cached.

The training loop is ``transformers.Trainer``, so the same call runs on a CPU, one GPU, or
several GPUs and machines under ``accelerate launch`` / ``torchrun`` with no change:
``FinetuneSettings.batch_size`` is the total batch, split over the processes.

A finished fine-tune is cached under ``cache_dir`` by a key of (model, its weights' hash,
task, data source, seed, every setting that changes the weights), as safetensors plus a
manifest (``finetune.json``) holding the key, the settings and a SHA-256 of every file.
The entry is written to a temporary folder and renamed into place, so it is complete or
absent; an entry whose manifest or files do not check out is recomputed with a warning.
A killed run resumes from the Trainer's last complete checkpoint in ``<cache_dir>/.work-*``.

Command line (also under ``accelerate launch -m`` / ``torchrun -m``)::

    python -m bertbusters_nb.finetuning --model minilm --task rt --epochs 2 --max_train_samples 2000
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .data import assets
from .model.loading import load_model, resolve
from .results import atomic_write_json, pid_alive, read_json
from .tasks import GLUE_HUB, TaskSpec, get_task, load_task, tokenize_split

log = logging.getLogger(__name__)

CACHE_ENV = "BERTBUSTERS_FINETUNED"
FORMAT_VERSION = 1  # bump when the cached layout or the training recipe changes
MANIFEST = "finetune.json"
# Settings that do not change the trained weights: left out of the cache key.
NOT_IN_KEY = ("max_eval_samples", "eval_batch_size", "checkpoint_steps")


class CacheWarning(UserWarning):
    """A cached fine-tune was corrupt or incomplete and is being recomputed."""


@dataclass
class FinetuneSettings:
    """How to fine-tune. Defaults: the follow-up's GLUE protocol (Puccetti et al. 2022).

    epochs: passes over the training set. learning_rate: peak AdamW rate (linear decay).
    batch_size: TOTAL examples per optimizer step, over all processes and accumulation.
    max_length: truncation length in tokens (batches are padded only to their longest).
    weight_decay: AdamW weight decay. warmup_ratio: share of steps with linear warmup.
    seed: seeds the classifier head's initialisation, dropout and the data order.
    max_train_samples / max_eval_samples: seeded subsample sizes (None: the whole split).
    max_steps: stop after this many optimizer steps (None: run the epochs).
    gradient_accumulation_steps: steps whose gradients add up to one update.
    group_by_length: draw batches of similar length (HF's length-grouped sampler): less padding,
    a faster CPU run, a slightly different data order than the protocol's plain shuffle.
    eval_batch_size: examples per forward when evaluating (does not change the weights).
    checkpoint_steps: save a resumable Trainer checkpoint every this many steps (0: never).
    """

    epochs: float = field(default=4.0, metadata={"help": "passes over the training set"})
    learning_rate: float = field(default=2e-5, metadata={"help": "peak learning rate"})
    batch_size: int = field(default=32, metadata={"help": "total batch size per optimizer step"})
    max_length: int = field(default=256, metadata={"help": "truncation length in tokens"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    warmup_ratio: float = field(default=0.0, metadata={"help": "share of steps with linear warmup"})
    seed: int = field(default=42, metadata={"help": "training seed"})
    max_train_samples: int | None = field(default=None, metadata={"help": "train on a seeded sample of this size"})
    max_eval_samples: int | None = field(default=None, metadata={"help": "evaluate on a seeded sample of this size"})
    max_steps: int | None = field(default=None, metadata={"help": "stop after this many optimizer steps"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "gradient accumulation steps"})
    group_by_length: bool = field(default=False, metadata={"help": "batch examples of similar length (less padding)"})
    eval_batch_size: int = field(default=64, metadata={"help": "evaluation batch size"})
    checkpoint_steps: int = field(default=500, metadata={"help": "resumable checkpoint every N steps (0: never)"})

    def __post_init__(self):
        positive = {"epochs": self.epochs, "learning_rate": self.learning_rate, "batch_size": self.batch_size,
                    "max_length": self.max_length, "gradient_accumulation_steps": self.gradient_accumulation_steps,
                    "eval_batch_size": self.eval_batch_size}
        bad = {k: v for k, v in positive.items() if isinstance(v, bool) or not v > 0}
        for name in ("max_train_samples", "max_eval_samples", "max_steps"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                bad[name] = value
        if self.weight_decay < 0 or not 0 <= self.warmup_ratio < 1 or self.checkpoint_steps < 0:
            bad.update(weight_decay=self.weight_decay, warmup_ratio=self.warmup_ratio,
                       checkpoint_steps=self.checkpoint_steps)
        if bad:
            raise ValueError(f"Invalid fine-tuning settings {bad}: sizes, steps and rates must be positive "
                             f"(samples/steps may be None), warmup_ratio in [0, 1), weight_decay >= 0.")
        if self.batch_size % self.gradient_accumulation_steps:
            raise ValueError(f"batch_size {self.batch_size} is not a multiple of gradient_accumulation_steps "
                             f"{self.gradient_accumulation_steps}.")

    def key_fields(self) -> dict:
        """The settings that change the trained weights (the cache key's share)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in NOT_IN_KEY}


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


def default_cache_dir() -> Path:
    """``$BERTBUSTERS_FINETUNED`` or ``~/.cache/bertbusters_nb/finetuned``."""
    return Path(os.environ.get(CACHE_ENV, assets.assets_dir().parent / "finetuned"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_fingerprint(name_or_path: str | os.PathLike) -> str:
    """Identity of a backbone: a hash of a local folder's config and weights, else the hub name."""
    source = Path(resolve(name_or_path))
    if source.is_dir():
        files = sorted(source.glob("*.safetensors")) + [source / "config.json"]
        digest = hashlib.sha256()
        for f in (f for f in files if f.exists()):
            digest.update(f.name.encode() + _sha256(f).encode())
        return "sha256:" + digest.hexdigest()
    return "hub:" + str(name_or_path)


def cache_key(model: str, task: str, settings: FinetuneSettings, glue_source: str = GLUE_HUB) -> dict:
    """Everything that decides the fine-tuned weights, as a JSON-able dict (hashed for the folder name)."""
    spec = get_task(task)
    return {"format": FORMAT_VERSION, "model": str(model), "weights": model_fingerprint(model), "task": spec.name,
            "data": "offline-assets" if spec.source == "offline" else glue_source, **settings.key_fields()}


def entry_path(model: str, task: str, settings: FinetuneSettings, cache_dir: str | os.PathLike | None = None,
               glue_source: str = GLUE_HUB) -> Path:
    """The cache folder of (model, task, settings): ``<cache_dir>/<task>-<model>-<hash>``."""
    key = cache_key(model, task, settings, glue_source)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(str(model)).name or str(model)).strip("-")[:40]
    return Path(cache_dir or default_cache_dir()) / f"{key['task']}-{slug}-{digest}"


def check_entry(path: Path, key: dict) -> str | None:
    """None when the cache entry at ``path`` is complete and matches ``key``; else what is wrong."""
    manifest_path = path / MANIFEST
    if not manifest_path.exists():
        return f"{MANIFEST} is missing"
    try:
        manifest = read_json(manifest_path)
    except ValueError as exc:
        return str(exc)
    if manifest.get("key") != key:
        return "its manifest was written for other settings"
    files = manifest.get("files") or {}
    if not any(name.endswith(".safetensors") for name in files):
        return "its manifest lists no safetensors weights"
    for name, digest in files.items():
        f = path / name
        if not f.exists():
            return f"{name} is missing"
        if _sha256(f) != digest:
            return f"{name} does not match its checksum"
    return None


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
        raise ValueError(f"batch_size {settings.batch_size} does not split over {world} process(es) x "
                         f"{settings.gradient_accumulation_steps} accumulation step(s); pick a multiple.")
    return per_device


def _training_arguments(settings: FinetuneSettings, work_dir: Path, device: str | None, progress: bool):
    from transformers import TrainingArguments

    per_device = per_device_batch_size(settings)
    use_cpu = str(device) == "cpu" or not torch.cuda.is_available()
    bf16 = not use_cpu and torch.cuda.is_bf16_supported()
    return TrainingArguments(
        output_dir=str(work_dir), num_train_epochs=settings.epochs, max_steps=settings.max_steps or -1,
        learning_rate=settings.learning_rate, weight_decay=settings.weight_decay,
        warmup_steps=settings.warmup_ratio, lr_scheduler_type="linear",
        per_device_train_batch_size=per_device, per_device_eval_batch_size=settings.eval_batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps, seed=settings.seed,
        eval_strategy="no", save_strategy="steps" if settings.checkpoint_steps else "no",
        save_steps=settings.checkpoint_steps or 500, save_total_limit=1,
        logging_strategy="steps", logging_steps=10, report_to="none", disable_tqdm=not progress,
        train_sampling_strategy="group_by_length" if settings.group_by_length else "random",
        use_cpu=use_cpu, bf16=bf16, dataloader_num_workers=0)


def _train(model_name: str, spec: TaskSpec, settings: FinetuneSettings, final: Path, key: dict,
           device: str | None, glue_source: str, progress: bool) -> None:
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
    trainer = Trainer(model=model.train(), args=args, train_dataset=train, processing_class=tokenizer,
                      data_collator=DataCollatorWithPadding(tokenizer))
    resume = _last_complete_checkpoint(work_dir)
    if resume:
        log.info("resuming fine-tuning from %s", resume)
    start = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - start
    if trainer.is_world_process_zero():
        losses = [(h["step"], h["loss"]) for h in trainer.state.log_history if "loss" in h]
        _write_entry(trainer.model, tokenizer, final, {
            "key": key, "settings": dataclasses.asdict(settings), "task": spec.name, "model": model_name,
            "train": {"seconds": seconds, "steps": trainer.state.global_step, "examples": len(train),
                      "train_loss": output.training_loss, "loss_history": losses, "resumed_from": resume,
                      "processes": _world_size(), "device": str(args.device), "bf16": args.bf16},
            "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
        })
        shutil.rmtree(work_dir, ignore_errors=True)
    _barrier()


def _write_entry(model: PreTrainedModel, tokenizer, final: Path, manifest: dict) -> None:
    """save_pretrained into a temp folder beside ``final``, hash every file, rename into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".tmp-{final.name}-*"):  # left by a writer killed mid-save
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)  # safetensors
        tokenizer.save_pretrained(tmp)
        manifest["files"] = {f.name: _sha256(f) for f in sorted(tmp.iterdir()) if f.is_file()}
        atomic_write_json(tmp / MANIFEST, manifest)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def finetune(model: str, task: str, settings: FinetuneSettings | None = None, *,
             cache_dir: str | os.PathLike | None = None, device: str | None = "auto",
             glue_source: str = GLUE_HUB, progress: bool = True, recompute: bool = False) -> FinetuneResult:
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
    if recompute:
        problem = "recompute asked for"
    else:
        problem = check_entry(final, key) if final.exists() else "absent"
        if problem not in (None, "absent"):
            warnings.warn(f"The cached fine-tune {final} is unusable ({problem}); recomputing it.", CacheWarning,
                          stacklevel=2)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bertbusters_nb.finetuning", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="alias (minilm, bbmini), local folder or hub name")
    parser.add_argument("--task", required=True, help="task name, e.g. rt, snli, mnli, sst2")
    parser.add_argument("--cache_dir", default=None, help=f"cache folder (default ${CACHE_ENV} or ~/.cache/...)")
    parser.add_argument("--glue_source", default=GLUE_HUB, help="GLUE hub name or a local copy of it")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--recompute", action="store_true", help="train again even when a cached entry exists")
    for f in dataclasses.fields(FinetuneSettings):
        if f.type == "bool":
            parser.add_argument(f"--{f.name}", action="store_true", help=f.metadata.get("help"))
            continue
        kind = {"float": float, "int": int}.get(str(f.type).split(" ")[0], int)
        parser.add_argument(f"--{f.name}", type=kind, default=f.default, help=f.metadata.get("help"))
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = vars(build_parser().parse_args(argv))
    settings = FinetuneSettings(**{f.name: args.pop(f.name) for f in dataclasses.fields(FinetuneSettings)})
    result = finetune(args["model"], args["task"], settings, cache_dir=args["cache_dir"], device=args["device"],
                      glue_source=args["glue_source"], recompute=args["recompute"])
    print(result.path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
