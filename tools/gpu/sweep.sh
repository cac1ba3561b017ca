#!/usr/bin/env bash
# Runs on the GPU host: a sweep of recipe variants for the CPU model (issue 6).
# Each variant is `plainnet` (unless the line names a --model) with the recipe $RECIPE
# (default tools/gpu/recipes/cpu-v1.json, the `cpu` recipe the four 2026-11-26 rounds
# started from), plus the overrides of one line of
# tools/gpu/sweep-plainnet.txt (`name  args...`; a line's own --model or --recipe wins), run JOBS at a time on the one GPU
# (a batch-256 step of this small net leaves most of an H100 idle). The CPU run of the
# winner then takes ~50 minutes instead of every variant doing so.
# Writes $OUT/sweep.jsonl (one `--json` summary per variant, plus its name and args),
# $OUT/curves.tar.gz (every variant's metrics.jsonl) and $OUT/sweep.log.
# Env: OUT, SP (torch site-packages), JOBS (default 3), BUDGET_S (default 420: no variant
# starts after it), DEVICE (default cuda), VARIANTS (file, default tools/gpu/sweep-plainnet.txt).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
SP=${SP:-/opt/torch/.venv/lib/python3.12/site-packages}
export LD_LIBRARY_PATH="$SP/torch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
JOBS=${JOBS:-3}; BUDGET_S=${BUDGET_S:-420}; DEVICE=${DEVICE:-cuda}
RECIPE=${RECIPE:-tools/gpu/recipes/cpu-v1.json}
# EXTRA: more train-zoo args for every variant (a CPU dry run: DEVICE=cpu EXTRA="--train-limit 512 --epochs 1").
read -r -a extra <<< "${EXTRA:-}"
VARIANTS=${VARIANTS:-tools/gpu/sweep-plainnet.txt}
bin=.gpu/bin/train-zoo
[ -x "$bin" ] || { gzip -dc .gpu/bin/train-zoo.gz > "$bin" && chmod +x "$bin"; }
log="$OUT/sweep.log"
{
  [ -f .gpu/gpu-host-facts ] && bash .gpu/gpu-host-facts
  echo "== data"
  mkdir -p /tmp/cifar && ln -sf "$PWD"/.cifar-parts/p*/* /tmp/cifar/ && (cd /tmp/cifar && md5sum -c MD5SUMS)
} > "$log" 2>&1
start=$(date +%s)
run_one() {
  local name=$1; shift
  local t0; t0=$(date +%s)
  local model=(--model plainnet) recipe=(--recipe "$RECIPE")
  [[ " $* " == *" --model "* ]] && model=()
  [[ " $* " == *" --recipe "* ]] && recipe=()
  "$bin" "${model[@]}" "${recipe[@]}" --device "$DEVICE" --data-dir /tmp/cifar \
    --run-dir "/tmp/sweep/$name" --name "plainnet-$name" --json --no-progress "${extra[@]}" "$@" \
    > "/tmp/sweep/$name.json" 2> >(grep -v 'autocast::' > "/tmp/sweep/$name.log")
  local rc=$?
  python3 - "$name" "$rc" "$(( $(date +%s) - t0 ))" "$*" >> "$OUT/sweep.jsonl" <<'PY'
import json, sys
name, rc, wall, args = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
try:
    d = json.loads(open(f"/tmp/sweep/{name}.json").read().strip().splitlines()[-1])
except Exception:
    d = {}
d.update(variant=name, exit=rc, wall_s=wall, args=args)
print(json.dumps(d))
PY
}
mkdir -p /tmp/sweep
while read -r name args; do
  [ -z "$name" ] || [ "${name:0:1}" = "#" ] && continue
  if (( $(date +%s) - start > BUDGET_S )); then echo "== budget spent, skipping $name" >> "$log"; continue; fi
  while (( $(jobs -rp | wc -l) >= JOBS )); do sleep 1; done
  echo "== $name: $args ($(date -u +%T))" >> "$log"
  eval "run_one $name $args" &
done < "$VARIANTS"
wait
(cd /tmp/sweep && tar -czf "$OUT/curves.tar.gz" */metrics.jsonl *.log) 2>>"$log"
nvidia-smi --query-gpu=name,memory.used --format=csv >> "$log" 2>&1
python3 - "$OUT/sweep.jsonl" <<'PY'
import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l)
    print(f"{d['variant']:<14} exit {d['exit']} {d.get('top1', float('nan')):6.2f} / {d.get('top1_flip_tta', float('nan')):6.2f} %  "
          f"{d.get('images_per_s', 0):7.0f} img/s  {d['wall_s']:4d} s  {d['args']}")
PY
