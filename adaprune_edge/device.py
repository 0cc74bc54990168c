"""Device: a device profile with its latency backend, resolved once (by the CLI) and passed down.

The backend decides predict vs measure; nothing else looks at backend names. Latency of a structure goes
through the recipe's `Predictor` (latency/predictor.py), which carries this device's settings:

    device = Device.resolve("raspberry-pi-5")
    device.predictor(recipe)                    # measure-or-predict, and the recipe's calibration
    device.latency_of(structure, recipe)        # measured on a cached shape-only GGUF, or predicted
    device.measure_file(Path("model.gguf"), recipe)
    device.predict(structure, recipe)           # always the roofline with this device's settings (microseconds)
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaprune_edge.latency.backends import Backend, BenchSettings, LatencyReport, get_backend, measure
from adaprune_edge.latency.predictor import Calibration, Predictor
from adaprune_edge.latency.shape import file_latency, structure_latency
from adaprune_edge.overrides import BudgetOverrides
from adaprune_edge.profiles import DeviceProfile, load_profile
from adaprune_edge.quant import QuantRecipe
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

    def predictor(self, quant: QuantRecipe, calibration: Calibration = Calibration()) -> Predictor:
        """Latency at `quant` on this device: measured where the backend measures, else the roofline with
        this device's settings x `calibration` (Predictor.calibrated sets it from one measurement)."""
        measurer = functools.partial(self.measure, quant=quant) if self.measures else None
        return Predictor(quant, self.settings, calibration, measurer)

    def predict(self, structure: Structure, quant: QuantRecipe) -> LatencyReport:
        """The roofline's figures for `structure` at `quant` with this device's settings (uncalibrated)."""
        return self.predictor(quant).roofline(structure)

    def measure(self, structure: Structure, use_cache: bool = True, *, quant: QuantRecipe) -> LatencyReport:
        """`structure` at `quant` measured with the backend on a shape-only GGUF, looked up in / stored to
        this device's table unless use_cache=False (only where the backend measures: see predictor())."""
        return structure_latency(structure, quant, self.settings, self.name, use_cache=use_cache)

    def latency_of(self, structure: Structure, quant: QuantRecipe, use_cache: bool = True) -> LatencyReport:
        """Measured on a cached shape-only GGUF where the backend measures, else predicted."""
        return self.predictor(quant).latency(structure, use_cache=use_cache)

    def measure_file(self, path: Path, quant: QuantRecipe | None, use_cache: bool = True) -> LatencyReport:
        """Latency of an existing GGUF file (cached by content and recipe; None: a file of unknown recipe);
        predicted from its tensors for `predict`."""
        if not self.measures:
            return self.predict_file(path)
        return file_latency(Path(path), quant.name if quant else "file", self.settings, self.name, use_cache=use_cache)

    def predict_file(self, path: Path) -> LatencyReport:
        """The roofline's figures for a GGUF file's tensors with this device's settings."""
        return measure(Path(path), dataclasses.replace(self.settings, backend="predict"))

    def latency_of_file(self, path: Path, structure: Structure, quant: QuantRecipe, fresh: bool = False) -> LatencyReport:
        """The real file measured where the backend measures (fresh: measured again, and the cache updated),
        else `structure` predicted (the same figures latency_of gives, so a build's predicted rows agree)."""
        return self.measure_file(path, quant, use_cache=not fresh) if self.measures else self.predict(structure, quant)
