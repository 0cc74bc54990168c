"""GGUF writer for (pruned) Llama-family models, straight from torch tensors with gguf's GGUFWriter.

Uniform layers → architecture `llama`; layers that differ in heads / KV heads / FFN width → `deci`, whose
head counts and FFN lengths are per-layer arrays (llama.cpp's `llama` ignores arrays and fails to load).
Q/K rows are permuted per layer as llama.cpp's converter does (LlamaModel.permute), with that layer's own
head counts. Tied embeddings: only token_embd is written (llama.cpp reuses it as the output). Biases from
bias compensation are carried as `blk.N.attn_output.bias` / `blk.N.ffn_down.bias`, which both graphs add
(src/models/llama.cpp, deci.cpp: `build_attn(..., wo, bo, ...)`, `build_ffn(..., ffn_down_b, ...)`);
a bias anywhere else is refused rather than dropped.

The writer is split into a plan (names, shapes, types, bytes: `plan`, printable for --dry-run) and a
tensor source (a callable name → float32 ndarray): `torch_source(model)` for real weights,
`random_source(structure)` for shape-only files (`write_shape_only`, used for latency probes).
Files are written under a temp name and renamed (runs.atomic_path)."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from gguf import GGMLQuantizationType as QT, GGUFWriter

from adaprune_edge import __version__
from adaprune_edge.gguf import keys as gguf_keys
from adaprune_edge.errors import ExportError
from adaprune_edge.gguf.tensor import GGUFTensor
from adaprune_edge.exporters.vocab import TokenizerMeta
from adaprune_edge.structure import Structure
from adaprune_edge import models
from adaprune_edge.exporters import quantize
from adaprune_edge.exporters import vocab
from adaprune_edge.imatrix import flat_imatrix
from adaprune_edge.quant import file_label
from adaprune_edge.runs import atomic_path

ARCH_UNIFORM, ARCH_PER_LAYER = "llama", "deci"
FLOAT_TYPES = {"F16": QT.F16, "F32": QT.F32}
# HF module → GGUF tensor name inside blk.N (weights and their optional biases)
LAYER_TENSORS = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
# biases llama.cpp's llama and deci graphs add (all optional tensors in llama-model.cpp)
CARRIED_BIASES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
TensorSource = Callable[[str], np.ndarray]
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class HParams:
    """Non-shape hyper-parameters llama.cpp needs: context length (tokens), RoPE base, RMS-norm epsilon."""

    context_length: int = 8192
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "HParams":
        return cls(**d)

    @classmethod
    def from_config(cls, cfg: Any) -> "HParams":
        rope = dict(getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {})
        kind = rope.get("rope_type", rope.get("type", "default"))
        if kind not in ("default", None):
            raise ExportError(f"RoPE scaling {kind!r} is not supported by the GGUF exporter yet (only plain RoPE)")
        theta = rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))
        return cls(int(getattr(cfg, "max_position_embeddings", 8192)), float(theta), float(cfg.rms_norm_eps))


@dataclass(frozen=True)
class ExportPlan:
    """Everything that will be written: architecture, shape, hyper-parameters, tensors."""

    arch: str
    structure: Structure
    hparams: HParams
    tensors: tuple[GGUFTensor, ...]
    biases: tuple[str, ...] = ()

    @property
    def data_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, "structure": self.structure.to_dict(), "hparams": self.hparams.to_dict(),
                "tensors": [t.to_dict() for t in self.tensors], "biases": list(self.biases),
                "data_bytes": self.data_bytes}


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


# -- plan ---------------------------------------------------------------------------------------------
def arch_for(structure: Structure) -> str:
    """`llama` when every kept layer has the same shape, else `deci` (per-layer arrays)."""
    return ARCH_UNIFORM if structure.is_uniform else ARCH_PER_LAYER


def plan(structure: Structure, hparams: HParams, float_type: str = "F16", biases: tuple[str, ...] = ()) -> ExportPlan:
    """The tensor list for `structure`: 2-D weights in `float_type`, norms and biases in F32."""
    if float_type not in FLOAT_TYPES:
        raise ExportError(f"unknown float type {float_type!r}; known: {', '.join(FLOAT_TYPES)}")
    wtype, h, d = FLOAT_TYPES[float_type], structure.hidden, structure.head_dim
    tensors = [GGUFTensor("token_embd.weight", (structure.vocab, h), wtype)]
    for i, s in enumerate(structure.layers):
        rows = {"attn_q": s.n_head * d, "attn_k": s.n_head_kv * d, "attn_v": s.n_head_kv * d, "attn_output": h,
                "ffn_gate": s.n_ff, "ffn_up": s.n_ff, "ffn_down": h}
        cols = {"attn_output": s.n_head * d, "ffn_down": s.n_ff}
        tensors.append(GGUFTensor(f"blk.{i}.attn_norm.weight", (h,), QT.F32))
        for name, r in rows.items():
            tensors.append(GGUFTensor(f"blk.{i}.{name}.weight", (r, cols.get(name, h)), wtype))
            if f"blk.{i}.{name}.bias" in biases:
                tensors.append(GGUFTensor(f"blk.{i}.{name}.bias", (r,), QT.F32))
        tensors.append(GGUFTensor(f"blk.{i}.ffn_norm.weight", (h,), QT.F32))
    tensors.append(GGUFTensor("output_norm.weight", (h,), QT.F32))
    if not structure.tied_embeddings:
        tensors.append(GGUFTensor("output.weight", (structure.vocab, h), wtype))
    return ExportPlan(arch_for(structure), structure, hparams, tuple(tensors), tuple(sorted(biases)))


# -- tensor sources -------------------------------------------------------------------------------------
def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's Q/K row order (convert_hf_to_gguf LlamaModel.permute): per head, interleave the two
    rotary halves. `n_head` is the layer's query heads for Q and its KV heads for K. Works on biases too."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _hf_name(gguf_name: str) -> str:
    if gguf_name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if gguf_name == "output_norm.weight":
        return "model.norm.weight"
    if gguf_name == "output.weight":
        return "lm_head.weight"
    _, i, module, kind = gguf_name.split(".")
    hf = {v: k for k, v in LAYER_TENSORS.items()}[module]
    return f"model.layers.{i}.{hf}.{kind}"


def model_biases(model: Any) -> tuple[str, ...]:
    """GGUF names of the model's bias tensors; ExportError for a bias llama.cpp's graphs would ignore."""
    found = []
    for name, _ in model.named_parameters():
        if not name.endswith(".bias"):
            continue
        parts = name.split(".")
        module = ".".join(parts[3:-1]) if name.startswith("model.layers.") else ""
        gguf_module = LAYER_TENSORS.get(module)
        if gguf_module not in CARRIED_BIASES:
            raise ExportError(f"bias {name} has no place in llama.cpp's llama/deci graphs; fold it first (refusing to drop it)")
        found.append(f"blk.{parts[2]}.{gguf_module}.bias")
    return tuple(found)


def torch_source(model: Any, structure: Structure) -> TensorSource:
    """Tensor source over an HF Llama's state dict, with Q/K permuted per layer (float32 ndarrays)."""
    import torch

    state = dict(model.named_parameters())
    state.update(dict(model.named_buffers()))

    def get(name: str) -> np.ndarray:
        hf = _hf_name(name)
        if hf not in state:
            raise ExportError(f"the model has no tensor {hf} (needed for {name})")
        with torch.no_grad():
            arr = state[hf].detach().to(torch.float32).cpu().numpy()
        return _permuted(name, arr, structure)

    return get


