"""Sweep of every masked-LM, causal-LM and seq2seq model type of transformers through the norm-site finder.

Each type is built offline, randomly initialised, from its own config class shrunk to a tiny size
(hidden 32, 2 layers, 2 heads, vocab 128), then ``find_norm_sites`` runs on it and every site is
verified: disabling dim d of that norm (the package's one definition of "disable") must equal
zeroing dim d of the norm's output in the forward pass. The outcome of every type goes to a table
(``docs/ARCHITECTURES.md``, written by ``python -m bertbusters_nb.model.architectures``); the test suite
re-runs the sweep and fails when a type listed there as covered is no longer covered.

Outcomes: ``covered`` (sites found, roles traced, every site verified), ``layout-error`` (a clear
``NormLayoutError`` saying what was seen), ``wrong`` (a site failed verification: a bug),
``not-buildable`` (the tiny config or model cannot be built offline / needs extra packages).
"""

from __future__ import annotations

import contextlib
import io
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    import pandas as pd

TINY_SIZES = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "intermediate_size": 64,
    "vocab_size": 128,
    "head_dim": 16,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "num_decoder_layers": 2,
    "num_encoder_layers": 2,
    "encoder_attention_heads": 2,
    "decoder_attention_heads": 2,
    "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64,
    "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 32,
    "num_experts": 4,
    "n_routed_experts": 4,
    "num_local_experts": 4,
    "num_experts_per_tok": 2,
    "first_k_dense_replace": 1,
    "n_group": 1,
    "topk_group": 1,
    "d_ff": 64,
    "d_kv": 16,
    "d_inner": 64,
    "ffn_dim": 64,
    "n_inner": 64,
    "max_position_embeddings": 64,
    "max_window_layers": 2,
    "sliding_window": 16,
    "kv_lora_rank": 16,
    "q_lora_rank": 16,
    "qk_rope_head_dim": 8,
    "qk_nope_head_dim": 8,
    "v_head_dim": 16,
    "embedding_size": 32,
    "projection_dim": 32,
    "num_hidden_groups": 1,
    "state_size": 8,
    "time_step_rank": 4,
    "conv_kernel": 4,
    "expand": 2,
    "mamba_d_state": 8,
    "mamba_n_heads": 4,
    "mamba_d_head": 16,
    "ssm_state_size": 8,
    "linear_num_key_heads": 2,
    "linear_num_value_heads": 2,
    "linear_key_head_dim": 16,
    "linear_value_head_dim": 16,
}
# Sizes a config class may leave None although its model needs them (Ministral's head_dim, ESM's vocab_size, ...).
UNSET_SIZES = ("head_dim", "num_key_value_heads", "vocab_size", "num_experts_per_tok")
MAX_PARAMS = 3_000_000  # a type whose tiny config is larger than this is recorded as not buildable
# Which layer-count attributes a config may carry (any that exist are shrunk to 2).
LAYER_ATTRS = (
    "num_hidden_layers",
    "num_layers",
    "n_layer",
    "n_layers",
    "encoder_layers",
    "decoder_layers",
    "num_decoder_layers",
    "num_encoder_layers",
)


def mapped_types() -> dict[str, list[str]]:
    """Every model type of the masked-LM, causal-LM and seq2seq auto mappings -> which mappings list it."""
    from transformers.models.auto import modeling_auto as ma

    out: dict[str, list[str]] = {}
    for label, mapping in (
        ("masked-lm", ma.MODEL_FOR_MASKED_LM_MAPPING_NAMES),
        ("causal-lm", ma.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES),
        ("seq2seq", ma.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES),
    ):
        for model_type in mapping:
            out.setdefault(model_type, []).append(label)
    return dict(sorted(out.items()))


