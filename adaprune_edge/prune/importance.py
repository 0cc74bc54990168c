"""Importance of prunable units: metrics (registry), aggregations (registry), and their cache.

A metric scores the *components* of every unit from one layer's projections (GGUF role → nn.Linear,
`ArchAdapter.linears`): for each projection it gives a per-weight importance, summed over the weights a
unit owns (q/k/v/gate/up rows, o/down columns) → one score per unit per component. An aggregation
combines a unit's components (LLM-Pruner's group reduction) into one score:

  unit          components (in order; `last` = the output projection)
  query head    q rows of the head, o_proj columns of the head
  KV group      q rows and o columns of all its query heads, k rows, v rows
  FFN channel   gate row, up row, down column

Metrics: l1 |W|, l2 W², taylor |W·G|, taylor2 |W·G − ½W²·Σg²| (G: gradient of the calibration loss
summed over batches, Σg²: sum of squared batch gradients), wanda |W|·‖X‖ (X: the projection's input
over calibration tokens), fluctuation var(X_j)·‖W_:,j‖² (FLAP; defined on o/down columns only),
random (seeded baseline), obs (structured OBS: the output error of removing the unit alone with
the optimal update of the rest, tr(W_S (H⁻¹_SS)⁻¹ W_Sᵀ), on o/down columns; prune/surgeon.py). Aggregations: sum, mean, max, prod (sum of logs), last.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch
from torch import nn

from adaprune_edge.archs import adapter_for
from adaprune_edge.gguf.names import ATTN_K
from adaprune_edge.prune.statistics import COMPONENTS, CalibStats, Linears, collect
from adaprune_edge.prune.units import FFN_COMPS, GROUP_COMPS, HEAD_COMPS, ROW_COMPONENTS, SITE_OF, reduce_component
from adaprune_edge.prune.surgeon import ObsSaliency
from adaprune_edge.registry import Registry

@dataclass(frozen=True)
class LayerScores:
    """Unit scores of one decoder layer: heads [n_head], kv groups [n_kv], ffn channels [n_ff]."""

    heads: torch.Tensor
    groups: torch.Tensor
    ffn: torch.Tensor


class Metric(Protocol):
    needs_grad: bool
    needs_act: bool

    def __call__(self, linears: Linears, i: int, stats: CalibStats | None, head_dim: int,
                 seed: int) -> dict[str, torch.Tensor]: ...


METRICS: Registry[Any] = Registry("importance metric")
AGGREGATIONS: Registry[Callable[[torch.Tensor], torch.Tensor]] = Registry("aggregation")


class _Elementwise:
    """A metric given by a per-weight formula f(W, component, layer index, stats)."""

    def __init__(self, fn: Callable[..., torch.Tensor | None], needs_act: bool = False) -> None:
        self.fn, self.needs_grad, self.needs_act = fn, False, needs_act

    def __call__(self, linears: Linears, i: int, stats: CalibStats | None, head_dim: int,
                 seed: int) -> dict[str, torch.Tensor]:
        out = {}
        for comp, role in COMPONENTS.items():
            elem = self.fn(linears[role].weight.detach(), comp, i, stats)
            if elem is not None:
                out[comp] = reduce_component(comp, elem, head_dim)
        return out


class _FromGradients:
    """A metric whose unit scores were reduced during the calibration pass (see calib_stats)."""

    needs_grad, needs_act = True, False

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, linears: Linears, i: int, stats: CalibStats | None, head_dim: int,
                 seed: int) -> dict[str, torch.Tensor]:
        assert stats is not None and stats.has_grad
        return dict(stats.layers[i].grad_units[self.name])


class _Random:
    """Seeded uniform scores: the sanity baseline every real metric must beat."""

    needs_grad, needs_act = False, False

    def __call__(self, linears: Linears, i: int, stats: CalibStats | None, head_dim: int,
                 seed: int) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed * 100003 + i)
        return {comp: torch.rand(_n_units(linears, comp, head_dim), generator=gen, dtype=torch.float64)
                for comp in COMPONENTS}


def _n_units(linears: Linears, comp: str, head_dim: int) -> int:
    w = linears[COMPONENTS[comp]].weight
    n = w.shape[0] if comp in ROW_COMPONENTS else w.shape[1]
    return n // head_dim if comp in ("q", "k", "v", "o") else n


def _wanda(w: torch.Tensor, comp: str, i: int, stats: CalibStats) -> torch.Tensor:
    return w.abs() * stats.sq_norm(i, SITE_OF[comp]).sqrt().to(w.dtype)


def _fluctuation(w: torch.Tensor, comp: str, i: int, stats: CalibStats) -> torch.Tensor | None:
    if comp not in ("o", "down"):
        return None
    return w * w * stats.var(i, SITE_OF[comp]).to(w.dtype)


METRICS.register("l1", help="sum of |w|")(_Elementwise(lambda w, c, i, s: w.abs()))
METRICS.register("l2", help="sum of w²")(_Elementwise(lambda w, c, i, s: w * w))
METRICS.register("wanda", help="|w|·‖x‖")(_Elementwise(_wanda, needs_act=True))
METRICS.register("fluctuation", help="FLAP: input variance × ‖w‖²")(_Elementwise(_fluctuation, needs_act=True))
METRICS.register("taylor", help="|w·∂L/∂w|, first order")(_FromGradients("taylor"))
METRICS.register("taylor2", help="Taylor with the second-order term")(_FromGradients("taylor2"))
METRICS.register("random", baseline=True, help="baseline")(_Random())
METRICS.register("obs", help="structured OBS: units chosen from the input Hessian, kept weights updated optimally")(ObsSaliency())


# -- aggregations over a unit's components: input [n_components, n_units] -> [n_units] --------------
AGGREGATIONS.register("sum")(lambda x: x.sum(0))
AGGREGATIONS.register("mean")(lambda x: x.mean(0))
AGGREGATIONS.register("max")(lambda x: x.max(0).values)
AGGREGATIONS.register("prod", help="product, as a sum of logs")(lambda x: torch.log(x.clamp_min(0.0) + 1e-30).sum(0))
AGGREGATIONS.register("last", help="the last component only")(lambda x: x[-1])


def _combine(comps: dict[str, torch.Tensor], order: tuple[str, ...], agg: Callable) -> torch.Tensor:
    rows = [comps[c] for c in order if c in comps]
    return agg(torch.stack(rows))


def layer_scores(comps: dict[str, torch.Tensor], aggregation: str, n_kv: int) -> LayerScores:
    """Aggregate component scores into head, KV-group and FFN-channel scores of one layer."""
    agg = AGGREGATIONS.get(aggregation)
    heads = _combine(comps, HEAD_COMPS, agg)
    grouped = {c: (v.view(n_kv, -1).sum(1) if c in ("q", "o") else v) for c, v in comps.items()
               if c in GROUP_COMPS}
    return LayerScores(heads, _combine(grouped, GROUP_COMPS, agg), _combine(comps, FFN_COMPS, agg))


def needs(metric: str) -> tuple[bool, bool]:
    """(needs gradients, needs activation statistics) of a metric."""
    m = METRICS.get(metric)
    return m.needs_grad, m.needs_act


def needs_gram(metric: str) -> bool:
    """Whether a metric needs the second moments of the output projections' inputs (obs)."""
    return bool(getattr(METRICS.get(metric), "needs_gram", False))


