"""Benchmark: screened scans (gradient estimate + exact top k) against the exact full scan; bf16 on the CPU.

In one run, on each real model here (bbmini on masked-LM loss, MiniLM on embedding distance 1 - cosine,
SmolLM2-135M on causal-LM loss when it loads):

  * the exact full scan (every block-output dim zeroed alone, through the engine) and its time;
  * each screening method (``bertbusters_nb.evaluation.screen``): its time, Spearman against the exact effects and
    the recall of the exact top 5 / top 10 within the estimate's top 16 / top 32;
  * the screened scan (default method, exact check of the top ``--top-k`` by |estimate|, as ``screened_scan`` does): time, speed-up over the exact
    full scan, and the recall of the exact top 5 in its checked set;

then the precision part (the CPU bf16 probe's decision, and the engine in fp32 against bf16 autocast on
bbmini and MiniLM: speed and loss difference), and how the costs grow with hidden size, tokens and sites
on randomly initialised BERTs (exact cost per dim measured on a few dims and multiplied by the dims).

Times are process CPU seconds with ``--threads`` torch threads (1 by default: the machine is shared), wall
clock beside them. Run:
    python benchmarks/screen_benchmark.py                 # writes its sections into benchmarks/RESULTS.md
    python benchmarks/screen_benchmark.py --quick         # small sets, for a smoke run
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pandas as pd  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from engine_benchmark import machine, synthetic_texts, synthetic_tokenizer, write_section  # noqa: E402

from bertbusters_nb import device as devices  # noqa: E402
from bertbusters_nb.evaluation.engine import AblationEngine  # noqa: E402
from bertbusters_nb.evaluation.screen import (  # noqa: E402
    AUTO_TOP,
    RANKINGS,
    agreement,
    certification_floor,
    check_order,
    estimate_effects,
    exact_effects,
    screened_scan,
)
from bertbusters_nb.evaluation.sets import prepare_causal_eval, prepare_embedding_eval, prepare_mlm_eval  # noqa: E402
from bertbusters_nb.model.ablation import Condition  # noqa: E402
from bertbusters_nb.model.discovery import find_norm_sites  # noqa: E402
from bertbusters_nb.model.loading import load_model  # noqa: E402
from bertbusters_nb.model.sites import select_sites  # noqa: E402

log = logging.getLogger("screen_benchmark")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="bbmini,minilm,smollm2")
    p.add_argument("--texts", type=int, default=32, help="held-out movie reviews per eval set")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--top-k", type=lambda v: v if v == "auto" else int(v), default=16, help="an integer or auto")
    p.add_argument("--causal-texts", type=int, default=8, help="texts for SmolLM2 (its exact scan is the costly one)")
    p.add_argument("--probes", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="8 texts, fewer variants: a smoke run")
    p.add_argument("--skip", default="", help="comma list of parts to skip: scan, precision, scaling")
    p.add_argument("--results", default=str(REPO / "benchmarks" / "RESULTS.md"))
    p.add_argument("--json", default=None, help="write the figures here (after each part)")
    p.add_argument(
        "--from-json",
        nargs="*",
        default=None,
        help="no measuring: merge these JSON files (e.g. parts run separately) and write the report",
    )
    return p.parse_args(argv)


class Clock:
    """Process CPU seconds and wall seconds of a block."""

    def __enter__(self):
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.cpu, self.wall = time.process_time() - self.cpu0, time.perf_counter() - self.wall0
        return False


def texts_for(n: int) -> list[str]:
    from bertbusters_nb.data import load_texts

    return load_texts("movie_reviews", split="heldout", min_words=20)[:n]


def setups(args):
    """(name, model, eval set, objective, methods) for each loadable model."""
    texts = texts_for(args.texts)
    out = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        try:
            if name == "bbmini":
                model, tok = load_model("bbmini", head="mlm", device="cpu")
                es = prepare_mlm_eval(tok, texts, max_length=args.max_length, seed=0, batch_size=args.texts)
                methods, roles, layers = (
                    ["gradient", "fisher", "midpoint", "integrated", "second_order"],
                    ("block_output",),
                    None,
                )
            elif name == "minilm":
                model, tok = load_model("minilm", device="cpu")
                es = prepare_embedding_eval(tok, texts, max_length=args.max_length, batch_size=args.texts)
                methods, roles, layers = ["gauss_newton", "midpoint", "integrated"], ("block_output",), None
            elif name == "smollm2":
                model, tok = load_model("smollm2", head="causal-lm", device="cpu")
                n = min(len(texts), args.causal_texts)
                es = prepare_causal_eval(tok, texts[:n], max_length=args.max_length, batch_size=n)
                methods, roles = ["gradient", "fisher", "midpoint", "second_order"], ("pre_ffn",)
                n_layers = model.config.num_hidden_layers  # the last 4 layers: a full exact scan of all 30 is ~1 h here
                layers = tuple(range(n_layers - 4, n_layers))
            else:
                raise ValueError(f"unknown model {name!r}")
        except Exception as exc:  # noqa: BLE001 - a model that does not load is reported, not fatal
            log.warning("%s not measured: %s", name, exc)
            out.append((name, None, None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}", [], (), None))
            continue
        if args.quick:
            methods = methods[:2]
        out.append((name, model.float().eval(), es, None, methods, roles, layers))
    return out


def _recalls(order: list[int], exact: pd.DataFrame) -> dict:
    """Recall of the exact top 5 / top 10 within the first 16 / 32 dims of a check order."""
    ranked = exact.sort_values("exact", ascending=False, kind="stable")["dim"].tolist()
    return {f"recall_top{n}_in{m}": len(set(ranked[:n]) & set(order[:m])) / n for n in (5, 10) for m in (16, 32)}


def largest_error_outside_top(estimates: pd.DataFrame, exact: pd.DataFrame) -> float:
    """The estimate's largest |exact - estimate| on the dims outside the exact top ``AUTO_TOP``."""
    merged = estimates[["dim", "estimate"]].merge(exact[["dim", "exact"]], on="dim")
    outside = merged.drop(merged["exact"].nlargest(AUTO_TOP).index)
    return float((outside["exact"] - outside["estimate"]).abs().max())


