import math

import pytest
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
    assert 15 < ppl < 30 and math.isfinite(ppl)
