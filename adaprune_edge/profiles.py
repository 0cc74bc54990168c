"""Device profiles: YAML files with `extends:` inheritance, validated field by field with line numbers."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from adaprune_edge.errors import ProfileError
from adaprune_edge.runtime import kvcache
from adaprune_edge.quant import FTYPES, QuantRecipe
from adaprune_edge.latency.backends import backend_names, get_backend
from adaprune_edge.registry import unknown_name_message



@dataclass(frozen=True)
class Budget:
    """What the user needs, in the units people state it (every field optional, at least one set):
    decode_tps: at least this many generated tokens/s (or decode_ms_per_token, its inverse in ms);
    ttft_s: the first token within this many seconds after a prompt of prompt_tokens tokens;
    prefill_tps: at least this many prompt tokens/s; ram_mb: at most this much memory for the llama.cpp
    process at the profile's context_length (beside usable_ram_share of the device's RAM)."""

    decode_ms_per_token: float | None = None
    prefill_tps: float | None = None
    decode_tps: float | None = None
    ttft_s: float | None = None
    prompt_tokens: int | None = None
    ram_mb: float | None = None

    @property
    def decode_limit_ms(self) -> float | None:
        """The tighter of decode_ms_per_token and 1000 / decode_tps (None when neither is set)."""
        limits = [x for x in (self.decode_ms_per_token, 1000.0 / self.decode_tps if self.decode_tps else None) if x]
        return min(limits) if limits else None

    def describe(self, decode_ms: float | None = None) -> str:
        """The limits in the user's units, e.g. '>= 10 tok/s decode; first token <= 1 s after 128 tokens'."""
        out, decode = [], decode_ms if decode_ms is not None else self.decode_limit_ms
        if decode:
            out.append(f">= {1000 / decode:.3g} tok/s decode ({decode:.3g} ms/token)")
        if self.ttft_s:
            out.append(f"first token <= {self.ttft_s:g} s after {self.prompt_tokens} tokens")
        if self.prefill_tps:
            out.append(f">= {self.prefill_tps:g} tok/s prompt")
        if self.ram_mb:
            out.append(f"<= {self.ram_mb:g} MiB")
        return "; ".join(out)

    def states_latency(self) -> bool:
        return any(x is not None for x in (self.decode_ms_per_token, self.decode_tps, self.prefill_tps, self.ttft_s))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Budget":
        return cls(**d)


@dataclass(frozen=True)
class DeviceProfile:
    """What latency and memory depend on for one device (units in the field names)."""

    name: str
    description: str = ""
    ram_gb: float = 8.0
    usable_ram_share: float = 0.6
    mem_bandwidth_gbs: float = 10.0  # effective decode bandwidth, GB/s
    compute_gflops: float = 50.0  # effective prefill compute, GFLOP/s
    threads: int = 4
    overhead_ms_per_layer: float = 0.02  # fixed per-layer cost per decoded token, ms
    overhead_ms_per_token: float = 0.0  # fixed cost per decoded token (graph, logits), ms
    decode_gflops: float = 0.0  # effective dequantize+dot rate while decoding, GFLOP/s; 0 = memory-bound only
    type_rates: dict[str, list[float]] | None = None  # file type -> [decode GFLOP/s, prompt GFLOP/s] (`profile`)
    quant: QuantRecipe = QuantRecipe("Q4_K_M")
    context_length: int = 2048
    kv_cache_type: str = "F16"  # llama.cpp's K/V cache type the RAM check assumes (F16, Q8_0, Q4_0)
    budget: Budget = field(default_factory=Budget)
    backend: str = "predict"
    ssh_host: str | None = None
    llama_bench: str = "llama-bench"
    notes: str = ""

    @property
    def usable_ram_bytes(self) -> int:
        """The memory the model may use: usable_ram_share of the RAM, or the budget's ram_mb if smaller."""
        share = int(self.ram_gb * self.usable_ram_share * 1024**3)
        return min(share, int(self.budget.ram_mb * 2**20)) if self.budget.ram_mb else share

    @property
    def n_prompt(self) -> int | None:
        """Prompt length latency is measured at: the budget's prompt_tokens where it states a first-token time."""
        return self.budget.prompt_tokens

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["budget"], d["quant"] = self.budget.to_dict(), self.quant.name
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DeviceProfile":
        d = dict(d)
        d["budget"] = Budget.from_dict(d.get("budget") or {})
        if "quant" in d:
            d["quant"] = QuantRecipe.parse(d["quant"])
        return cls(**d)