def scan_part(args) -> dict:
    results = {}
    for name, model, es, error, methods, roles, layers in setups(args):
        if model is None:
            results[name] = {"error": error}
            continue
        log.info("%s: exact full scan", name)
        with Clock() as full:
            exact = exact_effects(model, es, roles=roles, layers=layers, progress=False, autocast=None)
        rows = []
        for method in methods:
            with Clock() as c:
                est = estimate_effects(
                    model, es, roles=roles, layers=layers, method=method, probes=args.probes, autocast=None
                )
            spearman = agreement(est["estimate"], exact["exact"])["spearman"]
            method_floor = certification_floor(est, exact)
            largest_error = largest_error_outside_top(est, exact)
            for rank_by in RANKINGS:
                rows.append(
                    {
                        "method": method,
                        "rank_by": rank_by,
                        "cpu_s": c.cpu,
                        "wall_s": c.wall,
                        "spearman": spearman,
                        "certification_floor": method_floor,
                        "largest_error_outside_top5": largest_error,
                        **_recalls(check_order(est, rank_by), exact),
                    }
                )
            log.info("%s %s: %.1f s, %s", name, method, c.cpu, rows[-1])
        log.info("%s: screened scan (default method and ranking, exact check of the first %s)", name, args.top_k)
        with Clock() as screened:
            table = screened_scan(
                model,
                es,
                roles=roles,
                layers=layers,
                top_k=args.top_k,
                probes=args.probes,
                progress=False,
                autocast=None,
            )
        checked = set(table.loc[table["value_kind"] == "exact", "dim"].astype(int))
        by_exact = exact.set_index("dim")["exact"]
        floor = certification_floor(table, exact)
        ratio = table.attrs.get("error_per_energy")
        if ratio is not None:  # unverified dims whose own error per energy exceeds the ratio the rule measured
            rest = table[~table["dim"].isin(checked)].set_index("dim")
            own = (by_exact.loc[rest.index] - rest["estimate"]) / rest["energy"].where(rest["energy"] > 0)
            beyond = int((own > ratio).sum())
        else:
            beyond = None
        exact_top5 = by_exact.sort_values(ascending=False, kind="stable").index[:5].tolist()
        results[name] = {
            "dims": len(exact),
            "examples": len(es),
            "sites": "+".join(roles) + ("" if layers is None else f" (layers {layers[0]}-{layers[-1]})"),
            "tokens": int(es.attention_mask.sum()),
            "objective": "embedding distance (1 - cos)" if es.kind == "embedding" else f"{es.kind} loss",
            "exact_cpu_s": full.cpu,
            "exact_wall_s": full.wall,
            "methods": rows,
            "screen_method": str(table["method"].iloc[0]),
            "rank_by": table.attrs["rank_by"],
            "screened_cpu_s": screened.cpu,
            "screened_wall_s": screened.wall,
            "speedup": full.cpu / screened.cpu,
            "checked": int(table.attrs["checked_in_order"]),
            "speedup_ceiling": len(exact) / max(1, int(table.attrs["checked_in_order"])),
            "screened_top5_recall": len(set(exact_top5) & checked) / 5,
            "certification_floor": floor,
            "above_half_fifth": int((by_exact > by_exact.loc[exact_top5[-1]] / 2).sum()),
            "largest_error_outside_top5": largest_error_outside_top(table, exact),
            "error_per_energy": ratio,
            "unverified_beyond_ratio": beyond,
            "exact_top5": [int(d) for d in exact_top5],
            "exact_top5_effects": [round(float(by_exact[d]), 5) for d in exact_top5],
            "checked_top5": table.loc[table["value_kind"] == "exact", "dim"].astype(int).tolist()[:5],
        }
    return results


