"""The `predict` latency backend: a roofline model of llama.cpp on a CPU, and its least-squares calibration.

Decode streams all layer weights, the whole output projection and the KV cache written so far, and
multiplies every weight once (dequantize + dot product), so

    decode ms/token = (weight bytes + KV bytes at the position) / effective bandwidth
                      + decode FLOP / effective decode compute
                      + n_layer x per-layer overhead + per-token overhead

On a board (Raspberry Pi) the bytes term dominates (memory-bound); on a fast server core with a model of
~100 MB the dequantize/dot term does (this host: the fit puts all of decode on it, and K-quants and Q8_0 of
the same shape decode equally fast). The fit (non-negative least squares) decides per device.

Prefill is compute-bound: 2 FLOP per weight per prompt token plus attention (4 x heads x head_dim x
position per layer), so prefill tokens/s = compute / FLOP per token. With bandwidth in GB/s, 1 MB read
costs 1/bandwidth ms — the fitted slope is read off directly."""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from adaprune_edge.errors import LatencyError
from adaprune_edge.gguf.names import ATTN_K, ATTN_Q, OUTPUT, TOKEN_EMBD, parse_name, tensor_name
from adaprune_edge.latency.backends import BenchSettings, LatencyReport, register_backend
from adaprune_edge.archs.structure import Structure
from adaprune_edge.errors import AdapruneError
from adaprune_edge.gguf.header import read_header
from adaprune_edge.quant import QuantRecipe, ftype_name

KV_BYTES_PER_ELEM = 2  # llama.cpp's default F16 KV cache


@dataclass(frozen=True)
class Workload:
    """What one model costs per token. decode_bytes: weight bytes read per decoded token; kv_bytes_per_pos:
    KV cache bytes per context position (all layers, K and V); matmul_flops: FLOP per prompt token in the
    layer matmuls; attn_flops_per_pos: attention FLOP per token per earlier position."""

    decode_bytes: int
    n_layer: int
    kv_bytes_per_pos: int
    matmul_flops: int
    attn_flops_per_pos: int
    decode_flops: int = 0  # FLOP per decoded token in all matmuls incl. the output projection
    ftype: str = ""  # llama.cpp file type (Q4_K_M, Q8_0, ...): which per-type rates apply


    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_structure(cls, st: Structure, quant: QuantRecipe) -> "Workload":
        d = st.head_dim
        matmul = 2 * (st.decoder_params() - st.n_layer * 2 * st.hidden)  # layer matmuls, norms excluded
        return cls(decode_bytes=st.decode_bytes_per_token(quant), n_layer=st.n_layer,
                   kv_bytes_per_pos=sum(2 * s.n_head_kv * d * KV_BYTES_PER_ELEM for s in st.layers),
                   matmul_flops=matmul, attn_flops_per_pos=sum(4 * s.n_head * d for s in st.layers),
                   decode_flops=matmul + 2 * st.vocab * st.hidden, ftype=quant.ftype)


@dataclass(frozen=True)
class Roofline:
    """Effective device constants: bandwidth GB/s, compute GFLOP/s, overheads in ms."""

    mem_bandwidth_gbs: float
    compute_gflops: float
    overhead_ms_per_layer: float = 0.0
    overhead_ms_per_token: float = 0.0
    decode_gflops: float = 0.0  # effective dequantize+dot rate while decoding; 0 = not a limit
    type_rates: tuple[tuple[str, float, float], ...] = ()  # (file type, decode GFLOP/s, prompt GFLOP/s)

    @classmethod
    def from_settings(cls, s: BenchSettings) -> "Roofline":
        return cls(s.mem_bandwidth_gbs, s.compute_gflops, s.overhead_ms_per_layer, s.overhead_ms_per_token,
                   s.decode_gflops, tuple(tuple(r) for r in s.type_rates))

    def rates(self, ftype: str) -> tuple[float, float]:
        """(decode, prompt) GFLOP/s for a file type: its own fitted rates where `profile` measured the type,
        else the device-wide ones (ggml's kernels differ by type: K-quants, legacy and float types)."""
        own = next(((d, c) for t, d, c in self.type_rates if t == ftype), None)
        return own or (self.decode_gflops, self.compute_gflops)

    def decode_ms(self, w: Workload, position: float) -> float:
        mb_read = (w.decode_bytes + w.kv_bytes_per_pos * position) / 1e6
        rate = self.rates(w.ftype)[0]
        dot = w.decode_flops / 1e6 / rate if rate > 0 else 0.0  # GFLOP / (GFLOP/s) in ms
        return mb_read / self.mem_bandwidth_gbs + dot + w.n_layer * self.overhead_ms_per_layer + self.overhead_ms_per_token

    def prefill_tps(self, w: Workload, n_prompt: int) -> float:
        return self.rates(w.ftype)[1] / prompt_gflop(w, n_prompt)

    def report(self, w: Workload, s: BenchSettings) -> LatencyReport:
        """Predicted figures for settings s (decode at the mean position n_prompt + n_gen/2)."""
        return LatencyReport(backend="predict", measured=False, prefill_tps=self.prefill_tps(w, s.n_prompt),
                             decode_ms_per_token=self.decode_ms(w, s.n_prompt + s.n_gen / 2), n_prompt=s.n_prompt,
                             n_gen=s.n_gen, threads=s.threads, tool="roofline")


