"""``python -m bertbusters_nb detect MODEL [--roles ...] [--json] [--texts N] [--scan N]``: which hidden dims matter.

App layer: ``add_arguments`` declares the command's flags (the one place to add one; ``__main__`` hands it the
``detect`` subparser) and ``run`` carries them out: it loads the model with its own head, prints every criterion's
evidence per dim and the rule's dims (``--json``: one JSON object whose ``dims`` key holds them), and with
``--scan N`` each criterion's agreement with the single-dim scan on N held-out reviews.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, TextIO

from .rule import DEFAULT_RULE

if TYPE_CHECKING:  # imported where used: declaring the flags (``python -m bertbusters_nb --help``) needs no torch
    import pandas as pd

    from .detection_report import DetectionReport


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``detect`` command's flags, on ``parser`` (a subparser of ``python -m bertbusters_nb``)."""
    parser.add_argument("model", help="alias (minilm, bbmini, ...), local model folder or hub name")
    parser.add_argument("--roles", nargs="*", help="norm roles weighed by the parameter criterion (default: all sites)")
    parser.add_argument("--json", action="store_true", help="print one JSON object; its 'dims' key holds the default")
    parser.add_argument(
        "--texts", type=int, default=DEFAULT_RULE.n_texts, help="offline train reviews for the activation criterion"
    )
    parser.add_argument(
        "--scan",
        type=int,
        default=0,
        metavar="N",
        help="also scan every dim on N held-out reviews and print each criterion's agreement",
    )
    parser.add_argument(
        "--super-weights",
        action="store_true",
        help="also find and verify the model's super weights (single FFN output-projection scalars) and print them",
    )
    return parser


def run(args: argparse.Namespace, out: TextIO | None = None, device: str | None = "cpu") -> int:
    """Carry out a parsed ``detect`` command line; returns the exit status (2: the model or a setting is refused)."""
    from ..model.loading import ModelLoadError

    out = out or sys.stdout
    try:
        model_class, report = _report(args, device)
    except (ModelLoadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    found = _super_weights(args.model, device) if getattr(args, "super_weights", False) else None
    if args.json:
        payload = _payload(args.model, report)
        if found is not None:
            payload["super_weights"] = json.loads(found.to_json(orient="records"))
        print(json.dumps(payload), file=out)
        return 0
    _print_report(args, model_class, report, out)
    if found is not None:
        print("\nverified super weights (index in the weight tensor's own layout):", file=out)
        print("none" if found.empty else found.to_string(index=False), file=out)
    return 0


def _super_weights(model_name: str, device: str | None) -> pd.DataFrame:
    """The verified super weights of ``model_name`` (``studies.super_weights.load_chain`` on offline reviews)."""
    from ..analysis.super_weights import super_weight_table
    from ..data import load_texts, sample_texts
    from ..studies.super_weights import load_chain

    texts = sample_texts(load_texts("movie_reviews", split="heldout", min_words=20), 16, seed=0)
    chain = load_chain(model_name, texts[:8], texts[8:], device=device or "auto", max_length=32, batch_size=8)
    return super_weight_table(chain.report, model_name)


def _report(args: argparse.Namespace, device: str | None) -> tuple[str, DetectionReport]:
    from ..model.loading import load_model
    from .detection_report import detection_report, own_head

    model, tokenizer = load_model(args.model, head=own_head(args.model), device=device)
    options: dict = {"n_texts": args.texts}
    if args.roles:
        options["param_roles"] = tuple(args.roles)
    effect_texts = None
    if args.scan:
        from ..data import load_texts, sample_texts

        effect_texts = sample_texts(load_texts("movie_reviews", split="heldout"), args.scan, seed=0)
    return type(model).__name__, detection_report(model, tokenizer, effect_texts=effect_texts, **options)


def _payload(model_name: str, report: DetectionReport) -> dict:
    found = report.detection
    return {
        "model": model_name,
        "dims": found.dims,
        "rule": found.rule,
        "settings": {**found.settings.as_dict(), "activations": found.activations is not None},
        "per_dim": json.loads(report.per_dim.head(20).to_json(orient="records")),
        "agreement": None if report.agreement is None else json.loads(report.agreement.to_json(orient="records")),
    }


def _print_report(args: argparse.Namespace, model_class: str, report: DetectionReport, out: TextIO) -> None:
    import pandas as pd

    found = report.detection
    with pd.option_context("display.width", 200, "display.max_columns", 40):
        print(f"{args.model}: {model_class}", file=out)
        print(found.summary(), file=out)
        print("\nevidence per dim (top 15):", file=out)
        print(report.per_dim.head(15).round(2).to_string(index=False), file=out)
        if report.agreement is not None:
            print(
                f"\nagreement with the single-dim scan on {args.scan} held-out reviews "
                f"(most damaging: {report.agreement.attrs['most_damaging']}):",
                file=out,
            )
            print(report.agreement.round(3).to_string(index=False), file=out)
    print(f"\ndims to ablate: {found.dims}", file=out)
