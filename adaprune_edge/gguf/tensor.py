"""GGUFTensor: one tensor as a GGUF file stores it — name, numpy-order shape (rows first), ggml type,
data bytes. The one type for tensors planned from a Structure, written by the exporter and read back
from a file's header."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType


@dataclass(frozen=True)
class GGUFTensor:
    """shape: numpy order, (rows, cols) for a matrix (ggml lists it reversed: row length first).
    fallback: llama.cpp had to pick another type because the row length misses the block size;
    overridden: a quant recipe chose the type (a quantizer override), not llama.cpp's rules."""

    name: str
    shape: tuple[int, ...]
    qtype: GGMLQuantizationType
    fallback: bool = False
    overridden: bool = False

    @property
    def rows(self) -> int:
        return int(np.prod(self.shape[:-1])) if len(self.shape) > 1 else 1

    @property
    def cols(self) -> int:
        return int(self.shape[-1])

    @property
    def n_bytes(self) -> int:
        block, size = GGML_QUANT_SIZES[self.qtype]
        return int(np.prod(self.shape)) // block * size

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "type": self.qtype.name, "bytes": self.n_bytes}
