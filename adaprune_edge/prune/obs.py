"""Structured OBS (Optimal Brain Surgeon) on the output projections: which input groups of o_proj
(a head = head_dim columns) and down_proj (an FFN channel = one column) to remove, and the optimal
update of the kept columns (SlimGPT, NeurIPS 2024; ZipLM, NeurIPS 2023).

For y = W x with H = E[x xᵀ] over the calibration tokens, damped H + λI (λ = DAMP · mean diag H),
removing the columns S and moving the kept ones optimally raises the output error by
    ε(S) = tr(W[:,S] (H⁻¹[S,S])⁻¹ W[:,S]ᵀ),      δW = −W[:,S] (H⁻¹[S,S])⁻¹ H⁻¹[S,:].
Selection is greedy in rounds: remove the cheapest groups, apply δW, and downdate H⁻¹ to the kept
columns (H⁻¹ ← H⁻¹ − H⁻¹[:,S] (H⁻¹[S,S])⁻¹ H⁻¹[S,:]), so later choices see earlier updates. The
allocation decides how many units a layer loses; OBS decides which, within the same constraints (query
heads: the same number from every KV group; KV groups; FFN channels). Float64 for H⁻¹ only.
Least-squares reconstruction (compensation.reconstruct) solves the same problem for a fixed S, with an
intercept and a ridge towards W; it needs the same second moments (statistics.GRAM_SITES).
"""

from __future__ import annotations

import torch
from torch import nn

from adaprune_edge.prune.allocation import LayerPlan
from adaprune_edge.gguf.names import ATTN_K, ATTN_OUT, ATTN_Q, FFN_DOWN
from adaprune_edge.prune.statistics import CalibStats, Linears
from adaprune_edge.prune.surgeon import Surgeon, damped_inverse, head_units

FFN_ROUNDS = 8       # greedy rounds for FFN channels (the total cost of the downdates does not depend on it)


def prune_ffn(down: nn.Linear, second_moment: torch.Tensor, n_remove: int, rounds: int = FFN_ROUNDS) -> tuple[int, ...]:
    """Choose `n_remove` FFN channels greedily, update down_proj's kept columns; returns kept channels."""
    n = down.in_features
    if n_remove <= 0:
        return tuple(range(n))
    sur = Surgeon(down.weight, damped_inverse(second_moment), [torch.tensor([j]) for j in range(n)])
    left = n_remove
    for r in range(rounds):
        take = -(-left // (rounds - r))
        order = torch.argsort(sur.saliency(), stable=True)[:take]
        left -= take
        sur.remove(order.tolist(), last=left <= 0)
        if left <= 0:
            break
    sur.write(down)
    return tuple(int(j) for j in torch.nonzero(sur.alive).flatten())


def prune_heads(out: nn.Linear, second_moment: torch.Tensor, lp: LayerPlan, n_kv: int, head_dim: int,
                unit: str) -> tuple[tuple[int, ...], tuple[tuple[int, ...], ...]]:
    """Re-choose the heads `lp` removes (same counts) by OBS and update the attention output projection
    `out`; returns (kv_keep, q_keep)."""
    rep = out.in_features // head_dim // n_kv
    if unit == "group":
        n_remove, units = n_kv - len(lp.kv_keep), head_units(n_kv, rep * head_dim)
    else:
        n_remove, units = rep - len(lp.q_keep[0]), head_units(n_kv * rep, head_dim)
    if n_remove <= 0:
        return lp.kv_keep, lp.q_keep
    sur = Surgeon(out.weight, damped_inverse(second_moment), units)
    for r in range(n_remove):  # one KV group, or one query head from every KV group, per round
        sal = sur.saliency()
        if unit == "group":
            sur.remove([int(torch.argmin(sal))], last=r == n_remove - 1)
        else:
            sur.remove([g * rep + int(torch.argmin(sal[g * rep:(g + 1) * rep])) for g in range(n_kv)],
                       last=r == n_remove - 1)
    sur.write(out)
    if unit == "group":
        kv = tuple(g for g in range(n_kv) if sur.alive[g])
        return kv, tuple(tuple(range(rep)) for _ in kv)
    return tuple(range(n_kv)), tuple(tuple(j for j in range(rep) if sur.alive[g * rep + j]) for g in range(n_kv))


def refine_layer(linears: Linears, lp: LayerPlan, stats: CalibStats, i: int, head_dim: int, unit: str) -> LayerPlan:
    """OBS choice + update for one layer's projections (`linears`, statistics index `i`) keeping the unit
    counts of `lp`."""
    o, down = linears[ATTN_OUT], linears[FFN_DOWN]
    n_kv = linears[ATTN_K].out_features // head_dim
    kv_keep, q_keep = lp.kv_keep, lp.q_keep
    if unit != "none" and sum(map(len, q_keep)) < linears[ATTN_Q].out_features // head_dim:
        kv_keep, q_keep = prune_heads(o, stats.second_moment(i, "o_in"), lp, n_kv, head_dim, unit)
    ff_keep = prune_ffn(down, stats.second_moment(i, "down_in"), down.in_features - len(lp.ff_keep))
    return LayerPlan(kv_keep, q_keep, ff_keep)
