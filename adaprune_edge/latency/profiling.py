"""Device profiling: measure a spread of shapes of a model, fit the roofline to them, and write the fitted
constants into a device profile YAML (with the held-out error in its comments)."""

from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import yaml

from adaprune_edge.latency import budget
from adaprune_edge.latency.backends import BenchSettings, LatencyReport
from adaprune_edge.latency.roofline import FitResult, Workload, fit_and_score
from adaprune_edge.latency.shape import structure_latency
from adaprune_edge.archs.structure import Structure
from adaprune_edge.quant import QuantRecipe


@dataclass(frozen=True)
class Probe:
    """One measured shape: a label, its structure, quant type, workload and the measured report."""

    label: str
    structure: Structure
    quant: QuantRecipe
    workload: Workload
    report: LatencyReport

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "structure_key": self.structure.key(), "condensed": self.structure.condensed(),
                "quant": self.quant.name, "workload": self.workload.to_dict(), "report": self.report.to_dict()}


def _drop_layers(st: Structure, keep_every: int) -> Structure:
    keep = [i for i in range(st.n_layer) if i % keep_every or i in (0, st.n_layer - 1)]
    return dataclasses.replace(st, kept_layers=tuple(st.kept_layers[i] for i in keep),
                               layers=tuple(st.layers[i] for i in keep))


def _taper(st: Structure, quant: QuantRecipe, lo: float, hi: float) -> Structure:
    """Non-uniform: the ratio grows linearly from `lo` in the first layer to `hi` in the last."""
    n = st.n_layer
    layers = tuple(budget.uniform(dataclasses.replace(st, kept_layers=(0,), layers=(s,)),
                                  lo + (hi - lo) * i / max(1, n - 1), quant).layers[0] for i, s in enumerate(st.layers))
    return dataclasses.replace(st, layers=layers)


def probe_structures(base: Structure, quant: QuantRecipe, count: int = 6) -> list[tuple[str, Structure]]:
    """`count` (≤ 12) labelled shapes spanning ratios 0–0.7: uniform, tapered, and with layers removed."""
    u = lambda r: budget.uniform(base, r, quant)  # noqa: E731
    shapes = [("uniform 0.0", u(0.0)), ("uniform 0.3", u(0.3)), ("uniform 0.6", u(0.6)),
              ("drop 1/3 layers", _drop_layers(base, 3)), ("taper 0.0→0.6", _taper(base, quant, 0.0, 0.6)),
              ("uniform 0.45 drop 1/2", _drop_layers(u(0.45), 2)), ("uniform 0.15", u(0.15)),
              ("uniform 0.7", u(0.7)), ("taper 0.6→0.1", _taper(base, quant, 0.6, 0.1)),
              ("drop 1/2 layers", _drop_layers(base, 2)), ("uniform 0.5", u(0.5)),
              ("uniform 0.3 drop 1/3", _drop_layers(u(0.3), 3))]
    return shapes[:count]


def measure_probes(shapes: Sequence[tuple[str, Structure]], quants: Sequence[QuantRecipe], settings: BenchSettings,
                   device: str, use_cache: bool = True,
                   progress: Callable[[str], None] | None = None) -> list[Probe]:
    """Measure every (shape, quant) with `settings` (shape-only GGUFs, lookup table in front); calls
    progress(label) after each."""
    probes = []
    for quant in quants:
        for label, st in shapes:
            rep = structure_latency(st, quant, settings, device, use_cache)
            probes.append(Probe(label, st, quant, Workload.from_structure(st, quant), rep))
            if progress:
                progress(f"{label} {quant}")
    return probes


def split_fit(probes: Sequence[Probe]) -> FitResult:
    """Fit on every other probe, score on the rest (held out)."""
    pts = [(p.workload, p.report) for p in probes]
    return fit_and_score(pts[0::2], pts[1::2])


def fitted_profile(profile: Any, result: FitResult) -> Any:
    """`profile` with the fitted bandwidth, compute and overheads (rounded to what the data supports)."""
    rf = result.roofline
    return dataclasses.replace(profile, mem_bandwidth_gbs=round(rf.mem_bandwidth_gbs, 2),
                               compute_gflops=round(rf.compute_gflops, 1),
                               overhead_ms_per_layer=round(rf.overhead_ms_per_layer, 4),
                               overhead_ms_per_token=round(rf.overhead_ms_per_token, 3),
                               decode_gflops=round(rf.decode_gflops, 1),
                               type_rates={t: [d, c] for t, d, c in rf.type_rates} or None)


def profile_yaml(profile: Any, result: FitResult, n_probes: int) -> str:
    """A complete profile YAML (no `extends`) with how the figures were obtained in comments."""
    d = profile.to_dict()
    d.pop("name")
    d["budget"] = {k: v for k, v in d["budget"].items() if v is not None}
    d = {k: v for k, v in d.items() if v is not None}
    s = result.summary()
    head = (f"# Fitted by `adaprune-edge profile` on {_dt.date.today().isoformat()} from {n_probes} measured shapes\n"
            f"# (shape-only GGUFs, {profile.threads} threads). Held-out decode error: median "
            f"{100 * s['median_rel_error']:.1f}%, max {100 * s['max_rel_error']:.1f}%.\n")
    return head + yaml.safe_dump(d, sort_keys=False)

