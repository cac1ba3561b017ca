#!/usr/bin/env bash
# Runs on the GPU host (second staging call): training-step throughput, ours (train-zoo
# bench) vs plain PyTorch eager (bench/train_torch.py), same model, batch 512, bf16 +
# channels-last, same augmentation and update. The JSON lines are also kept in
# /tmp/bench.jsonl, which on-host.sh reads (while the machine stays warm) to size epochs.
# Usage (repo root on the host): tools/gpu/host-bench.sh
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
SP=${SP:-/opt/torch/.venv/lib/python3.12/site-packages}
export LD_LIBRARY_PATH="$SP/torch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
PYTHON=${PYTHON:-python3} TRAIN_ZOO=.gpu/bin/train-zoo \
  timeout 300 bench/train-throughput.sh cuda 512 10 tpsnet model2 model1 \
  > "$OUT/train-throughput.md" 2> "$OUT/train-throughput.jsonl"
echo "bench exit: $?"
grep -v pytorch-eager "$OUT/train-throughput.jsonl" > /tmp/bench.jsonl || true
cat "$OUT/train-throughput.md"
