"""Latency budget: does a Structure fit a device, and what is the smallest pruning ratio that makes it fit.

A recipe family maps a ratio in [0, max_ratio] to a Structure by shape arithmetic alone (no weights).
The solver bisects the ratio on a recipe's Predictor (the calibrated roofline, microseconds a step), then,
when asked to confirm and the device's backend measures, confirms the answer on a shape-only GGUF and moves
up by bisection on measurements if needed."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from gguf import GGML_QUANT_SIZES

from adaprune_edge.errors import LatencyError
from adaprune_edge.runtime import kvcache
from adaprune_edge.latency.backends import LatencyReport
from adaprune_edge.registry import Registry
from adaprune_edge.latency.predictor import Predictor
from adaprune_edge.latency.roofline import predict
from adaprune_edge.quant import QuantRecipe
from adaprune_edge.archs.structure import LayerShape, Structure

RUNTIME_BYTES = 64 * 1024**2  # llama.cpp buffers beyond weights, K/V cache and K·Q scratch: 53 MiB measured
# with an 8192-token context filled (bench/kv_cache.py, Q8_0 cache), plus headroom
SCRATCH_FACTOR = 1.5  # K·Q scores and their softmax, which ggml's allocator overlaps in part (fitted there)
UBATCH = 512  # llama.cpp's default micro-batch (n_ubatch): prompt tokens processed at once
RECIPES: Registry[Callable[[Structure, float, QuantRecipe], Structure]] = Registry("recipe family")


def ffn_align(quant: QuantRecipe) -> int:
    """FFN width multiple that keeps ffn_down's rows in the quant's block (256 for K-quants, else 32)."""
    # with a deliberate 32-block fall-back (fb=), widths off the 256 grid cost no extra bits
    return 256 if GGML_QUANT_SIZES[quant.base_type][0] == 256 and not quant.fallback else 32


def _shrink(s: LayerShape, ratio: float, align: int) -> LayerShape:
    rep = s.n_head // s.n_head_kv
    q_per = max(1, round(rep * (1 - ratio)))  # drop query heads inside every KV group alike
    n_ff = s.n_ff if ratio == 0 else max(align, int(round(s.n_ff * (1 - ratio) / align)) * align)
    return LayerShape(q_per * s.n_head_kv, s.n_head_kv, min(n_ff, s.n_ff))


@RECIPES.register("uniform", help="every layer keeps the same share of heads and FFN width")
def uniform(base: Structure, ratio: float, quant: QuantRecipe) -> Structure:
    """Every layer keeps (1 - ratio) of its query heads per KV group and of its FFN width (aligned)."""
    if not 0 <= ratio < 1:
        raise LatencyError(f"pruning ratio must be in [0, 1), got {ratio}")
    layers = tuple(_shrink(s, ratio, ffn_align(quant)) for s in base.layers)
    return dataclasses.replace(base, layers=layers)


def kv_bytes(structure: Structure, context_length: int, kv_cache: str = "F16") -> int:
    """The K/V cache at context_length in the cache type's bytes."""
    return int(structure.kv_cache_bytes(context_length, 1) * kvcache.bytes_per_elem(kv_cache))


def scratch_bytes(structure: Structure, context_length: int, kv_cache: str = "F16") -> int:
    """Attention scratch: without flash attention (llama.cpp's default with an F16 cache) the K·Q scores of
    a micro-batch are materialised, context x min(context, UBATCH) x heads in F32; flash attention (needed
    by a quantized V cache) never holds them. Fitted by bench/kv_cache.py: at 8192 positions the F16 row's
    measured RSS matches weights + cache + this + RUNTIME_BYTES."""
    if kvcache.check(kv_cache) != "F16":
        return 0
    heads = max((s.n_head for s in structure.layers), default=0)
    return int(SCRATCH_FACTOR * context_length * min(context_length, UBATCH) * heads * 4)


def ram_bytes(structure: Structure, quant: QuantRecipe, context_length: int, kv_cache: str = "F16") -> int:
    """Memory to run with the context filled: GGUF weights + the K/V cache (of type kv_cache) at
    context_length + attention scratch + RUNTIME_BYTES, bytes."""
    return (structure.gguf_bytes(quant) + kv_bytes(structure, context_length, kv_cache)
            + scratch_bytes(structure, context_length, kv_cache) + RUNTIME_BYTES)