def precision_part(args) -> dict:
    out = {
        "native_bf16": devices.native_cpu_bf16(),
        "flags": sorted(devices.cpu_flags() & {"avx512_bf16", "amx_bf16", "amx_tile"}),
    }
    fp32, bf16 = devices._probe_seconds(torch.float32), devices._probe_seconds(torch.bfloat16)
    out.update(
        {
            "probe_fp32_ms": fp32 * 1e3,
            "probe_bf16_ms": bf16 * 1e3,
            "decision_bf16": devices.cpu_bf16_decision(out["native_bf16"], fp32, bf16),
        }
    )
    texts = texts_for(args.texts)
    n_cond = 4 if args.quick else 8
    for name in ("bbmini", "minilm"):
        if name == "bbmini":
            model, tok = load_model("bbmini", head="mlm", device="cpu")
            es = prepare_mlm_eval(tok, texts, max_length=128, seed=0, batch_size=args.texts)
        else:
            model, tok = load_model("minilm", device="cpu")
            es = prepare_embedding_eval(tok, texts, max_length=128, batch_size=args.texts)
        conditions = [Condition("none")] + [Condition(f"dim {d}", (d,)) for d in range(0, 8 * (n_cond - 1), 8)]
        times, values = {}, {}
        variants = (
            ("fp32", None, None),
            ("bf16", torch.bfloat16, None),  # as the package runs it here (devices.bf16_gemms)
            ("bf16 CPU kernels", torch.bfloat16, True),  # this CPU's own bf16 kernels
            ("bf16 fp32 products", torch.bfloat16, False),  # devices.Bf16GemmsInFp32
            ("fp32 again", None, None),
        )
        decided = devices.cpu_bf16_pays
        for label, dtype, pays in variants:
            devices.cpu_bf16_pays = decided if pays is None else (lambda value=pays: value)
            try:
                engine = AblationEngine(model, es, autocast=dtype)
                engine.run(conditions[:1], progress=False)  # warm-up
                with Clock() as c:
                    values[label] = [r["eval_loss"] for r in engine.run(conditions, progress=False)]
            finally:
                devices.cpu_bf16_pays = decided
            times[label] = c.cpu
        fp32_cpu = (times["fp32"] + times["fp32 again"]) / 2
        out[name] = {
            "fp32_cpu_s": fp32_cpu,
            "bf16_cpu_s": times["bf16"],
            "bf16_speedup": fp32_cpu / times["bf16"],
            "bf16_gemms": devices.bf16_gemms(torch.device("cpu")),
            "bf16_cpu_kernels_s": times["bf16 CPU kernels"],
            "bf16_fp32_products_s": times["bf16 fp32 products"],
            "kernels_vs_products_max_abs_diff": max(
                abs(a - b) for a, b in zip(values["bf16 CPU kernels"], values["bf16 fp32 products"])
            ),
            "max_abs_diff": max(abs(a - b) for a, b in zip(values["fp32"], values["bf16"])),
            "conditions": len(conditions),
            "tokens": int(es.attention_mask.sum()),
            "objective": "eval_loss" if name == "bbmini" else "1 - cos",
        }
    return out


