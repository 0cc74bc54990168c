"""Latency of a GGUF model on a device: the report type, the measurement settings, and the backend registry.

One small interface, `measure(gguf_path, settings) -> LatencyReport`, behind three backends:
`local` (llama-cpp-python in a subprocess, or `llama-bench` when on PATH; adaprune_edge.latency.local),
`ssh` (llama-bench on a remote device; adaprune_edge.latency.ssh) and `predict` (roofline; adaprune_edge.latency.roofline).
Latency depends only on shapes and quant types, so measurements run on shape-only GGUFs and are cached
(adaprune_edge.latency.cache)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from adaprune_edge.errors import LatencyError
from adaprune_edge.registry import Registry
from adaprune_edge.gguf.header import read_header
from adaprune_edge.registry import unknown_name_message

# modules whose import registers a backend (lazy, so `predict` never imports llama_cpp)
_BACKEND_MODULES = {"local": "adaprune_edge.latency.local", "ssh": "adaprune_edge.latency.ssh", "predict": "adaprune_edge.latency.roofline"}
BACKENDS: Registry["Backend"] = Registry("latency backend")


@dataclass(frozen=True)
class Backend:
    """A latency backend. measure(path, settings): figures for a GGUF file. measures: False for a
    prediction from shapes (no file runs). on_this_host: llama.cpp runs on this machine, so the profile's
    thread count applies here too. key_fields(settings): what else a cached figure depends on.
    requires: profile fields the backend cannot work without."""

    name: str
    measure: Callable[[Path, "BenchSettings"], "LatencyReport"]
    measures: bool
    on_this_host: bool
    key_fields: Callable[["BenchSettings"], list] = lambda s: []
    requires: tuple[str, ...] = ()


def register_backend(name: str, *, measures: bool, on_this_host: bool,
                     key_fields: Callable[["BenchSettings"], list] = lambda s: [],
                     requires: tuple[str, ...] = ()) -> Callable:
    """Decorator: register a measure function as backend `name`."""
    def deco(fn: Callable[[Path, "BenchSettings"], "LatencyReport"]) -> Callable:
        BACKENDS.register(name)(Backend(name, fn, measures, on_this_host, key_fields, requires))
        return fn

    return deco


@dataclass(frozen=True)
class BenchSettings:
    """How to measure. n_prompt: prompt tokens for prefill; n_gen: decoded tokens (after the prompt);
    repetitions: runs whose median is reported; timeout_s: per subprocess/remote command, seconds."""

    backend: str = "local"
    threads: int = 2
    n_prompt: int = 128
    n_gen: int = 64
    repetitions: int = 3
    timeout_s: float = 300.0
    ssh_host: str | None = None
    ssh_config: str | None = None  # optional `ssh -F` file (ports, keys, known hosts)
    llama_bench: str = "llama-bench"
    connect_timeout_s: int = 10
    # the roofline constants, used by the `predict` backend (GB/s, GFLOP/s, ms)
    mem_bandwidth_gbs: float = 10.0
    compute_gflops: float = 50.0
    overhead_ms_per_layer: float = 0.02
    overhead_ms_per_token: float = 0.0
    decode_gflops: float = 0.0
    type_rates: tuple = ()  # ((file type, decode GFLOP/s, prompt GFLOP/s), ...) fitted by `profile`

    def key(self) -> str:
        """What a measurement depends on (cache key part): backend, threads, token counts, remote binary."""
        fields = [self.backend, self.threads, self.n_prompt, self.n_gen] + get_backend(self.backend).key_fields(self)
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BenchSettings":
        d = dict(d)
        d["type_rates"] = tuple(tuple(r) for r in d.get("type_rates") or ())
        return cls(**d)

    @classmethod
    def from_profile(cls, profile: Any, **overrides: Any) -> "BenchSettings":
        """Settings for a DeviceProfile (backend, threads, ssh host, llama-bench path, roofline constants)."""
        base = dict(backend=profile.backend, threads=profile.threads, ssh_host=profile.ssh_host,
                    llama_bench=profile.llama_bench, mem_bandwidth_gbs=profile.mem_bandwidth_gbs,
                    compute_gflops=profile.compute_gflops, overhead_ms_per_layer=profile.overhead_ms_per_layer,
                    overhead_ms_per_token=getattr(profile, "overhead_ms_per_token", 0.0),
                    decode_gflops=getattr(profile, "decode_gflops", 0.0),
                    type_rates=tuple((t, float(r[0]), float(r[1])) for t, r in sorted((getattr(profile, "type_rates", None) or {}).items())))
        if getattr(profile, "n_prompt", None):  # a first-token budget is measured at its prompt length
            base["n_prompt"] = profile.n_prompt
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)


@dataclass(frozen=True)
class LatencyReport:
    """One latency figure set. prefill_tps: prompt tokens/s at n_prompt tokens; decode_ms_per_token: median
    ms per generated token over n_gen tokens; *_spread: (max - min) over repetitions in the same unit;
    peak_rss_bytes: peak resident memory of the measuring process (None where unknown)."""

    backend: str
    measured: bool
    prefill_tps: float
    decode_ms_per_token: float
    n_prompt: int
    n_gen: int
    threads: int
    repetitions: int = 1
    prefill_tps_spread: float = 0.0
    decode_ms_spread: float = 0.0
    peak_rss_bytes: int | None = None
    decode_ms_samples: tuple[float, ...] = ()
    prefill_tps_samples: tuple[float, ...] = ()
    tool: str = ""  # what produced it: llama-cpp-python, llama-bench, roofline
    note: str = ""

    @property
    def decode_tps(self) -> float:
        return 1000.0 / self.decode_ms_per_token

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["decode_ms_samples"] = list(self.decode_ms_samples)
        d["prefill_tps_samples"] = list(self.prefill_tps_samples)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LatencyReport":
        d = dict(d)
        d["decode_ms_samples"] = tuple(d.get("decode_ms_samples") or ())
        d["prefill_tps_samples"] = tuple(d.get("prefill_tps_samples") or ())
        return cls(**d)

    @classmethod
    def from_samples(cls, decode_ms: Sequence[float], prefill_tps: Sequence[float], **kw: Any) -> "LatencyReport":
        """Median and spread (max - min) of per-repetition samples."""
        if not decode_ms or not prefill_tps:
            raise LatencyError("a measurement returned no samples")
        return cls(decode_ms_per_token=statistics.median(decode_ms), prefill_tps=statistics.median(prefill_tps),
                   decode_ms_spread=max(decode_ms) - min(decode_ms),
                   prefill_tps_spread=max(prefill_tps) - min(prefill_tps), repetitions=len(decode_ms),
                   decode_ms_samples=tuple(decode_ms), prefill_tps_samples=tuple(prefill_tps), **kw)


def backend_names() -> list[str]:
    return sorted(_BACKEND_MODULES)


def get_backend(name: str) -> Backend:
    """Backend `name` (imports its module on first use)."""
    if name in _BACKEND_MODULES and name not in BACKENDS:
        importlib.import_module(_BACKEND_MODULES[name])
    if name not in _BACKEND_MODULES:

        raise LatencyError(unknown_name_message("latency backend", name, backend_names()))
    return BACKENDS.get(name)


def measure(gguf_path: str | Path, settings: BenchSettings) -> LatencyReport:
    """Latency of the GGUF at `gguf_path` with `settings.backend` (raises LatencyError on failure)."""
    path = Path(gguf_path)
    if not path.is_file():
        raise LatencyError(f"GGUF file {path} not found")

    read_header(path)  # ~0.1 s: a cut-off or corrupt file is named here, not as "llama.cpp cannot load"
    if settings.repetitions < 1 or settings.n_prompt < 1 or settings.n_gen < 1:
        raise LatencyError("n_prompt, n_gen and repetitions must be at least 1")
    return get_backend(settings.backend).measure(path, settings)
