"""Quant recipes: which ggml type llama.cpp's quantizer gives every tensor, and how we steer it.

A recipe is a llama.cpp file type plus two deliberate choices llama-quantize exposes as
`--tensor-type` and `--output-tensor-type`:

    FTYPE[:fb=TYPE][:out=TYPE][:imatrix]      e.g.  Q4_K_M:fb=IQ4_NL:out=Q5_0:imatrix
    FTYPE:alloc=DIGEST[:imatrix]              e.g.  Q4_0:alloc=3f9a1c2e:imatrix


`fb` is the type for tensors whose rows are not a multiple of the file type's 256-value block (the
default llama.cpp fall-back turns a 4-bit Q4_K into a 5.5-bit Q5_0 there; on SmolLM2's 576-wide rows
that is most of the model); `out` is the type of the output projection (the tied embedding), which
llama.cpp otherwise keeps at Q6_K/Q8_0; `alloc` names an allocation (one ggml type per weight tensor, see
bitalloc/), by a short hash of its content; `imatrix` says the quantizer gets an importance matrix, which
also changes two of llama.cpp's mixture rules. `tensor_type` reproduces llama.cpp's rules
(src/llama-quant.cpp of the vendored llama.cpp, llama-family non-MoE models) so sizes and latency are
predicted from a Structure alone; tests compare it with what the quantizer really writes."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as QT, LlamaFileType

from adaprune_edge.errors import ConfigError
from adaprune_edge.gguf.names import ATTN_OUT, ATTN_V, FFN_DOWN
from adaprune_edge.registry import unknown_name_message

# file types whose mixture rules `layer_type` reproduces → default tensor type; F16/F32 are written, not quantized
FTYPES: dict[str, QT] = {
    "F32": QT.F32, "F16": QT.F16, "Q8_0": QT.Q8_0, "Q6_K": QT.Q6_K, "Q5_K_M": QT.Q5_K, "Q5_K_S": QT.Q5_K,
    "Q5_0": QT.Q5_0, "Q4_K_M": QT.Q4_K, "Q4_K_S": QT.Q4_K, "Q4_0": QT.Q4_0, "IQ4_NL": QT.IQ4_NL,
    "IQ4_XS": QT.IQ4_XS, "Q3_K_M": QT.Q3_K, "Q3_K_S": QT.Q3_K, "Q2_K": QT.Q2_K,
}
FLOAT = ("F32", "F16")
# tensor types a recipe may name for fb/out (32-value blocks fit any row that is a multiple of 32)
STEERABLE = ("Q8_0", "Q6_K", "Q5_1", "Q5_0", "Q4_1", "Q4_0", "IQ4_NL", "Q5_K", "Q4_K", "F16")
# llama.cpp's fall-back for a row that is not a multiple of the type's block (tensor_type_fallback)
LLAMA_FALLBACK = {QT.IQ4_XS: QT.IQ4_NL, QT.Q2_K: QT.Q4_0, QT.Q3_K: QT.Q4_0, QT.Q4_K: QT.Q5_0,
                  QT.Q5_K: QT.Q5_1, QT.Q6_K: QT.Q8_0}


# the file type whose general.file_type an allocation's file carries, by its most common tensor type
TYPE_FTYPE = {"Q8_0": "Q8_0", "Q6_K": "Q6_K", "Q5_K": "Q5_K_M", "Q5_1": "Q5_0", "Q5_0": "Q5_0", "Q4_K": "Q4_K_M",
              "Q4_1": "Q4_0", "Q4_0": "Q4_0", "IQ4_NL": "IQ4_NL", "IQ4_XS": "IQ4_XS", "Q3_K": "Q3_K_M", "Q2_K": "Q2_K"}
# allocations this process knows, by digest: parse() resolves `alloc=DIGEST` here (bitalloc.recipe_file
# registers a loaded file's, QuantRecipe.allocated a new one's)
_ALLOCATIONS: dict[str, tuple[tuple[str, str], ...]] = {}


def ftype_id(ftype: str) -> LlamaFileType:
    """llama.h's llama_ftype of a file type name ('Q4_K_M' → MOSTLY_Q4_K_M = 15), from gguf-py."""
    return LlamaFileType.ALL_F32 if ftype == "F32" else LlamaFileType[f"MOSTLY_{ftype}"]


def ftype_name(file_type: int | None) -> str | None:
    """The FTYPES name of a GGUF's general.file_type, or None when it is not one of them."""
    return next((n for n in FTYPES if file_type is not None and ftype_id(n) == file_type), None)


