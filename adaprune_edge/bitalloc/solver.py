"""The allocator: one ggml type per weight tensor minimising the predicted damage (sum of alpha x error,
sensitivity.py) subject to every limit the device states, checked with its latency predictor.

A Lagrangian relaxation first — each tensor independently takes argmin damage + lambda x cost, with cost
the bytes decode reads times the type's measured latency scale, and lambda bisected to the smallest value
whose allocation meets the budget — then a greedy fill spends what headroom is left on the upgrades that
buy the most damage per unit of cost. A few thousand predictor calls: seconds."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from gguf import GGMLQuantizationType as QT

from adaprune_edge.archs.structure import Structure
from adaprune_edge.errors import LatencyError
from adaprune_edge.gguf.tensor import GGUFTensor
from adaprune_edge.latency import budget
from adaprune_edge.latency.predictor import Calibration
from adaprune_edge.quant import QuantRecipe

Check = Callable[[QuantRecipe], budget.Constraint]  # the binding limit of an allocation (margin >= 0: met)


@dataclass(frozen=True)
class Option:
    qtype: str
    damage: float
    cost: float  # decode bytes x the type's latency scale


@dataclass(frozen=True)
class Allocation:
    """recipe: the allocated QuantRecipe; damage: predicted KL to the dense model (nats/token); binding:
    the tightest device limit with this allocation (predicted)."""

    recipe: QuantRecipe
    damage: float
    file_bytes: int
    binding: budget.Constraint

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe.name, "predicted_kl": round(self.damage, 6), "file_bytes": self.file_bytes,
                "binding": self.binding.to_dict()}


Scales = Mapping[str, tuple[float, float]]  # ggml type → measured / predicted (decode ms, prompt tokens/s)


def options(st: Structure, sens: Any, scales: Scales | None = None) -> dict[str, list[Option]]:
    """Every tensor's measured types with their damage and cost."""
    out = {}
    for t in st.tensors():
        if t.name not in sens.errors:
            raise LatencyError(f"the sensitivity has no tensor {t.name}: it was measured on another model")
        reads_all = not (t.name == "token_embd.weight" and not st.tied_embeddings)  # an untied embedding: one row
        out[t.name] = [Option(q, sens.damage(t.name, q), _bytes(t, q) / (1 if reads_all else t.rows)
                              * (scales or {}).get(q, (1.0, 1.0))[0]) for q in sens.types(t.name)]
    return out


def _bytes(t: GGUFTensor, qtype: str) -> int:
    return GGUFTensor(t.name, t.shape, QT[qtype]).n_bytes


def allocate(st: Structure, sens: Any, check: Check, imatrix: bool = True, scales: Scales | None = None,
             iterations: int = 40) -> Allocation:
    """The allocation of least predicted damage that `check` accepts (LatencyError naming the best
    reachable figure when even the cheapest types miss)."""
    opts = options(st, sens, scales)
    recipe = lambda types: QuantRecipe.allocated(types, imatrix, register=False)  # noqa: E731
    cheapest = {n: min(o, key=lambda x: x.cost).qtype for n, o in opts.items()}
    worst = check(recipe(cheapest))
    if worst.margin < 0:
        raise LatencyError(f"no per-tensor allocation meets the budget: the cheapest types give {worst.describe()}")
    lo, hi = 0.0, 1.0
    while check(recipe(_pick(opts, hi))).margin < 0:
        lo, hi = hi, hi * 4
    if check(recipe(_pick(opts, 0.0))).margin >= 0:
        hi = 0.0
    for _ in range(iterations if hi > 0 else 0):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if check(recipe(_pick(opts, mid))).margin >= 0 else (mid, hi)
    types = _fill(opts, _pick(opts, hi), lambda t: check(recipe(t)).margin >= 0)
    final = QuantRecipe.allocated(types, imatrix)
    damage = sum(sens.damage(n, q) for n, q in types.items())
    return Allocation(final, damage, st.gguf_bytes(final), check(final))