def prompt_gflop(w: Workload, n_prompt: int) -> float:
    """GFLOP per prompt token, averaged over a prompt of n_prompt tokens (matmuls + attention)."""
    return (w.matmul_flops + w.attn_flops_per_pos * n_prompt / 2) / 1e9


def predict(structure: Structure, quant: QuantRecipe, profile: Any, settings: BenchSettings | None = None) -> LatencyReport:
    """Cheap predicted latency of `structure` at `quant` on a DeviceProfile (microseconds; no files)."""
    s = settings or BenchSettings.from_profile(profile, backend="predict")
    return Roofline.from_settings(s).report(Workload.from_structure(structure, quant), s)


def workload_from_gguf(path: Path) -> Workload:
    """Workload of a GGUF file from its tensor table (any llama-family architecture, uniform or not)."""

    try:
        meta, tensors = read_header(path)
    except AdapruneError as e:
        raise LatencyError(str(e)) from None
    t = {x.name: x for x in tensors}
    embd_name, output_name = tensor_name(TOKEN_EMBD), tensor_name(OUTPUT)
    if embd_name not in t:
        raise LatencyError(f"{path}: no {embd_name} tensor; not a llama-family GGUF")
    embd = t[embd_name]
    row = embd.n_bytes // embd.rows
    weights = sum(x.n_bytes for n, x in t.items() if n != embd_name)
    decode = weights + row + (0 if output_name in t else embd.n_bytes)  # tied: the output reads it all
    layer_of = {n: parse_name(n)[0] for n in t}
    blocks = sorted({i for i in layer_of.values() if i is not None})
    kv = sum(2 * t[tensor_name(ATTN_K, i)].rows * KV_BYTES_PER_ELEM for i in blocks)
    attn = sum(4 * t[tensor_name(ATTN_Q, i)].rows for i in blocks)
    params = sum(int(np.prod(x.shape)) for n, x in t.items() if layer_of[n] is not None and len(x.shape) == 2)
    output = int(np.prod(t.get(output_name, embd).shape))
    ftype = ftype_name(meta.get("general.file_type")) or ""
    return Workload(decode, len(blocks), kv, 2 * params, attn, 2 * (params + output), ftype)


def _constants(s: BenchSettings) -> list:
    """The roofline constants a prediction depends on (cache key part)."""
    return ([s.mem_bandwidth_gbs, s.compute_gflops, s.overhead_ms_per_layer, s.overhead_ms_per_token]
            + ([s.decode_gflops] if s.decode_gflops else []) + ([list(map(list, s.type_rates))] if s.type_rates else []))


@register_backend("predict", measures=False, on_this_host=False, key_fields=_constants)
def measure_predict(path: Path, settings: BenchSettings) -> LatencyReport:
    """Roofline prediction for a GGUF file with the settings' constants."""
    return Roofline.from_settings(settings).report(workload_from_gguf(path), settings)


# -- calibration -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FitResult:
    """A fitted Roofline and its relative decode errors (|pred - meas| / meas) on training/held-out points."""

    roofline: Roofline
    train_errors: tuple[float, ...]
    test_errors: tuple[float, ...]
    prefill_test_errors: tuple[float, ...] = ()

    def summary(self) -> dict[str, float]:
        e = self.test_errors or self.train_errors
        return {"median_rel_error": statistics.median(e), "max_rel_error": max(e)}