def scaling_part(args) -> list[dict]:
    import transformers as T

    rows = []
    tok = synthetic_tokenizer(4096)
    sizes = (128, 256) if args.quick else (128, 256, 384)
    shapes = ((8, 64),) if args.quick else ((16, 64), (32, 128))
    site_sets = (("block_output",), ("block_output", "attention_output", "embeddings"))
    for hidden in sizes:
        torch.manual_seed(0)
        config = T.BertConfig(
            vocab_size=4096,
            hidden_size=hidden,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=4 * hidden,
            max_position_embeddings=160,
        )
        model = T.BertForMaskedLM(config).eval()
        for n, length in shapes:
            es = prepare_mlm_eval(tok, synthetic_texts(n, 4096, words=length), max_length=length, seed=0, batch_size=n)
            for roles in site_sets:
                probe_dims = list(range(4))
                with Clock() as ex:
                    exact_effects(model, es, dims=probe_dims, roles=roles, progress=False, autocast=None)
                with Clock() as sc:
                    estimate_effects(model, es, roles=roles, autocast=None)
                per_dim = ex.cpu / len(probe_dims)
                n_sites = len(select_sites(find_norm_sites(model), roles=roles))
                rows.append(
                    {
                        "hidden": hidden,
                        "layers": 4,
                        "tokens": int(es.attention_mask.sum()),
                        "sites": "+".join(roles),
                        "n_sites": n_sites,
                        "exact_cpu_s_per_dim": per_dim,
                        "exact_full_cpu_s (per dim x dims)": per_dim * hidden,
                        "screen_cpu_s": sc.cpu,
                        "full / screen": per_dim * hidden / sc.cpu,
                        "screen / one dim": sc.cpu / per_dim,
                    }
                )
                log.info("scaling %s", rows[-1])
    return rows


def markdown_table(frame: pd.DataFrame) -> str:
    """A pipe table (no tabulate dependency); floats with 3 decimals."""
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in frame.itertuples(index=False)]
    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---:" if frame[c].dtype.kind in "if" else "---" for c in frame.columns) + "|"
    return "\n".join([head, rule] + ["| " + " | ".join(r) + " |" for r in cells])


def load_text(figures: dict) -> str:
    """The load averages each measured part saw when it started and ended (a merge of parts lists them all)."""
    parts = figures.get("parts") or [(figures.get("measured"), figures.get("load_start"), figures.get("load_end"))]
    said = [
        f"{float(start if start is not None else 'nan'):.1f} when {'the run' if len(parts) == 1 else f'the part of {when}'}"
        f" started and {float(end if end is not None else 'nan'):.1f} when it ended"
        for when, start, end in parts
    ]
    return "; ".join(said)


