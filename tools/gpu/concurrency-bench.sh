#!/usr/bin/env bash
# On the GPU host: does running the plan's models at once on the one GPU raise total
# throughput? Times `train-zoo bench` (the plan's recipe; full training steps on
# synthetic data) for every model alone (one process, one after another), then for the
# two slowest together, then all of them together (one process each, started at once,
# each given a number of steps proportional to its speed alone so that they overlap for
# the whole timed part). Speed-up of a set = sum over its models of
# (images/s together) / (images/s alone): 1.0 means no gain over one after another.
# Writes $OUT/concurrency.jsonl (every bench line) and $STAGE/concurrency.json, whose
# "decision" (concurrent if the all-together speed-up is at least MIN_GAIN, default 1.10,
# else sequential) tools/gpu/window.sh follows with MODE=auto.
# Env: PLAN (the models and their --recipe), STEPS (default 40), WARMUP (default 10),
#      BATCH (default 512), DEVICE, TRAIN_ZOO, WIN_ROOT (tools/gpu/lib.sh), BUDGET_S
#      (default 100: a set that would start after it is skipped; the decision is then
#      made from what was measured, and without any together-set it is `concurrent`).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
ensure_dirs
PLAN=${PLAN:-$here/plan-issue14.txt}
STEPS=${STEPS:-40}; WARMUP=${WARMUP:-10}; BATCH=${BATCH:-512}; MIN_GAIN=${MIN_GAIN:-1.10}
bin=$(train_zoo_bin)
deadline=$(( $(date +%s) + ${BUDGET_S:-100} ))
left() { echo $(( deadline - $(date +%s) )); }
work="$WIN_ROOT/concurrency"; rm -rf "$work"; mkdir -p "$work"
mapfile -t plan < <(grep -v '^[[:space:]]*\(#\|$\)' "$PLAN")
models=(); recipe=fast
for line in "${plan[@]}"; do
  read -r _ model _ args <<< "$line"
  models+=("$model")
  [[ " $args " =~ \ --recipe\ ([^ ]+) ]] && recipe=${BASH_REMATCH[1]}
done
bench() { # label steps warmup model -> one JSON line in $work/label-model.json
  timeout "$(( $(left) - 3 ))" "$bin" bench --device "$DEVICE" --recipe "$recipe" --batch-size "$BATCH" --warmup "$3" --steps "$2" \
    --model "$4" > "$work/$1-$4.json" 2> >(grep -v 'autocast::' > "$work/$1-$4.log")
}

log "alone: ${models[*]} (one process, $WARMUP + $STEPS steps each, recipe $recipe)"
t0=$(date +%s)
timeout "$(( $(left) - 5 ))" "$bin" bench --device "$DEVICE" --recipe "$recipe" --batch-size "$BATCH" --warmup "$WARMUP" --steps "$STEPS" \
  --model "${models[@]}" > "$work/alone.jsonl" 2> >(grep -v 'autocast::' > "$work/alone.log")
log "alone took $(( $(date +%s) - t0 ))s"
declare -A alone
while read -r l; do
  m=$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["model"])' "$l")
  alone[$m]=$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["median_images_per_s"])' "$l")
done < "$work/alone.jsonl"
for m in "${models[@]}"; do [ -n "${alone[$m]:-}" ] || die "no alone measurement for $m (see $work/alone.log)"; done

# Slowest first: steps proportional to speed alone, so the sets overlap throughout.
mapfile -t by_speed < <(for m in "${models[@]}"; do echo "${alone[$m]} $m"; done | sort -g | awk '{print $2}')
slowest=${alone[${by_speed[0]}]}
together() { # label models...
  local label=$1; shift
  local m s w pids=()
  (( $(left) > 25 )) || { log "budget spent: $label skipped"; return 0; }
  t0=$(date +%s)
  for m in "$@"; do
    s=$("$PY" -c "print(max(5, round($STEPS * ${alone[$m]} / $slowest)))")
    w=$("$PY" -c "print(max(3, round($WARMUP * ${alone[$m]} / $slowest)))")
    bench "$label" "$s" "$w" "$m" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || log "a $label bench process failed (see $work/$label-*.log)"; done
  log "$label ($*) took $(( $(date +%s) - t0 ))s"
}
sets=()
if (( ${#models[@]} >= 3 )); then
  together pair "${by_speed[0]}" "${by_speed[1]}"; sets+=(pair)
fi
together all "${models[@]}"; sets+=(all)

cat "$work/alone.jsonl" > "$OUT/concurrency.jsonl"
for s in "${sets[@]}"; do
  for f in "$work/$s"-*.json; do
    [ -s "$f" ] && "$PY" -c 'import json,sys; d=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); d["set"]=sys.argv[2]; print(json.dumps(d))' "$f" "$s" >> "$OUT/concurrency.jsonl"
  done
done
"$PY" - "$OUT/concurrency.jsonl" "$MIN_GAIN" "$STAGE/concurrency.json" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
alone = {r["model"]: r["median_images_per_s"] for r in rows if "set" not in r}
result = {"alone": alone, "sets": {}}
print(f"{'set':<6} {'model':<8} {'img/s alone':>12} {'img/s together':>15} {'ratio':>6}")
for r in rows:
    if "set" in r:
        m, ips = r["model"], r["median_images_per_s"]
        result["sets"].setdefault(r["set"], {})[m] = ips
        print(f"{r['set']:<6} {m:<8} {alone[m]:>12.0f} {ips:>15.0f} {ips / alone[m]:>6.2f}")
for s, d in result["sets"].items():
    result[f"speedup_{s}"] = round(sum(ips / alone[m] for m, ips in d.items()), 3)
    print(f"speed-up {s} ({len(d)} at once): {result[f'speedup_{s}']:.2f}x the throughput of one after another")
gain = result.get("speedup_all", result.get("speedup_pair"))
result["decision"] = "concurrent" if gain is None or gain >= float(sys.argv[2]) else "sequential"
if gain is None:
    print("no together-set was measured: decision defaults to concurrent")
    gain = float("nan")
result["min_gain"] = float(sys.argv[2])
largest = "all" if "speedup_all" in result else "pair"
print(f"decision: {result['decision']} (speed-up of the largest set measured, {largest}: {gain:.2f}; threshold {sys.argv[2]})")
json.dump(result, open(sys.argv[3], "w"), indent=1)
PY
cp "$STAGE/concurrency.json" "$OUT/concurrency.json"