def _nnls(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    from scipy.optimize import nnls

    return nnls(x, y)[0]


NOT_LIMITING_GBS = 1000.0  # bandwidth recorded when the fit finds decode time does not depend on bytes


def fit(points: Sequence[tuple[Workload, LatencyReport]]) -> Roofline:
    """Least-squares (non-negative) fit of 1/bandwidth, 1/decode compute, per-layer and per-token overhead
    to measured decode ms/token, and of compute GFLOP/s to prefill. The per-token term is fitted only when
    n_layer varies."""
    if len(points) < 2:
        raise LatencyError("fitting the roofline needs at least 2 measured shapes")
    vary = len({w.n_layer for w, _ in points}) > 1
    rows = [[(w.decode_bytes + w.kv_bytes_per_pos * (r.n_prompt + r.n_gen / 2)) / 1e6, w.decode_flops / 1e9, w.n_layer]
            + ([1.0] if vary else []) for w, r in points]
    coef = _nnls(np.array(rows), np.array([r.decode_ms_per_token for _, r in points]))
    if coef[0] <= 0 and coef[1] <= 0:
        raise LatencyError("decode time does not grow with bytes read across these shapes; measure more varied shapes")
    gflop = np.array([(w.matmul_flops + w.attn_flops_per_pos * r.n_prompt / 2) / 1e9 for w, r in points])
    secs = np.array([1.0 / r.prefill_tps for _, r in points])
    compute = float(gflop @ gflop / (gflop @ secs))  # least squares through the origin: s = gflop / compute
    bandwidth = float(1.0 / coef[0]) if coef[0] > 0 else NOT_LIMITING_GBS
    decode_gflops = float(1e3 / coef[1]) if coef[1] > 0 else 0.0
    rf = Roofline(bandwidth, compute, float(coef[2]), float(coef[3]) if vary else 0.0, decode_gflops)
    return dataclasses.replace(rf, type_rates=_type_rates(rf, points))


def _type_rates(rf: Roofline, points: Sequence[tuple[Workload, LatencyReport]]) -> tuple[tuple[str, float, float], ...]:
    """Per file type with >= 2 points: the decode compute rate fitted to what the shared terms (bytes,
    overheads) leave of its decode times, and its prompt rate (least squares through the origin)."""
    out = []
    for ftype in sorted({w.ftype for w, _ in points if w.ftype}):
        pts = [(w, r) for w, r in points if w.ftype == ftype]
        if len(pts) < 2:
            continue
        base = dataclasses.replace(rf, decode_gflops=0.0, type_rates=())
        rest = np.array([r.decode_ms_per_token - base.decode_ms(w, r.n_prompt + r.n_gen / 2) for w, r in pts])
        gflop = np.array([w.decode_flops / 1e9 for w, _ in pts])
        slope = float(gflop @ rest / (gflop @ gflop))  # s/GFLOP x 1e3 (ms)
        decode = 1e3 / slope if slope > 0 else rf.decode_gflops
        pg = np.array([prompt_gflop(w, r.n_prompt) for w, r in pts])
        secs = np.array([1.0 / r.prefill_tps for _, r in pts])
        out.append((ftype, round(decode, 2), round(float(pg @ pg / (pg @ secs)), 2)))
    return tuple(out)


def rel_errors(rf: Roofline, points: Sequence[tuple[Workload, LatencyReport]]) -> tuple[float, ...]:
    """|predicted - measured| / measured decode ms/token for each point."""
    return tuple(abs(rf.decode_ms(w, r.n_prompt + r.n_gen / 2) - r.decode_ms_per_token) / r.decode_ms_per_token
                 for w, r in points)


def fit_and_score(train: Sequence[tuple[Workload, LatencyReport]],
                  test: Sequence[tuple[Workload, LatencyReport]]) -> FitResult:
    """Fit on `train`, report relative decode (and prompt) errors on `test`."""
    rf = fit(train)
    pre = tuple(abs(rf.prefill_tps(w, r.n_prompt) - r.prefill_tps) / r.prefill_tps for w, r in test)
    return FitResult(rf, rel_errors(rf, train), rel_errors(rf, test), pre)
