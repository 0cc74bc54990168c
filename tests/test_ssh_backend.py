"""The ssh latency backend against a real sshd on 127.0.0.1 started by the test.

No real llama-bench exists on this machine, so the "device" gets a small fake `llama-bench` that emits
llama-bench's real `-o json` schema (fields from llama.cpp tools/llama-bench README: n_prompt, n_gen,
avg_ts, stddev_ts, samples_ts, ...) with known numbers and records its arguments. That is a genuine test
of our side: key-based ssh, scp of the GGUF, quoting of the remote command, JSON parsing, exit-code
handling and cleanup of the remote copy. Skipped (with the reason) only where sshd cannot start."""

from __future__ import annotations

import getpass
import glob
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from adaprune_edge.latency import backends as latency
from adaprune_edge.errors import LatencyError
from adaprune_edge.latency.ssh import SshTarget

FAKE_BENCH = r'''#!/usr/bin/env python3
import json, os, sys
a = sys.argv[1:]
opt = {a[i]: a[i + 1] for i in range(0, len(a) - 1, 2)}
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "args.json"), "w") as f:
    json.dump(a, f)
model = opt["-m"]
if not os.path.isfile(model):
    print("error: failed to load model " + model, file=sys.stderr); sys.exit(1)
base = {"build_commit": "fake", "build_number": 0, "cpu_info": "loopback", "gpu_info": "", "backends": "CPU",
        "model_filename": model, "model_type": "llama ?B Q4_K - Medium", "model_size": os.path.getsize(model),
        "model_n_params": 0, "n_batch": 2048, "n_ubatch": 512, "n_threads": int(opt["-t"]), "type_k": "f16",
        "type_v": "f16", "n_gpu_layers": 0, "use_mmap": True, "n_depth": 0, "test_time": "2026-11-25T00:00:00Z"}
reps = int(opt["-r"])
pp = [400.0, 410.0, 390.0][:reps]
tg = [100.0, 125.0, 80.0][:reps]
out = []
for n_p, n_g, s in ((int(opt["-p"]), 0, pp), (0, int(opt["-n"]), tg)):
    avg = sum(s) / len(s)
    out.append(dict(base, n_prompt=n_p, n_gen=n_g, avg_ts=avg, stddev_ts=0.0, avg_ns=int(1e9 / avg),
                    stddev_ns=0, samples_ts=s, samples_ns=[int(1e9 / x) for x in s]))
print(json.dumps(out, indent=2))
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, seconds: float = 10.0) -> bool:
    end = time.time() + seconds
    while time.time() < end and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    """An sshd on 127.0.0.1:<free port> with a key-only login, and an ssh config alias `bench-device`."""
    sshd = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
    if not sshd or not shutil.which("ssh-keygen"):
        pytest.skip("openssh-server is not installed (apt-get install -y openssh-server)")
    d = tmp_path_factory.mktemp("sshd")
    os.chmod(d, 0o700)
    _keygen(d / "host_key")
    _keygen(d / "client_key")
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    port = _free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        f"PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\nStrictModes no\n"
        f"UsePAM no\nPidFile {d / 'sshd.pid'}\nSubsystem sftp internal-sftp\n")  # scp speaks SFTP
    try:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    except OSError:
        pass
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.PIPE, text=True)
    if not _wait_port(port, proc):
        proc.kill()
        err = proc.stderr.read().strip().splitlines() if proc.stderr else []
        pytest.skip(f"sshd could not start on 127.0.0.1: {err[-1] if err else 'no output'}")
    cfg = d / "ssh_config"
    cfg.write_text(f"Host bench-device\n  HostName 127.0.0.1\n  Port {port}\n  User {getpass.getuser()}\n"
                   f"  IdentityFile {d / 'client_key'}\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n"
                   f"  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n")
    bench_dir = d / "llama.cpp bin"  # a space in the path: the remote command must be quoted
    bench_dir.mkdir()
    (bench_dir / "llama-bench").write_text(FAKE_BENCH)
    (bench_dir / "llama-bench").chmod(0o755)
    yield {"config": str(cfg), "bench": str(bench_dir / "llama-bench"), "dir": bench_dir, "port": port}
    proc.terminate()
    proc.wait(timeout=10)


def _settings(device, **kw) -> latency.BenchSettings:
    base = dict(backend="ssh", ssh_host=f"{getpass.getuser()}@bench-device", ssh_config=device["config"],
                llama_bench=device["bench"], threads=4, n_prompt=96, n_gen=48, repetitions=3, connect_timeout_s=5,
                timeout_s=60)
    base.update(kw)
    return latency.BenchSettings(**base)


def _probe(path, n_bytes: int):
    """A well-formed GGUF of about n_bytes random data (latency.measure checks the header first)."""
    import gguf as gguf_py
    import numpy as np

    w = gguf_py.GGUFWriter(str(path), arch="llama")
    w.add_tensor("probe", np.frombuffer(os.urandom(n_bytes), dtype=np.float32).copy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_ssh_backend_returns_report(device, tmp_path):
    gguf = _probe(tmp_path / "probe.gguf", 3 << 20)  # the fake bench only checks it arrived whole
    before = set(glob.glob("/tmp/adaprune-edge.*"))
    rep = latency.measure(gguf, _settings(device))
    assert rep.backend == "ssh" and rep.measured and rep.tool == "llama-bench"
    assert rep.prefill_tps == pytest.approx(400.0)  # median of 400, 410, 390
    assert rep.decode_ms_per_token == pytest.approx(10.0)  # median of 1000/[100, 125, 80] ms
    assert rep.decode_ms_spread == pytest.approx(12.5 - 8.0)
    assert (rep.n_prompt, rep.n_gen, rep.threads, rep.repetitions) == (96, 48, 4, 3)
    args = json.loads((device["dir"] / "args.json").read_text())
    assert args[args.index("-o") + 1] == "json" and args[args.index("-t") + 1] == "4"
    remote_model = args[args.index("-m") + 1]
    assert remote_model.startswith("/tmp/adaprune-edge.") and not os.path.exists(remote_model)  # cleaned up
    assert set(glob.glob("/tmp/adaprune-edge.*")) == before


def test_ssh_missing_llama_bench_is_clear(device, tmp_path):
    gguf = _probe(tmp_path / "probe.gguf", 1024)
    with pytest.raises(LatencyError, match="llama-bench not found.*/opt/none/llama-bench"):
        latency.measure(gguf, _settings(device, llama_bench="/opt/none/llama-bench"))


def test_ssh_unreachable_host_is_clear(device, tmp_path):
    gguf = _probe(tmp_path / "probe.gguf", 1024)
    closed = _free_port()
    t0 = time.time()
    with pytest.raises(LatencyError, match="cannot reach ssh host"):
        latency.measure(gguf, _settings(device, ssh_host=f"nobody@127.0.0.1:{closed}", ssh_config=None,
                                        connect_timeout_s=3))
    assert time.time() - t0 < 30


def test_ssh_host_spec_and_quoting():
    with pytest.raises(LatencyError, match="not of the form"):
        SshTarget.parse("pi@host; rm -rf ~")
    with pytest.raises(LatencyError, match="not of the form"):
        SshTarget.parse("-oProxyCommand=evil")
    t = SshTarget.parse("pi@raspberrypi.local:2222")
    assert (t.host, t.port) == ("pi@raspberrypi.local", 2222)
    argv = t.ssh_argv(["/opt/llama cpp/llama-bench", "-m", "/tmp/x y.gguf"])
    assert argv[-1] == "'/opt/llama cpp/llama-bench' -m '/tmp/x y.gguf'" and argv[-2] == "--"
    assert argv[argv.index("-p") + 1] == "2222"
    assert t.scp_argv(Path("/a.gguf"), "/tmp/b")[-1] == "pi@raspberrypi.local:/tmp/b"
