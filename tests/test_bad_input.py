"""Every bad input a new user can give is one line on the terminal and exit code 2: no traceback, the
message names the problem and the fix, and no output is left half-written (issue 15's matrix)."""

from __future__ import annotations

import errno
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from typer.testing import CliRunner

from adaprune_edge.cli.app import app

runner = CliRunner()
ENV = {"COLUMNS": "400"}  # one line must stay one line, whatever the terminal width


@dataclass
class Inputs:
    """What the cases build their bad inputs from (tiny models, so each case takes ~a second)."""

    tmp: Path
    tiny: Path   # HF folder (tiny random Llama with the real SmolLM2 tokenizer)
    pruned: Path  # folder written by pruning.save_pruned
    gguf: Path   # F16 GGUF of the tiny model

    def file(self, name: str, content: str | bytes) -> str:
        p = self.tmp / name
        p.write_bytes(content.encode() if isinstance(content, str) else content)
        return str(p)

    def copy_dir(self, src: Path, name: str, drop: tuple[str, ...] = ()) -> str:
        dst = self.tmp / name
        shutil.copytree(src, dst)
        for n in drop:
            (dst / n).unlink()
        return str(dst)


@pytest.fixture(scope="module")
def base_inputs(tmp_path_factory):
    from conftest import save_tiny_model

    from adaprune_edge import models
    from adaprune_edge.archs import slicing as pruning

    root = tmp_path_factory.mktemp("bad")
    tiny = save_tiny_model(root / "tiny", hidden=64, heads=4, kv_heads=2, ffn=128, layers=2)
    lm = models.load(str(tiny))
    pruned = pruning.save_pruned(lm.model, lm.tokenizer, root / "pruned")
    gguf = root / "tiny.gguf"
    r = runner.invoke(app, ["export", "--model", str(tiny), "--out", str(gguf), "--quant", "F16"], env=ENV)
    assert r.exit_code == 0, r.output
    return tiny, pruned, gguf


@pytest.fixture
def inputs(base_inputs, tmp_path) -> Inputs:
    return Inputs(tmp_path, *base_inputs)


def _profile(body: str) -> Callable[[Inputs], list[str]]:
    return lambda i: ["devices", "validate", i.file("dev.yaml", body)]


