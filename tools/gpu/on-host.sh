#!/usr/bin/env bash
# Runs on the GPU host (no Rust, no network): TPSNet, Model-2, Model-1 in that order with
# the `fast` recipe, each given an equal share of BUDGET_S. Epochs per model are sized
# from the measured step throughput (/tmp/bench.jsonl left by host-bench.sh on the same
# warm machine, else a fresh `train-zoo bench`), so the three fit the budget.
# Each finished model is in /tmp/models at once; at the end everything is packed into
# $OUT as models.tar.gz.part-* (< 16 MiB each, the return limit) plus a sha256.
# Usage (repo root on the host): tools/gpu/on-host.sh [extra train-zoo args...]
# Env: OUT (default /tmp/out), SP (site-packages holding torch), BUDGET_S (default 420),
#      DEVICE (default cuda; cpu for a local dry run),
#      MAX_EPOCHS (default 40, the recipe's), MODELS (default "tpsnet model2 model1").
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
SP=${SP:-/opt/torch/.venv/lib/python3.12/site-packages}
export LD_LIBRARY_PATH="$SP/torch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
BUDGET_S=${BUDGET_S:-420}; MAX_EPOCHS=${MAX_EPOCHS:-40}; DEVICE=${DEVICE:-cuda}
read -r -a models <<< "${MODELS:-tpsnet model2 model1}"
bin=.gpu/bin/train-zoo
log="$OUT/train.log"
{
  bash .gpu/gpu-host-facts
  echo "== data"
  mkdir -p /tmp/cifar && ln -sf "$PWD"/.cifar-parts/p*/* /tmp/cifar/ && (cd /tmp/cifar && md5sum -c MD5SUMS)
} > "$log" 2>&1
[ -s /tmp/bench.jsonl ] || "$bin" bench --device "$DEVICE" --recipe fast --batch-size 512 \
  --warmup 3 --steps 10 --model "${models[@]}" > /tmp/bench.jsonl 2>>"$log"
share=$(( BUDGET_S / ${#models[@]} ))
for m in "${models[@]}"; do
  # 50,000 images per epoch; 0.8 leaves room for per-epoch evaluation and start-up.
  epochs=$(python3 - "$m" "$share" "$MAX_EPOCHS" <<'PY'
import json, sys
m, share, cap = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
ips = [json.loads(l)["median_images_per_s"] for l in open("/tmp/bench.jsonl") if json.loads(l).get("model") == m]
print(max(1, min(cap, int(0.8 * (share - 15) * ips[0] / 50000))) if ips else 1)
PY
)
  echo "== $m: $epochs epochs in a ${share}s share ($(date -u +%T))" >> "$log"
  timeout $(( share + 60 )) "$bin" --model "$m" --epochs "$epochs" --device "$DEVICE" --data-dir /tmp/cifar \
    --run-dir "/tmp/runs/$m" --out /tmp/models --json --no-progress "$@" >> "$OUT/train.jsonl" \
    2> >(grep -v 'autocast::' >> "$log")
  echo "train-zoo $m exit: $? ($(date -u +%T))" >> "$log"
  # tch 0.24 calls libtorch's deprecated at::autocast::is_enabled, which warns on every
  # step (5 MB per run); the filter above drops those lines.
done
cp /tmp/bench.jsonl "$OUT/bench.jsonl"
# Models and curves (ONNX ~20 MB each): split into parts under 16 MiB for the return trip.
(cd /tmp && tar -czf /tmp/models.tar.gz models $(ls runs/*/metrics.jsonl 2>/dev/null)) 2>>"$log"
split -b 15m -d /tmp/models.tar.gz "$OUT/models.tar.gz.part-"
(cd /tmp && sha256sum models.tar.gz) > "$OUT/models.tar.gz.sha256"
ls -la "$OUT" /tmp/models >> "$log"
tail -n 30 "$log"
