"""Phi-3 (mini / medium, 4k context): a Llama with fused projections — `qkv_proj` (Q, K, V rows stacked) and
`gate_up_proj` (gate rows, then up rows; the MLP computes down(up · silu(gate))) — RMS-norms, rotate-half
RoPE, no biases.

The adapter splits the fused modules the first time a model's layers are asked for (`layers`): each layer's
attention becomes transformers' LlamaAttention and its MLP LlamaMLP, holding the same weights as separate
nn.Linear (exactly the same function: same RoPE, scaling, masks, SiLU gate). From then on the model is the
Llama layout inside a Phi3ForCausalLM, so statistics, OBS, slicing and LoRA see ordinary projections, and
per-layer widths run in torch (LlamaAttention reads its widths from its modules; Phi3Attention splits the
fused output by the config's head counts). The file is written like a Llama (`llama`, `deci` for per-layer
widths; Q/K rows permuted for its pair-wise RoPE); llama.cpp's own `phi3` graph would need the fused
tensors at the dense widths (attn_qkv as hidden + 2 · KV width rows).

HF's sliding window (Phi-3-mini-4k: 2047 tokens) only masks tokens further back than the window; the file
declares the window as its training context, within which torch and llama.cpp agree. Pruned models are
saved as adaprune folders (`saves_as_hf` False): plain transformers would look for the fused tensors."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from adaprune_edge.archs.base import ArchAdapter, config_of
from adaprune_edge.archs.hparams import HParams
from adaprune_edge.archs.registry import ARCHS
from adaprune_edge.errors import ModelError


def _linear(weight: torch.Tensor) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=False, dtype=weight.dtype, device=weight.device)
    with torch.no_grad():
        lin.weight.copy_(weight)
    return lin


def _llama_config(cfg: Any, n_kv: int, head_dim: int) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                       num_attention_heads=cfg.num_attention_heads, num_key_value_heads=n_kv, head_dim=head_dim,
                       hidden_act=cfg.hidden_act, attention_dropout=cfg.attention_dropout)


def split_layer(layer: nn.Module, cfg: Any) -> None:
    """Replace a Phi-3 layer's fused attention and MLP by Llama modules holding the same weights."""
    from transformers.models.llama.modeling_llama import LlamaAttention, LlamaMLP

    attn, mlp = layer.self_attn, layer.mlp
    d, n_kv = attn.head_dim, attn.num_key_value_heads
    n_q = cfg.num_attention_heads * d  # Phi3Attention.forward splits its output here
    with torch.device("meta"):
        llama = _llama_config(cfg, n_kv, d)
        new_attn, new_mlp = LlamaAttention(llama, attn.layer_idx), LlamaMLP(llama)
    q, k, v = attn.qkv_proj.weight.detach().split([n_q, n_kv * d, n_kv * d])
    new_attn.q_proj, new_attn.k_proj, new_attn.v_proj = _linear(q), _linear(k), _linear(v)
    new_attn.o_proj = attn.o_proj
    new_attn.config = cfg  # the model's own config: attention implementation, as Phi3Attention reads it
    gate, up = mlp.gate_up_proj.weight.detach().chunk(2)
    new_mlp.gate_proj, new_mlp.up_proj, new_mlp.down_proj = _linear(gate), _linear(up), mlp.down_proj
    new_mlp.config = cfg
    layer.self_attn, layer.mlp = new_attn.train(attn.training), new_mlp.train(mlp.training)


class Phi3Adapter(ArchAdapter):
    name, gguf_arch, per_layer = "phi3", "llama", True
    pruning = "heads, KV groups, FFN channels, layers; per-layer widths (deci)"
    saves_as_hf = False

    def layers(self, model: Any) -> Any:
        """The decoder layers, fused projections split on first use (see the module docstring)."""
        layers = model.model.layers
        for layer in layers:
            if hasattr(layer.self_attn, "qkv_proj"):
                split_layer(layer, model.config)
        return layers

    def check_config(self, cfg: Any) -> None:
        super().check_config(cfg)
        rope = self.rope(cfg)
        if float(rope.get("partial_rotary_factor", 1.0)) != 1.0:
            raise ModelError(f"phi3 with partial_rotary_factor {rope['partial_rotary_factor']} is not supported: "
                             "llama.cpp's llama graph rotates whole heads")

    def hparams(self, cfg: Any) -> HParams:
        hp = super().hparams(cfg)
        window = int(getattr(config_of(cfg), "sliding_window", None) or 0)
        return dataclasses.replace(hp, context_length=window) if 0 < window < hp.context_length else hp


ARCHS.register("phi3")(Phi3Adapter())
