#!/usr/bin/env bash
# Prints the offsets table of rust/ddprof-core/src/cpython/tables.rs from the headers of
# each CPython 3.8-3.12 that pyenv has (`offsets.c` compiled against each). Run it when a
# version's layout is in doubt; the table in the source is its output, by version.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for minor in 8 9 10 11 12; do
  py=$(ls -d "$HOME"/.pyenv/versions/3."$minor".* 2>/dev/null | tail -1)
  [ -n "$py" ] || { echo "    // CPython 3.$minor: not installed under pyenv" ; continue; }
  inc="$py/include/python3.$minor"
  gcc -I "$inc" -I "$inc/internal" -o "$out/offsets-3.$minor" "$here/offsets.c"
  "$out/offsets-3.$minor"
done
