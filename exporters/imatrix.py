"""Importance matrix: the mean squared activation of every input column of every weight matrix, in the
file format `llama-quantize --imatrix` reads (GGUF: `<tensor>.in_sum2` and `<tensor>.counts`,
general.type = imatrix), collected from calibration windows on the torch model and handed to llama.cpp's
quantizer so low-bit types spend their precision on the columns that carry the most signal."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from adaprune_edge.archs import adapter_for
from adaprune_edge.errors import ConfigError, DataError
from adaprune_edge.gguf.names import OUTPUT, PROJECTIONS, TOKEN_EMBD, tensor_name
from adaprune_edge.runs import atomic_path


@dataclass(frozen=True)
class Imatrix:
    """sums: GGUF tensor name → sum over tokens of x² per input column (float32); tokens: how many."""

    sums: dict[str, np.ndarray]
    tokens: int
    datasets: tuple[str, ...] = ()
    chunk_size: int = 512

    def mean(self, name: str) -> np.ndarray:
        return (self.sums[name] / max(1, self.tokens)).astype(np.float32)

    def check(self, structure: Any) -> None:
        """ConfigError unless every entry names a tensor of `structure` with that many columns."""
        cols = {t.name: t.cols for t in structure.tensors()}
        for name, v in self.sums.items():
            if name not in cols:
                raise ConfigError(f"the importance matrix does not match the model: it has {name}, the model does not")
            if v.shape[0] != cols[name]:
                raise ConfigError(f"the importance matrix does not match the model: {name} has {cols[name]} "
                                  f"columns, the imatrix {v.shape[0]}; recompute it for this model")

    def to_ctypes(self, structure: Any) -> tuple[Any, list[np.ndarray]]:
        """NULL-terminated llama_model_imatrix_data array (and the buffers it points into)."""
        import llama_cpp

        self.check(structure)
        names = sorted(self.sums)
        arr = (llama_cpp.llama_model_imatrix_data * (len(names) + 1))()
        bufs: list[Any] = []
        for slot, name in zip(arr, names):
            data, key = np.ascontiguousarray(self.mean(name)), name.encode()
            slot.name, slot.size = key, data.size
            slot.data = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            bufs += [data, key]
        arr[len(names)].name = None
        return arr, bufs

    def save(self, path: str | Path) -> Path:
        """Write llama.cpp's GGUF imatrix format (atomic)."""
        import gguf

        with atomic_path(Path(path)) as tmp:
            w = gguf.GGUFWriter(str(tmp), arch="imatrix", use_temp_file=False)
            w.add_type("imatrix")
            w.add_array("imatrix.datasets", list(self.datasets) or ["calibration"])
            w.add_uint32("imatrix.chunk_count", max(1, self.tokens // self.chunk_size))
            w.add_uint32("imatrix.chunk_size", self.chunk_size)
            for name in sorted(self.sums):
                w.add_tensor(f"{name}.in_sum2", self.sums[name].astype(np.float32).reshape(1, -1))
                w.add_tensor(f"{name}.counts", np.array([[float(self.tokens)]], dtype=np.float32))
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_tensors_to_file()
            w.close()
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "Imatrix":
        import gguf

        try:
            reader = gguf.GGUFReader(str(path))
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: not a readable GGUF imatrix ({e})") from None
        t = {x.name: np.array(x.data, dtype=np.float32).reshape(-1) for x in reader.tensors}
        names = [n[: -len(".in_sum2")] for n in t if n.endswith(".in_sum2")]
        if not names:
            raise DataError(f"{path}: no *.in_sum2 tensors; not an imatrix file")
        tokens = int(t[f"{names[0]}.counts"][0]) if f"{names[0]}.counts" in t else 1
        ds = reader.fields.get("imatrix.datasets")
        return cls({n: t[f"{n}.in_sum2"] for n in names}, tokens, tuple(ds.contents()) if ds else ())


def flat_imatrix(structure: Any) -> Imatrix:
    """An all-ones importance matrix: a shape-only file of an `:imatrix` recipe gets the same tensor types
    as the real one (llama.cpp's mixture depends on whether an imatrix is given, not on its values)."""
    return Imatrix({t.name: np.ones(t.cols, dtype=np.float32) for t in structure.tensors()}, 1)


def gguf_names(model: Any) -> dict[str, str]:
    """HF module path → GGUF tensor name for every matrix llama.cpp multiplies by an activation."""
    adapter, out = adapter_for(model), {}
    for i, _ in enumerate(adapter.layers(model)):
        for role in PROJECTIONS:
            out[adapter.hf_module(i, role)] = tensor_name(role, i)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    out["lm_head"] = tensor_name(TOKEN_EMBD if tied else OUTPUT)
    return out


@torch.no_grad()
def collect(model: Any, windows: torch.Tensor, datasets: tuple[str, ...] = (),
            progress: Callable[[int, int], None] | None = None) -> Imatrix:
    """Run `windows` (n, seq_len) through `model` one at a time and sum x² per input column of every
    matrix (float64 accumulators, stored as float32)."""
    if windows.numel() == 0:
        raise DataError("no calibration windows to compute an importance matrix from")
    names, sums = gguf_names(model), {}
    modules = dict(model.named_modules())

    def hook(name: str) -> Callable:
        def fn(_m: Any, inp: tuple[torch.Tensor, ...], _out: Any) -> None:
            x = inp[0].detach().reshape(-1, inp[0].shape[-1]).double()
            sums[name] = sums.get(name, 0) + (x * x).sum(0)
        return fn

    handles = [modules[hf].register_forward_hook(hook(gg)) for hf, gg in names.items() if hf in modules]
    try:
        for k, row in enumerate(windows):
            model(row.unsqueeze(0))
            if progress:
                progress(k + 1, len(windows))
    finally:
        for h in handles:
            h.remove()
    arrays = {n: v.float().numpy() for n, v in sums.items()}
    return Imatrix(arrays, int(windows.numel()), datasets, int(windows.shape[1]))
