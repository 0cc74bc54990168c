"""Importance metrics and aggregations on a tiny random Llama: shapes, definitions, registry errors."""

import pytest
import torch

from adaprune_edge.prune.statistics import collect
from adaprune_edge.errors import ConfigError
from adaprune_edge.prune.importance import AGGREGATIONS, METRICS, ImportanceCache, model_scores, reduce_component


@pytest.fixture
def tiny(tiny_llama):
    return tiny_llama(layers=2, hidden=96, heads=6, kv_heads=2, ffn=96)


@pytest.fixture
def windows():
    return torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(1))


def test_every_metric_scores_every_unit(tiny, windows):
    stats = collect(tiny, windows, need_grad=True, batch_size=2, need_gram=True)
    for metric in METRICS.names():
        for agg in AGGREGATIONS.names():
            sc = model_scores(tiny, stats, metric, agg)
            assert [tuple(s.heads.shape) + tuple(s.groups.shape) + tuple(s.ffn.shape) for s in sc] == [(6, 2, 96)] * 2
            assert all(torch.isfinite(s.ffn).all() and torch.isfinite(s.heads).all() for s in sc), (metric, agg)


def test_l1_matches_hand_computation(tiny):
    sc = model_scores(tiny, None, "l1", "sum")[0]
    mlp = tiny.model.layers[0].mlp
    expect = mlp.gate_proj.weight.abs().sum(1) + mlp.up_proj.weight.abs().sum(1) + mlp.down_proj.weight.abs().sum(0)
    torch.testing.assert_close(sc.ffn.float(), expect.detach())
    attn = tiny.model.layers[0].self_attn
    q = attn.q_proj.weight.abs().sum(1).view(6, 16).sum(1)
    o = attn.o_proj.weight.abs().sum(0).view(6, 16).sum(1)
    torch.testing.assert_close(sc.heads.float(), (q + o).detach())
    last = model_scores(tiny, None, "l1", "last")[0]
    torch.testing.assert_close(last.heads.float(), o.detach())


def test_taylor_matches_autograd(tiny, windows):
    stats = collect(tiny, windows, need_grad=True, batch_size=4)  # one batch: G is that batch's gradient
    out = tiny(input_ids=windows, labels=windows, use_cache=False)
    out.loss.backward()
    w = tiny.model.layers[1].mlp.down_proj.weight
    expect = reduce_component("down", (w * w.grad).abs().detach(), 16)
    torch.testing.assert_close(stats.layers[1].grad_units["taylor"]["down"], expect)
    assert all(p.grad is None or p.grad.abs().sum() > 0 for p in tiny.parameters())  # pass left no .grad


def test_collect_leaves_model_untouched(tiny, windows):
    flags = [p.requires_grad for p in tiny.parameters()]
    collect(tiny, windows, need_grad=True)
    assert [p.requires_grad for p in tiny.parameters()] == flags
    assert all(p.grad is None for p in tiny.parameters())


def test_prod_is_log_space_and_fluctuation_uses_output_columns(tiny, windows):
    stats = collect(tiny, windows, need_grad=False)
    s = model_scores(tiny, stats, "l2", "prod")[0]
    mlp = tiny.model.layers[0].mlp
    parts = [mlp.gate_proj.weight.pow(2).sum(1), mlp.up_proj.weight.pow(2).sum(1), mlp.down_proj.weight.pow(2).sum(0)]
    torch.testing.assert_close(s.ffn, sum(torch.log(p.double()) for p in parts).detach())
    f = model_scores(tiny, stats, "fluctuation", "sum")[0]
    torch.testing.assert_close(f.ffn, (stats.var(0, "down_in") * mlp.down_proj.weight.double().pow(2).sum(0)).detach())


def test_unknown_names_suggest():
    with pytest.raises(ConfigError, match="did you mean 'taylor'"):
        METRICS.get("taylr")
    with pytest.raises(ConfigError, match="known: last, max, mean, prod, sum"):
        AGGREGATIONS.get("median")


def test_cache_reuses_statistics(tiny, windows):
    cache = ImportanceCache()
    a = cache.stats(tiny, windows, "k", need_grad=True, batch_size=2)
    b = cache.stats(tiny, windows, "k", need_grad=False, batch_size=2)
    assert a is b and (cache.hits, cache.misses) == (1, 1)
    s1 = cache.scores(tiny, a, "k", "taylor", "sum", 0)
    assert cache.scores(tiny, a, "k", "taylor", "sum", 0) is s1
    cache.clear()  # the build empties it once no trial or prune follows
    assert cache.nbytes == 0 and cache.cached_scores("k", "taylor", "sum", 0) is None
    assert cache.stats(tiny, windows, "k", need_grad=False, batch_size=2) is not a and cache.misses == 2
