"""Gemma 3 text decoders (270M, 1B, and the text part of larger ones): QK-norm, norms before and after
attention and MLP, RMS-norm weights stored as w with scale 1 + w, √hidden embedding scale, GeGLU (tanh GELU),
sliding-window attention on most layers with its own RoPE base.

Uniform pruning only (llama.cpp's `gemma3` builds every layer with layer 0's shapes; `deci` has none of the
above). Written like llama.cpp's converter (conversion/gemma.py): norms + 1, global-layer RoPE base as
rope.freq_base, local base as rope.freq_base_swa, the window, and the per-layer sliding pattern as a bool
array (so dropped layers keep their own kind); llama.cpp scales the embedding itself."""

from __future__ import annotations

from typing import Any

import torch
from gguf import GGUFWriter

from adaprune_edge.archs.base import (ATTN_K_NORM, ATTN_NORM, ATTN_POST_NORM, ATTN_Q_NORM, FFN_NORM, FFN_POST_NORM,
                                      ArchAdapter, config_of)
from adaprune_edge.archs.hparams import HParams
from adaprune_edge.archs.registry import ARCHS
from adaprune_edge.errors import ExportError, ModelError


class Gemma3Adapter(ArchAdapter):
    name, gguf_arch, per_layer = "gemma3_text", "gemma3", False
    norms = {"input_layernorm": ATTN_NORM, "post_attention_layernorm": ATTN_POST_NORM,
             "pre_feedforward_layernorm": FFN_NORM, "post_feedforward_layernorm": FFN_POST_NORM}
    head_norms = {"q_norm": ATTN_Q_NORM, "k_norm": ATTN_K_NORM}
    norm_shift = 1.0
    activation = ("hidden_activation", ("gelu_pytorch_tanh",))
    pruning = "heads, KV groups, FFN channels, layers; uniform widths only"
    deci_lacks = "QK-norm, post-norms, sliding window or embedding scaling"

    def restore_buffers(self, model: Any) -> None:
        super().restore_buffers(model)
        emb = model.model.embed_tokens  # Gemma3TextScaledWordEmbedding: √hidden, a non-persistent buffer
        emb.embed_scale = torch.tensor(model.config.hidden_size ** 0.5, dtype=emb.weight.dtype)

    def check_config(self, cfg: Any) -> None:
        super().check_config(cfg)
        cfg = config_of(cfg)
        scalar = getattr(cfg, "query_pre_attn_scalar", None)
        if scalar is not None and scalar != self.head_dim(cfg):
            raise ModelError(f"gemma3 with query_pre_attn_scalar {scalar} ≠ head_dim {self.head_dim(cfg)} is not "
                             "supported: llama.cpp scales queries by 1/√head_dim (except its 62-layer 27B)")
        if getattr(cfg, "attn_logit_softcapping", None) or getattr(cfg, "use_bidirectional_attention", False):
            raise ModelError("gemma3 with attention soft-capping or bidirectional attention is not supported by "
                             "llama.cpp's gemma3 graph")

    def hparams(self, cfg: Any) -> HParams:
        cfg = config_of(cfg)
        rope = self.rope(cfg)
        if rope["rope_type"] not in ("default", "linear"):
            raise ExportError(f"RoPE scaling {rope['rope_type']!r} of gemma3 is not supported (default, linear)")
        local = dict((getattr(cfg, "rope_parameters", None) or {}).get("sliding_attention") or {})
        types = list(getattr(cfg, "layer_types", None) or [])
        window = int(getattr(cfg, "sliding_window", 0) or 0) if "sliding_attention" in types else 0
        return HParams(int(getattr(cfg, "max_position_embeddings", 131072)), float(rope["rope_theta"]),
                       float(cfg.rms_norm_eps), rope_linear=float(rope.get("factor", 1.0)) if rope["rope_type"] == "linear" else 1.0,
                       sliding_window=window, swa_layers=tuple(t == "sliding_attention" for t in types) if window else (),
                       rope_theta_swa=float(local.get("rope_theta", 10000.0)) if window else 0.0,
                       logit_softcap=float(getattr(cfg, "final_logit_softcapping", None) or 0.0))

    def add_kv(self, w: GGUFWriter, hp: HParams, structure: Any) -> None:
        super().add_kv(w, hp, structure)
        if hp.sliding_window:
            if len(hp.swa_layers) != structure.n_layer:
                raise ExportError(f"gemma3: {len(hp.swa_layers)} layer types for {structure.n_layer} layers")
            w.add_sliding_window(hp.sliding_window)
            w.add_sliding_window_pattern(list(hp.swa_layers))
            w.add_rope_freq_base_swa(hp.rope_theta_swa)
        if hp.logit_softcap:
            w.add_final_logit_softcapping(hp.logit_softcap)


ARCHS.register("gemma3_text")(Gemma3Adapter())
