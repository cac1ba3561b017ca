#!/usr/bin/env bash
# Load benchmark of tpsnet-serve: 64 concurrent clients send single real CIFAR-10 test
# images to the release binary on 127.0.0.1, dynamic batching on vs off in alternating
# rounds (a fresh server per run). Prints throughput, p50/p99 latency and the
# batched/unbatched throughput ratio per round.
#
#   bench/serve.sh [MODEL...] [-- BENCH-OPTION...]   # default: the zoo's default model, then resnet20
#   bench/serve.sh resnet20 -- --device cuda --max-batch 256   # e.g. on the GPU host
#
# Env: CIFAR10_DIR (required), ORT_DYLIB_PATH (default .venv/libonnxruntime.so),
# BENCH_ROUNDS (default 3), BENCH_REQUESTS (timed requests per client, default 8),
# BENCH_ENDPOINT (classify = PNG uploads, default; infer = KServe FP32 JSON; grpc = KServe
# v2 over gRPC vs REST binary tensors through Triton's Python clients, bench/serve_grpc.py,
# at BENCH_CLIENTS clients, default 1,16, at most BENCH_REQUESTS_GRPC requests per client,
# default 200, and BENCH_SECONDS seconds per run, default 8),
# BENCH_PROFILE (cargo profile, default bench = release settings; `test` reuses the test
# build, opt-level 2, when a release build is too slow to wait for).
# Extra options go to the bench binary after `--`: see serve/benches/serve.rs.
# Writes target/bench-serve/<model>-<endpoint>.json. A few minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CIFAR10_DIR:?set CIFAR10_DIR to the CIFAR-10 binary folder}"
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$PWD/.venv/libonnxruntime.so}
ROUNDS=${BENCH_ROUNDS:-3}
REQUESTS=${BENCH_REQUESTS:-8}
ENDPOINT=${BENCH_ENDPOINT:-classify}
PROFILE=${BENCH_PROFILE:-bench}
# Models before `--`, the bench binary's own options after it (e.g. `-- --device cuda`).
models=(); extra=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--" ]; then shift; extra=("$@"); break; fi
  models+=("$1"); shift
done
if [ ${#models[@]} -eq 0 ]; then models=("" resnet20); fi
if [ "$ENDPOINT" = grpc ]; then
  echo "== build tpsnet-serve (profile $PROFILE)" >&2
  exe=$(cargo build -q -p tpsnet-serve --bin tpsnet-serve --profile "$PROFILE" --message-format=json |
    python3 -c 'import json, sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable")][-1])')
  mkdir -p target/bench-serve
  # Named models only (the Python driver needs a name); resnet20 by default.
  named=(); for m in "${models[@]}"; do [ -n "$m" ] && named+=("$m"); done
  [ ${#named[@]} -eq 0 ] && named=(resnet20)
  for model in "${named[@]}"; do
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
for model in "${models[@]}"; do
  args=(--rounds "$ROUNDS" --requests "$REQUESTS" --endpoint "$ENDPOINT")
  [ -n "$model" ] && args+=(--model "$model")
  echo "== ${model:-default model}" >&2
  cargo bench -q -p tpsnet-serve --bench serve --profile "$PROFILE" -- "${args[@]}" ${extra[@]+"${extra[@]}"}
done
