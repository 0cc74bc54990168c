"""Quantize an F16 GGUF with llama.cpp's own quantizer (llama_cpp.llama_model_quantize) and report the
tensor types it really chose, including fall-backs for rows that are not a multiple of the block size."""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from adaprune_edge.errors import ConfigError, ExportError
from adaprune_edge.gguf.names import parse_name
from adaprune_edge.quant import FTYPES, QuantRecipe, check_installed, check_output_type
from adaprune_edge.archs.structure import Structure
from adaprune_edge.runtime.llamacpp import _quiet_stderr
from adaprune_edge.archs.gguf_structure import structure_of_gguf
from adaprune_edge.runs import atomic_path

KNOWN = tuple(FTYPES)


@dataclass(frozen=True)
class TensorType:
    """A weight tensor's ggml type: what archs/structure.py predicts, what the file holds, whether it fell back."""

    name: str
    expected: str
    actual: str
    fallback: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TensorType":
        return cls(**d)


@dataclass(frozen=True)
class QuantReport:
    """Result of a quantization: file size (bytes), bits per weight, fall-backs, prediction mismatches."""

    quant: QuantRecipe
    path: str
    file_bytes: int
    params: int
    fallbacks: tuple[TensorType, ...]
    mismatches: tuple[TensorType, ...]

    @property
    def bits_per_weight(self) -> float:
        """File bits per parameter (as llama.cpp prints BPW)."""
        return 8 * self.file_bytes / max(1, self.params)

    def to_dict(self) -> dict[str, Any]:
        return {"quant": self.quant.name, "path": self.path, "file_bytes": self.file_bytes, "params": self.params,
                "bits_per_weight": round(self.bits_per_weight, 3),
                "fallbacks": [t.to_dict() for t in self.fallbacks],
                "mismatches": [t.to_dict() for t in self.mismatches]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "QuantReport":
        """bits_per_weight is derived from file_bytes and params."""
        return cls(QuantRecipe.parse(d["quant"]), d["path"], d["file_bytes"], d["params"],
                   tuple(TensorType.from_dict(t) for t in d["fallbacks"]),
                   tuple(TensorType.from_dict(t) for t in d["mismatches"]))


def quantize(src: str | Path, dst: str | Path, quant: QuantRecipe, threads: int | None = None,
             imatrix: Any = None) -> None:
    """llama.cpp-quantize F16 GGUF `src` into `dst` with recipe `quant` (atomic; llama.cpp's log silenced).

    Tensors whose rows force a fall-back get the recipe's fb= type as per-tensor overrides; out= sets the
    output (tied embedding) type; `imatrix` (an imatrix.Imatrix) is passed when the recipe says so."""
    import llama_cpp

    r = check_installed(quant)
    if r.is_float:
        raise ConfigError(f"{r.ftype} is written directly by the exporter, not quantized")
    if r.imatrix and imatrix is None:
        raise ConfigError(f"recipe {r.name} needs an importance matrix (calibration statistics)")
    st = structure_of_gguf(src)
    check_output_type(r, st.hidden)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(r.ftype_id)
    params.nthread = threads or (os.cpu_count() or 1)
    keep = _steer(params, r, st, imatrix if r.imatrix else None)  # ctypes arrays must outlive the call
    _run(src, dst, params, r.name)
    del keep


def quantize_pure(src: str | Path, dst: str | Path, qtype: str, imatrix: Any = None, threads: int | None = None) -> None:
    """Every tensor of F16 GGUF `src` at ggml type `qtype` (llama.cpp's `--pure`, token embedding and output
    included; llama.cpp's fall-back where a row does not fit), with `imatrix` if given."""
    import llama_cpp
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as QT, LlamaFileType

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(LlamaFileType[f"MOSTLY_{PURE_FTYPE.get(qtype, qtype)}"])
    params.nthread = threads or (os.cpu_count() or 1)
    params.pure = True
    if GGML_QUANT_SIZES[QT[qtype]][0] == 32:  # an explicit embedding type skips llama.cpp's fall-back
        params.token_embedding_type = params.output_tensor_type = int(QT[qtype])
    keep: list[Any] = []
    if imatrix is not None:
        carr, bufs = imatrix.to_ctypes(structure_of_gguf(src))
        params.imatrix = ctypes.cast(carr, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
        keep += [carr, bufs]
    _run(src, dst, params, f"pure {qtype}")
    del keep


PURE_FTYPE = {"Q6_K": "Q6_K", "Q5_K": "Q5_K_M", "Q4_K": "Q4_K_M", "Q3_K": "Q3_K_M"}  # type → llama_ftype name


def _run(src: str | Path, dst: str | Path, params: Any, what: str) -> None:
    import llama_cpp

    with atomic_path(Path(dst)) as tmp:
        # llama.cpp logs from C (fd 2) and through llama-cpp-python's Python log callback (sys.stderr)
        with _quiet_stderr(), contextlib.redirect_stderr(io.StringIO()):
            rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
        if rc != 0:
            raise ExportError(f"llama.cpp failed to quantize {src} to {what} (code {rc})")


def _steer(params: Any, r: QuantRecipe, st: Structure, imatrix: Any) -> list[Any]:
    """Fill the per-tensor overrides, output type and imatrix of llama.cpp's quantize params."""
    import llama_cpp

    keep: list[Any] = []
    tensors = list(st.tensors(r))
    for t in tensors:
        if t.overridden and t.name == "token_embd.weight":
            params.token_embedding_type = int(t.qtype)
            params.output_tensor_type = int(t.qtype) if st.tied_embeddings else params.output_tensor_type
        elif t.overridden and t.name == "output.weight":
            params.output_tensor_type = int(t.qtype)
    over = [t for t in tensors if t.overridden and parse_name(t.name)[0] is not None]  # layer tensors
    if over:
        arr = (llama_cpp.llama_model_tensor_override * (len(over) + 1))()
        names = [f"^{t.name.replace('.', chr(92) + '.')}$".encode() for t in over]
        for slot, t, pat in zip(arr, over, names):
            slot.pattern, slot.type = pat, int(t.qtype)
        arr[len(over)].pattern = None
        params.tt_overrides = ctypes.cast(arr, ctypes.POINTER(llama_cpp.llama_model_tensor_override))
        keep += [arr, names]
    if imatrix is not None:
        carr, bufs = imatrix.to_ctypes(st)
        params.imatrix = ctypes.cast(carr, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
        keep += [carr, bufs]
    return keep


def write_quantized(dst: Path, quant: QuantRecipe, write_f16: Callable[[Path], Any], threads: int | None = None,
                    imatrix: Any = None) -> Any:
    """Call write_f16(tmp) to produce an F16 GGUF next to `dst`, quantize it into `dst`, delete the temp.

    Returns write_f16's result with path and file size replaced by the quantized file's."""
    import dataclasses

    tmp = dst.with_name(f".{dst.name}.f16-{os.getpid()}.gguf")
    try:
        res = write_f16(tmp)
        quantize(tmp, dst, quant, threads, imatrix)
    finally:
        tmp.unlink(missing_ok=True)
    if dataclasses.is_dataclass(res) and hasattr(res, "file_bytes"):
        return dataclasses.replace(res, path=str(dst), file_bytes=dst.stat().st_size)
    return res


def tensor_types(path: str | Path) -> dict[str, str]:
    """ggml type name of every tensor in a GGUF."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    return {t.name: t.tensor_type.name for t in reader.tensors}


def type_mix(path: str | Path) -> list[tuple[str, str, int, int]]:
    """The real ggml types of a GGUF per role: (role, type, tensors, bytes), a row per (role, type) in the
    file's tensor order ('attn_q', 'Q5_0', 30, 3_110_400); global tensors ('token_embd', 'output_norm')
    are their own role."""
    import gguf

    mix: dict[tuple[str, str], list[int]] = {}
    for t in gguf.GGUFReader(str(path)).tensors:
        row = mix.setdefault((parse_name(t.name)[1], t.tensor_type.name), [0, 0])
        row[0] += 1
        row[1] += int(t.n_bytes)
    return [(role, kind, n, size) for (role, kind), (n, size) in mix.items()]


def report(path: str | Path, structure: Structure, quant: QuantRecipe) -> QuantReport:
    """Compare the real tensor types of `path` with structure.tensors(quant); list fall-backs."""
    actual = tensor_types(path)
    rows = []
    for t in structure.tensors(quant):
        rows.append(TensorType(t.name, t.qtype.name, actual.get(t.name, "missing"),
                               t.fallback))
    fallbacks = tuple(r for r in rows if r.fallback)
    mismatches = tuple(r for r in rows if r.expected != r.actual)
    return QuantReport(quant, str(path), Path(path).stat().st_size, structure.params(), fallbacks, mismatches)
