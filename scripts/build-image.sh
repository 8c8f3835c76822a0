#!/usr/bin/env bash
# Builds the ddprofiler container image from the top-level Dockerfile without a Docker
# engine, reports its size, and tests it: the image's root file system, run with the host's
# /proc, /sys and /sys/fs/bpf as its user with only the capabilities the manifests grant,
# profiles a host process with full stacks (tests/test_image.py).
#
# 1. The base image the Dockerfile names (docker.io/library/debian:bookworm-slim) is made
#    with mmdebstrap from Debian's archive (minbase, merged /usr, no docs), unless the image
#    store has it; the build then runs with --pull=never, so nothing comes from a registry
#    of images.
# 2. The wheel: dist/ddprofiler-*manylinux*<arch>.whl, made by scripts/build-wheels.sh when
#    missing, and its dependencies' wheels (pip download, here: the build installs offline).
# 3. buildah build --isolation chroot (no daemon; podman's run would need setrlimit, which
#    this sandbox refuses).
# 4. The test, against `buildah mount` of a working container of the image.
# Root only (buildah's store, mounts, chroot). Env: PYTHON (with pytest), IMAGE (the tag).
set -euo pipefail
cd "$(dirname "$0")/.."
# The interpreter `make install` installed into (pytest, pip): the Makefile's .venv when it
# made one (Debian's python3 is externally managed), else python3.
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
IMAGE=${IMAGE:-localhost/ddprofiler:dev}
BASE=docker.io/library/debian:bookworm-slim
arch=$(uname -m)

if ! command -v buildah >/dev/null || ! command -v mmdebstrap >/dev/null; then
  apt-get install -y -qq buildah mmdebstrap >/dev/null
fi

work=$(mktemp -d)
ctr=""
cleanup() {
  if [ -n "$ctr" ]; then buildah umount "$ctr" >/dev/null 2>&1 || true; buildah rm "$ctr" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

if ! buildah inspect --type image "$BASE" >/dev/null 2>&1; then
  echo "base: $BASE from mmdebstrap (Debian 12 minbase)"
  mmdebstrap --quiet --variant=minbase --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --aptopt='Acquire::Languages "none"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    bookworm "$work/base.tar" > "$work/mmdebstrap.log" 2>&1 || { cat "$work/mmdebstrap.log" >&2; exit 1; }
  base=$(buildah from scratch)
  buildah add "$base" "$work/base.tar" / >/dev/null
  buildah config --cmd '["bash"]' "$base"
  buildah commit -q "$base" "$BASE" >/dev/null
  buildah rm "$base" >/dev/null
  rm -f "$work/base.tar"
fi

wheel=$(ls dist/ddprofiler-*manylinux*"$arch".whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
  PYTHON="$PYTHON" scripts/build-wheels.sh "$arch"
  wheel=$(ls dist/ddprofiler-*manylinux*"$arch".whl | head -n1)
fi
# The context is the Dockerfile's inputs only: the wheel for this architecture and those of
# its dependencies for the image's Python (Debian 12's 3.11), fetched here by pip, so that
# the build itself needs no index (only Debian's archive, for apt).
mkdir -p "$work/ctx/dist"
cp Dockerfile "$work/ctx/"
cp "$wheel" "$work/ctx/dist/"
"$PYTHON" -m pip download -q --dest "$work/ctx/dist" --find-links "$work/ctx/dist" --only-binary=:all: \
  --platform "manylinux_2_17_$arch" --platform "manylinux2014_$arch" --python-version 3.11 \
  --implementation cp ddprofiler
echo "image: $IMAGE from $(basename "$wheel")"
buildah build --quiet --isolation chroot --pull=never --layers=false -t "$IMAGE" "$work/ctx" >/dev/null

# The image this tag named before is dangling now: drop it (the store is this script's).
buildah rmi --prune >/dev/null 2>&1 || true
size=$(buildah images --format '{{.Size}}' "$IMAGE" | head -n1)
echo "image size: $size (base $(buildah images --format '{{.Size}}' "$BASE" | head -n1))"

ctr=$(buildah from --pull=never "$IMAGE")
rootfs=$(buildah mount "$ctr")
DDPROF_IMAGE_ROOTFS="$rootfs" \
DDPROF_IMAGE_CONFIG="$(buildah inspect --type image "$IMAGE")" \
  "$PYTHON" -m pytest -v tests/test_image.py
