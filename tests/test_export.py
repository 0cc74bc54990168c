"""GGUF export of tiny pruned Llamas: logits in llama-cpp-python equal torch (deci and llama), bias
compensation carried, Q8_0 within a KL bound, quant fall-backs as structure.py predicts, shape-only files."""

from __future__ import annotations

import gguf as gguf_pkg
import numpy as np
import pytest
import torch

from adaprune_edge import models
from adaprune_edge.gguf import keys as gguf_keys
from adaprune_edge.runtime import llamacpp as llama_runner
from adaprune_edge.archs import ARCHS, slicing as pruning
from adaprune_edge.errors import ConfigError, ExportError
from adaprune_edge.exporters import gguf, quantize, vocab
from adaprune_edge.archs.structure import LayerShape, Structure
from adaprune_edge.quant import QuantRecipe

R = QuantRecipe.parse

LLAMA = ARCHS.get("llama")  # the tiny test models are Llamas

PROMPT = [1, 400, 2000, 31, 5, 9000, 77, 123, 4567, 12, 48000, 3]
VOCAB = 49152  # the default model's tokenizer, so llama.cpp gets a real vocabulary; hidden stays tiny


@pytest.fixture(scope="module")
def tok_meta() -> vocab.TokenizerMeta:
    return vocab.from_gguf(models.default_gguf_path())


def _nonuniform(model) -> None:
    layers = model.model.layers
    pruning.prune_attention(LLAMA, layers[0], [0, 1], [[1], [0]])     # 4h/2kv → 2h/2kv
    pruning.prune_mlp(LLAMA, layers[1], list(range(0, 128, 2)))             # 128 → 64
    pruning.prune_attention(LLAMA, layers[2], [1], [[0, 1]])          # 4h/2kv → 2h/1kv
    pruning.prune_mlp(LLAMA, layers[2], list(range(40)))                    # odd width
    pruning.sync_config(model)


def _uniform(model) -> None:
    for layer in model.model.layers:
        pruning.prune_attention(LLAMA, layer, [0, 1], [[1], [0]])
        pruning.prune_mlp(LLAMA, layer, list(range(96)))
    pruning.drop_layers(model, [0, 2])
    pruning.sync_config(model)


def _gguf_logits(path, tokens=PROMPT) -> np.ndarray:
    llm = llama_runner.open_gguf(path, n_ctx=64, threads=2)
    try:
        return llama_runner.logits(llm, tokens)
    finally:
        llm.close()


def _torch_logits(model, tokens=PROMPT) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].numpy()


def _kl(ref: np.ndarray, cand: np.ndarray) -> float:
    rp, cp = llama_runner.log_softmax(ref), llama_runner.log_softmax(cand)
    return float((np.exp(rp) * (rp - cp)).sum(-1).mean())


def _field(path, key):
    return gguf_pkg.GGUFReader(str(path)).fields[key].contents()


def test_nonuniform_prune_exports_as_deci_and_matches_torch(tiny_llama, tok_meta, tmp_path):
    model = tiny_llama(vocab=VOCAB)
    _nonuniform(model)
    res = gguf.write_model(model, tmp_path / "m.gguf", tok_meta)
    assert res.arch == "deci"
    assert _field(res.path, "deci.attention.head_count") == [2, 4, 2]
    assert _field(res.path, "deci.attention.head_count_kv") == [2, 2, 1]
    assert _field(res.path, "deci.feed_forward_length") == [128, 64, 40]
    st = Structure.from_dict(__import__("json").loads(_field(res.path, gguf_keys.STRUCTURE)))
    assert st == Structure.from_model(model)
    diff = np.abs(_gguf_logits(res.path) - _torch_logits(model)).max()
    assert diff < 1e-3, diff


def test_uniform_prune_exports_as_llama_and_matches_torch(tiny_llama, tok_meta, tmp_path):
    model = tiny_llama(vocab=VOCAB, seed=1)
    _uniform(model)
    res = gguf.write_model(model, tmp_path / "u.gguf", tok_meta)
    assert res.arch == "llama"
    assert _field(res.path, "llama.block_count") == 2
    assert _field(res.path, "llama.feed_forward_length") == 96
    diff = np.abs(_gguf_logits(res.path) - _torch_logits(model)).max()
    assert diff < 1e-3, diff


