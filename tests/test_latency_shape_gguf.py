"""A shape-only GGUF (what latency is measured on) matches the real export of the same pruned model:
same tensor names, shapes and types, file size within 1%, and llama.cpp loads it."""

from __future__ import annotations

import pytest

from adaprune_edge import models
from adaprune_edge.archs import ARCHS, slicing as pruning
from adaprune_edge.archs.gguf_structure import structure_of_gguf
from adaprune_edge.archs.structure import Structure
from adaprune_edge.quant import QuantRecipe

R = QuantRecipe.parse

LLAMA = ARCHS.get("llama")  # the tiny test models are Llamas

gguf_export = pytest.importorskip("adaprune_edge.exporters.gguf")


def _tensors(path):
    import gguf

    r = gguf.GGUFReader(str(path))
    return {t.name: ([int(x) for x in t.shape], t.tensor_type.name) for t in r.tensors}


@pytest.mark.parametrize("quant", [R("Q8_0")])  # F16 is its intermediate
def test_shape_only_matches_real_export(tiny_llama, tmp_path, quant):
    from adaprune_edge.exporters import vocab
    from adaprune_edge.runtime.llamacpp import open_gguf

    meta = vocab.from_gguf(models.default_gguf_path())  # a real tokenizer: 49152 tokens
    model = tiny_llama(layers=4, hidden=128, heads=4, kv_heads=2, ffn=256, vocab=meta.n_vocab)
    # non-uniform: layer 1 loses query heads within its KV groups, layer 2 half its FFN, layer 3 is removed
    pruning.prune_attention(LLAMA, model.model.layers[1], [0, 1], [[0], [1]])
    pruning.prune_mlp(LLAMA, model.model.layers[2], list(range(0, 256, 2)))
    pruning.drop_layers(model, [0, 1, 2])
    st = Structure.from_model(model)
    real = gguf_export.write_model(model, tmp_path / "real.gguf", meta, quant=quant)
    probe = gguf_export.write_shape_only(st, tmp_path / "probe.gguf", meta, quant)
    assert _tensors(real.path) == _tensors(probe.path)
    assert probe.file_bytes == pytest.approx(real.file_bytes, rel=0.01)
    assert structure_of_gguf(probe.path).layers == st.layers  # the predictor reads the same shape back
    llm = open_gguf(probe.path, n_ctx=32, threads=1, logits_all=False)
    llm.eval([1, 2, 3])
    assert llm.n_tokens == 3


@pytest.mark.parametrize("family, vocab_rows", [("qwen3", 256), ("llama", 50000)])
def test_shape_only_file_has_the_family_and_its_vocabulary(family, vocab_rows, tmp_path, monkeypatch):
    """A structure of another family and vocabulary is probed as that family's llama.cpp architecture with
    exactly its vocabulary rows (the default tokenizer cut or padded), and llama.cpp loads it."""
    import gguf

    from adaprune_edge.archs import adapter_for
    from adaprune_edge.archs.tiny import tiny_model
    from adaprune_edge.latency.shape import shape_only_gguf
    from adaprune_edge.runtime.llamacpp import open_gguf

    monkeypatch.setenv("ADAPRUNE_CACHE", str(tmp_path))
    model = tiny_model(family, vocab=vocab_rows)
    st = Structure.from_model(model)
    assert st.family == family and st.vocab == vocab_rows
    path = shape_only_gguf(st, R("Q8_0"))
    reader = gguf.GGUFReader(str(path))
    assert reader.fields["general.architecture"].contents() == adapter_for(model).gguf_arch
    assert len(reader.fields["tokenizer.ggml.tokens"].contents()) == vocab_rows
    assert _tensors(path)["token_embd.weight"][0] == [st.hidden, vocab_rows]  # ggml order: row length first
    assert {n for n in _tensors(path) if n.startswith("blk.0.")} == {
        f"blk.0.{role}.weight" for role, _ in adapter_for(model).layer_tensors(st.layers[0], st.hidden, st.head_dim)}
    assert structure_of_gguf(path) == st  # the header reads back the same family and shapes
    llm = open_gguf(path, n_ctx=32, threads=1, logits_all=False)
    try:
        assert llm.n_vocab() == vocab_rows
        llm.eval([1, 2, 3])
        assert llm.n_tokens == 3
    finally:
        llm.close()