def _nbytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    if isinstance(obj, LayerScores):
        return _nbytes([obj.heads, obj.groups, obj.ffn])
    if isinstance(obj, CalibStats):
        return sum(_nbytes([s.sums, s.sumsq, s.grams, s.grad_units]) for s in obj.layers)
    return 0


def model_scores(model: nn.Module, stats: CalibStats | None, metric: str, aggregation: str,
                 seed: int = 0) -> list[LayerScores]:
    """Unit scores of every decoder layer of `model` (dense weights) under `metric` and `aggregation`."""
    m = METRICS.get(metric)
    AGGREGATIONS.get(aggregation)
    adapter = adapter_for(model)
    head_dim = adapter.head_dim(model.config)
    out = []
    for i, layer in enumerate(adapter.layers(model)):
        n_kv = adapter.linear(layer, ATTN_K).out_features // head_dim
        out.append(layer_scores(m(adapter.linears(layer), i, stats, head_dim, seed), aggregation, n_kv))
    return out


DEFAULT_MAX_BYTES = 512 * 2**20


class ImportanceCache:
    """Keeps calibration statistics (per calibration-window key) and unit scores (per key, metric,
    aggregation, seed) across prune calls. Keep one per dense model: keys do not include the weights.
    Holds at most `max_entries` calibration sets and `max_bytes` bytes of tensors (least recently used
    dropped first; a set larger than `max_bytes` alone is used but not kept). Without second moments an
    entry is small (~1 MB for the default model); with them (reconstruction, obs) ~11 MB per layer."""

    def __init__(self, max_entries: int = 16, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._stats: OrderedDict[str, CalibStats] = OrderedDict()
        self._scores: dict[tuple, list[LayerScores]] = {}
        self.hits = 0
        self.misses = 0

    def stats(self, model: nn.Module, windows: torch.Tensor, key: str, need_grad: bool, batch_size: int,
              progress: Callable[[int, int], None] | None = None, need_gram: bool = False) -> CalibStats:
        cached = self._stats.get(key)
        if cached is not None and (cached.has_grad or not need_grad) and (cached.has_gram or not need_gram):
            self._stats.move_to_end(key)
            self.hits += 1
            return cached
        self.misses += 1
        st = collect(model, windows, need_grad or (cached is not None and cached.has_grad), batch_size, progress,
                     need_gram or (cached is not None and cached.has_gram))
        self.put(key, st)
        return st

    def clear(self) -> None:
        """Forget every calibration set and score (hit/miss counts are kept)."""
        self._stats.clear()
        self._scores.clear()

    def put(self, key: str, stats: CalibStats) -> None:
        """Store statistics under `key`, then evict least recently used sets down to the bounds."""
        self._stats[key] = stats
        self._stats.move_to_end(key)
        self._evict()

    @property
    def nbytes(self) -> int:
        """Bytes of tensors held (statistics and scores)."""
        return _nbytes(list(self._stats.values())) + _nbytes(list(self._scores.values()))

    def _evict(self) -> None:
        while self._stats and (len(self._stats) > self.max_entries or self.nbytes > self.max_bytes):
            old, _ = self._stats.popitem(last=False)
            self._scores = {k: v for k, v in self._scores.items() if k[0] != old}

    def scores(self, model: nn.Module, stats: CalibStats | None, key: str, metric: str, aggregation: str,
               seed: int) -> list[LayerScores]:
        k = (key, metric, aggregation, seed if metric == "random" else 0)
        if k in self._scores:
            return self._scores[k]
        sc = model_scores(model, stats, metric, aggregation, seed)
        self.put_scores(key, metric, aggregation, seed, sc)
        return sc

    def cached_scores(self, key: str, metric: str, aggregation: str, seed: int) -> list[LayerScores] | None:
        """Scores stored for these arguments, or None."""
        return self._scores.get((key, metric, aggregation, seed if metric == "random" else 0))

    def put_scores(self, key: str, metric: str, aggregation: str, seed: int, scores: list[LayerScores]) -> None:
        """Store unit scores of the statistics under `key` (kept only while those statistics are)."""
        if key in self._stats:
            self._scores[(key, metric, aggregation, seed if metric == "random" else 0)] = scores
            self._evict()
