#!/usr/bin/env bash
# On the GPU host (issue 14, item 3): why Model-1 and Model-2 crash cuDNN with "misaligned
# address" under bf16 + channels-last in train-zoo, and what trains them channels-last.
# Needs no CIFAR-10 (synthetic batches) and, for parts 1-2, only PyTorch (the host's
# torch 2.11.0+cu130, the same libtorch and cuDNN train-zoo loads there).
#
#  1. crash test: bench/cudnn_layout.py, one process per variant (a CUDA error poisons its
#     process), JOBS at a time, a few steps each. Variants (bench/cudnn_layout.py explains
#     them): parameters in one packed flat buffer as train-zoo's FlatSgd keeps them (the
#     suspect), the same buffer with offsets aligned to 16 or 256 bytes, separate tensors
#     with NCHW or channels-last weights; and, on the packed buffer, cuDNN autotuning off,
#     fp16 autocast, fp32 (TF32), NCHW activations; the packed variant again under
#     CUDA_LAUNCH_BLOCKING=1 so the traceback names the failing kernel; TPSNet packed as
#     the control that never crashed.
#  2. timing: every variant that survived, one process per model running them one after
#     another (bench/cudnn_layout.py --variants), WARMUP + STEPS steps each (the numbers
#     to compare; nothing else runs on the GPU meanwhile).
#  3. train-zoo itself: `train-zoo bench --recipe fast` for every model (today Model-1/2
#     fall back to NCHW there), plus each line of TRAINER_VARIANTS (a file of
#     `label  bench-args...`, e.g. a recipe JSON that forces channels-last once the trainer
#     can) to check that it survives.
# Writes $OUT/cudnn-variants.jsonl and $OUT/cudnn-variants.txt (the table, also printed).
# Env: JOBS (default 6), STEPS (default 20), WARMUP (default 5), CUDNN_MODELS (default
#      "model2 model1"), ONLY (a regex: run only the variants whose label matches), PYTHON (default python3), TRAIN_ZOO/WIN_ROOT (tools/gpu/lib.sh),
#      SPEC_DIR (manifests with a "spec", default models/), BATCH (default 512), DEVICE,
#      BUDGET_S (default 160: no new process starts after it, later phases are skipped,
#      and the table is always written with whatever finished).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/lib.sh"
ensure_dirs
JOBS=${JOBS:-6}; STEPS=${STEPS:-20}; WARMUP=${WARMUP:-5}; BATCH=${BATCH:-512}
deadline=$(( $(date +%s) + ${BUDGET_S:-160} ))
left() { echo $(( deadline - $(date +%s) )); }
read -r -a models <<< "${CUDNN_MODELS:-model2 model1}"
PYTHON=${PYTHON:-$PY}
SPEC_DIR=${SPEC_DIR:-$root/models}
work="$WIN_ROOT/cudnn"; rm -rf "$work"; mkdir -p "$work"
spec_of() { # model -> a manifest holding its spec
  local f
  for f in "$SPEC_DIR/$1"-*.json; do [ -f "$f" ] && { echo "$f"; return 0; }; done
  die "no manifest $SPEC_DIR/$1-*.json to read the $1 spec from"
}
# label | cudnn_layout.py arguments (the packed flat buffer with channels-last bf16 input
# and NCHW weights is exactly what train-zoo's `fast` step hands cuDNN)
variants=(
  "packed|--params flat --align 1"
  "aligned16B|--params flat --align 4"
  "aligned256B|--params flat --align 64"
  "separate|--params separate --weights nchw"
  "separate_clw|--params separate --weights channels_last"
  "packed_nobench|--params flat --align 1 --benchmark 0"
  "packed_fp16|--params flat --align 1 --precision fp16"
  "packed_tf32|--params flat --align 1 --precision fp32"
  "packed_nchw|--params flat --align 1 --input nchw"
  "aligned256B_tf32|--params flat --align 64 --precision fp32"
)
jobs_file="$work/jobs.txt"; : > "$jobs_file"
for m in "${models[@]}"; do
  for v in "${variants[@]}"; do echo "$m|$v" >> "$jobs_file"; done
  echo "$m|packed_blocking|--params flat --align 1|CUDA_LAUNCH_BLOCKING=1" >> "$jobs_file"