def _permuted(name: str, arr: np.ndarray, structure: Structure) -> np.ndarray:
    if not name.startswith("blk."):
        return arr
    _, i, module, _ = name.split(".")
    s = structure.layers[int(i)]
    if module == "attn_q":
        return permute_qk(arr, s.n_head)
    if module == "attn_k":
        return permute_qk(arr, s.n_head_kv)
    return arr


def random_source(seed: int = 0, std: float = 0.02) -> TensorSource:
    """Shape-only source: N(0, std) weights, ones for norms, zeros for biases (values never matter for
    latency; shapes do). Shapes come from the plan at write time."""
    rng = np.random.default_rng(seed)

    def get(name: str, shape: tuple[int, ...] = ()) -> np.ndarray:
        if name.endswith("norm.weight"):
            return np.ones(shape, np.float32)
        if name.endswith(".bias"):
            return np.zeros(shape, np.float32)
        return (rng.standard_normal(shape, dtype=np.float32) * std)

    get.shape_only = True  # type: ignore[attr-defined]
    return get


# -- writing ------------------------------------------------------------------------------------------
def _add_hparams(w: GGUFWriter, p: ExportPlan) -> None:
    st, hp = p.structure, p.hparams
    heads = [s.n_head for s in st.layers]
    kv = [s.n_head_kv for s in st.layers]
    ff = [s.n_ff for s in st.layers]
    per_layer = p.arch == ARCH_PER_LAYER
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


