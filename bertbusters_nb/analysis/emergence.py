"""Emergence (finding 1): when do outlier dims appear during pre-training?

Works on a ``pretraining.NormTrajectory`` (our own runs record one per log point) or on a
series of saved checkpoints (hub names such as ``google/multiberts-seed_0-step_20k`` or local
folders), read into the same structure by ``trajectory_from_checkpoints``.
"""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd
from tqdm.auto import tqdm

from ..pretraining import NormTrajectory
from .rule import DEFAULT_RULE


def trajectory_from_checkpoints(
    checkpoints: Sequence[str], steps: Sequence[int] | None = None, device: str | None = "cpu", progress: bool = True
) -> NormTrajectory:
    """LayerNorm parameters of a checkpoint series, one model at a time (any names or folders).

    Example:
        >>> names = [f"google/multiberts-seed_0-step_{k}k" for k in (0, 20, 40, 100, 200)]
        >>> traj = trajectory_from_checkpoints(names, steps=[0, 20_000, 40_000, 100_000, 200_000])  # doctest: +SKIP
    """
    from ..model.loading import load_model

    checkpoints = list(checkpoints)
    if not checkpoints:
        raise ValueError("No checkpoints given: pass a list of hub names or local model folders.")
    if steps is not None and len(steps) != len(checkpoints):
        raise ValueError(f"{len(checkpoints)} checkpoints but {len(steps)} steps.")
    trajectory: NormTrajectory | None = None
    for index, name in enumerate(tqdm(checkpoints, desc="checkpoints", disable=not progress)):
        model, _ = load_model(name, head="base", device=device)
        if trajectory is None:
            trajectory = NormTrajectory.for_model(model)
        trajectory.record(model, steps[index] if steps is not None else index)
    assert trajectory is not None  # checkpoints is not empty (checked above)
    return trajectory


def flags_over_steps(
    trajectory: NormTrajectory, roles: Sequence[str] = ("block_output",), k: float = DEFAULT_RULE.k
) -> pd.DataFrame:
    """Per step and dim: in how many sites of ``roles`` the dim is beyond ``k`` sigma (weight or bias), max |z|."""
    table = trajectory.table(roles=roles)
    n_sites = table.site.nunique()
    table = table.assign(abs_z=table.z.abs(), flagged=table.z.abs() > k)
    per_site = table.groupby(["step", "dim", "site"]).agg(flagged=("flagged", "any"), abs_z=("abs_z", "max"))
    out = per_site.groupby(["step", "dim"]).agg(sites_flagged=("flagged", "sum"), max_abs_z=("abs_z", "max"))
    out = out.reset_index()
    out["n_sites"] = n_sites
    return out


def emergence_steps(
    flags: pd.DataFrame, dims: Sequence[int], min_share: float = DEFAULT_RULE.min_share
) -> pd.DataFrame:
    """For each dim, the first step at which it is flagged in more than ``min_share`` of the sites
    (and stays flagged at the final step); ``None`` when it never is."""
    rows = []
    for dim in dims:
        series = flags[flags.dim == dim].sort_values("step")
        need = math.floor(series.n_sites.iloc[0] * min_share) + 1 if len(series) else 1
        hits = series[series.sites_flagged >= need]
        rows.append(
            {
                "dim": int(dim),
                "first_step_in_most_sites": int(hits.step.iloc[0]) if len(hits) else None,
                "sites_needed": int(need),
                "final_sites_flagged": int(series.sites_flagged.iloc[-1]) if len(series) else 0,
            }
        )
    return pd.DataFrame(rows)


def loss_breakout_step(log: pd.DataFrame, plateau: float, margin: float = 1.0) -> int | None:
    """First logged step whose eval loss is ``margin`` nats below ``plateau`` (the unigram entropy).

    A context-free model already gets ~0.6 nats below the unigram entropy by copying the
    visible token at the 10% of masked positions left unchanged (issue 4 measured 6.10 vs
    6.69), so the default margin of 1 nat marks a model that really uses context."""
    below = log[log.eval_loss < plateau - margin]
    return int(below.step.iloc[0]) if len(below) else None


