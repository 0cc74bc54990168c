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

import torch

from adaprune_edge.errors import ConfigError
from adaprune_edge.search.space import SpaceBounds, build_space, plain, to_prune_config
from adaprune_edge.search.trials import TrialRecord, TrialStore

PENALTY = 50.0  # cost told to SMAC for a structure that misses the budget (nats/token; any real loss is < 15)
OBJECTIVES = ("loss", "kl")
FACADES = ("hpo", "hyperband")


@dataclass(frozen=True)
class SearchSpec:
    """Everything a search depends on (and all a dask worker needs to rebuild its context).

    calib: calibration sources (files, 'builtin:NAME', hub names online; default builtin:self). val:
    held-out text; None = the tail (≥ `holdout` of the records) of the first calibration source
    (calibration then uses the rest). val_windows × val_seq_len: objective tokens; the next
    report_windows windows of the same held-out text are the report's (textsets.py: never seen by
    calibration or the objective). budget_ms overrides the profile's decode budget."""

    model: str
    profile: dict[str, Any]
    quant: str
    bounds: dict[str, Any]
    calib: tuple[str, ...] = ()
    val: str | None = None
    holdout: float = 0.2
    val_windows: int = 8
    val_seq_len: int = 512
    report_windows: int = 8
    objective: str = "loss"
    facade: str = "hpo"
    multi_objective: bool = False
    warm_start: bool = True
    budget_ms: float | None = None
    latency_scale: float = 1.0
    measure_trials: bool = False
    n_trials: int = 20
    walltime_s: float | None = None
    workers: int = 1
    seed: int = 0
    kind: str = "adaprune-edge/search-v1"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["calib"] = list(self.calib)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SearchSpec":
        d = dict(d)
        d["calib"] = tuple(d.get("calib", ()))
        return cls(**d)

    def check(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"unknown objective {self.objective!r}; known: {', '.join(OBJECTIVES)}")
        if self.facade not in FACADES:
            raise ConfigError(f"unknown facade {self.facade!r}; known: {', '.join(FACADES)}")
        if self.n_trials < 1 or self.val_windows < 1 or self.workers < 1:
            raise ConfigError("--trials, --val-windows and --workers must be at least 1")
        SpaceBounds.from_dict(self.bounds).check()


