#!/usr/bin/env bash
# One prepared check of animatch on a GPU machine: install, the whole suite on CUDA, then one table of figures.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: bash bench/gpu_check.sh [--cpu-dry-run] [--wheels DIR] [--no-suite] [--out DIR]

On a machine with a CUDA GPU, Python and torch (and perhaps nothing else of ours, and no internet):
  1. installs animatch's other dependencies from the wheels in DIR (default .whl; made beforehand, on a
     machine with internet, by `bash bench/gpu_wheels.sh`) into /tmp/animatch-site, without touching the
     system's packages, and puts the project's src/ on the path;
  2. runs the whole test suite on CUDA (the browser tests left out; the `cuda` tests included), with
     pytest-xdist when it is installed;
  3. runs bench/gpu_check.py, which prints ONE table: ViT-B/32-shaped `train` (bf16, fp16, --deterministic)
     samples/s against the compute-only step (pipeline efficiency), time lost at the start and at each
     epoch boundary, the drift without --deterministic, `embed` and `match` images/s on 6,000 images, the
     llava-1.5-7b-shaped judge pairs/s at batch 1/8/32 with and without prefix reuse (and with
     --static-cache, a compiled decode step, at 32), and LoRA `judge-train` steps/s. All models have random
     weights built in code. About 8 minutes on one H200 (before the --static-cache row: its compile adds one
     or two, an estimate).

  --cpu-dry-run  check this script on a CPU machine in seconds: tiny shapes, a small subset of the suite
  --wheels DIR   wheel folder to install from (absent or empty: use what is installed)
  --no-suite     skip the test suite
  --out DIR      keep the benchmark's work dir (default: a temporary one, removed)
EOF
}

DRY=0 SUITE=1 WHEELS=.whl OUT_DIR=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --cpu-dry-run) DRY=1 ;;
    --no-suite) SUITE=0 ;;
    --wheels) WHEELS="$2"; shift ;;
    --out) OUT_DIR="$2"; shift ;;
    *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ "$DRY" = 1 ]; then export CUDA_VISIBLE_DEVICES=""; fi  # the dry run is the CPU's, on any machine
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
started=$(date +%s)

if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  echo "== installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into /tmp/animatch-site"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/animatch-site "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/animatch-site${PYTHONPATH:+:$PYTHONPATH}
  export PATH=/tmp/animatch-site/bin:$PATH
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
"$PYTHON" - <<'EOF'
import importlib.util, sys
missing = [m for m in ("torch", "transformers", "accelerate", "peft", "safetensors", "faiss", "PIL", "yaml",
                       "matplotlib", "sacrebleu", "rouge_score", "pytest", "animatch") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu_check.sh: missing Python packages: {', '.join(missing)} (bring them: bash bench/gpu_wheels.sh)")
import torch
print(f"== torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}"
      + (f" ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else ""))
EOF

if [ "$SUITE" = 1 ]; then
  if [ "$DRY" = 1 ]; then
    echo "== test suite: a dry-run subset (the cuda tests skip on the CPU)"
    OMP_NUM_THREADS=1 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_cuda.py \
      tests/test_deterministic.py::test_mode_sets_every_switch_and_restores_them
  else
    echo "== test suite on CUDA"
    xdist=$("$PYTHON" -c "import xdist" 2>/dev/null && echo "-n 12" || true)
    # The browser tests need Chromium and selenium (not carried); a hung suite must leave time for the table.
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=1 timeout "${SUITE_TIMEOUT_S:-240}" "$PYTHON" -m pytest -q -p no:cacheprovider $xdist -rs \
      -m "not browser" --ignore=tests/test_serve_browser.py \
      || echo "== the suite FAILED or timed out (above); the benchmarks run anyway"
  fi
fi

echo "== benchmarks"
"$PYTHON" bench/gpu_check.py $([ "$DRY" = 1 ] && echo --dry-run) ${OUT_DIR:+--out "$OUT_DIR"}
echo "== gpu_check.sh done in $(( $(date +%s) - started )) s"
