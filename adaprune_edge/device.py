"""Device: a device profile with its latency backend, resolved once (by the CLI) and passed down.

The backend decides predict vs measure; nothing else looks at backend names:

    device = Device.resolve("raspberry-pi-5")
    device.latency_of(structure, "Q4_K_M")        # measured on a cached shape-only GGUF, or predicted
    device.measure_file(Path("model.gguf"), "Q4_K_M")
    device.predict(structure, "Q4_K_M")           # always the calibrated roofline (microseconds)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from adaprune_edge.latency.backends import Backend, BenchSettings, LatencyReport, get_backend
from adaprune_edge.latency.roofline import predict
from adaprune_edge.latency.shape import file_latency, structure_latency
from adaprune_edge.overrides import BudgetOverrides
from adaprune_edge.profiles import DeviceProfile, load_profile
from adaprune_edge.archs.structure import Structure


@dataclass(frozen=True)
class Device:
    """profile: the device's figures and budget; settings: how its backend measures (threads, tokens,
    ssh host, roofline constants)."""

    profile: DeviceProfile
    settings: BenchSettings

    @classmethod
    def resolve(cls, name_or_path: str | Path, budget: BudgetOverrides | None = None, **overrides: Any) -> "Device":
        """A built-in profile name or a YAML path (ProfileError lists the known names), with the budget
        figures given on the command line in force."""
        profile = load_profile(name_or_path)
        return cls.of(budget.apply(profile) if budget else profile, **overrides)

    @classmethod
    def of(cls, profile: DeviceProfile, **overrides: Any) -> "Device":
        """overrides: BenchSettings fields (None values are ignored), e.g. backend="local", n_gen=32."""
        return cls(profile, BenchSettings.from_profile(profile, **overrides))

    def with_settings(self, **changes: Any) -> "Device":
        return dataclasses.replace(self, settings=dataclasses.replace(self.settings, **changes))

    @property
    def name(self) -> str:
        return self.profile.name

    @property
    def backend(self) -> Backend:
        return get_backend(self.settings.backend)

    @property
    def measures(self) -> bool:
        """True when latency is measured with llama.cpp (here or over ssh), False when predicted."""
        return self.backend.measures

    @property
    def local_threads(self) -> int | None:
        """Threads for llama.cpp work on this machine: the profile's where it runs here, else None (default)."""
        return self.profile.threads if self.backend.on_this_host else None

    def predict(self, structure: Structure, quant: str) -> LatencyReport:
        """The roofline's figures for `structure` at `quant` with the profile's constants."""
        return predict(structure, quant, self.profile)

    def latency_of(self, structure: Structure, quant: str, use_cache: bool = True) -> LatencyReport:
        """Measured on a cached shape-only GGUF where the backend measures, else predicted."""
        if not self.measures:
            return self.predict(structure, quant)
        return structure_latency(structure, quant, self.settings, self.name, use_cache=use_cache)

    def measure_file(self, path: Path, quant: str, use_cache: bool = True) -> LatencyReport:
        """Latency of an existing GGUF file (cached by content); predicted from its tensors for `predict`."""
        return file_latency(Path(path), quant, self.settings, self.name, use_cache=use_cache)

    def latency_of_file(self, path: Path, structure: Structure, quant: str, fresh: bool = False) -> LatencyReport:
        """The real file measured where the backend measures (fresh: measured again, and the cache updated),
        else `structure` predicted (the same figures latency_of gives, so a build's predicted rows agree)."""
        return self.measure_file(path, quant, use_cache=not fresh) if self.measures else self.predict(structure, quant)

    def measurer(self, quant: str, use_cache: bool = True) -> Callable[[Structure], LatencyReport] | None:
        """latency_of at `quant` for budget.solve's confirmation step, or None where nothing is measured."""
        if not self.measures:
            return None
        return lambda st: self.latency_of(st, quant, use_cache)
