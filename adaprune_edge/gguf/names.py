"""GGUF tensor roles and names, taken from gguf-py's own tables (`gguf.TENSOR_NAMES`), never typed by hand.

A *role* is the last part of a block tensor's name ('attn_q', 'ffn_down'); `tensor_name` builds the full
name ('blk.3.attn_q.weight'). `PROJECTIONS` is the one list of the seven weight matrices of a decoder layer
that quantization, the Structure and the adapters share."""

from __future__ import annotations

from gguf import TENSOR_NAMES, MODEL_TENSOR as T


def _role(t: T) -> str:
    """'blk.{bid}.attn_q' → 'attn_q'."""
    return TENSOR_NAMES[t].rsplit(".", 1)[-1]


ATTN_Q, ATTN_K, ATTN_V, ATTN_OUT = _role(T.ATTN_Q), _role(T.ATTN_K), _role(T.ATTN_V), _role(T.ATTN_OUT)
ATTN_QKV = _role(T.ATTN_QKV)  # llama.cpp's fused Q/K/V (phi3 and others)
FFN_GATE, FFN_UP, FFN_DOWN = _role(T.FFN_GATE), _role(T.FFN_UP), _role(T.FFN_DOWN)
ATTN_NORM, FFN_NORM = _role(T.ATTN_NORM), _role(T.FFN_NORM)
ATTN_POST_NORM, FFN_POST_NORM = _role(T.ATTN_POST_NORM), _role(T.FFN_POST_NORM)
ATTN_Q_NORM, ATTN_K_NORM = _role(T.ATTN_Q_NORM), _role(T.ATTN_K_NORM)
TOKEN_EMBD, OUTPUT_NORM, OUTPUT = TENSOR_NAMES[T.TOKEN_EMBD], TENSOR_NAMES[T.OUTPUT_NORM], TENSOR_NAMES[T.OUTPUT]
ROPE_FREQS = TENSOR_NAMES[T.ROPE_FREQS]
BLOCK_PREFIX = TENSOR_NAMES[T.ATTN_Q].split(".", 1)[0]  # 'blk'

QKV = (ATTN_Q, ATTN_K, ATTN_V)
PROJECTIONS = (ATTN_Q, ATTN_K, ATTN_V, ATTN_OUT, FFN_GATE, FFN_UP, FFN_DOWN)  # the weight matrices of a layer


def tensor_name(role: str, layer: int | None = None, kind: str = "weight") -> str:
    """'attn_q', 3 → 'blk.3.attn_q.weight'; a global tensor ('token_embd', None) → 'token_embd.weight'."""
    base = role if layer is None else f"{BLOCK_PREFIX}.{layer}.{role}"
    return f"{base}.{kind}" if kind else base


def parse_name(name: str) -> tuple[int | None, str, str]:
    """'blk.3.attn_q.weight' → (3, 'attn_q', 'weight'); 'output.weight' → (None, 'output', 'weight')."""
    parts = name.split(".")
    if parts[0] == BLOCK_PREFIX and len(parts) >= 3:
        return int(parts[1]), parts[2], ".".join(parts[3:])
    return None, parts[0], ".".join(parts[1:])