class SearchContext:
    """In-memory objects of one search process: dense model, calibration pools, validation windows,
    dense reference log-probs (for KL), importance cache, device profile."""

    def __init__(self, spec: SearchSpec, loaded: Any | None = None, progress: Any = None) -> None:
        from adaprune_edge import models
        from adaprune_edge.prune.importance import ImportanceCache
        from adaprune_edge.profiles import DeviceProfile

        self.spec = spec
        self.loaded = loaded or models.load(spec.model)
        self.model = self.loaded.model
        self.profile = DeviceProfile.from_dict(spec.profile)
        self.cache = ImportanceCache()
        self.bounds = SpaceBounds.from_dict(spec.bounds)
        self.progress = progress  # (done, total, note) while builtin:self generates (first time per model)
        self.pools, self.val = self._data()
        self._ref: dict[int, torch.Tensor] = {}

    def _data(self) -> tuple[list[Any], torch.Tensor]:
        """Calibration pools and objective windows; the report's windows are kept aside (textsets.py)."""
        from adaprune_edge.data import textsets
        from adaprune_edge.data.calibration import CalibrationPool

        tok, s, kw = self.loaded.tokenizer, self.spec, {"loaded": self.loaded, "progress": self.progress}
        need = (s.val_windows + s.report_windows) * s.val_seq_len
        self.split = textsets.plan_split(s.calib, s.val, s.holdout, tok, need, **kw)
        pools = [CalibrationPool.from_sources([src], tok, self.bounds.max_seq_len, rng, **kw) for src, rng in self.split.calib]
        val, self.report_windows = textsets.heldout_windows(self.split, tok, s.val_seq_len, s.val_windows,
                                                            s.report_windows, **kw)
        return pools, val

    def data_sets(self) -> dict[str, Any]:
        """The three disjoint sets (source, part, windows, tokens) for report.json."""
        from adaprune_edge.data import textsets

        return textsets.describe(self.split, sum(len(p) for p in self.pools), self.bounds.max_seq_len, self.val,
                                 self.report_windows)

    def calibration(self, cfg: Any, weights: list[float]) -> Any:
        """The calibration input of prune(): the pool itself, or a weighted mix of windows."""
        if len(self.pools) == 1:
            return self.pools[0]
        parts = []
        for i, (pool, w) in enumerate(zip(self.pools, weights)):
            n = round(w * cfg.n_samples)
            if n > 0:
                p = pool.with_seq_len(cfg.seq_len)
                parts.append(p.windows[p.sample(n, cfg.sampling, cfg.seed + i, self.model)])
        return torch.cat(parts) if parts else self.pools[0]

    def evaluate(self, index: int, values: dict[str, Any], fidelity: int | None = None) -> TrialRecord:
        """Run one trial: prune a copy, check the budget, score on held-out windows."""
        from adaprune_edge.latency.budget import budget_ok, ffn_align
        from adaprune_edge.prune.engine import prune

        t0 = time.perf_counter()
        cfg, weights = to_prune_config(values, ffn_align(self.spec.quant), self.spec.seed)
        res = prune(self.model, self.calibration(cfg, weights), cfg, cache=self.cache)
        report = self._latency(res.structure)
        if not report.measured and self.spec.latency_scale != 1.0:  # roofline calibrated to a measurement on this device
            report = dataclasses.replace(report, decode_ms_per_token=report.decode_ms_per_token * self.spec.latency_scale,
                                         prefill_tps=report.prefill_tps / self.spec.latency_scale)
        ok, reason = budget_ok(res.structure, self.profile, self.spec.quant, report, self.spec.budget_ms)
        n_val = min(fidelity or len(self.val), len(self.val))
        loss = ppl = kl = None
        if ok:
            loss, kl = self._score(res.model, n_val)
            ppl = math.exp(loss)
        cost = (kl if self.spec.objective == "kl" else loss) if ok else PENALTY
        return TrialRecord(index, values, "ok" if ok else "violates", float(cost), loss, ppl, kl,
                           res.decoder_ratio, res.total_ratio, res.params_after, report.decode_ms_per_token,
                           report.prefill_tps, reason, res.structure.to_dict(), cfg.to_dict(), n_val,
                           time.perf_counter() - t0, res.cache_hit)

    def _latency(self, structure: Any) -> Any:
        """Measured with the device's backend when measure_trials (shape-only GGUF, cached per structure),
        else predicted by the roofline."""
        from adaprune_edge.search.plan import measurer
        from adaprune_edge.latency.roofline import predict

        measure = measurer(self.profile, self.spec.quant) if self.spec.measure_trials else None
        return measure(structure) if measure else predict(structure, self.spec.quant, self.profile)

    @torch.no_grad()
    def _score(self, model: Any, n_val: int) -> tuple[float, float | None]:
        """Mean next-token NLL (nats) and, for the KL objective, mean KL(dense ‖ pruned) per token."""
        nll_sum, kl_sum, count = 0.0, 0.0, 0
        for i in range(n_val):
            w = self.val[i: i + 1]
            logp = torch.log_softmax(model(input_ids=w, use_cache=False).logits.float()[0, :-1], dim=-1)
            nll_sum += -logp.gather(1, w[0, 1:, None]).sum().item()
            count += w.shape[1] - 1
            if self.spec.objective == "kl":
                ref = self._reference(i)
                kl_sum += (ref.exp() * (ref - logp)).sum().item()
        return nll_sum / count, (kl_sum / count if self.spec.objective == "kl" else None)

    def _reference(self, i: int) -> torch.Tensor:
        """Dense log-probs of validation window i (kept in float16 to bound memory)."""
        if i not in self._ref:
            logits = self.model(input_ids=self.val[i: i + 1], use_cache=False).logits.float()[0, :-1]
            self._ref[i] = torch.log_softmax(logits, dim=-1).half()
        return self._ref[i].float()


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


def warm_start_configs(space: Any, bounds: SpaceBounds) -> list[Any]:
    """Published fixed recipes at the smallest feasible ratio, so the search starts from the best of them:
    LLM-Pruner-like taylor/uniform, Wanda-sp, FLAP-like fluctuation/global + bias compensation; and
    taylor/uniform with least-squares reconstruction (ours)."""
    from ConfigSpace import Configuration

    base = dict(space.get_default_configuration())
    recipes = [dict(metric="taylor", allocation="uniform"), dict(metric="wanda", allocation="uniform"),
               dict(metric="fluctuation", allocation="global", bias_compensation=True),
               dict(metric="taylor", allocation="uniform", reconstruction=True, recon_damp=0.3)]
    return [Configuration(space, values={**base, **r, "ratio": bounds.r_min}) for r in recipes]


