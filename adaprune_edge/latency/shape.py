"""Latency of a Structure: predicted from its shape, or measured on a cached shape-only GGUF, with the
per-device lookup table in front so the same (shape, quant, settings) is never measured twice."""

from __future__ import annotations

import hashlib
from pathlib import Path

from adaprune_edge.latency.backends import BenchSettings, LatencyReport, get_backend, measure
from adaprune_edge.latency.cache import LatencyCache, cache_key
from adaprune_edge.archs.structure import Structure
from adaprune_edge.exporters import gguf as gguf_export
from adaprune_edge.latency.roofline import Roofline, Workload


def shape_only_gguf(structure: Structure, quant: str, tokenizer_source: str | Path | None = None) -> Path:
    """A shape-only GGUF (random weights, real tokenizer) for (structure, quant), written once and cached
    in models.cache_dir()/shape-only by the exporter (adaprune_edge.exporters.gguf)."""

    return gguf_export.cached_shape_only(structure, quant, tokenizer_source)


def structure_latency(structure: Structure, quant: str, settings: BenchSettings, device: str,
                      use_cache: bool = True, tokenizer_source: str | Path | None = None) -> LatencyReport:
    """Latency of `structure` at `quant` with `settings.backend`: `predict` from the shape alone, else a
    measurement on a shape-only GGUF, looked up in / stored to the device's table unless use_cache=False."""
    if not get_backend(settings.backend).measures:

        return Roofline.from_settings(settings).report(Workload.from_structure(structure, quant), settings)
    cache = LatencyCache(device)
    key = cache_key(structure.key(), quant, settings)
    if use_cache and (hit := cache.get(key)) is not None:
        return hit
    report = measure(shape_only_gguf(structure, quant, tokenizer_source), settings)
    cache.put(key, report)
    return report


def _content_key(path: Path) -> str:
    with path.open("rb") as f:
        head = f.read(1 << 20)
    return hashlib.sha256(head + str(path.stat().st_size).encode()).hexdigest()[:16]


def file_latency(path: Path, quant_label: str, settings: BenchSettings, device: str,
                 use_cache: bool = True) -> LatencyReport:
    """Latency of an existing GGUF file, cached under a key of its content (size + first MiB)."""
    if not get_backend(settings.backend).measures or not Path(path).is_file():
        return measure(path, settings)  # (raises LatencyError for a missing file)
    cache = LatencyCache(device)
    key = cache_key(f"file-{_content_key(Path(path))}", quant_label, settings)
    if use_cache and (hit := cache.get(key)) is not None:
        return hit
    report = measure(path, settings)
    cache.put(key, report)
    return report
