"""Measure the values behind tests/test_quality_ceilings.py (dense and taylor/uniform+reconstruction 20% PPL on
the second half of wikitext-2 valid, calibrated on the first half). Run: python3 bench/quality_ceilings.py"""
import time, sys
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from adaprune_edge import models
from adaprune_edge.data.calibration import CalibrationPool, split_text
from adaprune_edge.evaluate.perplexity import perplexity, read_text, token_windows
from adaprune_edge.prune.engine import PruneConfig, prune
from tests.conftest import WIKITEXT_VALID
t0 = time.time()
lm = models.load("default")
calib_text, held = split_text(read_text(WIKITEXT_VALID), 0.5)
pool = CalibrationPool.from_records(calib_text.split("\n\n"), lm.tokenizer, 128)
ev = token_windows(lm.tokenizer, held, 512, 4)
t1 = time.time(); d = perplexity(lm.model, ev); t2 = time.time()
print(f"dense ppl {d:.4f} ({t2-t1:.1f} s; load {t1-t0:.1f} s)", flush=True)
cfg = PruneConfig(ratio=0.2, metric="taylor", allocation="uniform", reconstruction=True, n_samples=16, seq_len=128, seed=0)
res = prune(lm.model, pool, cfg); t3 = time.time()
p = perplexity(res.model, ev); t4 = time.time()
print(f"pruned decoder {res.decoder_ratio:.4f} ppl {p:.4f} (prune {t3-t2:.1f} s, eval {t4-t3:.1f} s)", flush=True)
