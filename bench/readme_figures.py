"""Regenerate every figure the README shows, from today's code.

Each job is the bench entry point the README names beside its figures, with the result files it writes under
bench/results/. The main job is run as a user runs it (`adaprune-edge build --device raspberry-pi-5`, timed by
`/usr/bin/time -v`); its report.json becomes main_job_raspberry-pi-5.json and its tradeoff.png the README's
docs/tradeoff-raspberry-pi-5.png. After the jobs, the README's generated blocks (between `<!-- figures:NAME -->`
and `<!-- /figures:NAME -->`) are rendered again from the JSON, and tests/test_readme_numbers.py checks every
figure outside them against its key. Every job's command, wall time and exit code go to
bench/results/readme_figures.json.

    python3 bench/readme_figures.py --list                # the jobs, slow ones marked, last measured wall time
    python3 bench/readme_figures.py --quick               # every job not marked slow, then render and check
    python3 bench/readme_figures.py                       # every job (the slow ones take hours each)
    python3 bench/readme_figures.py --only main-job,budgets [--resume] [--dry-run]
    python3 bench/readme_figures.py --render              # only re-render the README blocks from the JSON
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "bench" / "work" / "readme_figures"
LOG = RESULTS / "readme_figures.json"
MAIN_JOB = "adaprune-edge build --device raspberry-pi-5"
PY = "python3"


@dataclass(frozen=True)
class Job:
    name: str
    commands: tuple[str, ...]  # shell commands, run from the project root in order
    outputs: tuple[str, ...]  # result files (under bench/results/ unless a path)
    slow: bool = False  # skipped by --quick
    why_slow: str = ""
    quick_only: bool = False  # --quick's stand-in for a slow job (the full run does the real one)


# builds the README quotes: name -> (adaprune-edge build arguments, result file, plot copied into docs/ or "")
BUILDS = {
    "main-job": ("--device raspberry-pi-5", "main_job_raspberry-pi-5.json", "tradeoff-raspberry-pi-5.png"),
    "build-this-host": ("--device this-host", "build_this-host.json", ""),
    "build-this-host-ttft": ("--device this-host --ttft-s 2.5 --prompt-tokens 1024 --trials 8 --recover-minutes 5",
                             "build_this-host_ttft2.5s_1024.json", ""),
    "build-this-host-8k": ("--device this-host --context 8192 --ram-mb 400", "build_this-host_8k_400mib.json", ""),
}


def _build(name: str, slow: bool) -> Job:
    args, out, plot = BUILDS[name]
    return Job(name, (f"{PY} bench/readme_figures.py --build {name}",), (out,) + ((f"../../docs/{plot}",) if plot else ()),
               slow, "a full build on this host (measured latency)" if slow else "")


JOBS: tuple[Job, ...] = (
    _build("main-job", slow=False),
    Job("shipped-vs-q4_0", (f"{PY} bench/shipped_vs_q4_0.py {WORK / 'main-job'}",), ("shipped_vs_q4_0.json",)),
    _build("build-this-host", slow=True),
    _build("build-this-host-ttft", slow=True),
    _build("build-this-host-8k", slow=True),
    Job("budgets", (f"{PY} bench/budgets.py --build-report bench/results/build_this-host.json --build-report "
                    "bench/results/build_this-host_ttft2.5s_1024.json --build-report bench/results/build_this-host_8k_400mib.json",),
        ("budgets.json",)),
    Job("kv-cache", (f"{PY} bench/kv_cache.py --gguf {WORK / 'build-this-host-8k'}/dense-Q8_0_imatrix.gguf --recipe Q8_0:imatrix",),
        ("kv_cache.json",), True, "measures three 8192-token contexts on build-this-host-8k's dense Q8_0 file"),
    Job("kv-cache-repredict", (f"{PY} bench/kv_cache.py --repredict",), ("kv_cache.json",), quick_only=True),
    Job("imatrix", (f"{PY} bench/imatrix.py IQ4_XS Q3_K_M Q2_K IQ4_NL Q4_0 Q4_K_M",), ("imatrix.json",)),
    Job("recovery-speed", (f"{PY} bench/recovery_speed.py",), ("recovery_speed.json",), True,
        "its best row is recover/estimate.CPU_TOKENS_PER_S: a re-run moves the plan's constant, so run it on an idle host"),
    Job("archs", (f"{PY} bench/archs.py",), ("archs.json",)),
    Job("latency-predictor", (f"{PY} bench/latency_predictor.py --n-gen 128",), ("latency_predictor.json",)),
    Job("latency-types", (f"{PY} bench/latency_predictor.py --quants Q4_K_M=6,Q8_0=6,Q4_0=6 --n-prompt 128 --n-gen 64 "
                          "--out bench/results/latency_types.json",), ("latency_types.json",)),
    Job("prune-quality", (f"{PY} bench/prune_quality.py --ratios 0.2 --head-units query",), ("prune_quality.json",), True,
        "a 16x512 evaluation per row, 20+ rows"),
    Job("sequential-obs", (f"{PY} bench/sequential_obs.py",), ("sequential_obs.json",), True, "8 prunes, 2 with OBS"),
    Job("calibration", (f"{PY} bench/calibration.py --n-samples 16 --eval-windows 4 --limit 40",), ("calibration.json",),
        True, "9 prunes with zero-shot evaluation"),
    Job("scale", (f"{PY} bench/scale.py --cases llama-3.2-1b,default,smollm2-360m,qwen2.5-0.5b --n-samples 16 "
                  "--n-samples-1b 4 --threads 2",), ("scale.json",), True, "a 1.24B-parameter model pruned with OBS"),
    Job("recovery", (f"{PY} bench/recovery.py --ratios 0.253,0.44 --sources self,wiki1",), ("recovery.json",), True,
        "up to 200k distillation tokens per row at ~136 tokens/s"),
    Job("quant-vs-prune-front", (f"{PY} bench/quant_vs_prune.py --front --fractions 0.9,0.75,0.6,0.45 --recover-tokens 50000",),
        ("quant_vs_prune_front.json", "quant_vs_prune_front.png"), True, "prune + 50k-token recovery per budget"),
    Job("quant-alloc", (f"{PY} bench/quant_alloc.py",), ("quant_alloc.json",), True, "a sensitivity pass, allocations at 4 budgets, 8x512 scoring each"),
    Job("search-headline", (f"{PY} bench/search_vs_fixed.py --targets 0.2,0.35 --seeds 0,1,2 --trials 20 --walltime 600 "
                            "--measure --out bench/results/search_vs_fixed_fair32r.json",),
        ("search_vs_fixed_fair32r.json",), True, "2 targets x 3 seeds: 8 fixed recipes and a 600 s search each"),
    Job("search-hyperband", (f"{PY} bench/search_vs_fixed.py --targets 0.2 --seeds 0 --trials 100 --walltime 600 "
                             "--facade hyperband --measure-missing --out bench/results/search_vs_fixed_hyperband.json",),
        ("search_vs_fixed_hyperband.json",), True, "a 600 s search plus its measurements"),
    Job("search-cost", (f"{PY} bench/search_cost.py --targets 0.2,0.35 --seeds 0,1,2",), ("search_cost.json",), True,
        "2 targets x 3 seeds: 3 fixed recipes and a search each, timed alone"),
    Job("search-cost-recovery", (f"{PY} bench/search_cost.py --targets 0.35 --seeds 0,1,2 --recovery-closure 0.3429 "
                                 "--fixed-from bench/results/search_cost.json --out bench/results/search_cost_recovery.json",),
        ("search_cost_recovery.json",), True, "3 searches with the recovery estimate in the cost"),
)


@dataclass
class Log:
    """bench/results/readme_figures.json: the last run of every job."""

    jobs: dict = field(default_factory=dict)

    @classmethod
    def load(cls) -> "Log":
        return cls(json.loads(LOG.read_text())["jobs"]) if LOG.is_file() else cls()

    def record(self, job: Job, seconds: float, rc: int, commit: str) -> None:
        self.jobs[job.name] = {"commands": list(job.commands), "outputs": list(job.outputs), "seconds": round(seconds, 1),
                               "rc": rc, "commit": commit, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        tmp = LOG.with_suffix(".tmp")
        tmp.write_text(json.dumps({"jobs": self.jobs}, indent=1) + "\n")
        tmp.replace(LOG)


def _commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def run_job(job: Job, log: Log, dry_run: bool) -> int:
    print(f"== {job.name}", flush=True)
    t0, rc = time.perf_counter(), 0
    for cmd in job.commands:
        print(f"$ {cmd}", flush=True)
        if not dry_run:
            rc = subprocess.run(cmd, shell=True, cwd=ROOT).returncode
            if rc:
                break
    if not dry_run:
        seconds = time.perf_counter() - t0
        log.record(job, seconds, rc, _commit())
        print(f"== {job.name}: exit {rc} after {seconds / 60:.1f} min", flush=True)
    return rc


def _time_v(path: Path) -> dict:
    """Wall seconds and maximum RSS from `/usr/bin/time -v`'s output."""
    text = path.read_text()
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    clock = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text).group(1)
    wall = sum(float(p) * 60**i for i, p in enumerate(reversed(clock.split(":"))))
    return {"wall_s": round(wall, 1), "max_rss_kib": rss}