def plan_for_model(model: Any, float_type: str = "F16") -> ExportPlan:
    """Plan for an HF (pruned) Llama: its Structure, HParams from its config, and its carried biases."""
    _check_model(model)
    return plan(Structure.from_model(model), HParams.from_config(model.config), float_type, model_biases(model))


def _check_model(model: Any) -> None:
    arch = getattr(model.config, "model_type", "?")
    if arch not in ("llama", "mistral"):
        raise ExportError(f"cannot export architecture {arch!r} to GGUF; supported: llama, mistral")
    if getattr(model.config, "hidden_act", "silu") != "silu":
        raise ExportError(f"activation {model.config.hidden_act!r} is not SiLU; llama.cpp's llama/deci graphs use SiLU")


def write_model(model: Any, path: str | Path, tokenizer: TokenizerMeta, *, quant: str = "F16",
                name: str = "model", source_model: str = "?", recipe: dict[str, Any] | None = None,
                progress: Progress | None = None, threads: int | None = None, imatrix: Any = None) -> ExportResult:
    """Export an HF (pruned) Llama to a GGUF at `path`: F16/F32 written directly, other quant types
    written as F16 to a temp file next to `path` and quantized by llama.cpp (quantize.write_quantized)."""

    quant = quantize.check_quant(quant)
    p = plan_for_model(model, quant if quant in FLOAT_TYPES else "F16")
    if quant not in FLOAT_TYPES:
        check_disk(Path(path), p.data_bytes + p.structure.gguf_bytes(quant) + 64 * 1024 * 1024)

    def write_float(dst: Path) -> ExportResult:
        return write(dst, p, torch_source(model, p.structure), tokenizer, name=name, source_model=source_model,
                     recipe=recipe, progress=progress)

    if quant in FLOAT_TYPES:
        return write_float(Path(path))
    return quantize.write_quantized(Path(path), quant, write_float, threads, imatrix)


def write_shape_only(structure: Structure, path: str | Path, tokenizer_source: str | Path | TokenizerMeta | None = None,
                     quant: str = "F16", hparams: HParams | None = None, seed: int = 0) -> ExportResult:
    """Write a SHAPE-ONLY GGUF: random weights with `structure`'s exact shapes, a real tokenizer, quantized.

    structure: the per-layer shape (its vocab must equal the tokenizer's token count).
    path: output .gguf (written atomically; overwritten if it exists).
    tokenizer_source: a GGUF path to copy tokenizer.* metadata from, a TokenizerMeta, or None for the
        default model's GGUF (SmolLM2, 49152 tokens). Metadata is cached per GGUF file in memory.
    quant: 'F32' | 'F16' | 'Q8_0' | 'Q6_K' | 'Q5_K_M' | 'Q4_K_M' | 'Q4_0' (llama.cpp's quantizer, so the
        tensor types and fall-backs are exactly those of a real export).
    hparams: context length / RoPE base / RMS eps (defaults: 8192, 1e4, 1e-5; latency does not depend on them
        except through the context you open it with).
    Returns the ExportResult (path, arch 'llama'|'deci', tensor count, file bytes). A 135M-parameter F16
    file takes ~3 s; Q4_K_M adds a quantization pass. See `cached_shape_only` for a cache by structure key."""

    quant = quantize.check_quant(quant)
    meta = _tokenizer_meta(tokenizer_source)
    p = plan(structure, hparams or HParams(), quant if quant in FLOAT_TYPES else "F16")
    name = f"shape-only {structure.key()}"

    def write_float(dst: Path) -> ExportResult:
        return write(dst, p, random_source(seed), meta, name=name, source_model="shape-only")

    if quant in FLOAT_TYPES:
        return write_float(Path(path))
    return quantize.write_quantized(Path(path), quant, write_float, imatrix=flat_imatrix(structure))



def cached_shape_only(structure: Structure, quant: str = "F16", tokenizer_source: str | Path | None = None,
                      cache: str | Path | None = None) -> Path:
    """Path of a shape-only GGUF for (structure, quant), written once into `cache` (default:
    models.cache_dir()/shape-only) and reused: file name `<structure.key()>-<quant>.gguf`."""

    folder = Path(cache) if cache else models.cache_dir() / "shape-only"
    path = folder / f"{structure.key()}-{file_label(quant)}.gguf"
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


def iter_plan_rows(p: ExportPlan) -> Iterator[tuple[str, str, str, int]]:
    """(name, shape, type, bytes) rows for a --dry-run table."""
    for t in p.tensors:
        yield t.name, "×".join(map(str, t.shape)), t.qtype.name, t.n_bytes
