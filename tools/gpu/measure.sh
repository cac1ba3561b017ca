#!/usr/bin/env bash
# On the GPU host, in the last staging call of a window (docs/lab/gpu-runbook.md): the host's
# facts, then issue 14's two measurements, each under its own time limit:
#   tools/gpu/cudnn-variants.sh     (item 3: the cuDNN misaligned-address failure)
#   tools/gpu/concurrency-bench.sh  (item 1: 1, 2 or 3 runs at once; its decision is
#                                      what window.sh does with MODE=auto)
# Env: CUDNN_S (default 160), CONC_S (default 100): each script's own budget (it stops
#      starting work after it and still writes its table; a hard stop 30 s later);
#      SKIP_CUDNN=1, SKIP_CONC=1. Whole call: about 4-5 minutes at most; timeout_s 330.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
ensure_dirs
"$here/host-stage.sh" || exit 2
facts="$STAGE/x/train/bin/gpu-host-facts"
{ [ -f "$facts" ] && bash "$facts"; } > "$OUT/host-facts.txt" 2>&1
cat "$OUT/host-facts.txt"
if [ "${SKIP_CUDNN:-0}" != 1 ]; then
  BUDGET_S=${CUDNN_S:-160} timeout "$(( ${CUDNN_S:-160} + 30 ))" "$here/cudnn-variants.sh" > "$OUT/cudnn-variants.log" 2>&1
  echo "cudnn-variants exit $?"
  [ -f "$OUT/cudnn-variants.txt" ] && cat "$OUT/cudnn-variants.txt" || tail -n 20 "$OUT/cudnn-variants.log"
fi
if [ "${SKIP_CONC:-0}" != 1 ]; then
  BUDGET_S=${CONC_S:-100} timeout "$(( ${CONC_S:-100} + 30 ))" "$here/concurrency-bench.sh" > "$OUT/concurrency.log" 2>&1
  echo "concurrency-bench exit $?"
  tail -n 12 "$OUT/concurrency.log"
fi
ls -la "$OUT"
