"""The searched per-layer keep profile (allocation `profile`): a few knots over depth, interpolated.

Knot k (of K, evenly spaced over depth 0 … 1) is the relative pruning intensity there, in (0, 1]. Layer
i at depth x_i = i / (n_layer − 1) gets weight w_i by linear interpolation between knots, and its
share of removal f_i = f · w_i · Σ P / Σ w_j P_j (P: parameters of a width-prunable layer, f: the
overall share the target asks for), capped at MAX_SHARE with the excess spread over the other layers
(water-filling), so Σ f_i P_i is the target whatever the knots. `head_weight` sets how much of a
layer's share attention takes: heads lose round(head_weight · f_i · units) whole steps, the FFN fills
the rest (allocation.by_fractions). Heads and FFN widths move in the lanes' valid steps only, so every
structure keeps FFN widths on the `align` grid and equal query-head counts per KV group."""

from __future__ import annotations

from adaprune_edge.archs import adapter_for
from adaprune_edge.prune.allocation import ALLOCATIONS, AllocationContext, by_fractions

MAX_SHARE = 0.95


def depth_weights(knots: tuple[float, ...], depths: list[float]) -> list[float]:
    """Knot values (evenly spaced over [0, 1]) linearly interpolated at `depths` (each in [0, 1])."""
    if len(knots) < 2:
        raise ValueError(f"a profile needs at least 2 knots, got {len(knots)}")
    out = []
    for x in depths:
        pos = min(max(x, 0.0), 1.0) * (len(knots) - 1)
        k = min(int(pos), len(knots) - 2)
        t = pos - k
        out.append(knots[k] * (1 - t) + knots[k + 1] * t)
    return out


def layer_shares(weights: dict[int, float], params: dict[int, int], target: float) -> dict[int, float]:
    """Per-layer removal shares proportional to `weights`, capped at MAX_SHARE, with Σ share·params =
    target (parameters) whenever the cap allows it."""
    shares, free, left = {}, dict(weights), float(target)
    while free:
        mass = sum(w * params[i] for i, w in free.items())
        scale = left / mass if mass > 0 else 0.0
        over = {i for i, w in free.items() if w * scale > MAX_SHARE}
        if not over:
            shares.update({i: w * scale for i, w in free.items()})
            break
        for i in over:
            shares[i] = MAX_SHARE
            left -= MAX_SHARE * params[i]
            del free[i]
    return shares


@ALLOCATIONS.register("profile", help="searched knots over depth and a heads-vs-FFN weight")
def allocate_profile(ctx: AllocationContext) -> dict[int, tuple[int, int]]:
    """Per-layer shares from the knot profile over depth, heads vs FFN by `head_weight`."""
    if not ctx.layers:
        return {}
    n = len(adapter_for(ctx.model).layers(ctx.model)) if ctx.model is not None else max(ctx.layers) + 1
    depths = [i / max(1, n - 1) for i in ctx.layers]
    w = dict(zip(ctx.layers, depth_weights(ctx.knots or (1.0, 1.0), depths)))
    frac = layer_shares(w, ctx.layer_params, ctx.target)
    head = {i: min(1.0, ctx.head_weight * f) for i, f in frac.items()}
    return by_fractions(ctx, frac, head)
