"""What each `build` stage returns: frozen dataclasses, stored in state.json with to_dict and read back
with from_dict on --resume. Later stages read attributes, never string keys."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from adaprune_edge.pipeline.quant_options import QuantOption
from adaprune_edge.latency.backends import LatencyReport
from adaprune_edge.profiles import DeviceProfile
from adaprune_edge.search.space import SpaceBounds
from adaprune_edge.search.spec import QuantChoice
from adaprune_edge.search.trials import TrialRecord
from adaprune_edge.archs.structure import Structure


def _encode(v: Any) -> Any:
    if hasattr(v, "to_dict"):
        return v.to_dict()
    if isinstance(v, (list, tuple)):
        return [_encode(x) for x in v]
    return v


def _decode(kind: Any, v: Any) -> Any:
    if kind is None or v is None:
        return tuple(v) if isinstance(v, list) else v
    if isinstance(kind, tuple):  # (T,): a sequence of T
        return tuple(kind[0].from_dict(x) for x in v)
    return kind.from_dict(v)


class StageResult:
    """to_dict / from_dict for a frozen dataclass; NESTED names the fields holding typed values."""

    NESTED: ClassVar[dict[str, Any]] = {}

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _encode(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: _decode(cls.NESTED.get(k), v) for k, v in d.items() if k in names})

    def timed(self, seconds: float) -> Any:
        return dataclasses.replace(self, seconds=round(seconds, 1))


@dataclass(frozen=True)
class Candidates(StageResult):
    """Every quant recipe's dense latency, r_min and (where scored) llama.cpp PPL on the objective windows."""

    options: tuple[QuantOption, ...]
    dense_f16: str
    dense_f16_ppl: float
    imatrix: str | None
    base_structure: Structure
    objective_windows: tuple[int, ...]
    kv_cache: str = "F16"  # the K/V cache type the plan's RAM checks use (latency/kvcache.py)
    seconds: float = 0.0
    NESTED: ClassVar[dict[str, Any]] = {"options": (QuantOption,), "base_structure": Structure}


@dataclass(frozen=True)
class Plan(StageResult):
    """mode 'quant-only' (ship the dense file at `quant`) or 'prune' (search at `quant` within `bounds`;
    with two or more `quants` the search also chooses each trial's recipe among them, `quant` first)."""

    mode: str
    quant: str
    reason: str
    pruned_estimates: tuple[dict[str, Any], ...]
    device: str
    profile: DeviceProfile
    base_structure: Structure
    dense_params: int
    dense_decoder_params: int
    model_info: dict[str, Any]
    budget_ms: float | None
    r_min: float
    latency_scale: float
    bounds: SpaceBounds | None
    dense_latency: LatencyReport
    solution: dict[str, Any] | None = None  # budget.Solution.to_dict() of the uniform structure at r_min
    quants: tuple[QuantChoice, ...] = ()  # the search's quant choices (SearchSpec.quants)
    prefill_scale: float = 1.0  # measured / predicted prompt tokens/s at r_min (SearchSpec.prefill_scale)
    recovery_estimate: dict[str, Any] | None = None  # recover/estimate.py: the chosen pruned candidate after recovery
    seconds: float = 0.0
    NESTED: ClassVar[dict[str, Any]] = {"profile": DeviceProfile, "base_structure": Structure,
                                        "bounds": SpaceBounds, "dense_latency": LatencyReport,
                                        "quants": (QuantChoice,)}


@dataclass(frozen=True)
class SearchDone(StageResult):
    """The search's confirmed best trial (None when skipped: quantization alone ships)."""

    n_trials: int
    feasible: int
    data_sets: dict[str, Any]
    best: TrialRecord | None = None
    confirmations: tuple[dict[str, Any], ...] = ()
    pareto: tuple[int, ...] = ()
    skipped: str | None = None
    seconds: float = 0.0
    rescored: tuple[dict[str, Any], ...] = ()  # the top trials re-scored before the best was chosen
    NESTED: ClassVar[dict[str, Any]] = {"best": TrialRecord}


@dataclass(frozen=True)
class Pruned(StageResult):
    """The full model pruned with the best trial's recipe (or the dense model's figures when skipped)."""

    structure: Structure
    params_before: int
    params_after: int
    decoder_params_after: int
    decoder_ratio: float
    total_ratio: float
    config: dict[str, Any] | None = None
    decoder_params_before: int | None = None
    dropped_layers: tuple[int, ...] = ()
    calib_key: str | None = None
    cache_hit: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    matches_search_trial: bool | None = None
    skipped: str | None = None
    seconds: float = 0.0
    NESTED: ClassVar[dict[str, Any]] = {"structure": Structure}


@dataclass(frozen=True)
class Recovered(StageResult):
    """Distillation of the pruned model from the dense one (recover/distill.py RecoverResult.to_dict() in
    `result`), the recovery text set, torch perplexity on the report windows before and after, and the plan's
    estimate of the recovered quality (None when the dense model ships or no allowance was given)."""

    result: dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    report_ppl_before: float | None = None
    report_ppl_after: float | None = None
    report_ppl_dense: float | None = None
    closure_measured: float | None = None  # share of the log-PPL gap to dense closed (estimate["closure"]: predicted)
    estimate: dict[str, Any] | None = None
    skipped: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class Exported(StageResult):
    """The shipped GGUF (pruned, or the dense quant-only file) and its F16 source."""

    arch: str
    f16: str
    f16_bytes: int
    gguf: str
    quant: str
    pruned: bool
    quant_report: dict[str, Any]
    structure: Structure
    replaced_pruned: str | None = None
    objective_ppl: float | None = None
    latency: LatencyReport | None = None  # the shipped file, measured after it was written (or predicted)
    constraints: tuple[dict[str, Any], ...] = ()  # budget.Constraint.to_dict() of every stated limit on `latency`
    fallbacks: tuple[str, ...] = ()  # files that missed the budget as measured, and why
    seconds: float = 0.0
    NESTED: ClassVar[dict[str, Any]] = {"structure": Structure, "latency": LatencyReport}


@dataclass(frozen=True)
class Validated(StageResult):
    """Parity gate, quality vs dense, latency, RAM, zero-shot and general-text figures of the shipped file."""

    f16: dict[str, Any]
    quant: dict[str, Any]
    latency: LatencyReport
    budget_met: bool
    budget_reason: str
    ram_bytes: int
    runtime_ram: dict[str, Any] = field(default_factory=dict)
    quant_only: dict[str, Any] = field(default_factory=dict)
    zero_shot: dict[str, Any] = field(default_factory=dict)
    general_text: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    NESTED: ClassVar[dict[str, Any]] = {"latency": LatencyReport}


@dataclass(frozen=True)
class Reported(StageResult):
    report: dict[str, Any]
    seconds: float = 0.0


RESULT_TYPES: dict[str, type] = {"candidates": Candidates, "plan": Plan, "search": SearchDone, "prune": Pruned,
                                 "recover": Recovered, "export": Exported, "validate": Validated, "report": Reported}