def _shrink(config, depth: int = 0) -> None:
    for key in LAYER_ATTRS:
        if isinstance(getattr(config, key, None), int) and not isinstance(getattr(config, key), bool):
            with contextlib.suppress(Exception):
                setattr(config, key, 2)
    for key, value in TINY_SIZES.items():
        current = getattr(config, key, None)
        # unset (None) sizes that the model derives nothing from and needs: set them too
        unset = current is None and key in UNSET_SIZES and key in vars(config)
        if unset or isinstance(current, int) and not isinstance(current, bool):
            with contextlib.suppress(Exception):
                setattr(config, key, value)
    vocab = getattr(config, "vocab_size", None)
    if isinstance(vocab, int):
        for key, value in (("pad_token_id", 0), ("bos_token_id", 1), ("eos_token_id", 2)):
            current = getattr(config, key, None)
            if isinstance(current, int) and current >= vocab:
                with contextlib.suppress(Exception):
                    setattr(config, key, value)
    if isinstance(getattr(config, "rotary_dim", None), int):
        with contextlib.suppress(Exception):
            config.rotary_dim = 8
    if isinstance(getattr(config, "qk_rope_head_dim", None), int) and isinstance(
        getattr(config, "head_dim", None), int
    ):
        with contextlib.suppress(Exception):
            config.head_dim = config.qk_rope_head_dim
    if isinstance(getattr(config, "block_sizes", None), (list, tuple)):  # Funnel: layers per pooling block
        with contextlib.suppress(Exception):
            config.block_sizes = [1] * len(config.block_sizes)
    for key in ("layer_types", "layers_block_type", "hybrid_override_pattern", "block_types"):
        current = getattr(config, key, None)
        if isinstance(current, (list, tuple)) and len(current) > 2:
            with contextlib.suppress(Exception):
                setattr(config, key, list(current[:2]))
    if depth < 2:
        from transformers import PretrainedConfig

        for key, sub in list(vars(config).items()):
            if isinstance(sub, PretrainedConfig):
                _shrink(sub, depth + 1)


def tiny_model(model_type: str, head: str) -> torch.nn.Module:
    """A seeded, randomly initialised tiny model of ``model_type`` with the auto class of ``head``."""
    import transformers as T

    config = T.AutoConfig.for_model(model_type)
    _shrink(config)
    auto = {
        "masked-lm": T.AutoModelForMaskedLM,
        "causal-lm": T.AutoModelForCausalLM,
        "seq2seq": T.AutoModelForSeq2SeqLM,
    }[head]
    with torch.device("meta"):
        n_params = sum(p.numel() for p in auto.from_config(config).parameters())
    if n_params > MAX_PARAMS:
        raise ValueError(
            f"the shrunk config still has {n_params / 1e6:.1f}M parameters (limit "
            f"{MAX_PARAMS / 1e6:.0f}M): sizes this sweep does not know how to shrink"
        )
    torch.manual_seed(0)
    return auto.from_config(config).float().eval()


@dataclass
class Outcome:
    model_type: str
    head: str
    status: str  # covered / layout-error / wrong / not-buildable
    detail: str
    roles: str = ""
    layers: str = ""
    seconds: float = 0.0


def _role_summary(sites) -> tuple[str, str]:
    counts = Counter((s.stack, s.role) for s in sites)
    roles = ", ".join(f"{stack[:3]}:{role}×{n}" for (stack, role), n in counts.items())
    layers = ", ".join(
        f"{stack}={1 + max(s.layer for s in sites if s.stack == stack and s.layer is not None)}"
        for stack in sorted({s.stack for s in sites if s.layer is not None})
    )
    return roles, layers