def make_optimizer(spec: SearchSpec, space: Any, out: Path) -> Any:
    """SMAC facade for the spec (HPO or Hyperband; ParEGO when multi-objective). Output under `out`."""
    from smac import HyperparameterOptimizationFacade as HPO
    from smac import MultiFidelityFacade as MF

    scenario = _scenario(spec, space, out)
    facade = MF if spec.facade == "hyperband" else HPO
    extra = warm_start_configs(space, SpaceBounds.from_dict(spec.bounds)) if spec.warm_start else []
    n_init = max(1, min(5, spec.n_trials // 4))
    extra = extra[: max(0, spec.n_trials - n_init)]
    init = facade.get_initial_design(scenario, n_configs=n_init, additional_configs=extra)
    kw: dict[str, Any] = dict(initial_design=init, overwrite=True, logging_level=logging.ERROR)
    if spec.multi_objective:
        kw["multi_objective_algorithm"] = facade.get_multi_objective_algorithm(scenario, objective_weights=[1, 1])
    if spec.facade == "hpo":
        kw["intensifier"] = HPO.get_intensifier(scenario, max_config_calls=1)
    return facade(scenario, lambda config, seed=0, budget=None: 0.0, **kw)


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
    """All trials of the run (old and new), the best feasible one, and the Pareto front (loss vs ms)."""

    records: list[TrialRecord]
    best: TrialRecord | None
    pareto: list[TrialRecord] = field(default_factory=list)
    new_trials: int = 0


def best_record(records: list[TrialRecord]) -> TrialRecord | None:
    """Lowest-cost feasible trial at the highest fidelity seen."""
    ok = [r for r in records if r.feasible]
    if not ok:
        return None
    top = max(r.fidelity for r in ok)
    return min((r for r in ok if r.fidelity == top), key=lambda r: r.cost)


def pareto_front(records: list[TrialRecord]) -> list[TrialRecord]:
    """Feasible trials no other feasible trial beats on both cost and decode ms."""
    ok = sorted((r for r in records if r.feasible), key=lambda r: (r.decode_ms, r.cost))
    front, best = [], math.inf
    for r in ok:
        if r.cost < best:
            front.append(r)
            best = r.cost
    return front


def _key(values: dict[str, Any]) -> tuple:
    return tuple(sorted((k, round(v, 9) if isinstance(v, float) else v) for k, v in values.items()))


def run_search(spec: SearchSpec, run_dir: Path, *, resume: bool = False, force: bool = False,
               evaluator: Any = None,
               on_trial: Callable[[TrialRecord, list[TrialRecord]], None] | None = None) -> SearchOutcome:
    """Run (or continue) a search until spec.n_trials trials are finished or walltime runs out."""
    spec.check()
    store = TrialStore(run_dir)
    records = store.open(spec.to_dict(), resume, force)
    space = build_space(SpaceBounds.from_dict(spec.bounds), spec.seed)
    opt = make_optimizer(spec, space, Path(run_dir) / "smac")
    _replay(opt, spec, space, records)
    if evaluator is None:
        from adaprune_edge.search.evaluators import LocalEvaluator

        evaluator = LocalEvaluator(spec)
    seen = {_key(r.values) for r in records}
    start, new, idle = time.monotonic(), 0, 0
    pending: dict[Any, Any] = {}
    try:
        while len(records) + len(pending) < spec.n_trials or pending:
            out_of_time = spec.walltime_s is not None and time.monotonic() - start > spec.walltime_s
            while not out_of_time and len(pending) < evaluator.slots and len(records) + len(pending) < spec.n_trials:
                info = opt.ask()
                values = plain(info.config)
                if _key(values) in seen:  # never evaluate a configuration twice
                    old = next(r for r in records if _key(r.values) == _key(values))
                    _tell(opt, spec, info, old)
                    idle += 1
                    if idle > 50:
                        break
                    continue
                seen.add(_key(values))
                fidelity = int(round(info.budget)) if info.budget else None
                pending[evaluator.submit(len(records) + len(pending), values, fidelity)] = info
            if not pending:
                break
            handle, rec = evaluator.next_done(list(pending))
            info = pending.pop(handle)
            _tell(opt, spec, info, rec)
            store.append(rec)
            records.append(rec)
            new += 1
            if on_trial:
                on_trial(rec, records)
    finally:
        evaluator.cancel(list(pending))
        if records:
            store.write_csv(records)
    return SearchOutcome(records, best_record(records), pareto_front(records), new)
