"""Super weights: the single weight scalars that create a model's massive activations (numbers only).

Yu et al. (2024, "The Super Weight in Large Language Models") find, in an LLM's MLP output projection,
one scalar ``W[j, k]`` whose removal destroys the model: a large input ``x_k`` times it writes a huge value
("massive activation") into hidden dim ``j`` of the residual stream, which every later layer carries. Their
finder was never released. This one works on any architecture:

1. ``find_residual_writers``: each block's FFN output projection (Llama ``down_proj``, BERT ``output.dense``,
   GPT-2 ``c_proj`` (a ``Conv1D`` with a transposed weight), OPT ``fc2``, ...) found by tracing, not by name:
   in one dummy forward, the last parametrised leaf of the block whose output has the stream's width, whose
   output (zeroed) changes the input of the stream norm that runs next. Its weight layout (``x @ W.T`` or
   ``x @ W``) is read off the traced call, not the class.
2. ``spike_table``: over several prompts, each writer's largest output and input magnitude per channel
   against the layer's median channel; a channel whose maximum is ``rule.spike_ratio`` times the median
   spikes. The same pass measures the stream norm's input and output on those dims (a post-LN LayerNorm damps
   a massive activation inside itself: its input shows it, its output not).
3. ``candidate_scalars``: per spike, the scalars ``W[j, k]`` ranked by their contribution ``|x_k * W[j, k]|``
   at the spiking token.
4. ``verify``: each candidate zeroed exactly (the project's edit context), the objective measured, against
   ``rule.controls`` random scalars and the ``rule.controls`` largest-|w| scalars of the same matrix, one at a
   time. A candidate is a super weight when its objective change (in size) exceeds ``rule.control_factor`` times the
   largest control's and ``rule.min_effect``.

Several spikes, several super weights or none are all normal answers: ``find_super_weights`` returns every
verified scalar, or none with the spike table that shows why.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..model.edits import edited
from ..model.hooks import Trace, first_tensor
from ..model.sites import NormSite
from ..model.writers import ResidualWriter, find_residual_writers, zeroed_scalars

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "SuperWeightReport",
    "SuperWeightRule",
    "candidate_scalars",
    "find_super_weights",
    "prompt_batches",
    "restored_activation",
    "spike_table",
    "super_weight_table",
    "verify",
    "zeroed",
]


@dataclass(frozen=True)
class SuperWeightRule:
    """The thresholds of the super-weight finder, in one place (defaults: the values used throughout).

    spike_ratio: a writer's output channel spikes when its largest |y| over the prompts is at least this many
        times the median over channels of each channel's largest |y| (the same ratio marks a massive input).
    spikes_per_layer: at most this many spiking channels per writer are followed to their scalars.
    candidates: scalars per spike, the largest contributions |x_k * W[j, k]| at the spiking token.
    min_share: a candidate's contribution is at least this share of the spike's |y| (smaller ones cannot
        create it alone).
    controls: random scalars and largest-|w| scalars of the same matrix zeroed one at a time (each).
    control_factor: a super weight's objective change (in size) is more than this many times the largest
        control's.
    min_effect: and more than this (objective units: nats of loss, or 1 - cosine for an embedding model).
    """

    spike_ratio: float = 50.0
    spikes_per_layer: int = 2
    candidates: int = 2
    min_share: float = 0.2
    controls: int = 20
    control_factor: float = 5.0
    min_effect: float = 0.01

    def __post_init__(self):
        if self.spike_ratio <= 1 or self.control_factor < 1 or self.min_effect < 0:
            raise ValueError(
                "SuperWeightRule: spike_ratio must be > 1, control_factor >= 1 and min_effect >= 0 "
                f"(got {self.spike_ratio}, {self.control_factor}, {self.min_effect})."
            )
        if min(self.spikes_per_layer, self.candidates, self.controls) < 1:
            raise ValueError("SuperWeightRule: spikes_per_layer, candidates and controls must be at least 1.")


# ------------------------------------------------------------------ spikes
class _Maxima:
    """Running per-channel max |value| over real tokens, with where it occurred (text index, token index)."""

    def __init__(self):
        self.value: torch.Tensor | None = None
        self.text: torch.Tensor | None = None
        self.token: torch.Tensor | None = None

    def add(self, t: torch.Tensor, mask: torch.Tensor, offset: int) -> None:
        a = t.detach().float().abs() * mask[..., None]  # (B, T, C), padding zeroed
        b, n, c = a.shape
        flat = a.reshape(b * n, c)
        value, where = flat.max(0)
        text, token = where // n + offset, where % n
        if self.value is None or self.text is None or self.token is None:  # the first call sets all three
            self.value, self.text, self.token = value, text, token
            return
        better = value > self.value
        self.value = torch.where(better, value, self.value)
        self.text = torch.where(better, text, self.text)
        self.token = torch.where(better, token, self.token)

    def measured(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(value, text, token) per channel; raises if the module was never called."""
        if self.value is None or self.text is None or self.token is None:
            raise RuntimeError("No call of this module was observed on the prompts.")
        return self.value, self.text, self.token


