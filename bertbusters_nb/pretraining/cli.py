"""The command line ``python -m bertbusters_nb.pretraining`` (also under ``accelerate launch -m``).

Commands: prepare (tokenizer and data folder), train, throughput, export, and the post-hoc
ablation and metrics (``analysis.trajectory``). The flags of train and throughput are the fields
of ``PretrainConfig``, read by transformers' ``HfArgumentParser`` with the fields' help text
(``--hidden-size`` style and ``--hidden_size`` both work), so a new field is a new flag.

This module is the package's entry point for pre-training (app level): it is the only place in
``pretraining/`` that reaches the analysis layer, and only inside the two commands that need it.

Example::

    python -m bertbusters_nb.pretraining train --out runs/tiny --data-dir .gpu/data --hidden 128 --max-steps 200
    accelerate launch --multi_gpu --num_processes 2 -m bertbusters_nb.pretraining train --out runs/tiny ...
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping
from dataclasses import fields

from .config import PretrainConfig

__all__ = ["build_parser", "config_from_args", "main"]

DESCRIPTION = "Pre-train a small post-LN BERT masked LM from scratch: resumable, logged, CPU or CUDA."


class _Parser(argparse.ArgumentParser):
    commands: Mapping[str, argparse.ArgumentParser]  # command -> its parser (set by build_parser)

    def error(self, message: str):  # argparse's message plus where the flags are listed
        self.print_usage(sys.stderr)
        where = f"{self.prog} COMMAND --help" if self._subparsers is not None else f"{self.prog} --help"
        self.exit(2, f"{self.prog}: error: {message}\n(`{where}` lists every flag and its default.)\n")


def build_parser() -> _Parser:
    """The parser of every command (nothing runs); train and throughput get PretrainConfig's fields as flags."""
    from transformers import HfArgumentParser

    class _ConfigParser(HfArgumentParser, _Parser):
        pass

    parser = _Parser(prog="python -m bertbusters_nb.pretraining", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_ConfigParser)
    prep = sub.add_parser("prepare", help="train the WordPiece tokenizer and pack the corpora (needs datasets)")
    prep.add_argument("--out", required=True)
    prep.add_argument("--corpora", nargs="*", default=["movie_reviews", "snli", "kjv"])
    prep.add_argument("--vocab-size", type=int, default=8192)
    prep.add_argument("--seq-len", type=int, default=128)
    prep.add_argument(
        "--tokenizer-dir", help="reuse this saved tokenizer (e.g. bertbusters_nb/data/bbmini) instead of training one"
    )
    prep.add_argument("--max-texts", type=int, help="first N train and N held-out texts per corpus (quick runs)")
    train = sub.add_parser(
        "train", dataclass_types=PretrainConfig, help="pre-train (resumes from out's newest checkpoint)"
    )
    train.add_argument("--out", required=True)
    train.add_argument("--no-resume", action="store_true", help="start over, deleting old checkpoints")
    train.add_argument("--no-progress", action="store_true")
    speed = sub.add_parser("throughput", dataclass_types=PretrainConfig, help="tokens/s of the training step alone")
    speed.add_argument("--steps", type=int, default=50)
    abl = sub.add_parser("ablation", help="ablation effect at every snapshot of a run -> ablation_trajectory.csv")
    abl.add_argument("--run", required=True)
    abl.add_argument("--dims", type=int, nargs="*", default=None, help="dims (default: final model's outliers)")
    abl.add_argument("--draws", type=int, default=20)
    abl.add_argument("--max-sequences", type=int, default=256)
    exp = sub.add_parser("export", help="write a loadable model folder from a run")
    exp.add_argument("--run", required=True)
    exp.add_argument("--model-dir", required=True)
    met = sub.add_parser("metrics", help="METRICS numbers of a model folder (eval loss, unigram, outliers, ablation)")
    met.add_argument("--model-dir", required=True)
    met.add_argument("--data-dir", required=True)
    met.add_argument("--draws", type=int, default=20)
    met.add_argument("--ablation-sequences", type=int, default=512)
    met.add_argument("--update", help="JSON file to merge the numbers into (written atomically)")
    for config_parser in (train, speed):  # a field's help says "80% [MASK]": argparse reads % as a format
        for action in config_parser._actions:
            if action.help and "%" in action.help and "%(" not in action.help:
                action.help = action.help.replace("%", "%%")
    parser.commands = sub.choices  # command -> its parser (main reports a bad setting through it)
    return parser


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    """The PretrainConfig that parsed ``train`` / ``throughput`` flags describe (ValueError names a bad setting)."""
    return PretrainConfig(**{f.name: getattr(args, f.name) for f in fields(PretrainConfig)})


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bertbusters_nb.pretraining``."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("train", "throughput"):
        try:
            config = config_from_args(args)
        except ValueError as exc:  # a setting the flags allow but the recipe does not
            parser.commands[args.command].error(f"{exc} Change the flag and run again.")
    if args.command == "prepare":
        from .tokenizer import prepare_data

        print(
            prepare_data(
                args.out,
                args.corpora,
                args.vocab_size,
                args.seq_len,
                tokenizer_dir=args.tokenizer_dir,
                max_texts=args.max_texts,
            )
        )
    elif args.command == "train":
        from .trainer import pretrain

        result = pretrain(config, args.out, resume=not args.no_resume, progress=not args.no_progress)
        last = result.log[-1]
        print(
            f"step {result.step}: train {last['train_loss']:.4f} eval {last['eval_loss']:.4f} "
            f"tokens/s {result.tokens_per_s:,.0f} stopped_early={result.stopped_early}"
        )
    elif args.command == "throughput":
        from .benchmark import run_throughput

        print(f"{run_throughput(config, args.steps):,.0f} tokens/s")
    elif args.command == "ablation":
        from ..analysis.trajectory import ablation_command

        print(ablation_command(args.run, args.dims, args.draws, args.max_sequences).to_string())
    elif args.command == "export":
        from .runs import export_model

        print(export_model(args.run, args.model_dir))
    elif args.command == "metrics":
        from ..analysis.trajectory import metrics_command

        numbers = metrics_command(args.model_dir, args.data_dir, args.draws, args.ablation_sequences, args.update)
        print(json.dumps(numbers, indent=2, default=str))
    return 0
