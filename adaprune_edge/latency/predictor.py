"""Predictor: the latency of Structures at one quant recipe on one device, and the one place where
"measure or predict" is decided and where a measured / predicted scale is computed.

A `Device` hands one out per recipe (`device.predictor(quant)`): it knows the device's settings (threads,
prompt and generated tokens, roofline constants), whether its backend measures, and the recipe's
calibration, measured / predicted from one measurement (`calibrated`):

    p = device.predictor(recipe)                 # a QuantRecipe
    p = p.calibrated(p.measure(dense), dense)   # one measurement per device x recipe
    p.predict(st)                                # a LatencyReport: roofline x calibration
    p.latency(st)                                # measured where the backend measures, else p.predict(st)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from adaprune_edge.errors import LatencyError
from adaprune_edge.latency.backends import BenchSettings, LatencyReport
from adaprune_edge.latency.roofline import Roofline, Workload
from adaprune_edge.quant import QuantRecipe
from adaprune_edge.archs.structure import Structure


@dataclass(frozen=True)
class Calibration:
    """measured / predicted factors of one recipe on one device: decode ms/token and prompt tokens/s. A
    predictor applies them to the roofline's figures, so every limit is checked in measured units."""

    decode: float = 1.0
    prefill: float = 1.0

    @classmethod
    def of(cls, measured: LatencyReport, predicted: LatencyReport) -> "Calibration":
        return cls(measured.decode_ms_per_token / predicted.decode_ms_per_token,
                   measured.prefill_tps / predicted.prefill_tps)

    def apply(self, report: LatencyReport) -> LatencyReport:
        if self == Calibration():
            return report
        return dataclasses.replace(report, decode_ms_per_token=report.decode_ms_per_token * self.decode,
                                   prefill_tps=report.prefill_tps * self.prefill)


@dataclass(frozen=True)
class Predictor:
    """quant: the recipe; settings: the device's BenchSettings (the roofline's constants and token counts);
    calibration: measured / predicted at this recipe; measurer(structure, use_cache): the device's
    measurement of a structure at `quant` (shape-only GGUF, cached), None where the backend only predicts."""

    quant: QuantRecipe
    settings: BenchSettings
    calibration: Calibration = Calibration()
    measurer: Callable[[Structure, bool], LatencyReport] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, profile: Any, quant: QuantRecipe | None = None) -> "Predictor":
        """The roofline of a bare DeviceProfile at `quant` (default: the profile's); nothing is measured."""
        return cls(quant or profile.quant, BenchSettings.from_profile(profile, backend="predict"))

    @property
    def measures(self) -> bool:
        return self.measurer is not None

    def roofline(self, structure: Structure) -> LatencyReport:
        """The roofline's figures for `structure` with the settings' constants and token counts (uncalibrated)."""
        s = self.settings
        return Roofline.from_settings(s).report(Workload.from_structure(structure, self.quant), s)

    def predict(self, structure: Structure) -> LatencyReport:
        """The calibrated roofline: roofline figures x calibration (measured units where one was measured)."""
        return self.calibration.apply(self.roofline(structure))

    def measure(self, structure: Structure, use_cache: bool = True) -> LatencyReport:
        """`structure` measured with the device's backend (raises LatencyError where it only predicts)."""
        if self.measurer is None:
            raise LatencyError(f"the {self.settings.backend!r} backend predicts latency; it cannot measure it")
        return self.measurer(structure, use_cache)

    def latency(self, structure: Structure, measure: bool = True, use_cache: bool = True) -> LatencyReport:
        """Measured where the backend measures and `measure` asks for it, else predict(structure)."""
        return self.measure(structure, use_cache) if measure and self.measures else self.predict(structure)

    def calibrated(self, measured: LatencyReport | None, at: Structure) -> "Predictor":
        """This predictor scaled by `measured` / the roofline at `at` (unscaled when nothing was measured):
        the one place a measured / predicted scale is computed."""
        cal = Calibration.of(measured, self.roofline(at)) if measured is not None else Calibration()
        return dataclasses.replace(self, calibration=cal)

    def with_calibration(self, calibration: Calibration) -> "Predictor":
        """This predictor with factors measured before (a plan's, carried by a search spec)."""
        return dataclasses.replace(self, calibration=calibration)
