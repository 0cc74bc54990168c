"""Sequential (layer-wise) pruning: every layer is pruned on the activations of the already-pruned
earlier layers, so its choice of units and its update see the errors made before it (SparseGPT's
scheme; SlimGPT / ZipLM for structured units).

Two passes, both one decoder layer at a time (memory: one layer's second moments):
1. `dense_scores` — a pass over the dense model that scores every layer's units for the allocation
   (how many units each layer loses; gradient metrics use the full-model pass in the cache instead;
   skipped for `uniform` allocation, whose counts do not need scores: `needs_dense_pass`).
2. `apply_sequential` — for layer i: run the calibration hidden states through it recording its
   statistics, re-choose which units go (OBS for `obs`, the metric on fresh statistics for activation
   metrics; gradient and weight metrics keep the dense choice), update / reconstruct / compensate from
   the fresh statistics, slice, and run the pruned layer to get layer i+1's inputs. The update target is
   the dense layer applied to the pruned model's input.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from adaprune_edge.archs import adapter_for
from adaprune_edge.gguf.names import ATTN_K, ATTN_Q, FFN_GATE
from adaprune_edge.prune import allocation as alloc
from adaprune_edge.prune.apply import OBS_METRIC, apply_layer
from adaprune_edge.prune.importance import METRICS, LayerScores, layer_scores, needs_gram
from adaprune_edge.prune.layerwise import capture, dense_pass
from adaprune_edge.archs.slicing import drop_layers
from adaprune_edge.prune.statistics import CalibStats, LayerStats, Linears

Progress = Callable[[int, int], None]


def _scores(linears: Linears, stats: CalibStats, config: Any, head_dim: int) -> LayerScores:
    comps = METRICS.get(config.metric)(linears, 0, stats, head_dim, config.seed)
    return layer_scores(comps, config.aggregation, linears[ATTN_K].out_features // head_dim)


def dense_scores(model: nn.Module, windows: torch.Tensor, config: Any,
                 progress: Progress | None = None) -> tuple[CalibStats, list[LayerScores]]:
    """Unit scores of every layer of the dense model under a gradient-free metric, layer by layer."""
    adapter = adapter_for(model)
    head_dim = adapter.head_dim(model.config)
    decoder = adapter.layers(model)
    return dense_pass(model, windows, config.batch_size, needs_gram(config.metric),
                      lambda i, st: _scores(adapter.linears(decoder[i]), st, config, head_dim), progress)


def needs_dense_pass(config: Any) -> bool:
    """Whether the allocation needs dense-model unit scores or statistics. Not for `uniform` without
    depth pruning: its counts come from parameter costs (the last few FFN steps that correct the total
    follow the placeholder scores, weight magnitude), and the sequential pass re-chooses the units."""
    return config.allocation != "uniform" or config.depth_share > 0


def _ffn_steps(lane: alloc.Lane, n_removed: int) -> int:
    done, k = 0, 0
    while k < len(lane.removed) and done < n_removed:
        done += len(lane.removed[k])
        k += 1
    return k


def rechoose(linears: Linears, lp: alloc.LayerPlan, stats: CalibStats, config: Any,
             head_dim: int) -> alloc.LayerPlan:
    """Same unit counts as `lp`, chosen by an activation metric on this layer's fresh statistics
    (`linears`: the layer's projections by GGUF role)."""
    metric = METRICS.get(config.metric)
    if metric.needs_grad or not metric.needs_act or config.metric == OBS_METRIC:
        return lp
    q = linears[ATTN_Q]
    n_kv = linears[ATTN_K].out_features // head_dim
    rep, n_ff, hidden = q.out_features // head_dim // n_kv, linears[FFN_GATE].out_features, q.in_features
    sc = _scores(linears, stats, config, head_dim)
    heads = alloc.head_lane(sc, n_kv, hidden, head_dim, config.head_unit, config.min_keep)
    ffn = alloc.ffn_lane(sc, hidden, config.align, config.min_keep)
    k_head = {"group": n_kv - len(lp.kv_keep), "query": rep - len(lp.q_keep[0])}.get(config.head_unit, 0)
    return alloc.plan_layer(n_kv * rep, n_kv, n_ff, heads, ffn, (k_head, _ffn_steps(ffn, n_ff - len(lp.ff_keep))),
                            config.head_unit)


def apply_sequential(model: nn.Module, windows: torch.Tensor, plan: Any, config: Any,
                     progress: Progress | None = None) -> dict[int, alloc.LayerPlan]:
    """Prune `model` in place to `plan` (engine.PrunePlan: dropped layers, per-layer kept units, whose
    counts are kept), one layer at a time on the pruned model's activations. Returns the applied plans."""
    adapter = adapter_for(model)
    head_dim = adapter.head_dim(model.config)
    need_gram = config.metric == OBS_METRIC or config.reconstruction
    inputs = capture(model, windows, config.batch_size)
    applied: dict[int, alloc.LayerPlan] = {}
    decoder = adapter.layers(model)
    n = len(decoder)
    for i, layer in enumerate(decoder):
        if i in plan.dropped:
            continue
        lp = plan.layers.get(i)
        if lp is not None:
            st = LayerStats(with_gram=need_gram)
            inputs.run(layer, st)
            stats = CalibStats([st], inputs.n_tokens, False, need_gram)
            lp = rechoose(adapter.linears(layer), lp, stats, config, head_dim)
            applied[i] = apply_layer(adapter, layer, lp, stats, 0, head_dim, config)
            del st, stats
        if i < n - 1:
            inputs.advance(inputs.run(layer))
        if progress:
            progress(i + 1, n)
    if plan.dropped:
        drop_layers(model, [i for i in range(n) if i not in plan.dropped])
    return applied
