#!/usr/bin/env bash
# Fuzzes the ELF/DWARF entry points (rust/ddprof-core/fuzz, target `elf`) for a fixed time
# (FUZZ_SECONDS, default 60) from a seed corpus of real binaries, then Go's tables (target
# `gopclntab`, FUZZ_GO_SECONDS, default 30) from a stripped Go program. cargo fuzz wants a nightly
# toolchain for its -Z flags; RUSTC_BOOTSTRAP=1 lets the stable one accept them, and no
# sanitizer is asked for (those need nightly's runtime). A crash, a hang (-timeout) or
# runaway memory (-rss_limit_mb) fails the run and leaves the input under fuzz/artifacts.
set -euo pipefail
cd "$(dirname "$0")/../rust/ddprof-core/fuzz"
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install --quiet --locked cargo-fuzz
corpus=$(mktemp -d)
trap 'rm -rf "$corpus" /dev/shm/ddprof-fuzz-*' EXIT
multiarch=$(gcc -print-multiarch 2>/dev/null || echo "$(uname -m)-linux-gnu")
for f in /usr/bin/true "/usr/lib/$multiarch/libz.so.1" "/usr/lib/$multiarch/libc.so.6"; do
  [ -e "$f" ] && cp "$(readlink -f "$f")" "$corpus/"
done
head -c 4096 /usr/bin/true > "$corpus/truncated"
cargo fuzz build --sanitizer none -O elf
cargo fuzz run --sanitizer none -O elf "$corpus" -- \
  -max_total_time="${FUZZ_SECONDS:-60}" -rss_limit_mb=1024 -max_len=262144 -timeout=10 2>&1 | tail -3
echo "fuzz: elf target ran ${FUZZ_SECONDS:-60} s without a crash"

# Go's tables sit deep in a binary of megabytes: seed with a whole stripped Go program.
go=$(command -v go || { [ -x /usr/local/go/bin/go ] && echo /usr/local/go/bin/go; } || true)
if [ -z "$go" ]; then
  if [ "${DDPROF_REQUIRE_BPF:-}" = 1 ]; then
    echo "fuzz: no Go toolchain for the gopclntab target, and DDPROF_REQUIRE_BPF=1 forbids skipping" >&2
    exit 1
  fi
  echo "fuzz: no Go toolchain, gopclntab target skipped"
  exit 0
fi
gocorpus=$(mktemp -d)
trap 'rm -rf "$corpus" "$gocorpus" /dev/shm/ddprof-fuzz-*' EXIT
(cd ../../../tests/workloads/gowork && CGO_ENABLED=0 GOTOOLCHAIN=local \
  "$go" build -ldflags="-s -w" -o "$gocorpus/gowork" .)
cargo fuzz build --sanitizer none -O gopclntab
cargo fuzz run --sanitizer none -O gopclntab "$gocorpus" -- \
  -max_total_time="${FUZZ_GO_SECONDS:-30}" -rss_limit_mb=1024 -max_len=4194304 -timeout=10 2>&1 | tail -3
echo "fuzz: gopclntab target ran ${FUZZ_GO_SECONDS:-30} s without a crash"
