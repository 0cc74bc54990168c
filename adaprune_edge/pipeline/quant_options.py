"""Quantization as a lever of the plan: for every quant recipe, what latency the dense model has on the
device, how much of the decoder must be pruned to meet the budget (r_min, 0 = quantization alone
meets it), and — measured with llama.cpp — what the recipe costs in perplexity on the objective windows.

The build ships the best (quant, pruning) pair that meets the budget: quant-only options compete with
pruned ones (quant_choice.py), so a budget that a smaller quant type meets is never met by pruning."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from adaprune_edge.latency import budget
from adaprune_edge.latency.backends import LatencyReport
from adaprune_edge.latency.predictor import Predictor
from adaprune_edge.errors import LatencyError
from adaprune_edge.device import Device
from adaprune_edge.quant import QuantRecipe
from adaprune_edge.archs.structure import Structure
from adaprune_edge.data.calibration import windows_key
from adaprune_edge.runtime import llamacpp as llama_runner
from adaprune_edge.evaluate import validation
from adaprune_edge.exporters import quantize
from adaprune_edge.runs import write_json

# CPU-sensible recipes, from large to small. The `fb=`/`out=` variants choose the fall-back of rows that
# are not a multiple of 256 (576-wide on SmolLM2) and the output projection's type deliberately instead
# of llama.cpp's 5.5-bit Q5_0 / 8.5-bit Q8_0.
CANDIDATES = tuple(map(QuantRecipe.parse, (
    "Q8_0", "Q6_K", "Q5_K_M:fb=Q5_0", "Q5_0", "Q4_K_M", "Q4_K_M:fb=IQ4_NL", "Q4_K_M:fb=IQ4_NL:out=Q5_0", "Q4_0",
    "IQ4_NL", "IQ4_XS", "IQ4_XS:out=IQ4_NL", "Q3_K_M:fb=IQ4_NL", "Q2_K")))


SCORES_FILE = "candidate_scores.json"


@dataclass(frozen=True)
class QuantOption:
    """One quant recipe on one device. decode_ms: the dense model's decode ms/token at this recipe;
    r_min: decoder share to prune to meet the budget (None: even max_ratio does not); file_bytes:
    predicted tensor bytes of the dense GGUF; ppl: measured dense-GGUF perplexity (objective windows)."""

    recipe: QuantRecipe
    decode_ms: float
    measured: bool
    r_min: float | None
    file_bytes: int
    bits_per_weight: float
    ppl: float | None = None
    floor_ms: float | None = None  # decode ms/token with max_ratio of the decoder pruned (best reachable)
    prefill_tps: float | None = None  # the dense model's prompt tokens/s at the measured prompt length
    real_file: bool = False  # measured on the real dense quantized file (not a shape-only stand-in)
    floor_margin: float | None = None  # headroom of the binding limit with max_ratio pruned (< 0: unreachable)
    floor_binding: str | None = None  # that limit, described
    binding: str | None = None  # the dense file's tightest limit, described (headroom or miss)
    kl: float | None = None  # measured KL(dense torch ‖ this file), nats/token, on the same windows as ppl

    @property
    def quant_only(self) -> bool:
        return self.r_min == 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "recipe": self.recipe.name}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "QuantOption":
        return cls(**{**d, "recipe": QuantRecipe.parse(d["recipe"])})


def recipes(forced: QuantRecipe | None, imatrix: bool) -> list[QuantRecipe]:
    """The recipes a plan considers: just `forced` (--quant) or CANDIDATES, with `:imatrix` if on."""
    return [r.with_imatrix(imatrix) for r in ([forced] if forced else CANDIDATES)]


def options(base: Structure, device: Device, names: Sequence[QuantRecipe], budget_ms: float | None,
            max_ratio: float, measure: bool = True) -> list[QuantOption]:
    """Latency and r_min of every recipe. With `measure`, where the device's backend measures, the dense
    structure of every recipe is measured once on a shape-only file (remeasured() replaces that with the
    real file once it exists) and the roofline is calibrated by measured/predicted for that recipe (ggml's
    kernels differ by type more than the bytes say on a compute-bound CPU)."""
    return [option(base, device, name, device.latency_of(base, name) if measure else None, budget_ms, max_ratio)
            for name in names]


def option(base: Structure, device: Device, name: QuantRecipe, lat: LatencyReport | None, budget_ms: float | None,
           max_ratio: float) -> QuantOption:
    """One recipe's option from the dense model's figures `lat` (None: predicted)."""
    pred = device.predictor(name).calibrated(lat, base)
    lat = lat or pred.roofline(base)
    top = budget.uniform(base, max_ratio, name)
    floor = pred.predict(top)
    worst = budget.binding(budget.constraints(floor, budget.ram_of(top, name, device.profile),
                                              device.profile, budget_ms))
    dense = budget.constraints(lat, budget.ram_of(base, name, device.profile), device.profile, budget_ms)
    now = budget.binding(dense)
    r_min = 0.0 if all(c.ok for c in dense) else _r_min(base, device.profile, pred, budget_ms, max_ratio)
    size = base.gguf_bytes(name)
    return QuantOption(name, round(lat.decode_ms_per_token, 4), lat.measured, r_min, size,
                       round(8 * size / base.params(), 3), floor_ms=round(floor.decode_ms_per_token, 4),
                       prefill_tps=round(lat.prefill_tps, 2), floor_margin=round(worst.margin, 4),
                       floor_binding=worst.describe(), binding=now.describe())


def predictor(o: QuantOption, base: Structure, device: Device) -> Predictor:
    """The device's predictor at o's recipe, calibrated by o's dense figures (measured once per recipe, by
    options() or remeasured(); scale 1.0 up to o's rounding where they are predicted)."""
    p = device.predictor(o.recipe)
    dense = p.roofline(base)
    figures = dataclasses.replace(dense, decode_ms_per_token=o.decode_ms, prefill_tps=o.prefill_tps or dense.prefill_tps)
    return p.calibrated(figures, base)