def test_untied_output_is_written(tiny_llama, tok_meta, tmp_path):
    model = tiny_llama(vocab=VOCAB, tied=False, seed=2)
    res = gguf.write_model(model, tmp_path / "t.gguf", tok_meta)
    assert "output.weight" in quantize.tensor_types(res.path)
    assert np.abs(_gguf_logits(res.path) - _torch_logits(model)).max() < 1e-3


def test_bias_compensation_is_carried_not_dropped(tiny_llama, tok_meta, tmp_path):
    model = tiny_llama(vocab=VOCAB, seed=3)
    _nonuniform(model)
    torch.manual_seed(0)
    pruning.add_output_bias(model.model.layers[0].self_attn.o_proj, torch.randn(64) * 0.5)
    pruning.add_output_bias(model.model.layers[1].mlp.down_proj, torch.randn(64) * 0.5)
    res = gguf.write_model(model, tmp_path / "b.gguf", tok_meta)
    assert set(res.biases) == {"blk.0.attn_output.bias", "blk.1.ffn_down.bias"}
    got = _gguf_logits(res.path)
    assert np.abs(got - _torch_logits(model)).max() < 1e-3
    with torch.no_grad():  # the biases matter: without them the logits are clearly different
        model.model.layers[0].self_attn.o_proj.bias.zero_()
        model.model.layers[1].mlp.down_proj.bias.zero_()
    assert np.abs(got - _torch_logits(model)).max() > 1e-2


def test_bias_llama_cpp_cannot_carry_is_refused(tiny_llama, tok_meta, tmp_path):
    model = tiny_llama(vocab=VOCAB)
    pruning.add_output_bias(model.model.norm, torch.zeros(64)) if hasattr(model.model.norm, "bias") else None
    model.model.layers[0].input_layernorm.bias = torch.nn.Parameter(torch.zeros(64))
    with pytest.raises(ExportError, match="refusing to drop"):
        gguf.write_model(model, tmp_path / "x.gguf", tok_meta)
    assert not list(tmp_path.iterdir())


def test_q8_0_within_kl_bound_of_f16_and_types_match_structure(tiny_llama, tok_meta, tmp_path):
    model = tiny_llama(vocab=VOCAB, hidden=64, ffn=256)
    _nonuniform(model)
    f16 = gguf.write_model(model, tmp_path / "f16.gguf", tok_meta)
    q8 = gguf.write_model(model, tmp_path / "q8.gguf", tok_meta, quant=R("Q8_0"))
    kl = _kl(_gguf_logits(f16.path), _gguf_logits(q8.path))
    assert kl < 1e-3, kl  # Q8_0 of a random tiny model: measured ~1e-5 nats/token
    rep = quantize.report(q8.path, Structure.from_model(model), R("Q8_0"))
    assert rep.mismatches == ()
    assert q8.file_bytes < 0.7 * f16.file_bytes  # 8.5 vs 16 bits/weight plus the same 2 MB tokenizer


def test_q4_k_m_fallbacks_reported_and_predicted(tiny_llama, tok_meta, tmp_path):
    model = tiny_llama(vocab=VOCAB, hidden=64)
    _nonuniform(model)
    q4 = gguf.write_model(model, tmp_path / "q4.gguf", tok_meta, quant=R("Q4_K_M"))
    rep = quantize.report(q4.path, Structure.from_model(model), R("Q4_K_M"))
    assert rep.mismatches == ()  # llama.cpp's real types equal structure.py's prediction
    assert rep.fallbacks and all(t.actual != "Q4_K" for t in rep.fallbacks)  # 64-wide rows cannot be Q4_K
    assert 4.0 < rep.bits_per_weight < 16.5


def test_unknown_quant_lists_known(tiny_llama, tok_meta, tmp_path):
    with pytest.raises(ConfigError, match="Q4_K_M"):
        gguf.write_model(tiny_llama(vocab=VOCAB), tmp_path / "z.gguf", tok_meta, quant=R("Q3_XYZ"))