def report(figures: dict, args) -> str:
    lines = [
        f"measured {figures.get('measured') or time.strftime('%Y-%m-%d %H:%M')}, machine: {figures['machine']}",
        "",
        f"Times are process CPU seconds with {figures.get('threads', args.threads)} torch thread(s); "
        f"1-minute load average {load_text(figures)}, on {os.cpu_count()} CPUs; ratios come from one run.",
        "",
    ]
    scan = figures.get("scan", {})
    if scan:
        checks = (
            f'exact checks until no unverified dim can reach the exact top {AUTO_TOP} (`top_k="auto"`)'
            if args.top_k == "auto"
            else f"exact check of the first {args.top_k} in its check order"
        )
        lines += [
            f"### Screened scan vs exact full scan (held-out reviews, zeroing one dim at the sites listed; "
            f"`screened_scan` with its defaults, {checks})",
            "",
            "| model | objective | sites | examples (tokens) | dims | checked exactly | exact full scan CPU s "
            "| screened scan CPU s | speed-up | ceiling dims/k | exact top-5 recall in checked set "
            "| certification floor (checks) | dims/floor |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, r in scan.items():
            if "error" in r:
                lines.append(f"| {name} | not loaded: {r['error']} | | | | | | | | | | | |")
                continue
            floor = r.get("certification_floor")
            floor_cells = "| |" if floor is None else f"{floor} | {r['dims'] / floor:.1f}x |"
            lines.append(
                f"| {name} | {r['objective']} | {r['sites']} | {r['examples']} ({r['tokens']}) | {r['dims']} | "
                f"{r.get('checked', '')} | {r['exact_cpu_s']:.1f} | {r['screened_cpu_s']:.1f} ({r['screen_method']}, {r['rank_by']}) | "
                f"{r['speedup']:.1f}x | {r['speedup_ceiling']:.1f}x | {r['screened_top5_recall']:.2f} | "
                f"{floor_cells}"
            )
        measured = [r for r in scan.values() if "error" not in r]
        if measured:
            full = sum(r["exact_cpu_s"] for r in measured)
            screened = sum(r["screened_cpu_s"] for r in measured)
            found = sum(r["screened_top5_recall"] == 1.0 for r in measured)
            lines += [
                "",
                f"Over the {len(measured)} models: exact full scans {full:.1f} CPU s, screened scans {screened:.1f} "
                f"CPU s, **{full / screened:.1f}x**; the exact top 5 was in the checked set on {found} of "
                f"{len(measured)}.",
            ]
            if any(r.get("certification_floor") is not None for r in measured):
                lines += [
                    "",
                    "`certification floor`: the fewest exact checks with which any bound of the adaptive rule's "
                    "form (estimate plus one error-per-energy ratio times the edit energy) certifies the exact "
                    "top 5, given this run's exhaustive scan (`screen.certification_floor`: the top 5 plus every "
                    "other dim that the smallest ratio valid on all of them leaves able to reach the 5th effect); "
                    "`dims/floor` is the largest speed-up such a certified screen could reach before its own cost.",
                ]
            auto = [(n, r) for n, r in scan.items() if r.get("error_per_energy") is not None]
            for name, r in auto:
                lines.append(
                    f"* {name}: the rule's final error per energy {r['error_per_energy']:.3g}; unverified dims "
                    f"whose own error per energy exceeds it: {r['unverified_beyond_ratio']}"
                )
        lines += [
            "",
            "Each estimate alone (its own engine) and each check order (`check_order`):",
            "",
            "| model | method | check order | CPU s | Spearman | top-5 in 16 | top-5 in 32 | top-10 in 16 | top-10 in 32 "
            "| largest error outside top 5 | certification floor |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, r in scan.items():
            for m in r.get("methods", []):
                error = m.get("largest_error_outside_top5")
                lines.append(
                    f"| {name} | {m['method']} | {m.get('rank_by', '')} | {m['cpu_s']:.1f} | {m['spearman']:.3f} | "
                    f"{m['recall_top5_in16']:.2f} | {m['recall_top5_in32']:.2f} | {m['recall_top10_in16']:.2f} | "
                    f"{m['recall_top10_in32']:.2f} | {'' if error is None else f'{error:.3f}'} | "
                    f"{m.get('certification_floor', '')} |"
                )
        lines.append("")
        for name, r in scan.items():
            if "exact_top5" in r:
                lines.append(
                    f"* {name}: exact top 5 dims {r['exact_top5']} (effects {r['exact_top5_effects']}); "
                    f"the screened scan's 5 most damaging checked dims {r.get('checked_top5')}"
                    + (
                        f"; {r['above_half_fifth']} dims above half the 5th effect; the estimate's largest error "
                        f"on the other dims {r['largest_error_outside_top5']:.3f}"
                        if "above_half_fifth" in r
                        else ""
                    )
                )
        lines.append("")
    prec = figures.get("precision")
    if prec:
        lines += [
            "### bf16 autocast on this CPU",
            "",
            f"CPU bf16 flags: {prec['flags'] or 'none'}; native (oneDNN) bf16: {prec['native_bf16']}; probe "
            f"(512x384 @ 384x1536 matmul): fp32 {prec['probe_fp32_ms']:.2f} ms, bf16 {prec['probe_bf16_ms']:.2f} ms "
            f'-> the engine\'s `autocast="auto"` picks **{"bf16" if prec["decision_bf16"] else "fp32"}** here.',
            "",
            "`bf16 CPU s` is bf16 autocast as the package runs it here (`bf16 products`: "
            "`device.bf16_gemms`); the next two columns time both ways (the CPU's own bf16 kernels; "
            "`Bf16GemmsInFp32`, fp32 products of the bf16 operands), and `kernels - products` is their largest "
            "loss difference.",
            "",
            "| model | objective | tokens | conditions | fp32 CPU s | bf16 CPU s | bf16 speed-up | max abs difference "
            "| bf16 products | CPU kernels CPU s | fp32 products CPU s | kernels - products |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
        ]
        for name in ("bbmini", "minilm"):
            r = prec[name]
            lines.append(
                f"| {name} | {r['objective']} | {r['tokens']} | {r['conditions']} | {r['fp32_cpu_s']:.1f} | "
                f"{r['bf16_cpu_s']:.1f} | {r['bf16_speedup']:.2f}x | {r['max_abs_diff']:.4f} | "
                f"{r.get('bf16_gemms', 'native')} | {r.get('bf16_cpu_kernels_s', float('nan')):.1f} | "
                f"{r.get('bf16_fp32_products_s', float('nan')):.1f} | "
                f"{r.get('kernels_vs_products_max_abs_diff', float('nan')):.4f} |"
            )
        lines.append("")
    scaling = figures.get("scaling")
    if scaling:
        lines += [
            "### Cost vs hidden size, tokens and sites (random BERTs, 4 layers, MLM head)",
            "",
            markdown_table(pd.DataFrame(scaling)),
            "",
        ]
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.quick:
        args.texts = min(args.texts, 8)
    torch.set_num_threads(args.threads)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    figures = {
        "machine": machine(),
        "threads": args.threads,
        "load_start": os.getloadavg()[0],
        "measured": None if args.from_json else time.strftime("%Y-%m-%d %H:%M"),
    }

    def save():
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=1, default=str))

    if args.from_json:
        for path in args.from_json:
            part = json.loads(Path(path).read_text())
            for key, value in part.items():
                if key == "scan":
                    figures.setdefault("scan", {}).update(value)
                elif key == "machine":
                    figures["machine"] = value
                elif key == "measured":  # the parts' start times, earliest first
                    figures["measured"] = ", ".join(sorted(filter(None, {figures.get("measured"), value})))
                elif key in ("load_start", "load_end"):
                    pass  # each part's loads go into "parts" below
                else:
                    figures[key] = value
            figures.setdefault("parts", []).append((part.get("measured"), part.get("load_start"), part.get("load_end")))
    else:
        if "scan" not in skip:
            figures["scan"] = {}
            for name in [m.strip() for m in args.models.split(",") if m.strip()]:
                figures["scan"].update(scan_part(argparse.Namespace(**{**vars(args), "models": name})))
                save()
        if "precision" not in skip:
            figures["precision"] = precision_part(args)
            save()
        if "scaling" not in skip:
            figures["scaling"] = scaling_part(args)
            save()
    if not args.from_json:
        figures["load_end"] = os.getloadavg()[0]
    text = report(figures, args)
    print(text)
    label = (
        "screened scans and CPU precision"
        + ("" if args.top_k == 16 else f", top_k={args.top_k}")
        + (" (quick)" if args.quick else "")
    )
    write_section(Path(args.results), label, f"## {label}\n\n{text}")
    save()
    return figures


if __name__ == "__main__":
    main()
