"""The K/V cache type as the lever for memory at long context: its bytes in the RAM check, the plan's
choice (weight bits before cache bits), llama.cpp running it (same logits within quantization noise, less
resident memory once the context is filled), and one-line errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from adaprune_edge import models
from adaprune_edge.pipeline.plan_stages import kv_cache_for
from adaprune_edge.errors import ConfigError
from adaprune_edge.latency import budget
from adaprune_edge.runtime import kvcache
from adaprune_edge.overrides import BudgetOverrides
from adaprune_edge.profiles import load_profile
from adaprune_edge.archs.structure import Structure
from adaprune_edge.quant import QuantRecipe

R = QuantRecipe.parse


@pytest.fixture(scope="module")
def smollm():
    """The default model's shape (30 layers x 3 KV heads x 64): ~23 KB of F16 K/V per position."""
    from adaprune_edge.archs.structure import LayerShape

    return Structure(hidden=576, head_dim=64, vocab=49152, n_layer_orig=30, kept_layers=tuple(range(30)),
                     layers=tuple(LayerShape(9, 3, 1536) for _ in range(30)))


def test_cache_bytes_follow_the_ggml_block_sizes(smollm):
    kv16 = budget.kv_bytes(smollm, 8192)
    assert kv16 == smollm.kv_cache_bytes(8192) == 30 * 2 * 3 * 64 * 2 * 8192
    for name, ratio in (("Q8_0", 34 / 64), ("Q4_0", 18 / 64)):
        assert budget.kv_bytes(smollm, 8192, name) == pytest.approx(kv16 * ratio, abs=1)
        assert budget.scratch_bytes(smollm, 8192, name) == 0  # flash attention holds no K·Q scores
    # without flash attention (F16 cache) a 512-token micro-batch's K·Q scores: 8192 x 512 x 9 heads x F32
    scores = int(budget.SCRATCH_FACTOR * 8192 * 512 * 9 * 4)
    assert budget.scratch_bytes(smollm, 8192) == scores
    assert budget.ram_bytes(smollm, R("Q8_0"), 8192) == smollm.gguf_bytes(R("Q8_0")) + kv16 + scores + budget.RUNTIME_BYTES


def test_the_plan_quantizes_the_cache_before_the_weights(smollm):
    """8k context under a memory limit: F16 K/V leaves room only for the smallest weights; a Q8_0 cache fits
    Q8_0 weights, so that is chosen (Q4_0 fits them too but costs more: the least aggressive among equals)."""
    names = [R("Q8_0"), R("Q4_K_M"), R("IQ4_XS:out=IQ4_NL")]
    base = BudgetOverrides(context_length=8192).apply(load_profile("this-host"))
    f16 = lambda n: budget.ram_bytes(smollm, n, 8192)  # noqa: E731
    q8 = budget.ram_bytes(smollm, R("Q8_0"), 8192, "Q8_0")
    limit = f16(R("IQ4_XS:out=IQ4_NL")) + 2**20  # with F16 K/V only the smallest weights fit
    limit_mib = limit / 2**20
    assert f16(R("Q4_K_M")) > limit and q8 < limit  # ... and with a Q8_0 cache, Q8_0 weights do
    prof = dataclasses.replace(base, budget=dataclasses.replace(base.budget, ram_mb=limit_mib))
    assert kv_cache_for(smollm, names, prof) == "Q8_0"
    roomy = dataclasses.replace(base, budget=dataclasses.replace(base.budget, ram_mb=10_000))
    assert kv_cache_for(smollm, names, roomy) == "F16"
    nothing = dataclasses.replace(base, budget=dataclasses.replace(base.budget, ram_mb=50))
    assert kv_cache_for(smollm, names, nothing) == "F16"  # nothing fits: the plan names the best reachable


def test_bad_cache_type_is_one_line():
    with pytest.raises(ConfigError, match="unknown K/V cache type 'q5'; known: F16, Q8_0, Q4_0"):
        BudgetOverrides(kv_cache="q5").check()
    assert kvcache.how_to_apply("Q8_0")["llama.cpp"].endswith("-fa on -ctk q8_0 -ctv q8_0")
    assert "OLLAMA_KV_CACHE_TYPE=q4_0" in kvcache.how_to_apply("Q4_0")["ollama"]


def test_llama_cpp_runs_a_quantized_cache(tiny_llama, tmp_path):
    """Same logits within quantization noise with a Q8_0 cache; less memory once a long context is filled."""
    from adaprune_edge.runtime import llamacpp as runner
    from adaprune_edge.evaluate.runtime_ram import measure_runtime_ram
    from adaprune_edge.exporters import gguf, vocab

    model = tiny_llama(layers=2, hidden=256, heads=4, kv_heads=4, ffn=512, vocab=49152)
    path = tmp_path / "tiny.gguf"
    gguf.write_model(model, path, vocab.from_gguf(models.default_gguf_path()))
    tokens = list(np.random.default_rng(0).integers(10, 49000, 64))
    out = {}
    for kv in ("F16", "Q8_0"):
        llm = runner.open_gguf(path, n_ctx=128, threads=1, kv_cache=kv)
        out[kv] = runner.logits(llm, tokens)
        llm.close()
    diff = np.abs(out["F16"] - out["Q8_0"]).max()
    assert 0 < diff < 0.05 * np.abs(out["F16"]).max()  # quantized, not ignored, and close
    rss = {kv: measure_runtime_ram(path, n_ctx=4096, threads=1, kv_cache=kv, fill=4096) for kv in ("F16", "Q8_0")}
    saved = rss["F16"].rss_bytes - rss["Q8_0"].rss_bytes
    st = Structure.from_model(model)
    # the cache's bytes and, without flash attention, the K·Q scratch (budget.scratch_bytes)
    expect = budget.ram_bytes(st, R("F16"), 4096) - budget.ram_bytes(st, R("F16"), 4096, "Q8_0")
    assert saved == pytest.approx(expect, rel=0.25)