def check_type(model_type: str, head: str) -> Outcome:
    """Build, find sites, verify every site; never raises (the outcome says what happened)."""
    from .ablation import verify_sites
    from .discovery import find_norm_sites
    from .sites import NormLayoutError

    start = time.perf_counter()
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stderr(io.StringIO()),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            model = tiny_model(model_type, head)
            _plain_forward(model)
    except Exception as exc:  # noqa: BLE001 - recorded, not hidden
        return Outcome(
            model_type,
            head,
            "not-buildable",
            f"{type(exc).__name__}: {_short(exc)}",
            seconds=time.perf_counter() - start,
        )
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sites = find_norm_sites(model)
            problems = verify_sites(model, sites)
        not_run = [str(w.message) for w in caught if "did not run" in str(w.message)]
    except NormLayoutError as exc:
        return Outcome(model_type, head, "layout-error", _short(exc), seconds=time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - a crash of the finder is a bug, shown as such
        return Outcome(
            model_type, head, "wrong", f"crash {type(exc).__name__}: {_short(exc)}", seconds=time.perf_counter() - start
        )
    roles, layers = _role_summary(sites)
    if problems:
        return Outcome(model_type, head, "wrong", "; ".join(problems[:3]), roles, layers, time.perf_counter() - start)
    note = f"; {_short(not_run[0], 200)}" if not_run else ""
    return Outcome(
        model_type, head, "covered", f"{len(sites)} sites verified{note}", roles, layers, time.perf_counter() - start
    )


def _plain_forward(model: torch.nn.Module) -> None:
    """The tiny model must run on input_ids alone, else the sweep cannot test the finder on it."""
    from .tracing import dummy_inputs

    with torch.no_grad():
        try:
            model(**dummy_inputs(model))
        except Exception as exc:  # noqa: BLE001
            raise RuntimeError(
                f"the tiny model does not run on input_ids alone ({type(exc).__name__}: {_short(exc, 150)})"
            ) from exc


def _short(exc: BaseException | str, n: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def head_for(heads: list[str]) -> str:
    """The head a type is swept with: seq2seq when listed there (the whole encoder-decoder), else the first."""
    return "seq2seq" if "seq2seq" in heads else heads[0]


def sweep(types: dict[str, list[str]] | None = None, progress: bool = True) -> list[Outcome]:
    """The outcome of every mapped model type (one head per type: seq2seq when listed there, so that an
    encoder-decoder type is traced whole, else the first mapping that lists it)."""
    types = mapped_types() if types is None else types
    items = list(types.items())
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, desc="model types", unit="type")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [check_type(model_type, head_for(heads)) for model_type, heads in items]
    finally:
        torch.set_num_threads(threads)


def outcome_table(outcomes: list[Outcome]) -> "pd.DataFrame":
    """A tidy table of the outcomes."""
    import pandas as pd

    return pd.DataFrame([o.__dict__ for o in outcomes])


def render_markdown(outcomes: list[Outcome]) -> str:
    """docs/ARCHITECTURES.md: every type and its outcome, with the transformers version and the coverage."""
    import transformers

    counts = Counter(o.status for o in outcomes)
    buildable = len(outcomes) - counts["not-buildable"]
    lines = [
        "# Architectures: norm sites over the transformers registry",
        "",
        f"Generated by `python -m bertbusters_nb.model.architectures` with transformers {transformers.__version__}: every "
        "model type of the masked-LM, causal-LM and seq2seq auto mappings, built offline from its config class "
        "shrunk to a tiny size, through `find_norm_sites`; each site verified (disabling dim d equals zeroing dim d "
        "of the norm's output). `tests/test_architectures.py` fails when a type listed here as covered stops being "
        "covered.",
        "",
        f"Buildable types: {buildable} of {len(outcomes)}; covered with verified roles: {counts['covered']} "
        f"({counts['covered'] / max(buildable, 1):.0%} of buildable); clear NormLayoutError: {counts['layout-error']}; "
        f"wrong: {counts['wrong']}; not buildable offline: {counts['not-buildable']}.",
        "",
        "Notes on what counts. A *norm* is a LayerNorm or RMSNorm module (by class), plus MobileBERT's `NoNorm` "
        "(`x * weight + bias`, no normalisation): it takes the LayerNorm's place in MobileBERT, and disabling dim d "
        "(weight and bias 0) zeroes that dim of its output exactly as for a LayerNorm, so the ablation means the same "
        "thing there; what it lacks is the normalisation, so a dim's scale is not set relative to the other dims. "
        "MobileBERT's bottleneck norms (not the stream's width) are `inner` and left out of hidden-dim ablation. "
        "*Attention* in a role name means any token-mixing sub-layer, found by perturbing one token: RWKV's "
        "channel-mix shifts tokens, so the norm before it is `pre_attention` too. `block_input` is a norm that alone "
        "receives the layer's input and whose output is the stream from there on (MiniMax in every layer, RWKV's "
        "`pre_ln` in the first block).",
        "",
        "| model type | head | outcome | roles (stack:role×count) | layers | detail |",
        "|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        detail = o.detail.replace("|", "\\|")
        lines.append(f"| {o.model_type} | {o.head} | {o.status} | {o.roles} | {o.layers} | {detail} |")
    return "\n".join(lines) + "\n"


def covered_in(markdown: str) -> set[str]:
    """The model types a rendered table lists as covered."""
    out = set()
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[2] == "covered":
            out.add(cells[0])
    return out


DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "ARCHITECTURES.md"


def main() -> None:
    outcomes = sweep()
    DOC_PATH.write_text(render_markdown(outcomes))
    counts = Counter(o.status for o in outcomes)
    print(dict(counts), f"-> {DOC_PATH}")


if __name__ == "__main__":
    main()
