"""Quality ceilings on the real default model: a pruning regression must fail CI, not only a crash.

Each ceiling is ~10% above the value measured when it was set; calibration uses the first half of
wikitext-2 valid (paragraphs, 128-token windows), the perplexity windows (4 x 512 tokens) come from the
second half. Measured 2026-12-04 on this 2-core host by `python3 bench/quality_ceilings.py` (the body of
these tests as a script): dense 18.3386, taylor/uniform + reconstruction at 20% of the decoder (0.1999) 24.8678."""

import pytest

from adaprune_edge.data.calibration import CalibrationPool, split_text
from adaprune_edge.evaluate.perplexity import perplexity, read_text, token_windows
from adaprune_edge.prune.engine import PruneConfig, prune
from tests.conftest import WIKITEXT_VALID

EVAL_WINDOWS, EVAL_SEQ_LEN, CALIB_SEQ_LEN = 4, 512, 128
DENSE_PPL = 18.3386                  # measured (see the module docstring)
TAYLOR_RECON_20_CEILING = 27.35      # 1.10 x 24.8678 measured


@pytest.fixture(scope="module")
def split(default_model, shared_data):
    calib_text, held = split_text(read_text(WIKITEXT_VALID), 0.5)  # disjoint: calibrate on one, score the other
    pool = CalibrationPool.from_records(calib_text.split("\n\n"), default_model.tokenizer, CALIB_SEQ_LEN)
    return pool, token_windows(default_model.tokenizer, held, EVAL_SEQ_LEN, EVAL_WINDOWS)


@pytest.mark.e2e
def test_dense_ppl_on_the_ceiling_windows(default_model, split):
    assert perplexity(default_model.model, split[1]) == pytest.approx(DENSE_PPL, rel=0.01)


@pytest.mark.e2e
def test_taylor_uniform_reconstruction_20pct_under_ceiling(default_model, split):
    # slow: the pruning took 673 s when the ceiling was measured (load average ~6 on 2 cores), far over the
    # ~60 s aimed for; Taylor needs a backward pass per calibration window
    pool, ev = split
    cfg = PruneConfig(ratio=0.2, metric="taylor", allocation="uniform", reconstruction=True, n_samples=16,
                      seq_len=CALIB_SEQ_LEN, seed=0)
    res = prune(default_model.model, pool, cfg)
    ppl = perplexity(res.model, ev)
    assert abs(res.decoder_ratio - 0.2) <= 0.01
    assert DENSE_PPL < ppl < TAYLOR_RECON_20_CEILING, ppl
