"""Latency lookup table: one JSON file per device in the user cache dir, so a shape is measured once.

Keys are `<structure key or file key>|<quant>|<settings key>`; values are LatencyReport dicts. Writers
take an exclusive lock and re-read before writing (several trials may measure at once) and replace the
file atomically, so a crash never leaves a half-written table."""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
from pathlib import Path
from typing import Iterator

from adaprune_edge.latency.backends import BenchSettings, LatencyReport
from adaprune_edge.runs import write_json
from adaprune_edge.models import cache_dir

VERSION = 1


def cache_key(shape_key: str, quant: str, settings: BenchSettings) -> str:
    """Lookup key: structure (or file) key, quant recipe name, and what the measurement depends on."""
    return f"{shape_key}|{quant}|{settings.key()}"


class LatencyCache:
    """Per-device table of LatencyReports at `root/latency/<device>.json`."""

    def __init__(self, device: str, root: Path | None = None) -> None:

        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", device) or "device"
        self.path = Path(root or cache_dir()) / "latency" / f"{safe}.json"

    def _read(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}  # missing or unreadable table: start afresh (it is only a cache)
        return data.get("entries", {}) if data.get("version") == VERSION else {}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def get(self, key: str) -> LatencyReport | None:
        entry = self._read().get(key)
        try:
            return LatencyReport.from_dict(entry) if entry else None
        except TypeError:
            return None  # an entry from another version of the report

    def put(self, key: str, report: LatencyReport) -> None:
        with self._locked():
            entries = self._read()
            entries[key] = report.to_dict()
            write_json(self.path, {"version": VERSION, "entries": entries})

    def __len__(self) -> int:
        return len(self._read())
