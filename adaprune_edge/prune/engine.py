"""The pruning engine's entry point: `prune(model, calibration, PruneConfig) -> PruneResult`.

One call = calibration windows → statistics / gradients (cached in an `ImportanceCache`) → unit scores
(metric + aggregation) → optional depth pruning → per-layer allocation → update (OBS, least squares or bias)
and slicing, one-shot or layer by layer; on a working copy unless `inplace`; deterministic per config:

    cache = ImportanceCache()
    res = prune(dense, pool, PruneConfig(ratio=0.3, metric="taylor"), cache=cache)
    res.model, res.structure, res.decoder_ratio
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import psutil
import torch
from torch import nn

from adaprune_edge import archs
from adaprune_edge.prune import allocation as alloc
from adaprune_edge.data.calibration import STRATEGIES, CalibrationPool, windows_key
from adaprune_edge.prune.apply import apply_layer
from adaprune_edge.prune.depth import layers_to_drop
from adaprune_edge.archs.base import config_of
from adaprune_edge.prune.equal_widths import equal_steps
from adaprune_edge.prune.footprint import check_fits
from adaprune_edge.errors import ConfigError, DataError
from adaprune_edge.prune.calibration_pass import statistics_for
from adaprune_edge.prune.importance import AGGREGATIONS, METRICS, ImportanceCache, needs
from adaprune_edge.prune.sequential import apply_sequential
from adaprune_edge.archs.slicing import drop_layers, sync_config
from adaprune_edge.prune.workcopy import working_copy
from adaprune_edge.archs.structure import LayerShape, Structure

MAX_RATIO = 0.9


@dataclass(frozen=True)
class PruneConfig:
    """One point of the search space.

    ratio: share of DECODER-layer parameters to remove (embeddings excluded), 0 ≤ ratio ≤ 0.9 (0 = copy).
    metric / aggregation / allocation: registry names (importance.METRICS, importance.AGGREGATIONS,
      allocation.ALLOCATIONS). head_unit: 'query' (query heads inside every KV group), 'group' (whole
      KV groups) or 'none' (attention untouched; the default: on SmolLM2-135M at 20%, wanda/global gave
      PPL 43.9 with 'none' vs 264 with 'query' — see bench/prune_quality.py; the search explores all three).
    n_samples × seq_len: calibration windows (tokens), sampled from the pool by `sampling`.
    protect_first / protect_last: that many first / last layers are never pruned.
    depth_share: share of the removal done by dropping whole layers (block influence); 0 = none.
    bias_compensation: FLAP bias on o_proj / down_proj for removed channels.
    reconstruction: least-squares refit of o_proj / down_proj's kept columns and bias to the dense
      output on the calibration tokens (compensation.reconstruct; subsumes bias_compensation).
      recon_damp: its ridge strength towards the original weights, relative to the mean input variance.
      The `obs` metric brings its own update (structured OBS, prune/obs.py) and ignores both.
    sequential: prune layer by layer on the already-pruned model's activations (prune/sequential.py);
      the allocation still comes from dense-model scores, the choice of units and the update do not.
    align: FFN widths stay multiples of this (256 for K-quants, 32 otherwise, 1 = free).
    min_keep: share of query heads per group, KV groups and FFN channels every pruned layer keeps.
    owl_lambda: OWL's maximum deviation of a layer's share from the mean share.
    profile_knots / head_weight: allocation 'profile' (prune/profile.py): pruning intensity at 2–5 evenly spaced
      depths in (0, 1] (none = flat); heads' share of a layer's removal vs its FFN's (1 = same, 0 = FFN only).
    batch_size: calibration windows per forward/backward pass (memory vs speed).
    """

    ratio: float = 0.2
    metric: str = "taylor"
    aggregation: str = "sum"
    allocation: str = "global"
    head_unit: str = "none"
    n_samples: int = 64
    seq_len: int = 256
    sampling: str = "random"
    protect_first: int = 0
    protect_last: int = 0
    depth_share: float = 0.0
    bias_compensation: bool = False
    reconstruction: bool = False
    recon_damp: float = 0.3
    align: int = 32
    min_keep: float = 0.1
    owl_lambda: float = 0.08
    profile_knots: tuple[float, ...] = ()
    head_weight: float = 1.0
    seed: int = 0
    batch_size: int = 1
    sequential: bool = False

    def validate(self) -> None:
        """Raise ConfigError (one line) on out-of-range values or unknown names."""
        if not 0.0 <= self.ratio <= MAX_RATIO:
            raise ConfigError(f"ratio must be in [0, {MAX_RATIO}] (0 = unpruned copy), got {self.ratio}")
        METRICS.get(self.metric)
        AGGREGATIONS.get(self.aggregation)
        alloc.ALLOCATIONS.get(self.allocation)
        STRATEGIES.get(self.sampling)
        if self.head_unit not in alloc.HEAD_UNITS:
            raise ConfigError(f"unknown head unit {self.head_unit!r}; known: {', '.join(alloc.HEAD_UNITS)}")
        checks = [(self.n_samples >= 1, "n_samples must be >= 1"), (self.seq_len >= 2, "seq_len must be >= 2"),
                  (0.0 <= self.depth_share <= 1.0, "depth_share must be in [0, 1]"),
                  (self.align >= 1, "align must be >= 1"), (0.0 <= self.min_keep < 1.0, "min_keep must be in [0, 1)"),
                  (self.protect_first >= 0 and self.protect_last >= 0, "protect_first/last must be >= 0"),
                  (self.batch_size >= 1, "batch_size must be >= 1"), (self.recon_damp > 0, "recon_damp must be > 0"), (0.0 <= self.owl_lambda < 0.5, "owl_lambda must be in [0, 0.5)")]
        if self.allocation == "profile":
            checks += [(len(self.profile_knots) in (0, 2, 3, 4, 5) and all(0 < k <= 1 for k in self.profile_knots),
                        "allocation 'profile' takes 2-5 profile_knots in (0, 1] (none = flat)"),
                       (0.0 <= self.head_weight <= 4.0, "head_weight must be in [0, 4]")]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"{msg} (got {self})")

    @property
    def needs_calibration(self) -> bool:
        grad, act = needs(self.metric)
        return self.ratio > 0 and (grad or act or self.allocation == "owl" or self.bias_compensation
                                   or self.reconstruction or self.depth_share > 0 or self.sequential)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PruneConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        extra = sorted(set(d) - known)
        if extra:
            raise ConfigError(f"unknown PruneConfig fields {extra}; known: {', '.join(sorted(known))}")
        if "profile_knots" in d:
            d = {**d, "profile_knots": tuple(float(k) for k in d["profile_knots"])}
        return cls(**d)


@dataclass(frozen=True)
class PruneResult:
    """Outcome of one prune. `model` (the pruned torch module) is not part of equality or to_dict."""

    config: PruneConfig
    structure: Structure
    params_before: int
    params_after: int
    decoder_params_before: int
    decoder_params_after: int
    dropped_layers: tuple[int, ...]
    calib_key: str
    cache_hit: bool
    timings: dict[str, float]
    model: Any = field(default=None, compare=False, repr=False)

    @property
    def decoder_ratio(self) -> float:
        """Achieved share of decoder-layer parameters removed."""
        return 1.0 - self.decoder_params_after / self.decoder_params_before

    @property
    def total_ratio(self) -> float:
        """Achieved share of all parameters (embeddings included) removed."""
        return 1.0 - self.params_after / self.params_before

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "structure": self.structure.to_dict(),
                "params_before": self.params_before, "params_after": self.params_after,
                "decoder_params_before": self.decoder_params_before, "decoder_params_after": self.decoder_params_after,
                "decoder_ratio": self.decoder_ratio, "total_ratio": self.total_ratio,
                "dropped_layers": list(self.dropped_layers), "calib_key": self.calib_key,
                "cache_hit": self.cache_hit, "timings": dict(self.timings)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PruneResult":
        return cls(PruneConfig.from_dict(d["config"]), Structure.from_dict(d["structure"]), d["params_before"],
                   d["params_after"], d["decoder_params_before"], d["decoder_params_after"],
                   tuple(d["dropped_layers"]), d["calib_key"], d["cache_hit"], dict(d["timings"]))


@dataclass(frozen=True)
class PrunePlan:
    """Positions (in the input model) of dropped layers and what every other layer keeps."""

    dropped: tuple[int, ...]
    layers: dict[int, alloc.LayerPlan]


def check_architecture(model: Any, config: PruneConfig | None = None) -> archs.ArchAdapter:
    """The model's adapter; ModelError for an unsupported architecture, ConfigError when `config` would
    give a structure llama.cpp cannot load for it (e.g. non-uniform widths of a uniform-only family)."""
    adapter = archs.adapter_for(model, "cannot prune: the model")
    adapter.check_config(model)
    if config is not None:
        adapter.check_prune(config)
    return adapter


def calibration_windows(model: Any, calib: Any, config: PruneConfig) -> torch.Tensor:
    """Sample config.n_samples windows of config.seq_len tokens from a pool (or a window tensor)."""
    if calib is None:
        raise DataError(f"metric {config.metric!r} / allocation {config.allocation!r} needs calibration data")
    pool = calib if isinstance(calib, CalibrationPool) else CalibrationPool.from_windows(calib)
    pool = pool.with_seq_len(config.seq_len)
    idx = pool.sample(config.n_samples, config.sampling, config.seed, model)
    return pool.windows[idx]


def prune(model: nn.Module, calib: Any, config: PruneConfig, *, cache: ImportanceCache | None = None,
          inplace: bool = False, progress: Callable[[int, int], None] | None = None,
          ram_bytes: int | None = None) -> PruneResult:
    """Prune `model` (a dense or already pruned Llama-family LM) to `config`.

    calib: a CalibrationPool, a LongTensor [n, seq_len] of windows, or None (only for metrics and
    allocations that need no data: l1, l2, random with uniform/global and no depth/bias options).
    progress(done, total) is called after every calibration batch. ram_bytes (default: this machine's
    RAM): ConfigError before any work if the estimated peak (prune/footprint.py) exceeds it. Returns a
    PruneResult whose `.model` is the pruned model (the input itself when `inplace`)."""
    config.validate()
    adapter = check_architecture(model, config)
    check_fits(Structure.from_model(model), config_of(model).vocab_size, config,
               ram_bytes if ram_bytes is not None else psutil.virtual_memory().total)
    cache = cache if cache is not None else ImportanceCache()
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    before = Structure.from_model(model)
    key, stats, scores, hit = "none", None, None, True
    if config.needs_calibration:
        windows = calibration_windows(model, calib, config)
        key = windows_key(windows)
        timings["sampling_s"] = time.perf_counter() - t0
        stats, scores, hit = statistics_for(model, windows, key, config, cache, progress)
    t1 = time.perf_counter()
    timings["statistics_s"] = t1 - t0 - timings.get("sampling_s", 0.0)
    if config.ratio > 0 and scores is None:
        scores = cache.scores(model, stats, key, config.metric, config.aggregation, config.seed)
    t2 = time.perf_counter()
    timings["scores_s"] = t2 - t1
    plan = removal_plan(model, before, scores or [], stats, config)
    adapter.check_structure(planned_structure(before, plan))
    t3 = time.perf_counter()
    timings["allocation_s"] = t3 - t2
    work = model if inplace else working_copy(model, plan.layers)
    if config.sequential and config.ratio > 0:
        apply_sequential(work, windows, plan, config)
        sync_config(work)
    else:
        apply_plan(work, plan, stats, config)
    after = Structure.from_model(work)
    timings["slicing_s"] = time.perf_counter() - t3
    timings["total_s"] = time.perf_counter() - t0
    kept = list(getattr(model, "adaprune_kept_layers", range(before.n_layer)))
    return PruneResult(config, after, before.params(), after.params(), before.decoder_params(),
                       after.decoder_params(), tuple(kept[i] for i in plan.dropped), key, hit, timings, work)


def removal_plan(model: nn.Module, st: Structure, scores: list, stats: Any, config: PruneConfig) -> PrunePlan:
    """Decide dropped layers and per-layer kept units without touching the model."""
    if config.ratio == 0:
        return PrunePlan((), {})
    n = st.n_layer
    lp = [st.layer_params(s) for s in st.layers]
    target = config.ratio * st.decoder_params()
    protected = set(range(min(config.protect_first, n))) | set(range(max(0, n - config.protect_last), n))
    dropped: list[int] = []
    if config.depth_share > 0:
        dropped = layers_to_drop(stats.block_influence(), lp, config.depth_share * target, protected)
    prunable = [i for i in range(n) if i not in protected and i not in dropped]
    ctx = alloc.AllocationContext(
        heads={i: alloc.head_lane(scores[i], st.layers[i].n_head_kv, st.hidden, st.head_dim, config.head_unit,
                                  config.min_keep) for i in prunable},
        ffn={i: alloc.ffn_lane(scores[i], st.hidden, config.align, config.min_keep) for i in prunable},
        layers=prunable, layer_params={i: lp[i] for i in prunable},
        target=max(0.0, target - sum(lp[i] for i in dropped)), model=model, stats=stats,
        owl_lambda=config.owl_lambda, knots=config.profile_knots, head_weight=config.head_weight)
    steps = alloc.ALLOCATIONS.get(config.allocation)(ctx) if prunable else {}
    if not archs.adapter_for(model).per_layer:  # llama.cpp loads this family only with uniform layers
        steps = equal_steps(steps, prunable)
    layers = {i: alloc.plan_layer(st.layers[i].n_head, st.layers[i].n_head_kv, st.layers[i].n_ff,
                                  ctx.heads[i], ctx.ffn[i], steps[i], config.head_unit)
              for i in prunable if steps.get(i, (0, 0)) != (0, 0)}
    return PrunePlan(tuple(dropped), layers)


def planned_structure(st: Structure, plan: PrunePlan) -> Structure:
    """The structure `plan` gives (without slicing anything)."""
    shapes = {i: LayerShape(len(lp.kv_keep) * len(lp.q_keep[0]), len(lp.kv_keep), len(lp.ff_keep))
              for i, lp in plan.layers.items()}
    keep = [i for i in range(st.n_layer) if i not in plan.dropped]
    return dataclasses.replace(st, kept_layers=tuple(st.kept_layers[i] for i in keep),
                               layers=tuple(shapes.get(i, st.layers[i]) for i in keep))


def apply_plan(model: nn.Module, plan: PrunePlan, stats: Any, config: PruneConfig) -> None:
    """Slice the model in place according to `plan` (positions refer to the model as given), with the
    update `config` asks for (OBS, least-squares reconstruction or bias compensation; prune/apply.py)."""
    adapter = archs.adapter_for(model)
    head_dim = Structure.from_model(model).head_dim
    layers = adapter.layers(model)
    for i, lp in plan.layers.items():
        apply_layer(adapter, layers[i], lp, stats, i, head_dim, config)
    if plan.dropped:
        drop_layers(model, [i for i in range(len(layers)) if i not in plan.dropped])
    sync_config(model)
