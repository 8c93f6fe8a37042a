#!/usr/bin/env bash
# CPU vs GPU figures in one run, on a lent CUDA machine with no network (bench/README.md,
# "GPU check"). Run from the repository root:  bash bench/gpu_check.sh
#
# Needs python3 with torch (CUDA build), numpy, scipy, tqdm, pyyaml; faiss and pydantic
# (stage configs) come from wheels carried in .whl/ (`make gpu-wheels` fetches them;
# git-ignored). Only the core of the project is imported (no feast, mlflow, bentoml, redis). Degrades to CPU-only rows when
# no GPU is visible. Output goes to the terminal and to $OUT/gpu_check.txt when $OUT is
# set. Whole run stays under ~6.5 minutes (each bench has its own timeout).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SITE=${GPU_CHECK_SITE:-/tmp/site}
ANCHORS=${ANCHORS:-1000000}
CUSTOMERS=${CUSTOMERS:-2000000}
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT"; exec > >(tee "$OUT/gpu_check.txt") 2>&1; fi

echo "== gpu_check $(date -u +%FT%TZ) on $(hostname), $(nproc) cores; $(cat /proc/loadavg)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if compgen -G ".whl/*.whl" >/dev/null; then
  echo "== installing carried wheels into $SITE"
  for wheel in .whl/*.whl; do  # one at a time: a wheel for another Python is skipped, not fatal
    $PY -m pip install -q --no-index --no-deps --target "$SITE" "$wheel" 2>/dev/null \
      && echo "  installed $(basename "$wheel")" || echo "  skipped $(basename "$wheel") (not installable here)"
  done
else
  echo "== no .whl/ folder: run 'make gpu-wheels' before carrying the repo here (faiss, pydantic)"
fi
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export TQDM_DISABLE=1 PYTHONUNBUFFERED=1

$PY - <<'PYEOF'
import importlib, sys
print("python", sys.version.split()[0])
for name in ("numpy", "scipy", "torch", "faiss", "pydantic", "yaml"):
    try:
        module = importlib.import_module(name)
        print(f"  {name} {getattr(module, '__version__', '?')} from {module.__file__}")
    except Exception as exc:  # noqa: BLE001 - report and carry on
        print(f"  {name}: NOT importable ({exc})")
try:
    import torch
    print("  torch.cuda.is_available():", torch.cuda.is_available(),
          torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
    from index_builder import faiss_backend
    print("  faiss GPU:", faiss_backend.gpu_support(), "| resolve_device(auto):", faiss_backend.resolve_device("auto"))
except Exception as exc:  # noqa: BLE001
    print("  device probe failed:", exc)
PYEOF

THREADS=$(nproc)
echo
echo "== bench_faiss: n=100k, k=10 (CPU rows at $THREADS threads, then GPU rows when a GPU is usable)"
timeout 100 $PY bench/bench_faiss.py --threads "$THREADS" --exact-queries 2000 || echo "bench_faiss exited with $?"
echo
echo "== bench_weekly: ${ANCHORS} anchors + ${CUSTOMERS} customers, k=40; index.device=cpu vs auto (GPU when usable)"
timeout 270 $PY bench/bench_weekly.py --anchors "$ANCHORS" --customers "$CUSTOMERS" --threads "$THREADS" \
  --devices cpu,auto || echo "bench_weekly exited with $?"
echo "== done $(date -u +%FT%TZ); $(cat /proc/loadavg)"
