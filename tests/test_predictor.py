"""Device owns latency: one Predictor per device x recipe decides measure vs predict, its measured / predicted
scale is measured once per recipe, and the search works with the Device the caller built, settings included."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from adaprune_edge.device import Device
from adaprune_edge.latency import budget
from adaprune_edge.pipeline import quant_options, tradeoff
from adaprune_edge.search.ratio import predicted_fit
from adaprune_edge.search.space import SpaceBounds
from adaprune_edge.search.spec import SearchSpec
from adaprune_edge.archs.structure import Structure
from adaprune_edge.quant import QuantRecipe

R = QuantRecipe.parse

DENSE = Structure.dense(576, 64, 49152, 30, 9, 3, 1536)  # SmolLM2-135M's shape
SLOWER, PROMPT = 1.3, 0.8  # the scripted device: decode 1.3x and prompt speed 0.8x its roofline's


@dataclasses.dataclass(frozen=True)
class CountingDevice(Device):
    """this-host whose backend is scripted (SLOWER/PROMPT x the roofline) and counts its measurements."""

    calls: list = dataclasses.field(default_factory=list, compare=False)

    @property
    def measures(self) -> bool:
        return True

    def measure(self, structure, use_cache=True, *, quant):
        self.calls.append((quant, structure.key()))
        pred = self.predict(structure, quant)
        return dataclasses.replace(pred, backend="local", measured=True, tool="scripted",
                                   decode_ms_per_token=pred.decode_ms_per_token * SLOWER,
                                   prefill_tps=pred.prefill_tps * PROMPT)


def _counting() -> CountingDevice:
    d = Device.resolve("this-host")
    return CountingDevice(d.profile, d.settings)


def test_the_scale_is_measured_once_per_device_and_recipe():
    dev, recipes = _counting(), [R("Q8_0"), R("Q4_0")]
    budget_ms = 0.9 * dev.predict(DENSE, R("Q4_0")).decode_ms_per_token * SLOWER  # the dense model misses it
    opts = quant_options.options(DENSE, dev, recipes, budget_ms, 0.6)
    assert len(dev.calls) == len(recipes) and set(dev.calls) == {(q, DENSE.key()) for q in recipes}  # one per recipe
    for o in opts:
        # everything downstream of the candidates works on the recipe's calibrated predictor, measuring nothing
        p = quant_options.predictor(o, DENSE, dev)
        assert p.calibration.decode == pytest.approx(SLOWER, rel=1e-4)
        assert p.calibration.prefill == pytest.approx(PROMPT, rel=1e-4)
        st = budget.uniform(DENSE, 0.3, o.recipe)
        roof = dev.predict(st, o.recipe)
        assert p.predict(st).decode_ms_per_token == pytest.approx(roof.decode_ms_per_token * SLOWER, rel=1e-4)
        sol = budget.solve(DENSE, dev.profile, p, decode_ms=budget_ms)  # r_min: no confirmation asked
        assert sol.measured is None and predicted_fit(p, dev.profile, budget_ms)(sol.structure)[0]
        assert tradeoff.device_latency(st, o.recipe, dev, measure=False) == (roof.decode_ms_per_token, False)
    assert len(dev.calls) == len(recipes)
    assert dev.latency_of(DENSE, R("Q4_0")).tool == "scripted" and len(dev.calls) == len(recipes) + 1


def test_device_predictions_honour_its_settings():
    plain = Device.resolve("this-host", backend="predict")
    custom = Device.resolve("this-host", backend="predict", n_prompt=512, n_gen=16, threads=1)
    a, b = plain.predict(DENSE, R("Q4_K_M")), custom.predict(DENSE, R("Q4_K_M"))
    assert (b.n_prompt, b.n_gen, b.threads) == (512, 16, 1)
    assert b.prefill_tps < a.prefill_tps and b.decode_ms_per_token != a.decode_ms_per_token
    assert custom.latency_of(DENSE, R("Q4_K_M")) == b and not custom.predictor(R("Q4_K_M")).measures


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from conftest import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny"), ffn=512)


def test_a_device_with_its_settings_reaches_the_search_objective(tiny_dir, shared_data):
    from adaprune_edge.search.evaluators import _worker_context
    from adaprune_edge.search.warmstart import warm_start_configs
    from adaprune_edge.search.space import build_space, plain

    dev = Device.resolve("this-host", backend="predict", n_prompt=512, n_gen=16, threads=1)
    bounds = SpaceBounds(r_min=0.1, r_max=0.7, min_samples=2, max_samples=8, min_seq_len=16, max_seq_len=64,
                         max_protect_first=1, max_protect_last=1)
    spec = SearchSpec(model=str(tiny_dir), device=dev, quant=R("Q8_0"), bounds=bounds,
                      calib=(str(shared_data / "wikitext-2/valid.txt"),), val_windows=2, val_seq_len=64,
                      latency_scale=1.2, prefill_scale=0.9, n_trials=2)
    sent = pickle.loads(pickle.dumps(spec.to_dict()))  # what a dask worker receives
    assert sent["settings"]["n_prompt"] == 512 and SearchSpec.from_dict(sent) == spec
    default = dataclasses.replace(spec, device=Device.of(dev.profile))
    assert "settings" not in default.to_dict()  # a profile's own settings: search.json as before
    ctx = _worker_context(sent)
    assert ctx.device.settings == dev.settings and ctx.predictor(R("Q8_0")).settings == dev.settings
    assert pickle.loads(pickle.dumps(ctx.predictor(R("Q8_0")))) == ctx.predictor(R("Q8_0"))
    space = build_space(spec.bounds, 0)
    rec = ctx.evaluate(0, plain(warm_start_configs(space, spec.bounds, ("taylor-uniform",))[0]))
    want = dev.predictor(R("Q8_0"), spec.calibration_of(R("Q8_0"))).predict(rec.structure)
    assert rec.decode_ms == want.decode_ms_per_token and rec.prefill_tps == want.prefill_tps
    assert rec.prefill_tps != Device.of(dev.profile).predictor(R("Q8_0"), spec.calibration_of(R("Q8_0"))).predict(
        rec.structure).prefill_tps  # the profile's default prompt length would give another figure
