"""Peak RSS of the main job (`build`) per stage: which stage sets the figure `/usr/bin/time -v` reports.

Runs `build` in this process with the CLI's defaults and a sampler thread. Per stage:
- main_peak: this process's exact peak inside the stage (Linux: VmHWM is reset at the stage's start by
  writing 5 to /proc/self/clear_refs, read at its end);
- steps: the largest sampled main-process RSS per progress note (every 0.1 s), to see which step of a
  stage sets its peak;
- child_peak: the largest VmHWM of any child process (llama-quantize, runtime-RAM and latency workers)
  seen while it ran; tree_peak: the largest sampled sum main RSS + children RSS.

What `/usr/bin/time -v` reports as "Maximum resident set size" is the max over the single processes of
the tree (wait4's ru_maxrss), not their sum; a child started with subprocess also inherits its parent's
RSS at the exec into that figure, so it is at least the main process's RSS at that moment. The main
process's own peak is therefore the number to reduce. (Because VmHWM is reset per stage, the report's
build_peak_rss_bytes of a run made by this script is the report stage's only.)

    nice -n 10 python3 bench/build_memory.py [--device raspberry-pi-5] [--out /tmp/build_memory]
                                             [--tag after] [--model default]
Writes bench/results/build_memory[_<tag>].json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
MiB = 2**20


def _status_kib(pid: int | str, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:  # the child ended between listing and reading
        pass
    return 0


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class Sampler:
    """Polls this process and its children; attributes figures to the current stage and step."""

    def __init__(self, interval_s: float = 0.1) -> None:
        self.interval_s, self.stage, self.step = interval_s, "start", ""
        self.stages: dict[str, dict] = {}
        self.me = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def row(self, stage: str) -> dict:
        return self.stages.setdefault(stage, {"main_peak": 0, "child_peak": 0, "child": "", "tree_peak": 0,
                                              "seconds": 0.0, "steps": {}})

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            main = _status_kib("self", "VmRSS") * 1024
            kids = self.me.children(recursive=True)
            rss = {k.pid: _status_kib(k.pid, "VmRSS") * 1024 for k in kids}
            r = self.row(self.stage)
            r["tree_peak"] = max(r["tree_peak"], main + sum(rss.values()))
            key = self.step or "-"
            r["steps"][key] = max(r["steps"].get(key, 0), main)
            for k in kids:
                hwm = _status_kib(k.pid, "VmHWM") * 1024
                if hwm > r["child_peak"]:
                    try:
                        r["child_peak"], r["child"] = hwm, " ".join(k.cmdline()[:4])[-80:]
                    except psutil.Error:
                        r["child_peak"] = hwm

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def hooks(sampler: Sampler):
    from adaprune_edge.pipeline.build import Hooks

    t0 = {}

    def stage(name: str, status: str) -> None:
        if status == "running":
            _reset_hwm()
            sampler.stage, sampler.step, t0[name] = name, "", time.perf_counter()
            print(f"{name}: running", flush=True)
        elif name in t0:
            r = sampler.row(name)
            r["main_peak"] = _status_kib("self", "VmHWM") * 1024
            r["seconds"] = round(time.perf_counter() - t0[name], 1)
            print(f"{name}: {status}; main peak {r['main_peak'] / MiB:.0f} MiB", flush=True)

    def progress(stage_name: str, done: int, total: int, note: str) -> None:
        sampler.step = f"{stage_name}: {note}"

    return Hooks(stage=stage, progress=progress)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="raspberry-pi-5")
    ap.add_argument("--model", default="default")
    ap.add_argument("--out", default="/tmp/build_memory")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()

    from adaprune_edge.pipeline.build import BuildSpec, run_build
    from adaprune_edge.device import Device

    if not _reset_hwm():
        sys.exit("needs Linux /proc/self/clear_refs to reset the peak RSS per stage")
    sampler = Sampler()
    sampler.start()
    t0 = time.perf_counter()
    rep = run_build(BuildSpec(device=args.device, model=args.model), Path(args.out), force=True,
                    hooks=hooks(sampler), device=Device.resolve(args.device))
    sampler.stop()
    children_maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    stages = {k: v for k, v in sampler.stages.items() if k != "start"}
    out = {"device": args.device, "model": args.model, "quant": rep["quant"], "report_ppl": rep["pruned"]["ppl"],
           "seconds": round(time.perf_counter() - t0, 1),
           "main_peak_bytes": max(v["main_peak"] for v in stages.values()),
           "child_peak_bytes": max(v["child_peak"] for v in stages.values()),
           "tree_peak_bytes": max(v["tree_peak"] for v in stages.values()),
           "rusage_children_maxrss_bytes": children_maxrss, "stages": stages}
    path = ROOT / "bench" / "results" / f"build_memory{'_' + args.tag if args.tag else ''}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\n{'stage':<11}{'s':>7}{'main MiB':>10}{'tree MiB':>10}{'child MiB':>10}  largest step (sampled main MiB)")
    for name, r in stages.items():
        top = max(r["steps"].items(), key=lambda kv: kv[1], default=("-", 0))
        print(f"{name:<11}{r['seconds']:>7.0f}{r['main_peak'] / MiB:>10.0f}{r['tree_peak'] / MiB:>10.0f}"
              f"{r['child_peak'] / MiB:>10.0f}  {top[0]} ({top[1] / MiB:.0f})")
    print(f"main process peak {out['main_peak_bytes'] / MiB:.0f} MiB; largest child {out['child_peak_bytes'] / MiB:.0f} MiB "
          f"(rusage children, with the exec quirk: {children_maxrss / MiB:.0f} MiB); quant {out['quant']}, "
          f"report PPL {out['report_ppl']:.4f}; wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
