"""Pre-train a small post-LN BERT masked LM from scratch: resumable, logged, CPU or CUDA, one process or data-parallel.

The trainer reads a data folder written by ``tokenizer.prepare_data`` (packed uint16 chunks; no
``datasets`` needed here) and writes into ``out_dir``::

    config.json            the PretrainConfig of the run
    train_log.csv          per log point: step, tokens, train_loss, eval_loss, lr, seconds
    norm_trajectory.npz    per log point: weight and bias of every LayerNorm (see NormTrajectory)
    checkpoints/step_N/    resumable state (weights, optimizer, RNG, log), written to a temp
                           folder and renamed into place, so a kill never leaves a half checkpoint
    snapshots/step_N.safetensors   fp16 weights at ``snapshot_steps`` (for ablation over steps)
    final.safetensors      fp16 weights at the last step

Modules (layer 4: uses data/, model/, evaluation/ and the base; never analysis/ or higher):

===============  ==========================================================================================
config           PretrainConfig (fields with help text: the command line's flags), special ids, resume rule
model            build_model: the seeded post-LN BertForMaskedLM
objective        fixed-count masking, the masked-position loss, eval_mlm_loss
norm_trajectory  NormTrajectory: LayerNorm parameters at every log point
checkpoints      weights and resumable checkpoints, written all-or-nothing (atomic.atomic_folder)
trainer          train_step (the one training step), pretrain (loop, logging, resume; data-parallel
                 under ``accelerate launch``)
benchmark        run_throughput: tokens/s of train_step alone
tokenizer        WordPiece tokenizer and packed chunks (was ``tokenizer_training``)
runs             load_run_model, export_model
cli              the command line (``python -m bertbusters_nb.pretraining``)
===============  ==========================================================================================

The post-hoc analysis of runs (``select_outlier_dims``, ``ablation_effect``, ``ablation_trajectory``,
``model_metrics``) lives in ``bertbusters_nb.analysis.trajectory``.
"""

import torch  # noqa: F401  (``pretraining.torch``: tests patch torch.save through it, as before the split)

from .benchmark import run_throughput
from .checkpoints import checkpoint_dirs, load_weights, save_weights
from .cli import build_parser, config_from_args, main
from .config import (
    CHANGEABLE_ON_RESUME,
    CLS_ID,
    EVAL_CHECK_SEQUENCES,
    IGNORE,
    LOG_COLUMNS,
    MASK_ID,
    N_SPECIAL,
    PAD_ID,
    SEP_ID,
    UNK_ID,
    PretrainConfig,
)
from .model import build_model
from .norm_trajectory import NormTrajectory
from .objective import MaskedLM, eval_mlm_loss, mask_fixed_count, masked_logits, masked_loss, mlm_loss
from .runs import export_model, load_run_model
from .tokenizer import SPECIAL_TOKENS, load_chunks, unigram_entropy
from .trainer import PretrainResult, lr_at, make_optimizer, pretrain, train_step

__all__ = [
    "CHANGEABLE_ON_RESUME",
    "CLS_ID",
    "EVAL_CHECK_SEQUENCES",
    "IGNORE",
    "LOG_COLUMNS",
    "MASK_ID",
    "N_SPECIAL",
    "PAD_ID",
    "SEP_ID",
    "SPECIAL_TOKENS",
    "UNK_ID",
    "MaskedLM",
    "NormTrajectory",
    "PretrainConfig",
    "PretrainResult",
    "build_model",
    "build_parser",
    "checkpoint_dirs",
    "config_from_args",
    "eval_mlm_loss",
    "export_model",
    "load_chunks",
    "load_run_model",
    "load_weights",
    "lr_at",
    "main",
    "make_optimizer",
    "mask_fixed_count",
    "masked_logits",
    "masked_loss",
    "mlm_loss",
    "pretrain",
    "run_throughput",
    "save_weights",
    "train_step",
    "unigram_entropy",
]
