"""Shared fixtures: a factory of tiny random Llamas (GQA) and the real embedded default model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
WIKITEXT_VALID = SHARED_DATA / "wikitext-2" / "valid.txt"

# the default model's torch perplexity on the first 8 x 512 tokens of wikitext-2 valid (token_windows), measured
# 2026-12-07: models.load('default') + perplexity(token_windows(tok, valid text, 512, 8)) = 19.50205
DENSE_8X512_PPL = 19.5021


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared evaluation data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def tiny_llama():
    """Factory: tiny_llama(layers=3, hidden=64, heads=4, kv_heads=2, ffn=128, vocab=256, seed=0)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    def make(layers: int = 3, hidden: int = 64, heads: int = 4, kv_heads: int = 2, ffn: int = 128,
             vocab: int = 256, seed: int = 0, tied: bool = True):
        torch.manual_seed(seed)
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
                          num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=512,
                          tie_word_embeddings=tied, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
                          pad_token_id=0)
        model = LlamaForCausalLM(cfg).eval()
        with torch.no_grad():  # non-trivial norms so slicing mistakes show up in the logits
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.uniform_(0.5, 1.5)
        return model

    return make


@pytest.fixture(scope="session")
def default_model():
    """The embedded SmolLM2-135M-Instruct, loaded once per test session (float32)."""
    from adaprune_edge import models

    return models.load("default")


def save_tiny_model(out: Path, *, hidden: int = 96, heads: int = 6, kv_heads: int = 2, ffn: int = 256,
                    layers: int = 4, seed: int = 0) -> Path:
    """Save a tiny random Llama with the real SmolLM2 tokenizer (vocab 49152) as an HF folder, so the
    whole tool (calibration text, GGUF export, llama.cpp) runs on it as on a real model."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from adaprune_edge import models

    models.load("default")  # converts and caches the default model (and its tokenizer) once
    tok_dir = next((models.cache_dir() / "gguf-as-hf").glob("SmolLM2*"))
    tok = AutoTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, tie_word_embeddings=True,
                      max_position_embeddings=1024, rms_norm_eps=1e-5)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def tiny_model_with_budget(root: Path) -> tuple[Path, Path, float]:
    """A 4-layer tiny model, a `predict` device profile, and a decode budget halfway between the dense
    model's and a uniformly half-pruned one's (the embedding dominates a tiny model's bytes)."""
    from adaprune_edge.device import Device
    from adaprune_edge.latency.budget import uniform
    from adaprune_edge.models import load
    from adaprune_edge.archs.structure import Structure
    from adaprune_edge.quant import QuantRecipe

    model = save_tiny_model(root / "tiny", hidden=128, heads=4, kv_heads=2, ffn=1024, layers=4)
    dev = root / "host.yaml"
    dev.write_text("extends: this-host\nbackend: predict\n")
    device = Device.resolve(str(dev))
    base = Structure.from_model(load(str(model)).model)
    q8 = QuantRecipe("Q8_0")
    dense = device.predict(base, q8).decode_ms_per_token
    half = device.predict(uniform(base, 0.5, q8), q8).decode_ms_per_token
    return model, dev, half + 0.5 * (dense - half)
