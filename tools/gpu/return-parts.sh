#!/usr/bin/env bash
# On the GPU host, in the calls right after tools/gpu/window.sh (the host keeps /tmp only
# while it is warm, 30 s after a call): puts the next parts of the window's pack that have
# not come back yet into $OUT (with SHA256SUMS and window.json), as many as the device
# tool's return limits allow (4 parts of 15 MiB). Also takes in whatever parts this call
# carried (tools/gpu/host-stage.sh), so the ONNX Runtime bundle can ride along.
# Usage: tools/gpu/return-parts.sh [PART...]   PART: names of parts to send (again, after a
#        failed transfer; unpack-window names them); default: the next ones not yet sent,
#        in the pack's ORDER (logs, finished models, checkpoints).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
ensure_dirs
"$here/host-stage.sh" >&2 || die "staging failed (see above)"
[ -f "$PACK/ORDER" ] || die "no pack in $PACK: tools/gpu/window.sh did not finish on this host (run PACK_ONLY=1 tools/gpu/window.sh)"
touch "$PACK/returned.txt"
mapfile -t parts < "$PACK/ORDER"
rm -f "$OUT"/*
cp "$PACK/SHA256SUMS" "$OUT/"
[ -f "$WIN_ROOT/logs/window.json" ] && cp "$WIN_ROOT/logs/window.json" "$OUT/"
sent=0
for p in "${parts[@]}"; do
  if [ -n "${1:-}" ]; then
    [[ " $* " == *" $p "* ]] || continue
  elif grep -qx -- "$p" "$PACK/returned.txt"; then
    continue
  fi
  out_add "$PACK/$p" 2>/dev/null || break
  grep -qx -- "$p" "$PACK/returned.txt" || echo "$p" >> "$PACK/returned.txt"
  sent=$((sent + 1))
done
left=0
for p in "${parts[@]}"; do grep -qx -- "$p" "$PACK/returned.txt" || left=$((left + 1)); done
echo "returned $sent part(s) in this call; ${#parts[@]} in all; $left not yet returned"
(( left == 0 )) || echo "next: tools/gpu/return-parts.sh again, in a new call at once"
if (( left == 0 )); then echo "all parts returned"; fi
