#!/usr/bin/env bash
# Runs on the GPU host; needs no CIFAR-10 (synthetic inputs), only the staged binary
# (.gpu, carried). Two benchmarks for docs/benchmarks.md, one call:
#  * inference throughput of every shipped model at batch 1024 through libtorch
#    (bench/gpu_inference.py: fp32 NCHW, fp32 channels-last, bf16 channels-last);
#  * training-step throughput, ours vs PyTorch eager, for airnet, airnet-wide and tpsnet
#    (bench/train-throughput.sh cuda 512 10: the `fast` step, bf16 + channels-last);
#    tpsnet re-measures the 2026-11-26 baseline on this machine.
# Writes $OUT/host.txt, gpu-inference.{txt,jsonl}, train-throughput.{md,jsonl}.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
SP=${SP:-/opt/torch/.venv/lib/python3.12/site-packages}
export LD_LIBRARY_PATH="$SP/torch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
PY=${PYTHON:-/opt/torch/.venv/bin/python}
bin=.gpu/bin/train-zoo
[ -x "$bin" ] || { gzip -dc .gpu/bin/train-zoo.gz > "$bin" && chmod +x "$bin"; }
bash .gpu/gpu-host-facts > "$OUT/host.txt" 2>&1
(cd bench && timeout 200 "$PY" gpu_inference.py --json "$OUT/gpu-inference.jsonl" ../models/*.json) \
  > "$OUT/gpu-inference.txt" 2>&1
echo "gpu_inference exit: $?"; cat "$OUT/gpu-inference.txt"
PYTHON=$PY TRAIN_ZOO=$bin timeout 240 bench/train-throughput.sh cuda 512 10 airnet airnet-wide tpsnet \
  > "$OUT/train-throughput.md" 2> "$OUT/train-throughput.jsonl"
echo "train-throughput exit: $?"; cat "$OUT/train-throughput.md"
