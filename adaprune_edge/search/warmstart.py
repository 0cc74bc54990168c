"""The fixed recipes a search starts from (its warm starts), as configurations of its space."""

from __future__ import annotations

from typing import Any

from adaprune_edge.search.space import SpaceBounds

# Fixed recipes the search starts from, cheapest first: SMAC evaluates them before anything else (they are its
# initial design, _warm_first), so a search cut by walltime or a stall has them. They are the published
# recipes that were best, or within 1% of the best, at some target in bench/results/search_vs_fixed_fair32r.json
# (3 seeds, report windows): LLM-Pruner-like (taylor, uniform, first 2 / last 1 layers kept) with our
# least-squares reconstruction (best at 20%), FLAP-like fluctuation/global with it (+0.6% at 20%), and
# SlimGPT-like structured OBS on the already-pruned model's activations, uniform (best at 35%), the slowest
# (~40 s on the default model). Not warm starts (each costs a trial, and the search's cost is a multiple of
# one recipe's: bench/results/search_cost.json): Wanda-sp + least squares (+0.9% / +3.3% at 20% / 35%),
# global OBS (+1.8% / +5.4%), taylor without protection (+4% / +13%), FLAP's bias compensation (worse than
# least squares on the same scores); the space still holds them. A recipe the space cannot express
# (uniform-only families fix protection to 0; small models cap it) is replaced by its WARM_FALLBACK.
# The first warm start (or `taylor-uniform` where the family cannot reconstruct) is the plan stage's trial
# (pipeline/plan_stages.py).
WARM_STARTS: dict[str, dict[str, Any]] = {
    "llm-pruner-like+lsq": dict(metric="taylor", allocation="uniform", protect_first=2, protect_last=1,
                                reconstruction=True, recon_damp=0.3),
    "fluctuation-global+lsq": dict(metric="fluctuation", allocation="global", reconstruction=True, recon_damp=0.3),
    "wanda-uniform+lsq": dict(metric="wanda", allocation="uniform", reconstruction=True, recon_damp=0.3),
    "obs-uniform-seq": dict(metric="obs", allocation="uniform", sequential=True),
    "obs-global-seq": dict(metric="obs", allocation="global", sequential=True),
    "taylor-uniform+lsq": dict(metric="taylor", allocation="uniform", reconstruction=True, recon_damp=0.3),
    "fluctuation-global+bias": dict(metric="fluctuation", allocation="global", bias_compensation=True),
    "taylor-uniform": dict(metric="taylor", allocation="uniform"),
}
DEFAULT_WARM_STARTS = ("llm-pruner-like+lsq", "fluctuation-global+lsq", "obs-uniform-seq")
WARM_FALLBACK = {"llm-pruner-like+lsq": "taylor-uniform+lsq"}


def warm_start_configs(space: Any, bounds: SpaceBounds, names: tuple[str, ...] | None = None) -> list[Any]:
    """The WARM_STARTS recipes (or those named) that the space can express (else their WARM_FALLBACK), as
    configurations of it; each at the space's default quant recipe (the plan's) when the quant is searched."""
    from ConfigSpace import Constant

    base = dict(space.get_default_configuration())
    fixed = {k for k, hp in space.items() if isinstance(hp, Constant)}
    out = []
    for name in names or DEFAULT_WARM_STARTS:
        config = _expressed(space, base, fixed, bounds, WARM_STARTS[name])
        if config is None and name in WARM_FALLBACK:
            config = _expressed(space, base, fixed, bounds, WARM_STARTS[WARM_FALLBACK[name]])
        if config is not None:
            out.append(config)
    return out


def _expressed(space: Any, base: dict[str, Any], fixed: set[str], bounds: SpaceBounds,
               recipe: dict[str, Any]) -> Any:
    """`recipe` as a configuration of the space, or None when the space cannot hold it (a fixed knob with
    another value in a uniform-only family, a protection above the space's range)."""
    from ConfigSpace import Configuration

    if bounds.uniform_only and any(k in fixed and recipe[k] != base[k] for k in recipe):
        return None  # allocation, protection and biases are fixed for uniform-only families
    values = {**base, **{k: v for k, v in recipe.items() if k not in fixed}}
    try:
        return Configuration(space, values=values)
    except ValueError:  # e.g. protect_first 2 where the model allows at most 1
        return None
