"""Re-scoring the search's top trials before one is chosen.

The lowest trial cost of a search may be biased low: with a few objective windows and a dozen near-equal
recipes, the trial that wins on them may partly be the one the windows happened to favour. So the
`rescore_top` trials with the lowest cost are scored on up to `rescore_windows` more held-out windows,
taken after the report's (the report stays unseen); the best is the lowest token-weighted mean of both
scores. A trial that was within the top `rescore_top` when it finished was scored on them right then, its
pruned model still in memory (race.py, TrialRecord.rescore_cost): every final top trial was (the top only
gets better), so nothing is pruned twice. Trials recorded before that are pruned again (same recipe, ratio
and calibration) and scored. Results go to rescored.jsonl in the run directory (appended, fsynced), so a
killed run re-scores only what is missing.
Measured on the headline bench (bench/results/search_vs_fixed_fair32r.json): in all 6 searches the trial
with the lowest cost on 4 objective windows was also the best of the top 3 on 8 re-scoring windows, so
there the choice was already stable and re-scoring changed none.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaprune_edge.runs import append_json_line
from adaprune_edge.search import race
from adaprune_edge.search.trials import TrialRecord

RESCORED_FILE = "rescored.jsonl"


@dataclass(frozen=True)
class Rescored:
    """One re-scored trial: its cost on its own objective windows and on the re-scoring windows."""

    index: int
    cost: float
    windows: int
    rescore_cost: float
    rescore_windows: int
    same_structure: bool
    seconds: float
    asked: int  # the spec's rescore_windows (fewer are used when the held-out text has fewer left)

    @property
    def combined(self) -> float:
        """Token-weighted mean cost over the trial's objective windows and the re-scoring windows."""
        return (self.cost * self.windows + self.rescore_cost * self.rescore_windows) / (self.windows + self.rescore_windows)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "combined": self.combined}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Rescored":
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls)})


def top_trials(records: list[TrialRecord], k: int) -> list[TrialRecord]:
    """The k feasible trials of the highest fidelity seen with the lowest cost."""
    ok = [r for r in records if r.feasible]
    if not ok or k <= 0:
        return []
    top = max(r.fidelity for r in ok)
    return sorted((r for r in ok if r.fidelity == top), key=lambda r: r.cost)[:k]


def load(run_dir: Path, rescore_windows: int) -> dict[int, Rescored]:
    """Re-scored trials on disk (by trial index), those scored on `rescore_windows` windows only."""
    path = Path(run_dir) / RESCORED_FILE
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        try:
            r = Rescored.from_dict(json.loads(line))
        except (ValueError, KeyError, TypeError):
            continue  # a torn line from a kill: that trial is simply re-scored
        if r.asked == rescore_windows:
            out[r.index] = r
    return out


def of_run(run_dir: Path) -> list[Rescored]:
    """The re-scored trials of a run directory, at the windows its search.json asked for."""
    path = Path(run_dir) / "search.json"
    spec = json.loads(path.read_text()) if path.exists() else {}
    if not spec.get("rescore_top"):
        return []
    return list(load(run_dir, spec.get("rescore_windows", 0)).values())


def rescore_top(evaluator: Any, records: list[TrialRecord], run_dir: Path, k: int, windows: int) -> list[Rescored]:
    """Re-score the k best trials (those already on disk are kept; those scored at trial time are not pruned
    again); [] when k or windows is 0."""
    if k <= 0 or windows <= 0:
        return []
    done, out = load(run_dir, windows), []
    for rec in top_trials(records, k):
        if rec.index not in done:
            if rec.rescore_windows:  # scored at trial time (race.py)
                cost, used, same, seconds = rec.rescore_cost, rec.rescore_windows, True, 0.0
            else:
                cost, used, same, seconds = evaluator.rescore(rec)
            if used == 0:
                return []  # the held-out text has no windows left after the report's
            done[rec.index] = Rescored(rec.index, rec.cost, rec.fidelity, cost, used, same, seconds, windows)
            append_json_line(Path(run_dir) / RESCORED_FILE, done[rec.index].to_dict())
        out.append(done[rec.index])
    return out


def full_trials(records: list[TrialRecord]) -> list[TrialRecord]:
    """Feasible trials scored on every objective window (not raced out), in the order they ran."""
    top = max((len(r.window_costs) for r in records if r.feasible), default=0)
    return [r for r in records if r.feasible and r.window_costs and len(r.window_costs) == top]


def chosen_trial(records: list[TrialRecord]) -> TrialRecord | None:
    """The search's choice among the full trials (race.chosen); None when there is none."""
    full = full_trials(records)
    pick = race.chosen([r.window_costs for r in full])
    return full[pick] if pick is not None else None


def ranked(records: list[TrialRecord], rescored: list[Rescored]) -> list[TrialRecord]:
    """Feasible trials best first: the search's choice (race.chosen: replaced only by a trial that beats it
    beyond the objective windows' noise), then the re-scored ones by their combined cost, then the others by
    fidelity (highest first) and cost."""
    by = {r.index: r for r in rescored}
    ok = [r for r in records if r.feasible]
    pick = chosen_trial(records)
    head = [pick] if pick is not None else []
    first = sorted((r for r in ok if r.index in by and r not in head), key=lambda r: by[r.index].combined)
    rest = sorted((r for r in ok if r.index not in by and r not in head), key=lambda r: (-r.fidelity, r.cost))
    return head + first + rest
