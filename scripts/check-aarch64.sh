#!/usr/bin/env bash
# The aarch64 build, checked without arm64 hardware:
# - clippy on the crate built for aarch64 (its aarch64-only code);
# - the BPF sampler object built for arm64 (build.rs with __TARGET_ARCH_arm64: the
#   user_pt_regs layout), checked in its BTF;
# - the aarch64 unwinder on a real arm64 stack: tests/cases/aarch64-snapshot (C, built with
#   Debian's gcc-aarch64-linux-gnu, -O2 -fomit-frame-pointer) runs under qemu-user and
#   writes its registers, stack and mappings at a known point; the crate's test
#   tests/aarch64_snapshot.rs, built for aarch64-unknown-linux-gnu and also run under
#   qemu-user, unwinds that snapshot and must find the known chain.
# Root only for apt-get (what is missing is installed). The aarch64 wheel itself is built
# and checked by scripts/build-wheels.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
target=aarch64-unknown-linux-gnu
sysroot=/usr/aarch64-linux-gnu

need=()
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
[ -d "$sysroot/include/asm" ] || need+=(linux-libc-dev-arm64-cross)
command -v bpftool >/dev/null || need+=(bpftool)
[ ${#need[@]} -eq 0 ] || apt-get install -y -qq "${need[@]}" >/dev/null
rustup target list --installed | grep -qx "$target" || rustup target add "$target"

work=$(mktemp -d)
pid=""
trap '[ -z "$pid" ] || kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

aarch64-linux-gnu-gcc -O2 -fomit-frame-pointer -fasynchronous-unwind-tables \
  -o "$work/snapshot" tests/cases/aarch64-snapshot/snapshot.c
mkfifo "$work/ready"
qemu-aarch64 -L "$sysroot" "$work/snapshot" "$work/snapshot.bin" > "$work/ready" &
pid=$!
read -r -t 30 line < "$work/ready"
[ "$line" = ready ] || { echo "the snapshot program did not say ready" >&2; exit 1; }

# The aarch64-only code (arch.rs, this test) is linted only when built for aarch64.
cargo clippy -q -p ddprof-core --target "$target" --tests -- -D warnings
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L $sysroot"
DDPROF_AARCH64_SNAPSHOT="$work/snapshot.bin" DDPROF_AARCH64_EXE="$work/snapshot" \
  cargo test -q -p ddprof-core --target "$target" --test aarch64_snapshot -- --nocapture

# The BPF object that build went with: arm64's register layout.
obj=$(ls -t "${CARGO_TARGET_DIR:-target}/$target"/debug/build/ddprof-core-*/out/sampler.bpf.o | head -n1)
btf=$(bpftool btf dump file "$obj")
echo "$btf" | grep -q "STRUCT 'user_pt_regs'" \
  || { echo "$obj: no user_pt_regs in its BTF: not built for arm64" >&2; exit 1; }
if echo "$btf" | grep -q "STRUCT 'pt_regs' size=168"; then
  echo "$obj: x86_64's pt_regs in its BTF" >&2; exit 1
fi
echo "bpf: $obj built for arm64 (user_pt_regs)"
echo "1 passed, 0 failed"
