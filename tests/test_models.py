
import numpy as np
import pytest

from tests.conftest import DENSE_8X512_PPL
import torch

from adaprune_edge import models
from adaprune_edge.errors import ModelError
from adaprune_edge.evaluate.perplexity import perplexity, read_text, token_windows


def test_resolve_aliases_and_errors(tmp_path):
    assert models.resolve("default").kind == "gguf"
    assert models.resolve("smollm2-135m").path.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    with pytest.raises(ModelError, match="not found"):
        models.resolve(str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelError, match="neither config.json"):
        models.resolve(str(tmp_path))
    assert models.resolve("HuggingFaceTB/SmolLM2-135M").kind == "hub"


def test_hub_id_offline_fails_clearly(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelError, match="not in the local HF cache"):
        models.load("nobody/no-such-model")


def test_corrupt_gguf_and_foreign_architecture(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all")
    with pytest.raises(ModelError, match="not a readable GGUF"):
        models.load(str(bad))


def test_unsupported_hf_architecture(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(ModelError, match="architecture 'gpt2'.*supported: llama"):
        models.load(str(tmp_path))


@pytest.mark.e2e
def test_default_model_matches_gguf_metadata_and_has_sane_perplexity(default_model, shared_data):
    import gguf

    info = default_model.info
    reader = gguf.GGUFReader(models.default_gguf_path())
    meta = {k: reader.fields[k].contents() for k in (
        "llama.block_count", "llama.attention.head_count", "llama.attention.head_count_kv",
        "llama.feed_forward_length", "llama.embedding_length")}
    assert (info.n_layer, info.n_head, info.n_head_kv, info.n_ff, info.hidden) == (
        meta["llama.block_count"], meta["llama.attention.head_count"], meta["llama.attention.head_count_kv"],
        meta["llama.feed_forward_length"], meta["llama.embedding_length"]) == (30, 9, 3, 1536, 576)
    n_gguf = sum(int(t.n_elements) for t in reader.tensors)
    assert info.params == n_gguf == 134_515_008
    wins = token_windows(default_model.tokenizer, read_text(shared_data / "wikitext-2/valid.txt"), 512, 8)
    assert wins.shape == (8, 512)
    ppl = perplexity(default_model.model, wins)
    assert ppl == pytest.approx(DENSE_8X512_PPL, rel=0.01)  # deterministic: a drift means the model or loader changed



PROMPT = [1, 400, 2000, 31, 5, 9000, 77, 123, 4567, 12, 48000, 3]


@pytest.fixture(scope="module")
def tok_meta():
    from adaprune_edge.exporters import vocab

    return vocab.from_gguf(models.default_gguf_path())  # a real tokenizer (49152 tokens) for llama.cpp


def _assert_same_logits(got, want) -> None:
    with torch.no_grad():
        a, b = got(torch.tensor([PROMPT])).logits, want(torch.tensor([PROMPT])).logits
    torch.testing.assert_close(a, b, atol=3e-3, rtol=1e-3)  # F16 weights


def test_per_layer_deci_gguf_loads_back_with_its_shapes(tok_meta, tmp_path, monkeypatch):
    """The exporter's own `deci` output (per-layer widths; transformers cannot load it) is a valid --model:
    same shapes, kept layers and biases, logits equal to torch's at F16 precision, also from the cache."""
    from adaprune_edge.archs import ARCHS, slicing
    from adaprune_edge.archs.structure import Structure
    from adaprune_edge.archs.tiny import tiny_model
    from adaprune_edge.exporters import gguf

    monkeypatch.setenv("ADAPRUNE_CACHE", str(tmp_path / "cache"))
    model, llama = tiny_model("llama", vocab=tok_meta.n_vocab, layers=4), ARCHS.get("llama")
    layers = model.model.layers
    slicing.prune_attention(llama, layers[0], [0, 1], [[1], [0]])   # 4h/2kv → 2h/2kv
    slicing.prune_mlp(llama, layers[1], list(range(0, 128, 2)))     # 128 → 64
    slicing.prune_attention(llama, layers[3], [1], [[0, 1]])        # 4h/2kv → 2h/1kv
    slicing.add_output_bias(layers[1].mlp.down_proj, torch.randn(64) * 0.1)
    slicing.drop_layers(model, [0, 1, 3])
    slicing.sync_config(model)
    out = gguf.write_model(model, tmp_path / "d.gguf", tok_meta)
    assert out.arch == "deci"
    for _ in range(2):  # converted, then from the cached pruned folder
        lm = models.load(out.path)
        assert Structure.from_model(lm.model) == Structure.from_model(model)
        assert lm.model.adaprune_kept_layers == [0, 1, 3]
        _assert_same_logits(lm.model, model)
        assert lm.tokenizer("Hello world").input_ids == [19556, 905]
    assert models.model_header(out.path) == ("llama", 3)


@pytest.mark.parametrize("family", ["gemma3_text", "qwen3"])
def test_native_gguf_of_other_families_loads(family, tok_meta, tmp_path, monkeypatch):
    """gemma3 / qwen3 files load by their general.architecture, with the file's head_dim and query scale."""
    from adaprune_edge.archs.tiny import tiny_model
    from adaprune_edge.exporters import gguf

    monkeypatch.setenv("ADAPRUNE_CACHE", str(tmp_path / "cache"))
    model = tiny_model(family, vocab=tok_meta.n_vocab)
    out = gguf.write_model(model, tmp_path / "n.gguf", tok_meta)
    lm = models.load(out.path)
    assert lm.info.architecture == family and models.model_type(out.path) == family
    _assert_same_logits(lm.model, model)


def test_gguf_transformers_cannot_load_fails_in_one_line(tok_meta, tmp_path, monkeypatch):
    from adaprune_edge.archs.tiny import tiny_model
    from adaprune_edge.exporters import gguf

    monkeypatch.setenv("ADAPRUNE_CACHE", str(tmp_path / "cache"))
    out = gguf.write_model(tiny_model("smollm3", vocab=tok_meta.n_vocab), tmp_path / "s.gguf", tok_meta)
    with pytest.raises(ModelError, match=r"^cannot load GGUF s\.gguf \(ValueError: .*smollm3[^\n]*$"):
        models.load(out.path)


def test_foreign_gguf_architecture_lists_the_supported_ones(tmp_path):
    from gguf import GGUFWriter

    path = tmp_path / "phi.gguf"
    w = GGUFWriter(str(path), "phi3")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ModelError, match=r"^GGUF phi\.gguf has architecture 'phi3'( \(did you mean '\w+'\?\))?; "
                                         r"supported: llama, deci, qwen2, qwen3, gemma3, smollm3$"):
        models.load(str(path))
