"""The plan of a search: device, quant, budget, and the pruning-ratio range it implies.

r_min is the smallest ratio whose uniform structure meets the budget (budget.solve: bisection on the
recipe's predictor, confirmed by a measurement where the device's backend can measure), expressed as the share of
decoder parameters removed, the same unit as PruneConfig.ratio."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from adaprune_edge.latency import budget
from adaprune_edge.errors import ConfigError
from adaprune_edge.device import Device
from adaprune_edge.latency.backends import LatencyReport
from adaprune_edge.search.space import SpaceBounds
from adaprune_edge.archs.structure import Structure
from adaprune_edge.quant import QuantRecipe


@dataclass(frozen=True)
class SearchPlan:
    """Resolved inputs of a search. budget_ms: decode ms/token limit in force (None = prefill/RAM only)."""

    device: str
    quant: QuantRecipe
    budget_ms: float | None
    dense: LatencyReport
    solution: budget.Solution
    r_min: float
    latency_scale: float
    bounds: SpaceBounds
    prefill_scale: float = 1.0  # measured / predicted prompt tokens/s at the solution

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "quant": self.quant.name, "budget_ms": self.budget_ms,
                "dense_predicted": self.dense.to_dict(), "solution": self.solution.to_dict(),
                "r_min": self.r_min, "latency_scale": self.latency_scale, "prefill_scale": self.prefill_scale,
                "bounds": self.bounds.to_dict()}


def decoder_ratio(base: Structure, st: Structure) -> float:
    return 1.0 - st.decoder_params() / base.decoder_params()


MEASURE_MARGIN = 0.05  # where latency is measured, r_min is solved for budget x (1 - margin): on this
# shared 2-core VM the same file measures 5.2 and 6.0 ms/token a few minutes apart, and the shipped GGUF
# carries compensation biases the shape-only GGUFs lack (5.10 vs 4.80 ms/token for one structure), so the
# final measurement needs headroom


def make_plan(base: Structure, device: Device, quant: QuantRecipe, budget_ms: float | None = None,
              max_ratio: float = 0.6, confirm: bool = True, **bounds: Any) -> SearchPlan:
    """Solve r_min (the uniform recipe's ratio) for the budget; the bounds' r_max = max_ratio is the
    ceiling of every trial's own ratio solve (search/ratio.py), decoder share."""
    if budget_ms is not None and budget_ms <= 0:
        raise ConfigError(f"--budget-ms must be positive, got {budget_ms}")
    profile, predictor = device.profile, device.predictor(quant)
    confirming = confirm and predictor.measures
    limit = budget_ms if budget_ms is not None else profile.budget.decode_limit_ms
    target = limit * (1 - MEASURE_MARGIN) if confirming and limit is not None else budget_ms
    solving = budget.tightened(profile, MEASURE_MARGIN) if confirming else profile
    sol = budget.solve(base, solving, predictor, "uniform", max_ratio=0.9, decode_ms=target, confirm=confirm)
    r_min = decoder_ratio(base, sol.structure)
    # measured / predicted at the solution: the search screens trials with the roofline times this factor
    cal = predictor.calibrated(sol.measured, sol.structure).calibration
    if r_min >= max_ratio:
        raise ConfigError(f"the budget needs at least {r_min:.1%} of the decoder pruned, above --max-ratio "
                          f"{max_ratio:.0%}: raise --max-ratio or relax the budget")
    return SearchPlan(profile.name, quant, limit, predictor.roofline(base), sol, r_min, cal.decode,
                      SpaceBounds(r_min=round(r_min, 4), r_max=round(max_ratio, 4), **bounds), cal.prefill)


def with_bounds(plan: SearchPlan, **changes: Any) -> SearchPlan:
    return dataclasses.replace(plan, bounds=dataclasses.replace(plan.bounds, **changes))
