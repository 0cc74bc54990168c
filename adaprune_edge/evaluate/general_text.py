"""General-text perplexity for the build report: wikitext-2 valid and PTB valid from a `--data-dir`.

The search tunes on the calibration domain; these figures say how the shipped model does on ordinary
English it never saw. Windows come from the second half of each file (by records), the half that
bench/calibration.py also scores on, and a file that is itself a calibration source is skipped (its
windows could have been calibrated on)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from adaprune_edge.data.calibration import CalibrationPool
from adaprune_edge.errors import DataError
from adaprune_edge.runtime import llamacpp as llama_runner
from adaprune_edge.evaluate import validation

FILES = {"wikitext2_valid": "wikitext-2/valid.txt", "ptb_valid": "ptb/ptb.valid.txt"}
RECORDS = (0.5, 1.0)


@dataclass(frozen=True)
class TextScores:
    """One file's perplexity, dense (torch fp32) vs shipped (the GGUF in llama.cpp), or why it was skipped."""

    dense_ppl: float | None = None
    pruned_ppl: float | None = None
    windows: int = 0
    seq_len: int = 0
    source: str = ""
    dense_backend: str = "torch fp32"
    pruned_backend: str = "llama.cpp (shipped GGUF)"
    skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.skipped is not None:
            return {"skipped": self.skipped}
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "skipped"}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TextScores":
        return cls(**d)


def _is_source(path: Path, sources: Sequence[str]) -> bool:
    return any(Path(s).expanduser().exists() and Path(s).expanduser().resolve() == path.resolve() for s in sources)


def evaluate(gguf: str | Path, dense: Any, tokenizer: Any, data_dir: str | Path, calib_sources: Sequence[str],
             n_windows: int = 8, seq_len: int = 512, threads: int = 2,
             progress: Callable[[int], None] | None = None) -> dict[str, TextScores]:
    """File name (FILES) → its scores or why it was skipped (pruned = the GGUF)."""

    out: dict[str, TextScores] = {}
    for name, rel in FILES.items():
        path = Path(data_dir) / rel
        if not path.is_file():
            out[name] = TextScores(skipped=f"{path} not found")
            continue
        if _is_source(path, calib_sources):
            out[name] = TextScores(skipped=f"{path} is a calibration source")
            continue
        try:
            windows = CalibrationPool.from_sources([str(path)], tokenizer, seq_len, RECORDS).windows[:n_windows].numpy()
        except DataError as e:
            out[name] = TextScores(skipped=str(e))
            continue
        llm = llama_runner.open_gguf(gguf, n_ctx=seq_len, threads=threads)
        try:
            s = validation.score_windows(validation.gguf_logits_fn(llm), windows, validation.torch_logits_fn(dense), progress)
        finally:
            llm.close()
        out[name] = TextScores(s.ref_ppl, s.ppl, int(windows.shape[0]), seq_len,
                               f"{path} records {RECORDS[0]:.0%}-{RECORDS[1]:.0%}")
    return out
