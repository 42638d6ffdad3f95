"""Post-hoc analysis of pre-training runs: outlier dims and their ablation over a run's snapshots.

``select_outlier_dims`` applies the project's one rule (``detection.detect``) to a run's model;
``ablation_effect`` measures the eval-loss rise when those dims are zeroed against random dims;
``ablation_trajectory`` does it at every snapshot; ``model_metrics`` computes the numbers a model
folder's METRICS.json records. The ``ablation`` and ``metrics`` commands of
``python -m bertbusters_nb.pretraining`` call :func:`ablation_command` and :func:`metrics_command`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from ..atomic import atomic_write_json, atomic_write_text, read_json
from ..pretraining.config import EVAL_CHECK_SEQUENCES
from ..pretraining.objective import eval_mlm_loss
from ..pretraining.runs import load_run_model
from ..pretraining.tokenizer import load_chunks, unigram_entropy
from .rule import DEFAULT_RULE

if TYPE_CHECKING:
    import pandas as pd
    from transformers import PreTrainedModel

    from .detection import Detection

__all__ = [
    "select_outlier_dims",
    "ablation_effect",
    "ablation_trajectory",
    "model_metrics",
    "ablation_command",
    "metrics_command",
]


def select_outlier_dims(
    model: PreTrainedModel,
    chunks: np.ndarray | None = None,
    fallback_count: int = DEFAULT_RULE.fallback,
    max_sequences: int = 64,
) -> tuple[list[int], str, Detection]:
    """The project's one rule (``detection.detect``) on a run's model: (dims, rule, Detection).

    Parameters of every norm site, and, with ``chunks`` (token ids of held-out sequences), the hidden
    states of the first ``max_sequences`` of them. A snapshot at initialisation has no outliers (its
    LayerNorms are ones and zeros, its hidden states even): rule 'strongest candidates', the
    ``fallback_count`` dims ranked best by the same evidence, so an ablation always has dims to test.

    Example:
        >>> dims, rule, found = select_outlier_dims(model, heldout)  # doctest: +SKIP
    """
    from .activations import activation_profile
    from .detection import detect

    profile = None
    if chunks is not None and len(chunks):
        device = next(model.parameters()).device
        rows = chunks[:max_sequences].astype(np.int64)
        batches = [{"input_ids": torch.from_numpy(rows[i : i + 32]).to(device)} for i in range(0, len(rows), 32)]
        profile = activation_profile(model, batches)
    found = detect(model, profile=profile, fallback=fallback_count)
    return found.dims, found.rule, found


def ablation_effect(
    model: PreTrainedModel,
    chunks: np.ndarray,
    dims: Sequence[int],
    draws: int = 20,
    roles: Sequence[str] = ("block_output",),
    seed: int = 0,
    batch_size: int = 128,
    max_sequences: int | None = None,
) -> dict:
    """Eval-loss rise when ``dims`` are zeroed (weight and bias) in every ``roles`` LayerNorm, vs random dims.

    Returns base_loss, outlier_loss, delta, random_deltas (``draws`` draws of as many random
    dims, the outlier dims excluded) and baselines.rank_against's summary.

    Example:
        >>> ablation_effect(model, heldout, [125, 9], draws=20)["share_of_draws_below"]  # doctest: +SKIP
        1.0
    """
    from ..model.ablation import disabled_dims
    from ..model.discovery import find_norm_sites
    from ..model.sites import select_sites
    from .baselines import random_dims, rank_against

    sites = select_sites(find_norm_sites(model), roles=list(roles))

    def loss() -> float:
        return eval_mlm_loss(model, chunks, batch_size, max_sequences=max_sequences)

    base = loss()
    with disabled_dims(sites, dims):
        outlier = loss()
    random_deltas = []
    for draw in random_dims(sites[0].size, len(dims), draws, exclude=dims, seed=seed):
        with disabled_dims(sites, draw):
            random_deltas.append(loss() - base)
    rank = rank_against(outlier - base, random_deltas)
    return {
        "dims": [int(d) for d in dims],
        "roles": list(roles),
        "base_loss": base,
        "outlier_loss": outlier,
        "delta": outlier - base,
        "random_deltas": random_deltas,
        **rank,
    }


def ablation_trajectory(
    run_dir: str | os.PathLike,
    dims: Sequence[int] | None = None,
    draws: int = 20,
    max_sequences: int = 256,
    device: str | None = None,
    progress: bool = True,
    data_dir: str | os.PathLike | None = None,
):
    """Ablation effect at every snapshot of a run: the given dims, or each snapshot's own LayerNorm outliers.

    Example:
        >>> ablation_trajectory("runs/gpu/h256l4", dims=[125, 9])  # doctest: +SKIP
    """
    import pandas as pd
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    chunks = load_chunks(data_dir or read_json(run_dir / "config.json")["data_dir"], "heldout")
    snaps = {int(p.stem.split("_")[1]): p for p in (run_dir / "snapshots").glob("step_*.safetensors")}
    if (run_dir / "final.safetensors").exists() and (run_dir / "train_log.csv").exists():
        snaps.setdefault(int(pd.read_csv(run_dir / "train_log.csv")["step"].iloc[-1]), run_dir / "final.safetensors")
    rows = []
    for step, path in tqdm(sorted(snaps.items()), desc="ablation over steps", disable=not progress):
        model = load_run_model(run_dir, path, device)
        chosen, rule = (list(dims), "given") if dims is not None else select_outlier_dims(model, chunks)[:2]
        effect = ablation_effect(model, chunks, chosen, draws, max_sequences=max_sequences)
        rows.append(
            {
                "step": step,
                "rule": rule,
                **{k: v for k, v in effect.items() if k not in ("random_deltas", "roles", "dims")},
                "dims": " ".join(map(str, chosen)),
            }
        )
    return pd.DataFrame(rows)


def model_metrics(
    model_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    draws: int = 20,
    ablation_sequences: int = 512,
    check_sequences: int = EVAL_CHECK_SEQUENCES,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """The numbers METRICS.json records for a model folder, computed here (fp32, this machine's device).

    eval_loss on every held-out chunk; the unigram entropy of the same tokenizer on the same
    text; LayerNorm outlier dims per role; the ablation of the block-output outliers against
    ``draws`` random draws (and each outlier dim alone); ``eval_loss_check`` on the first
    ``check_sequences`` chunks, which a test recomputes in seconds.

    Example:
        >>> model_metrics("bertbusters_nb/data/bbmini", ".gpu/data")["ablation"]["share_of_draws_below"]  # doctest: +SKIP
        1.0
    """
    from ..model.discovery import find_norm_sites
    from ..model.loading import load_model
    from ..model.sites import select_sites
    from .outliers import find_outliers

    model, _ = load_model(str(model_dir), head="mlm")
    heldout, train = load_chunks(data_dir, "heldout"), load_chunks(data_dir, "train")
    sites = find_norm_sites(model)
    outliers = {}
    for name, roles in (
        ("block_output", ["block_output"]),
        ("attention_output", ["attention_output"]),
        ("block_and_attention_output", ["block_output", "attention_output"]),
    ):
        report = find_outliers(select_sites(sites, roles=roles))
        outliers[name] = {
            "sites": report.n_sites,
            "min_sites": report.min_sites,
            "dims": report.dims,
            "top": report.per_dim.head(8).to_dict(orient="records"),
        }
    dims, rule, _ = select_outlier_dims(model, heldout)
    effect = ablation_effect(model, heldout, dims, draws, seed=seed, max_sequences=ablation_sequences)
    single = {}
    for dim in dims:
        single[str(dim)] = ablation_effect(model, heldout, [dim], draws=2, seed=seed, max_sequences=ablation_sequences)[
            "delta"
        ]
    from .activations import activation_stats, outlier_share

    batches = [{"input_ids": torch.from_numpy(heldout[i : i + 32].astype(np.int64))} for i in range(0, 128, 32)]
    per_dim, top = activation_stats(model, batches, progress=False)
    share = outlier_share(top, dims[:1])
    magnitude = per_dim[per_dim.dim == dims[0]].set_index("layer")["abs_ratio_to_median"]
    hidden_states = {
        "dim": dims[0],
        "sequences": 128,
        "layers": [int(l) for l in share.layer],
        "input_share_top_dim": [float(x) for x in share.input_share],
        "token_share_top_dim": [float(x) for x in share.token_share],
        "mean_abs_over_median_dim": [float(magnitude.get(l, float("nan"))) for l in share.layer],
    }
    vocab = model.config.vocab_size
    training = {}
    if (Path(model_dir) / "train_log.csv").exists():
        import pandas as pd

        last = pd.read_csv(Path(model_dir) / "train_log.csv").iloc[-1]
        training = {
            "steps": int(last.step),
            "tokens": int(last.tokens),
            "final_train_loss": float(last.train_loss),
            "final_eval_loss_logged": float(last.eval_loss),
            "training_seconds": float(last.seconds),
        }
    return {
        **training,
        "eval_loss": eval_mlm_loss(model, heldout),
        "eval_sequences": int(len(heldout)),
        "eval_loss_check": {
            "sequences": check_sequences,
            "file": "eval_check.npy",
            "loss": eval_mlm_loss(model, heldout, max_sequences=check_sequences),
        },
        "unigram_entropy_eval": unigram_entropy(heldout, vocab_size=vocab),
        "unigram_cross_entropy_train_to_eval": unigram_entropy(heldout, reference=train, vocab_size=vocab),
        "outliers": outliers,
        "ablation_dims_rule": rule,
        "ablation": {**effect, "sequences": ablation_sequences},
        "ablation_single_dim_delta": single,
        "hidden_states": hidden_states,
    }


def ablation_command(
    run: str | os.PathLike, dims: Sequence[int] | None = None, draws: int = 20, max_sequences: int = 256
) -> "pd.DataFrame":
    """The ``ablation`` command: both selections (the final model's dims, each snapshot's own).

    Writes them to ``run/ablation_trajectory.csv`` (column ``selection``: final / own) and returns the table.
    """
    import pandas as pd

    run = Path(run)
    if dims is None:
        chunks = load_chunks(read_json(run / "config.json")["data_dir"], "heldout")
        dims = select_outlier_dims(load_run_model(run), chunks)[0]
    table = ablation_trajectory(run, dims, draws, max_sequences)
    own = ablation_trajectory(run, None, draws, max_sequences)
    both = pd.concat([table.assign(selection="final"), own.assign(selection="own")], ignore_index=True)
    atomic_write_text(run / "ablation_trajectory.csv", both.to_csv(index=False))
    return both


def metrics_command(
    model_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    draws: int = 20,
    ablation_sequences: int = 512,
    update: str | os.PathLike | None = None,
) -> dict:
    """The ``metrics`` command: ``model_metrics``, merged into the JSON file ``update`` (atomically) when given."""
    numbers = model_metrics(model_dir, data_dir, draws, ablation_sequences)
    if update:
        old = read_json(update) if Path(update).exists() else {}
        atomic_write_json(update, {**old, **numbers})
    return numbers
