"""Fast scans: every dim's effect estimated from gradients, then the top ones checked exactly.

An exact full scan (``scan.scan_dims``) costs one evaluation of the eval set per hidden dim. The
screen estimates, for every dim d at once, how much the objective changes when d is disabled at the
chosen norm sites (attribution patching): disabling changes each site's weight and bias at d by
``delta = fill - value`` (fill 0, or the site's mean), and to first order the objective changes by
``sum over sites of grad(weight)[d] * delta_w[d] + grad(bias)[d] * delta_b[d]``. One forward and one
backward over the eval set give the gradient for all dims. ``screened_scan`` then evaluates the top
``top_k`` dims exactly through the engine, and its table says which value each row holds
(``value_kind``: ``estimate`` or ``exact``).

Disabling an outlier dim is a large edit, and first order can misjudge it. Variants (``method``):

* ``gradient``: first order at the intact model (1 forward + 1 backward).
* ``midpoint`` / ``integrated``: gradients at points on the path where every dim moves towards its
  disabled value together (``alpha`` = 0.5, or ``steps`` points at (i + 1/2) / steps), times the edit:
  each step costs a forward and a backward. The path is shared by all dims, so it is not each dim's own
  path; the benchmark measures whether it helps.
* ``second_order``: first order plus half the diagonal block of the Hessian in the edit's direction,
  ``delta_d' H_dd delta_d`` (w and b of dim d over all sites), estimated with ``probes`` Hutchinson probes
  (random signs per dim; Hessian-vector products by central differences of gradients: 2 gradients a probe).
* ``gauss_newton`` (the default for ``embedding`` sets): the objective is the mean of 1 - cosine between
  the ablated and the intact sentence embedding, whose gradient is zero at the intact model. Its second
  order is ``|P (J_d delta_d)|^2 / (2 |e|^2)`` per sentence (P projects out the intact embedding e, J_d is
  the Jacobian of e in dim d's parameters); it is estimated with ``probes`` random projections per batch
  (one forward and ``probes`` backwards per batch; the squared projections average to the norm).

Objectives: the engine's objective (``objectives``): the loss of the eval set (masked LM, causal LM,
classification: mean loss per scored token / example, ``eval_loss``) or, for an ``EmbeddingEvalSet``
(``sets.prepare_embedding_eval``), the mean embedding distance 1 - cosine to the intact model
(``objectives.EmbeddingDistance``; the engine's prefix cache and terminal-norm skip included). The screen uses
the engine's public surface only (``level_of``, ``capture_prefix``, ``logits``, ``score``, ``autocast``).
"""

from __future__ import annotations

import logging
import time
import weakref
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..model.ablation import Condition, validate_dims
from ..model.discovery import find_norm_sites
from ..model.edits import Mode, ParamFill, disabled_fill, edited
from ..model.hooks import Trace, first_tensor
from ..model.sites import NormSite, select_sites
from .engine import AblationEngine
from .metrics import is_regression
from .objectives import EmbeddingDistance
from .sets import ClassificationEvalSet, EvalSet
from .tables import condition_spec

log = logging.getLogger(__name__)

METHODS = ("gradient", "fisher", "midpoint", "integrated", "second_order", "gauss_newton")
VALUE_KINDS = ("estimate", "exact")


# ------------------------------------------------------------------ gradients
def _pairs(sites: Sequence[NormSite]) -> list[tuple[NormSite, torch.Tensor]]:
    return [(s, p) for s in sites for p in (s.weight, s.bias) if p is not None]


def _params(sites: Sequence[NormSite]) -> list[torch.Tensor]:
    return [p for _, p in _pairs(sites)]


def _edits(sites: Sequence[NormSite], mode: str) -> list[torch.Tensor]:
    """For each site parameter, the change disabling makes at every dim (the one definition,
    ``edits.disabled_fill``, minus the value), float32."""
    return [disabled_fill(site, param, mode).float() - param.detach().float() for site, param in _pairs(sites)]


