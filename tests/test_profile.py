"""The `profile` allocation (knots over depth + head weight) and the StructureProbe it is searched with:
every knot setting gives a valid, aligned structure that hits the ratio, and the probe's structure is
exactly what slicing gives."""

import random

import pytest
import torch

from adaprune_edge.prune.engine import PruneConfig, prune
from adaprune_edge.prune.importance import ImportanceCache
from adaprune_edge.prune.probe import StructureProbe
from adaprune_edge.prune.profile import depth_weights, layer_shares
from adaprune_edge.search.space import N_KNOTS, build_space, SpaceBounds, to_prune_config
from adaprune_edge.archs.structure import Structure

ALIGN = 32


@pytest.fixture(scope="module")
def model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=96, intermediate_size=256, num_hidden_layers=6,
                      num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def windows():
    torch.manual_seed(1)
    return torch.randint(0, 256, (8, 32))


def _cfg(**kw):
    return PruneConfig(**{**dict(metric="wanda", allocation="profile", n_samples=8, seq_len=32, align=ALIGN,
                                 batch_size=4), **kw})


def test_depth_weights_and_shares_hit_the_target():
    assert depth_weights((0.2, 1.0), [0.0, 0.5, 1.0]) == pytest.approx([0.2, 0.6, 1.0])
    assert depth_weights((1.0, 0.5, 0.1), [0.25, 0.75]) == pytest.approx([0.75, 0.3])
    params = {0: 100, 1: 100, 2: 100}
    shares = layer_shares({0: 1.0, 1: 0.1, 2: 0.1}, params, 150.0)  # layer 0 would need > 0.95: capped
    assert shares[0] == pytest.approx(0.95)
    assert sum(s * params[i] for i, s in shares.items()) == pytest.approx(150.0)
    assert shares[1] == pytest.approx(shares[2]) == pytest.approx(0.275)


def test_random_profiles_give_valid_aligned_structures(model, windows):
    cache, rng = ImportanceCache(), random.Random(0)
    dense = Structure.from_model(model)
    checked = 0
    for _ in range(12):
        knots = tuple(rng.uniform(0.05, 1.0) for _ in range(rng.choice((2, 3, 4, 5))))
        cfg = _cfg(profile_knots=knots, head_weight=rng.uniform(0.0, 2.0), head_unit=rng.choice(("query", "group", "none")),
                   protect_first=rng.choice((0, 1)))
        probe = StructureProbe(model, windows, cfg, cache)
        for ratio in (0.1, 0.3, 0.5):
            st = probe.at(ratio)
            for s, d in zip(st.layers, dense.layers):
                assert s.n_ff % ALIGN == 0 and ALIGN <= s.n_ff <= d.n_ff
                assert s.n_head % s.n_head_kv == 0 and 1 <= s.n_head_kv <= d.n_head_kv
                assert s.n_head // s.n_head_kv <= 3
            achieved = 1 - st.decoder_params() / dense.decoder_params()
            assert abs(achieved - ratio) <= 0.04, (cfg, ratio, achieved)
            checked += 1
    assert checked == 36


@pytest.mark.parametrize("head_unit", ["query", "group"])
def test_probe_matches_slicing_and_knots_shape_the_depth_profile(model, windows, head_unit):
    cache = ImportanceCache()
    cfg = _cfg(ratio=0.4, profile_knots=(1.0, 0.05), head_weight=1.0, head_unit=head_unit)
    probed = StructureProbe(model, windows, cfg, cache).at(0.4)
    res = prune(model, windows, cfg, cache=cache)
    assert probed == res.structure
    assert res.cache_hit  # the probe filled the cache: prune() computed no statistics again
    dense = Structure.from_model(model)
    kept = [st.layer_params(s) / dense.layer_params(d) for s, d, st in
            zip(res.structure.layers, dense.layers, [res.structure] * 6)]
    assert kept[0] < 0.5 < kept[-1], kept  # knots (1.0 → 0.05): early layers pruned hard, the last lightly
    assert abs(res.decoder_ratio - 0.4) <= 0.04


def test_profile_knobs_are_conditional_search_dimensions():
    cs = build_space(SpaceBounds(r_min=0.2, r_max=0.5))
    names = set(cs.keys())
    assert "ratio" not in names and {f"knot_{k}" for k in range(N_KNOTS)} | {"head_weight"} <= names
    assert "profile" in cs["allocation"].choices
    for conf in cs.sample_configuration(40):
        v = dict(conf)
        assert ("knot_0" in v) == (v["allocation"] == "profile")
        cfg, _ = to_prune_config(v, ALIGN, 0, ratio=0.3)
        cfg.validate()
        assert cfg.ratio == 0.3 and len(cfg.profile_knots) == (N_KNOTS if v["allocation"] == "profile" else 0)
    assert PruneConfig.from_dict(_cfg(profile_knots=(0.5, 1.0)).to_dict()).profile_knots == (0.5, 1.0)