def ram_of(structure: Structure, quant: QuantRecipe, profile: Any) -> int:
    """ram_bytes at the profile's context length and K/V cache type."""
    return ram_bytes(structure, quant, profile.context_length, profile.kv_cache_type)


def ttft_s(report: LatencyReport, prompt_tokens: int) -> float:
    """Time to first token: the prompt at the report's prefill speed, then one decode step, seconds."""
    return prompt_tokens / report.prefill_tps + report.decode_ms_per_token / 1000.0


@dataclass(frozen=True)
class Constraint:
    """One stated limit against one figure. margin: relative headroom (limit/value - 1 for an upper limit,
    value/limit - 1 for a lower one): negative means missed; the smallest margin binds."""

    name: str
    value: float
    limit: float
    unit: str
    upper: bool = True  # value must be <= limit (False: >=)

    @property
    def margin(self) -> float:
        return self.limit / self.value - 1 if self.upper else self.value / self.limit - 1

    @property
    def ok(self) -> bool:
        return self.margin >= 0

    def describe(self) -> str:
        sign = ("<=" if self.ok else ">") if self.upper else (">=" if self.ok else "<")
        gap = abs(self.value / self.limit - 1)
        rel = "headroom" if self.ok else ("over" if self.upper else "short")
        return f"{self.name} {self.value:.4g} {self.unit} {sign} {self.limit:.4g} ({gap:.1%} {rel})"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": round(self.value, 4), "limit": round(self.limit, 4), "unit": self.unit,
                "upper": self.upper, "margin": round(self.margin, 4), "ok": self.ok}


def constraints(report: LatencyReport, ram: int, profile: Any, decode_ms: float | None = None) -> list[Constraint]:
    """Every limit the profile states, checked on `report` and `ram` bytes. decode_ms replaces the profile's
    decode limit (--budget-ms); the first-token, prompt-speed and memory limits always apply."""
    b, out = profile.budget, []
    limit = decode_ms if decode_ms is not None else b.decode_limit_ms
    if limit is not None:
        out.append(Constraint("decode", report.decode_ms_per_token, limit, "ms/token"))
    if b.ttft_s is not None:
        out.append(Constraint(f"time to first token ({b.prompt_tokens}-token prompt)",
                              ttft_s(report, b.prompt_tokens), b.ttft_s, "s"))
    if b.prefill_tps is not None:
        out.append(Constraint("prompt speed", report.prefill_tps, b.prefill_tps, "tok/s", upper=False))
    out.append(Constraint(f"RAM at {profile.context_length}-token context", ram / 2**20,
                          profile.usable_ram_bytes / 2**20, "MiB"))
    return out


def binding(checks: list[Constraint]) -> Constraint:
    """The constraint with the least headroom (the one that binds, or the worst miss)."""
    return min(checks, key=lambda c: c.margin)


def budget_ok(structure: Structure, profile: Any, quant: QuantRecipe | None = None, report: LatencyReport | None = None,
              decode_ms: float | None = None) -> tuple[bool, str]:
    """(fits, reason) for `structure` on a DeviceProfile: every stated limit (decode, time to first token,
    prompt speed, RAM with the KV cache at the profile's context length). Uses the roofline unless a
    (measured) `report` is given; `decode_ms` replaces the profile's decode limit."""
    quant = quant or profile.quant
    report = report or predict(structure, quant, profile)
    checks = constraints(report, ram_of(structure, quant, profile), profile, decode_ms)
    bad = [c.describe() for c in checks if not c.ok]
    if bad:
        return False, "; ".join(bad)
    return True, "ok: " + "; ".join(c.describe() for c in checks)


def tightened(profile: Any, margin: float) -> Any:
    """The profile with every latency limit `margin` stricter (headroom for measurement noise)."""
    b = profile.budget
    scale = lambda x, f: None if x is None else x * f  # noqa: E731
    return dataclasses.replace(profile, budget=dataclasses.replace(
        b, decode_ms_per_token=scale(b.decode_ms_per_token, 1 - margin), decode_tps=scale(b.decode_tps, 1 + margin),
        ttft_s=scale(b.ttft_s, 1 - margin), prefill_tps=scale(b.prefill_tps, 1 + margin)))


