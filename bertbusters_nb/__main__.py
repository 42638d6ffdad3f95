"""The one command line: ``python -m bertbusters_nb {run,assets,detect,pretrain,finetune} ...`` (app layer).

``run --profile smoke``: the numbered notebooks headless. ``assets``: fetch the source-only offline assets.
``detect MODEL [--roles ...] [--json]``: which hidden dims matter (``analysis.cli`` declares and runs it). ``pretrain COMMAND ...`` and ``finetune ...``
hand the rest of the command line to ``pretraining.cli.main`` and ``finetuning.cli.main`` unchanged, so
``python -m bertbusters_nb pretrain train --out runs/tiny`` is ``python -m bertbusters_nb.pretraining train
--out runs/tiny`` and ``python -m bertbusters_nb finetune --model minilm --task rt`` is
``python -m bertbusters_nb.finetuning --model minilm --task rt`` (same flags, same help).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import logging
import sys
from pathlib import Path

from .analysis import cli as detect_cli

# subcommand -> (module whose main(argv) takes the rest of the command line, its help line)
DELEGATED = {
    "pretrain": (
        "bertbusters_nb.pretraining.cli",
        "pre-train a small BERT: prepare, train, throughput, ablation, export, metrics "
        "(= python -m bertbusters_nb.pretraining)",
    ),
    "finetune": (
        "bertbusters_nb.finetuning.cli",
        "fine-tune an encoder on a task, cached (= python -m bertbusters_nb.finetuning)",
    ),
}


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bertbusters_nb", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the numbered notebooks headless with papermill")
    run.add_argument("--profile", default="offline", help="smoke | offline | paper (default: offline)")
    run.add_argument("--only", nargs="*", help="notebook numbers or stems to run (default: all)")
    run.add_argument("--redo", action="store_true", help="re-run notebooks that already finished")
    run.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="NAME=VALUE",
        help="override a notebook parameter, e.g. --set model=bert-base-uncased device=cuda",
    )
    run.add_argument(
        "--plan",
        action="store_true",
        help="list per notebook the hub models and datasets it will fetch, its fine-tunes, evaluation conditions and "
        "device, then stop (nothing downloaded, no kernel started)",
    )
    run.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="notebooks run at once, each kernel with cores/N threads (default 1; make reproduce uses one per core)",
    )
    run.add_argument(
        "--figures-dir",
        metavar="DIR",
        help="where results go: DIR/<profile>/<notebook>/ (default: the checkout's figures/)",
    )
    sub.add_parser("assets", help="download and unpack the source-only offline assets (SNLI, KJV)")
    detect_cli.add_arguments(
        sub.add_parser("detect", help="which hidden dims matter: every criterion's evidence and the default dims")
    )
    for name, (_, help_line) in DELEGATED.items():  # listed here, parsed by their own command lines
        sub.add_parser(name, help=help_line, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bertbusters_nb``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in DELEGATED:
        return importlib.import_module(DELEGATED[argv[0]][0]).main(argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.command == "assets":
        from .data.assets import fetch_source_assets

        print(fetch_source_assets())
        return 0
    if args.command == "detect":
        return detect_cli.run(args)
    from .runner import ParameterError, run_series

    overrides = {}
    for item in args.set:
        if "=" not in item:
            print(f"--set expects NAME=VALUE, got {item!r}", file=sys.stderr)
            return 2
        name, value = item.split("=", 1)
        overrides[name] = _value(value)
    if args.plan:
        from .plan import format_plan, series_plan

        try:
            plans = series_plan(args.profile, only=args.only, overrides=overrides)
        except (ParameterError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(format_plan(plans, args.profile))
        return 2 if any(p.refused for p in plans) else 0
    try:
        results = run_series(
            args.profile,
            only=args.only,
            redo=args.redo,
            overrides=overrides,
            figures_dir=args.figures_dir,
            jobs=args.jobs,
        )
    except (ParameterError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        print("refused: nothing was run or written", file=sys.stderr)
        return 2
    failed = [r for r in results if r.status == "failed"]
    for r in results:
        print(
            f"{r.notebook:28s} {r.status:8s} {r.seconds:7.0f}s {('cell %s: %s' % (r.cell, r.error)) if r.error else ''}"
        )
        if r.attempt_dir:
            print(f"{'':28s} kept: {r.attempt_dir}/ (executed notebook, run.log); last good results: {r.out_dir}/")
    summary = Path(results[0].out_dir).parent if results else None
    print(f"summary: {summary / 'SUMMARY.md' if summary else 'figures/' + args.profile + '/SUMMARY.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
