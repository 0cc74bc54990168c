"""Calibration pool: sources, windows, seeded strategies, holdout, errors."""

import json

import pytest
import torch

from adaprune_edge.data.calibration import CalibrationPool, read_records, split_text, windows_key
from adaprune_edge.errors import ConfigError, DataError


class CharTok:
    """A tokenizer stand-in: one token per character (keeps these tests fast and exact)."""

    def __call__(self, text, add_special_tokens=False, **_):
        return {"input_ids": [ord(c) % 256 for c in text]}


def test_text_jsonl_parquet_sources(tmp_path):
    (tmp_path / "a.txt").write_text("first paragraph\nstill first\n\nsecond paragraph\n")
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps({"text": t, "n": 1}) for t in ["x" * 10, "y" * 5]))
    import pandas as pd
    pd.DataFrame({"content": ["p" * 7, "q" * 3]}).to_parquet(tmp_path / "c.parquet")
    assert len(read_records(str(tmp_path / "a.txt"))) == 2
    assert read_records(str(tmp_path / "b.jsonl")) == ["x" * 10, "y" * 5]
    assert read_records(str(tmp_path / "c.parquet")) == ["p" * 7, "q" * 3]
    pool = CalibrationPool.from_sources([str(tmp_path / "b.jsonl"), str(tmp_path / "c.parquet")], CharTok(), 8)
    # records + "\n\n" separators: 12 + 7 + 9 + 5 = 33 chars -> 4 windows of 8
    assert pool.windows.shape == (4, 8)


def test_missing_empty_short_and_offline_hub(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_records(str(tmp_path / "nope.txt"))
    (tmp_path / "e.txt").write_text("")
    with pytest.raises(DataError, match="empty"):
        read_records(str(tmp_path / "e.txt"))
    (tmp_path / "s.txt").write_text("short")
    # one line naming the file and the tokens the windows need ("short" + "\n\n" = 7 tokens)
    with pytest.raises(DataError, match=r"s\.txt has 7 tokens; 1 window\(s\) of 64 need 64"):
        CalibrationPool.from_sources([str(tmp_path / "s.txt")], CharTok(), 64)
    with pytest.raises(DataError, match="offline"):
        read_records("someorg/somedataset")


def test_builtin_default_is_python_docs():
    recs = read_records("builtin:pydoc")
    assert len(recs) > 50 and sum(map(len, recs)) > 300_000


def test_strategies_seeded_and_distinct(tiny_llama):
    gen = torch.Generator().manual_seed(0)
    pool = CalibrationPool(torch.randint(0, 256, (40, 12), generator=gen), torch.arange(40.0))
    model = tiny_llama(layers=1)
    for name in ("random", "length_stratified", "hard", "diverse"):
        a, b = pool.sample(8, name, seed=3, model=model), pool.sample(8, name, seed=3, model=model)
        assert torch.equal(a, b) and len(set(a.tolist())) == 8, name
    # stratified: one window from each fifth of the record-length range
    strat = pool.sample(5, "length_stratified", seed=0)
    assert sorted(int(i) // 8 for i in strat) == [0, 1, 2, 3, 4]
    loss, _ = pool.probe(model, torch.arange(40))
    hard = pool.sample(8, "hard", seed=0, model=model)
    assert loss[hard].min() >= loss.sort(descending=True).values[7] - 1e-6
    with pytest.raises(ConfigError, match="needs the dense model"):
        pool.sample(4, "hard")


def test_holdout_and_rewindow_are_disjoint():
    text = "\n\n".join(f"paragraph {i} " * 5 for i in range(100))
    calib, held = split_text(text, 0.25)
    assert calib + held == text and 0.7 < len(calib) / len(text) < 0.8
    assert not set(calib.split("\n\n")) & set(held.split("\n\n"))
    pool = CalibrationPool.from_records(calib.split("\n\n"), CharTok(), 16)
    view = pool.with_seq_len(32)
    assert view.windows.shape[1] == 32 and torch.equal(view.windows.flatten(), pool.windows.flatten()[: view.windows.numel()])
    assert windows_key(pool.windows) != windows_key(view.windows)
