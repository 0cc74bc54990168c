"""SMAC Bayesian search over calibration samples, importance metrics and allocation (AdaPruner),
constrained by the device's latency budget.

Three readable pieces: the space (searchspace.build_space), the objective (SearchContext.evaluate:
prune a copy in memory → validation loss or KL on held-out windows), the constraint (budget.budget_ok on
the trial's actual Structure; violators are told to SMAC as crashed with a penalty cost, never accepted).
SMAC is driven through ask/tell; finished trials live in the run directory (trials.py), and --resume
replays them into a fresh optimizer instead of trusting SMAC's own (interactive) resume. Trials run
in-process, or on dask workers that each load the model once (evaluators.py)."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from adaprune_edge.search.space import SpaceBounds, build_space, plain
from adaprune_edge.search.warmstart import warm_start_configs
from adaprune_edge.search.evaluators import LocalEvaluator
from adaprune_edge.search.spec import SearchSpec, family_bounds
from adaprune_edge.search.trials import TrialRecord, TrialStore
from adaprune_edge.search.race import Race, beats
from adaprune_edge.search.rescore import Rescored, chosen_trial, full_trials, ranked, rescore_top

# -- SMAC ---------------------------------------------------------------------------------------------
def _scenario(spec: SearchSpec, space: Any, out: Path) -> Any:
    from smac import Scenario

    kw: dict[str, Any] = dict(deterministic=True, n_trials=spec.n_trials, seed=spec.seed,
                              output_directory=out, name="smac")
    if spec.multi_objective:
        kw["objectives"] = ["loss", "decode_ms"]
    if spec.facade == "hyperband":
        kw.update(min_budget=max(1, spec.val_windows // 4), max_budget=spec.val_windows)
    return Scenario(space, **kw)


def search_bounds(spec: SearchSpec) -> SpaceBounds:
    """The spec's bounds, restricted to uniform structures for uniform-only families (spec.family_bounds)."""
    return family_bounds(spec.bounds, spec.model)


