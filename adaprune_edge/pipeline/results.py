"""What each `build` stage returns: frozen dataclasses, stored in state.json with to_dict and read back
with from_dict on --resume. Later stages read attributes, never string keys."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from adaprune_edge.pipeline.quant_options import QuantOption
from adaprune_edge.data.textsets import TextSet
from adaprune_edge.evaluate.general_text import TextScores
from adaprune_edge.evaluate.harness import TaskResult
from adaprune_edge.evaluate.runtime_ram import RuntimeRam
from adaprune_edge.evaluate.validation import ValidationReport
from adaprune_edge.exporters.quantize import QuantReport
from adaprune_edge.latency.backends import LatencyReport
from adaprune_edge.latency.budget import Solution
from adaprune_edge.models import ModelInfo
from adaprune_edge.profiles import DeviceProfile
from adaprune_edge.prune.engine import PruneConfig
from adaprune_edge.quant import QuantRecipe
from adaprune_edge.recover.distill import RecoverResult
from adaprune_edge.recover.estimate import RecoveryEstimate
from adaprune_edge.search.rescore import Rescored
from adaprune_edge.search.space import SpaceBounds
from adaprune_edge.search.spec import QuantChoice
from adaprune_edge.search.trials import TrialRecord
from adaprune_edge.archs.structure import Structure


def _encode(v: Any) -> Any:
    if isinstance(v, QuantRecipe):
        return v.name
    if hasattr(v, "to_dict"):
        return v.to_dict()
    if isinstance(v, (list, tuple)):
        return [_encode(x) for x in v]
    if isinstance(v, dict):
        return {k: _encode(x) for k, x in v.items()}
    return v


def _decode(kind: Any, v: Any) -> Any:
    if kind is None or v is None:
        return tuple(v) if isinstance(v, list) else v
    if isinstance(kind, tuple):  # (T,): a sequence of T
        return tuple(kind[0].from_dict(x) for x in v)
    if kind is QuantRecipe:
        return QuantRecipe.parse(v)
    if isinstance(kind, dict):  # {str: T}: names → T
        return {k: kind[str].from_dict(x) for k, x in v.items()}
    return kind.from_dict(v) if v else None  # {}: what states before typed fields stored for "none"


class StageResult:
    """to_dict / from_dict for a frozen dataclass; NESTED names the fields holding typed values: T, (T,) for
    a tuple of T, {str: T} for a mapping of names to T."""

    NESTED: ClassVar[dict[str, Any]] = {}

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _encode(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: _decode(cls.NESTED.get(k), v) for k, v in d.items() if k in names})

    def timed(self, seconds: float, peak_rss_bytes: int = 0) -> Any:
        """The result with its wall seconds and the process's peak RSS at its end (a resumed build keeps
        the figures of stages an earlier process ran, so its peak is the max over stages)."""
        return dataclasses.replace(self, seconds=round(seconds, 1), peak_rss_bytes=peak_rss_bytes)


@dataclass(frozen=True)
class PrunedEstimate(StageResult):
    """The plan's warm-start trial at a recipe's r_min: torch PPL on the objective windows, x the recipe's
    measured quantization factor, after the build's recovery allowance as recover/estimate.py predicts it."""

    recipe: QuantRecipe
    r_min: float
    trial_ratio: float
    torch_ppl: float | None
    quant_factor: float
    unrecovered_ppl: float
    recovery: RecoveryEstimate | None
    estimated_ppl: float
    feasible: bool
    reason: str
    NESTED: ClassVar[dict[str, Any]] = {"recipe": QuantRecipe, "recovery": RecoveryEstimate}


@dataclass(frozen=True)
class Confirmation(StageResult):
    """One ranked trial re-measured with the device's backend before the search's best is declared."""

    trial: int
    quant: QuantRecipe
    decode_ms: float
    prefill_tps: float
    measured: bool
    ok: bool
    reason: str
    NESTED: ClassVar[dict[str, Any]] = {"quant": QuantRecipe}


