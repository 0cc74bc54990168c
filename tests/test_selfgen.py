"""builtin:self: seeded, cached, filtered self-generated calibration text (tiny lengths, fast)."""

from __future__ import annotations

import numpy as np
import pytest

from adaprune_edge.data import selfgen
from adaprune_edge.data.samplers import Sampling, sample_token
from tests.conftest import save_tiny_model

# a random tiny model writes gibberish: keep every sample so the test is about seeding and caching
LOOSE = dict(min_new_tokens=1, min_distinct=0.0, min_letters=0.0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from adaprune_edge import models

    return models.load(str(save_tiny_model(tmp_path_factory.mktemp("tiny"), layers=2)))


def test_sample_token_top_k_and_top_p():
    logits = np.array([0.0, 5.0, 1.0, 4.9], dtype=np.float32)
    rng = np.random.default_rng(0)
    assert {sample_token(logits, Sampling(top_k=1), rng) for _ in range(20)} == {1}
    # top_p 0.5: token 1 alone holds ~52% of the mass, so nothing else is ever drawn
    assert {sample_token(logits, Sampling(top_k=4, top_p=0.5, temperature=1.0), rng) for _ in range(50)} == {1}
    assert {sample_token(logits, Sampling(top_k=4, top_p=0.99, temperature=1.0), rng) for _ in range(200)} >= {1, 3}


def test_distinct_ngram_share_flags_loops():
    assert selfgen.distinct_ngram_share(list(range(40))) == 1.0
    assert selfgen.distinct_ngram_share([5, 6, 7, 8] * 10) == pytest.approx(4 / 37)


def test_self_text_is_seeded_and_cached(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPRUNE_CACHE", str(tmp_path / "cache"))
    cfg = selfgen.SelfGenConfig(n_tokens=80, sampling=Sampling(max_new_tokens=12), seed=3, **LOOSE)
    first = selfgen.self_text(tiny, cfg)
    assert not first.cached and first.backend == "torch" and first.tokens >= 80 and len(first.records) >= 3
    assert len(list((tmp_path / "cache" / "selfgen").glob("*.json"))) == 1

    def boom(*a, **k):
        raise AssertionError("the second call must not generate")

    monkeypatch.setattr(selfgen, "generate", boom)
    second = selfgen.self_text(tiny, cfg)
    assert second.cached and second.records == first.records
    monkeypatch.undo()
    monkeypatch.setenv("ADAPRUNE_CACHE", str(tmp_path / "cache2"))
    again = selfgen.self_text(tiny, cfg)  # a fresh cache: generated again, same text for the same seed
    assert not again.cached and again.records == first.records
    other = selfgen.self_text(tiny, selfgen.SelfGenConfig(n_tokens=80, sampling=Sampling(max_new_tokens=12), seed=4, **LOOSE))
    assert other.records != first.records


def test_no_chat_template_falls_back_to_plain_and_says_so(tiny, monkeypatch):
    monkeypatch.setattr(tiny.tokenizer, "chat_template", None)
    notes = []
    out = selfgen.generate(tiny, selfgen.SelfGenConfig(n_tokens=30, sampling=Sampling(max_new_tokens=8), **LOOSE),
                           progress=lambda d, t, note: notes.append(note))
    assert not out.chat and any("no chat template" in n for n in notes)
    assert not any("<|im_start|>" in r for r in out.records)
    assert out.records[0].startswith(selfgen.PLAIN_PROMPTS[0])


def test_filters_reject_loops_and_duplicates(tiny):
    tok, cfg, seen = tiny.tokenizer, selfgen.SelfGenConfig(min_new_tokens=8), set()
    prose = tok("The quick brown fox jumps over the lazy dog near the river bank today.", add_special_tokens=False)["input_ids"]
    assert selfgen._reject(prose, cfg, tok, seen) is None
    assert selfgen._reject(prose, cfg, tok, seen) == "duplicate"
    assert selfgen._reject(prose[:4], cfg, tok, seen) == "short"
    assert selfgen._reject(tok("la la la la " * 20, add_special_tokens=False)["input_ids"], cfg, tok, seen) == "repetitive"
    assert selfgen._reject(tok(" ".join(str(i) for i in range(60)), add_special_tokens=False)["input_ids"], cfg, tok, seen) == "not prose"


def test_llama_cpp_backend_is_deterministic(default_model):
    """The default model comes from a GGUF: sampled by llama.cpp (batched), same text for the same seed."""
    cfg = selfgen.SelfGenConfig(n_tokens=48, sampling=Sampling(max_new_tokens=16), n_parallel=4, **LOOSE)
    a, b = selfgen.generate(default_model, cfg), selfgen.generate(default_model, cfg)
    assert a.backend == "llama.cpp" and a.chat and a.records == b.records and a.tokens >= 48
    assert a.records[0].startswith("<|im_start|>")  # chat-templated sample first
