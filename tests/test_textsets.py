"""Calibration, objective and report use three disjoint sets of token windows, named in the report."""

from __future__ import annotations

import re

import pytest
import torch

from adaprune_edge.data import textsets
from adaprune_edge.data.calibration import CalibrationPool
from adaprune_edge.errors import ConfigError, DataError


class CharTok:
    """One token per character (exact and fast)."""

    def __call__(self, text, add_special_tokens=False, **_):
        return {"input_ids": [ord(c) for c in text]}


def _doc(path, n=200):
    # every paragraph carries its own number, so a window tells which paragraphs it covers
    path.write_text("\n\n".join(f"<{i:04d}> " + "abcdefgh" * 5 for i in range(n)) + "\n")
    return str(path)


def _paragraphs(windows: torch.Tensor) -> set[int]:
    text = "".join(chr(int(t)) for t in windows.flatten())
    return {int(m) for m in re.findall(r"<(\d{4})>", text)}


def _windows(windows: torch.Tensor) -> set[tuple[int, ...]]:
    return {tuple(w.tolist()) for w in windows}


def test_three_sets_are_disjoint_without_val(tmp_path):
    src, tok = _doc(tmp_path / "a.txt"), CharTok()
    split = textsets.plan_split([src], None, 0.2, tok, need_tokens=(4 + 8) * 64)
    assert split.calib[0][0] == src and split.heldout == src
    cal = CalibrationPool.from_sources([src], tok, 32, split.calib[0][1]).windows
    obj, rep = textsets.heldout_windows(split, tok, 64, 4, 8)
    assert obj.shape == (4, 64) and rep.shape == (8, 64)
    # calibration never sees a held-out paragraph; objective and report windows never coincide
    assert not _paragraphs(cal) & (_paragraphs(obj) | _paragraphs(rep))
    assert not _windows(obj) & _windows(rep)
    held = CalibrationPool.from_sources([src], tok, 64, split.heldout_range).windows
    torch.testing.assert_close(torch.cat([obj, rep]), held[:12])  # consecutive slices of one stream
    assert split.heldout_range == (0.8, 1.0)  # 12 windows fit in 20% of the records (40 x 49 tokens)
    # 40 windows need 2560 tokens (+5% margin: 2688): 55 records of 49 tokens, so the tail grows to 27.5%
    grown = textsets.plan_split([src], None, 0.2, tok, need_tokens=40 * 64)
    assert grown.heldout_range[0] == pytest.approx(1 - 55 / 200) and grown.calib[0][1][1] == pytest.approx(1 - 55 / 200)


def test_three_sets_with_val(tmp_path):
    src, val, tok = _doc(tmp_path / "a.txt"), _doc(tmp_path / "v.txt", 60), CharTok()
    split = textsets.plan_split([src], val, 0.2, tok, need_tokens=0)
    assert split.calib == ((src, (0.0, 1.0)),) and split.heldout == val
    obj, rep = textsets.heldout_windows(split, tok, 64, 3, 5)
    assert not _windows(obj) & _windows(rep) and obj.shape[0] == 3 and rep.shape[0] == 5
    sets = textsets.describe(split, 40, 32, obj, rep)
    assert set(sets) == {"calibration", "objective", "report"}
    assert sets["report"].tokens == 5 * 64 and sets["objective"].source == val and sets["calibration"].tokens == 40 * 32
    assert "windows 3-7" in sets["report"].part and "windows 0-2" in sets["objective"].part
    with pytest.raises(ConfigError, match="also a calibration source"):
        textsets.plan_split([src], src, 0.2, tok, 0)


def test_too_short_heldout_names_file_and_tokens(tmp_path):
    src, tok = _doc(tmp_path / "small.txt", 10), CharTok()
    split = textsets.plan_split([src], None, 0.2, tok, need_tokens=20 * 512)
    with pytest.raises(DataError, match=r"small\.txt has \d+ tokens; 21 window\(s\) of 512 need 10752"):
        textsets.heldout_windows(split, tok, 512, 20, 8)


def test_report_names_the_sets():
    from adaprune_edge.pipeline import report

    sets = {"calibration": {"source": "builtin:self", "part": "records 0%-78%", "windows": 70, "seq_len": 256, "tokens": 17920},
            "objective": {"source": "builtin:self", "part": "records 78%-100%, windows 0-3", "windows": 4, "seq_len": 512, "tokens": 2048},
            "report": {"source": "builtin:self", "part": "records 78%-100%, windows 4-11", "windows": 8, "seq_len": 512, "tokens": 4096}}
    rep = {"data_sets": sets, "eval_windows": 8, "eval_seq_len": 512}
    lines = report.data_set_lines(rep)
    assert lines[2] == "- report: builtin:self (records 78%-100%, windows 4-11), 8x512 = 4096 tokens"
    assert "unseen by calibration and search" in report._report_set(rep) and "windows 4-11" in report._report_set(rep)


def test_wikitext_style_file_splits_by_line_and_one_record_refuses(tmp_path):
    from adaprune_edge.data.calibration import read_records

    wiki = tmp_path / "wiki.txt"
    wiki.write_text("".join(f" = Heading {i} = \n \n Body of paragraph {i} .\n \n" for i in range(30)))
    assert len(read_records(str(wiki))) == 60  # no blank-line paragraphs: one record per non-empty line
    one = tmp_path / "one.txt"
    one.write_text("a single line of text without any breaks " * 40)
    with pytest.raises(DataError, match=r"cannot hold out part of .*one\.txt: it is one record; pass --val"):
        textsets.plan_split([str(one)], None, 0.2, CharTok(), 64)


def test_general_text_dense_vs_gguf_and_skips(default_model, tmp_path):
    """--data-dir figures: the default GGUF as 'shipped' against its own dequantized torch model agree,
    a missing file and a calibration source are skipped with the reason."""
    from adaprune_edge import models
    from adaprune_edge.evaluate import general_text

    (tmp_path / "wikitext-2").mkdir()
    wiki = tmp_path / "wikitext-2" / "valid.txt"
    wiki.write_text("".join(f" The river {i} flows past the old mill and into the quiet lake , where boats rest . \n \n"
                            for i in range(60)))
    out = general_text.evaluate(models.default_gguf_path(), default_model.model, default_model.tokenizer, tmp_path,
                                [], n_windows=2, seq_len=64, threads=1)
    w = out["wikitext2_valid"]
    assert w.windows == 2 and w.seq_len == 64 and "records 50%-100%" in w.source
    assert w.pruned_ppl == pytest.approx(w.dense_ppl, rel=0.05)  # Q4_1 file vs its fp32 dequantization
    assert "not found" in out["ptb_valid"].skipped
    again = general_text.evaluate(models.default_gguf_path(), default_model.model, default_model.tokenizer, tmp_path,
                                  [str(wiki)], n_windows=2, seq_len=64)
    assert "is a calibration source" in again["wikitext2_valid"].skipped
