"""The AdaPruner search space (ConfigSpace): how to calibrate, score and allocate.

A point of the space becomes a `PruneConfig` (plus calibration source weights when several sources
are given). The ratio is not searched: each trial solves the smallest ratio that meets the budget
(search/ratio.py). Knobs that only matter for some choices are conditional (owl_lambda only under `owl`,
the depth knots and head_weight only under `profile`, depth_share only when depth removal is on,
recon_damp only with least-squares reconstruction, source weights only with several sources). With
several quant choices the quant recipe is a knob too: each trial solves its ratio at its own recipe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ConfigSpace import Categorical, ConfigurationSpace, Constant, EqualsCondition, Float, Integer

from adaprune_edge.data.calibration import STRATEGIES
from adaprune_edge.errors import ConfigError
from adaprune_edge.prune.allocation import ALLOCATIONS
from adaprune_edge.prune.engine import PruneConfig
from adaprune_edge.prune.importance import AGGREGATIONS, METRICS
from adaprune_edge.quant import QuantRecipe

HEAD_UNITS = ("query", "group", "none")  # PruneConfig.head_unit
N_KNOTS = 4  # knots of the `profile` allocation over depth (prune/profile.py)


@dataclass(frozen=True)
class SpaceBounds:
    """Ranges of the searched knobs. r_min: the uniform recipe's solved ratio (share of decoder parameters
    removed); r_max: the largest ratio the per-trial ratio solver may choose."""

    r_min: float
    r_max: float
    n_sources: int = 1
    min_samples: int = 8
    max_samples: int = 256
    min_seq_len: int = 64
    max_seq_len: int = 1024
    max_protect_first: int = 4
    max_protect_last: int = 2
    max_depth_share: float = 0.6
    sampling: str | None = None  # one calibration sampling strategy for every trial (None: searched)
    uniform_only: bool = False  # the family loads in llama.cpp only with uniform layers (archs: per_layer False)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SpaceBounds":
        return cls(**d)

    def check(self) -> None:
        if not 0.0 <= self.r_min < self.r_max <= 0.9:
            raise ConfigError(f"ratio range [{self.r_min:.3f}, {self.r_max:.3f}] is empty or outside [0, 0.9]: "
                              "raise --max-ratio or relax the budget")
        if self.sampling is not None:
            STRATEGIES.get(self.sampling)
        if not 1 <= self.min_samples <= self.max_samples or not 2 <= self.min_seq_len <= self.max_seq_len:
            raise ConfigError("calibration ranges are empty: check --max-samples / --max-seq-len")


def build_space(bounds: SpaceBounds, seed: int = 0, quants: Sequence[QuantRecipe] = ()) -> ConfigurationSpace:
    """The ConfigurationSpace for `bounds` (deterministic for `seed`). With two or more `quants` (the
    default first) the quant recipe is a Categorical `quant` of recipe names (SearchSpec.quants)."""
    bounds.check()
    cs = ConfigurationSpace(seed=seed)
    if len(quants) >= 2:
        cs.add(Categorical("quant", tuple(q.name for q in quants), default=quants[0].name))
    if bounds.uniform_only:  # uniform allocation, no protected layers, no output biases (archs.base)
        cs.add([Constant("allocation", "uniform"), Constant("protect_first", 0), Constant("protect_last", 0),
                Constant("bias_compensation", "False"), Constant("reconstruction", "False")])
    else:
        alloc = Categorical("allocation", ALLOCATIONS.searchable(), default="global")
        owl = Float("owl_lambda", (0.02, 0.2), default=0.08)
        recon = Categorical("reconstruction", (False, True), default=False)
        damp = Float("recon_damp", (0.03, 3.0), log=True, default=0.3)
        knots = [Float(f"knot_{k}", (0.05, 1.0), default=0.5) for k in range(N_KNOTS)]
        head_weight = Float("head_weight", (0.0, 2.0), default=1.0)
        cs.add([alloc, owl, recon, damp, *knots, head_weight,
                _count("protect_first", bounds.max_protect_first), _count("protect_last", bounds.max_protect_last),
                Categorical("bias_compensation", (False, True), default=False)])
        cs.add([EqualsCondition(owl, alloc, "owl"), EqualsCondition(damp, recon, True),
                EqualsCondition(head_weight, alloc, "profile"), *[EqualsCondition(k, alloc, "profile") for k in knots]])
    depth = Categorical("depth", ("off", "on"), default="off")
    share = Float("depth_share", (0.05, bounds.max_depth_share), default=0.25)
    cs.add([
        Categorical("metric", METRICS.searchable(), default="taylor"),
        Categorical("aggregation", AGGREGATIONS.searchable(), default="sum"),
        depth, share,
        Categorical("head_unit", HEAD_UNITS, default="none"),
        Constant("sampling", bounds.sampling) if bounds.sampling else
        Categorical("sampling", STRATEGIES.searchable(), default="random"),
        _int("n_samples", bounds.min_samples, bounds.max_samples, 32),
        _int("seq_len", bounds.min_seq_len, bounds.max_seq_len, 256),
        Categorical("sequential", (False, True), default=False),
    ])
    cs.add([EqualsCondition(share, depth, "on")])
    for i in range(1, bounds.n_sources):
        cs.add(Float(f"source_weight_{i}", (0.0, 1.0), default=1.0))
    return cs


def _count(name: str, hi: int) -> Any:
    """An integer knob over 0..hi (default 0), or the constant 0 when hi is 0."""
    return Integer(name, (0, hi), default=0) if hi > 0 else Constant(name, 0)


def _int(name: str, lo: int, hi: int, default: int) -> Any:
    """A log-scale integer knob, or a constant when the range is a single value."""
    if lo == hi:
        return Constant(name, lo)
    return Integer(name, (lo, hi), log=True, default=min(hi, max(lo, default)))


def to_prune_config(values: dict[str, Any], align: int, seed: int,
                    ratio: float | None = None) -> tuple[PruneConfig, list[float]]:
    """A search point → (PruneConfig at `ratio`, normalised calibration source weights). `ratio` defaults
    to values['ratio'] (points of older runs) or 0 (the solver sets it: search/ratio.py)."""
    n_src = 1 + sum(1 for k in values if k.startswith("source_weight_"))
    weights = [1.0] + [float(values[f"source_weight_{i}"]) for i in range(1, n_src)]
    total = sum(weights)
    cfg = PruneConfig(
        ratio=float(values.get("ratio", 0.0) if ratio is None else ratio), metric=str(values["metric"]), aggregation=str(values["aggregation"]),
        allocation=str(values["allocation"]), head_unit=str(values["head_unit"]),
        n_samples=int(values["n_samples"]), seq_len=int(values["seq_len"]), sampling=str(values["sampling"]),
        protect_first=int(values["protect_first"]), protect_last=int(values["protect_last"]),
        depth_share=float(values.get("depth_share", 0.0)) if values.get("depth") == "on" else 0.0,
        bias_compensation=values["bias_compensation"] in (True, "True"), align=align,
        reconstruction=values.get("reconstruction", False) in (True, "True"), recon_damp=float(values.get("recon_damp", 0.3)),
        owl_lambda=float(values.get("owl_lambda", 0.08)), seed=seed,
        sequential=values.get("sequential", False) in (True, "True"),
        profile_knots=tuple(float(values[f"knot_{k}"]) for k in range(N_KNOTS) if f"knot_{k}" in values),
        head_weight=float(values.get("head_weight", 1.0)))
    return cfg, [w / total for w in weights]


def plain(values: Any) -> dict[str, Any]:
    """A Configuration (or dict) as a JSON-safe dict of python scalars."""
    out = {}
    for k, v in dict(values).items():
        out[k] = v.item() if hasattr(v, "item") else v
    return out
