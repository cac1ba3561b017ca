#!/usr/bin/env bash
# On the GPU host: one training window for the runs of a plan (default
# tools/gpu/plan-issue14.txt), under a wall-clock budget, then everything packed for the
# trip back. docs/lab/gpu-runbook.md has the call-by-call procedure around it.
#
#  1. takes in this call's carried parts (tools/gpu/host-stage.sh) and restores the runs
#     staged by tools/gpu/stage-window --train (checkpoints of unfinished runs) unless
#     this host already holds a newer state of them;
#  2. runs every unfinished plan entry with `train-zoo ... --resume` (a fresh run starts
#     from scratch), all at once or one after another (MODE), each killed at the deadline
#     BUDGET_S - PACK_S after the start: the last checkpoint (written atomically after
#     every epoch) survives, at most one epoch's work is lost;
#  3. packs, one archive per run, finished models (ONNX, manifest, curves) and the
#     checkpoints of unfinished runs, and one archive of the logs and window.json (what
#     ran, epochs, seconds), as $PACK/<window>-<run>.tar.gz.part-NN (15 MiB each) with
#     SHA256SUMS and the return ORDER (logs, finished models, checkpoints), and puts
#     window.json, window.log, SHA256SUMS and as many parts as the device tool's return
#     limits allow into $OUT; tools/gpu/return-parts.sh returns the rest.
#
# Env (and tools/gpu/lib.sh's paths):
#   PLAN        plan file (default tools/gpu/plan-issue14.txt)
#   BUDGET_S    wall-clock seconds for this whole script (default 540; give the device call
#               a timeout_s of at least BUDGET_S + 30)
#   PACK_S      seconds kept back for packing (default 40)
#   MODE        concurrent | sequential | auto (default auto: what the last
#               tools/gpu/concurrency-bench.sh on this host decided, else what an
#               earlier window's decided (staged with the train bundle), else concurrent)
#   EVAL_EVERY  test-set curve point every N epochs (default 5; the final epoch always)
#   THREADS     libtorch CPU threads per run (default 4: three runs share 16 cores)
#   EXTRA       more train-zoo arguments for every run (CPU dry runs: "--train-limit 256 ...")
#   STOP_AFTER  stop each run cleanly after this many epochs in this window (train-zoo
#               --stop-after; for dry runs and for splitting a window on purpose)
#   PACK_ONLY=1 skip training: pack what this host holds (after a call that timed out)
#   WINDOW_ID   name of this window's pack (default w<UTC date-time>)
#   ODD_CL_SET  train-zoo `--set` arguments that let a model whose widths are not multiples
#               of 8 train channels-last (a trainer switch that does not exist yet, see
#               docs/lab/gpu-runbook.md, item 3). For a run that starts fresh in this window
#               and has such widths, a short `train-zoo bench` probes the switch first; if
#               it survives and really trains channels-last, the run gets the switch.
# A run's arguments are fixed when it starts: they are kept in its run folder (args.txt,
# which travels with the checkpoint), and every later window resumes with exactly them.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
ensure_dirs
t_start=$(date +%s)
PLAN=${PLAN:-$here/plan-issue14.txt}
BUDGET_S=${BUDGET_S:-540}
PACK_S=${PACK_S:-40}
MODE=${MODE:-auto}
EVAL_EVERY=${EVAL_EVERY:-5}
THREADS=${THREADS:-4}
WINDOW_ID=${WINDOW_ID:-w$(date -u +%Y%m%dT%H%M%S)}
read -r -a extra <<< "${EXTRA:-}"
[ -n "${STOP_AFTER:-}" ] && extra+=(--stop-after "$STOP_AFTER")
[ -f "$PLAN" ] || die "plan $PLAN not found"
LOGS="$WIN_ROOT/logs"
mkdir -p "$LOGS"
wlog="$LOGS/window.log"
exec 3>>"$wlog"
say() { printf '[%s] %s\n' "$(date -u +%T)" "$*" | tee -a /dev/fd/3 >&2; }

