#!/usr/bin/env bash
# Soak test of tpsnet-serve: 64 clients for N minutes (default 10) against the release
# binary on 127.0.0.1, mixing FP32 JSON, Triton binary tensors, PNG uploads and gRPC
# ModelInfer calls (raw contents) with real CIFAR-10 test images, to several models served
# by one server (each client turns through the protocols and the models). Every answer is
# checked against Python onnxruntime on the same image (bench/soak_reference.py); fails on any error or wrong answer, or when the
# server's RSS after warm-up varies by more than 5 %. Prints one row per minute
# (requests, errors, p50/p99, RSS). A benchmark, not a CI test.
#
#   bench/soak.sh [MINUTES] [MODEL,MODEL...] [SERVER-OPTION...]
#   # default: 10 resnet20,resnet20-int8,airnet-short; e.g. bench/soak.sh 3 resnet20 --spin-us=0
#
# Env: CIFAR10_DIR (required), ORT_DYLIB_PATH (default .venv/libonnxruntime.so),
# TPSNET_PYTHON (default .venv/bin/python, with onnxruntime), SOAK_CLIENTS (default 64),
# BENCH_PROFILE (default bench = release settings). Writes target/bench-serve/soak-<model+model...>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CIFAR10_DIR:?set CIFAR10_DIR to the CIFAR-10 binary folder}"
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$PWD/.venv/libonnxruntime.so}
MINUTES=${1:-10}
MODELS=${2:-resnet20,resnet20-int8,airnet-short}
shift $(( $# < 2 ? $# : 2 ))
# Anything after the models goes to the server, after the soak's own options.
server_args=()
for a in "$@"; do server_args+=("--server-arg=$a"); done
PROFILE=${BENCH_PROFILE:-bench}
echo "== build (profile $PROFILE)" >&2
cargo bench -q -p tpsnet-serve --bench soak --profile "$PROFILE" --no-run
echo "== CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; load $(cat /proc/loadavg)" >&2
cargo bench -q -p tpsnet-serve --bench soak --profile "$PROFILE" -- \
  $(printf -- '--model %s ' ${MODELS//,/ }) --minutes "$MINUTES" --clients "${SOAK_CLIENTS:-64}" "${server_args[@]}"