@dataclass(frozen=True)
class QuantOnly(StageResult):
    """The best dense quantized file that meets the budget, scored like the shipped one (report windows)."""

    recipe: QuantRecipe
    file_bytes: int
    decode_ms_per_token: float
    measured: bool
    ppl: float
    kl_vs_dense: float | None
    top1: float | None
    objective_ppl: float | None
    NESTED: ClassVar[dict[str, Any]] = {"recipe": QuantRecipe}


@dataclass(frozen=True)
class TaskScores(StageResult):
    """One zero-shot task: the dense torch model's and the shipped GGUF's accuracy, or why it was skipped."""

    dense: TaskResult | None = None
    pruned: TaskResult | None = None
    skipped: str | None = None
    NESTED: ClassVar[dict[str, Any]] = {"dense": TaskResult, "pruned": TaskResult}

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in super().to_dict().items() if v is not None}


@dataclass(frozen=True)
class Candidates(StageResult):
    """Every quant recipe's dense latency, r_min and (where scored) llama.cpp PPL on the objective windows."""

    options: tuple[QuantOption, ...]
    dense_f16: str
    dense_f16_ppl: float
    imatrix: str | None
    base_structure: Structure
    objective_windows: tuple[int, ...]
    kv_cache: str = "F16"  # the K/V cache type the plan's RAM checks use (runtime/kvcache.py)
    seconds: float = 0.0
    peak_rss_bytes: int = 0  # this process's peak RSS when the stage finished
    NESTED: ClassVar[dict[str, Any]] = {"options": (QuantOption,), "base_structure": Structure}


@dataclass(frozen=True)
class Plan(StageResult):
    """mode 'quant-only' (ship the dense file at `quant`) or 'prune' (search at `quant` within `bounds`;
    with two or more `quants` the search also chooses each trial's recipe among them, `quant` first)."""

    mode: str
    quant: QuantRecipe
    reason: str
    pruned_estimates: tuple[PrunedEstimate, ...]
    device: str
    profile: DeviceProfile
    base_structure: Structure
    dense_params: int
    dense_decoder_params: int
    model_info: ModelInfo
    budget_ms: float | None
    r_min: float
    latency_scale: float
    bounds: SpaceBounds | None
    dense_latency: LatencyReport
    solution: Solution | None = None  # the uniform structure at r_min
    quants: tuple[QuantChoice, ...] = ()  # the search's quant choices (SearchSpec.quants)
    prefill_scale: float = 1.0  # measured / predicted prompt tokens/s at r_min (SearchSpec.prefill_scale)
    recovery_estimate: RecoveryEstimate | None = None  # the chosen pruned candidate after recovery
    seconds: float = 0.0
    peak_rss_bytes: int = 0  # this process's peak RSS when the stage finished
    NESTED: ClassVar[dict[str, Any]] = {"quant": QuantRecipe, "profile": DeviceProfile, "base_structure": Structure,
                                        "bounds": SpaceBounds, "dense_latency": LatencyReport,
                                        "quants": (QuantChoice,), "pruned_estimates": (PrunedEstimate,),
                                        "model_info": ModelInfo, "solution": Solution,
                                        "recovery_estimate": RecoveryEstimate}


@dataclass(frozen=True)
class SearchDone(StageResult):
    """The search's confirmed best trial (None when skipped: quantization alone ships)."""

    n_trials: int
    feasible: int
    data_sets: dict[str, TextSet]
    best: TrialRecord | None = None
    confirmations: tuple[Confirmation, ...] = ()
    pareto: tuple[int, ...] = ()
    skipped: str | None = None
    seconds: float = 0.0
    peak_rss_bytes: int = 0  # this process's peak RSS when the stage finished
    rescored: tuple[Rescored, ...] = ()  # the top trials re-scored before the best was chosen
    cost: dict[str, Any] = field(default_factory=dict)  # what the search cost and bought (search_cost)
    NESTED: ClassVar[dict[str, Any]] = {"best": TrialRecord, "data_sets": {str: TextSet},
                                        "confirmations": (Confirmation,), "rescored": (Rescored,)}