# field → (accepted python types, required-in-resolved-profile)
_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "extends": ((str,), False),
    "description": ((str,), False),
    "ram_gb": ((int, float), True),
    "usable_ram_share": ((int, float), False),
    "mem_bandwidth_gbs": ((int, float), True),
    "compute_gflops": ((int, float), True),
    "threads": ((int,), True),
    "overhead_ms_per_layer": ((int, float), False),
    "overhead_ms_per_token": ((int, float), False),
    "decode_gflops": ((int, float), False),
    "type_rates": ((dict,), False),
    "quant": ((str,), False),
    "context_length": ((int,), False),
    "kv_cache_type": ((str,), False),
    "budget": ((dict,), True),
    "backend": ((str,), False),
    "ssh_host": ((str,), False),
    "llama_bench": ((str,), False),
    "notes": ((str,), False),
}
# fields whose empty value means "not set" (ssh_host is only needed by the ssh backend)
_NULLABLE = ("ssh_host", "description", "notes")
_BUDGET_FIELDS = {"decode_ms_per_token": (int, float), "prefill_tps": (int, float), "decode_tps": (int, float),
                  "ttft_s": (int, float), "prompt_tokens": (int,), "ram_mb": (int, float)}


def builtin_names() -> list[str]:
    """Names of the profiles shipped as package data."""
    root = resources.files("adaprune_edge.device_profiles")
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def _builtin_path(name: str) -> Path:
    return Path(str(resources.files("adaprune_edge.device_profiles").joinpath(f"{name}.yaml")))


def _locate(spec: str) -> Path:
    if spec.endswith((".yaml", ".yml")) or "/" in spec:
        path = Path(spec)
        if not path.is_file():
            raise ProfileError(f"device profile file {spec} not found")
        return path
    if spec in builtin_names():
        return _builtin_path(spec)
    raise ProfileError(unknown_name_message("device", spec, builtin_names()) + "; or pass a path to a .yaml profile")


