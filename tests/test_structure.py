import torch
from gguf import GGMLQuantizationType as QT

from adaprune_edge.archs.structure import LayerShape, Structure
from adaprune_edge.quant import QuantRecipe

R = QuantRecipe.parse


def test_from_model_counts_params_exactly(tiny_llama):
    for tied in (True, False):
        m = tiny_llama(tied=tied)
        st = Structure.from_model(m)
        assert st.params() == sum(p.numel() for p in m.parameters())
        assert st.is_uniform and st.layers[0] == LayerShape(4, 2, 128)


def test_json_roundtrip_and_key():
    st = Structure(576, 64, 49152, 30, (0, 2), (LayerShape(9, 3, 1536), LayerShape(6, 3, 512)))
    again = Structure.from_dict(st.to_dict())
    assert again == st and again.key() == st.key() and not st.is_uniform
    assert st.condensed() == "0: 9h/3kv/1536ff, 2: 6h/3kv/512ff"


def test_quant_fallbacks_follow_llama_cpp_rules():
    st = Structure.dense(576, 64, 49152, 30, 9, 3, 1536)
    plans = {t.name: t for t in st.tensors(R("Q4_K_M"))}
    # 576-wide rows are not a multiple of 256: Q4_K falls back to Q5_0; tied output -> Q8_0
    assert plans["blk.1.attn_q.weight"].qtype == QT.Q5_0 and plans["blk.1.attn_q.weight"].fallback
    assert plans["token_embd.weight"].qtype == QT.Q8_0
    # ffn_down rows are 1536 = 6 x 256: K-quants apply; "more bits" layers get Q6_K
    assert plans["blk.0.ffn_down.weight"].qtype == QT.Q6_K
    assert plans["blk.4.ffn_down.weight"].qtype == QT.Q4_K
    assert len(st.fallbacks(R("Q4_K_M"))) == 181 and st.fallbacks(R("Q8_0")) == []  # 180 layer tensors + the tied output
    # byte count: 576 x 1536 Q4_K = 1536 rows x (576/256 … ) is exercised through rows*blocks*size
    q8 = Structure.dense(64, 16, 256, 2, 4, 2, 128)
    assert q8.gguf_bytes(R("Q8_0")) < q8.gguf_bytes(R("F16")) < q8.gguf_bytes(R("F32"))


def test_default_model_size_estimate_matches_published_q4_1_file():
    # F16 bytes = 2 x params of weights + F32 norms
    st = Structure.dense(576, 64, 49152, 30, 9, 3, 1536)
    assert st.params() == 134_515_008
    assert st.gguf_bytes(R("F16")) == 2 * (st.params() - st.hidden * 61) + 4 * st.hidden * 61


def test_params_and_norms_follow_the_family_adapter():
    """Every family's layer tensors (QK-norms of Qwen3 and Gemma 3, Gemma's post-norms) come from its adapter:
    the Structure counts the tiny model's parameters exactly."""
    from adaprune_edge.archs.tiny import tiny_model

    for family in ("llama", "qwen3", "gemma3_text", "smollm3"):
        m = tiny_model(family)
        st = Structure.from_model(m)
        assert st.family == family and st.params() == sum(p.numel() for p in m.parameters()), family
    qwen3, llama = (Structure.from_model(tiny_model(f)) for f in ("qwen3", "llama"))
    assert qwen3.norm_bytes() == 4 * (qwen3.n_layer * (2 * 64 + 2 * 32) + 64)  # 2 hidden norms + q/k norms of head_dim
    assert llama.norm_bytes() == 4 * 64 * (2 * llama.n_layer + 1)
