"""Allocation: how many heads / FFN channels each layer loses, and which ones.

Every layer is a pair of *lanes* of removal steps, cheapest-importance first:
  heads (unit `query`): step k drops the k-th least important query head of every KV group, so all
        groups keep the same size (9 → 6 → 3 heads with 3 KV heads); cost 2·hidden·head_dim per head.
  heads (unit `group`): step k drops the k-th least important KV group with its query heads.
  ffn:  step k drops the next `align` least important channels (widths stay multiples of `align`).
Scores are standardized per layer and lane ((s − mean)/std, as FLAP) so lanes compare across layers.
Strategies (registry): `uniform` (same share per layer), `global` (one model-wide ranking of steps),
`owl` (per-layer share from outlier density, OWL: more outliers → less pruning). All hit the
parameter target within about one step; the `min_keep` share of heads/channels always stays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from adaprune_edge.archs import adapter_for
from adaprune_edge.prune.importance import LayerScores
from adaprune_edge.registry import Registry
from adaprune_edge.prune.importance import SITE_OF
from adaprune_edge.prune.statistics import COMPONENTS

HEAD_UNITS = ("query", "group", "none")


@dataclass
class Lane:
    """Removal steps of one layer and kind: unit indices removed at each step, their mean standardized
    score, and their cost in parameters."""

    removed: list[list[Any]] = field(default_factory=list)
    score: list[float] = field(default_factory=list)
    cost: list[int] = field(default_factory=list)
    units: int = 0                      # units per group of the lane (query heads per group / groups)


@dataclass(frozen=True)
class LayerPlan:
    """What one kept layer keeps: KV heads (sorted), query heads per kept group (offsets), FFN channels."""

    kv_keep: tuple[int, ...]
    q_keep: tuple[tuple[int, ...], ...]
    ff_keep: tuple[int, ...]


@dataclass
class AllocationContext:
    """Inputs of an allocation strategy. `layers` are positions of width-prunable layers."""

    heads: dict[int, Lane]
    ffn: dict[int, Lane]
    layers: list[int]
    layer_params: dict[int, int]
    target: float                       # parameters to remove by width pruning
    model: Any = None
    stats: Any = None
    owl_lambda: float = 0.08
    owl_m: float = 5.0
    knots: tuple[float, ...] = ()       # allocation 'profile' (profile.py)
    head_weight: float = 1.0


ALLOCATIONS: Registry[Callable[[AllocationContext], dict[int, tuple[int, int]]]] = Registry("allocation")


def _standardize(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    std = x.std() if x.numel() > 1 else torch.tensor(0.0)
    return (x - x.mean()) / (std if std > 0 else 1.0)


def head_lane(sc: LayerScores, n_kv: int, hidden: int, head_dim: int, unit: str, min_keep: float) -> Lane:
    """Removal steps for the attention of one layer."""
    lane = Lane()
    if unit == "none":
        return lane
    rep = sc.heads.numel() // n_kv
    lane.units = n_kv if unit == "group" else rep
    if unit == "group":
        z = _standardize(sc.groups)
        order = torch.argsort(z, stable=True).tolist()
        for k in range(n_kv - max(1, math.ceil(min_keep * n_kv))):
            lane.removed.append([order[k]])
            lane.score.append(float(z[order[k]]))
            lane.cost.append((2 * rep + 2) * hidden * head_dim)
        return lane
    z = _standardize(sc.heads).view(n_kv, rep)
    order = torch.argsort(z, dim=1, stable=True)
    for k in range(rep - max(1, math.ceil(min_keep * rep))):
        heads = [(g, int(order[g, k])) for g in range(n_kv)]
        lane.removed.append(heads)
        lane.score.append(float(torch.stack([z[g, j] for g, j in heads]).mean()))
        lane.cost.append(n_kv * 2 * hidden * head_dim)
    return lane


def ffn_lane(sc: LayerScores, hidden: int, align: int, min_keep: float) -> Lane:
    """Removal steps for the FFN of one layer, `align` channels each (the first takes n_ff % align)."""
    z = _standardize(sc.ffn)
    n = z.numel()
    order = torch.argsort(z, stable=True).tolist()
    min_kept = max(align, math.ceil(min_keep * n / align) * align) if n >= align else n
    lane, pos = Lane(), 0
    size = n % align or align
    while n - pos - size >= min_kept:
        chunk = order[pos:pos + size]
        lane.removed.append(chunk)
        lane.score.append(float(z[chunk].mean()))
        lane.cost.append(3 * hidden * size)
        pos, size = pos + size, align
    return lane


def greedy(lanes: dict[tuple[int, str], Lane], start: dict[tuple[int, str], int], budget: float) -> dict[tuple[int, str], int]:
    """Take steps in order of score across lanes (each lane in its own order) while a step brings the
    removed parameters closer to `budget`; a lane whose next step overshoots is closed."""
    taken = dict(start)
    items = sorted((ln.score[k], key, k) for key, ln in lanes.items() for k in range(start.get(key, 0), len(ln.score)))
    closed: set = set()
    spent = 0.0
    for _, key, k in items:
        if key in closed or k != taken.get(key, 0):
            closed.add(key)
            continue
        cost = lanes[key].cost[k]
        if spent + cost / 2 > budget:
            closed.add(key)
            continue
        spent += cost
        taken[key] = k + 1
    return taken


def _all_lanes(ctx: AllocationContext) -> dict[tuple[int, str], Lane]:
    return {**{(i, "head"): ctx.heads[i] for i in ctx.layers}, **{(i, "ffn"): ctx.ffn[i] for i in ctx.layers}}


def _steps_result(ctx: AllocationContext, taken: dict[tuple[int, str], int]) -> dict[int, tuple[int, int]]:
    return {i: (taken.get((i, "head"), 0), taken.get((i, "ffn"), 0)) for i in ctx.layers}


@ALLOCATIONS.register("global", help="FLAP-like ranking across layers")
def allocate_global(ctx: AllocationContext) -> dict[int, tuple[int, int]]:
    """FLAP-like: rank every step of every layer on the standardized scale, remove the lowest."""
    return _steps_result(ctx, greedy(_all_lanes(ctx), {}, ctx.target))


def by_fractions(ctx: AllocationContext, frac: dict[int, float],
                 head_frac: dict[int, float] | None = None) -> dict[int, tuple[int, int]]:
    """Remove about frac[i] of layer i: heads rounded to whole steps (head_frac[i] of them; default
    frac[i]), FFN widths filling the rest, then the total corrected to the target with the least
    important remaining FFN steps."""
    taken: dict[tuple[int, str], int] = {}
    head_cost = 0.0
    head_frac = frac if head_frac is None else head_frac
    for i in ctx.layers:
        ln = ctx.heads[i]
        k = min(len(ln.cost), round(head_frac[i] * ln.units))
        taken[(i, "head")] = k
        head_cost += sum(ln.cost[:k])
    want = {i: max(0.0, frac[i] * ctx.layer_params[i] - sum(ctx.heads[i].cost[:taken[(i, 'head')]]))
            for i in ctx.layers}
    total = sum(want.values())
    scale = max(0.0, ctx.target - head_cost) / total if total > 0 else 0.0
    spent = head_cost
    for i in ctx.layers:
        k, c, cost = 0, 0.0, ctx.ffn[i].cost
        while k < len(cost) and c + cost[k] <= want[i] * scale:
            c += cost[k]
            k += 1
        taken[(i, "ffn")] = k
        spent += c
    ffn_lanes = {(i, "ffn"): ctx.ffn[i] for i in ctx.layers}
    rest = greedy(ffn_lanes, {k: v for k, v in taken.items() if k[1] == "ffn"}, ctx.target - spent)
    taken.update(rest)
    return _steps_result(ctx, taken)


@ALLOCATIONS.register("uniform", help="the same share of every layer")
def allocate_uniform(ctx: AllocationContext) -> dict[int, tuple[int, int]]:
    """The same share of every width-prunable layer."""
    total = sum(ctx.layer_params[i] for i in ctx.layers)
    f = ctx.target / total if total else 0.0
    return by_fractions(ctx, {i: f for i in ctx.layers})


def outlier_density(model: Any, stats: Any, layers: list[int], m: float) -> torch.Tensor:
    """OWL's layerwise outlier density: share of Wanda scores |W|·‖X‖ above m × their layer mean.

    Kept on the statistics object per (layer, m, weights' identity and version): the ratio solver asks
    for the same densities at every bisection step of a trial, and every trial of a search shares them."""
    memo = stats.__dict__.setdefault("_outlier_density", {})
    out = []
    adapter = adapter_for(model)
    for i in layers:
        layer = adapter.layers(model)[i]
        weights = [adapter.linear(layer, r).weight for r in COMPONENTS.values()]
        key = (i, m, tuple((id(w), w._version) for w in weights))
        if key not in memo:
            parts = [(w.detach().abs() * stats.sq_norm(i, SITE_OF[c]).sqrt().float()).flatten()
                     for c, w in zip(COMPONENTS, weights)]
            allw = torch.cat(parts)
            memo[key] = float((allw > m * allw.mean()).float().mean())
        out.append(memo[key])
    return torch.tensor(out, dtype=torch.float64)


@ALLOCATIONS.register("owl", help="outlier-weighted: outlier-rich layers keep more")
def allocate_owl(ctx: AllocationContext) -> dict[int, tuple[int, int]]:
    """Per-layer share f_i = f − λ·(2·minmax(LOD_i) − 1 − centring): outlier-rich layers keep more."""
    total = sum(ctx.layer_params[i] for i in ctx.layers)
    f = ctx.target / total if total else 0.0
    lod = outlier_density(ctx.model, ctx.stats, ctx.layers, ctx.owl_m)
    span = float(lod.max() - lod.min())
    norm = (lod - lod.min()) / span * 2 * ctx.owl_lambda if span > 0 else torch.zeros_like(lod)
    shares = (f - (norm - norm.mean())).clamp(0.0, 0.95)
    return by_fractions(ctx, {i: float(s) for i, s in zip(ctx.layers, shares)})


def plan_layer(n_head: int, n_kv: int, n_ff: int, head: Lane, ffn: Lane, steps: tuple[int, int], unit: str) -> LayerPlan:
    """Turn a number of steps per lane into the kept indices of one layer."""
    rep = n_head // n_kv
    k_head, k_ffn = steps
    gone_ff = {c for chunk in ffn.removed[:k_ffn] for c in chunk}
    ff_keep = tuple(c for c in range(n_ff) if c not in gone_ff)
    if unit == "group":
        gone_g = {g for s in head.removed[:k_head] for g in s}
        kv = tuple(g for g in range(n_kv) if g not in gone_g)
        return LayerPlan(kv, tuple(tuple(range(rep)) for _ in kv), ff_keep)
    gone_h = {gj for s in head.removed[:k_head] for gj in s}
    q = tuple(tuple(j for j in range(rep) if (g, j) not in gone_h) for g in range(n_kv))
    return LayerPlan(tuple(range(n_kv)), q, ff_keep)
