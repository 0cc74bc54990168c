"""Per-tensor quantization error: for every weight tensor of an F16 GGUF and every ggml type legal for its
rows, the imatrix-weighted relative error of llama.cpp's own quantization,

    err(t, T) = sum_c m_c sum_r (deq(q_T(W))_rc - W_rc)^2  /  sum_c m_c sum_r W_rc^2

(m_c: the importance matrix, mean squared input activation of column c — so err is the relative error of
the layer's output on the calibration text). Each type is one `pure` llama.cpp quantization of the whole
file with the imatrix (every tensor at that type, or llama.cpp's fall-back where its rows do not fit, which
is skipped), read back with gguf-py's dequantizer. 32-block types fit any row that is a multiple of 32;
K- and IQ4_XS types need multiples of 256."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from adaprune_edge.errors import ExportError
from adaprune_edge.gguf.header import read_header, tensor_bytes
from adaprune_edge.runs import write_json

# legal for rows that are multiples of 32 (all of them here), then types needing 256-multiples
TYPES_32 = ("Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0", "IQ4_NL")
TYPES_256 = ("Q6_K", "Q5_K", "Q4_K", "IQ4_XS", "Q3_K")
TYPES = TYPES_32 + TYPES_256
PROBE_TYPE = "Q4_0"  # the type probes quantize one tensor to (legal for every row that is a multiple of 32)


@dataclass(frozen=True)
class Sensitivity:
    """errors[tensor][type]: imatrix-weighted relative error; alpha[tensor]: predicted KL (nats/token) per
    unit of error (probe.py); probes[tensor]: the KL measured with that tensor alone at PROBE_TYPE."""

    key: str
    errors: dict[str, dict[str, float]]
    alpha: dict[str, float]
    probes: dict[str, float]

    def damage(self, tensor: str, qtype: str) -> float:
        """Predicted KL to the dense model from `tensor` at `qtype` (0 for a type it is not measured at)."""
        return self.alpha[tensor] * self.errors[tensor].get(qtype, 0.0)

    def types(self, tensor: str) -> list[str]:
        return list(self.errors[tensor])

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "errors": self.errors, "alpha": self.alpha, "probes": self.probes}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Sensitivity":
        return cls(d["key"], d["errors"], d["alpha"], d["probes"])


def compute(model: Any, f16: Path, imatrix: Any, windows: Any, work: Path, arch: str, threads: int | None = None,
            progress: Callable[[str], None] | None = None) -> Sensitivity:
    """The Sensitivity of torch `model` exported as `f16` (GGUF architecture `arch`): errors of every type,
    probes calibrated on `windows` (a few calibration windows). Cached in work/sensitivity-<key>.json."""
    from adaprune_edge.archs import adapter_for
    from adaprune_edge.archs.structure import Structure
    from adaprune_edge.bitalloc import probe

    k = key(f16, imatrix) + "-" + hashlib.sha256(np.asarray(windows).tobytes()).hexdigest()[:8]
    path = Path(work) / f"sensitivity-{k}.json"
    if path.is_file():
        return Sensitivity.from_dict(json.loads(path.read_text()))
    names = [t.name for t in read_header(f16)[1] if len(t.shape) == 2]
    picks = probe.probe_tensors(names)
    kept: dict[str, np.ndarray] = {}
    errors = measure(f16, imatrix, work, threads=threads, progress=progress, keep={(n, PROBE_TYPE) for n in picks},
                     kept=kept)
    adapter, st = adapter_for(model), Structure.from_model(model)
    if progress:
        progress(f"KL probes ({len(kept)} tensors)")
    kls = probe.kl_probes(model, windows, kept, lambda n, a: adapter.from_gguf(n, a, st, arch))
    first = {n: errors[n][PROBE_TYPE] for n in kls}
    sens = Sensitivity(k, errors, probe.alphas(names, first, kls), kls)
    write_json(path, sens.to_dict())
    return sens


def key(f16: Path, imatrix: Any, types: Iterable[str] = TYPES) -> str:
    """Cache key: the F16 file's size and first/last MiB, the imatrix's values, the types."""
    h = hashlib.sha256(",".join(types).encode())
    size = f16.stat().st_size
    with open(f16, "rb") as fh:
        h.update(str(size).encode() + fh.read(1 << 20))
        fh.seek(max(0, size - (1 << 20)))
        h.update(fh.read())
    for name in sorted(imatrix.sums):
        h.update(name.encode() + np.ascontiguousarray(imatrix.sums[name]).tobytes())
    return h.hexdigest()[:16]


def _col_sq(a: np.ndarray) -> np.ndarray:
    """Sum over rows of a² per column."""
    return np.einsum("rc,rc->c", a, a)


def measure(f16: Path, imatrix: Any, work: Path, types: Iterable[str] = TYPES, threads: int | None = None,
            progress: Callable[[str], None] | None = None, keep: set[tuple[str, str]] = frozenset(),
            kept: dict[str, np.ndarray] | None = None) -> dict[str, dict[str, float]]:
    """err(tensor, type) for every 2-D tensor of `f16` and every type in `types` llama.cpp keeps for it;
    the dequantized values of the (tensor, type) pairs in `keep` go into `kept` (by tensor)."""
    from adaprune_edge.exporters.quantize import quantize_pure

    ref = {t.name: _values(t, raw) for t, raw in tensor_bytes(f16) if len(t.shape) == 2}
    w2 = {n: _col_sq(w) for n, w in ref.items()}
    out: dict[str, dict[str, float]] = {name: {} for name in ref}
    for qtype in types:
        if progress:
            progress(qtype)
        tmp = Path(work) / f".sensitivity-{qtype}.gguf"
        try:
            quantize_pure(f16, tmp, qtype, imatrix, threads)
            for t, raw in tensor_bytes(tmp):
                if t.name in ref and t.qtype.name == qtype:
                    deq = _values(t, raw)
                    m = imatrix.mean(t.name) if t.name in imatrix.sums else np.ones(t.cols, np.float32)
                    out[t.name][qtype] = float(m @ _col_sq(deq - ref[t.name]) / max(float(m @ w2[t.name]), 1e-30))
                    if (t.name, qtype) in keep and kept is not None:
                        kept[t.name] = deq
        finally:
            tmp.unlink(missing_ok=True)
    if not any(out.values()):
        raise ExportError(f"{f16}: llama.cpp quantized no tensor to any of {', '.join(types)}")
    return out


def _values(t: Any, raw: np.ndarray) -> np.ndarray:
    """A GGUF tensor's values as float32 (rows x cols), dequantized if need be."""
    import gguf

    return np.asarray(gguf.quants.dequantize(raw, t.qtype), dtype=np.float32).reshape(t.shape)