def make_optimizer(spec: SearchSpec, space: Any, bounds: SpaceBounds, out: Path) -> Any:
    """SMAC facade for the spec (HPO or Hyperband; ParEGO when multi-objective). Output under `out`."""
    from smac import HyperparameterOptimizationFacade as HPO
    from smac import MultiFidelityFacade as MF

    scenario = _scenario(spec, space, out)
    facade = MF if spec.facade == "hyperband" else HPO
    extra = warm_start_configs(space, bounds) if spec.warm_start else []
    # the warm starts are the initial design (SMAC's model starts from them); random points only without them
    n_init = 0 if extra else max(1, min(5, spec.n_trials // 4))
    extra = extra[: max(1, spec.n_trials - n_init)]
    init = _warm_first(facade.get_initial_design(scenario, n_configs=n_init, additional_configs=extra), extra)
    kw: dict[str, Any] = dict(initial_design=init, overwrite=True, logging_level=logging.ERROR)
    if spec.multi_objective:
        kw["multi_objective_algorithm"] = facade.get_multi_objective_algorithm(scenario, objective_weights=[1, 1])
    if spec.facade == "hpo":
        kw["intensifier"] = HPO.get_intensifier(scenario, max_config_calls=1)
    return facade(scenario, lambda config, seed=0, budget=None: 0.0, **kw)


def _warm_first(design: Any, warm: list[Any]) -> Any:
    """SMAC lists its own initial configurations before the additional (`warm`) ones; reverse that."""
    select, extra = design.select_configurations, set(warm)

    def warm_first() -> list[Any]:
        configs = select()
        return [c for c in configs if c in extra] + [c for c in configs if c not in extra]

    design.select_configurations = warm_first
    return design


def _tell(opt: Any, spec: SearchSpec, info: Any, rec: TrialRecord) -> None:
    from smac.runhistory.dataclasses import TrialValue
    from smac.runhistory.enumerations import StatusType

    cost: Any = [rec.cost, rec.decode_ms] if spec.multi_objective else rec.cost
    status = StatusType.SUCCESS if rec.feasible else StatusType.CRASHED
    opt.tell(info, TrialValue(cost=cost, time=rec.seconds, status=status), save=False)


def _replay(opt: Any, spec: SearchSpec, space: Any, records: list[TrialRecord]) -> None:
    from ConfigSpace import Configuration
    from smac.runhistory.dataclasses import TrialInfo

    for rec in records:
        budget = float(rec.fidelity) if spec.facade == "hyperband" else None
        info = TrialInfo(Configuration(space, values=rec.values), seed=spec.seed, budget=budget)
        _tell(opt, spec, info, rec)


@dataclass
class SearchOutcome:
    """All trials of the run (old and new), the best feasible one (after re-scoring the top ones), the
    Pareto front (loss vs ms), the re-scored trials, and why the search stopped ('trials': n_trials done,
    'walltime', 'stalled': `patience` trials in a row without a real improvement, race.py)."""

    records: list[TrialRecord]
    best: TrialRecord | None
    pareto: list[TrialRecord] = field(default_factory=list)
    new_trials: int = 0
    rescored: list[Rescored] = field(default_factory=list)
    stopped: str = "trials"

    def ranked(self) -> list[TrialRecord]:
        """Feasible trials best first (rescore.ranked)."""
        return ranked(self.records, self.rescored)

    @property
    def seconds(self) -> float:
        """What the search cost: every trial's wall seconds plus the re-scoring's."""
        return sum(r.seconds for r in self.records) + sum(r.seconds for r in self.rescored)

    def best_warm(self) -> TrialRecord | None:
        """The best feasible warm-start trial (what the search bought: best vs this)."""
        warm = [r for r in ranked(self.records, self.rescored) if r.origin == "warm"]
        return warm[0] if warm else None

    def cost(self) -> dict[str, Any]:
        """What the search cost (seconds, trials, why it stopped, trials raced out) and bought: the chosen
        trial's cost vs the best warm start's (nats/token on the objective windows; negative = better)."""
        full = max((r.fidelity for r in self.records if r.feasible), default=0)
        warm, best = self.best_warm(), self.best
        about = lambda r: {"index": r.index, "cost": r.cost, "recipe": r.summary()} if r else None  # noqa: E731
        return {"seconds": round(self.seconds, 1), "trials": len(self.records), "stopped": self.stopped,
                "raced_out": sum(1 for r in self.records if r.feasible and r.fidelity < full),
                "chosen": about(best), "best_warm_start": about(warm),
                "chosen_minus_best_warm": best.cost - warm.cost if best and warm else None}


def pareto_front(records: list[TrialRecord]) -> list[TrialRecord]:
    """Feasible trials no other feasible trial beats on both cost and decode ms."""
    ok = sorted((r for r in records if r.feasible), key=lambda r: (r.decode_ms, r.cost))
    front, best = [], math.inf
    for r in ok:
        if r.cost < best:
            front.append(r)
            best = r.cost
    return front


def _key(values: dict[str, Any], fidelity: int | None = None) -> tuple:
    """A trial's identity: its point and fidelity (hyperband evaluates one point at rising fidelities)."""
    point = tuple(sorted((k, round(v, 9) if isinstance(v, float) else v) for k, v in values.items()))
    return point, fidelity


def _race(spec: SearchSpec, records: list[TrialRecord]) -> Race | None:
    """What the next trial races against: the incumbent's window costs and the top-k threshold for re-scoring
    at trial time (None for hyperband, whose fidelities differ)."""
    if spec.facade == "hyperband":
        return None
    full = sorted(full_trials(records), key=lambda r: r.cost)
    below = full[spec.rescore_top - 1].cost if spec.rescore_top and len(full) >= spec.rescore_top else math.inf
    pick = chosen_trial(records)
    return Race(full[0].window_costs if full else (), below if spec.rescore_top else -math.inf,
                choice=pick.window_costs if pick is not None else ())


def stalled_for(records: list[TrialRecord]) -> int:
    """Trials in a row, since the last warm start, that did not beat the incumbent of their time by more than
    the paired noise of the objective windows (race.beats); replayed from the records, so a resumed search
    counts as the uninterrupted one did."""
    stall, best = 0, None
    for r in records:
        real = r.feasible and r.window_costs and (best is None or (len(r.window_costs) == len(best.window_costs)
                                                                   and beats(r.window_costs, best.window_costs)))
        if r.origin != "smac":  # a warm start, or a trial recorded before origins were
            stall = 0
        else:
            stall = 0 if real else stall + 1
        if r.feasible and r.window_costs and (best is None or (len(r.window_costs) >= len(best.window_costs)
                                                               and r.cost < best.cost)):
            best = r
    return stall


def run_search(spec: SearchSpec, run_dir: Path, *, resume: bool = False, force: bool = False,
               evaluator: Any = None,
               on_trial: Callable[[TrialRecord, list[TrialRecord]], None] | None = None) -> SearchOutcome:
    """Run (or continue) a search until spec.n_trials trials are finished, walltime runs out or `patience`
    trials in a row past the warm starts brought no real improvement, then re-score its top trials on more
    held-out windows (rescore.py) and choose the best."""
    spec.check()
    store = TrialStore(run_dir)
    records = store.open(spec.to_dict(), resume, force)
    bounds = search_bounds(spec)  # reads the model's header: once per search
    space = build_space(bounds, spec.seed, spec.searched_quants())
    opt = make_optimizer(spec, space, bounds, Path(run_dir) / "smac")
    warm = {_key(plain(c)) for c in warm_start_configs(space, bounds)} if spec.warm_start else set()
    _replay(opt, spec, space, records)
    if evaluator is None:
        evaluator = LocalEvaluator(spec)
    hb = spec.facade == "hyperband"
    seen = {_key(r.values, r.fidelity if hb else None) for r in records}
    start, new, idle, stopped = time.monotonic(), 0, 0, "trials"
    pending: dict[Any, Any] = {}
    try:
        while len(records) + len(pending) < spec.n_trials or pending:
            out_of_time = spec.walltime_s is not None and time.monotonic() - start > spec.walltime_s
            # hyperband scores trials at several fidelities: no paired comparison on the same windows
            stop = spec.patience and not hb and stalled_for(records) >= spec.patience
            stopped = "walltime" if out_of_time else "stalled" if stop else stopped
            while not (out_of_time or stop) and len(pending) < evaluator.slots and len(records) + len(pending) < spec.n_trials:
                info = opt.ask()
                values = plain(info.config)
                fidelity = int(round(info.budget)) if info.budget else None
                key = _key(values, fidelity if hb else None)
                if key in seen:  # never evaluate a configuration twice (at one fidelity)
                    old = next((r for r in records if _key(r.values, r.fidelity if hb else None) == key), None)
                    if old is not None:  # (None: asked again while still pending)
                        _tell(opt, spec, info, old)
                    idle += 1
                    if idle > 50:
                        break
                    continue
                seen.add(key)
                pending[evaluator.submit(len(records) + len(pending), values, fidelity, _race(spec, records))] = info
            if not pending:
                break
            handle, rec = evaluator.next_done(list(pending))
            info = pending.pop(handle)
            rec = dataclasses.replace(rec, origin="warm" if _key(rec.values) in warm else "smac")
            _tell(opt, spec, info, rec)
            store.append(rec)
            records.append(rec)
            new += 1
            if on_trial:
                on_trial(rec, records)
        if stopped == "trials" and spec.patience and not hb and stalled_for(records) >= spec.patience:
            stopped = "stalled"  # a resumed search that had stopped on a stall says so
    finally:
        evaluator.cancel(list(pending))
        if records:
            store.write_csv(records)
    rescored = rescore_top(evaluator, records, run_dir, spec.rescore_top, spec.rescore_windows)
    order = ranked(records, rescored)
    return SearchOutcome(records, order[0] if order else None, pareto_front(records), new, rescored, stopped)
