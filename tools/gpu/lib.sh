# Shared by the host-side scripts of tools/gpu/ (sourced, not run). docs/lab/gpu-runbook.md
# describes the flow; every path here can be moved with WIN_ROOT for a CPU dry run.
#
#   WIN_ROOT   scratch root on the host (default /tmp; it lives as long as the machine)
#   STAGE      $WIN_ROOT/stage   parts carried in, assembled bundles in $STAGE/x/<bundle>
#   RUNS       $WIN_ROOT/runs    one run folder per plan entry (checkpoint.ot, metrics)
#   MODELS     $WIN_ROOT/models  finished models (ONNX + manifest + curves)
#   PACK       $WIN_ROOT/pack    what goes back: <window>.tar.gz.part-NN + SHA256SUMS
#   OUT        the device tool's return folder (default $WIN_ROOT/out)
#   SP         site-packages holding torch (the host's: /opt/torch/.venv/...)
#   TORCH_LIB  libtorch's folder (default $SP/torch/lib)
#   DEVICE     cuda (default) or cpu for a dry run

WIN_ROOT=${WIN_ROOT:-/tmp}
STAGE=${STAGE:-$WIN_ROOT/stage}
RUNS=${RUNS:-$WIN_ROOT/runs}
MODELS=${MODELS:-$WIN_ROOT/models}
PACK=${PACK:-$WIN_ROOT/pack}
OUT=${OUT:-$WIN_ROOT/out}
SP=${SP:-/opt/torch/.venv/lib/python3.12/site-packages}
TORCH_LIB=${TORCH_LIB:-$SP/torch/lib}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
ensure_dirs() { mkdir -p "$STAGE" "$RUNS" "$MODELS" "$PACK" "$OUT"; }

# The $OUT limits of the device tool: at most 8 files, 16 MiB each, 64 MiB in all.
OUT_MAX_FILES=8
OUT_MAX_BYTES=$((62 * 1024 * 1024))

log() { printf '[%s] %s\n' "$(date -u +%T)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 2; }

# The staged train-zoo binary (bundle `train`), or $TRAIN_ZOO when set (CPU dry runs).
train_zoo_bin() {
  local b=${TRAIN_ZOO:-$STAGE/x/train/bin/train-zoo}
  [ -x "$b" ] || die "no train-zoo at $b: carry the \`train\` bundle's parts (tools/gpu/stage-window --train) before this call"
  printf '%s\n' "$b"
}

# The staged CIFAR-10 folder (bundle `data`), or $CIFAR_DIR when set.
cifar_dir() {
  local d=${CIFAR_DIR:-$STAGE/x/data/cifar}
  [ -f "$d/test_batch.bin" ] || die "no CIFAR-10 at $d: carry the \`data\` bundle's parts (tools/gpu/stage-window --data) before this call"
  printf '%s\n' "$d"
}

# Bytes of a file (GNU stat).
bytes_of() { stat -c %s "$1"; }

# Copies files into $OUT while the device tool's limits allow; prints what it skipped.
# Usage: out_add FILE...   (returns 1 if any file did not fit)
out_add() {
  local f n used rc=0
  for f in "$@"; do
    n=$(find "$OUT" -maxdepth 1 -type f | wc -l)
    used=$(find "$OUT" -maxdepth 1 -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')
    if (( n + 1 > OUT_MAX_FILES || used + $(bytes_of "$f") > OUT_MAX_BYTES )); then
      log "not returned in this call (limits): $(basename "$f")"
      rc=1
      continue
    fi
    cp "$f" "$OUT/"
  done
  return $rc
}

# A built-in recipe of train-zoo as JSON with `--set path=value` overrides applied (for
# `train-zoo bench`, which takes a recipe file but no --set).
# Usage: recipe_json BIN NAME [--set path=value]... > file.json
recipe_json() {
  local bin=$1 name=$2; shift 2
  "$bin" recipes | "$PY" -c '
import json, sys
name, sets = sys.argv[1], sys.argv[2:]
text, recipes, cur = sys.stdin.read().split("\n"), {}, None
buf = []
for line in text:
    if line.startswith("# "):
        if cur and buf: recipes[cur] = json.loads("\n".join(buf))
        cur, buf = line[2:].split(":", 1)[0], []
    elif line.strip():
        buf.append(line)
if cur and buf: recipes[cur] = json.loads("\n".join(buf))
r = recipes[name]
it = iter(sets)
for a in it:
    kv = next(it) if a == "--set" else a
    path, _, value = kv.partition("=")
    try: value = json.loads(value)
    except ValueError: pass
    d = r
    keys = path.split(".")
    for k in keys[:-1]: d = d[k]
    d[keys[-1]] = value
print(json.dumps(r, indent=1))' "$name" "$@"
}
