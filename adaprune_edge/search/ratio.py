"""The ratio solver: for one recipe, the smallest pruning ratio whose structure meets the budget.

Bisection on the decoder share in [0, hi] with a StructureProbe (allocation only, no slicing) and the
recipe's calibrated Predictor (the device's roofline × the plan's scale) plus RAM, via latency.budget.budget_ok.
Structures move in whole steps (heads, `align`-wide FFN chunks), so the answer is the smallest ratio
within `tol` whose structure fits: the structure at ratio − tol misses the budget."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from adaprune_edge.latency.budget import budget_ok
from adaprune_edge.latency.predictor import Predictor
from adaprune_edge.archs.structure import Structure

TOL = 0.0025  # decoder share; finer than one 256-wide FFN step of one layer of the default model


@dataclass(frozen=True)
class RatioSolution:
    """ratio: smallest fitting config ratio found (hi when none fits); ok: whether it fits; steps: probes."""

    ratio: float
    ok: bool
    reason: str
    steps: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RatioSolution":
        return cls(**d)


def predicted_fit(predictor: Predictor, profile: Any,
                  decode_ms: float | None = None) -> Callable[[Structure], tuple[bool, str]]:
    """(fits, reason) of a Structure at the predictor's recipe on its calibrated roofline (never measured)."""

    def fits(st: Structure) -> tuple[bool, str]:
        return budget_ok(st, profile, predictor.quant, predictor.predict(st), decode_ms)

    return fits


def solve_ratio(structure_at: Callable[[float], Structure], fits: Callable[[Structure], tuple[bool, str]],
                hi: float, tol: float = TOL) -> RatioSolution:
    """Smallest r in [0, hi] (within tol) with fits(structure_at(r)); (hi, ok=False) when hi misses."""
    ok0, why0 = fits(structure_at(0.0))
    if ok0:
        return RatioSolution(0.0, True, why0, 1)
    ok_hi, why_hi = fits(structure_at(hi))
    if not ok_hi:
        return RatioSolution(hi, False, why_hi, 2)
    lo, steps, why = 0.0, 2, why_hi
    while hi - lo > tol:
        mid = (lo + hi) / 2
        ok, reason = fits(structure_at(mid))
        steps += 1
        if ok:
            hi, why = mid, reason
        else:
            lo = mid
    return RatioSolution(hi, True, why, steps)