@dataclass(frozen=True)
class Pruned(StageResult):
    """The full model pruned with the best trial's recipe (or the dense model's figures when skipped)."""

    structure: Structure
    params_before: int
    params_after: int
    decoder_params_after: int
    decoder_ratio: float
    total_ratio: float
    config: PruneConfig | None = None
    decoder_params_before: int | None = None
    dropped_layers: tuple[int, ...] = ()
    calib_key: str | None = None
    cache_hit: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    matches_search_trial: bool | None = None
    skipped: str | None = None
    seconds: float = 0.0
    peak_rss_bytes: int = 0  # this process's peak RSS when the stage finished
    NESTED: ClassVar[dict[str, Any]] = {"structure": Structure, "config": PruneConfig}


@dataclass(frozen=True)
class Recovered(StageResult):
    """Distillation of the pruned model from the dense one (`result`), the recovery text set, torch
    perplexity on the report windows before and after, and the plan's estimate of the recovered quality
    (None when the dense model ships or no allowance was given)."""

    result: RecoverResult | None = None
    text: TextSet | None = None
    report_ppl_before: float | None = None
    report_ppl_after: float | None = None
    report_ppl_dense: float | None = None
    closure_measured: float | None = None  # share of the log-PPL gap to dense closed (estimate.closure: predicted)
    estimate: RecoveryEstimate | None = None
    skipped: str | None = None
    seconds: float = 0.0
    peak_rss_bytes: int = 0  # this process's peak RSS when the stage finished
    NESTED: ClassVar[dict[str, Any]] = {"result": RecoverResult, "text": TextSet, "estimate": RecoveryEstimate}


@dataclass(frozen=True)
class Exported(StageResult):
    """The shipped GGUF (pruned, or the dense quant-only file) and its F16 source."""

    arch: str
    f16: str
    f16_bytes: int
    gguf: str
    quant: QuantRecipe
    pruned: bool
    quant_report: QuantReport
    structure: Structure
    replaced_pruned: str | None = None
    objective_ppl: float | None = None
    latency: LatencyReport | None = None  # the shipped file, measured after it was written (or predicted)
    # budget.Constraint.to_dict() of every stated limit checked on `latency`: kept as written, because its
    # value and limit are rounded there and a Constraint read back would recompute a different margin
    constraints: tuple[dict[str, Any], ...] = ()
    fallbacks: tuple[str, ...] = ()  # files that missed the budget as measured, and why
    seconds: float = 0.0
    peak_rss_bytes: int = 0  # this process's peak RSS when the stage finished
    NESTED: ClassVar[dict[str, Any]] = {"quant": QuantRecipe, "structure": Structure, "latency": LatencyReport,
                                        "quant_report": QuantReport}


@dataclass(frozen=True)
class Validated(StageResult):
    """Parity gate, quality vs dense, latency, RAM, zero-shot and general-text figures of the shipped file."""

    f16: ValidationReport  # the F16 GGUF against the shipped torch model: the parity gate
    quant: ValidationReport  # the shipped GGUF against the dense torch model on the report windows
    latency: LatencyReport
    budget_met: bool
    budget_reason: str
    ram_bytes: int
    runtime_ram: RuntimeRam | None = None
    quant_only: QuantOnly | None = None  # None when no quantized dense file meets the budget
    zero_shot: dict[str, TaskScores] = field(default_factory=dict)
    general_text: dict[str, TextScores] = field(default_factory=dict)
    seconds: float = 0.0
    peak_rss_bytes: int = 0  # this process's peak RSS when the stage finished
    NESTED: ClassVar[dict[str, Any]] = {"latency": LatencyReport, "f16": ValidationReport, "quant": ValidationReport,
                                        "runtime_ram": RuntimeRam, "quant_only": QuantOnly,
                                        "zero_shot": {str: TaskScores}, "general_text": {str: TextScores}}


@dataclass(frozen=True)
class Reported(StageResult):
    """report.json as written: a JSON document for people and scripts (its keys are the file's format)."""

    report: dict[str, Any]
    seconds: float = 0.0
    peak_rss_bytes: int = 0  # this process's peak RSS when the stage finished

