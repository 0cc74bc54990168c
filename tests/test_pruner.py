"""The pruning engine on tiny random Llamas: every metric × aggregation × allocation hits the target,
0% is exact, shapes are valid for llama.cpp, save → load gives identical logits, determinism, errors."""

import itertools

import copy

import pytest

import torch

from adaprune_edge.archs import slicing as pruning
from adaprune_edge.prune.allocation import ALLOCATIONS
from adaprune_edge.errors import ConfigError, DataError, ModelError
from adaprune_edge.prune.importance import AGGREGATIONS, METRICS, ImportanceCache
from adaprune_edge.prune.engine import PruneConfig, PruneResult, prune
from adaprune_edge.archs.structure import Structure


def _logits(m, ids):
    with torch.no_grad():
        return m(input_ids=ids, use_cache=False).logits


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matrices: one thread avoids OpenMP spin-waits on a shared 2-core host (restored after)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def windows():
    return torch.randint(0, 256, (8, 32), generator=torch.Generator().manual_seed(0))


def _cfg(**kw):
    base = dict(n_samples=8, seq_len=32, align=1, batch_size=4)
    return PruneConfig(**{**base, **kw})


def test_matrix_hits_requested_reduction(model, windows):
    cache = ImportanceCache()
    combos = list(itertools.product(METRICS.names(), AGGREGATIONS.names(), ALLOCATIONS.names()))
    assert len(combos) == 8 * 5 * 4
    ids = windows[:2, :10]
    for metric, agg, allocation in combos:
        res = prune(model, windows, _cfg(ratio=0.3, metric=metric, aggregation=agg, allocation=allocation), cache=cache)
        assert abs(res.decoder_ratio - 0.3) <= 0.02, (metric, agg, allocation, res.decoder_ratio)
        assert res.decoder_params_after == res.structure.decoder_params()
        assert sum(p.numel() for p in res.model.parameters()) == res.params_after
        for s in res.structure.layers:
            assert s.n_head % s.n_head_kv == 0 and s.n_ff >= 1
        assert _logits(res.model, ids).shape == (2, 10, 256)
    assert cache.misses == 3  # activations (fluctuation), + second moments (obs), + gradients: 160 prunes
    assert sum(p.numel() for p in model.parameters()) == res.params_before  # the input was not touched


@pytest.mark.parametrize("ratio", [0.1, 0.5])
def test_ratios_with_alignment_depth_and_protection(model, windows, ratio):
    res = prune(model, windows, _cfg(ratio=ratio, metric="wanda", depth_share=0.4, protect_first=1,
                                     head_unit="group", align=8))
    assert abs(res.decoder_ratio - ratio) <= 0.02 + 0.06  # whole layers and 8-wide steps: coarser here
    st = res.structure
    assert st.kept_layers[0] == 0 and st.layers[0] == Structure.from_model(model).layers[0]
    assert all(s.n_ff % 8 == 0 for s in st.layers)


def test_zero_ratio_is_exact_copy(model, windows):
    res = prune(model, windows, _cfg(ratio=0.0, metric="taylor"))
    assert res.model is not model and res.decoder_ratio == 0.0
    torch.testing.assert_close(_logits(res.model, windows), _logits(model, windows), rtol=0, atol=0)


def test_query_heads_pruned_inside_groups(tiny_llama):
    m = tiny_llama(layers=2, hidden=96, heads=6, kv_heads=2, ffn=64)
    res = prune(m, None, _cfg(ratio=0.3, metric="l1", allocation="uniform", head_unit="query", min_keep=0.3))
    assert {(s.n_head, s.n_head_kv) for s in res.structure.layers} == {(4, 2)}
    grp = prune(m, None, _cfg(ratio=0.3, metric="l1", allocation="uniform", head_unit="group"))
    assert {s.n_head_kv for s in grp.structure.layers} == {1} and {s.n_head for s in grp.structure.layers} == {3}


def test_deterministic_and_inplace(model, windows):
    cfg = _cfg(ratio=0.25, metric="random", allocation="global", seed=7)
    a, b = prune(model, windows, cfg), prune(model, windows, cfg)
    assert a.structure == b.structure
    torch.testing.assert_close(_logits(a.model, windows), _logits(b.model, windows))
    other = prune(model, windows, _cfg(ratio=0.25, metric="random", seed=8))
    assert not torch.equal(_logits(a.model, windows), _logits(other.model, windows))
    import copy
    mine = copy.deepcopy(model)
    res = prune(mine, windows, cfg, inplace=True)
    assert res.model is mine and Structure.from_model(mine) == a.structure


