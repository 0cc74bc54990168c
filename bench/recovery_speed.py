"""Recovery throughput on this host: what each trick buys (tokens/s of distillation steps).

Student: the default model pruned uniformly to 25% of the decoder (FFN channels by magnitude: speed does not
depend on which); teacher: the dense default model. Each row runs --steps distillation steps after one
warm-up step, on builtin:self windows, and reports tokens/s. Rows: fp32 vs bf16 autocast; teacher live
every step vs teacher targets cached (second epoch over the same windows); what trains (decoder, all, norms,
lora); frozen first layers; sequence length and batch. Writes bench/results/recovery_speed.json.

    python3 bench/recovery_speed.py [--steps 6]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "recovery_speed.json"
ROWS = {  # name -> RecoverConfig overrides
    "fp32, decoder, 4x256": dict(bf16=False),
    "bf16, decoder, 4x256": dict(),
    "bf16, decoder, 4x256, teacher cached": dict(cached=True),
    "bf16, all (embedding too), 4x256": dict(train="all"),
    "bf16, norms and biases, 4x256": dict(train="norms"),
    "bf16, lora r16, 4x256": dict(train="lora"),
    "bf16, decoder, first 10 layers frozen, 4x256": dict(freeze_first=10),
    "bf16, decoder, 2x512": dict(batch_size=2, seq_len=512),
    "bf16, decoder, 8x128": dict(batch_size=8, seq_len=128),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rows", default=";".join(ROWS), help="row names separated by ;")
    args = ap.parse_args()

    from adaprune_edge import models
    from adaprune_edge.data.calibration import CalibrationPool
    from adaprune_edge.prune.engine import PruneConfig, prune
    from adaprune_edge.recover.config import RecoverConfig
    from adaprune_edge.recover.distill import recover

    lm = models.load("default")
    pool = CalibrationPool.from_sources(["builtin:self"], lm.tokenizer, 256, loaded=lm)
    pruned = prune(lm.model, pool, PruneConfig(ratio=0.25, metric="l2", allocation="uniform", n_samples=4)).model
    rows = []
    for name in args.rows.split(";"):
        over = dict(ROWS[name])
        cached = over.pop("cached", False)
        cfg = RecoverConfig(**{**dict(batch_size=4, seq_len=256, checkpoint_every=10**6), **over})
        per_step = cfg.batch_size * cfg.seq_len
        windows = CalibrationPool.from_windows(pool.windows).with_seq_len(cfg.seq_len).windows
        if cached:  # two epochs over steps+1 batches; the second epoch's steps read the kept targets
            windows, total = windows[:cfg.batch_size * (args.steps + 1)], 2 * (args.steps + 1)
        else:  # every step on new windows: the teacher runs every step
            windows, total = windows.repeat(4, 1)[:cfg.batch_size * (args.steps + 1)], args.steps + 1
        stamps: list[float] = []
        res = recover(copy.deepcopy(pruned), lm.model, windows, RecoverConfig(**{**cfg.to_dict(), "max_tokens": per_step * total}),
                      progress=lambda d, t, note: stamps.append(time.perf_counter()))
        secs = stamps[-1] - stamps[-args.steps - 1]  # the last `steps` steps (warm-up step excluded)
        rows.append({"row": name, "tokens_per_s": round(per_step * args.steps / secs, 1), "steps": args.steps,
                     "bf16": res.bf16, "trainable_params": res.trainable_params, "config": cfg.to_dict()})
        print(f"{name:48s} {rows[-1]['tokens_per_s']:7.1f} tok/s  ({res.trainable_params / 1e6:.1f}M trainable)", flush=True)
        OUT.write_text(json.dumps({"host": f"{torch.get_num_threads()} threads, "
                                           f"bf16 kernels {torch.ops.mkldnn._is_mkldnn_bf16_supported()}",
                                   "command": "python3 bench/recovery_speed.py " + " ".join(sys.argv[1:]),
                                   "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
