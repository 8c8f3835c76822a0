#!/usr/bin/env bash
# Builds the release wheels into dist/: one abi3 (CPython 3.9+) manylinux_2_17 wheel per
# architecture (default: x86_64 and aarch64; or the ones given as arguments), each with the
# BPF sampler compiled for its architecture, and checks each with `auditwheel show` and
# `twine check`.
#
# Why manylinux_2_17 (manylinux2014): the extension needs nothing newer from glibc, and the
# oldest glibc among distributions with a kernel the sampler runs on (5.15+, BTF) is older
# than 2.28: Amazon Linux 2 (glibc 2.26) with its 5.15 kernel. Built with zig as the C
# compiler and linker (`maturin --zig`, ziglang from PyPI), which links against glibc
# 2.17's symbol versions from any host, instead of a manylinux container (no container
# engine or image registry here). The aarch64 wheel needs Rust's aarch64-unknown-linux-gnu
# standard library (rustup target add) and the arm64 kernel headers for the BPF object
# (Debian's linux-libc-dev-arm64-cross).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PATH="$HOME/.cargo/bin:$PATH"
arches=("$@")
[ ${#arches[@]} -gt 0 ] || arches=(x86_64 aarch64)

# The build tools in a virtual environment of their own (Debian's python3 is externally
# managed; and their pins are not the package's).
tools=.venv-wheels
[ -x "$tools/bin/maturin" ] && [ -x "$tools/bin/auditwheel" ] && [ -x "$tools/bin/twine" ] || {
  "$PYTHON" -m venv "$tools"
  "$tools/bin/pip" install -q "maturin>=1.7,<2" "ziglang>=0.13,<0.16" "auditwheel>=6" "twine>=6"
}
export PATH="$PWD/$tools/bin:$PATH"

mkdir -p dist
for arch in "${arches[@]}"; do
  target=$arch-unknown-linux-gnu
  if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    rustup target add "$target"
  fi
  if [ "$arch" = aarch64 ] && [ ! -d /usr/include/aarch64-linux-gnu/asm ] && [ ! -d /usr/aarch64-linux-gnu/include/asm ]; then
    apt-get install -y -qq linux-libc-dev-arm64-cross >/dev/null
  fi
  rm -f dist/ddprofiler-*-manylinux*_"$arch".whl
  maturin build --release --quiet --zig --compatibility manylinux2014 --target "$target" --out dist \
    > "$tools/build.log" 2>&1 || { cat "$tools/build.log" >&2; exit 1; }
  wheel=$(ls dist/ddprofiler-*-cp39-abi3-manylinux*_"$arch".whl)
  show=$(auditwheel show "$wheel" | tr '\n' ' ')
  echo "$show" | grep -q "consistent with the following platform tag: \"manylinux_2_17_$arch\"" \
    || { echo "$show" >&2; echo "$(basename "$wheel"): not manylinux_2_17_$arch" >&2; exit 1; }
  # The metadata PyPI shows (README as long description, license file, classifiers).
  twine check --strict "$wheel" >/dev/null
  echo "wheel: $(basename "$wheel") ($(du -k "$wheel" | cut -f1) KiB): auditwheel: manylinux_2_17_$arch, twine check: ok"
done
