#!/usr/bin/env bash
# Load benchmark of tpsnet-serve: closed-loop clients on 127.0.0.1 send single real
# CIFAR-10 test images to the release binary as KServe FP32 JSON, Triton binary tensors
# and PNG uploads, at 1, 4, 16 and 64 clients, dynamic batching on (the defaults) vs off
# (--max-batch 1): two servers side by side, each step run on both back to back, the
# order alternating. Prints a markdown table of medians over rounds.
#
#   bench/serve.sh [MODEL...] [-- BENCH-OPTION...]   # default: resnet20 airnet-wide
#   bench/serve.sh resnet20 -- --device cuda --max-batch 256   # e.g. on the GPU host
#
# Env: CIFAR10_DIR (required), ORT_DYLIB_PATH (default .venv/libonnxruntime.so),
# BENCH_ROUNDS (default 3), BENCH_SECONDS (timed seconds per step, default 2),
# BENCH_CLIENTS (default 1,4,16,64), BENCH_ENDPOINTS (default infer,binary,classify),
# BENCH_GRPC=1 (instead: KServe v2 over gRPC vs REST binary tensors through Triton's
# Python clients, bench/serve_grpc.py, at BENCH_CLIENTS clients, default 1,16, at most
# BENCH_REQUESTS_GRPC requests per client, default 200, BENCH_SECONDS seconds per run,
# default 8),
# BENCH_PROFILE (cargo profile, default bench = release settings; `test` reuses the test
# build, opt-level 2, when a release build is too slow to wait for).
# Extra options go to the bench binary after `--`: see serve/benches/serve.rs.
# Writes target/bench-serve/<model>.json. Per model: rounds x 2 modes x endpoints x
# client counts x seconds (3 x 2 x 3 x 4 x 2 s = 2.4 min by default).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CIFAR10_DIR:?set CIFAR10_DIR to the CIFAR-10 binary folder}"
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$PWD/.venv/libonnxruntime.so}
ROUNDS=${BENCH_ROUNDS:-3}
SECONDS_PER_STEP=${BENCH_SECONDS:-2}
CLIENTS=${BENCH_CLIENTS:-1,4,16,64}
ENDPOINTS=${BENCH_ENDPOINTS:-infer,binary,classify}
PROFILE=${BENCH_PROFILE:-bench}
# Models before `--`, the bench binary's own options after it (e.g. `-- --device cuda`).
models=(); extra=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--" ]; then shift; extra=("$@"); break; fi
  models+=("$1"); shift
done
if [ ${#models[@]} -eq 0 ]; then models=(resnet20 airnet-wide); fi
if [ "${BENCH_GRPC:-0}" = 1 ]; then
  echo "== build tpsnet-serve (profile $PROFILE)" >&2
  exe=$(cargo build -q -p tpsnet-serve --bin tpsnet-serve --profile "$PROFILE" --message-format=json |
    python3 -c 'import json, sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable")][-1])')
  mkdir -p target/bench-serve
  for model in "${models[@]}"; do
    echo "== $model: gRPC vs REST" >&2
    .venv/bin/python bench/serve_grpc.py --server "$exe" --model "$model" --rounds "$ROUNDS" \
      --clients "${BENCH_CLIENTS:-1,16}" --requests "${BENCH_REQUESTS_GRPC:-200}" \
      --seconds "${BENCH_SECONDS:-8}" --json "target/bench-serve/$model-grpc.json" \
      -- ${extra[@]+"${extra[@]}"}
  done
  exit 0
fi
echo "== build (profile $PROFILE)" >&2
cargo bench -q -p tpsnet-serve --bench serve --profile "$PROFILE" --no-run
echo "== CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; load $(cat /proc/loadavg)" >&2
for model in "${models[@]}"; do
  args=(--rounds "$ROUNDS" --seconds "$SECONDS_PER_STEP" --clients "$CLIENTS" --endpoints "$ENDPOINTS" --model "$model")
  echo "== $model" >&2
  cargo bench -q -p tpsnet-serve --bench serve --profile "$PROFILE" -- "${args[@]}" ${extra[@]+"${extra[@]}"}
done
