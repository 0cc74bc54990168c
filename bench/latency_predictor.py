"""How good is the roofline latency predictor on this host?

Measures 12 shapes of the default model (uniform, tapered and layer-dropped; ratios 0–0.7) at Q4_K_M and
Q8_0 on shape-only GGUFs with the local backend (llama-cpp-python, median of 3 runs), fits the predictor
on every other measurement and reports its decode error on the held-out half (target: median ≤ 10%,
max ≤ 20%), plus the measured decode speed-up vs dense next to the bytes ratio (the roofline limit).

    python3 bench/latency_predictor.py [--quants Q4_K_M=12,Q8_0=12] [--cached] [--threads 2] [--n-prompt 64] [--n-gen 32] [--out bench/results/latency_predictor.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

from adaprune_edge import models
from adaprune_edge.device import Device
from adaprune_edge.latency import profiling
from adaprune_edge.runs import write_json
from adaprune_edge.archs.structure import Structure
from adaprune_edge.quant import QuantRecipe

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quants", default="Q4_K_M=12,Q8_0=12", help="quant=number of shapes, comma-separated")
    ap.add_argument("--cached", action="store_true",
                    help="reuse measurements already in the this-host lookup table (e.g. after an interrupted run)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-prompt", type=int, default=64, help="prompt tokens (prefill figure)")
    ap.add_argument("--n-gen", type=int, default=32, help="decoded tokens per repetition")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "latency_predictor.json"))
    a = ap.parse_args()
    base = Structure.from_model(models.load("default").model)
    settings = Device.resolve("this-host", backend="local", threads=a.threads, n_prompt=a.n_prompt,
                              n_gen=a.n_gen).settings
    load0 = os.getloadavg()[0]
    t0 = time.time()
    probes = []
    for item in a.quants.split(","):
        name, n = item.split("=")
        q = QuantRecipe.parse(name)
        shapes = profiling.probe_structures(base, q, int(n))
        probes += profiling.measure_probes(shapes, [q], settings, "this-host", use_cache=a.cached,
                                           progress=lambda label: print(f"  measured {label}", flush=True))
    result = profiling.split_fit(probes)
    rows = _rows(probes, result)
    _print(rows, result, probes, load0, time.time() - t0)
    write_json(Path(a.out), {"host": platform.node(), "cpu_count": os.cpu_count(), "threads": a.threads,
                             "loadavg_before": load0, "loadavg_after": os.getloadavg()[0],
                             "settings": settings.to_dict(), "fit": {**result.roofline.__dict__, **result.summary(),
                                                                     "prefill_median_rel_error": statistics.median(result.prefill_test_errors)},
                             "rows": rows, "probes": [p.to_dict() for p in probes]})
    print(f"wrote {a.out}")


def _rows(probes, result) -> list[dict]:
    import dataclasses

    rf, rows = result.roofline, []
    one = dataclasses.replace(rf, type_rates=())  # one compute rate for every file type (before per-type rates)
    dense = {p.quant: p for p in probes if p.label == "uniform 0.0"}
    for i, p in enumerate(probes):
        r, d = p.report, dense[p.quant]
        pred = rf.decode_ms(p.workload, r.n_prompt + r.n_gen / 2)
        rows.append({"shape": p.label, "quant": p.quant.name, "set": "fit" if i % 2 == 0 else "held-out",
                     "n_layer": p.structure.n_layer, "decode_mb": p.workload.decode_bytes / 1e6,
                     "measured_ms": r.decode_ms_per_token, "spread_ms": r.decode_ms_spread, "predicted_ms": pred,
                     "error": (pred - r.decode_ms_per_token) / r.decode_ms_per_token,
                     "speedup": d.report.decode_ms_per_token / r.decode_ms_per_token,
                     "bytes_ratio": d.workload.decode_bytes / p.workload.decode_bytes,
                     "prefill_tps": r.prefill_tps, "peak_rss_mb": (r.peak_rss_bytes or 0) / 2**20,
                     "predicted_prefill_tps": rf.prefill_tps(p.workload, r.n_prompt),
                     "prefill_error": rf.prefill_tps(p.workload, r.n_prompt) / r.prefill_tps - 1,
                     "error_one_rate": one.decode_ms(p.workload, r.n_prompt + r.n_gen / 2) / r.decode_ms_per_token - 1,
                     "prefill_error_one_rate": one.prefill_tps(p.workload, r.n_prompt) / r.prefill_tps - 1})
    return rows


def _print(rows, result, probes, load0, secs) -> None:
    print(f"\n| shape | quant | set | layers | MB/token | measured ms/token | predicted | error | speed-up vs dense | bytes ratio | prompt tok/s | predicted | error |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['shape']} | {r['quant']} | {r['set']} | {r['n_layer']} | {r['decode_mb']:.1f} | "
              f"{r['measured_ms']:.2f} ± {r['spread_ms'] / 2:.2f} | {r['predicted_ms']:.2f} | {100 * r['error']:+.1f}% | "
              f"{r['speedup']:.2f}x | {r['bytes_ratio']:.2f}x | {r['prefill_tps']:.0f} | {r['predicted_prefill_tps']:.0f} | "
              f"{100 * r['prefill_error']:+.1f}% |")
    held = [r for r in rows if r["set"] == "held-out"]
    for key, one, what in (("error", "error_one_rate", "decode"), ("prefill_error", "prefill_error_one_rate", "prompt")):
        print(f"held-out {what} |error|: max {100 * max(abs(r[key]) for r in held):.1f}% with per-type rates, "
              f"{100 * max(abs(r[one]) for r in held):.1f}% with one rate for every type")
    rf, s = result.roofline, result.summary()
    print(f"\nfit: bandwidth {rf.mem_bandwidth_gbs:.2f} GB/s, per-layer {rf.overhead_ms_per_layer:.4f} ms, per-token "
          f"{rf.overhead_ms_per_token:.3f} ms, decode compute {rf.decode_gflops:.1f} GFLOP/s, prefill compute {rf.compute_gflops:.1f} GFLOP/s")
    print(f"held-out decode error: median {100 * s['median_rel_error']:.1f}%, max {100 * s['max_rel_error']:.1f}% "
          f"({len(result.test_errors)} shapes); prefill median {100 * statistics.median(result.prefill_test_errors):.1f}%")
    print(f"{len(probes)} measurements in {secs:.0f} s; load average before {load0:.2f}, after {os.getloadavg()[0]:.2f} "
          f"(2 cores shared with other engineers)")


if __name__ == "__main__":
    main()
