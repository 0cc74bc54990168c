"""GGUF writer for (pruned) models of the supported families, straight from torch tensors with GGUFWriter.

What is written comes from a plan (exporters.gguf_plan: architecture, names, shapes, types, bytes;
printable for --dry-run) and a tensor source (a callable name → float32 ndarray): `torch_source(model, plan)`
for real weights, `random_source()` for shape-only files (`write_shape_only`, used for latency probes).
Uniform layers keep the family's llama.cpp architecture; per-layer widths go to `deci`, whose head counts
and FFN lengths are per-layer arrays (llama.cpp's other architectures read the arrays but build every layer
with layer 0's shapes). Files are written under a temp name and renamed (runs.atomic_path)."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from gguf import GGMLQuantizationType as QT, GGUFWriter

from adaprune_edge import __version__
from adaprune_edge.archs import ARCHS, HParams
from adaprune_edge.archs.base import PER_LAYER_ARCH
from adaprune_edge.gguf import keys as gguf_keys
from adaprune_edge.errors import ExportError
from adaprune_edge.exporters.gguf_plan import (ExportPlan, TensorSource,  # noqa: F401
                                               iter_plan_rows, model_biases, permute_qk, plan, plan_for_model,
                                               random_source, torch_source)
from adaprune_edge.exporters.vocab import TokenizerMeta
from adaprune_edge.gguf.tensor import GGUFTensor
from adaprune_edge.archs.structure import Structure
from adaprune_edge import models
from adaprune_edge.exporters import quantize
from adaprune_edge.exporters import vocab
from adaprune_edge.exporters.imatrix import flat_imatrix
from adaprune_edge.quant import F16, QuantRecipe
from adaprune_edge.runs import atomic_path

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ExportResult:
    """A written GGUF: path, architecture, tensor count, file size (bytes)."""

    path: str
    arch: str
    n_tensors: int
    file_bytes: int
    biases: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "biases": list(self.biases)}


# -- writing ------------------------------------------------------------------------------------------
def _add_hparams(w: GGUFWriter, p: ExportPlan) -> None:
    st, hp = p.structure, p.hparams
    heads = [s.n_head for s in st.layers]
    kv = [s.n_head_kv for s in st.layers]
    ff = [s.n_ff for s in st.layers]
    per_layer = p.arch == PER_LAYER_ARCH
    w.add_block_count(st.n_layer)
    w.add_context_length(hp.context_length)
    w.add_embedding_length(st.hidden)
    w.add_feed_forward_length(ff if per_layer else ff[0])
    w.add_head_count(heads if per_layer else heads[0])
    w.add_head_count_kv(kv if per_layer else kv[0])
    w.add_key_length(st.head_dim)
    w.add_value_length(st.head_dim)
    w.add_rope_dimension_count(st.head_dim)
    w.add_rope_freq_base(hp.rope_theta)
    w.add_layer_norm_rms_eps(hp.rms_eps)
    w.add_vocab_size(st.vocab)
    w.add_file_type(1 if any(t.qtype == QT.F16 for t in p.tensors) else 0)  # LLAMA_FTYPE_MOSTLY_F16 / ALL_F32
    ARCHS.get(p.family).add_kv(w, hp, st)


def _add_metadata(w: GGUFWriter, p: ExportPlan, name: str, source: str, recipe: dict[str, Any] | None,
                  shape_only: bool) -> None:
    pruned = p.structure.n_layer < p.structure.n_layer_orig or not p.structure.is_uniform or bool(recipe)
    w.add_name(name)
    w.add_description(f"{'Shape-only probe' if shape_only else 'Model'} written by adaprune-edge {__version__}"
                      f" from {source}; structure: {p.structure.condensed()}")
    w.add_bool(gguf_keys.PRUNED, pruned)
    w.add_bool(gguf_keys.SHAPE_ONLY, shape_only)
    w.add_string(gguf_keys.VERSION, __version__)
    w.add_string(gguf_keys.SOURCE_MODEL, source)
    w.add_string(gguf_keys.STRUCTURE, json.dumps(p.structure.to_dict(), sort_keys=True))
    w.add_string(gguf_keys.RECIPE, json.dumps(recipe or {}, sort_keys=True) or "{}")
    w.add_string(gguf_keys.BIAS_TENSORS, json.dumps(list(p.biases)))


def _materialise(t: GGUFTensor, source: TensorSource) -> np.ndarray:
    arr = source(t.name, t.shape) if getattr(source, "shape_only", False) else source(t.name)  # type: ignore[call-arg]
    if tuple(arr.shape) != t.shape:
        raise ExportError(f"tensor {t.name} has shape {tuple(arr.shape)}, the plan says {t.shape}")
    out = arr.astype(np.float16 if t.qtype == QT.F16 else np.float32)
    if t.qtype == QT.F16 and not np.isfinite(out).all():
        raise ExportError(f"tensor {t.name} overflows float16; export with --quant F32")
    return np.ascontiguousarray(out)


def check_disk(path: Path, n_bytes: int, margin: float = 1.05) -> None:
    """ExportError unless the folder of `path` has room for n_bytes (plus 5%)."""
    free = shutil.disk_usage(path.parent if path.parent.exists() else Path.cwd()).free
    if free < n_bytes * margin:
        raise ExportError(f"not enough disk space for {path}: need {n_bytes / 1e6:.1f} MB, {free / 1e6:.1f} MB free")


def write(path: str | Path, p: ExportPlan, source: TensorSource, tokenizer: TokenizerMeta, *, name: str = "model",
          source_model: str = "?", recipe: dict[str, Any] | None = None, progress: Progress | None = None) -> ExportResult:
    """Write the plan's tensors from `source` with `tokenizer`'s metadata to `path`, atomically."""
    path = Path(path)
    if tokenizer.n_vocab != p.structure.vocab:
        raise ExportError(f"tokenizer has {tokenizer.n_vocab} tokens but the embedding {p.structure.vocab} rows")
    check_disk(path, p.data_bytes + 64 * 1024 * 1024)
    shape_only = bool(getattr(source, "shape_only", False))
    with atomic_path(path) as tmp:
        w = GGUFWriter(str(tmp), p.arch)
        _add_hparams(w, p)
        _add_metadata(w, p, name, source_model, recipe, shape_only)
        tokenizer.add_to(w)
        for t in p.tensors:
            w.add_tensor_info(t.name, t.shape, np.dtype(np.float16 if t.qtype == QT.F16 else np.float32), t.n_bytes)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for i, t in enumerate(p.tensors):
            w.write_tensor_data(_materialise(t, source))
            if progress:
                progress(t.name, i + 1, len(p.tensors))
        w.close()
    return ExportResult(str(path), p.arch, len(p.tensors), path.stat().st_size, p.biases)


def write_model(model: Any, path: str | Path, tokenizer: TokenizerMeta, *, quant: QuantRecipe = F16,
                name: str = "model", source_model: str = "?", recipe: dict[str, Any] | None = None,
                progress: Progress | None = None, threads: int | None = None, imatrix: Any = None) -> ExportResult:
    """Export an HF (pruned) Llama to a GGUF at `path`: F16/F32 written directly, other quant types
    written as F16 to a temp file next to `path` and quantized by llama.cpp (quantize.write_quantized)."""
    p = plan_for_model(model, quant.ftype if quant.is_float else "F16")
    if not quant.is_float:
        check_disk(Path(path), p.data_bytes + p.structure.gguf_bytes(quant) + 64 * 1024 * 1024)

    def write_float(dst: Path) -> ExportResult:
        return write(dst, p, torch_source(model, p), tokenizer, name=name, source_model=source_model,
                     recipe=recipe, progress=progress)

    if quant.is_float:
        return write_float(Path(path))
    return quantize.write_quantized(Path(path), quant, write_float, threads, imatrix)


def write_shape_only(structure: Structure, path: str | Path, tokenizer_source: str | Path | TokenizerMeta | None = None,
                     quant: QuantRecipe = F16, hparams: HParams | None = None, seed: int = 0) -> ExportResult:
    """Write a SHAPE-ONLY GGUF: random weights with `structure`'s exact shapes, a real tokenizer, quantized.

    structure: the per-layer shape, written as its family's llama.cpp architecture (`deci` for per-layer
        widths) with the family's tensors (QK-norms, post-norms ...) and exactly `structure.vocab` token rows.
    path: output .gguf (written atomically; overwritten if it exists).
    tokenizer_source: a GGUF path to copy tokenizer.* metadata from, a TokenizerMeta, or None for the
        default model's GGUF (SmolLM2, 49152 tokens); cut or padded to `structure.vocab` tokens
        (vocab.resized). Metadata is cached per GGUF file in memory.
    quant: the recipe, F32/F16 written directly, others by llama.cpp's quantizer (so the
        tensor types and fall-backs are exactly those of a real export).
    hparams: context length / RoPE base / RMS eps (defaults: 8192, 1e4, 1e-5; latency does not depend on them
        except through the context you open it with).
    Returns the ExportResult (path, arch 'llama'|'qwen3'|...|'deci', tensor count, file bytes). A 135M-parameter F16
    file takes ~3 s; Q4_K_M adds a quantization pass. See `cached_shape_only` for a cache by structure key."""
    meta = vocab.resized(_tokenizer_meta(tokenizer_source), structure.vocab)
    p = plan(structure, hparams or HParams(), quant.ftype if quant.is_float else "F16", family=structure.family)
    name = f"shape-only {structure.key()}"

    def write_float(dst: Path) -> ExportResult:
        return write(dst, p, random_source(seed), meta, name=name, source_model="shape-only")

    if quant.is_float:
        return write_float(Path(path))
    return quantize.write_quantized(Path(path), quant, write_float, imatrix=flat_imatrix(structure))



def cached_shape_only(structure: Structure, quant: QuantRecipe = F16, tokenizer_source: str | Path | None = None,
                      cache: str | Path | None = None) -> Path:
    """Path of a shape-only GGUF for (structure, quant), written once into `cache` (default:
    models.cache_dir()/shape-only) and reused: file name `<structure.key()>-<quant.label>.gguf`."""
    folder = Path(cache) if cache else models.cache_dir() / "shape-only"
    path = folder / f"{structure.key()}-{quant.label}.gguf"
    if not path.is_file():
        write_shape_only(structure, path, tokenizer_source, quant)
    return path


def _tokenizer_meta(source: str | Path | TokenizerMeta | None) -> TokenizerMeta:
    if isinstance(source, TokenizerMeta):
        return source
    return vocab.from_gguf(source or models.default_gguf_path())


def read_plan_metadata(path: str | Path) -> dict[str, Any]:
    """Our adaprune.* keys and the architecture of a GGUF (for validation / reports)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    out: dict[str, Any] = {}
    for key in (*gguf_keys.ALL_OURS, gguf_keys.GENERAL_ARCHITECTURE, gguf_keys.GENERAL_NAME):
        f = reader.fields.get(key)
        if f is not None:
            out[key] = f.contents()
    return out
