"""Latency/quality trade-off: one recipe swept over pruning ratios, latency per device.

Quality is held-out perplexity of the pruned torch model; latency is measured where the device's
backend can (local, ssh: shape-only GGUF of the exact structure) and predicted (roofline) elsewhere."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from adaprune_edge.errors import ConfigError


@dataclass(frozen=True)
class TradeoffPoint:
    """One ratio: held-out PPL, parameters, and per device decode ms/token and whether it was measured."""

    ratio: float
    decoder_ratio: float
    params: int
    ppl: float
    latency_ms: dict[str, float]
    measured: dict[str, bool]
    structure: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TradeoffPoint":
        return cls(**d)


def parse_ratios(text: str) -> list[float]:
    try:
        ratios = sorted({float(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise ConfigError(f"--ratios must be comma-separated numbers, got {text!r}") from None
    if not ratios or ratios[0] < 0 or ratios[-1] > 0.9:
        raise ConfigError(f"--ratios must lie in [0, 0.9], got {text!r}")
    return ratios


def device_latency(structure: Any, quant: str, profile: Any, measure: bool) -> tuple[float, bool]:
    """(decode ms/token, measured?) of a structure on a device."""
    from adaprune_edge.latency import BenchSettings
    from adaprune_edge.roofline import predict
    from adaprune_edge.shape_latency import structure_latency

    if measure and profile.backend != "predict":
        rep = structure_latency(structure, quant, BenchSettings.from_profile(profile), profile.name)
        return rep.decode_ms_per_token, True
    return predict(structure, quant, profile).decode_ms_per_token, False


def sweep(model: Any, calib: Any, windows: Any, base_config: Any, ratios: Sequence[float], quant: str,
          device_profiles: Sequence[Any], measure: bool = True,
          progress: Callable[[int, int], None] | None = None) -> list[TradeoffPoint]:
    """Prune `model` with `base_config` at every ratio and score each point (shared importance cache)."""
    from adaprune_edge.importance import ImportanceCache
    from adaprune_edge.perplexity import perplexity
    from adaprune_edge.pruner import prune
    from adaprune_edge.structure import Structure

    cache, points = ImportanceCache(), []
    for i, r in enumerate(ratios):
        if r == 0:
            pruned, st, dr = model, Structure.from_model(model), 0.0
        else:
            res = prune(model, calib, dataclasses.replace(base_config, ratio=r), cache=cache)
            pruned, st, dr = res.model, res.structure, res.decoder_ratio
        ppl = perplexity(pruned, windows)
        lat = {p.name: device_latency(st, quant, p, measure) for p in device_profiles}
        points.append(TradeoffPoint(r, dr, st.params(), ppl if math.isfinite(ppl) else float("inf"),
                                    {k: v[0] for k, v in lat.items()}, {k: v[1] for k, v in lat.items()},
                                    st.to_dict()))
        if progress:
            progress(i + 1, len(ratios))
    return points


def chosen_point(points: Sequence[TradeoffPoint], device: str, budget_ms: float | None) -> TradeoffPoint | None:
    """Lowest-PPL point that meets the device's decode budget."""
    ok = [p for p in points if budget_ms is None or p.latency_ms[device] <= budget_ms]
    return min(ok, key=lambda p: p.ppl) if ok else None


def plot(path: Any, points: Sequence[TradeoffPoint], devices: Sequence[Any], budget_ms: float | None,
         title: str) -> Any:
    from adaprune_edge import plots

    series = []
    for p in devices:
        kind = "measured" if all(pt.measured[p.name] for pt in points) else "predicted"
        series.append({"label": f"{p.name} ({kind})", "ms": [pt.latency_ms[p.name] for pt in points],
                       "quality": [pt.ppl for pt in points], "style": "-o"})
    first = devices[0]
    best = chosen_point(points, first.name, budget_ms)
    chosen = None if best is None else {"ms": best.latency_ms[first.name], "quality": best.ppl,
                                        "label": f"chosen on {first.name}: ratio {best.ratio:g}"}
    dense = next((pt for pt in points if pt.ratio == 0), None)
    d = None if dense is None else {"ms": dense.latency_ms[first.name], "quality": dense.ppl, "label": "dense"}
    return plots.tradeoff_png(path, series, budget_ms=budget_ms, chosen=chosen, dense=d, title=title)
