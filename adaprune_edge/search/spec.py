"""The spec of a search: everything a search depends on, and all a dask worker needs to rebuild it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from adaprune_edge import archs, models
from adaprune_edge.device import Device
from adaprune_edge.errors import ConfigError
from adaprune_edge.latency.backends import BenchSettings
from adaprune_edge.latency.predictor import Calibration
from adaprune_edge.profiles import DeviceProfile
from adaprune_edge.quant import QuantRecipe
from adaprune_edge.search.space import SpaceBounds

PENALTY = 50.0  # cost told to SMAC for a structure that misses the budget (nats/token; any real loss is < 15)
OBJECTIVES = ("loss", "kl")
FACADES = ("hpo", "hyperband")


@dataclass(frozen=True)
class QuantChoice:
    """One quant recipe the search may choose per trial. penalty: measured quantization cost in nats/token,
    log(PPL of the dense GGUF at `recipe` / PPL of the dense F16 GGUF), on the objective windows.
    latency_scale: measured / predicted decode latency at this recipe (None: the spec's latency_scale)."""

    recipe: QuantRecipe
    penalty: float
    latency_scale: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe.name, "penalty": self.penalty, "latency_scale": self.latency_scale}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "QuantChoice":
        return cls(**{**d, "recipe": QuantRecipe.parse(d["recipe"])})


@dataclass(frozen=True)
class SearchSpec:
    """Everything a search depends on (and all a dask worker needs to rebuild its context).

    calib: calibration sources (files, 'builtin:NAME', hub names online; default builtin:self). val:
    held-out text; None = the tail (≥ `holdout` of the records) of the first calibration source
    (calibration then uses the rest). val_windows × val_seq_len: objective tokens; the next
    report_windows windows of the same held-out text are the report's (textsets.py: never seen by
    calibration or the objective). budget_ms overrides the profile's decode budget. quants: with two or
    more choices the quant recipe is a searched dimension (space: Categorical `quant`, default `quant`);
    each trial solves its ratio at its own recipe and its cost adds that recipe's penalty (objective.py).
    With fewer, the search is the single-recipe search at `quant` (and search.json is the search-v2 one).
    rescore_top: the trials with the lowest cost that are pruned again and scored on up to rescore_windows
    more held-out windows (after the report's) before the best is chosen (rescore.py; 0: none). device: the
    Device the caller resolved (its settings included), the one every trial's latency comes from.
    patience: the search stops after this many trials in a row, past the warm starts, that did not beat the
    incumbent by more than the objective windows' paired noise (race.py; 0: run all n_trials).
    recover_closure: share of a trial's gap to the dense model the build's recovery is estimated to close
    (recover/estimate.py; 0: no recovery), applied to every trial's cost."""

    model: str
    device: Device
    quant: QuantRecipe
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
    prefill_scale: float = 1.0  # measured / predicted prompt tokens/s (trials' first-token screen)
    measure_trials: bool = False
    n_trials: int = 20
    walltime_s: float | None = None
    workers: int = 1
    seed: int = 0
    quants: tuple[QuantChoice, ...] = ()
    rescore_top: int = 3
    rescore_windows: int = 8
    patience: int = 3
    recover_closure: float = 0.0
    kind: str = "adaprune-edge/search-v2"  # v2: the ratio is solved per trial, not searched

    def to_dict(self) -> dict[str, Any]:
        d = {("profile" if f.name == "device" else f.name): getattr(self, f.name) for f in dataclasses.fields(self)}
        d.update(calib=list(self.calib), profile=self.profile.to_dict(), bounds=self.bounds.to_dict(),
                 quant=self.quant.name, quants=[q.to_dict() for q in self.quants])
        if not self.quants:  # a single-recipe spec reads (and resumes) as the search-v2 specs before quants
            del d["quants"]
        if not self.recover_closure:  # likewise for specs before the recovery estimate
            del d["recover_closure"]
        if self.device.settings != BenchSettings.from_profile(self.profile):  # set on the command line
            d["settings"] = self.device.settings.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SearchSpec":
        d = dict(d)
        d["calib"], d["quant"] = tuple(d.get("calib", ())), QuantRecipe.parse(d["quant"])
        d["quants"] = tuple(QuantChoice.from_dict(q) for q in d.get("quants", ()))
        profile, settings = DeviceProfile.from_dict(d.pop("profile")), d.pop("settings", None)
        d["device"] = Device(profile, BenchSettings.from_dict(settings)) if settings else Device.of(profile)
        d["bounds"] = SpaceBounds.from_dict(d["bounds"])
        return cls(**d)

    @classmethod
    def from_plan(cls, plan: Any, device: Device, model: str, **options: Any) -> "SearchSpec":
        """The spec of a search over `plan` (search.plan.SearchPlan: quant, bounds, latency scale) on `device`."""
        return cls(model=model, device=device, quant=plan.quant, bounds=family_bounds(plan.bounds, model),
                   latency_scale=plan.latency_scale, prefill_scale=plan.prefill_scale, **options)

    @property
    def profile(self) -> DeviceProfile:
        return self.device.profile

    def check(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"unknown objective {self.objective!r}; known: {', '.join(OBJECTIVES)}")
        if self.facade not in FACADES:
            raise ConfigError(f"unknown facade {self.facade!r}; known: {', '.join(FACADES)}")
        if self.n_trials < 1 or self.val_windows < 1 or self.workers < 1:
            raise ConfigError("--trials, --val-windows and --workers must be at least 1")
        if self.patience < 0 or not 0.0 <= self.recover_closure < 1.0:
            raise ConfigError("--patience must be at least 0 (0: run every trial) and the recovery closure in [0, 1)")
        if self.rescore_top < 0 or self.rescore_windows < 0:
            raise ConfigError("--rescore-top and --rescore-windows must be at least 0 (0: choose on the objective alone)")
        self.bounds.check()
        names = [q.recipe.name for q in self.quants]
        if names and (self.quant.name not in names or len(set(names)) != len(names)):
            raise ConfigError(f"quant choices {names} must be distinct and include the spec's quant {self.quant.name!r}")

    def searched_quants(self) -> tuple[QuantRecipe, ...]:
        """The recipes of the space's `quant` dimension, the spec's quant (its default) first: () unless
        there are at least two choices."""
        if len(self.quants) < 2:
            return ()
        return (self.quant, *(q.recipe for q in self.quants if q.recipe != self.quant))

    def quant_of(self, values: dict[str, Any]) -> QuantRecipe:
        """A trial's quant recipe: its `quant` value (a recipe name) when the quant is searched, else the spec's."""
        return QuantRecipe.parse(str(values["quant"])) if self.searched_quants() and "quant" in values else self.quant

    def quant_penalty(self, quant: QuantRecipe) -> float:
        """nats/token added to a trial's cost at `quant` (0 unless the quant is searched)."""
        if not self.searched_quants():
            return 0.0
        return next(q.penalty for q in self.quants if q.recipe == quant)

    def calibration_of(self, quant: QuantRecipe) -> Calibration:
        """measured / predicted factors that screen trials at `quant`: decode, the choice's own scale when the
        quant is searched and the choice has one, else the spec's; prompt, the spec's."""
        own = next((q.latency_scale for q in self.quants if q.recipe == quant), None) if self.searched_quants() else None
        return Calibration(self.latency_scale if own is None else own, self.prefill_scale)


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
