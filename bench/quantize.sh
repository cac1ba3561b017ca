#!/usr/bin/env bash
# Int8 benchmark on the CPU: for each zoo model, the fp32 model, our int8 variant (as
# published in models/ by tpsnet-quantize) and Python onnxruntime's quantize_static at
# its default and at its best configuration, calibrated on the same training images as
# ours. Top-1 on the test set (single view and flip TTA), batch-256 throughput, batch-1
# latency and file size, all in one harness (bench/quantize_peers.py), one run.
#
#   bench/quantize.sh [NAMES]     # NAMES: comma-separated, measured in that order
#                                 # (default: every model that has an int8 variant in
#                                 # models/, by name)
#
# Env: CIFAR10_DIR (required), TPSNET_PYTHON (default .venv/bin/python), BENCH_REPEATS
# (timed batch runs per measurement, default 5), BENCH_ROUNDS (rotated rounds, default
# 3), BENCH_TEST_LIMIT (first N test images only, for a quick look; unset = all 10,000).
# Writes target/bench-quantize/report.json and table.md. Takes about 30 minutes on an
# idle 2-core machine (most of it the full-test-set runs of tpsnet, model1 and model2).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${TPSNET_PYTHON:-$PWD/.venv/bin/python}
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$PWD/.venv/libonnxruntime.so}
: "${CIFAR10_DIR:?set CIFAR10_DIR to the cifar-10-batches-bin folder}"
OUT=$PWD/target/bench-quantize
mkdir -p "$OUT"

echo "== build (release)" >&2
cargo build --release -q -p tpsnet-quantize

# The calibration set our int8 models were made with (every int8 manifest must agree),
# so that onnxruntime calibrates on exactly the same training images.
read -r NAMES_FOUND SEED COUNT SHA < <("$PY" - "${1:-}" <<'PYEOF'
import glob, json, sys
want = [n for n in sys.argv[1].split(",") if n]
found, cals = {}, set()
for p in sorted(glob.glob("models/*.json")):
    m = json.load(open(p))
    q = m.get("quantization")
    if m.get("precision") != "int8" or q is None:
        continue
    src = q["source"]["name"]
    if want and src not in want:
        continue
    found[src] = True
    c = q["calibration"]
    cals.add((c["seed"], c["images"], c["indices_sha256"]))
# In the order asked for (the biggest first finishes them on a busy machine), else by name.
names = [n for n in want if n in found] if want else list(found)
if not names:
    sys.exit("no int8 models in models/ (run tpsnet-quantize --all first)")
if len(cals) != 1:
    sys.exit(f"the int8 models were calibrated on different sets: {cals}")
seed, count, sha = cals.pop()
print(",".join(names), seed, count, sha)
PYEOF
)
target/release/tpsnet-quantize --print-calibration-set --seed "$SEED" \
  --calibration-images "$COUNT" --validation-images 0 > "$OUT/calibration.json"
"$PY" - "$OUT/calibration.json" "$SHA" <<'PYEOF'
import json, sys
c = json.load(open(sys.argv[1]))
assert c["calibration_sha256"] == sys.argv[2], "calibration indices differ from the manifests'"
PYEOF

echo "== models: $NAMES_FOUND; calibration: $COUNT training images, seed $SEED" >&2
"$PY" bench/quantize_peers.py --models-dir models --data-dir "$CIFAR10_DIR" \
  --calibration "$OUT/calibration.json" --out "$OUT" --names "$NAMES_FOUND" \
  --repeats "${BENCH_REPEATS:-5}" --rounds "${BENCH_ROUNDS:-3}" \
  ${BENCH_TEST_LIMIT:+--test-limit "$BENCH_TEST_LIMIT"} | tee "$OUT/table.md"
