#!/usr/bin/env bash
# Refresh requirements.lock: resolve pyproject.toml's ranges (with the test and tracking extras) in a scratch
# venv and write every installed distribution's exact version. Torch is left out (scripts/setup.sh pins the
# CPU wheel itself), as is the optional llama-cpp-python (built from source by `LLAMA_CPP=1`).
# Run `make test` afterwards and commit the lock only when the suite passes on it.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_PIN=${TORCH_PIN:-torch==2.13.0}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
python3 -m venv "$scratch/venv"
pip() { "$scratch/venv/bin/python" -m pip --disable-pip-version-check -q "$@"; }
pip install "$TORCH_PIN"
pip install -e ".[test,tracking]"
{
  echo "# Exact versions the test suite passed on; installed by scripts/setup.sh. Refresh: make lock (README, Installs)."
  "$scratch/venv/bin/python" -m pip freeze --exclude-editable --disable-pip-version-check \
    | grep -v -i -E '^(torch|omnirun|llama[-_]cpp[-_]python|diskcache|llm[-_]smollm2|nvidia-|triton)(==| @)' | LC_ALL=C sort -f
} > requirements.lock
echo "wrote requirements.lock ($(grep -c '==' requirements.lock) pins)"