done
echo "tpsnet|packed|--params flat --align 1" >> "$jobs_file"
if [ -n "${ONLY:-}" ]; then
  awk -F'|' -v re="$ONLY" '$2 ~ re' "$jobs_file" > "$jobs_file.only" && mv "$jobs_file.only" "$jobs_file"
fi

one() { # model label args [env] phase steps warmup
  local m=$1 label=$2 args=$3 envs=$4 phase=$5 steps=$6 warmup=$7
  read -r -a a <<< "$args"
  local t rc=0; t=$(left)
  if (( t > 150 )); then t=150; fi
  (cd "$root/bench" && env ${envs:+$envs} timeout "$t" "$PYTHON" cudnn_layout.py --spec "$(spec_of "$m")" \
     --name "$m" --variant "$label" --device "$DEVICE" --batch-size "$BATCH" \
     --warmup "$warmup" --steps "$steps" "${a[@]}") \
    > "$work/$phase-$m-$label.json" 2> "$work/$phase-$m-$label.log" || rc=$?
  if [ ! -s "$work/$phase-$m-$label.json" ]; then
    # Killed or died without its JSON line (a hard crash, the timeout): say so.
    "$PY" -c 'import json,sys; print(json.dumps({"model":sys.argv[1],"variant":sys.argv[2],"ok":False,"error":f"no result (exit {sys.argv[3]}); stderr tail: "+open(sys.argv[4]).read()[-300:]}))' \
      "$m" "$label" "$rc" "$work/$phase-$m-$label.log" > "$work/$phase-$m-$label.json"
  fi
  return 0
}
ok_json() { # a result file whose last line says ok
  "$PY" -c 'import json,sys
try: sys.exit(0 if json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]).get("ok") else 1)
except Exception: sys.exit(1)' "$1"
}
export work root PYTHON DEVICE BATCH SPEC_DIR

log "phase 1: crash test, $(wc -l < "$jobs_file") processes, $JOBS at a time"
t0=$(date +%s)
while IFS='|' read -r m label args envs; do
  while (( $(jobs -rp | wc -l) >= JOBS )); do sleep 0.5; done
  (( $(left) > 20 )) || { log "budget spent: $m $label not tested"; continue; }
  one "$m" "$label" "$args" "${envs:-}" crash 3 2 &
done < "$jobs_file"
wait
log "phase 1 took $(( $(date +%s) - t0 ))s"

log "phase 2: timing of the survivors, one process per model, one variant at a time, $WARMUP + $STEPS steps"
t0=$(date +%s)
for m in "${models[@]}" tpsnet; do
  (( $(left) > 30 )) || { log "budget spent: no timing for $m"; continue; }
  : > "$work/survivors-$m.jsonl"
  while IFS='|' read -r mm label args envs; do
    [ "$mm" = "$m" ] && [ -z "${envs:-}" ] || continue
    ok_json "$work/crash-$m-$label.json" || continue
    # The variant's options as JSON overrides for cudnn_layout.py --variants.
    "$PY" - "$label" $args >> "$work/survivors-$m.jsonl" <<'PY'
import json, sys
label, rest = sys.argv[1], sys.argv[2:]
d = {"variant": label, "params": "flat", "align": 1, "input": "channels_last", "weights": "nchw",
     "precision": "bf16", "benchmark": 1}
for k, v in zip(rest[::2], rest[1::2]):
    k = k.lstrip("-").replace("-", "_")
    d[k] = int(v) if v.isdigit() else v
print(json.dumps(d))
PY
  done < "$jobs_file"
  [ -s "$work/survivors-$m.jsonl" ] || continue
  (cd "$root/bench" && timeout "$(( $(left) - 10 ))" "$PYTHON" cudnn_layout.py --spec "$(spec_of "$m")" --name "$m" \
     --device "$DEVICE" --batch-size "$BATCH" --warmup "$WARMUP" --steps "$STEPS" \
     --variants "$work/survivors-$m.jsonl") > "$work/time-$m.jsonl" 2> "$work/time-$m.log" || true