@dataclass(frozen=True)
class QuantRecipe:
    """A llama.cpp file type with deliberate fall-back (`fallback`) and output (`output`) tensor types.
    Frozen and hashable; `name` is its one string form (what JSON files and cache keys hold)."""

    ftype: str
    fallback: str | None = None
    output: str | None = None
    imatrix: bool = False
    assign: tuple[tuple[str, str], ...] = ()  # an allocation: (tensor name, ggml type) of every weight tensor
    _types: dict[str, str] = field(default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._types.update(self.assign)

    @classmethod
    def allocated(cls, types: Mapping[str, str], imatrix: bool = True, register: bool = True) -> "QuantRecipe":
        """The recipe of an allocation (tensor name → ggml type name), registered so its name parses."""
        unknown = sorted(set(types.values()) - set(TYPE_FTYPE))
        if unknown:
            raise ConfigError(f"an allocation may use {', '.join(TYPE_FTYPE)}; it has {', '.join(unknown)}")
        top = Counter(types.values()).most_common(1)[0][0]
        r = cls(TYPE_FTYPE[top], imatrix=imatrix, assign=tuple(sorted(types.items())))
        if register:
            _ALLOCATIONS[r.digest] = r.assign
        return r

    @property
    def digest(self) -> str:
        """Short content hash of the allocation ('' for a uniform recipe)."""
        if not self.assign:
            return ""
        return hashlib.sha256(json.dumps([self.ftype, self.assign]).encode()).hexdigest()[:8]

    def type_of(self, tensor: str) -> QT | None:
        """The allocation's type for a tensor (None: not allocated)."""
        t = self._types.get(tensor)
        return QT[t] if t else None

    @property
    def name(self) -> str:
        parts = [self.ftype] + ([f"alloc={self.digest}"] if self.assign else [])
        parts += [f"{k}={v}" for k, v in (("fb", self.fallback), ("out", self.output)) if v]
        return ":".join(parts + (["imatrix"] if self.imatrix else []))

    @property
    def label(self) -> str:
        """The name as a file-name part: 'Q4_K_M:fb=IQ4_NL' → 'Q4_K_M_fb-IQ4_NL'."""
        return self.name.replace(":", "_").replace("=", "-")

    def __str__(self) -> str:
        return self.name

    @property
    def is_float(self) -> bool:
        return self.ftype in FLOAT

    @property
    def base_type(self) -> QT:
        return FTYPES[self.ftype]

    @property
    def ftype_id(self) -> LlamaFileType:
        return ftype_id(self.ftype)

    def with_imatrix(self, on: bool = True) -> "QuantRecipe":
        if self.is_float:
            return self
        return QuantRecipe(self.ftype, self.fallback, self.output, on, self.assign)

    @classmethod
    def parse(cls, text: str) -> "QuantRecipe":
        """Parse `FTYPE[:fb=T][:out=T][:imatrix]`; ConfigError with did-you-mean for unknown names."""
        head, *opts = text.strip().split(":")
        if head not in FTYPES:
            raise ConfigError(unknown_name_message("quant type", head, list(FTYPES)))
        kw: dict[str, Any] = {}
        for opt in opts:
            key, _, value = opt.partition("=")
            if key == "imatrix" and not value:
                kw["imatrix"] = True
            elif key == "alloc" and value:
                kw["assign"] = _known_allocation(value)
            elif key in ("fb", "out") and value:
                if value not in STEERABLE:
                    raise ConfigError(unknown_name_message(f"tensor type in {key}=", value, list(STEERABLE)))
                kw["fallback" if key == "fb" else "output"] = value
            else:
                raise ConfigError(f"bad quant option {opt!r} in {text!r}: use FTYPE[:fb=TYPE][:out=TYPE][:imatrix]")
        if head in FLOAT and kw:
            raise ConfigError(f"{head} is written unquantized; it takes no fb=/out=/imatrix options")
        if kw.get("assign") and (kw.get("fallback") or kw.get("output")):
            raise ConfigError(f"{text!r}: an allocation sets every tensor's type; it takes no fb=/out=")
        return cls(head, **kw)


def _known_allocation(digest: str) -> tuple[tuple[str, str], ...]:
    if digest not in _ALLOCATIONS:
        raise ConfigError(f"allocation {digest} is not loaded: pass its recipe file (--quant-file FILE, written "
                          "next to the GGUF as <name>.quant.json)")
    return _ALLOCATIONS[digest]


F16 = QuantRecipe("F16")


def block(t: QT) -> int:
    return GGML_QUANT_SIZES[t][0]


def _more_bits(i: int, n: int) -> bool:
    # llama.cpp: i_layer < n/8 || i_layer >= 7*n/8 || (i_layer - n/8) % 3 == 2
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _mixture(f: str, role: str, i: int, n: int, n_gqa: int, imat: bool) -> QT | None:
    """llama.cpp's per-role choice (llama_tensor_get_type_impl) for file type f, or None = default type."""
    if role == ATTN_V:
        if f == "Q2_K":
            return QT.Q4_K if n_gqa >= 4 else QT.Q3_K
        if f == "Q3_K_M":
            return QT.Q5_K if i < 2 else QT.Q4_K
        if f in ("IQ4_NL", "IQ4_XS") and n_gqa >= 4:
            return QT.Q5_K
        if f in ("Q4_K_M", "Q5_K_M") and _more_bits(i, n):
            return QT.Q6_K
        if f == "Q4_K_S" and i < 4:
            return QT.Q5_K
    elif role == FFN_DOWN:
        if f == "Q2_K":
            return QT.Q3_K
        if f == "Q3_K_M":
            return QT.Q5_K if i < n // 16 else QT.Q4_K
        if f == "Q4_K_M":
            return QT.Q6_K if _more_bits(i, n) else None
        if i < n // 8 and f in ("IQ4_NL", "IQ4_XS") and not imat:
            return QT.Q5_K
        if f == "Q5_K_M":
            return QT.Q6_K if _more_bits(i, n) else None
        if f == "Q4_K_S" and i < n // 8:
            return QT.Q5_K
        if f in ("Q4_0", "Q5_0") and imat and i < n // 8:
            return QT.Q4_1 if f == "Q4_0" else QT.Q5_1
    elif role == ATTN_OUT:
        if f == "Q2_K":
            return QT.Q3_K
        if f == "Q3_K_M":
            return QT.Q4_K
    return None


def _fit(t: QT, cols: int) -> tuple[QT, bool]:
    """llama.cpp's fall-back for a row of `cols` values: (type, fell_back)."""
    if cols % block(t) == 0:
        return t, False
    fb = LLAMA_FALLBACK.get(t, t)
    return (fb if cols % block(fb) == 0 else QT.F16), True


def layer_type(r: QuantRecipe, role: str, i: int, n: int, cols: int, n_gqa: int,
               name: str = "") -> tuple[QT, bool, bool]:
    """(type, fell_back, overridden) of layer tensor `role` (GGUF name `name`) of layer i of n with rows of
    `cols` values. `overridden`: the recipe's fb= type replaces llama.cpp's fall-back, or its allocation
    sets the type (written as a manual override)."""
    if r.is_float:
        return r.base_type, False, False
    if r.type_of(name):
        t, fell = _fit(r.type_of(name), cols)
        return t, fell, True
    t = _mixture(r.ftype, role, i, n, n_gqa, r.imatrix) or r.base_type
    fitted, fell = _fit(t, cols)
    if fell and r.fallback:
        return _fit(QT[r.fallback], cols)[0], True, True
    return fitted, fell, False


def output_type(r: QuantRecipe, cols: int, name: str = "output.weight") -> tuple[QT, bool]:
    """Type of the output projection (or the tied token embedding, `name`): the allocation's or out= if
    given, else llama.cpp's rule (Q6_K unless the file type is Q8_0/float; Q8_0 when the rows do not fit
    the file type's block)."""
    if r.is_float:
        return r.base_type, False
    if r.type_of(name):
        return _fit(r.type_of(name), cols)
    if r.output:
        return _fit(QT[r.output], cols)
    base = r.base_type
    if cols % block(base):
        return QT.Q8_0, True
    return _fit(base if base == QT.Q8_0 else QT.Q6_K, cols)


def check_output_type(r: QuantRecipe, cols: int) -> None:
    """out= bypasses llama.cpp's fall-back, so its block must divide the rows."""
    if r.output and cols % block(QT[r.output]):
        raise ConfigError(f"out={r.output} needs rows that are a multiple of {block(QT[r.output])}, the model's "
                          f"are {cols}: pick a 32-block type (Q8_0, Q5_0, Q4_0, IQ4_NL)")


def installed_ftypes() -> tuple[str, ...]:
    """File types the installed llama.cpp quantizer knows (its LLAMA_FTYPE_MOSTLY_* constants)."""
    import llama_cpp

    return tuple(n for n in FTYPES if n in FLOAT or getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{n}", None) == ftype_id(n))


def check_installed(r: QuantRecipe) -> QuantRecipe:
    """ConfigError naming what the installed llama.cpp has when it lacks r's file type."""
    have = installed_ftypes()
    if r.ftype not in have:
        raise ConfigError(f"the installed llama.cpp cannot quantize to {r.ftype}; it has: {', '.join(have)}")
    return r