def _read_raw(path: Path) -> dict[str, Any]:
    """Parse YAML and validate keys/types, naming file, field and line on error."""
    text = _read_text(path)
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ProfileError(f"{path}:{where} malformed YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict) or not isinstance(node, yaml.MappingNode):
        raise ProfileError(f"{path}: a device profile must be a YAML mapping of fields")
    lines = {k.value: k.start_mark.line + 1 for k, _ in node.value}
    for key, value in data.items():
        _check_field(path, key, value, lines.get(key, 0), _FIELDS, "field")
        if key == "budget":
            budget_lines = _child_lines(node, "budget")
            for bkey, bval in value.items():
                spec = {k: (t, False) for k, t in _BUDGET_FIELDS.items()}
                _check_field(path, bkey, bval, budget_lines.get(bkey, 0), spec, "budget field")
    return data


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProfileError(f"{path}: not UTF-8 text (byte {e.start}); save the profile as UTF-8") from None
    except OSError as e:
        raise ProfileError(f"{path}: cannot read the profile ({e.strerror})") from None


def _child_lines(node: yaml.MappingNode, key: str) -> dict[str, int]:
    for k, v in node.value:
        if k.value == key and isinstance(v, yaml.MappingNode):
            return {ck.value: ck.start_mark.line + 1 for ck, _ in v.value}
    return {}


def _check_field(path: Path, key: Any, value: Any, line: int, spec: dict, what: str) -> None:
    if key not in spec:
        known = [k for k in spec]
        raise ProfileError(f"{path}: line {line}: " + unknown_name_message(what, str(key), known))
    types = spec[key][0]
    names = " or ".join(t.__name__ for t in types)
    if value is None and key not in _NULLABLE:
        # `ram_gb:` with nothing after it parses as null; without this it surfaces later as a TypeError
        raise ProfileError(f"{path}: line {line}: {what} {key!r} is empty; give a value ({names}) or delete the line")
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, types):
        raise ProfileError(f"{path}: line {line}: {what} {key!r} must be {names}, got {type(value).__name__} {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ProfileError(f"{path}: line {line}: {what} {key!r} must be a finite number, got {value!r}")


def _merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in child.items():
        if key == "budget" and isinstance(base.get("budget"), dict):
            out["budget"] = {**base["budget"], **(value or {})}
        else:
            out[key] = value
    return out


def _resolve_raw(spec: str, seen: tuple[str, ...] = ()) -> tuple[dict[str, Any], Path]:
    path = _locate(spec)
    if str(path) in seen:
        raise ProfileError(f"{path}: 'extends' forms a cycle: {' -> '.join(seen + (str(path),))}")
    raw = _read_raw(path)
    parent = raw.pop("extends", None)
    if parent:
        base, _ = _resolve_raw(parent, seen + (str(path),))
        raw = _merge(base, raw)
    return raw, path


def load_profile(spec: str) -> DeviceProfile:
    """Resolve a profile by built-in name or YAML path, apply `extends:`, and validate it."""
    raw, path = _resolve_raw(spec)
    missing = [k for k, (_, req) in _FIELDS.items() if req and k not in raw]
    if missing:
        raise ProfileError(f"{path}: missing required field(s): {', '.join(missing)}")
    raw.pop("extends", None)
    name = path.stem
    if "quant" in raw:
        raw["quant"] = QuantRecipe.parse(raw["quant"])  # ConfigError with did-you-mean for a bad recipe
    profile = DeviceProfile(name=name, **{k: v for k, v in raw.items() if k != "budget"}, budget=Budget(**raw["budget"]))
    check_values(profile, path)
    return profile


def check_values(p: DeviceProfile, path: Path) -> None:
    if p.backend not in backend_names():
        raise ProfileError(f"{path}: field 'backend' must be one of {', '.join(backend_names())}, got {p.backend!r}")
    for need in get_backend(p.backend).requires:
        if not getattr(p, need):
            raise ProfileError(f"{path}: backend {p.backend!r} needs field {need!r}"
                               + (" (user@host)" if need == "ssh_host" else ""))
    for key in ("ram_gb", "mem_bandwidth_gbs", "compute_gflops", "threads", "context_length"):
        if getattr(p, key) <= 0:
            raise ProfileError(f"{path}: field {key!r} must be positive")
    for ftype, rates in (p.type_rates or {}).items():
        # a decode rate of 0 is what `profile` writes when a type's decode time does not grow with its FLOPs
        # (memory-bound only, as decode_gflops: 0); a prompt rate must be positive
        if ftype not in FTYPES or not (isinstance(rates, list) and len(rates) == 2
                                       and all(isinstance(x, (int, float)) for x in rates)
                                       and rates[0] >= 0 and rates[1] > 0):
            raise ProfileError(f"{path}: type_rates needs <file type>: [decode GFLOP/s (0: memory-bound only), "
                               f"prompt GFLOP/s > 0] with known types, got {ftype}: {rates!r}")
    if p.kv_cache_type.upper() not in kvcache.TYPES:
        raise ProfileError(f"{path}: field 'kv_cache_type' must be one of {', '.join(kvcache.ORDER)}, got {p.kv_cache_type!r}")
    if not 0 < p.usable_ram_share <= 1:
        raise ProfileError(f"{path}: field 'usable_ram_share' must be in (0, 1]")
    if not p.budget.states_latency():
        raise ProfileError(f"{path}: budget needs at least one of decode_tps, decode_ms_per_token, ttft_s, prefill_tps")
    if (p.budget.ttft_s is None) != (p.budget.prompt_tokens is None):
        raise ProfileError(f"{path}: budget fields 'ttft_s' and 'prompt_tokens' go together (the first token "
                           "after a prompt of how many tokens)")
    for key in _BUDGET_FIELDS:
        value = getattr(p.budget, key)
        if value is not None and value <= 0:
            raise ProfileError(f"{path}: budget field {key!r} must be positive, got {value}")
    if p.budget.prompt_tokens is not None and p.budget.prompt_tokens >= p.context_length:
        raise ProfileError(f"{path}: budget prompt_tokens {p.budget.prompt_tokens} must be below context_length "
                           f"{p.context_length}")
    for key in ("overhead_ms_per_layer", "overhead_ms_per_token", "decode_gflops"):
        if getattr(p, key) < 0:
            raise ProfileError(f"{path}: field {key!r} must not be negative, got {getattr(p, key)}")


def list_profiles() -> list[DeviceProfile]:
    return [load_profile(n) for n in builtin_names()]