def _shifted(params: Sequence[torch.Tensor], directions: Sequence[torch.Tensor], scale: float):
    """Adds ``scale * directions`` to the sites' parameters in place (all dims at once); restores on exit
    (an ``edits.ParamFill`` each, under the one edit context)."""
    scale = float(scale)
    if not scale:
        return edited([])

    def shift(d: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda now: torch.add(now, d.to(now.dtype), alpha=scale)

    return edited(ParamFill(p, ..., shift(d)) for p, d in zip(params, directions))


class _Prefix:
    """Each batch's intact state at the first layer the chosen sites change, computed once without gradients,
    and the size of the edit disabling makes there.

    The screen's forward and backward then run from that layer on, as the engine's exact conditions do
    (``AblationEngine``'s prefix cache): on SmolLM2's last four layers it skips 26 of 30 layers. The first
    forward of each batch also sums, per dim, the squared change disabling makes to the chosen sites'
    outputs over the real tokens (``energy``: exact, no linearisation; zeroing a dim removes h_d, so it is
    sum h_d^2). Large edits are where a linearisation misjudges most, so the screen checks the largest ones too.
    """

    def __init__(self, engine: AblationEngine, sites: Sequence[NormSite], batch_size: int, mode: str):
        self.engine, self.batches = engine, list(engine.eval_set.batches(batch_size))
        self.sites, self.mode = list(sites), mode
        self.key = engine.level_of(self.sites)
        self.energy = torch.zeros(self.sites[0].size, dtype=torch.float64)
        self._measured: set[int] = set()
        self.caches: list[torch.Tensor | None] = []
        with torch.no_grad(), engine.autocast():
            for batch in self.batches:
                if self.key[0] == 0:
                    self.caches.append(None)
                else:
                    captured, _ = engine.capture_prefix(batch, [self.key], run_to_end=False)
                    self.caches.append(captured[self.key])

    def _edit_energy(self, site: NormSite, output: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = first_tensor(output).detach().double()
        if h.dim() != 3 or h.shape[:2] != mask.shape:
            return torch.zeros_like(self.energy)
        h = h[mask]  # (real tokens, H)
        if self.mode == "zero":
            change = h  # the disabled output is 0
        else:  # mean: the output becomes fill_w * xhat + fill_b, xhat recovered from h = w * xhat + b
            weight, offset = site.weight, site.scale_offset
            if weight is None or offset is None:
                raise ValueError(f"The norm '{site.name}' cannot be disabled (no weight, or no weight zeroes it).")
            w = weight.detach().double() + offset
            b = site.bias.detach().double() if site.bias is not None else torch.zeros_like(w)
            xhat = torch.where(w != 0, (h - b) / torch.where(w != 0, w, torch.ones_like(w)), torch.zeros_like(h))
            fill_w = float(disabled_fill(site, weight, "mean")) + offset
            fill_b = float(disabled_fill(site, site.bias, "mean")) if site.bias is not None else 0.0
            change = fill_w * xhat + fill_b - h
        return (change**2).sum(0).cpu()

    def logits(self, i: int) -> torch.Tensor:
        """Shaped logits of batch ``i`` with gradients from the cached layer on (call under enable_grad)."""
        batch = self.batches[i]
        if i in self._measured:
            return self.engine.logits(batch, 1, self.key, self.caches[i])
        self._measured.add(i)
        mask = batch.inputs["attention_mask"].bool()
        by_name = {s.name: s for s in self.sites}

        def measure(name, output, _call):  # returns None: the output goes on unchanged
            self.energy += self._edit_energy(by_name[name], output, mask)

        with Trace(self.engine.model, {s.name: s.module for s in self.sites}, retain_output=False, edit_output=measure):
            logits = self.engine.logits(batch, 1, self.key, self.caches[i], every_token=True)
        return logits


_INTACT: "weakref.WeakKeyDictionary[AblationEngine, float]" = weakref.WeakKeyDictionary()


def _intact_objective(engine: AblationEngine) -> float:
    """The intact model's objective on the engine's set, evaluated once per engine (the screen and its
    exact check share an engine, and the model is restored bit for bit between them)."""
    if engine not in _INTACT:
        with torch.no_grad():
            _INTACT[engine] = float(engine.evaluate(Condition("none"))["eval_loss"])
    return _INTACT[engine]


def _total(engine: AblationEngine) -> int:
    es = engine.eval_set
    return len(es) if es.kind in ("classification", "embedding") else es.n_targets


def _loss_gradients(engine: AblationEngine, params: Sequence[torch.Tensor], prefix: _Prefix) -> list[torch.Tensor]:
    """Gradient of the eval set's objective (mean loss per scored token / example) w.r.t. ``params``."""
    grads = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    total = _total(engine)
    for i, batch in enumerate(prefix.batches):
        with torch.enable_grad(), engine.autocast():
            scored = engine.score(prefix.logits(i), batch)["loss_sum"][0] / total
        for g, part in zip(grads, torch.autograd.grad(scored, list(params), allow_unused=True)):
            if part is not None:
                g += part.double()
    return grads


def _fisher(
    engine: AblationEngine,
    params: Sequence[torch.Tensor],
    edits: Sequence[torch.Tensor],
    prefix: _Prefix,
    probes: int,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per dim: the first-order change and the Fisher (Gauss-Newton) curvature ``delta' F delta`` of the
    mean loss, the latter from ``probes`` sets of labels sampled from the model's own predictions."""
    gen = torch.Generator().manual_seed(int(seed))
    total = _total(engine)
    eval_set = engine.eval_set
    regression = isinstance(eval_set, ClassificationEvalSet) and is_regression(eval_set.task)
    first = torch.zeros(params[0].shape[0], dtype=torch.float64)
    curvature = torch.zeros_like(first)
    for i, batch in enumerate(prefix.batches):
        with torch.enable_grad(), engine.autocast():
            logits = prefix.logits(i)
            loss = engine.score(logits, batch)["loss_sum"][0] / total
        grads = torch.autograd.grad(loss, list(params), retain_graph=True, allow_unused=True)
        first += _directional([g for g in grads if g is not None], [e for g, e in zip(grads, edits) if g is not None])
        flat = logits.float().reshape(-1, logits.shape[-1])
        for r in range(probes):
            if regression:  # loss (pred - y)^2: Hessian 2 in pred; s = pred . z with z ~ N(0, 1)
                z = torch.randn(flat.shape, generator=gen).to(flat.device)
                sampled, scale = (flat * z).sum(), 2.0
            else:
                probs = torch.softmax(flat.detach(), -1).cpu()
                y = torch.multinomial(probs, 1, generator=gen).squeeze(1).to(flat.device)
                sampled, scale = F.cross_entropy(flat, y, reduction="sum"), 1.0
            parts = torch.autograd.grad(sampled, list(params), retain_graph=r + 1 < probes, allow_unused=True)
            c = _directional([g for g in parts if g is not None], [e for g, e in zip(parts, edits) if g is not None])
            curvature += scale * c**2
    return first, curvature / (probes * total)


def _gauss_newton(
    engine: AblationEngine,
    params: Sequence[torch.Tensor],
    edits: Sequence[torch.Tensor],
    prefix: _Prefix,
    probes: int,
    seed: int,
) -> torch.Tensor:
    """Per dim, the second-order estimate of the mean 1 - cosine (see the module docstring)."""
    objective = engine.objective
    if not isinstance(objective, EmbeddingDistance) or objective.reference is None:
        raise ValueError("method='gauss_newton' needs an engine with the EmbeddingDistance objective.")
    gen = torch.Generator().manual_seed(int(seed))
    n = len(engine.eval_set)
    sums = torch.zeros(params[0].shape[0], dtype=torch.float64)
    for i, batch in enumerate(prefix.batches):
        intact = objective.reference[batch.start : batch.stop].to(engine.device)
        unit = intact / intact.norm(dim=-1, keepdim=True)
        with torch.enable_grad(), engine.autocast():
            emb = prefix.logits(i)[0].float()
        for r in range(probes):
            noise = torch.randn(intact.shape, generator=gen).to(engine.device)
            u = (noise - (noise * unit).sum(-1, keepdim=True) * unit) / intact.norm(dim=-1, keepdim=True)
            grads = torch.autograd.grad((emb * u).sum(), list(params), retain_graph=r + 1 < probes, allow_unused=True)
            c = sum((g.double() * d.double()).cpu() for g, d in zip(grads, edits) if g is not None)
            sums += c**2
    return sums / (2.0 * n * probes)


def _directional(grads: Sequence[torch.Tensor], edits: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per dim: sum over site parameters of gradient times edit."""
    return sum(((g.double() * e.double()).cpu() for g, e in zip(grads, edits)), torch.zeros((), dtype=torch.float64))


def estimate_effects(
    model: torch.nn.Module,
    eval_set: EvalSet,
    *,
    roles: Iterable[str] | str = ("block_output",),
    layers: Iterable[int] | None = None,
    mode: Mode = "zero",
    stack: str | None = None,
    sites: Sequence[NormSite] | None = None,
    method: str | None = None,
    steps: int = 4,
    probes: int = 4,
    epsilon: float = 0.05,
    batch_size: int | None = None,
    seed: int = 0,
    engine: AblationEngine | None = None,
    **engine_options,
) -> pd.DataFrame:
    """Estimated change of the objective when each hidden dim alone is disabled at the chosen sites.

    One row per dim: ``dim``, ``estimate`` (estimated objective change; > 0 is harm), ``energy`` (the
    squared change disabling makes to the sites' outputs, summed over real tokens: exact), ``objective``,
    ``method``, ``intact_objective``. ``method`` defaults to ``gradient`` (``gauss_newton`` for embedding
    sets); see the module docstring for each and its cost. Model parameters are restored bit for bit.

    Example:
        >>> est = estimate_effects(model, eval_set, roles="block_output")
        >>> est.nlargest(5, "estimate")  # doctest: +SKIP
    """
    method = method or ("gauss_newton" if eval_set.kind == "embedding" else "gradient")
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; pick one of {METHODS}.")
    if method == "gauss_newton" and eval_set.kind != "embedding":
        raise ValueError(
            "method='gauss_newton' is for embedding sets (prepare_embedding_eval); use 'gradient' "
            "or 'second_order' for a loss."
        )
    if mode not in ("zero", "mean"):
        raise ValueError(f"Unknown mode {mode!r}; pick 'zero' or 'mean'.")
    for name, value in (("steps", steps), ("probes", probes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer (got {value!r}).")
    all_sites = list(sites) if sites is not None else find_norm_sites(model)
    roles = (roles,) if isinstance(roles, str) else tuple(roles)
    chosen = select_sites(all_sites, roles=roles, layers=None if layers is None else tuple(layers), stack=stack)
    sizes = {s.size for s in chosen}
    if len(sizes) != 1:
        raise ValueError(f"The chosen sites have different sizes {sorted(sizes)}; pick sites of one hidden size.")
    if engine is None:
        engine = AblationEngine(model, eval_set, all_sites, **engine_options)
    size = sizes.pop()
    params, edits = _params(chosen), _edits(chosen, mode)
    batch_size = int(batch_size or engine.batch_size)
    prefix = _Prefix(engine, chosen, batch_size, mode)
    intact = _intact_objective(engine) if eval_set.kind != "embedding" else 0.0

    if method == "gauss_newton":
        estimate = _gauss_newton(engine, params, edits, prefix, probes, seed)
    elif method == "fisher":
        first, curvature = _fisher(engine, params, edits, prefix, probes, seed)
        estimate = first + 0.5 * curvature
    elif method == "gradient":
        estimate = _directional(_loss_gradients(engine, params, prefix), edits)
    elif method in ("midpoint", "integrated"):
        alphas = [0.5] if method == "midpoint" else [(i + 0.5) / steps for i in range(steps)]
        estimate = torch.zeros(size, dtype=torch.float64)
        for alpha in alphas:
            with _shifted(params, edits, alpha):
                estimate += _directional(_loss_gradients(engine, params, prefix), edits) / len(alphas)
    else:  # second_order
        first = _directional(_loss_gradients(engine, params, prefix), edits)
        gen = torch.Generator().manual_seed(int(seed))
        curvature = torch.zeros(size, dtype=torch.float64)
        for _ in range(probes):
            signs = (torch.randint(0, 2, (size,), generator=gen) * 2 - 1).float()
            direction = [e * signs.to(e.device) for e in edits]
            with _shifted(params, direction, epsilon):
                plus = _loss_gradients(engine, params, prefix)
            with _shifted(params, direction, -epsilon):
                minus = _loss_gradients(engine, params, prefix)
            hv = [(p - m) / (2 * epsilon) for p, m in zip(plus, minus)]
            curvature += signs.double() * _directional(hv, edits)
        estimate = first + 0.5 * curvature / probes
    return pd.DataFrame(
        {
            "dim": np.arange(size),
            "estimate": estimate.numpy(),
            "energy": prefix.energy.numpy(),
            "objective": engine.objective.name,
            "method": method,
            "intact_objective": float(intact),
        }
    )


# ------------------------------------------------------------------ exact + screened
def exact_effects(
    model: torch.nn.Module,
    eval_set: EvalSet,
    *,
    dims: Iterable[int] | None = None,
    roles: Iterable[str] | str = ("block_output",),
    layers: Iterable[int] | None = None,
    mode: Mode = "zero",
    stack: str | None = None,
    sites: Sequence[NormSite] | None = None,
    progress: bool = True,
    engine: AblationEngine | None = None,
    **engine_options,
) -> pd.DataFrame:
    """Exact objective change of disabling each of ``dims`` alone (engine): ``dim``, ``exact``, ``value``.

    ``value`` is the objective under the condition (``eval_loss`` or mean 1 - cosine), ``exact`` its
    change from the intact model (> 0 is harm); the same numbers as ``scan_dims``'s ``delta`` for losses.
    """
    all_sites = list(sites) if sites is not None else find_norm_sites(model)
    roles = (roles,) if isinstance(roles, str) else tuple(roles)
    layers = None if layers is None else tuple(int(l) for l in layers)
    chosen = select_sites(all_sites, roles=roles, layers=layers, stack=stack)
    dims = (
        list(range(min(s.size for s in chosen))) if dims is None else validate_dims(dims, min(s.size for s in chosen))
    )
    engine = engine if engine is not None else AblationEngine(model, eval_set, all_sites, **engine_options)
    intact = _intact_objective(engine)
    conditions = [Condition(f"dim {d}", (d,), roles, layers, mode, stack) for d in dims]
    values = [r["eval_loss"] for r in engine.run(conditions, progress=progress)] if dims else []
    return pd.DataFrame(
        {
            "dim": dims,
            "value": values,
            "exact": [v - intact for v in values],
            "intact_objective": intact,
            "spec": [condition_spec(c) for c in conditions],
        }
    )


RANKINGS = ("mixed", "abs", "estimate", "energy")


def check_order(estimates: pd.DataFrame, rank_by: str = "mixed") -> list[int]:
    """Every dim, in the order a screened scan checks them exactly.

    ``estimate``: largest estimated harm first. ``abs``: largest |estimate| (a large edit whose sign the
    linearisation gets wrong still counts). ``energy``: largest edit (``estimate_effects``'s exact
    ``energy``). ``mixed`` (default): the three lists taken in turn, one dim from each (skipping dims
    already taken): measured on bbmini, MiniLM and SmolLM2 in ``benchmarks/RESULTS.md``, no single list
    finds every model's most damaging dims (SmolLM2's are large edits whose sign first order gets wrong;
    MiniLM's embedding distance follows the edit's size more than its curvature).
    """
    if rank_by not in RANKINGS:
        raise ValueError(f"rank_by must be one of {RANKINGS} (got {rank_by!r}).")
    frame = estimates.set_index("dim")
    lists = {"estimate": frame["estimate"], "abs": frame["estimate"].abs(), "energy": frame["energy"]}
    ordered = {k: v.sort_values(ascending=False, kind="stable").index.tolist() for k, v in lists.items()}
    if rank_by != "mixed":
        return [int(d) for d in ordered[rank_by]]
    out: list[int] = []
    seen: set[int] = set()
    for row in zip(ordered["estimate"], ordered["abs"], ordered["energy"]):
        for d in row:
            if d not in seen:
                seen.add(d)
                out.append(int(d))
    return out


AUTO_TOP = 5  # top_k="auto" verifies until no unverified dim can enter the exact top AUTO_TOP
AUTO_STEP = 4  # dims verified per round of top_k="auto" (one engine run each)


def error_per_energy(estimates: pd.DataFrame, exact: pd.DataFrame) -> float:
    """The estimate's largest measured underestimate per unit of edit energy on the verified dims:
    max over them of (exact - estimate) / energy (0 when it never underestimated).

    A linearisation's error grows with the size of the edit (second order: with its square, which ``energy``
    measures exactly), so this ratio, measured on the dims checked first (the largest edits among them), bounds
    what an unverified dim of smaller energy can hide.
    """
    frame = estimates.set_index("dim").loc[exact["dim"].astype(int)]
    under = exact["exact"].to_numpy(float) - frame["estimate"].to_numpy(float)
    energy = frame["energy"].to_numpy(float)
    ratios = np.where(energy > 0, under / np.where(energy > 0, energy, 1.0), np.where(under > 0, np.inf, 0.0))
    return float(max(0.0, np.max(ratios))) if len(ratios) else float("inf")


def error_bound(estimates: pd.DataFrame, ratio: float) -> np.ndarray:
    """Per row of ``estimates``: the most its dim's exact effect can be under the bound the adaptive screen uses,
    ``estimate + ratio * energy`` (``ratio``: an ``error_per_energy``)."""
    return estimates["estimate"].to_numpy(float) + ratio * estimates["energy"].to_numpy(float)


def unsettled(estimates: pd.DataFrame, exact: pd.DataFrame, n_top: int = AUTO_TOP) -> list[int]:
    """Unverified dims whose bound ``estimate + error_per_energy * energy`` reaches the ``n_top``-th largest exact
    effect among the verified dims: those the estimate cannot yet rule out of the exact top ``n_top`` (every
    unverified dim while fewer than ``n_top`` are verified).

    Measured on bbmini (masked-LM loss, 32 held-out reviews): after its two outlier dims (+0.79, +0.15) the exact
    effects form a plateau (the 3rd to 5th +0.036, +0.031, +0.029, and 29 dims above half the 5th) while the
    first-order estimate errs by up to 0.050 on dims outside the top 5. Even the smallest ratio valid on all of those
    leaves 134 dims able to reach the top 5 (``certification_floor``: 139 of 256 checks), so no bound of this form
    settles the 3rd to 5th cheaply there; the dims far above the plateau settle after a few checks."""
    verified = set(exact["dim"].astype(int))
    rest = estimates[~estimates["dim"].isin(verified)]
    if len(verified) < n_top:
        return rest["dim"].astype(int).tolist()
    threshold = float(np.sort(exact["exact"].to_numpy(float))[::-1][n_top - 1])
    bound = error_bound(rest, error_per_energy(estimates, exact))
    return rest["dim"][bound >= threshold].astype(int).tolist()


def verify_until_settled(
    estimates: pd.DataFrame, order: Sequence[int], verify, n_top: int = AUTO_TOP, step: int = AUTO_STEP
) -> tuple[pd.DataFrame, float]:
    """Verify the first ``max(n_top, step)`` dims of ``order`` (``verify(dims)`` -> a frame with ``dim`` and
    ``exact``), then, ``step`` at a time, the unsettled dims whose bound is highest (ties in ``order``), until
    ``unsettled`` is empty. Returns the verified rows in the order they were verified and the final
    ``error_per_energy``.

    Checking the highest bounds first spends each exact check on a dim that could still enter the top, and measures
    the estimate's error where it matters most: in ``benchmarks/screen_benchmark.py`` it stopped after 140 checks
    on bbmini, 229 on MiniLM and 44 on SmolLM2, where checking in the fixed order had needed 236, 244 and 92; their
    ``certification_floor`` is 139, 156 and 43, and no unverified dim's own error per energy exceeded the ratio the
    rule measured."""
    position = {int(d): i for i, d in enumerate(order)}
    by_dim = estimates.set_index("dim")
    batch = [int(d) for d in order[: max(n_top, step)]]
    exact = pd.DataFrame(columns=["dim", "exact"])
    while batch:
        exact = pd.concat([exact, verify(batch)], ignore_index=True) if len(exact) else verify(batch)
        open_dims = unsettled(estimates, exact, n_top)
        if not open_dims:
            break
        bound = dict(zip(open_dims, error_bound(by_dim.loc[open_dims], error_per_energy(estimates, exact))))
        ranked = sorted(open_dims, key=lambda d: (-float(bound[d]), position.get(d, len(position))))
        batch = ranked[:step]
    return exact, error_per_energy(estimates, exact) if len(exact) else float("nan")


def certified_top(estimates: pd.DataFrame, exact: pd.DataFrame, n_max: int = AUTO_TOP) -> int:
    """The largest n <= ``n_max`` for which no unverified dim's bound reaches the n-th largest verified effect
    (``unsettled`` is empty): under that bound the verified top n are the top n of all dims. 0 when not even the top
    rank is settled. Larger n never settles before smaller n: their threshold is lower."""
    settled = 0
    for n in range(1, min(n_max, len(exact)) + 1):
        if unsettled(estimates, exact, n):
            break
        settled = n
    return settled


def certification_floor(estimates: pd.DataFrame, exact: pd.DataFrame, n_top: int = AUTO_TOP) -> int:
    """The fewest exact checks with which any bound of ``unsettled``'s form (estimate plus one ratio times the
    edit energy) can certify the exact top ``n_top``, given every dim's exact effect (an exhaustive scan): the
    top ``n_top`` themselves plus every other dim whose bound, with the smallest ratio valid on all of them,
    still reaches the ``n_top``-th effect. No order of checks does better; ``top_k="auto"`` does worse where the
    ratio it measures on the verified dims is larger."""
    merged = estimates[["dim", "estimate", "energy"]].merge(exact[["dim", "exact"]], on="dim")
    if len(merged) <= n_top:
        return len(merged)
    merged = merged.sort_values("exact", ascending=False, kind="stable")
    top, rest = merged.head(n_top), merged.iloc[n_top:]
    ratio = error_per_energy(estimates, rest)
    if not np.isfinite(ratio):
        return len(merged)
    return n_top + int((error_bound(rest, ratio) >= float(top["exact"].min())).sum())


def _check_plan(est: pd.DataFrame, rank_by: str, also_check: Iterable[int]) -> tuple[list[int], list[int]]:
    """The screen's check order (written into ``est`` as ``estimate_rank``, 1 = checked first) and the validated
    ``also_check`` dims: what ``screened_scan`` and ``screened_scan_dims`` evaluate exactly."""
    order = check_order(est, rank_by)
    est["estimate_rank"] = est["dim"].map({d: i + 1 for i, d in enumerate(order)}).astype(int)
    extra = list(also_check)
    return order, (validate_dims(extra, len(est)) if extra else [])


def screened_scan(
    model: torch.nn.Module,
    eval_set: EvalSet,
    *,
    roles: Iterable[str] | str = ("block_output",),
    layers: Iterable[int] | None = None,
    mode: Mode = "zero",
    stack: str | None = None,
    top_k: int | str = 16,
    method: str | None = None,
    rank_by: str = "mixed",
    sites: Sequence[NormSite] | None = None,
    progress: bool = True,
    steps: int = 4,
    probes: int = 4,
    also_check: Iterable[int] = (),
    **engine_options,
) -> pd.DataFrame:
    """Every dim's effect estimated (``estimate_effects``), the first ``top_k`` in ``check_order`` then
    evaluated exactly, through one engine (its layer-stack probe and intact pass shared by both steps).

    ``top_k="auto"``: verify the first dims in check order, then ``AUTO_STEP`` at a time the dims whose bound is
    highest, until the estimate can no longer put an unverified dim into the exact top ``AUTO_TOP``
    (``verify_until_settled``; ``unsettled``: a bound from the estimate's own error measured on the verified dims);
    ``estimate_rank`` is then the order it checked in.

    One row per dim, the checked dims first, each group sorted by ``effect`` (largest harm first): ``dim``,
    ``estimate``, ``energy``, ``estimate_rank`` (position in the check order, 1 = checked first), ``exact``
    (NaN where not checked), ``effect`` (exact where checked, else the estimate), ``value_kind`` (``exact`` or
    ``estimate``: which ``effect`` holds), ``objective``, ``method``, ``intact_objective``, ``spec`` (the row's
    condition, ``evaluation.tables.row_condition`` rebuilds it). ``rank_by``: see
    ``check_order``. ``also_check``: dims checked exactly besides the first ``top_k`` (e.g. the detected
    outlier dims, so their rows hold exact values). Timings are in ``table.attrs``.

    Example:
        >>> table = screened_scan(model, eval_set, roles="block_output", top_k=16)
        >>> table.head(5)[["dim", "effect", "value_kind"]]  # doctest: +SKIP
    """
    if top_k != "auto" and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
        raise ValueError(f"top_k must be a non-negative integer or 'auto' (got {top_k!r}).")
    if rank_by not in RANKINGS:
        raise ValueError(f"rank_by must be one of {RANKINGS} (got {rank_by!r}).")
    all_sites = list(sites) if sites is not None else find_norm_sites(model)
    start = time.perf_counter()
    engine = AblationEngine(model, eval_set, all_sites, **engine_options)
    est = estimate_effects(
        model,
        eval_set,
        roles=roles,
        layers=layers,
        mode=mode,
        stack=stack,
        sites=all_sites,
        engine=engine,
        method=method,
        steps=steps,
        probes=probes,
    )
    screened = time.perf_counter()
    order, extra = _check_plan(est, rank_by, also_check)

    def verify(dims: list[int]) -> pd.DataFrame:
        if not dims:
            return pd.DataFrame(columns=["dim", "exact"])
        checked = exact_effects(
            model,
            eval_set,
            dims=dims,
            roles=roles,
            layers=layers,
            mode=mode,
            stack=stack,
            sites=all_sites,
            engine=engine,
            progress=progress,
        )
        return checked[["dim", "exact"]]

    bound = None
    if top_k == "auto":
        exact, bound = verify_until_settled(est, order, verify)
        top = exact["dim"].astype(int).tolist()
        verified = set(top)
        order = top + [d for d in order if d not in verified]  # the order it checked in, then the rest
        est["estimate_rank"] = est["dim"].map({d: i + 1 for i, d in enumerate(order)}).astype(int)
        exact = pd.concat([exact, verify([d for d in extra if d not in top])], ignore_index=True)
    else:
        assert isinstance(top_k, int)  # checked above: an integer or "auto"
        top = order[:top_k]
        top += [d for d in extra if d not in top]
        exact = verify(top)
    certified = certified_top(est, exact) if len(exact) else 0
    table = est.merge(exact[["dim", "exact"]], on="dim", how="left")
    table["value_kind"] = np.where(table["exact"].notna(), "exact", "estimate")
    table["effect"] = table["exact"].where(table["exact"].notna(), table["estimate"])
    table["_checked"] = table["value_kind"] == "exact"  # checked dims first: an estimate may overshoot
    table = table.sort_values(["_checked", "effect"], ascending=False, kind="stable").reset_index(drop=True)
    roles = (roles,) if isinstance(roles, str) else tuple(roles)
    layers = None if layers is None else tuple(int(l) for l in layers)
    table["spec"] = [condition_spec(Condition(f"dim {d}", (int(d),), roles, layers, mode, stack)) for d in table["dim"]]
    table = table[
        [
            "dim",
            "estimate",
            "energy",
            "estimate_rank",
            "exact",
            "effect",
            "value_kind",
            "objective",
            "method",
            "intact_objective",
            "spec",
        ]
    ]
    table.attrs.update(
        {
            "screen_seconds": screened - start,
            "verify_seconds": time.perf_counter() - screened,
            "top_k": top_k,
            "checked_in_order": len(top) if top_k == "auto" else min(top_k, len(order)),
            "error_per_energy": bound,
            "certified_top": certified,
            "examples": len(eval_set),
            "rank_by": rank_by,
        }
    )
    return table


def agreement(
    estimate: Sequence[float], exact: Sequence[float], top: Sequence[int] = (5, 10), within: Sequence[int] = (16, 32)
) -> dict:
    """How well ``estimate`` ranks dims as ``exact`` does: Spearman, and recall of the exact top-n in the
    estimate's top-m for each n in ``top`` and m in ``within`` (keys ``recall_top5_in16`` ...)."""
    from scipy.stats import spearmanr

    est, ex = np.asarray(estimate, dtype=float), np.asarray(exact, dtype=float)
    if est.shape != ex.shape or est.ndim != 1 or est.size < 2:
        raise ValueError("estimate and exact must be 1-D sequences of the same length (>= 2).")
    out = {"spearman": float(spearmanr(est, ex).statistic) if np.ptp(est) > 0 else float("nan")}
    exact_order, est_order = np.argsort(-ex, kind="stable"), np.argsort(-est, kind="stable")
    for n in top:
        for m in within:
            out[f"recall_top{n}_in{m}"] = len(set(exact_order[:n]) & set(est_order[:m])) / n
    return out


def screen_ranking(table: pd.DataFrame, n: int = 10) -> list[int]:
    """The ``n`` dims a screened scan ranks most harmful (checked dims by their exact effect first)."""
    return [int(d) for d in table["dim"].head(n)]


def as_scan_table(screened: pd.DataFrame) -> pd.DataFrame:
    """A screened scan in the exact scan's columns (``scan.scan_dims``: ``dim``, ``value``, ``delta``,
    ``intact_value``, ``examples``, and ``eval_loss`` / ``perplexity`` / ``intact_eval_loss`` for a loss), exact rows
    first, so that a notebook plots and ranks either with the same calls; ``value_kind`` says which rows are exact,
    and the screen's own columns (``estimate``, ``energy``, ``estimate_rank``, ``exact``) stay."""
    intact = screened["intact_objective"].astype(float)
    table = screened.copy()
    table["value"] = intact + table["effect"].astype(float)
    table["delta"] = table["effect"].astype(float)
    table["intact_value"] = intact
    table["examples"] = int(screened.attrs.get("examples", 0)) or None
    if str(screened["objective"].iloc[0]) not in ("embedding",):
        table["eval_loss"] = table["value"]
        table["perplexity"] = np.exp(table["value"].clip(upper=50))
        table["intact_eval_loss"] = intact
    table.attrs = dict(screened.attrs)
    return table


def screened_scan_dims(
    model: torch.nn.Module,
    eval_set: EvalSet,
    *,
    roles: Iterable[str] | str = ("block_output",),
    top_k: int = 16,
    also_check: Iterable[int] = (),
    sites: Sequence[NormSite] | None = None,
    progress: bool = True,
    checkpoint_dir=None,
    rank_by: str = "mixed",
) -> pd.DataFrame:
    """``scan.scan_dims``'s table (every metric of the condition) for the first ``top_k`` dims of the screen's check
    order and ``also_check``, and for every other dim the screen's estimate of the objective (``value`` NaN: an
    estimate has no task score; ``eval_loss`` the intact loss plus the estimate). ``value_kind`` says which; the
    screen's ``estimate``, ``energy`` and ``estimate_rank`` are on every row, and ``certified_top`` (``certified_top``
    of the dev-loss rise: how many of its leading exact ranks no other dim's bound can reach). Where a scan's per-dim
    metrics are needed (notebook 04's score and loss panels) this is the screened scan."""
    from .scan import scan_dims

    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be a non-negative integer (got {top_k!r}).")
    roles = (roles,) if isinstance(roles, str) else tuple(roles)
    all_sites = list(sites) if sites is not None else find_norm_sites(model)
    est = estimate_effects(model, eval_set, roles=roles, sites=all_sites)
    order, extra = _check_plan(est, rank_by, also_check)
    checked = sorted(set(order[:top_k]) | set(extra))
    exact = scan_dims(
        model, eval_set, roles=roles, dims=checked, sites=all_sites, progress=progress, checkpoint_dir=checkpoint_dir
    )
    rest = est[~est["dim"].isin(checked)]
    intact = exact["intact_eval_loss"].iloc[0] if "intact_eval_loss" in exact else exact["intact_value"].iloc[0]
    estimated = pd.DataFrame({"dim": rest["dim"].astype(int), "value_kind": "estimate"})
    estimated["condition"] = [f"dim {d}" for d in estimated["dim"]]
    estimated["dims"] = estimated["dim"].astype(str)
    estimated["n_dims"] = 1
    shared = ("metric", "roles", "layers", "stack", "mode", "n_sites", "tokens", "examples")
    for column in exact.columns:
        if column.startswith("intact_") or column in shared:
            estimated[column] = exact[column].iloc[0]
    estimated["eval_loss"] = float(intact) + rest["estimate"].to_numpy(float)
    estimated["delta"] = np.nan
    table = pd.concat([exact, estimated], ignore_index=True)
    table = table.merge(est[["dim", "estimate", "energy", "estimate_rank"]], on="dim", how="left")
    table = table.sort_values("dim").reset_index(drop=True)
    loss_rise = pd.DataFrame({"dim": exact["dim"].astype(int), "exact": exact["eval_loss"] - float(intact)})
    table["certified_top"] = certified_top(est, loss_rise) if len(loss_rise) else 0  # of the dev-loss ranking
    table.attrs.update(top_k=top_k, checked_in_order=min(top_k, len(order)), rank_by=rank_by)
    return table


__all__ = [
    "METHODS",
    "RANKINGS",
    "VALUE_KINDS",
    "AUTO_STEP",
    "AUTO_TOP",
    "agreement",
    "as_scan_table",
    "certification_floor",
    "certified_top",
    "check_order",
    "error_bound",
    "error_per_energy",
    "estimate_effects",
    "exact_effects",
    "screen_ranking",
    "screened_scan",
    "screened_scan_dims",
    "unsettled",
    "verify_until_settled",
]
