"""The `ssh` latency backend: copy a GGUF to a device with the system `scp`, run `llama-bench -o json` there,
parse it, and remove the copy.

Every command is an argument list (no local shell). The remote command line ssh hands to the remote
shell is built with shlex.join, so paths and binaries from profiles or users are quoted, never spliced."""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from adaprune_edge.latency import llama_bench
from adaprune_edge.errors import LatencyError
from adaprune_edge.latency.backends import BenchSettings, LatencyReport, register_backend

_HOST = re.compile(r"^(?:[A-Za-z0-9._-]+@)?[A-Za-z0-9][A-Za-z0-9._-]*(?::(\d{1,5}))?$")
REMOTE_TMP = "/tmp/adaprune-edge.XXXXXX"


@dataclass(frozen=True)
class SshTarget:
    """`user@host[:port]` plus how to talk to it (optional ssh config file, connect timeout in s)."""

    host: str
    port: int | None = None
    config: str | None = None
    connect_timeout_s: int = 10

    @classmethod
    def parse(cls, spec: str | None, config: str | None = None, connect_timeout_s: int = 10) -> "SshTarget":
        m = _HOST.match(spec or "")
        if not m:
            raise LatencyError(f"ssh host {spec!r} is not of the form user@host or user@host:port")
        host = spec.rsplit(":", 1)[0] if m.group(1) else spec
        return cls(host, int(m.group(1)) if m.group(1) else None, config, connect_timeout_s)

    def _options(self, port_flag: str) -> list[str]:
        opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout_s}"]
        if self.config:
            opts += ["-F", self.config]
        if self.port:
            opts += [port_flag, str(self.port)]
        return opts

    def ssh_argv(self, remote: list[str]) -> list[str]:
        return ["ssh", *self._options("-p"), self.host, "--", shlex.join(remote)]

    def scp_argv(self, local: Path, remote_path: str) -> list[str]:
        return ["scp", "-q", *self._options("-P"), str(local), f"{self.host}:{remote_path}"]


def _run(target: SshTarget, argv: list[str], timeout_s: float, what: str) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise LatencyError(f"ssh host {target.host}: {what} did not finish within {timeout_s:.0f} s") from None
    except FileNotFoundError:
        raise LatencyError(f"{argv[0]} is not installed on this machine (needed for the ssh backend)") from None
    if proc.returncode == 255:
        reason = (proc.stderr.strip().splitlines() or ["no answer"])[-1]
        raise LatencyError(f"cannot reach ssh host {target.host} ({reason})")
    return proc


def _bench(target: SshTarget, remote_gguf: str, s: BenchSettings) -> LatencyReport:
    proc = _run(target, target.ssh_argv(llama_bench.argv(s.llama_bench, remote_gguf, s)), s.timeout_s, "llama-bench")
    if proc.returncode in (126, 127):
        raise LatencyError(f"llama-bench not found or not executable on {target.host} at {s.llama_bench!r}; "
                           "install llama.cpp there or set llama_bench in the profile to its path")
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise LatencyError(f"llama-bench failed on {target.host} (exit code {proc.returncode}): {tail}")
    return llama_bench.parse(proc.stdout, "ssh", s)


@register_backend("ssh", measures=True, on_this_host=False, key_fields=lambda s: [s.ssh_host, s.llama_bench],
                  requires=("ssh_host",))
def measure_ssh(path: Path, settings: BenchSettings) -> LatencyReport:
    """Copy `path` to settings.ssh_host, run llama-bench there, delete the copy (also on failure)."""
    target = SshTarget.parse(settings.ssh_host, settings.ssh_config, settings.connect_timeout_s)
    timeout = settings.connect_timeout_s + 20
    made = _run(target, target.ssh_argv(["mktemp", "-d", REMOTE_TMP]), timeout, "mktemp")
    remote_dir = made.stdout.strip()
    if made.returncode != 0 or not remote_dir.startswith("/tmp/adaprune-edge."):
        raise LatencyError(f"cannot create a temp folder on {target.host}: {made.stderr.strip() or remote_dir}")
    try:
        remote_gguf = f"{remote_dir}/model.gguf"
        copied = _run(target, target.scp_argv(path, remote_gguf), settings.timeout_s, "copying the GGUF")
        if copied.returncode != 0:
            raise LatencyError(f"scp to {target.host} failed: {copied.stderr.strip()}")
        return _bench(target, remote_gguf, settings)
    finally:
        try:
            _run(target, target.ssh_argv(["rm", "-rf", "--", remote_dir]), timeout, "cleanup")
        except LatencyError:
            pass  # the original error matters more than a failed cleanup
