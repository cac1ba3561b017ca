#!/usr/bin/env bash
# On the GPU host, at the start of every call: takes in the bundle parts this call carried
# (.gpu-stage/<bundle>-<k>/, made here by tools/gpu/stage-window), checks each part's
# sha256, keeps it under $STAGE/parts (outside the repository copy, which the next call
# may replace), and once every part of a bundle has arrived, joins them, checks the whole
# bundle's sha256 and unpacks it into $STAGE/x/<bundle>/:
#   data   cifar/            CIFAR-10 binary files (md5-checked after unpacking)
#   train  bin/train-zoo, runs/<name>/ (checkpoints to resume), models/ (finished models)
#   ort    lib/ (onnxruntime-gpu 1.31.1), bin/verify, bin/bench-inference, models/
# Prints one status line per bundle. Safe to run any number of times.
# Exit: 0 (status printed; a bundle may still be incomplete), 2 a part or bundle is corrupt.
# Env: STAGE_SRC (default .gpu-stage), WIN_ROOT/STAGE (tools/gpu/lib.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
ensure_dirs
src=${STAGE_SRC:-.gpu-stage}
shopt -s nullglob

field() { awk -v k="$1" '$1 == k { print $2; exit }' "$2"; }

# 1. Take in the parts carried by this call.
for d in "$src"/*/; do
  m="$d/MANIFEST"
  [ -f "$m" ] || { log "skipping $d: no MANIFEST (not made by tools/gpu/stage-window)"; continue; }
  b=$(field bundle "$m"); whole=$(field whole "$m")
  dest="$STAGE/parts/$b-${whole:0:12}"
  mkdir -p "$dest"
  cp "$m" "$dest/MANIFEST"
  for p in "$d"/*.part-*; do
    name=$(basename "$p")
    want=$(awk -v n="$name" '$1 == "part" && $4 == n { print $3 }' "$m")
    [ -n "$want" ] || die "$p is not listed in $m; re-make the parts with tools/gpu/stage-window"
    if [ -f "$dest/$name" ]; then continue; fi
    got=$(sha256sum "$p" | cut -d' ' -f1)
    [ "$got" = "$want" ] || die "part $name of bundle $b is corrupt (sha256 $got, want $want): carry $d again"
    cp "$p" "$dest/$name.tmp" && mv "$dest/$name.tmp" "$dest/$name"
  done
done

# 2. Join and unpack every complete bundle (once per bundle version).
unpack() { # archive format destdir
  local a=$1 fmt=$2 to=$3
  mkdir -p "$to"
  if [ "$fmt" = tar.xz ] && ! command -v xz >/dev/null; then
    "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2])' "$a" "$to"
  else
    tar -xf "$a" -C "$to"
  fi
}
unxz_file() { # FILE.xz -> FILE
  if command -v xz >/dev/null; then xz -d -T0 -f "$1"; else
    "$PY" -c 'import lzma, shutil, sys, os
with lzma.open(sys.argv[1]) as i, open(sys.argv[1][:-3], "wb") as o: shutil.copyfileobj(i, o, 1 << 24)
os.remove(sys.argv[1])' "$1"
  fi
}

for dest in "$STAGE"/parts/*/; do
  m="$dest/MANIFEST"
  b=$(field bundle "$m"); whole=$(field whole "$m"); fmt=$(field format "$m"); n=$(field parts "$m")
  archive_name=$(field archive "$m")
  have=$(ls "$dest" | grep -c '\.part-[0-9]*$' || true)
  if [ -f "$STAGE/x/$b.sha256" ] && [ "$(cat "$STAGE/x/$b.sha256")" = "$whole" ]; then
    echo "bundle $b: unpacked in $STAGE/x/$b ($n parts, sha256 ${whole:0:12})"
    continue
  fi
  if (( have < n )); then
    missing=$(awk '$1 == "part" { print $4 }' "$m" | while read -r p; do [ -f "$dest/$p" ] || printf '%s ' "${p##*.part-}"; done)
    echo "bundle $b: $have/$n parts here (missing ${missing% }), not unpacked yet"
    continue
  fi
  a="$STAGE/$archive_name"
  awk '$1 == "part" { print $4 }' "$m" | while read -r p; do cat "$dest/$p"; done > "$a"
  got=$(sha256sum "$a" | cut -d' ' -f1)
  if [ "$got" != "$whole" ]; then
    rm -f "$a"
    die "bundle $b joined to sha256 $got, want $whole: the parts do not belong together; re-make them with tools/gpu/stage-window"
  fi
  rm -rf "$STAGE/x/$b.tmp" && unpack "$a" "$fmt" "$STAGE/x/$b.tmp"
  rm -f "$a"
  # Members compressed on their own (the ONNX Runtime libraries) are unpacked here.
  find "$STAGE/x/$b.tmp" -name '*.xz' -print0 | while IFS= read -r -d '' f; do unxz_file "$f"; done
  rm -rf "$STAGE/x/$b" && mv "$STAGE/x/$b.tmp" "$STAGE/x/$b"
  echo "$whole" > "$STAGE/x/$b.sha256"
  if [ "$b" = data ]; then
    (cd "$STAGE/x/data/cifar" && md5sum --quiet -c MD5SUMS) \
      || die "CIFAR-10 in $STAGE/x/data/cifar fails its MD5SUMS after unpacking"
  fi
  if [ -f "$STAGE/x/$b/SHA256SUMS" ]; then
    (cd "$STAGE/x/$b" && sha256sum --quiet -c SHA256SUMS) \
      || die "bundle $b: unpacked files fail their SHA256SUMS"
  fi
  chmod +x "$STAGE/x/$b"/bin/* 2>/dev/null || true
  echo "bundle $b: unpacked in $STAGE/x/$b ($n parts, sha256 ${whole:0:12})"
done
exit 0
