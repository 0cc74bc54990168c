from pathlib import Path

import pytest

from adaprune_edge import profiles
from adaprune_edge.errors import ProfileError

SHIPPED = {"raspberry-pi-5", "raspberry-pi-4", "jetson-orin-nano", "pixel-8", "galaxy-s23", "iphone-15-pro",
           "macbook-air-m2", "x86-laptop", "this-host"}


def test_every_shipped_profile_loads():
    assert SHIPPED <= set(profiles.builtin_names())
    for p in profiles.list_profiles():
        assert p.mem_bandwidth_gbs > 0 and p.threads > 0
        assert p.budget.states_latency() and p.budget.decode_tps == 10 and p.budget.ttft_s == 1.0  # README "Budgets"


def test_extends_inherits_and_overrides():
    pi4 = profiles.load_profile("raspberry-pi-4")
    pi5 = profiles.load_profile("raspberry-pi-5")
    assert pi4.threads == pi5.threads == 4  # inherited
    assert pi4.ram_gb == 4 and pi4.mem_bandwidth_gbs == 4.0  # overridden
    assert pi4.budget == pi5.budget and pi4.budget.prompt_tokens == 128  # the budget is inherited


def test_roundtrip_json():
    p = profiles.load_profile("raspberry-pi-5")
    assert profiles.DeviceProfile.from_dict(p.to_dict()) == p


def test_typo_names_file_key_and_line(tmp_path: Path):
    f = tmp_path / "mydev.yaml"
    f.write_text("extends: raspberry-pi-5\nram_gb: 8\nmem_bandwith_gbs: 12\n")
    with pytest.raises(ProfileError) as e:
        profiles.load_profile(str(f))
    msg = str(e.value)
    assert str(f) in msg and "line 3" in msg and "mem_bandwith_gbs" in msg and "mem_bandwidth_gbs" in msg


def test_wrong_type_and_nested_budget_typo(tmp_path: Path):
    f = tmp_path / "a.yaml"
    f.write_text("extends: raspberry-pi-5\nthreads: four\n")
    with pytest.raises(ProfileError, match="line 2.*'threads' must be int"):
        profiles.load_profile(str(f))
    g = tmp_path / "b.yaml"
    g.write_text("extends: raspberry-pi-5\nbudget:\n  decode_ms: 5\n")
    with pytest.raises(ProfileError, match="line 3.*decode_ms"):
        profiles.load_profile(str(g))


def test_user_profile_overrides_budget(tmp_path: Path):
    f = tmp_path / "tight.yaml"
    f.write_text("extends: this-host\nbudget:\n  decode_ms_per_token: 3.5\n")
    p = profiles.load_profile(str(f))
    assert p.name == "tight" and p.budget.decode_ms_per_token == 3.5 and p.threads == 2


def test_unknown_device_did_you_mean():
    with pytest.raises(ProfileError, match="did you mean 'raspberry-pi-5'.*known: .*this-host"):
        profiles.load_profile("raspbery-pi-5")


def test_malformed_yaml_and_missing_fields(tmp_path: Path):
    f = tmp_path / "bad.yaml"
    f.write_text("ram_gb: [1, 2\n")
    with pytest.raises(ProfileError, match="malformed YAML"):
        profiles.load_profile(str(f))
    g = tmp_path / "partial.yaml"
    g.write_text("ram_gb: 4\n")
    with pytest.raises(ProfileError, match="missing required field"):
        profiles.load_profile(str(g))


def test_type_rates_accept_a_memory_bound_decode_rate_and_refuse_a_zero_prompt_rate(tmp_path: Path):
    """`profile` writes decode 0 for a type whose decode time does not grow with its FLOPs (memory-bound, as
    decode_gflops: 0 means); such a profile must load. A zero prompt rate would divide by zero: refused."""
    ok = tmp_path / "ok.yaml"
    ok.write_text("extends: this-host\ntype_rates:\n  Q4_K_M: [0.0, 61.36]\n")
    assert profiles.load_profile(str(ok)).type_rates == {"Q4_K_M": [0.0, 61.36]}
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: this-host\ntype_rates:\n  Q4_K_M: [12.0, 0]\n")
    with pytest.raises(ProfileError, match="prompt GFLOP/s > 0"):
        profiles.load_profile(str(bad))