def middle_layer_snapshots(
    trajectory: NormTrajectory, layer: int, role: str = "block_output", n_steps: int = 4
) -> pd.DataFrame:
    """Weight and bias of one site over all dims at ``n_steps`` steps spread over the run (for the paper's figure)."""
    table = trajectory.table(roles=[role], layers=[layer])
    steps = sorted(table.step.unique())
    picks = sorted({steps[round(i * (len(steps) - 1) / max(n_steps - 1, 1))] for i in range(n_steps)})
    return table[table.step.isin(picks)].reset_index(drop=True)


def emergence_summary(emerged: pd.DataFrame, breakout: int | None, final_loss: float, plateau: float) -> str:
    """The closing sentence of notebook 01, from the run's numbers."""
    parts = []
    for r in emerged.itertuples():
        when = (
            f"first beyond the threshold in most layers at step {r.first_step_in_most_sites:,}"
            if r.first_step_in_most_sites is not None
            else "never beyond the threshold in most layers"
        )
        parts.append(f"dim {r.dim} {when} ({r.final_sites_flagged} sites at the end)")
    loss = (
        f"the eval loss left the plateau ({plateau:.2f} nats) at step {breakout:,} and ended at {final_loss:.2f}"
        if breakout is not None
        else f"the eval loss never left the plateau ({plateau:.2f} nats; final {final_loss:.2f})"
    )
    return "; ".join(parts) + f"; {loss}."


