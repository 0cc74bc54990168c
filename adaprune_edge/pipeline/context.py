"""BuildContext: what the stages of one `build` share — the spec, the run directory, the device, the
typed results of finished stages, and the expensive objects loaded once (dense model, search data)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from adaprune_edge import heap, models
from adaprune_edge.pipeline.results import Plan
from adaprune_edge.pipeline.state import BuildState
from adaprune_edge.device import Device
from adaprune_edge.latency import budget
from adaprune_edge.quant import QuantRecipe
from adaprune_edge.search.plan import MEASURE_MARGIN
from adaprune_edge.search.objective import SearchContext
from adaprune_edge.search.space import SpaceBounds
from adaprune_edge.recover import estimate
from adaprune_edge.search.spec import SearchSpec, family_bounds


@dataclass
class BuildContext:
    """spec: build.BuildSpec; run: build.RunDir; hooks: build.Hooks; state: the typed results of every
    finished stage (a new BuildState after each stage)."""

    spec: Any
    run: Any
    hooks: Any
    device: Device | None = None
    state: BuildState = field(default_factory=BuildState)
    _cache: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.device is None:
            self.device = Device.resolve(self.spec.device, budget=self.spec.budget())

    @property
    def profile(self) -> Any:
        return self.device.profile

    @property
    def plan(self) -> Plan:
        return self.state.plan

    @property
    def quant(self) -> QuantRecipe:
        """The shipped quant recipe: the search's best trial's once searched (the quant is a dimension of the
        search: SearchSpec.quants), else the plan's choice once made, else --quant or the profile's."""
        best = getattr(self.state.search, "best", None)
        if best is not None and best.quant:
            return best.quant
        if self.state.plan is not None:
            return self.plan.quant
        return self.spec.quant or self.profile.quant

    @property
    def dense(self) -> Any:
        return self.memo("dense", lambda: models.load(self.spec.model))

    def memo(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def release(self, finished: str) -> None:
        """Drop what no stage after `finished` reads, then give freed heap back to the OS (heap.py).
        Calibration statistics (with gradients and second moments ~0.4 GB on the default model) and the
        dense reference log-probs serve only the plan's warm-start trial, the search and the prune."""
        if finished == "prune" or (finished == "plan" and self.quant_only()):
            for key in ("data_ctx", "search_ctx"):
                if key in self._cache:
                    self._cache[key].forget_statistics()
        heap.release()

    def use_kv_cache(self, kv: str) -> None:
        """Check RAM (and run llama.cpp) with the K/V cache type the candidates stage chose from now on."""
        if self.profile.kv_cache_type != kv:
            self.device = dataclasses.replace(self.device, profile=dataclasses.replace(self.profile, kv_cache_type=kv))

    def quant_only(self) -> bool:
        """True when the shipped model is the dense one (the plan said so, or export replaced the pruned file)."""
        ex = self.state.export
        return self.plan.mode == "quant-only" or (ex is not None and not ex.pruned)

    def search_spec_for(self, quant: QuantRecipe, r_min: float, r_max: float, latency_scale: float = 1.0,
                        prefill_scale: float = 1.0) -> SearchSpec:
        """The search's spec at `quant` with the ratio in [r_min, r_max] (at least 0.01 wide)."""
        s = self.spec
        bounds = SpaceBounds(r_min=r_min, r_max=max(r_max, r_min + 0.01), max_samples=s.max_samples,
                             max_seq_len=s.max_seq_len)
        bounds = family_bounds(bounds, s.model)
        # where the device measures, trials are screened against limits MEASURE_MARGIN stricter (as r_min is
        # solved): a trial right at a limit on the calibrated roofline misses it measured about half the time
        margin = MEASURE_MARGIN if self.device.measures else 0.0
        profile = budget.tightened(self.profile, margin) if margin else self.profile
        budget_ms = s.budget_ms * (1 - margin) if s.budget_ms is not None else None
        device = dataclasses.replace(self.device, profile=profile)  # the build's Device, its settings included
        return SearchSpec(model=s.model, device=device, quant=quant, bounds=bounds, calib=s.calib, val=s.val,
                          val_windows=s.val_windows, val_seq_len=s.val_seq_len, report_windows=s.report_windows,
                          objective=s.objective, budget_ms=budget_ms, latency_scale=latency_scale,
                          prefill_scale=prefill_scale,
                          measure_trials=False,  # screened by the calibrated roofline; the incumbent is measured
                          n_trials=s.trials, rescore_top=s.rescore_top, workers=s.workers, seed=s.seed,
                          patience=s.patience, recover_closure=round(estimate.closure(estimate.allowance_tokens(s)), 6))

    def search_spec(self) -> SearchSpec:
        p = self.plan  # a quant-only plan has no bounds: its context serves only data
        if p.bounds is None:
            return self.search_spec_for(self.quant, 0.0, 0.1)
        return dataclasses.replace(self.search_spec_for(p.quant, 0.0, 0.1), bounds=p.bounds, latency_scale=p.latency_scale,
                                   prefill_scale=p.prefill_scale, quants=p.quants)

    def _step(self, d: int, t: int, note: str) -> None:
        self.hooks.progress("calibration", d, t, note)

    def search_context(self) -> SearchContext:
        """The search's context; derived from the data context where one exists (no second tokenization)."""
        def make() -> SearchContext:
            data = self._cache.get("data_ctx")
            spec = self.search_spec()
            return data.derive(spec) if data is not None else SearchContext(spec, self.dense, progress=self._step)

        return self.memo("search_ctx", make)

    def data_context(self) -> SearchContext:
        """A search context before the plan exists: only its data (calibration pool, objective windows)."""
        if self.state.plan is not None:
            return self.search_context()
        spec = self.search_spec_for(self.quant, 0.0, 0.1)
        return self.memo("data_ctx", lambda: SearchContext(spec, self.dense, progress=self._step))

    def objective_windows(self) -> Any:
        """The search objective's token windows [n, seq_len] (disjoint from calibration and the report)."""
        return self.data_context().val

    def report_windows(self) -> Any:
        """The report set: held-out windows after the objective's, never seen by calibration or the search."""
        return self.data_context().report_windows

    def calibration_pool(self) -> Any:
        return self.data_context().pools[0]
