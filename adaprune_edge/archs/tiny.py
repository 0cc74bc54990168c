"""Tiny random models of every supported family, built from transformers configs (no downloads): for
tests and bench/archs.py. Norm weights are drawn away from their init so slicing or export mistakes show
up in the logits; Qwen2's q/k/v biases are drawn non-zero for the same reason."""

from __future__ import annotations

from typing import Any

import torch

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 256, "rope_theta": 500000.0}


def tiny_config(family: str, vocab: int = 256, hidden: int = 64, heads: int = 4, kv_heads: int = 2,
                ffn: int = 128, layers: int = 3, tied: bool = True) -> Any:
    """A transformers config of `family` ('llama', 'llama3', 'mistral', 'qwen2', 'qwen3', 'gemma3_text', 'smollm3',
    'phi3')."""
    import transformers as tf

    common = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=1024,
                  tie_word_embeddings=tied, rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if family in ("llama", "llama3"):
        return tf.LlamaConfig(**common, **({"rope_parameters": dict(LLAMA3_ROPE)} if family == "llama3" else {}))
    if family == "mistral":
        return tf.MistralConfig(**common, sliding_window=None)
    if family == "qwen2":
        return tf.Qwen2Config(**common)
    if family == "qwen3":  # explicit head_dim ≠ hidden / heads, as in Qwen3-0.6B (128 vs 1024 / 16 = 64)
        return tf.Qwen3Config(**common, head_dim=2 * hidden // heads)
    if family == "smollm3":  # NoPE on every 4th layer
        return tf.SmolLM3Config(**common)
    if family == "gemma3_text":  # a short window so the sliding layers matter on short texts
        d = hidden // heads
        return tf.Gemma3TextConfig(**common, head_dim=d, query_pre_attn_scalar=d, sliding_window=8)
    if family == "phi3":  # fused qkv_proj / gate_up_proj; 4k-style (no RoPE scaling), no window
        return tf.Phi3Config(**common, sliding_window=None)
    raise ValueError(f"no tiny config for {family!r}")


def tiny_model(family: str, seed: int = 0, **kw: Any) -> Any:
    """A random float32 causal LM of `family` in eval mode (see tiny_config for the keyword arguments)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, **kw), dtype=torch.float32).eval()
    gemma = family.startswith("gemma")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:  # Gemma stores w of the scale 1 + w
                p.uniform_(-0.5, 0.5) if gemma else p.uniform_(0.5, 1.5)
            elif name.endswith(".bias"):
                p.normal_(0.0, 0.5)
    return model
