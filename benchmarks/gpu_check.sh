#!/usr/bin/env bash
# The GPU checks of MPANet Edge, in one run (docs/engines.md "GPU checks"; README "Benchmarks").
#
#   bash benchmarks/gpu_check.sh            # on a CUDA machine: < 10 min on one GPU
#   GPU_CHECK_TINY=1 bash benchmarks/gpu_check.sh   # CPU smoke run of every script (what CI runs)
#
# Sections (each with its own time limit; a section that cannot run here says why and is skipped):
#   1. versions: GPU, driver, torch/CUDA, cuda-python, onnxruntime, ultralytics; TensorRT + driver
#      combination (engines.tensorrt.cuda_environment)
#   2. TensorRT, where it imports and sees a GPU (benchmarks/gpu_check_tensorrt.py): FP32 builds at
#      batch 1/2/4 with the build log checked, inspector JSON keys, runner parity vs onnxruntime at
#      batch 1/opt/max with DeprecationWarning as an error, FP16 plan (native FP32 norms, cosine >=
#      0.999), INT8 Q/DQ plan, timing cache reuse
#   3. embedder CUDA rows, ResNet-50 384x128 (benchmarks/bench_embedder.py --device cuda --models default)
#   4. the multi-stream pipeline on CUDA, 2/8/32 streams (benchmarks/bench_gpu_pipeline.py); on CPU
#      its --tiny fallback, to show the script runs
#   5. training step FP32 vs AMP, one knob at a time, and data loading (benchmarks/bench_train_amp.py)
# Results: JSON under $OUT (default benchmarks/results/gpu/), and $OUT/gpu_check.json saying what
# ran, passed, failed or was skipped (with the reason). Exit status 1 when a section failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results/gpu}"
TINY="${GPU_CHECK_TINY:-0}"
PY="${PYTHON:-python3}"
WORK="${GPU_CHECK_WORK:-/tmp/gpu-check}"
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1
export YOLO_OFFLINE=1 YOLO_AUTOINSTALL=false YOLO_CONFIG_DIR="$WORK/ultralytics" MPLBACKEND=Agg
if ls .whl/*.whl >/dev/null 2>&1; then  # packages a bare GPU image lacks, carried as wheels
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" .whl/*.whl || exit 1
  export PYTHONPATH="$WORK/site:$PWD"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
STATUS="$WORK/status.jsonl"
: > "$STATUS"
started_all=$(date +%s)

record() {  # record NAME STATUS SECONDS DETAIL
  "$PY" -c 'import json,sys; print(json.dumps({"section": sys.argv[1], "status": sys.argv[2], "seconds": int(sys.argv[3]), "detail": sys.argv[4]}))' \
    "$1" "$2" "$3" "$4" >> "$STATUS"
  echo "== $1: $2 ($3 s) $4"
}

section() {  # section NAME TIMEOUT_S COMMAND...: run it, record passed / failed / timed out
  local name="$1" limit="$2"; shift 2
  echo "== $name (limit ${limit} s): $*"
  local t0=$(date +%s) rc
  timeout "$limit" "$@" 2>&1 | tail -40
  rc=${PIPESTATUS[0]}
  local t=$(( $(date +%s) - t0 ))
  if [ "$rc" -eq 0 ]; then record "$name" passed "$t" "";
  elif [ "$rc" -eq 124 ]; then record "$name" failed "$t" "timed out after ${limit} s";
  else record "$name" failed "$t" "exit status $rc"; fi
}

# ---------------------------------------------------------------------------------- 1. versions
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/nvidia_smi.txt"
fi
section versions 60 "$PY" - "$OUT/versions.json" <<'EOF'
import importlib.metadata as md, json, sys
def version(dist):
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None
info = {d: version(d) for d in ("torch", "onnxruntime", "onnxruntime-gpu", "ultralytics", "cuda-bindings",
                                 "cuda-python", "tensorrt", "tensorrt-cu12", "tensorrt-cu13")}
import torch
info["torch_cuda"] = torch.version.cuda
info["cuda_available"] = torch.cuda.is_available()
if torch.cuda.is_available():
    info["gpu"] = torch.cuda.get_device_name(0)
    info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
from engines.tensorrt import TensorRTUnavailable, cuda_environment, import_cudart, open_device
try:
    info["tensorrt_environment"] = cuda_environment()
except TensorRTUnavailable as exc:
    info["tensorrt_environment"] = {"unavailable": str(exc)}
try:
    cudart = import_cudart()
    info["cuda_python_device"] = open_device(cudart, 0)
    # The runner's stream path on the real bindings, without TensorRT: a stream's native handle
    # with DeprecationWarning as an error (int(stream) is deprecated in cuda-bindings 13).
    import warnings
    from engines.tensorrt import native_handle
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        err, stream = cudart.cudaStreamCreate()
        handle = native_handle(stream)
        cudart.cudaStreamDestroy(stream)
    info["cuda_python_stream"] = {"create": str(err), "native_handle_nonzero": handle != 0}
except TensorRTUnavailable as exc:
    info["cuda_python_device"] = {"unavailable": str(exc)}
json.dump(info, open(sys.argv[1], "w"), indent=2)
print(json.dumps(info, indent=2))
EOF

CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
if [ "$TINY" = "1" ]; then CUDA=0; fi

# --------------------------------------------------------------------------------- 2. TensorRT
TRT_REASON=$("$PY" -c "
from engines.tensorrt import TensorRTUnavailable, cuda_environment
try:
    cuda_environment()
except TensorRTUnavailable as exc:
    print(str(exc).replace(chr(10), ' '))
" 2>&1 | tail -1)
if [ -z "$TRT_REASON" ]; then
  section tensorrt 300 "$PY" benchmarks/gpu_check_tensorrt.py --work "$WORK/tensorrt" --out "$OUT/tensorrt.json"
else
  record tensorrt skipped 0 "$TRT_REASON"
fi

# ------------------------------------------------------------------------------ 3. embedder CUDA
if [ "$CUDA" = "1" ]; then
  section embedder_cuda 120 "$PY" benchmarks/bench_embedder.py --device cuda --models default --seconds 1.5 --min-iters 10 \
    --output "$OUT/embedder_cuda.json"
else
  record embedder_cuda skipped 0 "torch sees no CUDA device (or GPU_CHECK_TINY=1)"
fi

# ------------------------------------------------------------------------------- 4. the pipeline
if [ "$CUDA" = "1" ]; then
  section pipeline_cuda 240 "$PY" benchmarks/bench_gpu_pipeline.py --streams 2,8,32 --duration-s 15 \
    --work "$WORK/pipeline" --out "$OUT/pipeline_gpu.json"
else
  record pipeline_cuda skipped 0 "torch sees no CUDA device (or GPU_CHECK_TINY=1); running the CPU fallback instead"
  section pipeline_cpu_fallback 300 "$PY" benchmarks/bench_gpu_pipeline.py --tiny \
    --work "$WORK/pipeline" --out "$OUT/pipeline_cpu_fallback.json"
fi

# ----------------------------------------------------------------------------- 5. AMP training
if [ "$CUDA" = "1" ]; then
  section train_amp 180 "$PY" benchmarks/bench_train_amp.py --device cuda --iters 15 --warmup 5 \
    --work "$WORK/train" --out "$OUT/train_amp.json"
else
  record train_amp_cuda skipped 0 "torch sees no CUDA device (or GPU_CHECK_TINY=1); running the CPU smoke run instead"
  section train_amp_cpu_smoke 300 "$PY" benchmarks/bench_train_amp.py --tiny --no-loader \
    --work "$WORK/train" --out "$OUT/train_amp_cpu_smoke.json"
fi

# ------------------------------------------------------------------------------------- summary
"$PY" - "$STATUS" "$OUT/gpu_check.json" "$(( $(date +%s) - started_all ))" "$TINY" <<'EOF'
import json, os, sys, time
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
report = {"sections": rows, "seconds": int(sys.argv[3]), "tiny": sys.argv[4] == "1",
          "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
          "load_average": os.getloadavg()}
open(sys.argv[2], "w").write(json.dumps(report, indent=2) + "\n")
failed = [r["section"] for r in rows if r["status"] == "failed"]
print(f"gpu_check: {len(rows)} sections, failed: {failed or 'none'}; {sys.argv[2]}")
sys.exit(1 if failed else 0)
EOF
