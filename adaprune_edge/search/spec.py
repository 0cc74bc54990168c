"""The spec of a search: everything a search depends on, and all a dask worker needs to rebuild it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from adaprune_edge import archs, models
from adaprune_edge.errors import ConfigError
from adaprune_edge.profiles import DeviceProfile
from adaprune_edge.search.space import SpaceBounds

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
    profile: DeviceProfile
    quant: str
    bounds: SpaceBounds
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
    kind: str = "adaprune-edge/search-v2"  # v2: the ratio is solved per trial, not searched

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d.update(calib=list(self.calib), profile=self.profile.to_dict(), bounds=self.bounds.to_dict())
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SearchSpec":
        d = dict(d)
        d["calib"] = tuple(d.get("calib", ()))
        d["profile"], d["bounds"] = DeviceProfile.from_dict(d["profile"]), SpaceBounds.from_dict(d["bounds"])
        return cls(**d)

    @classmethod
    def from_plan(cls, plan: Any, profile: DeviceProfile, model: str, **options: Any) -> "SearchSpec":
        """The spec of a search over `plan` (search.plan.SearchPlan: quant, bounds, latency scale)."""
        return cls(model=model, profile=profile, quant=plan.quant, bounds=family_bounds(plan.bounds, model),
                   latency_scale=plan.latency_scale, **options)

    def check(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"unknown objective {self.objective!r}; known: {', '.join(OBJECTIVES)}")
        if self.facade not in FACADES:
            raise ConfigError(f"unknown facade {self.facade!r}; known: {', '.join(FACADES)}")
        if self.n_trials < 1 or self.val_windows < 1 or self.workers < 1:
            raise ConfigError("--trials, --val-windows and --workers must be at least 1")
        self.bounds.check()


def family_bounds(bounds: SpaceBounds, model: str) -> SpaceBounds:
    """`bounds` fitted to the model, read without loading weights: protected layers leave at least half of
    the decoder prunable (a 4-layer model protecting 4 layers cannot meet any budget), and uniform
    structures only when the family loads in llama.cpp only with uniform layers (archs: per_layer False,
    e.g. Qwen3, Gemma 3, SmolLM3)."""
    arch, n_layer = models.model_header(model)
    if n_layer:
        bounds = dataclasses.replace(bounds, max_protect_first=min(bounds.max_protect_first, n_layer // 4),
                                     max_protect_last=min(bounds.max_protect_last, n_layer // 4))
    if arch and archs.is_supported(arch) and not archs.ARCHS.get(arch).per_layer:
        return dataclasses.replace(bounds, uniform_only=True)
    return bounds
