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
from adaprune_edge.structure import QUANT_TYPES, Structure

# quant name → llama_ftype value (llama.h); F16/F32 are written directly, never quantized
FTYPES = {"Q8_0": 7, "Q6_K": 18, "Q5_K_M": 17, "Q4_K_M": 15, "Q4_0": 2}
FLOAT = ("F32", "F16")
KNOWN = tuple(QUANT_TYPES)


def check_quant(quant: str) -> str:
    """Return `quant` if known, else ConfigError listing the known types."""
    if quant not in QUANT_TYPES:
        from adaprune_edge.registry import unknown_name_message

        raise ConfigError(unknown_name_message("quant type", quant, list(KNOWN)))
    return quant


@dataclass(frozen=True)
class TensorType:
    """A weight tensor's ggml type: what structure.py predicts, what the file holds, whether it fell back."""

    name: str
    expected: str
    actual: str
    fallback: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class QuantReport:
    """Result of a quantization: file size (bytes), bits per weight, fall-backs, prediction mismatches."""

    quant: str
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
        return {"quant": self.quant, "path": self.path, "file_bytes": self.file_bytes, "params": self.params,
                "bits_per_weight": round(self.bits_per_weight, 3),
                "fallbacks": [t.to_dict() for t in self.fallbacks],
                "mismatches": [t.to_dict() for t in self.mismatches]}


def quantize(src: str | Path, dst: str | Path, quant: str, threads: int | None = None) -> None:
    """llama.cpp-quantize F16 GGUF `src` into `dst` (atomic; llama.cpp's stderr log is silenced)."""
    import llama_cpp

    from adaprune_edge.llama_runner import _quiet_stderr
    from adaprune_edge.runs import atomic_path

    check_quant(quant)
    if quant in FLOAT:
        raise ConfigError(f"{quant} is written directly by the exporter, not quantized")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[quant]
    params.nthread = threads or (os.cpu_count() or 1)
    with atomic_path(Path(dst)) as tmp:
        # llama.cpp logs from C (fd 2) and through llama-cpp-python's Python log callback (sys.stderr)
        with _quiet_stderr(), contextlib.redirect_stderr(io.StringIO()):
            rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
        if rc != 0:
            raise ExportError(f"llama.cpp failed to quantize {src} to {quant} (code {rc})")


def write_quantized(dst: Path, quant: str, write_f16: Callable[[Path], Any], threads: int | None = None) -> Any:
    """Call write_f16(tmp) to produce an F16 GGUF next to `dst`, quantize it into `dst`, delete the temp.

    Returns write_f16's result with path and file size replaced by the quantized file's."""
    import dataclasses

    tmp = dst.with_name(f".{dst.name}.f16-{os.getpid()}.gguf")
    try:
        res = write_f16(tmp)
        quantize(tmp, dst, quant, threads)
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


def report(path: str | Path, structure: Structure, quant: str) -> QuantReport:
    """Compare the real tensor types of `path` with structure.tensors(quant); list fall-backs."""
    actual = tensor_types(path)
    rows = []
    for t in structure.tensors(quant):
        rows.append(TensorType(t.name, t.qtype.name, actual.get(t.name, "missing"),
                               t.fallback or actual.get(t.name) != _intended(structure, quant, t.name)))
    fallbacks = tuple(r for r in rows if r.fallback)
    mismatches = tuple(r for r in rows if r.expected != r.actual)
    return QuantReport(quant, str(path), Path(path).stat().st_size, structure.params(), fallbacks, mismatches)


def _intended(structure: Structure, quant: str, name: str) -> str:
    """The type llama.cpp would give `name` if every row size were a multiple of every block size."""
    from adaprune_edge.structure import LayerShape

    big = Structure(256 * 9, 256, structure.vocab, structure.n_layer_orig,
                    structure.kept_layers, tuple(LayerShape(s.n_head, s.n_head_kv, 256) for s in structure.layers),
                    structure.tied_embeddings)
    return next(t.qtype.name for t in big.tensors(quant) if t.name == name)
