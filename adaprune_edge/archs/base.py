"""ArchAdapter: what the pruner and the GGUF exporter know about one HF decoder family.

An adapter owns the HF module paths of a decoder layer (projections, norms), which projections carry
biases, how to read the config (head_dim, RoPE, sliding window), the llama.cpp architecture a file is
written as and its tensor names (taken from the `gguf` package's constants), the Q/K row order llama.cpp
expects, and which pruning llama.cpp can load for that family:

- `per_layer = True`: any structure; uniform files use the native architecture, non-uniform ones `deci`
  (llama.cpp builds per-layer shapes only for `deci` and `openelm`).
- `per_layer = False`: uniform structures only (same heads / KV heads / FFN width in every kept layer):
  the native architecture (`qwen3`, `gemma3`) builds every layer with layer 0's shapes, and `deci` has no
  QK-norm, post-norms, sliding window or embedding scaling to fall back on.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from torch import nn
from gguf import GGUFWriter, RopeScalingType

from adaprune_edge.archs.hparams import HParams
from adaprune_edge.errors import ConfigError, ExportError, ModelError
from adaprune_edge.gguf.names import (ATTN_K, ATTN_K_NORM, ATTN_NORM, ATTN_OUT, ATTN_POST_NORM, ATTN_Q,  # noqa: F401
                                        ATTN_Q_NORM, ATTN_V, FFN_DOWN, FFN_GATE, FFN_NORM, FFN_POST_NORM, FFN_UP,
                                        OUTPUT, OUTPUT_NORM, PROJECTIONS, QKV, ROPE_FREQS, TOKEN_EMBD,
                                        tensor_name)


# GGUF role → HF module path inside one decoder layer (the Llama names; a family with another layout
# overrides the adapter methods that use it)
HF_PATHS = {ATTN_Q: "self_attn.q_proj", ATTN_K: "self_attn.k_proj", ATTN_V: "self_attn.v_proj",
            ATTN_OUT: "self_attn.o_proj", FFN_GATE: "mlp.gate_proj", FFN_UP: "mlp.up_proj",
            FFN_DOWN: "mlp.down_proj"}
PER_LAYER_ARCH = "deci"
NORM_ROPE_ARCHS = ("llama", "deci", "smollm3")  # rotate consecutive pairs: HF's rotate-half Q/K rows get permuted
# biases each llama.cpp graph adds (optional tensors in src/models/<arch>.cpp of llama-cpp-python 0.3.36)
CARRIED_BIASES = {"llama": (*QKV, ATTN_OUT, FFN_GATE, FFN_UP, FFN_DOWN),
                  "deci": (*QKV, ATTN_OUT, FFN_GATE, FFN_UP, FFN_DOWN),
                  "qwen2": QKV, "qwen3": QKV, "gemma3": QKV, "smollm3": QKV}


def config_of(model_or_config: Any) -> Any:
    """The HF config of a model, or the config itself."""
    return getattr(model_or_config, "config", model_or_config)


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's Q/K row order for NORM-RoPE archs (convert_hf_to_gguf LlamaModel.permute): per head,
    interleave the two rotary halves. `n_head` is the layer's query heads for Q, KV heads for K; biases too."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class ArchAdapter:
    """One HF decoder family (subclass per family, registered in archs.registry)."""

    name = "llama"                     # HF model_type
    gguf_arch = "llama"                # llama.cpp architecture of uniform files
    per_layer = True                   # non-uniform structures go to `deci`
    norms = {"input_layernorm": ATTN_NORM, "post_attention_layernorm": FFN_NORM}  # hidden-wide, per layer
    head_norms: dict[str, str] = {}    # head_dim-wide, shared by all heads (QK-norm): never sliced
    norm_shift = 0.0                   # added to stored norm weights (Gemma's RMSNorm scales by 1 + w)
    activation = ("hidden_act", ("silu",))
    pruning = "heads, KV groups, FFN channels, layers; per-layer widths"
    deci_lacks = ""                    # what `deci` lacks for this family (uniform-only families)
    saves_as_hf = True                 # a uniform pruned model written by save_pretrained loads in transformers

    # -- HF modules --------------------------------------------------------------------------------
    def layers(self, model: Any) -> Any:
        """The decoder layers (an nn.ModuleList)."""
        return model.model.layers

    def set_layers(self, model: Any, layers: Sequence[Any]) -> None:
        """Replace the decoder layers (layer removal)."""
        model.model.layers = nn.ModuleList(layers)

    def linear(self, layer: Any, role: str) -> Any:
        """The nn.Linear of a GGUF role ('attn_q', 'ffn_down', ...) in one decoder layer."""
        return layer.get_submodule(HF_PATHS[role])

    def linears(self, layer: Any) -> dict[str, Any]:
        """GGUF role → nn.Linear of the seven projections of a layer (gguf.names.PROJECTIONS order)."""
        return {role: self.linear(layer, role) for role in PROJECTIONS}

    def set_linear(self, layer: Any, role: str, module: Any) -> None:
        """Put `module` (a sliced nn.Linear, a LoRA wrapper ...) in the place of a role's projection."""
        parent, _, attr = HF_PATHS[role].rpartition(".")
        setattr(layer.get_submodule(parent), attr, module)

    def attention(self, layer: Any) -> Any:
        """The attention module of a layer (holds the Q/K/V/output projections, head_dim)."""
        return layer.get_submodule(HF_PATHS[ATTN_Q].rsplit(".", 1)[0])

    def mlp(self, layer: Any) -> Any:
        """The gated MLP of a layer (holds the gate/up/down projections)."""
        return layer.get_submodule(HF_PATHS[FFN_GATE].rsplit(".", 1)[0])

    def hf_module(self, layer_index: int, role: str) -> str:
        """Module name of a role's projection in the model ('model.layers.3.self_attn.q_proj')."""
        return self.hf_name(tensor_name(role, layer_index)).removesuffix(".weight")

    def restore_buffers(self, model: Any) -> None:
        """Recompute the buffers state dicts do not hold (RoPE tables) after building on the meta device."""
        model.model.rotary_emb = type(model.model.rotary_emb)(config=model.config)

    def head_dim(self, cfg: Any) -> int:
        cfg = config_of(cfg)
        return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads

    # -- config ------------------------------------------------------------------------------------
    def check_config(self, cfg: Any) -> None:
        """ModelError (one line) for a config feature llama.cpp's graph for this family would not run."""
        cfg = config_of(cfg)
        key, allowed = self.activation
        act = getattr(cfg, key, allowed[0])
        if act not in allowed:
            raise ModelError(f"{self.name} with activation {act!r} is not supported: llama.cpp's "
                             f"{self.gguf_arch} graph uses {allowed[0]}")

    def check_model(self, model: Any) -> None:
        """ExportError for a (pruned) model llama.cpp would run differently from torch (default: none)."""

    def rope(self, cfg: Any) -> dict[str, Any]:
        """The (full-attention) RoPE parameters: rope_type, rope_theta, factor ..."""
        cfg = config_of(cfg)
        rope = dict(getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {})
        rope = dict(rope.get("full_attention", rope))
        rope.setdefault("rope_theta", getattr(cfg, "rope_theta", 10000.0))
        rope["rope_type"] = rope.get("rope_type", rope.get("type")) or "default"
        return rope

    def hparams(self, cfg: Any) -> HParams:
        """Context, RoPE base, RMS eps (plain RoPE only; families override for scaled RoPE / windows)."""
        cfg = config_of(cfg)
        rope = self.rope(cfg)
        if rope["rope_type"] != "default":
            raise ExportError(f"RoPE scaling {rope['rope_type']!r} of {self.name} is not supported by the GGUF "
                              "exporter (plain RoPE only)")
        return HParams(int(getattr(cfg, "max_position_embeddings", 8192)), float(rope["rope_theta"]),
                       float(cfg.rms_norm_eps))

    # -- which llama.cpp architecture a structure is written as -------------------------------------
    def native_fits(self, structure: Any) -> bool:
        """Whether the native architecture can hold this (uniform) structure."""
        return structure.is_uniform

    def gguf_arch_for(self, structure: Any, biases: Sequence[str] = ()) -> str:
        """The native arch when it can hold `structure` and its biases (GGUF names), else `deci` where the
        family maps onto it exactly; ExportError naming the llama.cpp limitation otherwise."""
        roles = {b.split(".")[2] for b in biases}
        if self.native_fits(structure) and roles <= set(CARRIED_BIASES[self.gguf_arch]):
            return self.gguf_arch
        if self.per_layer and roles <= set(CARRIED_BIASES[PER_LAYER_ARCH]):
            return PER_LAYER_ARCH
        if not structure.is_uniform:
            raise ExportError(self.uniform_only_message())
        raise ExportError(f"llama.cpp's {self.gguf_arch} graph has no place for the biases "
                          f"{', '.join(sorted(roles - set(CARRIED_BIASES[self.gguf_arch])))} of this {self.name} "
                          "model (refusing to drop them)")

    def uniform_only_message(self) -> str:
        return (f"{self.name} can only be pruned uniformly (same heads, KV heads and FFN width in every layer): "
                f"llama.cpp's {self.gguf_arch} architecture builds every layer with layer 0's shapes and its "
                f"per-layer architecture deci has no {self.deci_lacks}")

    # -- pruning limits ----------------------------------------------------------------------------
    def check_prune(self, config: Any) -> None:
        """ConfigError (one line) when a PruneConfig would give a file llama.cpp cannot load."""
        if self.per_layer or config.ratio == 0:
            return
        if config.allocation != "uniform" or config.protect_first or config.protect_last:
            raise ConfigError(self.uniform_only_message() + "; use allocation 'uniform' and no protected layers")
        if (config.bias_compensation or config.reconstruction) and ATTN_OUT not in CARRIED_BIASES[self.gguf_arch]:
            raise ConfigError(f"bias compensation / reconstruction add o_proj / down_proj biases, which "
                              f"llama.cpp's {self.gguf_arch} graph does not add; turn them off for {self.name}")

    def check_structure(self, structure: Any) -> None:
        """ConfigError for a structure llama.cpp cannot load for this family."""
        if not self.per_layer and not structure.is_uniform:
            raise ConfigError(self.uniform_only_message())

    # -- GGUF tensors ------------------------------------------------------------------------------
    def layer_tensors(self, s: Any, hidden: int, head_dim: int) -> list[tuple[str, tuple[int, ...]]]:
        """(role, numpy shape) of one layer's tensors: projections (rows, cols) and 1-D norms."""
        d = head_dim
        norms = list(self.norms.values())
        out: list[tuple[str, tuple[int, ...]]] = [(norms[0], (hidden,))]
        out += [(r, (d,)) for r in self.head_norms.values()]
        out += [(ATTN_Q, (s.n_head * d, hidden)), (ATTN_K, (s.n_head_kv * d, hidden)),
                (ATTN_V, (s.n_head_kv * d, hidden)), (ATTN_OUT, (hidden, s.n_head * d)),
                (FFN_GATE, (s.n_ff, hidden)), (FFN_UP, (s.n_ff, hidden)), (FFN_DOWN, (hidden, s.n_ff))]
        out += [(r, (hidden,)) for r in norms[1:]]
        return out

    def hf_name(self, gguf_name: str) -> str:
        """HF parameter name of a GGUF tensor name ('blk.3.attn_q.bias' → 'model.layers.3.self_attn.q_proj.bias')."""
        if gguf_name == f"{TOKEN_EMBD}.weight":
            return "model.embed_tokens.weight"
        if gguf_name == f"{OUTPUT_NORM}.weight":
            return "model.norm.weight"
        if gguf_name == f"{OUTPUT}.weight":
            return "lm_head.weight"
        _, i, role, kind = gguf_name.split(".")
        paths = {**HF_PATHS, **{v: k for k, v in self.norms.items()},
                 **{v: f"self_attn.{k}" for k, v in self.head_norms.items()}}
        return f"model.layers.{i}.{paths[role]}.{kind}"

    def gguf_role(self, hf_module: str) -> str | None:
        """GGUF role of an HF module path inside a layer ('self_attn.q_proj' → 'attn_q'), None if unknown."""
        inv = {v: k for k, v in HF_PATHS.items()}
        return inv.get(hf_module) or self.norms.get(hf_module) or self.head_norms.get(hf_module.split(".")[-1])

    def to_gguf(self, gguf_name: str, arr: np.ndarray, structure: Any, arch: str) -> np.ndarray:
        """An HF tensor (float32) as llama.cpp's `arch` reads it: Q/K rows permuted for NORM-RoPE archs,
        norm weights shifted by `norm_shift`."""
        if gguf_name.endswith("norm.weight") and self.norm_shift:
            arr = arr + np.float32(self.norm_shift)
        if not gguf_name.startswith("blk.") or arch not in NORM_ROPE_ARCHS:
            return arr
        _, i, role, _ = gguf_name.split(".")
        s = structure.layers[int(i)]
        if role == ATTN_Q:
            return permute_qk(arr, s.n_head)
        if role == ATTN_K:
            return permute_qk(arr, s.n_head_kv)
        return arr

    def from_gguf(self, gguf_name: str, arr: np.ndarray, structure: Any, arch: str) -> np.ndarray:
        """Undo to_gguf: a tensor as llama.cpp's `arch` reads it back in HF's layout (norms unshifted, Q/K
        rows in HF's rotate-half order; to_gguf takes gguf[j] = hf[order[j]], order = permute_qk(arange))."""
        if gguf_name.endswith("norm.weight") and self.norm_shift:
            arr = arr - np.float32(self.norm_shift)
        if not gguf_name.startswith("blk.") or arch not in NORM_ROPE_ARCHS:
            return arr
        _, i, role, _ = gguf_name.split(".")
        if role not in (ATTN_Q, ATTN_K):
            return arr
        s = structure.layers[int(i)]
        order = permute_qk(np.arange(arr.shape[0]), s.n_head if role == ATTN_Q else s.n_head_kv)
        out = np.empty_like(arr)
        out[order] = arr
        return out

    def add_kv(self, w: GGUFWriter, hp: HParams, structure: Any) -> None:
        """Architecture-specific metadata beyond the shapes (RoPE scaling, sliding window ...)."""
        if hp.rope_linear != 1.0:
            w.add_rope_scaling_type(RopeScalingType.LINEAR)
            w.add_rope_scaling_factor(hp.rope_linear)
