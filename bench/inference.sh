#!/usr/bin/env bash
# Inference benchmark: this runtime vs Python onnxruntime vs PyTorch eager (CPU), same
# ONNX model / same architecture and weights, same images, same machine, one run.
#
#   bench/inference.sh [PRESET]          # PRESET: tpsnet (default), model1, model2
#
# Env: TPSNET_PYTHON (default .venv/bin/python), ORT_DYLIB_PATH (default
# .venv/libonnxruntime.so), CIFAR10_DIR (if set, the first 256 real test images are the
# input; else deterministic pseudo-random pixels), BENCH_REPEATS (default 5).
# Writes target/bench-inference/<preset>/{rust-1,rust-2,peers}.json and prints a
# Markdown table. Takes a few minutes on 2 cores (mostly the release build).
set -euo pipefail
cd "$(dirname "$0")/.."
PRESET=${1:-tpsnet}
PY=${TPSNET_PYTHON:-$PWD/.venv/bin/python}
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$PWD/.venv/libonnxruntime.so}
REPEATS=${BENCH_REPEATS:-5}
OUT=$PWD/target/bench-inference/$PRESET
mkdir -p "$OUT"

echo "== build (release)" >&2
cargo build --release -q -p tpsnet-runtime --example export_bench_model --benches
MANIFEST=$(cargo run --release -q -p tpsnet-runtime --example export_bench_model -- "$OUT" "$PRESET" 0)
ONNX=${MANIFEST%.json}.onnx

"$PY" - "$OUT/input.f32" <<'PYEOF'
import os, sys, numpy as np
n = 256
d = os.environ.get("CIFAR10_DIR")
if d:
    raw = np.fromfile(os.path.join(d, "test_batch.bin"), dtype=np.uint8).reshape(-1, 3073)[:n, 1:]
    x = raw.reshape(n, 3, 32, 32).astype("<f4") / 255.0
    print(f"input: first {n} CIFAR-10 test images", file=sys.stderr)
else:
    x = (np.random.default_rng(0).random((n, 3, 32, 32))).astype("<f4")
    print(f"input: {n} pseudo-random images", file=sys.stderr)
x.tofile(sys.argv[1])
PYEOF

rust() {
  cargo bench -q -p tpsnet-runtime --bench inference -- --model "$MANIFEST" \
    --input "$OUT/input.f32" --repeats "$REPEATS" --json "$OUT/$1.json" >/dev/null
}
echo "== this runtime (run 1)" >&2; rust rust-1
echo "== Python onnxruntime and PyTorch eager" >&2
(cd bench && "$PY" bench_peers.py "$ONNX" "$OUT" "$OUT/input.f32" \
   --repeats "$REPEATS" --json "$OUT/peers.json" >/dev/null)
echo "== this runtime (run 2)" >&2; rust rust-2

"$PY" - "$OUT" <<'PYEOF'
import json, sys, os
d = sys.argv[1]
r1, r2 = (json.load(open(os.path.join(d, f"rust-{i}.json"))) for i in (1, 2))
p = json.load(open(os.path.join(d, "peers.json")))
macs = r1["macs_per_image"]
PEAK = 2 * 2 * 16 * 2 * 2.3e9  # 2 cores x 2 FMA units x 16 fp32 lanes x 2 flop x 2.3 GHz
ort_py, pt = p["python_onnxruntime"], p["pytorch_eager"]
rust_ips = [r1["batch_images_per_s"], r2["batch_images_per_s"]]
rust_lat = [r1["batch1_ms"], r2["batch1_ms"]]
def pk(ips): return f"{100 * 2 * macs * ips / PEAK:.0f} %"
rows = [
    ("tpsnet-runtime (Rust, ort)", f"{rust_ips[0]:.0f} / {rust_ips[1]:.0f}",
     f"{rust_lat[0]:.2f} / {rust_lat[1]:.2f}", f"{pk(min(rust_ips))}–{pk(max(rust_ips))}"),
    (f"Python onnxruntime {ort_py['version']}", f"{ort_py['batch_images_per_s']:.0f}",
     f"{ort_py['batch1_ms']:.2f}", pk(ort_py["batch_images_per_s"])),
    (f"PyTorch {pt['version']} eager ({pt['threads']} threads)", f"{pt['batch_images_per_s']:.0f}",
     f"{pt['batch1_ms']:.2f}", pk(pt["batch_images_per_s"])),
]
print(f"model: {r1['model']}, {macs/1e6:.0f} M MACs/image, batch {r1['batch']}; "
      f"PyTorch params {pt['params']}, "
      f"max |logit diff| PyTorch vs ONNX {p['torch_vs_onnx_max_abs_logit_diff']:.3g} "
      f"on logits up to {p['onnx_max_abs_logit']:.3g} (relative {p['torch_vs_onnx_relative_diff']:.1e})")
print()
print("| engine | batch-256 throughput (img/s) | batch-1 latency (ms) | of 294 GFLOP/s peak |")
print("|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
print()
best = max(rust_ips)
worst = min(rust_ips)
print(f"ratios (same run): runtime / Python onnxruntime = {worst / ort_py['batch_images_per_s']:.2f}–"
      f"{best / ort_py['batch_images_per_s']:.2f}; runtime / PyTorch eager = "
      f"{worst / pt['batch_images_per_s']:.2f}–{best / pt['batch_images_per_s']:.2f}")
PYEOF