def live_pretraining(
    out_dir: str,
    seconds: float,
    n_texts: int = 20_000,
    vocab_size: int = 4096,
    hidden: int = 128,
    layers: int = 4,
    batch_size: int = 32,
    seq_len: int = 64,
    log_every: int = 50,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
):
    """A short pre-training run the reader can watch (minutes on the CPU), on a sample of the offline corpora.

    Builds (or reuses) a small data folder under ``out_dir/data`` and trains for ``seconds``
    (resuming if the folder already holds a run of the same settings). Snapshots are kept at
    every log point so the ablation effect can be measured over steps. Returns the
    ``PretrainResult``.

    Example:
        >>> result = live_pretraining("figures/offline/01_emergence/live", seconds=120)  # doctest: +SKIP
    """
    from pathlib import Path

    from ..checks import count
    from ..checks import seconds as check_seconds
    from ..data import load_texts, sample_texts
    from ..pretraining import PretrainConfig, pretrain
    from ..pretraining.tokenizer import prepare_data_from_texts

    seconds = check_seconds("seconds", seconds)
    n_texts = count("n_texts", n_texts)

    root = Path(out_dir)
    data_dir = root / "data"
    if not (data_dir / "data.json").exists():
        train = sample_texts(
            [t for c in ("movie_reviews", "snli", "kjv") for t in load_texts(c, "train")], n_texts, seed
        )
        heldout = sample_texts(
            [t for c in ("movie_reviews", "snli", "kjv") for t in load_texts(c, "heldout")],
            max(64, n_texts // 50),
            seed,
        )
        prepare_data_from_texts(train, heldout, data_dir, vocab_size=vocab_size, seq_len=seq_len)
    max_steps = 1_000_000  # the time limit decides; constant LR after warm-up, so any stop is a clean run
    config = PretrainConfig(
        data_dir=str(data_dir),
        hidden=hidden,
        layers=layers,
        heads=max(1, hidden // 64),
        intermediate=4 * hidden,
        batch_size=batch_size,
        warmup_steps=100,
        max_steps=max_steps,
        log_every=log_every,
        save_every=log_every * 4,
        seed=seed,
        eval_sequences=64,
        snapshot_steps=list(range(0, 100_000, log_every * 2)),
        device=device,
        time_limit_s=float(seconds),
    )
    return pretrain(config, root / "run", resume=False, progress=progress)


class EmergenceRecord:
    """What notebook 01 reads about one pre-training history.

    name: label. log: train_log rows (step, tokens, train_loss, eval_loss) or None.
    plateau: unigram cross-entropy of the held-out text (nats) or None. trajectory: the
    NormTrajectory. ablation: per-snapshot ablation table (analysis.trajectory.ablation_trajectory) or None.
    """

    def __init__(self, name, trajectory, log=None, plateau=None, ablation=None):
        self.name, self.trajectory, self.log, self.plateau, self.ablation = name, trajectory, log, plateau, ablation

    def describe(self) -> pd.DataFrame:
        last = self.log.iloc[-1] if self.log is not None and len(self.log) else None
        return pd.DataFrame(
            [
                {
                    "record": self.name,
                    "checkpoints": len(self.trajectory.steps),
                    "last_step": self.trajectory.steps[-1],
                    "tokens": None if last is None else int(last.tokens),
                    "final_eval_loss": None if last is None else float(last.eval_loss),
                    "unigram_plateau": self.plateau,
                    "ablation_snapshots": 0 if self.ablation is None else len(self.ablation),
                }
            ]
        )


def load_record(
    source: str, checkpoints: Sequence[str] = (), steps: Sequence[int] = (), device: str | None = "cpu"
) -> EmergenceRecord:
    """A record from a model folder or run folder of our trainer (alias like 'bbmini' allowed), or,
    when ``checkpoints`` is non-empty, from that checkpoint series (hub names or folders).

    Example:
        >>> record = load_record("bbmini")  # doctest: +SKIP
        >>> record = load_record("", [f"google/multiberts-seed_0-step_{k}k" for k in (0, 20, 100)], [0, 20_000, 100_000])  # doctest: +SKIP
    """
    from pathlib import Path

    from ..model.loading import resolve

    if checkpoints:
        trajectory = trajectory_from_checkpoints(checkpoints, list(steps) or None, device=device)
        return EmergenceRecord(f"{len(checkpoints)} checkpoints", trajectory)
    folder = Path(resolve(source))
    if not (folder / "norm_trajectory.npz").exists():
        raise FileNotFoundError(
            f"{folder} has no norm_trajectory.npz: pass a model folder exported by the pre-training "
            f"(bertbusters_nb/data/bbmini), a pre-training run folder, or a list of checkpoints."
        )
    trajectory = NormTrajectory.load(folder / "norm_trajectory.npz")
    log = pd.read_csv(folder / "train_log.csv") if (folder / "train_log.csv").exists() else None
    ablation = (
        pd.read_csv(folder / "ablation_trajectory.csv") if (folder / "ablation_trajectory.csv").exists() else None
    )
    if ablation is not None and "selection" in ablation:  # rows for the final outlier dims, not each snapshot's own
        ablation = ablation[ablation.selection == "final"].reset_index(drop=True)
    return EmergenceRecord(folder.name, trajectory, log, _plateau(folder), ablation)


def _plateau(folder) -> float | None:
    """Unigram cross-entropy of the held-out text: from METRICS.json, else from the run's data folder."""
    from ..atomic import read_json
    from ..pretraining.tokenizer import load_chunks, unigram_entropy

    if (folder / "METRICS.json").exists():
        return float(read_json(folder / "METRICS.json")["unigram_cross_entropy_train_to_eval"])
    if (folder / "config.json").exists():
        data_dir = read_json(folder / "config.json").get("data_dir")
        if data_dir and (folder.__class__(data_dir) / "heldout.npy").exists():
            return unigram_entropy(load_chunks(data_dir, "heldout"), reference=load_chunks(data_dir, "train"))
    return None


def final_outlier_dims(flags: pd.DataFrame, fallback: int = 0, min_share: float | None = None) -> list[int]:
    """The one rule's parameter part (``detection.dims_from_flags``) at the last step of ``flags``: dims flagged
    in more than ``min_share`` of the sites (default: the rule's), most sites first; with none, the
    ``fallback`` strongest candidates. A stored trajectory has no weights, so no activations to add."""
    from .detection import dims_from_flags

    last = flags[flags.step == flags.step.max()]
    return dims_from_flags(last, DEFAULT_RULE.min_share if min_share is None else min_share, fallback)