def test_bias_compensation_keeps_mean_output(model, windows):
    plain = prune(model, windows, _cfg(ratio=0.4, metric="fluctuation", allocation="uniform"))
    comp = prune(model, windows, _cfg(ratio=0.4, metric="fluctuation", allocation="uniform", bias_compensation=True))
    assert comp.structure == plain.structure and comp.model.model.layers[0].mlp.down_proj.bias is not None
    dense = _logits(model, windows)
    err = [float((_logits(r.model, windows) - dense).pow(2).mean()) for r in (plain, comp)]
    assert err[1] < err[0]


def test_reconstruction_beats_bias_compensation_on_the_layer_output():
    """Least squares with intercept: on the calibration inputs the refit output error is at most the bias
    compensation's (which is the same fit with W' fixed to W_K), and nothing removed = unchanged."""
    from torch import nn

    from adaprune_edge.prune.compensation import compensate, reconstruct

    torch.manual_seed(0)
    x = torch.randn(4000, 24, dtype=torch.float64) @ torch.randn(24, 24, dtype=torch.float64) + 0.5
    lin = nn.Linear(24, 8, bias=False).double()
    dense = lin(x).detach()
    keep = list(range(0, 24, 2))
    mean, second = x.mean(0), x.T @ x / x.shape[0]
    fits = {}
    for name in ("bias", "lsq"):
        work = copy.deepcopy(lin)
        if name == "bias":
            compensate(work, keep, mean)
        else:
            reconstruct(work, keep, mean, second, damp=1e-6)
        out = x[:, keep] @ work.weight[:, keep].T + work.bias
        fits[name] = float((out - dense).pow(2).mean())
    assert fits["lsq"] < 0.5 * fits["bias"]
    same = copy.deepcopy(lin)
    reconstruct(same, list(range(24)), mean, second)
    torch.testing.assert_close(same.weight, lin.weight)
    assert same.bias is None


def test_reconstruction_in_prune_lowers_output_error(model, windows):
    bias = prune(model, windows, _cfg(ratio=0.4, metric="fluctuation", allocation="uniform", bias_compensation=True))
    lsq = prune(model, windows, _cfg(ratio=0.4, metric="fluctuation", allocation="uniform", reconstruction=True,
                                     recon_damp=0.01))
    assert lsq.structure == bias.structure
    dense = _logits(model, windows)
    err = [float((_logits(r.model, windows) - dense).pow(2).mean()) for r in (bias, lsq)]
    assert err[1] < err[0]
    with pytest.raises(ConfigError, match="recon_damp"):
        _cfg(recon_damp=0.0).validate()


def test_save_load_identical_logits(model, windows, tmp_path):
    res = prune(model, windows, _cfg(ratio=0.3, metric="taylor", allocation="owl", depth_share=0.3,
                                     bias_compensation=True))
    out = pruning.save_pruned(res.model, None, tmp_path / "p", recipe=res.to_dict())
    again, _ = pruning.load_pruned(out)
    torch.testing.assert_close(_logits(again, windows), _logits(res.model, windows))
    back = PruneResult.from_dict(res.to_dict())
    assert back == res and back.model is None


def test_config_roundtrip_and_errors(model, windows, tiny_llama):
    cfg = _cfg(ratio=0.2, metric="wanda", depth_share=0.5)
    assert PruneConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match=r"ratio must be in \[0, 0.9\]"):
        prune(model, windows, _cfg(ratio=0.95))
    with pytest.raises(ConfigError, match="did you mean 'global'"):
        prune(model, windows, _cfg(allocation="globl"))
    with pytest.raises(ConfigError, match="unknown PruneConfig fields"):
        PruneConfig.from_dict({"ratio": 0.2, "sparsity": 0.1})
    with pytest.raises(DataError, match="needs calibration data"):
        prune(model, None, _cfg(metric="taylor"))
    model.config.model_type = "gpt2"
    try:
        with pytest.raises(ModelError, match="supported: llama, mistral"):
            prune(model, windows, _cfg())
    finally:
        model.config.model_type = "llama"
