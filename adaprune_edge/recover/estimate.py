"""The plan's estimate of a pruned candidate's quality after recovery: a measured gap-closure curve, not a
recovery run per candidate (recovery runs once, for the shipped recipe).

closure(tokens) is the share of the log-perplexity gap to the dense model that distillation closes after
`tokens` training tokens: ln(PPL_recovered) = ln(PPL_dense) + (1 - closure) x (ln(PPL_pruned) - ln(PPL_dense)).
The curve is bench/results/recovery.json's, for the build's default setting: recovery text builtin:self
(another seed), the default model pruned 25% of the decoder (structured OBS, sequential), perplexity on
builtin:self held-out records, the kind of text a default build's objective windows hold. The allowance in
tokens is --recover-tokens, or --recover-minutes x the measured CPU throughput (bench/results/recovery_speed.json;
a GPU is faster, so the estimate is conservative there). How well the curve predicts a build's own recovery is
in its report: `recovery.estimate` beside `report_ppl_before/after`."""

from __future__ import annotations

import bisect
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

# (training tokens, share of the log-PPL gap closed), mean of the 25.3% and 44% rows of
# `python3 bench/recovery.py --ratios 0.253,0.44 --sources self,wiki1` on self_heldout (per ratio:
# 0.219/0.244, 0.271/0.301, 0.313/0.348, 0.327/0.361: the two ratios agree within 0.035)
CURVE: tuple[tuple[int, float], ...] = ((0, 0.0), (25600, 0.232), (50176, 0.286), (100352, 0.33), (200704, 0.344))
CURVE_SOURCE = "bench/results/recovery.json (builtin:self text, self held-out PPL)"
CPU_TOKENS_PER_S = 320.8  # bench/results/recovery_speed.json: bf16 autocast, decoder, 4x256, teacher live, 2 cores


def allowance_tokens(spec: Any) -> int:
    """Tokens the build's recovery will train on: the token bound, the minutes bound at the measured CPU
    throughput, or the smaller of the two."""
    bounds = [b for b in (spec.recover_tokens, int(spec.recover_minutes * 60 * CPU_TOKENS_PER_S)) if b > 0]
    return min(bounds) if bounds else 0


def closure(tokens: int) -> float:
    """Share of the log-PPL gap closed after `tokens` (linear between measured points, flat after the last)."""
    xs = [t for t, _ in CURVE]
    if tokens >= xs[-1]:
        return CURVE[-1][1]
    i = bisect.bisect_right(xs, tokens)
    (t0, c0), (t1, c1) = CURVE[i - 1], CURVE[i]
    return c0 + (c1 - c0) * (tokens - t0) / (t1 - t0)


@dataclass(frozen=True)
class RecoveryEstimate:
    """A pruned candidate after `tokens` of recovery as the curve predicts it: the share of the log-PPL gap
    closed, the resulting perplexity, and the curve's source."""

    tokens: int
    closure: float
    ppl: float
    curve: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RecoveryEstimate":
        return cls(**d)


def recovered(spec: Any, pruned_ppl: float, dense_ppl: float) -> RecoveryEstimate | None:
    """The estimate for the build's allowance; None when the build does not recover."""
    tokens = allowance_tokens(spec)
    if tokens <= 0 or not math.isfinite(pruned_ppl):
        return None
    c = closure(tokens)
    gap = max(0.0, math.log(pruned_ppl) - math.log(dense_ppl))
    return RecoveryEstimate(tokens, round(c, 4), math.exp(math.log(pruned_ppl) - c * gap), CURVE_SOURCE)