@dataclass(frozen=True)
class Solution:
    """Smallest ratio meeting the budget, its structure, the predicted and (if any) measured latency."""

    ratio: float
    structure: Structure
    predicted: LatencyReport
    measured: LatencyReport | None
    reason: str
    steps: int

    def to_dict(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "structure": self.structure.to_dict(), "predicted": self.predicted.to_dict(),
                "measured": self.measured.to_dict() if self.measured else None, "reason": self.reason,
                "steps": self.steps}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Solution":
        measured = LatencyReport.from_dict(d["measured"]) if d["measured"] else None
        return cls(d["ratio"], Structure.from_dict(d["structure"]), LatencyReport.from_dict(d["predicted"]), measured,
                   d["reason"], d["steps"])


def _bisect(ok: Callable[[float], bool], lo: float, hi: float, tol: float) -> tuple[float, int]:
    """Smallest r in (lo, hi] with ok(r), given not ok(lo) and ok(hi); within tol. Returns (r, steps)."""
    steps = 0
    while hi - lo > tol:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
        steps += 1
    return hi, steps


def _unreachable(family: str, ratio: float, st: Structure, report: LatencyReport, reason: str) -> LatencyError:
    return LatencyError(f"the budget cannot be met: even at the maximum ratio {ratio:.2f} ({family}) the best "
                        f"reachable is decode {report.decode_ms_per_token:.2f} ms/token, prefill "
                        f"{report.prefill_tps:.0f} tok/s ({'measured' if report.measured else 'predicted'}; {reason})")


def solve(base: Structure, profile: Any, predictor: Predictor | None = None, family: str = "uniform",
          max_ratio: float = 0.9, tol: float = 0.005, decode_ms: float | None = None,
          confirm: bool = False) -> Solution:
    """Smallest ratio of `family` whose structure meets the profile's budget (or `decode_ms`).

    Bisection on `predictor`'s calibrated roofline (default: the profile's roofline at its quant); then, with
    `confirm` where the predictor measures, one measurement confirms it, and if the measurement misses the
    budget, bisection on measured latency over [ratio, max_ratio] (tolerance 0.02).
    Raises LatencyError naming the best reachable figure when even max_ratio fails."""
    p = predictor or Predictor.of(profile)
    quant, make = p.quant, RECIPES.get(family)
    measure = p.measure if confirm and p.measures else None

    def check(r: float, report: LatencyReport | None = None) -> tuple[bool, str]:
        st = make(base, r, quant)
        return budget_ok(st, profile, quant, report or p.predict(st), decode_ms)

    top = make(base, max_ratio, quant)
    ok_top, why = check(max_ratio)
    if not ok_top and measure is None:
        raise _unreachable(family, max_ratio, top, p.predict(top), why)
    if not ok_top:  # the roofline may be pessimistic for this device: measurements decide
        ratio, measured, steps = _confirm_up(make, base, quant, 0.0, max_ratio, measure, check)
        st = make(base, ratio, quant)
        return Solution(ratio, st, p.roofline(st), measured, check(ratio, measured)[1], steps)
    ratio, steps = (0.0, 0) if check(0.0)[0] else _bisect(lambda r: check(r)[0], 0.0, max_ratio, tol)
    measured = None
    if measure is not None:
        measured = measure(make(base, ratio, quant))
        if not check(ratio, measured)[0]:
            ratio, measured, more = _confirm_up(make, base, quant, ratio, max_ratio, measure, check)
            steps += more
    st = make(base, ratio, quant)
    return Solution(ratio, st, p.roofline(st), measured, check(ratio, measured)[1], steps)


def _confirm_up(make: Callable, base: Structure, quant: QuantRecipe, ratio: float, max_ratio: float,
                measure: Callable[[Structure], LatencyReport], check: Callable) -> tuple[float, LatencyReport, int]:
    top = measure(make(base, max_ratio, quant))
    ok, why = check(max_ratio, top)
    if not ok:
        raise _unreachable("measured", max_ratio, make(base, max_ratio, quant), top, why)
    reports: dict[float, LatencyReport] = {max_ratio: top}

    def ok_measured(r: float) -> bool:
        reports[r] = measure(make(base, r, quant))
        return check(r, reports[r])[0]

    r, steps = _bisect(ok_measured, ratio, max_ratio, 0.02)
    return r, reports[r], steps + 1

