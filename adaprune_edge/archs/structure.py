"""Structure: the per-layer shape of a (pruned) decoder model — all that size and latency depend on. Which
tensors a layer has (projections, norms) comes from the family's adapter (archs.ArchAdapter.layer_tensors)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Iterator

from adaprune_edge.gguf.tensor import GGUFTensor

from adaprune_edge.archs import ARCHS, ArchAdapter, adapter_for
from adaprune_edge.archs.base import ATTN_K, ATTN_Q, FFN_GATE
from adaprune_edge.gguf.names import tensor_name
from adaprune_edge.quant import F16, QuantRecipe, layer_type, output_type


@dataclass(frozen=True)
class LayerShape:
    """One decoder layer: query heads, KV heads, FFN width."""

    n_head: int
    n_head_kv: int
    n_ff: int


@dataclass(frozen=True)
class Structure:
    """Shape of a decoder model of one family (`family`: the HF model_type of its adapter, archs.ARCHS).
    `kept_layers` index the original layers; `layers` align with it."""

    hidden: int
    head_dim: int
    vocab: int
    n_layer_orig: int
    kept_layers: tuple[int, ...]
    layers: tuple[LayerShape, ...]
    tied_embeddings: bool = True
    family: str = "llama"

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

    @property
    def adapter(self) -> ArchAdapter:
        """The family's adapter (archs.ARCHS): which tensors a layer has."""
        return ARCHS.get(self.family)

    def layer_tensors(self, s: LayerShape) -> list[tuple[str, tuple[int, ...]]]:
        """(GGUF role, shape) of one layer's tensors: projections (rows, cols) and 1-D norms."""
        return self.adapter.layer_tensors(s, self.hidden, self.head_dim)

    def layer_params(self, s: LayerShape) -> int:
        """Weights of one layer: projections and norms (biases excluded)."""
        return sum(math.prod(shape) for _, shape in self.layer_tensors(s))

    def decoder_params(self) -> int:
        """Parameters in the decoder layers (weights + norms), excluding embeddings."""
        return sum(self.layer_params(s) for s in self.layers)

    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    def params(self) -> int:
        """All parameters: embeddings, decoder layers, final norm."""
        return self.embedding_params() + self.decoder_params() + self.hidden

    def tensors(self, quant: QuantRecipe = F16) -> Iterator[GGUFTensor]:
        """The 2-D weight tensors with the ggml type llama.cpp's quantizer gives each for `quant`."""
        yield from self._embedding_tensors(quant)
        gqa = self.layers[0].n_head // self.layers[0].n_head_kv if self.layers else 1
        # llama.cpp's mixture rules count the tensors of a role they have seen; a manual override skips
        # the rules and so does not advance that count
        seen: dict[str, int] = {}
        for i, s in enumerate(self.layers):
            for role, (rows, cols) in ((r, shape) for r, shape in self.layer_tensors(s) if len(shape) == 2):
                name = tensor_name(role, i)
                t, fell, over = layer_type(quant, role, seen.get(role, 0), self.n_layer, cols, gqa, name)
                seen[role] = seen.get(role, 0) + (not over)
                yield GGUFTensor(name, (rows, cols), t, fell, over)

    def _embedding_tensors(self, r: QuantRecipe) -> Iterator[GGUFTensor]:
        steered = bool(r.output or r.assign) and not r.is_float
        if self.tied_embeddings:
            out, fell = output_type(r, self.hidden, "token_embd.weight")
            yield GGUFTensor("token_embd.weight", (self.vocab, self.hidden), out, fell, steered)
        else:
            # an untied token embedding (a row lookup) keeps the file type's default, with fall-backs
            emb, fell_e, over_e = layer_type(r, "token_embd", 0, self.n_layer, self.hidden, 1, "token_embd.weight")
            yield GGUFTensor("token_embd.weight", (self.vocab, self.hidden), emb, fell_e, over_e)
            out, fell = output_type(r, self.hidden)
            yield GGUFTensor("output.weight", (self.vocab, self.hidden), out, fell, steered)

    def norm_bytes(self) -> int:
        """F32 norm weights: each layer's (the family's adapter lists them) plus the final norm."""
        per_layer = sum(math.prod(shape) for s in self.layers for _, shape in self.layer_tensors(s) if len(shape) == 1)
        return 4 * (per_layer + self.hidden)

    def gguf_bytes(self, quant: QuantRecipe = F16) -> int:
        """Tensor data bytes of the GGUF for `quant` (metadata and alignment padding excluded)."""
        return sum(t.n_bytes for t in self.tensors(quant)) + self.norm_bytes()

    def decode_bytes_per_token(self, quant: QuantRecipe = F16) -> int:
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
        """KV cache bytes at context length n_ctx (F16 by default; 1: elements)."""
        return sum(2 * n_ctx * s.n_head_kv * self.head_dim * bytes_per_elem for s in self.layers)

    def fallbacks(self, quant: QuantRecipe) -> list[GGUFTensor]:
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
              n_ff: int, tied_embeddings: bool = True, family: str = "llama") -> "Structure":
        shape = LayerShape(n_head, n_head_kv, n_ff)
        return cls(hidden, head_dim, vocab, n_layer, tuple(range(n_layer)), (shape,) * n_layer, tied_embeddings,
                   family)

    @classmethod
    def from_model(cls, model: Any) -> "Structure":
        """Read the shape of a supported HF model (archs.adapter_for) from its (possibly pruned) modules."""
        cfg, adapter = model.config, adapter_for(model)
        head_dim = adapter.head_dim(cfg)
        layers, kept = [], getattr(model, "adaprune_kept_layers", None)
        for layer in adapter.layers(model):
            width = {r: adapter.linear(layer, r).out_features for r in (ATTN_Q, ATTN_K, FFN_GATE)}
            layers.append(LayerShape(width[ATTN_Q] // head_dim, width[ATTN_K] // head_dim, width[FFN_GATE]))
        if kept is None:
            kept = list(range(len(layers)))
        n_orig = getattr(model, "adaprune_n_layer_orig", None) or len(layers)
        tied = bool(getattr(cfg, "tie_word_embeddings", False))
        return cls(cfg.hidden_size, head_dim, cfg.vocab_size, n_orig, tuple(kept), tuple(layers), tied, adapter.name)