def _half_gguf(i: Inputs) -> list[str]:
    data = i.gguf.read_bytes()
    return ["inspect", "--model", i.file("cut.gguf", data[: len(data) // 2])]


def _resume_state(state: object) -> Callable[[Inputs], list[str]]:
    def make(i: Inputs) -> list[str]:
        run = i.tmp / "run"
        run.mkdir()
        (run / "state.json").write_text(json.dumps(state))
        return ["build", "--device", "raspberry-pi-5", "--model", str(i.tiny), "--out", str(run), "--resume"]
    return make


def _other_run_state(i: Inputs) -> list[str]:
    from adaprune_edge.pipeline.build import BuildSpec

    spec = BuildSpec(device="raspberry-pi-5", model=str(i.tiny), trials=7)
    return _resume_state({"spec": spec.to_dict(), "done": {}})(i)


def _unreadable_state(i: Inputs) -> list[str]:
    """A state whose plan this version cannot read (a field it needs is missing)."""
    state = json.loads((Path(__file__).parent / "data" / "state-quant-only.json").read_text())
    del state["done"]["plan"]["mode"]
    return _resume_state(state)(i)


def _existing_out(i: Inputs) -> list[str]:
    (i.tmp / "run").mkdir()
    (i.tmp / "run" / "mine.txt").write_text("keep me")
    return ["build", "--device", "raspberry-pi-5", "--model", str(i.tiny), "--out", str(i.tmp / "run")]


def _build(*extra: str) -> Callable[[Inputs], list[str]]:
    return lambda i: ["build", "--device", "raspberry-pi-5", "--model", str(i.tiny), "--out", str(i.tmp / "run"), *extra]


PROFILE = "extends: raspberry-pi-5\n"
# (id, argv builder, substrings the one line must contain)
CASES: list[tuple[str, Callable[[Inputs], list[str]], tuple[str, ...]]] = [
    ("unknown-device", lambda i: ["devices", "show", "raspbery-pi-5"], ("did you mean 'raspberry-pi-5'",)),
    ("profile-empty-field", _profile(PROFILE + "ram_gb:\n"), ("line 2", "'ram_gb' is empty")),
    ("profile-wrong-type", _profile(PROFILE + "threads: four\n"), ("line 2", "'threads' must be int")),
    ("profile-not-utf8", _profile(PROFILE.encode() + b"notes: caf\xe9\n"), ("not UTF-8",)),
    ("profile-truncated", _profile(PROFILE + "budget:\n  decode_ms_per_token: [1"), ("line 3", "malformed YAML")),
    ("profile-cut-mid-key", _profile(PROFILE + "ram_gb: 8\nmem_band"), ("malformed YAML",)),
    ("profile-negative-budget", _profile(PROFILE + "budget:\n  decode_ms_per_token: -3\n"), ("'decode_ms_per_token' must be positive",)),
    ("profile-zero-budget", _profile(PROFILE + "budget:\n  prefill_tps: 0\n"), ("'prefill_tps' must be positive",)),
    ("profile-nan-budget", _profile(PROFILE + "budget:\n  decode_ms_per_token: .nan\n"), ("finite number",)),
    ("profile-inf-bandwidth", _profile(PROFILE + "mem_bandwidth_gbs: .inf\n"), ("'mem_bandwidth_gbs' must be a finite",)),
    ("budget-ms-negative", lambda i: ["fit", "--device", "raspberry-pi-5", "--model", str(i.tiny), "--budget-ms", "-1"],
     ("--budget-ms must be a positive number",)),
    ("budget-ms-zero", _build("--budget-ms", "0"), ("--budget-ms must be a positive number",)),
    ("budget-ms-nan", _build("--budget-ms", "nan"), ("--budget-ms must be a positive number",)),
    ("target-tps-negative", _build("--target-tps", "-5"), ("--target-tps must be a positive number",)),
    ("search-budget-nan", lambda i: ["search", "--device", "raspberry-pi-5", "--model", str(i.tiny), "--budget-ms", "nan",
                                     "--out", str(i.tmp / "run")], ("--budget-ms must be a positive number",)),
    ("unknown-quant", lambda i: ["export", "--model", str(i.tiny), "--out", str(i.tmp / "x.gguf"), "--quant", "Q4_K_N"],
     ("Q4_K_N", "did you mean")),
    ("gguf-missing", lambda i: ["inspect", "--model", str(i.tmp / "nope.gguf")], ("not found",)),
    ("gguf-corrupt", lambda i: ["inspect", "--model", i.file("junk.gguf", b"GGUF" + b"\xff" * 64)], ("not a readable GGUF",)),
    ("gguf-not-gguf", lambda i: ["inspect", "--model", i.file("text.gguf", "hello")], ("not a readable GGUF",)),
    ("gguf-truncated", _half_gguf, ("truncated", "re-export or re-download")),
    ("gguf-truncated-bench", lambda i: ["bench", "--device", "this-host", "--gguf", _half_gguf(i)[-1]], ("truncated",)),
    ("hf-no-weights", lambda i: ["inspect", "--model", i.copy_dir(i.tiny, "noweights", ("model.safetensors",))],
     ("has no weights",)),
    ("hf-broken-config", lambda i: ["inspect", "--model", _broken_config(i)], ("config.json is not valid JSON",)),
    ("pruned-no-config", lambda i: ["inspect", "--model", i.copy_dir(i.pruned, "p1", ("config.json",))],
     ("missing config.json",)),
    ("pruned-no-weights", lambda i: ["inspect", "--model", i.copy_dir(i.pruned, "p2", ("model.safetensors",))],
     ("missing model.safetensors",)),
    ("pruned-cut-weights", lambda i: ["inspect", "--model", _cut_weights(i)], ("cannot load pruned folder",)),
    ("resume-other-run", _other_run_state, ("different options", "trials")),
    ("resume-wrong-shape", _resume_state({"spec": [], "done": 3}), ("not the state of an adaprune-edge build",)),
    ("resume-search-json", _resume_state({"kind": "adaprune-edge/search-v1", "n_trials": 3}),
     ("not the state of an adaprune-edge build",)),
    ("resume-unreadable-stage", _unreadable_state, ("its plan stage cannot be read", "rerun with --force")),
    ("calib-empty", lambda i: ["prune", "--model", str(i.tiny), "--ratio", "0.2", "--calib", i.file("empty.txt", ""),
                               "--out", str(i.tmp / "p")], ("empty.txt is empty",)),
    ("calib-missing", lambda i: ["prune", "--model", str(i.tiny), "--ratio", "0.2", "--calib", str(i.tmp / "nope.txt"),
                                 "--out", str(i.tmp / "p")], ("not found",)),
    ("build-out-exists", _existing_out, ("exists", "--force")),
    # this wave's inputs: the pruning ratio, recovery, budgets, allocation files
    ("ratio-above-range", lambda i: ["prune", "--model", str(i.tiny), "--ratio", "1.5", "--out", str(i.tmp / "p")],
     ("ratio", "0.9", "1.5")),
    ("ratio-negative", lambda i: ["prune", "--model", str(i.tiny), "--ratio", "-0.2", "--out", str(i.tmp / "p")],
     ("ratio", "-0.2")),
    ("recover-no-bound", lambda i: ["recover", "--model", str(i.pruned), "--teacher", str(i.tiny), "--out", str(i.tmp / "r")],
     ("--tokens N", "--minutes M")),
    ("recover-text-missing", lambda i: ["recover", "--model", str(i.pruned), "--teacher", str(i.tiny), "--out",
                                        str(i.tmp / "r"), "--tokens", "64", "--text", str(i.tmp / "nope.txt")], ("not found",)),
    ("recover-text-range", lambda i: ["recover", "--model", str(i.pruned), "--teacher", str(i.tiny), "--out", str(i.tmp / "r"),
                                      "--tokens", "64", "--text", i.file("t.txt", "hello world\n" * 50), "--text-range", "0.6:0.2"],
     ("--text-range",)),
    ("build-recover-text-missing", _build("--recover-text", "/nonexistent/recovery.txt"), ("not found",)),
    ("budget-ttft-negative", _build("--ttft-s", "-1"), ("--ttft-s",)),
    ("budget-context-zero", _build("--context", "0"), ("--context",)),
    ("budget-ram-share-above-1", _build("--ram-share", "1.5"), ("--ram-share",)),
    ("budget-kv-unknown", _build("--kv-cache", "q3_0"), ("q3_0", "F16")),
    ("quant-file-missing", lambda i: ["export", "--model", str(i.tiny), "--out", str(i.tmp / "x.gguf"), "--quant-file",
                                      str(i.tmp / "nope.quant.json")], ("cannot read quant file", "nope.quant.json")),
    ("quant-file-corrupt", lambda i: ["export", "--model", str(i.tiny), "--out", str(i.tmp / "x.gguf"), "--quant-file",
                                      i.file("bad.quant.json", "{not json")], ("bad.quant.json",)),
    ("quant-file-other-model", lambda i: ["export", "--model", str(i.tiny), "--out", str(i.tmp / "x.gguf"), "--quant-file",
                                          _other_allocation(i)], ("blk.7",)),
    ("quant-unknown-allocation", lambda i: ["export", "--model", str(i.tiny), "--out", str(i.tmp / "x.gguf"), "--quant",
                                            "Q4_0:alloc=deadbeef"], ("deadbeef", "--quant-file")),
    ("quant-auto-without-device", lambda i: ["export", "--model", str(i.tiny), "--out", str(i.tmp / "x.gguf"), "--quant", "auto"],
     ("--device",)),
    ("export-out-exists", lambda i: ["export", "--model", str(i.tiny), "--out", i.file("old.gguf", "old"), "--quant", "F16"],
     ("exists", "--force")),
]


def _other_allocation(i: Inputs) -> str:
    """A valid allocation file for another model: it names a layer the 2-layer tiny model does not have."""
    from adaprune_edge.bitalloc import recipe_file
    from adaprune_edge.quant import QuantRecipe

    r = QuantRecipe.allocated({"blk.7.ffn_down.weight": "Q4_0", "token_embd.weight": "Q8_0"}, imatrix=False)
    return str(recipe_file.save(i.tmp / "other.quant.json", r))


def _broken_config(i: Inputs) -> str:
    d = i.copy_dir(i.tiny, "badcfg")
    (Path(d) / "config.json").write_text('{"model_type": "llama", "hidden_size": 64,')  # cut off mid-object
    return d


def _cut_weights(i: Inputs) -> str:
    d = Path(i.copy_dir(i.pruned, "p3"))
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    return str(d)


def _one_line(r) -> str:
    assert r.exit_code == 2, r.output
    text = r.output.strip()
    assert "Traceback" not in text, text
    assert len(text.splitlines()) == 1, text
    return text


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("make,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2(inputs, make, expected):
    argv = make(inputs)
    before = _snapshot(inputs.tmp)
    text = _one_line(runner.invoke(app, argv, env=ENV))
    assert text.startswith("error:"), text
    for s in expected:
        assert s in text, text
    # nothing created, nothing changed, no temp file left next to the outputs
    assert _snapshot(inputs.tmp) == before


def test_disk_full_during_export_leaves_nothing(inputs, monkeypatch):
    import gguf as gguf_pkg

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gguf_pkg.GGUFWriter, "write_tensor_data", full)
    out = inputs.tmp / "out"
    out.mkdir()
    for quant in ("F16", "Q8_0"):  # written directly / written as F16 then quantized by llama.cpp
        r = runner.invoke(app, ["export", "--model", str(inputs.tiny), "--out", str(out / "m.gguf"), "--quant", quant], env=ENV)
        text = _one_line(r)
        assert "No space left on device" in text and "free space" in text, text
        assert list(out.iterdir()) == [], "a partial or temp file was left"


def test_atomic_path_turns_disk_full_into_a_typed_error(inputs):
    """Library level: ENOSPC becomes OutputWriteError (one line in the CLI) and the temp file is gone."""
    from adaprune_edge.errors import OutputWriteError
    from adaprune_edge.runs import atomic_path

    with pytest.raises(OutputWriteError, match="No space left"):
        with atomic_path(inputs.tmp / "a.bin") as tmp:
            tmp.write_bytes(b"x")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list(inputs.tmp.glob("*a.bin*")) == []
    with pytest.raises(OSError) as e:  # a bug-shaped OSError is not disguised as a disk problem
        with atomic_path(inputs.tmp / "b.bin"):
            raise OSError(errno.EBADF, "Bad file descriptor")
    assert not isinstance(e.value, OutputWriteError)
    assert list(inputs.tmp.glob("*b.bin*")) == []


def test_force_replaces_a_corrupt_state(inputs):
    from adaprune_edge.pipeline.build import BuildSpec, RunDir
    from adaprune_edge.pipeline.state import BuildState

    run = inputs.tmp / "run"
    run.mkdir()
    (run / "state.json").write_text("{not json")
    state = RunDir(run).open(BuildSpec(device="raspberry-pi-5"), resume=False, force=True)
    assert state == BuildState() and json.loads((run / "state.json").read_text())["spec"]["device"] == "raspberry-pi-5"
