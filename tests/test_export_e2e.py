"""End to end on the real default model: a 20% non-uniform prune exports as deci, its F16 GGUF matches
torch perplexity within 1% and its Q4_K_M loads and generates; the dense model round-trips within 1%."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from tests.conftest import DENSE_8X512_PPL
from adaprune_edge.runtime import llamacpp as llama_runner
from adaprune_edge.archs import ARCHS, slicing as pruning
from adaprune_edge.evaluate import validation
from adaprune_edge.exporters import gguf, quantize, vocab
from adaprune_edge.evaluate.perplexity import perplexity, read_text, token_windows
from adaprune_edge.archs.structure import Structure
from adaprune_edge.quant import QuantRecipe

R = QuantRecipe.parse

LLAMA = ARCHS.get("llama")  # the tiny test models are Llamas

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def windows(default_model, shared_data):
    return token_windows(default_model.tokenizer, read_text(shared_data / "wikitext-2" / "valid.txt"), 512, 8)


def _prune_20(model) -> None:
    """First-k prune (no importance): FFN 1536→1280/1024 by depth, query heads 9→6 in every third layer."""
    for i, layer in enumerate(model.model.layers):
        if i % 3 == 1:
            pruning.prune_attention(LLAMA, layer, [0, 1, 2], [[0, 1]] * 3)
        pruning.prune_mlp(LLAMA, layer, list(range(1280 if i < 15 else 1024)))
    pruning.sync_config(model)


def _gguf_ppl(path, windows) -> float:
    llm = llama_runner.open_gguf(path, n_ctx=windows.shape[1], threads=2)
    try:
        return validation.score_windows(validation.gguf_logits_fn(llm), windows.numpy()).ppl
    finally:
        llm.close()


def test_pruned_20pct_deci_f16_matches_torch_and_q4_k_m_generates(default_model, windows, tmp_path):
    model = copy.deepcopy(default_model.model)
    _prune_20(model)
    st = Structure.from_model(model)
    assert 0.17 < 1 - st.decoder_params() / Structure.from_model(default_model.model).decoder_params() < 0.23
    meta = vocab.for_model(default_model, st.vocab)
    f16 = gguf.write_model(model, tmp_path / "p20-F16.gguf", meta)
    assert f16.arch == "deci"
    torch_ppl, f16_ppl = perplexity(model, windows), _gguf_ppl(f16.path, windows)
    assert abs(f16_ppl / torch_ppl - 1) < 0.01, (torch_ppl, f16_ppl)
    q4 = gguf.write_model(model, tmp_path / "p20-Q4_K_M.gguf", meta, quant=R("Q4_K_M"))
    assert quantize.report(q4.path, st, R("Q4_K_M")).mismatches == ()
    llm = llama_runner.open_gguf(q4.path, n_ctx=256, threads=2)
    try:
        text = validation.generate(llm, "The capital of France is", max_tokens=12)
    finally:
        llm.close()
    assert len(text.split()) >= 3, f"Q4_K_M model generated {text!r}"
    # the F16 file predicts the same next token as the torch model after the same prompt ids
    ids = default_model.tokenizer("The capital of France is")["input_ids"]
    with torch.no_grad():
        want = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
    llm = llama_runner.open_gguf(f16.path, n_ctx=256, threads=2)
    try:
        llm.eval(ids)
        got = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    finally:
        llm.close()
    assert got == want
    assert q4.file_bytes < 0.6 * f16.file_bytes


def test_dense_round_trip_perplexity_within_1pct(default_model, windows, tmp_path):
    meta = vocab.for_model(default_model, default_model.info.vocab)  # copied from the source GGUF
    out = gguf.write_model(default_model.model, tmp_path / "dense-F16.gguf", meta)
    assert out.arch == "llama"
    torch_ppl, gguf_ppl = perplexity(default_model.model, windows), _gguf_ppl(out.path, windows)
    assert torch_ppl == pytest.approx(DENSE_8X512_PPL, rel=0.01)  # the same windows as test_models'
    assert abs(gguf_ppl / torch_ppl - 1) < 0.01, (torch_ppl, gguf_ppl)