# --- 1. staging and restore ---------------------------------------------------------
"$here/host-stage.sh" 2>&1 | tee -a /dev/fd/3 >&2 || die "staging failed (see above)"
bin=$(train_zoo_bin)
data=$(cifar_dir)
bin_sha=$(sha256sum "$bin" | cut -d' ' -f1)
say "window $WINDOW_ID: plan $PLAN, budget ${BUDGET_S}s (pack ${PACK_S}s), device $DEVICE, train-zoo sha256 ${bin_sha:0:12}"
if [ "$DEVICE" != cpu ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader 2>&1 | tee -a /dev/fd/3 >&2 || true
fi

# Plan entries: name model epochs args...
mapfile -t plan < <(grep -v '^[[:space:]]*\(#\|$\)' "$PLAN")
(( ${#plan[@]} > 0 )) || die "plan $PLAN has no runs"

epochs_done() { # run dir -> epochs in its metrics.jsonl (one line per finished epoch)
  if [ -f "$1/metrics.jsonl" ]; then grep -c . "$1/metrics.jsonl" || true; else echo 0; fi
}
finished_manifest() { # name epochs -> path of a manifest of this run with that many epochs
  local f
  for f in "$MODELS/$1"-*.json "$STAGE/x/train/done/$1.json"; do
    [ -f "$f" ] || continue
    if "$PY" - "$f" "$2" "$full_test" "$1" <<'PY' 2>/dev/null; then
import json, sys
d = json.load(open(sys.argv[1]))
ok = d["training"]["epochs"] == int(sys.argv[2]) and d["name"] == sys.argv[4]
ok = ok and (d["metrics"]["images"] == 10000 or sys.argv[3] == "0")
sys.exit(0 if ok else 1)
PY
      echo "$f"; return 0
    fi
  done
  return 1
}
# A dry run with --test-limit evaluates on part of the test set; its manifests count too.
full_test=1
[[ " ${EXTRA:-} " == *" --test-limit "* ]] && full_test=0

restored=()
for line in "${plan[@]}"; do
  read -r name _ <<< "$line"
  staged="$STAGE/x/train/runs/$name"
  [ -f "$staged/checkpoint.ot" ] || continue
  if [ -f "$RUNS/$name/checkpoint.ot" ] && (( $(epochs_done "$RUNS/$name") >= $(epochs_done "$staged") )); then
    say "$name: this host's run ($(epochs_done "$RUNS/$name") epochs) is at least as far as the staged one; keeping it"
    continue
  fi
  rm -rf "$RUNS/$name" && mkdir -p "$RUNS/$name"
  cp -a "$staged"/. "$RUNS/$name"/
  restored+=("$name")
  say "$name: restored the staged checkpoint ($(epochs_done "$RUNS/$name") epochs done)"
done

# --- 2. train ------------------------------------------------------------------------
if [ "$MODE" = auto ]; then
  MODE=concurrent
  for f in "$STAGE/concurrency.json" "$STAGE/x/train/concurrency.json"; do
    # This host's measurement, else the one an earlier window brought back.
    if [ -f "$f" ]; then
      MODE=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["decision"])' "$f")
      say "mode from $f"
      break
    fi
  done
fi
case $MODE in concurrent|sequential) ;; *) die "MODE must be concurrent, sequential or auto, not $MODE";; esac
deadline=$(( t_start + BUDGET_S - PACK_S ))
say "mode $MODE; training deadline in $(( deadline - $(date +%s) ))s"

declare -A before start_s end_s state
launch() { # name model epochs args... ; runs in the foreground
  local name=$1 model=$2 epochs=$3; shift 3
  local left=$(( deadline - $(date +%s) ))
  if (( left < 20 )); then echo "$name: no time left to start" >> "$LOGS/$name.log"; return 0; fi
  mkdir -p "$RUNS/$name"
  # TERM at the deadline; KILL 10 s later if it did not die (the checkpoint is atomic).
  set +e
  timeout -s TERM -k 10 "$left" "$bin" --model "$model" --name "$name" --epochs "$epochs" "$@" \
    --device "$DEVICE" --threads "$THREADS" --data-dir "$data" --run-dir "$RUNS/$name" --out "$MODELS" \
    --resume --json --no-progress --eval-test-every "$EVAL_EVERY" "${extra[@]}" \
    > "$LOGS/$name.json" 2> >(grep --line-buffered -v 'autocast::' > "$LOGS/$name.log")
  local code=$?
  set -e
  echo "$code" > "$LOGS/$name.rc"
}

odd_widths() { # model -> true if a stem or layer width is not a multiple of 8
  "$bin" list --json | "$PY" -c '
import json, sys
for l in sys.stdin:
    d = json.loads(l)
    if d["name"] == sys.argv[1]:
        s = d["spec"]
        sys.exit(0 if any(c % 8 for c in [s["stem_channels"]] + [x["channels"] for x in s["layers"]]) else 1)
sys.exit(1)' "$1"
}
odd_cl_probe() { # model recipe -> 0 if the trainer trains it channels-last with ODD_CL_SET and survives
  local m=$1 r=$2 j="$STAGE/odd-cl-$1.json"
  read -r -a sets <<< "$ODD_CL_SET"
  recipe_json "$bin" "$r" "${sets[@]}" > "$j" 2>/dev/null || return 1
  "$bin" bench --device "$DEVICE" --recipe "$j" --batch-size 512 --warmup 3 --steps 3 --model "$m" \
    > "$LOGS/probe-$m.json" 2> "$LOGS/probe-$m.log" || return 1
  grep -q median_images_per_s "$LOGS/probe-$m.json" && ! grep -q 'channels_last switched off' "$LOGS/probe-$m.log"
}

todo=()
declare -A eff_args
for line in "${plan[@]}"; do
  read -r name model epochs args <<< "$line"
  before[$name]=$(epochs_done "$RUNS/$name")
  if m=$(finished_manifest "$name" "$epochs"); then
    state[$name]=finished-earlier
    say "$name: finished earlier ($m), nothing to train"
    continue
  fi
  if [ -f "$RUNS/$name/args.txt" ]; then
    eff_args[$name]=$(cat "$RUNS/$name/args.txt")
    [ "${eff_args[$name]}" = "$args" ] || say "$name: resuming with the arguments it started with: ${eff_args[$name]} (plan: $args)"
  else
    eff_args[$name]=$args
    if [ -n "${ODD_CL_SET:-}" ] && [ ! -f "$RUNS/$name/checkpoint.ot" ] && odd_widths "$model"; then
      recipe=fast; [[ " $args " =~ \ --recipe\ ([^ ]+) ]] && recipe=${BASH_REMATCH[1]}
      if odd_cl_probe "$model" "$recipe"; then
        eff_args[$name]="$args $ODD_CL_SET"
        say "$name: the channels-last probe passed; this run trains with: $ODD_CL_SET"
      else
        say "$name: the channels-last probe failed ($LOGS/probe-$model.log); NCHW as before"
      fi
    fi
    mkdir -p "$RUNS/$name" && echo "${eff_args[$name]}" > "$RUNS/$name/args.txt"
  fi
  todo+=("$name $model $epochs ${eff_args[$name]}")
done

if [ "${PACK_ONLY:-0}" != 1 ]; then
  pids=()
  for line in "${todo[@]}"; do
    read -r name model epochs args <<< "$line"
    read -r -a a <<< "$args"
    rm -f "$LOGS/$name.rc"
    start_s[$name]=$(date +%s)
    say "$name: start ($model, $epochs epochs planned, ${before[$name]} done) $args"
    if [ "$MODE" = concurrent ]; then
      launch "$name" "$model" "$epochs" "${a[@]}" &
      pids+=($!)
    else
      launch "$name" "$model" "$epochs" "${a[@]}"
      end_s[$name]=$(date +%s)
      say "$name: exit $(cat "$LOGS/$name.rc" 2>/dev/null || echo '?') after $(( end_s[$name] - start_s[$name] ))s"
    fi
  done
  if [ "$MODE" = concurrent ]; then
    for p in "${pids[@]}"; do wait "$p" || true; done
    for line in "${todo[@]}"; do
      read -r name _ <<< "$line"
      # The end time of a concurrent run: its log's last write.
      end_s[$name]=$(stat -c %Y "$LOGS/$name.log" 2>/dev/null || date +%s)
      say "$name: exit $(cat "$LOGS/$name.rc" 2>/dev/null || echo '?') after $(( end_s[$name] - start_s[$name] ))s"
    done
  fi
fi

# --- 3. pack -------------------------------------------------------------------------
summary="$LOGS/window.json"
{
  for line in "${plan[@]}"; do
    read -r name model epochs args <<< "$line"
    m=$(finished_manifest "$name" "$epochs" || true)
    after=$(epochs_done "$RUNS/$name")
    code=$(cat "$LOGS/$name.rc" 2>/dev/null || echo null)
    s=${start_s[$name]:-}; e=${end_s[$name]:-}
    "$PY" - "$name" "$model" "$epochs" "${eff_args[$name]:-$args}" "${before[$name]}" "$after" "$code" "${s:-0}" "${e:-0}" "${m:-}" "$RUNS/$name" "${state[$name]:-}" <<'PY'
import json, sys
name, model, epochs, args, before, after, code, s, e, manifest, run, state = sys.argv[1:13]
rec = {"name": name, "model": model, "planned_epochs": int(epochs), "args": args,
       "epochs_before": int(before), "epochs_after": int(after),
       "exit": None if code == "null" else int(code), "wall_s": int(e) - int(s) if int(s) else 0}
rows = []
try:
    rows = [json.loads(l) for l in open(f"{run}/metrics.jsonl") if l.strip()]
except OSError:
    pass
new = rows[int(before):]
rec["train_s_this_window"] = round(sum(r.get("train_time_s") or 0 for r in new), 2)
rec["train_s_total"] = round(sum(r.get("train_time_s") or 0 for r in rows), 2)
if new:
    rec["images_per_s_this_window"] = round(sum(r["images_per_s"] for r in new) / len(new))
if manifest:
    d = json.load(open(manifest))
    rec.update(status=state or "finished", manifest=manifest.rsplit("/", 1)[-1],
               top1=d["metrics"]["top1"], top1_flip_tta=d["metrics"].get("top1_flip_tta"),
               test_images=d["metrics"]["images"], wall_time_s=d["training"]["wall_time_s"])
else:
    rec["status"] = "unfinished" if int(after) else "not started"
print(json.dumps(rec))
PY
  done
} > "$LOGS/runs.jsonl"
"$PY" - "$LOGS/runs.jsonl" "$WINDOW_ID" "$bin_sha" "$MODE" "$BUDGET_S" "$t_start" "$DEVICE" "${EXTRA:-}" > "$summary" <<'PY'
import json, subprocess, sys, time
runs = [json.loads(l) for l in open(sys.argv[1])]
gpu = ""
if sys.argv[7] != "cpu":
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:
        pass
print(json.dumps({"window": sys.argv[2], "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "train_zoo_sha256": sys.argv[3], "mode": sys.argv[4], "budget_s": int(sys.argv[5]),
                  "script_wall_s": int(time.time()) - int(sys.argv[6]), "device": sys.argv[7], "gpu": gpu,
                  "extra": sys.argv[8], "runs": runs}, indent=1))
PY

# One archive per run (so that a run whose parts all came back can be filed even if
# another run's did not), plus one of the logs; parts of 15 MiB (the return limit is 16).
rm -rf "${PACK:?}"/* && mkdir -p "$PACK/tree"
archive() { # label dir -> $PACK/$WINDOW_ID-label.tar.gz.part-NN
  local a="$PACK/$WINDOW_ID-$1.tar.gz"
  tar -C "$2" -cf - . | gzip -1 > "$a"
  split -b 15M -d -a 2 "$a" "$a.part-"
  (cd "$PACK" && sha256sum "$(basename "$a")" "$(basename "$a")".part-* >> SHA256SUMS)
  rm -f "$a"
}
: > "$PACK/SHA256SUMS"
finished_runs=(); unfinished_runs=()
for line in "${plan[@]}"; do
  read -r name model epochs _ <<< "$line"
  t="$PACK/tree/$name"
  if m=$(finished_manifest "$name" "$epochs"); then
    case $m in "$MODELS"/*)
      base=$(basename "$m" .json)
      mkdir -p "$t/models"
      cp "$MODELS/$base.onnx" "$MODELS/$base.json" "$t/models/"
      for f in "$MODELS/$name"-{loss.png,accuracy.png,metrics.csv,metrics.jsonl}; do
        [ -f "$f" ] && cp "$f" "$t/models/"
      done
      finished_runs+=("$name");;
    esac
  elif [ -f "$RUNS/$name/checkpoint.ot" ]; then
    mkdir -p "$t/runs/$name"
    for f in checkpoint.ot metrics.jsonl metrics.csv args.txt; do
      [ -f "$RUNS/$name/$f" ] && cp "$RUNS/$name/$f" "$t/runs/$name/"
    done
    unfinished_runs+=("$name")
  fi
done
mkdir -p "$PACK/tree/logs/logs"
for f in "$LOGS"/*.log "$LOGS"/*.json "$LOGS"/*.jsonl; do
  [ -f "$f" ] && tail -c 300000 "$f" > "$PACK/tree/logs/logs/$(basename "$f")"
done
cp "$summary" "$PACK/tree/logs/window.json"
# Return order: the logs, then finished models (small), then checkpoints.
archive logs "$PACK/tree/logs"
for n in "${finished_runs[@]}" "${unfinished_runs[@]}"; do archive "$n" "$PACK/tree/$n"; done
rm -rf "$PACK/tree"
grep -o '[^ ]*\.part-[0-9]*$' "$PACK/SHA256SUMS" > "$PACK/ORDER"
: > "$PACK/returned.txt"

rm -f "$OUT"/*
cp "$summary" "$OUT/window.json"
cp "$PACK/SHA256SUMS" "$OUT/SHA256SUMS"
tail -c 100000 "$wlog" > "$OUT/window.log"
while read -r p; do
  if out_add "$PACK/$p" 2>/dev/null; then echo "$p" >> "$PACK/returned.txt"; else break; fi
done < "$PACK/ORDER"
nparts=$(grep -c . "$PACK/ORDER")
nret=$(grep -c . "$PACK/returned.txt" || true)

# --- summary (the device tool's reply shows the end of the output) --------------------
"$PY" - "$summary" <<'PY'
import json, sys
w = json.load(open(sys.argv[1]))
print(f"\nwindow {w['window']} ({w['mode']}, {w['script_wall_s']} s of {w['budget_s']} s)")
print(f"{'run':<8} {'status':<16} {'epochs':>14} {'train s':>8} {'img/s':>7}  top1 / flip TTA")
for r in w["runs"]:
    acc = f"{r['top1']:.2f} / {r['top1_flip_tta']:.2f} % ({r['test_images']} images)" if "top1" in r else ""
    ep = f"{r['epochs_after']}/{r['planned_epochs']} (+{r['epochs_after'] - r['epochs_before']})"
    print(f"{r['name']:<8} {r['status']:<16} {ep:>14} {r['train_s_total']:>8.1f} "
          f"{r.get('images_per_s_this_window', 0):>7}  {acc}")
PY
echo "pack $WINDOW_ID: $nparts parts, $nret returned in this call, $(( nparts - nret )) left$( (( nparts > nret )) && echo ': call tools/gpu/return-parts.sh at once (while this host is warm)')"