def fit(st: Structure, sens: Any, device: Any, budget_ms: float | None, scales: Scales | None = None,
        imatrix: bool = True, rounds: int = 3) -> Allocation:
    """allocate() under `device`'s limits; where its backend measures, the allocated file is measured and,
    on a miss, every type's scale multiplied by measured / predicted and the allocation solved again
    (LatencyError after `rounds` misses, naming the measured figure)."""
    scales = dict(scales or {})
    for _ in range(rounds):
        alloc = allocate(st, sens, device_check(st, device, budget_ms, scales), imatrix, scales)
        if not device.measures:
            return alloc
        lat = device.latency_of(st, alloc.recipe)
        checks = _constraints(st, device, alloc.recipe, lat, budget_ms)
        if all(c.ok for c in checks):
            return dataclasses.replace(alloc, binding=budget.binding(checks))
        cal = Calibration.of(lat, scaled_report(st, device, alloc.recipe, scales))
        scales = {t: (scales.get(t, (1.0, 1.0))[0] * cal.decode, scales.get(t, (1.0, 1.0))[1] * cal.prefill)
                  for t in {q for n in sens.errors for q in sens.errors[n]}}
    raise LatencyError(f"no per-tensor allocation met the budget as measured after {rounds} rounds: "
                       f"{budget.binding(checks).describe()}")


def _pick(opts: dict[str, list[Option]], lam: float) -> dict[str, str]:
    """Each tensor's type minimising damage + lam x cost (cost in MB)."""
    return {n: min(o, key=lambda x: (x.damage + lam * x.cost / 1e6, x.cost)).qtype for n, o in opts.items()}


def _fill(opts: dict[str, list[Option]], types: dict[str, str], ok: Callable[[dict[str, str]], bool]) -> dict[str, str]:
    """Greedy: try upgrades in order of damage saved per unit of extra cost; keep those that still fit."""
    now = {n: next(o for o in opts[n] if o.qtype == q) for n, q in types.items()}
    moves = [(n, o) for n, cur in now.items() for o in opts[n] if o.damage < cur.damage]
    moves.sort(key=lambda m: -(now[m[0]].damage - m[1].damage) / max(m[1].cost - now[m[0]].cost, 1e-9))
    out = dict(types)
    for n, o in moves:
        cur = now[n]
        if o.damage >= cur.damage:
            continue
        trial = {**out, n: o.qtype}
        if o.cost <= cur.cost or ok(trial):
            out, now[n] = trial, o
    return out


def device_check(st: Structure, device: Any, budget_ms: float | None, scales: Scales | None = None) -> Check:
    """The binding limit of `device` (its profile's limits, `budget_ms` for decode) for `st` at an
    allocation, predicted with the latency scales (measured / predicted: decode, prompt) of its tensor
    types weighted by their bytes (1.0 where none was measured)."""

    def check(r: QuantRecipe) -> budget.Constraint:
        return budget.binding(_constraints(st, device, r, scaled_report(st, device, r, scales or {}), budget_ms))

    return check


def _constraints(st: Structure, device: Any, r: QuantRecipe, report: Any, budget_ms: float | None) -> list[budget.Constraint]:
    """Every limit of `device`'s profile checked on `report` and `st`'s RAM at `r`."""
    return budget.constraints(report, budget.ram_of(st, r, device.profile), device.profile, budget_ms)


def scaled_report(st: Structure, device: Any, r: QuantRecipe, scales: Scales) -> Any:
    """`device`'s roofline for `st` at `r` x the byte-weighted per-type scales."""
    return device.predictor(r).with_calibration(type_calibration(st, r, scales)).predict(st)


def type_calibration(st: Structure, r: QuantRecipe, scales: Scales) -> Calibration:
    """Byte-weighted mean of the per-type (decode, prompt) scales over `st`'s tensors at `r`."""
    if not scales:
        return Calibration()
    tensors = list(st.tensors(r))
    total = sum(t.n_bytes for t in tensors)
    dec = sum(t.n_bytes * scales.get(t.qtype.name, (1.0, 1.0))[0] for t in tensors) / total
    pre = sum(t.n_bytes * scales.get(t.qtype.name, (1.0, 1.0))[1] for t in tensors) / total
    return Calibration(dec, pre)
