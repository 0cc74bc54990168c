"""A fast read of a GGUF file's header: metadata scalars/numeric arrays and the tensor table, no data.

gguf-py's GGUFReader builds a Python object per token string (10+ s for a 49k-token vocabulary on a busy
2-core host); the latency predictor needs only shapes, types and a few keys, so string arrays are skipped
(recorded as None). Layout per the GGUF spec (v2/v3, little-endian)."""

from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType

from adaprune_edge.errors import ExportError
from adaprune_edge.gguf.tensor import GGUFTensor

# GGUF value type id -> struct format of one scalar (8 = string, 9 = array)
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NP = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1", 10: "<u8", 11: "<i8", 12: "<f8"}


class _Cursor:
    def __init__(self, buf: Any) -> None:
        self.buf, self.pos = buf, 0

    def take(self, fmt: str) -> Any:
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return v

    def string(self, keep: bool = True) -> str | None:
        n = self.take("<Q")
        s = bytes(self.buf[self.pos:self.pos + n]).decode("utf-8", "replace") if keep else None
        self.pos += n
        return s

    def value(self, vtype: int) -> Any:
        if vtype == 8:
            return self.string()
        if vtype != 9:
            return self.take(_SCALAR[vtype])
        etype, count = self.take("<I"), self.take("<Q")
        if etype in _NP:
            arr = np.frombuffer(self.buf, dtype=_NP[etype], count=count, offset=self.pos)
            self.pos += arr.nbytes
            return arr.tolist()
        for _ in range(count):  # string (or nested) arrays: skip
            self.value(etype) if etype == 9 else self.string(keep=False)
        return None


def _data_start(header_end: int, meta: dict[str, Any]) -> int:
    align = int(meta.get("general.alignment") or 32)
    return (header_end + align - 1) // align * align


def _check_complete(file_bytes: int, data_start: int, data_end: int) -> None:
    """A header that parses but whose tensors run past the end of the file is a cut-off copy."""
    if data_start + data_end > file_bytes:
        raise ValueError(f"truncated: {file_bytes:,} bytes, its tensors need {data_start + data_end:,}")


def read_header(path: str | Path) -> tuple[dict[str, Any], list[GGUFTensor]]:
    """(metadata, tensors) of a GGUF; string arrays (vocabulary, merges) are None."""
    meta, tensors, _ = _parse(path)
    return meta, tensors


def tensor_bytes(path: str | Path) -> list[tuple[GGUFTensor, Any]]:
    """Every tensor of a GGUF with its raw data (a read-only uint8 memmap, in the file's type): what
    gguf.quants.dequantize takes, without parsing the vocabulary as gguf.GGUFReader does (~4 s a file)."""
    import numpy as np

    _, tensors, (start, offsets) = _parse(path)
    data = np.memmap(path, dtype=np.uint8, mode="r")
    return [(t, data[start + o: start + o + t.n_bytes]) for t, o in zip(tensors, offsets)]


def _parse(path: str | Path) -> tuple[dict[str, Any], list[GGUFTensor], tuple[int, list[int]]]:
    if not Path(path).is_file():
        raise ExportError(f"GGUF file {path} not found")
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            c = _Cursor(mm)
            if bytes(mm[:4]) != b"GGUF":
                raise ValueError("bad magic")
            c.pos = 4
            _version, n_tensors, n_kv = c.take("<I"), c.take("<Q"), c.take("<Q")
            meta = {}
            for _ in range(n_kv):
                key = c.string()
                meta[key] = c.value(c.take("<I"))
            tensors, offsets, data_end = [], [], 0
            for _ in range(n_tensors):
                name = c.string()
                dims = tuple(c.take("<Q") for _ in range(c.take("<I")))
                qtype = GGMLQuantizationType(c.take("<I"))
                info = GGUFTensor(name, tuple(reversed(dims)), qtype)
                offsets.append(c.take("<Q"))  # relative to the data section
                data_end = max(data_end, offsets[-1] + info.n_bytes)
                tensors.append(info)
            start = _data_start(c.pos, meta)
            _check_complete(len(mm), start, data_end)
            return meta, tensors, (start, offsets)
    except (OSError, ValueError, struct.error, KeyError, OverflowError, MemoryError) as e:  # garbage sizes
        raise ExportError(f"{path} is not a readable GGUF file ({type(e).__name__}: {e}); "
                          "re-export or re-download it") from None