def prompt_batches(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int = 64, batch_size: int = 16
) -> list[dict[str, torch.Tensor]]:
    """Tokenized, padded batches of ``texts`` (the prompts the spikes are measured on)."""
    texts = list(texts)
    if not texts:
        raise ValueError("No prompts given: the spike table needs at least one text.")
    out = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(
            texts[start : start + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        out.append({k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")})
    return out


def _on(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


@dataclass
class _Measured:
    writers_in: dict[str, _Maxima]
    writers_out: dict[str, _Maxima]
    norms_in: dict[str, _Maxima]
    norms_out: dict[str, _Maxima]


@torch.no_grad()
def _measure(model: nn.Module, writers: Sequence[ResidualWriter], batches: Sequence[Mapping]) -> _Measured:
    device = next(model.parameters()).device
    modules = dict(model.named_modules())
    norms = {w.norm: modules[w.norm] for w in writers}
    m = _Measured(
        {w.name: _Maxima() for w in writers},
        {w.name: _Maxima() for w in writers},
        {n: _Maxima() for n in norms},
        {n: _Maxima() for n in norms},
    )
    mask, offset = torch.ones(0), 0  # the current batch's (read by observe when it is called)

    def observe(name, output, call):
        x, y = call.args[0] if call.args else call.kwargs.get("hidden_states"), first_tensor(output)
        if name in m.writers_out:
            m.writers_in[name].add(x, mask, offset)
            m.writers_out[name].add(y, mask, offset)
        if name in m.norms_in and call.index == 0:
            m.norms_in[name].add(x, mask, offset)
            m.norms_out[name].add(y, mask, offset)

    traced = {**{w.name: w.module for w in writers}, **norms}
    for batch in map(lambda b: _on(b, device), batches):
        if "attention_mask" not in batch:
            batch["attention_mask"] = torch.ones_like(batch["input_ids"])
        mask = batch["attention_mask"].float()
        with Trace(model, traced, retain_output=False, edit_output=observe):
            model(**batch)
        offset += int(batch["input_ids"].shape[0])
    return m


def spike_table(
    model: nn.Module,
    writers: Sequence[ResidualWriter],
    batches: Sequence[Mapping[str, torch.Tensor]],
    rule: SuperWeightRule = SuperWeightRule(),
) -> pd.DataFrame:
    """Per writer, its largest output channels and largest input channel against the layer's median.

    One row per (layer, output channel) among each layer's ``rule.spikes_per_layer`` largest: ``out_max`` (the
    largest |y| over the prompts' real tokens), ``out_median`` (the median over channels of each channel's
    largest |y|), ``out_ratio``, where it occurred (``text``, ``token``), ``spike`` (ratio >= rule), the
    largest input channel (``in_channel``, ``in_max``, ``in_ratio``), and the stream norm's input and output
    at that dim (``norm_in_max``/``norm_in_ratio``, ``norm_out_max``/``norm_out_ratio``).

    Example:
        >>> batches = prompt_batches(tokenizer, texts)
        >>> spike_table(model, find_residual_writers(model), batches).query("spike")  # doctest: +SKIP
    """
    batches = list(batches)
    if not batches:
        raise ValueError("spike_table needs at least one batch of prompts.")
    m = _measure(model, writers, batches)
    rows = []
    for w in writers:
        out, out_text, out_token = m.writers_out[w.name].measured()
        inn = m.writers_in[w.name].measured()[0]
        n_in, n_out = m.norms_in[w.norm].measured()[0], m.norms_out[w.norm].measured()[0]
        median = float(out.median().clamp_min(1e-12))
        in_median = float(inn.median().clamp_min(1e-12))
        in_channel = int(inn.argmax())
        norm_in_median = float(n_in.median().clamp_min(1e-12))
        norm_out_median = float(n_out.median().clamp_min(1e-12))
        for j in out.argsort(descending=True)[: rule.spikes_per_layer].tolist():
            ratio = float(out[j]) / median
            rows.append(
                {
                    "layer": w.layer,
                    "stack": w.stack,
                    "writer": w.name,
                    "channel": j,
                    "out_max": float(out[j]),
                    "out_median": median,
                    "out_ratio": ratio,
                    "spike": ratio >= rule.spike_ratio,
                    "text": int(out_text[j]),
                    "token": int(out_token[j]),
                    "in_channel": in_channel,
                    "in_max": float(inn[in_channel]),
                    "in_ratio": float(inn[in_channel]) / in_median,
                    "norm": w.norm,
                    "norm_in_max": float(n_in[j]),
                    "norm_in_ratio": float(n_in[j]) / norm_in_median,
                    "norm_out_max": float(n_out[j]),
                    "norm_out_ratio": float(n_out[j]) / norm_out_median,
                }
            )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ candidates
@torch.no_grad()
def candidate_scalars(
    model: nn.Module,
    writers: Sequence[ResidualWriter],
    batches: Sequence[Mapping[str, torch.Tensor]],
    spikes: pd.DataFrame,
    rule: SuperWeightRule = SuperWeightRule(),
) -> pd.DataFrame:
    """Per spike (``spikes.spike``), the scalars ``W[j, k]`` with the largest contribution ``|x_k * W[j, k]|``
    to output channel j at the spiking token; kept when at least ``rule.min_share`` of the spike's |y|.

    Columns: layer, writer, row/col (output channel j, input channel k), weight, x_in, contribution, share,
    and ``w_rank`` (rank of |w| in its matrix, 1 = largest).
    """
    by_name = {w.name: w for w in writers}
    device = next(model.parameters()).device
    starts = np.cumsum([0] + [int(b["input_ids"].shape[0]) for b in batches])
    rows = []
    for (name, text), group in spikes[spikes.spike].groupby(["writer", "text"], sort=False):
        w = by_name[name]
        b = int(np.searchsorted(starts, int(text), side="right") - 1)
        with Trace(model, {name: w.module}, retain_input=True, retain_output=False, stop=True) as trace:
            model(**_on(batches[b], device))
        x = trace[name].calls[0].input[int(text) - int(starts[b])].float()  # (T, in)
        matrix = w.matrix().detach().float()  # (out, in)
        abs_sorted = matrix.abs().flatten().sort(descending=True).values
        for spike in group.itertuples():
            j, t = int(spike.channel), int(spike.token)
            contrib = x[t] * matrix[j]  # (in,)
            total = float(contrib.sum().abs().clamp_min(1e-12))
            for k in contrib.abs().argsort(descending=True)[: rule.candidates].tolist():
                share = float(contrib[k].abs()) / total
                if share < rule.min_share:
                    continue
                value = float(matrix[j, k])
                rows.append(
                    {
                        "layer": w.layer,
                        "stack": w.stack,
                        "writer": name,
                        "row": j,
                        "col": k,
                        "weight": value,
                        "x_in": float(x[t, k]),
                        "contribution": float(contrib[k]),
                        "share": share,
                        "w_rank": int((abs_sorted > abs(value)).sum()) + 1,
                        "text": int(text),
                        "token": t,
                    }
                )
    columns = ["layer", "stack", "writer", "row", "col", "weight", "x_in", "contribution", "share", "w_rank"]
    table = pd.DataFrame(rows, columns=columns + ["text", "token"])
    return table.drop_duplicates(["writer", "row", "col"]).reset_index(drop=True)


# ------------------------------------------------------------------ verification
Objective = Callable[[], float]
Scalars = Sequence[tuple[ResidualWriter, int, int]]


def _objective_under_edit(objective: Objective, writer: ResidualWriter) -> float:
    """``objective()`` under an edit of ``writer``'s weight; an objective with ``from_writer`` (``SuffixObjective``)
    is asked for the value from the writer's own layer on (the layers before it are unchanged by the edit)."""
    from_writer = getattr(objective, "from_writer", None)
    return float(from_writer(writer)) if from_writer is not None else float(objective())


class SuffixObjective:
    """An ``AblationEngine``'s ``eval_loss`` (``objective()``), and the same value computed from a writer's layer on
    (``from_writer``): a scalar edit in layer L leaves the input of layer L unchanged, so that input is captured
    once per layer (intact) and each edit runs layers L.. only, as the engine's prefix cache does for norm edits. On
    SmolLM2's layer 28 an evaluation skips 28 of 30 layers. Without a checked layer stack (an engine built with
    ``prefix_cache=False``, or a model whose stack the engine could not verify) it evaluates the whole model."""

    def __init__(self, engine):
        self.engine = engine
        self._batches = [
            engine.eval_set.batch(i, min(i + engine.batch_size, len(engine.eval_set)))
            for i in range(0, len(engine.eval_set), engine.batch_size)
        ]
        self._caches: dict[tuple[int, bool], list[torch.Tensor]] = {}

    def __call__(self) -> float:
        return float(self.engine.evaluate()["eval_loss"])

    def key_of(self, writer: ResidualWriter) -> tuple[int, bool]:
        """The engine's cache key for an edit of ``writer``: (its layer, False), or (0, False) where the writer is
        not in the engine's checked stack."""
        stack = self.engine.stack
        if stack is None or writer.stack != stack.name or not 0 < writer.layer < len(stack.layers):
            return 0, False
        block = stack.layers[writer.layer]
        return (writer.layer, False) if any(m is writer.module for m in block.modules()) else (0, False)

    def from_writer(self, writer: ResidualWriter) -> float:
        """The objective with whatever edit of ``writer``'s layer is in force, from that layer on."""
        from ..evaluation.scoring import Total

        key = self.key_of(writer)
        if key[0] == 0:
            return self()
        engine = self.engine
        with torch.no_grad(), engine.autocast():
            if key not in self._caches:  # the input of layer L, which no edit inside layer L changes
                self._caches[key] = [engine.capture_prefix(b, [key])[0][key] for b in self._batches]
            total = Total()
            for batch, cache in zip(self._batches, self._caches[key]):
                total.add(engine.score(engine.logits(batch, 1, key, cache), batch), 0)
        return float(engine.objective.finish(total)["eval_loss"])


def zeroed(scalars: Scalars) -> contextlib.AbstractContextManager:
    """The scalars (writer, output channel j, input channel k) zeroed for a ``with`` block, through the one edit
    context (``edits.edited``): restored bit-exactly on exit, also after an exception."""
    return edited(zeroed_scalars(scalars))


def _controls(w: ResidualWriter, n: int, exclude: Iterable[tuple[int, int]], seed: int) -> list[tuple[str, int, int]]:
    """``n`` random scalars and the ``n`` largest-|w| scalars of ``w``'s matrix, as (kind, row j, col k)."""
    matrix = w.matrix().detach()
    rows, cols = matrix.shape
    skip = {(int(j), int(k)) for j, k in exclude}
    largest = []
    for flat in matrix.abs().flatten().float().topk(min(n + len(skip), rows * cols)).indices.tolist():
        j, k = divmod(flat, cols)
        if (j, k) not in skip:
            largest.append(("largest |w|", j, k))
        if len(largest) == n:
            break
    rng = np.random.default_rng(seed)
    chosen: list[tuple[str, int, int]] = []
    seen = skip | {(j, k) for _, j, k in largest}
    while len(chosen) < n:
        j, k = int(rng.integers(rows)), int(rng.integers(cols))
        if (j, k) not in seen:
            seen.add((j, k))
            chosen.append(("random", j, k))
    return largest + chosen


class _ControlPool:
    """The controls of one matrix, measured lazily in their order (largest-|w| first: the likeliest to matter) and
    shared by every candidate of the matrix. A candidate is rejected as soon as ``control_factor`` times the
    largest |delta| measured so far reaches its own |delta| (more controls can only raise that maximum, so the
    verdict is final); a verified candidate has had every control measured."""

    def __init__(self, writer: ResidualWriter, scalars: list[tuple[str, int, int]]):
        self.writer, self.pending = writer, list(scalars)
        self.rows: list[dict] = []
        self.worst = {"random": -math.inf, "largest |w|": -math.inf}

    def measure_until(self, settled: Callable[[float], bool], objective: Objective, base: float) -> None:
        """Measure pending controls until ``settled(largest |delta| so far)`` or none is left."""
        while self.pending and not settled(max(self.worst.values())):
            kind, j, k = self.pending.pop(0)
            with zeroed([(self.writer, j, k)]):
                d = _objective_under_edit(objective, self.writer) - base
            w = self.writer
            self.rows.append(
                {
                    "layer": w.layer,
                    "writer": w.name,
                    "kind": kind,
                    "row": j,
                    "col": k,
                    "weight": float(w.matrix().detach()[j, k]),
                    "delta": d,
                }
            )
            self.worst[kind] = max(self.worst[kind], abs(d))


def verify(
    writers: Sequence[ResidualWriter],
    candidates: pd.DataFrame,
    objective: Objective,
    rule: SuperWeightRule = SuperWeightRule(),
    seed: int = 0,
    baseline: float | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Zero each candidate scalar alone and measure ``objective()``; a candidate whose change passes
    ``rule.min_effect`` (in size: a change either way counts) is judged against ``rule.controls`` largest-|w| and
    ``rule.controls`` random scalars of its matrix, each zeroed alone (measured once per matrix, largest-|w| first,
    and only as far as a verdict needs: a candidate that ``control_factor`` times the worst control measured so far
    already matches is rejected there; a verified one has met every control).

    Each scalar is zeroed with ``zeroed`` (the one edit context). Returns
    ``(verdicts, controls)``: one row per candidate with ``delta`` (objective change), ``control_max`` (the
    largest |delta| of a control measured), ``control_random_max``, ``control_largest_max`` (NaN where none of
    that kind was measured), ``controls_measured``, ``ratio`` (|delta| over ``control_max``) and ``super_weight``;
    and every measured control's delta.
    """
    by_name = {w.name: w for w in writers}
    base = objective() if baseline is None else baseline
    rows = []
    pools: dict[str, _ControlPool] = {}
    for cand in candidates.itertuples():
        w = by_name[cand.writer]
        with zeroed([(w, int(cand.row), int(cand.col))]):
            delta = _objective_under_edit(objective, w) - base
        pool = pools.get(w.name)
        if abs(delta) > rule.min_effect:
            if pool is None:
                mine = candidates[candidates.writer == w.name]
                pool = pools[w.name] = _ControlPool(
                    w, _controls(w, rule.controls, zip(mine.row, mine.col), seed + w.layer)
                )
            pool.measure_until(lambda worst: abs(delta) <= rule.control_factor * worst, objective, base)
        measured = pool if pool is not None and pool.rows else None
        worst = max(measured.worst.values()) if measured else math.nan
        passes = (
            measured is not None
            and not measured.pending
            and abs(delta) > rule.min_effect
            and abs(delta) > rule.control_factor * worst
        )
        by_kind = {k: (v if v > -math.inf else math.nan) for k, v in measured.worst.items()} if measured else {}
        rows.append(
            {
                **{
                    c: getattr(cand, c) for c in ("layer", "stack", "writer", "row", "col", "weight", "share", "w_rank")
                },
                "objective": base + delta,
                "baseline": base,
                "delta": delta,
                "control_random_max": by_kind.get("random", math.nan),
                "control_largest_max": by_kind.get("largest |w|", math.nan),
                "control_max": worst,
                "controls_measured": len(pool.rows) if pool is not None else 0,
                "ratio": abs(delta) / worst if measured and worst > 0 else math.inf if measured else math.nan,
                "super_weight": bool(passes),
            }
        )
    control_rows = [row for pool in pools.values() for row in pool.rows]
    return pd.DataFrame(rows), pd.DataFrame(
        control_rows, columns=["layer", "writer", "kind", "row", "col", "weight", "delta"]
    )


def restored_activation(
    model: nn.Module,
    writer: ResidualWriter,
    row: int,
    col: int,
    threshold: float,
) -> contextlib.AbstractContextManager:
    """Yu et al.'s check: with ``W[row, col]`` zeroed, add its contribution ``x_col * w`` back to output channel
    ``row`` only at the tokens where that contribution is massive (|x_col * w| >= ``threshold``): the super
    activation restored alone, every other token left with the weight removed. ``w`` is read when the context
    is entered (enter it before zeroing the weight)."""
    value = float(writer.matrix().detach()[row, col])

    def restore(_name, output, call):
        x = call.args[0] if call.args else call.kwargs["hidden_states"]
        y = first_tensor(output)
        add = x[..., col] * value
        add = torch.where(add.abs() >= threshold, add, torch.zeros_like(add))
        y = y.clone()
        y[..., row] += add.to(y.dtype)
        return y if torch.is_tensor(output) else (y, *output[1:])

    return Trace(model, {writer.name: writer.module}, retain_output=False, edit_output=restore)


# ------------------------------------------------------------------ the whole finder
@dataclass
class SuperWeightReport:
    """What ``find_super_weights`` measured: the writers, the spike table, the candidates, their verification
    and the controls; ``super_weights`` is the verified rows (possibly none)."""

    writers: list[ResidualWriter]
    spikes: pd.DataFrame
    candidates: pd.DataFrame
    verdicts: pd.DataFrame
    controls: pd.DataFrame
    rule: SuperWeightRule

    @property
    def super_weights(self) -> pd.DataFrame:
        if self.verdicts.empty:
            return self.verdicts
        return self.verdicts[self.verdicts.super_weight].reset_index(drop=True)

    def scalars(self) -> list[tuple[ResidualWriter, int, int]]:
        """The verified super weights as (writer, row j, col k), for the edit context."""
        by_name = {w.name: w for w in self.writers}
        return [(by_name[r.writer], int(r.row), int(r.col)) for r in self.super_weights.itertuples()]

    def rule_dict(self) -> dict:
        return asdict(self.rule)


def find_super_weights(
    model: nn.Module,
    batches: Sequence[Mapping[str, torch.Tensor]],
    objective: Objective,
    rule: SuperWeightRule = SuperWeightRule(),
    sites: Sequence[NormSite] | None = None,
    seed: int = 0,
) -> SuperWeightReport:
    """Writers, spikes over the prompts in ``batches`` (``prompt_batches``), candidate scalars and their verification (see the module docstring).

    ``objective()``: the model's objective on a fixed eval set (e.g. an engine's ``eval_loss``), called under
    each scalar edit.

    Example:
        >>> report = find_super_weights(model, prompt_batches(tokenizer, texts), objective)  # doctest: +SKIP
        >>> report.super_weights[["layer", "row", "col", "delta"]]  # doctest: +SKIP
    """
    writers = find_residual_writers(model, sites)
    spikes = spike_table(model, writers, batches, rule)
    candidates = candidate_scalars(model, writers, batches, spikes, rule)
    verdicts, controls = verify(writers, candidates, objective, rule, seed)
    return SuperWeightReport(writers, spikes, candidates, verdicts, controls, rule)


def super_weight_table(report: SuperWeightReport, model_name: str = "") -> pd.DataFrame:
    """The verified super weights as a tidy table (model, layer, module, [row, col] in the weight's own layout,
    value, objective change against the controls); empty when none was verified."""
    by_name = {w.name: w for w in report.writers}
    rows = []
    for r in report.super_weights.itertuples():
        w = by_name[r.writer]
        rows.append(
            {
                "model": model_name,
                "layer": r.layer,
                "module": r.writer,
                "index": list(w.index(r.row, r.col)),
                "out_channel": r.row,
                "in_channel": r.col,
                "weight": r.weight,
                "w_rank": r.w_rank,
                "delta": r.delta,
                "control_max": r.control_max,
            }
        )
    cols = [
        "model",
        "layer",
        "module",
        "index",
        "out_channel",
        "in_channel",
        "weight",
        "w_rank",
        "delta",
        "control_max",
    ]
    return pd.DataFrame(rows, columns=cols)
