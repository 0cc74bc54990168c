"""Structure: the per-layer shape of a (pruned) Llama-family model — all that size and latency depend on."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterator

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as QT

# llama.cpp ftype name → (default tensor type, type for attn_v/ffn_down "more bits" layers)
QUANT_TYPES: dict[str, tuple[QT, QT]] = {
    "F32": (QT.F32, QT.F32),
    "F16": (QT.F16, QT.F16),
    "Q8_0": (QT.Q8_0, QT.Q8_0),
    "Q6_K": (QT.Q6_K, QT.Q6_K),
    "Q5_K_M": (QT.Q5_K, QT.Q6_K),
    "Q4_K_M": (QT.Q4_K, QT.Q6_K),
    "Q4_0": (QT.Q4_0, QT.Q4_0),
}
# llama.cpp's fall-back when a row is not a multiple of the block size (llama-quant.cpp)
_FALLBACK = {QT.Q4_K: QT.Q5_0, QT.Q5_K: QT.Q5_1, QT.Q6_K: QT.Q8_0}


@dataclass(frozen=True)
class LayerShape:
    """One decoder layer: query heads, KV heads, FFN width."""

    n_head: int
    n_head_kv: int
    n_ff: int


@dataclass(frozen=True)
class TensorPlan:
    """One weight tensor as llama.cpp stores it: name, shape (rows, cols), ggml type and bytes."""

    name: str
    rows: int
    cols: int
    qtype: QT
    fallback: bool

    @property
    def n_bytes(self) -> int:
        block, size = GGML_QUANT_SIZES[self.qtype]
        return self.rows * (self.cols // block) * size


@dataclass(frozen=True)
class Structure:
    """Shape of a Llama-family model. `kept_layers` index the original layers; `layers` align with it."""

    hidden: int
    head_dim: int
    vocab: int
    n_layer_orig: int
    kept_layers: tuple[int, ...]
    layers: tuple[LayerShape, ...]
    tied_embeddings: bool = True

    def __post_init__(self) -> None:
        if len(self.kept_layers) != len(self.layers):
            raise ValueError("kept_layers and layers differ in length")
        for s in self.layers:
            if s.n_head_kv <= 0 or s.n_head % s.n_head_kv:
                raise ValueError(f"n_head {s.n_head} must be a positive multiple of n_head_kv {s.n_head_kv}")

    # -- derived sizes -------------------------------------------------------------------------
    @property
    def n_layer(self) -> int:
        return len(self.layers)

    @property
    def is_uniform(self) -> bool:
        return len(set(self.layers)) <= 1

    def layer_params(self, s: LayerShape) -> int:
        h, d = self.hidden, self.head_dim
        attn = h * d * (2 * s.n_head + 2 * s.n_head_kv)
        return attn + 3 * h * s.n_ff + 2 * h

    def decoder_params(self) -> int:
        """Parameters in the decoder layers (weights + norms), excluding embeddings."""
        return sum(self.layer_params(s) for s in self.layers)

    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    def params(self) -> int:
        """All parameters: embeddings, decoder layers, final norm."""
        return self.embedding_params() + self.decoder_params() + self.hidden

    def tensors(self, quant: str = "F16") -> Iterator[TensorPlan]:
        """The 2-D weight tensors with the ggml type llama.cpp's quantizer gives each for `quant`."""
        base, more = _quant_pair(quant)
        yield from self._embedding_tensors(quant, base)
        n = self.n_layer
        for i, s in enumerate(self.layers):
            h, d = self.hidden, self.head_dim
            mb = _use_more_bits(i, n)
            for name, rows, cols, t in (
                ("attn_q", s.n_head * d, h, base),
                ("attn_k", s.n_head_kv * d, h, base),
                ("attn_v", s.n_head_kv * d, h, more if mb else base),
                ("attn_output", h, s.n_head * d, base),
                ("ffn_gate", s.n_ff, h, base),
                ("ffn_up", s.n_ff, h, base),
                ("ffn_down", h, s.n_ff, more if mb else base),
            ):
                yield _plan(f"blk.{i}.{name}.weight", rows, cols, t)

    def _embedding_tensors(self, quant: str, base: QT) -> Iterator[TensorPlan]:
        out_type = _output_type(quant, base, self.hidden)
        if self.tied_embeddings:
            yield _plan("token_embd.weight", self.vocab, self.hidden, out_type)
        else:
            yield _plan("token_embd.weight", self.vocab, self.hidden, base)
            yield _plan("output.weight", self.vocab, self.hidden, out_type)

    def norm_bytes(self) -> int:
        """F32 norm weights: two per layer plus the final norm."""
        return 4 * self.hidden * (2 * self.n_layer + 1)

    def gguf_bytes(self, quant: str = "F16") -> int:
        """Tensor data bytes of the GGUF for `quant` (metadata and alignment padding excluded)."""
        return sum(t.n_bytes for t in self.tensors(quant)) + self.norm_bytes()

    def decode_bytes_per_token(self, quant: str = "F16") -> int:
        """Weight bytes llama.cpp reads per decoded token: every layer weight, the whole output
        projection, one row of the input embedding (KV cache excluded)."""
        total = 0
        for t in self.tensors(quant):
            if t.name == "token_embd.weight" and not self.tied_embeddings:
                total += t.n_bytes // t.rows
            else:
                total += t.n_bytes
                if t.name == "token_embd.weight":  # tied: the output reads it all, the lookup one row
                    total += t.n_bytes // t.rows
        return total + self.norm_bytes()

    def kv_cache_bytes(self, n_ctx: int, bytes_per_elem: int = 2) -> int:
        """F16 KV cache bytes at context length n_ctx."""
        return sum(2 * n_ctx * s.n_head_kv * self.head_dim * bytes_per_elem for s in self.layers)

    def fallbacks(self, quant: str) -> list[TensorPlan]:
        """Tensors whose row size forces llama.cpp to a different type than intended."""
        return [t for t in self.tensors(quant) if t.fallback]

    # -- identity and serialisation ---------------------------------------------------------------
    def key(self) -> str:
        """Stable short hash of the shape (used for latency caches)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def condensed(self) -> str:
        """Per-layer shapes as runs, e.g. '0-9: 9h/3kv/1536ff, 10-29: 6h/3kv/1024ff'."""
        runs: list[tuple[int, int, LayerShape]] = []
        for idx, s in zip(self.kept_layers, self.layers):
            if runs and runs[-1][2] == s and runs[-1][1] + 1 == idx:
                runs[-1] = (runs[-1][0], idx, s)
            else:
                runs.append((idx, idx, s))
        parts = []
        for a, b, s in runs:
            span = f"{a}" if a == b else f"{a}-{b}"
            parts.append(f"{span}: {s.n_head}h/{s.n_head_kv}kv/{s.n_ff}ff")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["kept_layers"] = list(self.kept_layers)
        d["layers"] = [dataclasses.asdict(s) for s in self.layers]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Structure":
        d = dict(d)
        d["kept_layers"] = tuple(d["kept_layers"])
        d["layers"] = tuple(LayerShape(**s) for s in d["layers"])
        return cls(**d)

    @classmethod
    def dense(cls, hidden: int, head_dim: int, vocab: int, n_layer: int, n_head: int, n_head_kv: int,
              n_ff: int, tied_embeddings: bool = True) -> "Structure":
        shape = LayerShape(n_head, n_head_kv, n_ff)
        return cls(hidden, head_dim, vocab, n_layer, tuple(range(n_layer)), (shape,) * n_layer, tied_embeddings)

    @classmethod
    def from_model(cls, model: Any) -> "Structure":
        """Read the shape of an HF Llama-family model from its (possibly pruned) modules."""
        cfg = model.config
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        layers, kept = [], getattr(model, "adaprune_kept_layers", None)
        for layer in model.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            layers.append(LayerShape(attn.q_proj.out_features // head_dim, attn.k_proj.out_features // head_dim,
                                     mlp.gate_proj.out_features))
        if kept is None:
            kept = list(range(len(layers)))
        n_orig = getattr(model, "adaprune_n_layer_orig", None) or len(layers)
        tied = bool(getattr(cfg, "tie_word_embeddings", False))
        return cls(cfg.hidden_size, head_dim, cfg.vocab_size, n_orig, tuple(kept), tuple(layers), tied)


def _quant_pair(quant: str) -> tuple[QT, QT]:
    from adaprune_edge.errors import ConfigError
    from adaprune_edge.registry import unknown_name_message

    if quant not in QUANT_TYPES:
        raise ConfigError(unknown_name_message("quant type", quant, list(QUANT_TYPES)))
    return QUANT_TYPES[quant]


def _use_more_bits(i: int, n: int) -> bool:
    # llama.cpp: i_layer < n/8 || i_layer >= 7*n/8 || (i_layer - n/8) % 3 == 2
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _output_type(quant: str, base: QT, hidden: int) -> QT:
    """llama.cpp's rule for output.weight (or a tied token_embd): Q6_K unless Q8_0/float."""
    if base in (QT.F32, QT.F16, QT.Q8_0):
        return base
    block = GGML_QUANT_SIZES[base][0]
    return QT.Q8_0 if hidden % block else QT.Q6_K


def _plan(name: str, rows: int, cols: int, qtype: QT) -> TensorPlan:
    block = GGML_QUANT_SIZES[qtype][0]
    if cols % block == 0:
        return TensorPlan(name, rows, cols, qtype, False)
    fb = _FALLBACK.get(qtype, QT.F16)
    if cols % GGML_QUANT_SIZES[fb][0]:
        fb = QT.F16
    return TensorPlan(name, rows, cols, fb, True)
