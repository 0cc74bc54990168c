"""Measured latency of a Structure (on a cached shape-only GGUF) or of a GGUF file, with the per-device
lookup table in front so the same (shape, quant, settings) is never measured twice. Whether to measure at
all is the device's predictor's call (latency/predictor.py), not this module's."""

from __future__ import annotations

import hashlib
from pathlib import Path

from adaprune_edge.latency.backends import BenchSettings, LatencyReport, measure
from adaprune_edge.latency.cache import LatencyCache, cache_key
from adaprune_edge.archs.structure import Structure
from adaprune_edge.exporters import gguf as gguf_export
from adaprune_edge.quant import QuantRecipe


def shape_only_gguf(structure: Structure, quant: QuantRecipe, tokenizer_source: str | Path | None = None) -> Path:
    """A shape-only GGUF (random weights, real tokenizer) for (structure, quant), written once and cached
    in models.cache_dir()/shape-only by the exporter (adaprune_edge.exporters.gguf)."""

    return gguf_export.cached_shape_only(structure, quant, tokenizer_source)


def structure_latency(structure: Structure, quant: QuantRecipe, settings: BenchSettings, device: str,
                      use_cache: bool = True, tokenizer_source: str | Path | None = None) -> LatencyReport:
    """Latency of `structure` at `quant` measured with `settings.backend` on a shape-only GGUF, looked up in /
    stored to the device's table unless use_cache=False."""
    cache = LatencyCache(device)
    key = cache_key(structure.key(), quant.name, settings)
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
    """Latency of an existing GGUF file, cached under a key of its content (size + first MiB) and
    `quant_label` (its recipe's name)."""
    if not Path(path).is_file():
        return measure(path, settings)  # (raises LatencyError for a missing file)
    cache = LatencyCache(device)
    key = cache_key(f"file-{_content_key(Path(path))}", quant_label, settings)
    if use_cache and (hit := cache.get(key)) is not None:
        return hit
    report = measure(path, settings)
    cache.put(key, report)
    return report
