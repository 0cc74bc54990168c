"""Applying a prune plan to one decoder layer: OBS choice and update, or least-squares reconstruction,
or bias compensation of the output projections from that layer's statistics, then physical slicing.

`engine` applies a plan to all layers from one set of dense-model statistics; `sequential` applies it
layer by layer from statistics of the already-pruned model. Both go through `apply_layer`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from adaprune_edge.prune import obs
from adaprune_edge.prune.allocation import LayerPlan
from adaprune_edge.prune.compensation import compensate, reconstruct
from adaprune_edge.archs import ArchAdapter
from adaprune_edge.archs.slicing import prune_attention, prune_mlp
from adaprune_edge.gguf.names import ATTN_K, ATTN_OUT, ATTN_Q, FFN_DOWN, FFN_GATE

OBS_METRIC = "obs"


def kept_columns(lp: LayerPlan, rep: int, head_dim: int) -> tuple[list[int], list[int]]:
    """(kept query heads, kept o_proj input columns) of a layer plan."""
    heads = [g * rep + j for g, q in zip(lp.kv_keep, lp.q_keep) for j in q]
    return heads, [h * head_dim + d for h in heads for d in range(head_dim)]


def apply_layer(adapter: ArchAdapter, layer: nn.Module, lp: LayerPlan, stats: Any, i: int, head_dim: int,
                config: Any) -> LayerPlan:
    """Prune one layer to `lp` (statistics of this layer at index `i` of `stats`); with the `obs`
    metric, OBS re-chooses the units (same counts) and updates the kept columns. Returns the plan applied.
    adapter: the model's (archs); config: a PruneConfig (metric, head_unit, reconstruction, recon_damp,
    bias_compensation)."""
    q, k, o, gate, down = (adapter.linear(layer, r) for r in (ATTN_Q, ATTN_K, ATTN_OUT, FFN_GATE, FFN_DOWN))
    rep = q.out_features // k.out_features
    if config.metric == OBS_METRIC:
        lp = obs.refine_layer(adapter.linears(layer), lp, stats, i, head_dim, config.head_unit)
    heads, cols = kept_columns(lp, rep, head_dim)
    if config.metric != OBS_METRIC and config.reconstruction:
        reconstruct(o, cols, stats.mean(i, "o_in"), stats.second_moment(i, "o_in"), config.recon_damp)
        reconstruct(down, list(lp.ff_keep), stats.mean(i, "down_in"), stats.second_moment(i, "down_in"),
                    config.recon_damp)
    elif config.metric != OBS_METRIC and config.bias_compensation:
        compensate(o, cols, stats.mean(i, "o_in"))
        compensate(down, list(lp.ff_keep), stats.mean(i, "down_in"))
    if len(heads) != q.out_features // head_dim:
        prune_attention(adapter, layer, list(lp.kv_keep), [list(offs) for offs in lp.q_keep])
    if len(lp.ff_keep) != gate.out_features:
        prune_mlp(adapter, layer, list(lp.ff_keep))
    return lp
