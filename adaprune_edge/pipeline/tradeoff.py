"""Latency/quality trade-off: one recipe swept over pruning ratios, latency per device.

Quality is held-out perplexity of the pruned torch model; latency is measured where the device's
backend can (local, ssh: shape-only GGUF of the exact structure) and predicted (roofline) elsewhere."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from adaprune_edge.errors import ConfigError
from adaprune_edge.archs.structure import Structure
from adaprune_edge.pipeline import plots
from adaprune_edge.pipeline.quant_options import gguf_ppl
from adaprune_edge.evaluate.perplexity import perplexity
from adaprune_edge.exporters import gguf, quantize
from adaprune_edge.prune.engine import prune
from adaprune_edge.prune.importance import ImportanceCache
from adaprune_edge.quant import QuantRecipe


@dataclass(frozen=True)
class TradeoffPoint:
    """One ratio: held-out PPL, parameters, and per device decode ms/token and whether it was measured."""

    ratio: float
    decoder_ratio: float
    params: int
    ppl: float
    latency_ms: dict[str, float]
    measured: dict[str, bool]
    structure: Structure

    def to_dict(self) -> dict[str, Any]:
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, "structure": self.structure.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TradeoffPoint":
        return cls(**{**d, "structure": Structure.from_dict(d["structure"])})


def parse_ratios(text: str) -> list[float]:
    try:
        ratios = sorted({float(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise ConfigError(f"--ratios must be comma-separated numbers, got {text!r}") from None
    if not ratios or ratios[0] < 0 or ratios[-1] > 0.9:
        raise ConfigError(f"--ratios must lie in [0, 0.9], got {text!r}")
    return ratios


def device_latency(structure: Any, quant: QuantRecipe, device: Any, measure: bool) -> tuple[float, bool]:
    """(decode ms/token, measured?) of a structure on a device.Device (measured only where its backend can)."""
    rep = device.predictor(quant).latency(structure, measure)
    return rep.decode_ms_per_token, rep.measured


def sweep(model: Any, calib: Any, windows: Any, base_config: Any, ratios: Sequence[float], quant: QuantRecipe,
          devices: Sequence[Any], measure: bool = True,
          progress: Callable[[int, int], None] | None = None) -> list[TradeoffPoint]:
    """Prune `model` with `base_config` at every ratio and score each point (shared importance cache)."""

    cache, points = ImportanceCache(), []
    for i, r in enumerate(ratios):
        if r == 0:
            pruned, st, dr = model, Structure.from_model(model), 0.0
        else:
            res = prune(model, calib, dataclasses.replace(base_config, ratio=r), cache=cache)
            pruned, st, dr = res.model, res.structure, res.decoder_ratio
        ppl = perplexity(pruned, windows)
        lat = {p.name: device_latency(st, quant, p, measure) for p in devices}
        points.append(TradeoffPoint(r, dr, st.params(), ppl if math.isfinite(ppl) else float("inf"),
                                    {k: v[0] for k, v in lat.items()}, {k: v[1] for k, v in lat.items()},
                                    st))
        if progress:
            progress(i + 1, len(ratios))
    return points


def chosen_point(points: Sequence[TradeoffPoint], device: str, budget_ms: float | None) -> TradeoffPoint | None:
    """Lowest-PPL point that meets the device's decode budget."""
    ok = [p for p in points if budget_ms is None or p.latency_ms[device] <= budget_ms]
    return min(ok, key=lambda p: p.ppl) if ok else None


def quant_points(model: Any, tokenizer_meta: Any, windows: Any, recipes: Sequence[QuantRecipe], devices: Sequence[Any],
                 folder: Any, measure: bool = True) -> list[dict[str, Any]]:
    """The dense model quantized with every recipe (llama.cpp; files are temporary): llama.cpp perplexity
    on the same windows and decode ms/token per device, as JSON-safe dicts."""
    import tempfile
    from pathlib import Path

    st, out = Structure.from_model(model), []
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        f16 = Path(tmp) / "dense-F16.gguf"
        gguf.write_model(model, f16, tokenizer_meta)
        for name in recipes:
            path = Path(tmp) / "q.gguf"
            quantize.quantize(f16, path, name)
            lat = {p.name: device_latency(st, name, p, measure) for p in devices}
            out.append({"recipe": name.name, "ppl": gguf_ppl(path, windows.numpy()), "file_bytes": path.stat().st_size,
                        "latency_ms": {k: v[0] for k, v in lat.items()}, "measured": {k: v[1] for k, v in lat.items()}})
    return out


def plot(path: Any, points: Sequence[TradeoffPoint], devices: Sequence[Any], budget_ms: float | None,
         title: str, quants: Sequence[dict[str, Any]] = ()) -> Any:

    series = []
    for p in devices:
        kind = "measured" if all(pt.measured[p.name] for pt in points) else "predicted"
        series.append({"label": f"{p.name} ({kind}), pruned (torch PPL)", "ms": [pt.latency_ms[p.name] for pt in points],
                       "quality": [pt.ppl for pt in points], "style": "-o"})
    first = devices[0]
    if quants:
        series.append({"label": f"{first.name}: dense quantized (llama.cpp PPL)", "ms": [q["latency_ms"][first.name] for q in quants],
                       "quality": [q["ppl"] for q in quants], "style": "s"})
        front = plots.pareto_front([(pt.latency_ms[first.name], pt.ppl, f"ratio {pt.ratio:g}") for pt in points]
                       + [(q["latency_ms"][first.name], q["ppl"], q["recipe"]) for q in quants])
        series.append({"label": "Pareto front", "ms": [f[0] for f in front], "quality": [f[1] for f in front],
                       "style": "k--", "alpha": 0.6})
    best = chosen_point(points, first.name, budget_ms)
    chosen = None if best is None else {"ms": best.latency_ms[first.name], "quality": best.ppl,
                                        "label": f"chosen on {first.name}: ratio {best.ratio:g}"}
    dense = next((pt for pt in points if pt.ratio == 0), None)
    d = None if dense is None else {"ms": dense.latency_ms[first.name], "quality": dense.ppl, "label": "dense"}
    return plots.tradeoff_png(path, series, budget_ms=budget_ms, chosen=chosen, dense=d, title=title)