def build(name: str) -> None:
    """One README build as a user runs it, timed by `/usr/bin/time -v`; its report (and plot) become the README's."""
    args, out, plot = BUILDS[name]
    run, timing = WORK / name, WORK / f"{name}.time"
    WORK.mkdir(parents=True, exist_ok=True)
    command = f"adaprune-edge build {args}"
    rc = subprocess.run(["/usr/bin/time", "-v", "-o", str(timing), *command.split(), "--out", str(run), "--force"],
                        cwd=ROOT).returncode
    if rc:
        sys.exit(rc)
    rep = json.loads((run / "report.json").read_text())
    rep["readme_run"] = {"command": command, "commit": _commit(), **_time_v(timing)}
    tmp = RESULTS / f"{out}.tmp"
    tmp.write_text(json.dumps(rep, indent=1) + "\n")
    tmp.replace(RESULTS / out)
    if plot:
        shutil.copyfile(run / "tradeoff.png", ROOT / "docs" / plot)


def _selected(args) -> list[Job]:
    names = {j.name for j in JOBS}
    only = [n for n in args.only.split(",") if n] if args.only else []
    if unknown := [n for n in only if n not in names]:
        sys.exit(f"unknown job(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    if only:
        return [j for j in JOBS if j.name in only]
    return [j for j in JOBS if (not j.slow if args.quick else not j.quick_only)]


def _list(log: Log) -> None:
    for j in JOBS:
        last = log.jobs.get(j.name)
        when = f"{last['seconds'] / 60:.1f} min (exit {last['rc']}, {last['commit']})" if last else "not run by this script yet"
        print(f"{j.name:<22} {'slow' if j.slow else 'quick':<6} {when:<38} {', '.join(j.outputs)}"
              + (f"  [{j.why_slow}]" if j.why_slow else ""))


def check() -> int:
    """The README's figures against their JSON (tests/test_readme_numbers.py)."""
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_readme_numbers.py"],
                          cwd=ROOT).returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="skip the jobs marked slow (see --list)")
    ap.add_argument("--only", default="", help="comma-separated job names")
    ap.add_argument("--resume", action="store_true", help="skip jobs that finished (exit 0) at this commit")
    ap.add_argument("--list", action="store_true", help="list the jobs and their last measured wall time")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    ap.add_argument("--render", action="store_true", help="only re-render the README's blocks and check them")
    ap.add_argument("--build", choices=sorted(BUILDS), help="run one of the README's builds (a job's own step)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))
    from readme_blocks import render_readme

    log = Log.load()
    if args.build:
        return build(args.build)
    if args.list:
        return _list(log)
    if not args.render:
        commit, t0 = _commit(), time.perf_counter()
        for job in _selected(args):
            last = log.jobs.get(job.name, {})
            if args.resume and last.get("rc") == 0 and last.get("commit") == commit:
                print(f"== {job.name}: done at {commit}, skipped (--resume)")
                continue
            if run_job(job, log, args.dry_run):
                sys.exit(f"{job.name} failed; fix it and re-run with --resume")
        print(f"jobs done in {(time.perf_counter() - t0) / 60:.1f} min")
        if args.dry_run:
            return
    changed = render_readme(ROOT / "README.md")
    print("README blocks re-rendered: " + (", ".join(changed) if changed else "none changed"))
    sys.exit(check())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
