#!/usr/bin/env bash
# On the GPU host (issue 14): ONNX Runtime's CUDA execution provider, proven.
#  1. `verify --device cuda --all --tta --batch-size 1024` over every model this host holds
#     (the window's finished models in $MODELS plus the zoo models of the `ort` bundle),
#     through onnxruntime-gpu 1.31.1 (bundle `ort`, made by tools/gpu/stage-window --ort)
#     with the host torch wheel's CUDA 13 and cuDNN 9 folders on LD_LIBRARY_PATH. verify
#     never falls back to the CPU silently; this script also checks that every model's
#     report names CUDAExecutionProvider.
#  2. the runtime's batch-1024 CUDA throughput for every model (runtime/benches/inference.rs
#     built by `cargo bench -p tpsnet-runtime --no-run`, run with --device cuda), the
#     numbers for docs/benchmarks.md beside libtorch's.
# If the provider cannot start, the exact error and the provider library's unresolved
# dependencies (ldd) are recorded instead.
# Writes $OUT/ort-cuda.log, verify-cuda.json, ort-cuda-bench.jsonl.
# Env: REPEATS (default 30), BATCH (default 1024), MODELS_EXTRA (more model folders),
#      ORT_DEVICE (default cuda; cpu only to dry-run this script without a GPU),
#      WIN_ROOT/STAGE/SP (tools/gpu/lib.sh), CIFAR_DIR.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
ensure_dirs
REPEATS=${REPEATS:-30}; BATCH=${BATCH:-1024}; ORT_DEVICE=${ORT_DEVICE:-cuda}
want_provider=CUDAExecutionProvider
[ "$ORT_DEVICE" = cpu ] && want_provider=CPUExecutionProvider
"$here/host-stage.sh" >&2 || die "staging failed (see above)"
ort="$STAGE/x/ort"
[ -f "$ort/lib/libonnxruntime.so.1.31.1" ] || die "no onnxruntime-gpu in $ort/lib: carry every part of the \`ort\` bundle first"
data=$(cifar_dir)
logf="$OUT/ort-cuda.log"
exec > >(tee -a "$logf") 2>&1

cuda_dirs=""
for d in "$SP/nvidia/cu13/lib" "$SP/nvidia/cudnn/lib" "$SP/nvidia/cublas/lib" "$SP/nvidia/cuda_runtime/lib" "$SP/nvidia/curand/lib"; do
  [ -d "$d" ] && cuda_dirs="$cuda_dirs:$d"
done
export LD_LIBRARY_PATH="$ort/lib${cuda_dirs}:$LD_LIBRARY_PATH"
export ORT_DYLIB_PATH="$ort/lib/libonnxruntime.so.1.31.1"
echo "== LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
echo "== unresolved libraries of the CUDA provider (none expected):"
ldd "$ort/lib/libonnxruntime_providers_cuda.so" | grep -i 'not found' || echo "   none"
ls "$SP/nvidia/cudnn/lib" 2>/dev/null | grep -E '^libcudnn\.so' | head -3

# Every model this host holds, one folder (links), newest manifests only.
vm="$WIN_ROOT/verify-models"; rm -rf "$vm"; mkdir -p "$vm"
for dir in "$ort/models" "$MODELS" ${MODELS_EXTRA:-}; do
  [ -d "$dir" ] || continue
  for j in "$dir"/*.json; do
    [ -f "$j" ] || continue
    o="${j%.json}.onnx"
    [ -f "$o" ] && ln -sf "$j" "$vm/" && ln -sf "$o" "$vm/"
  done
done
echo "== models: $(cd "$vm" && ls -- *.onnx | tr '\n' ' ')"

echo "== 1. verify --device $ORT_DEVICE"
t0=$(date +%s)
"$ort/bin/verify" --dataset cifar10-test --all --tta --device "$ORT_DEVICE" --batch-size "$BATCH" \
  --models-dir "$vm" --data-dir "$data" --report "$OUT/verify-cuda.json"
vrc=$?
echo "verify exit $vrc after $(( $(date +%s) - t0 ))s (0: every claim holds; 1: a claim fails; 2: nothing verified, e.g. the provider did not start)"
if [ -f "$OUT/verify-cuda.json" ]; then
  "$PY" - "$OUT/verify-cuda.json" "$want_provider" <<'PY' || vrc=3
import json, sys
r = json.load(open(sys.argv[1]))
want = sys.argv[2]
bad = 0
for m in r["models"]:
    ex = m.get("execution", {})
    prov = ex.get("provider") if isinstance(ex, dict) else ex
    ok = prov == want
    bad += not ok
    checks = ", ".join(f"{c['metric']} {c['measured']:.2f} vs {c['claimed']:.2f} ({'ok' if c['passed'] else 'FAIL'})" for c in m["checks"])
    speed = m["single"].get("images_per_s")
    print(f"  {m['name']:<20} provider {prov:<24} {checks}; {speed:.0f} img/s end to end")
print("provider check:", f"every model ran on {want}" if not bad else f"{bad} model(s) NOT on {want}")
sys.exit(1 if bad else 0)
PY
fi

echo "== 2. runtime CUDA throughput, batch $BATCH, median of $REPEATS"
: > "$OUT/ort-cuda-bench.jsonl"
for j in "$vm"/*.json; do
  name=$(basename "$j" .json)
  timeout 120 "$ort/bin/bench-inference" --model "$j" --batch "$BATCH" --repeats "$REPEATS" \
    --latency-runs 50 --device "$ORT_DEVICE" --json "$WIN_ROOT/bench-$name.json" > /dev/null 2> "$WIN_ROOT/bench-$name.log"
  rc=$?
  if [ $rc -eq 0 ]; then
    "$PY" -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))))' "$WIN_ROOT/bench-$name.json" >> "$OUT/ort-cuda-bench.jsonl"
  else
    echo "bench $name failed (exit $rc): $(tail -c 400 "$WIN_ROOT/bench-$name.log")"
  fi
done
"$PY" - "$OUT/ort-cuda-bench.jsonl" <<'PY'
import json, sys
print(f"{'model':<20} {'provider':<24} {'batch':>5} {'img/s':>9} {'batch-1 ms':>10}")
for l in open(sys.argv[1]):
    d = json.loads(l)
    print(f"{d['model']:<20} {d['provider']:<24} {d['batch']:>5} {d['batch_images_per_s']:>9.0f} {d['batch1_ms']:>10.3f}")
PY
exit $vrc
