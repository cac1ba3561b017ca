#!/usr/bin/env bash
# Runs on the GPU host (no Rust, no network): host facts, a step-throughput check, then
# `train-zoo --all` (TPSNet, Model-2, Model-1), each model's artifacts written into
# $OUT as soon as it finishes, so a cut-short run still returns the finished ones.
# Usage (repo root on the host): scripts/gpu/on-host.sh [extra train-zoo args...]
# Env: OUT (results folder, default /tmp/out), SP (site-packages holding torch),
#      BUDGET_S (seconds allowed for training, default 480).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
SP=${SP:-/opt/torch/.venv/lib/python3.12/site-packages}
export LD_LIBRARY_PATH="$SP/torch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
BUDGET_S=${BUDGET_S:-480}
bin=.gpu/bin/train-zoo
{
  bash .gpu/gpu-host-facts
  echo "== data"
  mkdir -p /tmp/cifar && ln -sf "$PWD"/.cifar-parts/p*/* /tmp/cifar/ && (cd /tmp/cifar && md5sum -c MD5SUMS)
} > "$OUT/host-facts.txt" 2>&1
"$bin" bench --device cuda --recipe fast --batch-size 512 --warmup 3 --steps 10 > "$OUT/bench.jsonl" 2>>"$OUT/train.log"
timeout "$BUDGET_S" "$bin" --all --device cuda --data-dir /tmp/cifar --run-dir /tmp/runs \
  --out /tmp/models --json --no-progress "$@" > "$OUT/train.jsonl" 2>>"$OUT/train.log"
echo "train-zoo exit: $?" >> "$OUT/train.log"
# Models and curves (ONNX ~20 MB each): split into parts under 16 MiB for the return trip.
tar -czf /tmp/models.tar.gz -C /tmp models runs/tpsnet/metrics.jsonl runs/model2/metrics.jsonl runs/model1/metrics.jsonl 2>>"$OUT/train.log"
split -b 15m -d /tmp/models.tar.gz "$OUT/models.tar.gz.part-"
sha256sum /tmp/models.tar.gz > "$OUT/models.tar.gz.sha256"
ls -la "$OUT"
