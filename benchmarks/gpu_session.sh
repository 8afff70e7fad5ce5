#!/usr/bin/env bash
# Superseded by benchmarks/gpu_check.sh (versions, TensorRT, embedder CUDA rows, the multi-stream
# pipeline, the AMP training analysis). Kept as the record of how the README's H200 training and
# embedder figures were produced:
#   1. training throughput of the full recipe (ResNet-50, 384x128, batch 16x8): FP32 vs AMP
#   2. embedder throughput: torch CUDA FP32 / FP16 / FP16 + CUDA graphs (+ onnxruntime CUDA if present)
#   3. the real trainer (mixed precision, data loading, evaluation) for a short run on a synthetic set
# Results go to $OUT (or benchmarks/results/gpu when OUT is unset).
set -uo pipefail
OUT="${OUT:-benchmarks/results/gpu}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then  # packages the GPU image lacks (omegaconf, msgspec), carried as wheels
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, onnxruntime as o; print('torch', torch.__version__, 'onnxruntime', o.__version__, o.get_available_providers())" | tee -a "$OUT/gpu.txt"

echo "== 1. training throughput"
timeout 150 python3 benchmarks/bench_train.py --device cuda --iters 30 --warmup 5 --out "$OUT/train_gpu.json" 2>&1 | tail -25

echo "== 2. embedder throughput"
timeout 220 python3 benchmarks/bench_embedder.py --device cuda --seconds 2 --min-iters 10 --output "$OUT/embedder_cuda.json" 2>&1 | tail -30

echo "== 3. the trainer with AMP on a synthetic set"
python3 -m trainer.synthetic --layout sysu --out /tmp/syn --ids 60 --images-per-camera 10 --height 288 --width 144 --workers 16 --quiet
N=$(python3 -c "from trainer.data import load_train_samples; print(len({s.label for s in load_train_samples('/tmp/syn', 'sysu')}))")
timeout 150 python3 -m trainer.cli.train --config configs/sysu.yaml data.root=/tmp/syn model.pretrained=null \
  model.num_classes="$N" optim.epochs=2 run.max_iters_per_epoch=12 data.workers=12 eval.start_epoch=2 eval.trials=2 \
  run.output_dir=/tmp/gpu-run --no-progress 2>&1 | tail -40 | tee "$OUT/trainer_run.txt"
if [ -f /tmp/gpu-run/metrics.jsonl ]; then cp /tmp/gpu-run/metrics.jsonl "$OUT/trainer_metrics.jsonl"; fi