def test_tokenizer_vocab_mismatch_is_refused(tiny_llama, tok_meta, tmp_path):
    with pytest.raises(ExportError, match="tokens"):
        gguf.write_model(tiny_llama(vocab=256), tmp_path / "v.gguf", tok_meta)
    assert not list(tmp_path.iterdir())


def test_shape_only_file_has_structure_shapes_and_loads(tok_meta, tmp_path):
    st = Structure(64, 16, VOCAB, 4, (0, 1, 3), (LayerShape(4, 2, 128), LayerShape(2, 2, 64), LayerShape(4, 1, 96)))
    res = gguf.write_shape_only(st, tmp_path / "s.gguf", tok_meta, quant=R("Q8_0"))
    assert res.arch == "deci"
    types = quantize.tensor_types(res.path)
    assert types["blk.2.attn_k.weight"] == "Q8_0"
    reader = gguf_pkg.GGUFReader(res.path)
    shapes = {t.name: tuple(int(x) for x in t.shape[::-1]) for t in reader.tensors}
    for t in st.tensors(R("Q8_0")):
        assert shapes[t.name] == (t.rows, t.cols)
    assert _field(res.path, gguf_keys.SHAPE_ONLY) is True
    assert _gguf_logits(res.path, [1, 2, 3]).shape == (3, VOCAB)
    cached = gguf.cached_shape_only(st, R("F16"), cache=tmp_path / "cache")
    assert cached.name == f"{st.key()}-F16.gguf" and gguf.cached_shape_only(st, R("F16"), cache=tmp_path / "cache") == cached


def test_permute_qk_matches_llama_cpp_rope_layout():
    w = np.arange(2 * 8 * 3, dtype=np.float32).reshape(16, 3)  # 2 heads of head_dim 8
    p = gguf.permute_qk(w, 2)
    # head 0: rows (0,4),(1,5),(2,6),(3,7) interleaved — the two rotary halves become pairs
    assert p[:8, 0].tolist() == [0, 12, 3, 15, 6, 18, 9, 21]
    assert sorted(p[:, 0].tolist()) == sorted(w[:, 0].tolist())


def test_hf_tokenizer_metadata_equals_gguf_copy(default_model, tok_meta):
    meta = vocab.from_hf(default_model.tokenizer, VOCAB)
    def text(tokens):
        return [t.decode() if isinstance(t, bytes) else t for t in tokens]

    assert text(meta.get("tokenizer.ggml.tokens")) == text(tok_meta.get("tokenizer.ggml.tokens"))
    assert list(meta.get("tokenizer.ggml.merges")) == list(tok_meta.get("tokenizer.ggml.merges"))
    assert meta.get("tokenizer.ggml.eos_token_id") == tok_meta.get("tokenizer.ggml.eos_token_id")
    assert "<|im_start|>" in meta.chat_template


def test_type_mix_counts_every_tensor_of_the_file_by_role_and_type(tiny_llama, tok_meta, tmp_path):
    """inspect's per-role table of a GGUF's real types: one row per (role, ggml type), every tensor once,
    bytes adding up to the file's tensor data; a 64-wide Q4_K_M model has no Q4_K row (its rows fall back)."""
    from typer.testing import CliRunner

    from adaprune_edge.cli.app import app

    model = tiny_llama(vocab=VOCAB, hidden=64)
    q4 = gguf.write_model(model, tmp_path / "q4.gguf", tok_meta, quant=R("Q4_K_M"))
    tensors = gguf_pkg.GGUFReader(str(q4.path)).tensors
    mix = quantize.type_mix(q4.path)
    assert sum(n for _, _, n, _ in mix) == len(tensors)
    assert sum(b for _, _, _, b in mix) == sum(int(t.n_bytes) for t in tensors)
    assert len({(r, k) for r, k, _, _ in mix}) == len(mix)
    by_role = {r: (k, n) for r, k, n, _ in mix if r == "attn_q"}
    assert by_role["attn_q"][1] == model.config.num_hidden_layers and "Q4_K" not in {k for _, k, _, _ in mix}
    out = CliRunner().invoke(app, ["inspect", "--model", str(q4.path)], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "tensors attn_q" in out.output and f"{by_role['attn_q'][0]} x{model.config.num_hidden_layers}" in out.output