def remeasured(opts: Sequence[QuantOption], base: Structure, device: Device, folder: Path, budget_ms: float | None,
               max_ratio: float) -> list[QuantOption]:
    """Options whose dense file exists in `folder` (dense_file) measured on that real file where the backend
    measures — the figures the shipped file will show, not a shape-only stand-in's (which disagreed by ~30%
    on this host) — with r_min solved again; the others unchanged."""
    if not device.measures:
        return list(opts)
    out = []
    for o in opts:
        path = dense_file(folder, o.recipe)
        if path.is_file() and not o.real_file:
            lat = device.measure_file(path, o.recipe)
            o = dataclasses.replace(option(base, device, o.recipe, lat, budget_ms, max_ratio), ppl=o.ppl, kl=o.kl,
                                    real_file=True)
        out.append(o)
    return out


def _r_min(base: Structure, profile: Any, pred: Predictor, budget_ms: float | None, max_ratio: float) -> float | None:
    """The smallest uniform share of the decoder to prune for every limit to hold on the calibrated `pred`,
    for a dense model that misses one (> 0; None: even max_ratio does not)."""
    try:
        sol = budget.solve(base, profile, pred, "uniform", max_ratio=max_ratio, decode_ms=budget_ms)
    except LatencyError:
        return None
    return max(round(1.0 - sol.structure.decoder_params() / base.decoder_params(), 4), 0.0001)


def gguf_ppl(path: str | Path, windows: np.ndarray, threads: int = 2) -> float:
    """Perplexity of a GGUF on token windows [n, seq_len] with llama.cpp (same ids as torch)."""
    return gguf_scores(path, windows, threads=threads)[0]


def gguf_scores(path: str | Path, windows: np.ndarray, reference: Any = None, threads: int = 2) -> tuple[float, float | None]:
    """(perplexity, KL(reference ‖ GGUF) or None) of a GGUF on token windows [n, seq_len] with llama.cpp;
    `reference`: the dense torch model."""
    llm = llama_runner.open_gguf(path, n_ctx=int(windows.shape[1]), threads=threads)
    try:
        ref = validation.torch_logits_fn(reference) if reference is not None else None
        s = validation.score_windows(validation.gguf_logits_fn(llm), windows, ref)
        return s.ppl, (float(np.mean(s.kl)) if s.kl else None)
    finally:
        llm.close()


def score(opts: list[QuantOption], f16: Path, folder: Path, windows: np.ndarray, imatrix: Any,
          pick: Callable[[QuantOption], bool], progress: Callable[[str], None] | None = None,
          threads: int | None = None, reference: Any = None) -> list[QuantOption]:
    """Quantize the dense F16 GGUF with every picked recipe (kept as folder/dense-<recipe>.gguf) and
    measure its perplexity on `windows` — and its KL to `reference` (the dense torch model) when given;
    the others are returned unchanged. Scores are kept in folder/candidate_scores.json per windows, so a
    resumed (or re-budgeted) run re-scores nothing."""

    cache_path, key = Path(folder) / SCORES_FILE, windows_key(torch.as_tensor(windows))
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    cache = cache if cache.get("windows") == key else {"windows": key, "ppl": {}}
    cache.setdefault("kl", {})
    out = []
    for o in opts:
        if o.ppl is None and pick(o):
            name = o.recipe.name
            if name not in cache["ppl"] or (reference is not None and name not in cache["kl"]):
                if progress:
                    progress(name)
                path = dense_file(folder, o.recipe)
                if not path.is_file():
                    quantize.quantize(f16, path, o.recipe, threads, imatrix)
                ppl, kl = gguf_scores(path, windows, reference)
                cache["ppl"][name] = round(ppl, 4)
                if kl is not None:
                    cache["kl"][name] = round(kl, 5)
                write_json(cache_path, cache)
            o = dataclasses.replace(o, ppl=cache["ppl"][name], kl=cache["kl"].get(name))
        out.append(o)
    return out


def dense_file(folder: Path, recipe: QuantRecipe) -> Path:
    return Path(folder) / f"dense-{recipe.label}.gguf"


def best_quant_only(opts: Sequence[QuantOption]) -> QuantOption | None:
    """The quant-only option with the lowest measured perplexity (None if no recipe meets the budget)."""
    scored = [o for o in opts if o.quant_only and o.ppl is not None and math.isfinite(o.ppl)]
    return min(scored, key=lambda o: o.ppl) if scored else None


def unreachable_message(opts: Sequence[QuantOption], max_ratio: float) -> str:
    """One line for a budget that no (quant, ratio) pair meets: the best reachable figure and its pair."""
    best = max(opts, key=lambda o: o.floor_margin if o.floor_margin is not None else -math.inf)
    return (f"the budget cannot be met by any quant recipe with up to {max_ratio:.0%} of the decoder pruned: "
            f"the best reachable is {best.recipe} with {max_ratio:.0%} pruned: {best.floor_binding}; relax the "
            "budget or raise --max-ratio")
