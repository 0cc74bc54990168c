"""Budget figures given on the command line (build, search, fit, tradeoff), checked before anything loads
and applied to a device profile: `Device.resolve(name, budget=BudgetOverrides(...))`."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaprune_edge.errors import ConfigError, ProfileError
from adaprune_edge.runtime import kvcache
from adaprune_edge.profiles import DeviceProfile, check_values


@dataclass(frozen=True)
class BudgetOverrides:
    """Budget figures given on the command line; None keeps the profile's. decode_ms (--budget-ms) or
    target_tps (--target-tps) replace the profile's decode limit; ttft_s with prompt_tokens its first-token
    limit; context_length, ram_share and ram_mb what memory is checked at."""

    decode_ms: float | None = None
    target_tps: float | None = None
    ttft_s: float | None = None
    prompt_tokens: int | None = None
    context_length: int | None = None
    ram_share: float | None = None
    ram_mb: float | None = None
    kv_cache: str | None = None  # K/V cache type (F16, Q8_0, Q4_0)

    def check(self) -> "BudgetOverrides":
        """One-line errors naming the option, before anything is loaded or written."""
        budget_override(self.decode_ms, self.target_tps)
        for option, value in (("--ttft-s", self.ttft_s), ("--prompt-tokens", self.prompt_tokens),
                              ("--context", self.context_length), ("--ram-mb", self.ram_mb)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{option} must be a positive number, got {value}")
        if self.ram_share is not None and not (math.isfinite(self.ram_share) and 0 < self.ram_share <= 1):
            raise ConfigError(f"--ram-share must be in (0, 1], got {self.ram_share}")
        if self.kv_cache is not None:
            kvcache.check(self.kv_cache)
        return self

    def apply(self, p: DeviceProfile) -> DeviceProfile:
        """p with these figures in force (checked again as a whole: a prompt longer than the context fails)."""
        b = p.budget
        if self.decode_ms is not None or self.target_tps is not None:
            b = dataclasses.replace(b, decode_ms_per_token=self.decode_ms, decode_tps=self.target_tps)
        if self.ttft_s is not None:
            b = dataclasses.replace(b, ttft_s=self.ttft_s, prompt_tokens=self.prompt_tokens or b.prompt_tokens or 512)
        elif self.prompt_tokens is not None:
            if b.ttft_s is None:
                raise ConfigError("--prompt-tokens needs a first-token budget: give --ttft-s too")
            b = dataclasses.replace(b, prompt_tokens=self.prompt_tokens)
        if self.ram_mb is not None:
            b = dataclasses.replace(b, ram_mb=self.ram_mb)
        out = dataclasses.replace(p, budget=b, context_length=self.context_length or p.context_length,
                                  usable_ram_share=self.ram_share or p.usable_ram_share,
                                  kv_cache_type=kvcache.check(self.kv_cache) if self.kv_cache else p.kv_cache_type)
        try:
            check_values(out, Path("the command line"))
        except ProfileError as e:
            raise ConfigError(str(e).replace("the command line: ", "", 1)) from None
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def budget_override(budget_ms: float | None, target_tps: float | None = None) -> float | None:
    """The decode budget (ms/token) given on the command line as --budget-ms or --target-tps (tokens/s),
    or None for the profile's. Checked before anything is loaded or written: a NaN passes `<= 0` tests."""
    if budget_ms is not None and target_tps is not None:
        raise ConfigError("give --budget-ms or --target-tps, not both")
    for option, value in (("--budget-ms", budget_ms), ("--target-tps", target_tps)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{option} must be a positive number, got {value}")
    return 1000.0 / target_tps if target_tps is not None else budget_ms
