#!/usr/bin/env bash
# Training-step throughput, ours (train-zoo bench, tch) vs plain PyTorch eager: same
# model, batch, memory format, precision, augmentation and update, same machine, one
# run. Prints JSON lines and a markdown table with the ratio (ours / PyTorch, medians of
# the timed steps).
# Usage: bench/train-throughput.sh [cpu|cuda] [batch] [steps] [models...]
# Env: TRAIN_ZOO (binary, default target/release/train-zoo), PYTHON (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
device=${1:-cpu}; batch=${2:-256}; steps=${3:-5}; shift $(( $# < 3 ? $# : 3 )) || true
models=("$@"); [ ${#models[@]} -gt 0 ] || models=(tpsnet model2 model1)
bin=${TRAIN_ZOO:-target/release/train-zoo}
py=${PYTHON:-.venv/bin/python}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# Both sides channels-last (the faster layout on the CPU's oneDNN and on tensor cores);
# bf16 autocast on CUDA only (slower on this CPU, docs/design-notes.md#cpu-peer-figures).
recipe=cpu; extra=(--channels-last)
if [ "$device" != cpu ]; then recipe=fast; extra=(--amp --channels-last); fi
"$bin" list --json > "$tmp/presets.jsonl"
echo "| model | device | batch | ours img/s | PyTorch eager img/s | ratio |"
echo "|---|---|---|---|---|---|"
for m in "${models[@]}"; do
  "$py" -c "import json,sys; [print(json.dumps(r['spec'])) for r in map(json.loads, open('$tmp/presets.jsonl')) if r['name']=='$m']" > "$tmp/$m.json"
  ours=$("$bin" bench --model "$m" --recipe $recipe --batch-size "$batch" --steps "$steps" --device "$device" 2>/dev/null)
  theirs=$("$py" bench/train_torch.py --spec "$tmp/$m.json" --name "$m" --batch-size "$batch" --steps "$steps" --device "$device" "${extra[@]}")
  echo "$ours" >&2; echo "$theirs" >&2
  "$py" - "$ours" "$theirs" "$m" "$device" "$batch" <<'PY'
import json, sys
o, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
a, b = o["median_images_per_s"], t["median_images_per_s"]
print(f"| {sys.argv[3]} | {o['device']} | {sys.argv[5]} | {a:.1f} | {b:.1f} | {a/b:.2f} |")
PY
done