done
log "phase 2 took $(( $(date +%s) - t0 ))s"

log "phase 3: train-zoo bench"
if (( $(left) < 25 )); then
  log "budget spent: phase 3 skipped"
elif bin=$(TRAIN_ZOO=${TRAIN_ZOO:-} train_zoo_bin 2>/dev/null); then
  timeout "$(( $(left) - 5 ))" "$bin" bench --device "$DEVICE" --recipe fast --batch-size "$BATCH" --warmup "$WARMUP" --steps "$STEPS" \
    --model tpsnet "${models[@]}" > "$work/trainer-fast.jsonl" 2> >(grep -v 'autocast::' > "$work/trainer-fast.log") || true
  if [ -n "${TRAINER_VARIANTS:-}" ] && [ -f "$TRAINER_VARIANTS" ]; then
    while read -r label args; do
      [ -z "$label" ] || [ "${label:0:1}" = "#" ] && continue
      read -r -a a <<< "$args"
      (( $(left) > 15 )) || continue
      timeout "$(( $(left) - 5 ))" "$bin" bench --device "$DEVICE" --batch-size "$BATCH" --warmup "$WARMUP" --steps "$STEPS" "${a[@]}" \
        > "$work/trainer-$label.jsonl" 2> "$work/trainer-$label.log" || true
    done < "$TRAINER_VARIANTS"
  fi
else
  log "no staged train-zoo: phase 3 skipped"
fi

"$PY" - "$work" "$OUT/cudnn-variants.jsonl" <<'PY' | tee "$OUT/cudnn-variants.txt"
import glob, json, os, sys
work, out = sys.argv[1], sys.argv[2]
rows = []
for f in sorted(glob.glob(f"{work}/crash-*.json")):
    try:
        d = json.loads(open(f).read().strip().splitlines()[-1])
    except Exception as e:
        d = {"ok": False, "error": f"unreadable result {f}: {e}"}
    d["phase"] = "crash"
    rows.append(d)
for f in sorted(glob.glob(f"{work}/time-*.jsonl")):
    for l in open(f):
        if l.strip().startswith("{"):
            d = json.loads(l)
            d["phase"] = "time"
            rows.append(d)
trainer = []
for f in sorted(glob.glob(f"{work}/trainer-*.jsonl")):
    label = os.path.basename(f)[len("trainer-"):-len(".jsonl")]
    lines = [l for l in open(f) if l.strip().startswith("{")]
    log = open(f[:-len(".jsonl")] + ".log").read() if os.path.exists(f[:-len(".jsonl")] + ".log") else ""
    for l in lines:
        d = json.loads(l); d["label"] = label; trainer.append(d)
    if not lines:
        trainer.append({"label": label, "ok": False, "error": log[-300:]})
with open(out, "w") as o:
    for d in rows + [dict(t, phase="trainer") for t in trainer]:
        o.write(json.dumps(d) + "\n")
timed = {(d.get("model"), d.get("variant")): d for d in rows if d["phase"] == "time" and d.get("ok")}
print(f"{'model':<7} {'variant':<17} {'crash test':<10} {'img/s':>8}  error / where")
for d in rows:
    if d["phase"] != "crash":
        continue
    t = timed.get((d.get("model"), d.get("variant")))
    ips = f"{t['median_images_per_s']:8.0f}" if t else "       -"
    err = "" if d.get("ok") else d.get("error", "")[:110]
    if not d.get("ok") and d.get("where"):
        frames = [l.strip() for l in d["where"].splitlines() if l.strip().startswith("File")]
        err += " | at " + (frames[-1][-90:] if frames else "?")
    print(f"{d.get('model','?'):<7} {d.get('variant','?'):<17} {'ok' if d.get('ok') else 'FAILED':<10} {ips}  {err}")
print("\ntrain-zoo bench (its own step):")
for t in trainer:
    if "median_images_per_s" in t:
        print(f"  {t['label']:<12} {t['model']:<8} {t['median_images_per_s']:8.0f} img/s  recipe {t.get('recipe')}")
    else:
        print(f"  {t['label']:<12} FAILED: {t.get('error','')[-200:]}")
PY
