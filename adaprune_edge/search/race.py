"""Racing trials against the incumbent on the objective windows, and the noise that says when to stop.

Every trial is scored on the same objective windows, so two trials compare window by window: the noise of
"trial − incumbent" is the standard error of their per-window cost differences (paired: the windows' own
difficulty cancels). It is measured, per trial, from the windows both were scored on.

- A trial is **raced** while it is scored: after `min_windows` windows, once its mean paired difference to the
  incumbent exceeds `z` standard errors (it is clearly worse), the remaining windows are skipped and its
  cost is the incumbent's mean plus that difference (its fidelity: the windows it was scored on).
- A trial **improves** the incumbent only when it beats it by more than `z` standard errors; the search stops
  after `patience` trials in a row (past the warm starts) that did not (search/run.py).
- A trial whose cost is within the current top `rescore_top` is scored on the re-scoring windows at once,
  while its pruned model is still in memory (rescore.py): nothing is pruned twice.
- The search **chooses** the same way (`chosen`): walking the trials in the order they ran, the choice moves
  to a trial only when it beats the current one by more than `z` paired standard errors on the objective
  windows; a lower cost within the noise does not move it. The warm starts (the published recipes) run
  first, so a later trial must show it is better, not merely look better on a few windows. Measured on the
  search-cost bench (bench/results/search_cost.json): the lowest-cost trial, re-scored on 8 more windows of
  the same text, still lost up to 6% to the best fixed recipe on the report windows where it was not
  better than the warm start beyond this noise.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

Z = 2.0  # standard errors a paired difference must exceed to count as a real difference
MIN_WINDOWS = 2  # windows a trial is scored on before it can be raced out


def paired_se(a: Sequence[float], b: Sequence[float]) -> float:
    """Standard error of the mean of the per-window differences a − b over their common windows (inf with
    fewer than two)."""
    d = [x - y for x, y in zip(a, b)]
    if len(d) < 2:
        return math.inf
    return statistics.stdev(d) / math.sqrt(len(d))


def mean_diff(a: Sequence[float], b: Sequence[float]) -> float:
    d = [x - y for x, y in zip(a, b)]
    return sum(d) / len(d) if d else 0.0


def beats(new: Sequence[float], old: Sequence[float], z: float = Z) -> bool:
    """`new` is lower than `old` by more than z paired standard errors (per-window costs)."""
    return -mean_diff(new, old) > z * paired_se(new, old)


def chosen(costs: Sequence[Sequence[float]]) -> int | None:
    """Position of the chosen trial among full-fidelity per-window costs in the order the trials ran: the
    first, replaced only by a later one that `beats` the current choice (None for none)."""
    best = None
    for i, c in enumerate(costs):
        if best is None or beats(c, costs[best]):
            best = i
    return best


@dataclass(frozen=True)
class Race:
    """What a trial is scored against: the incumbent's per-window costs on the objective windows (the lowest
    cost so far: racing and stalls), the cost below which a finished trial is re-scored at once (the current
    k-th best; inf: always), and the chosen trial's per-window costs (`chosen`; a trial that beats them keeps
    its pruned model in memory, as the one the search will ship)."""

    incumbent: tuple[float, ...] = ()
    rescore_below: float = math.inf
    z: float = Z
    min_windows: int = MIN_WINDOWS
    choice: tuple[float, ...] = ()

    def becomes_choice(self, costs: Sequence[float]) -> bool:
        """A full-fidelity trial with these window costs becomes the search's choice (`chosen`)."""
        return not self.choice or beats(costs, self.choice, self.z)

    def clearly_worse(self, costs: Sequence[float]) -> bool:
        """After these windows, the trial is worse than the incumbent by more than z paired standard errors."""
        n = len(costs)
        if n < self.min_windows or n > len(self.incumbent):
            return False
        return mean_diff(costs, self.incumbent) > self.z * paired_se(costs, self.incumbent)

    def estimate(self, costs: Sequence[float]) -> float:
        """A raced-out trial's cost: the incumbent's mean over all windows plus the paired difference so far."""
        return sum(self.incumbent) / len(self.incumbent) + mean_diff(costs, self.incumbent)

    def to_dict(self) -> dict:
        return {"incumbent": list(self.incumbent), "rescore_below": self.rescore_below, "z": self.z,
                "min_windows": self.min_windows, "choice": list(self.choice)}

    @classmethod
    def from_dict(cls, d: dict) -> "Race":
        return cls(tuple(d["incumbent"]), d["rescore_below"], d["z"], d["min_windows"], tuple(d.get("choice", ())))
