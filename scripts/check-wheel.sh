#!/usr/bin/env bash
# Builds the release wheel and checks that it is one abi3 wheel for CPython 3.9+ which
# installs into a clean virtual environment of the oldest Python found (3.9 when pyenv has
# it) and runs: the extension and the public API import, and the CLI answers --help.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$PYTHON" -m maturin build --release --quiet --out "$out/dist" >/dev/null
wheel=$(ls "$out"/dist/*.whl)
case "$(basename "$wheel")" in
  *-cp39-abi3-*linux*.whl) echo "wheel: $(basename "$wheel")" ;;
  *) echo "not an abi3 wheel for cp39+: $(basename "$wheel")" >&2; exit 1 ;;
esac
old=""
for v in "$HOME"/.pyenv/versions/3.9.*/bin/python3.9 /usr/bin/python3.9 "$PYTHON"; do
  if [ -x "$v" ] || command -v "$v" >/dev/null 2>&1; then old=$v; break; fi
done
"$old" -m venv "$out/venv"
"$out/venv/bin/pip" install -q "$wheel"
cd "$out"
"$out/venv/bin/python" -c "import sys, ddprofiler._native as n; print('imported', n.__version__, 'on', sys.version.split()[0])"
# The public API's modules import and work on the oldest Python (no 3.10+ syntax at run time).
"$out/venv/bin/python" -c "
import ddprofiler, ddprofiler.cli, ddprofiler.runner, ddprofiler.symbols
from ddprofiler import Profile, Profiler, Stats
from ddprofiler.stats import counter_specs
assert dict((n, k) for n, k, _ in counter_specs())['lost'] == 'lost'
print('public API on', __import__('sys').version.split()[0], ':', Profiler())
"
"$out/venv/bin/python" -m ddprofiler record --help | grep -q -- "--frequency"
echo "1 passed, 0 failed"
