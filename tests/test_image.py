"""The container image (issue 11), run the way a container runtime runs it, without one:
its root file system (`buildah mount`, from scripts/build-image.sh, which sets
DDPROF_IMAGE_ROOTFS and DDPROF_IMAGE_CONFIG, the image's OCI config) entered with chroot in
a mount namespace of its own, read-only with tmpfs or host directories where the manifests
mount volumes, with the host's /proc, /sys and /sys/fs/bpf (hostPID: the host's
processes), as the image's user, its entrypoint and environment, and a bounding set
of exactly the capabilities the manifests add: no ambient ones, as Docker and Kubernetes
start a non-root user. It profiles a host process with full stacks.

Without DDPROF_IMAGE_ROOTFS (the plain test run) the tests skip: scripts/build-image.sh,
which CI runs, is what runs them.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from ddprofiler import privileges

from helpers import Workload, find_seq, for_pid, format_stacks, load, total

ROOTFS = os.environ.get("DDPROF_IMAGE_ROOTFS")
pytestmark = [
    pytest.mark.bpf,
    pytest.mark.skipif(not ROOTFS, reason="run by scripts/build-image.sh (DDPROF_IMAGE_ROOTFS)"),
]

CHAIN_FRAMES = ["leaf", "middle", "outer", "main"]
# What the manifests add (setpriv names): privileges.LEAST_CAPABILITIES.
GRANTED = tuple(c.removeprefix("CAP_").lower() for c in privileges.LEAST_CAPABILITIES)


def _config() -> dict:
    """The image's OCI config (User, Env, Entrypoint, WorkingDir) from `buildah inspect`."""
    return json.loads(os.environ.get("DDPROF_IMAGE_CONFIG") or "{}").get("OCIv1", {}).get("config", {})


def run_in_image(args: list[str], caps: tuple[str, ...] = GRANTED, entrypoint: bool = True,
                 volume: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`args` after the image's entrypoint (or alone), in the image's root, as its user,
    with its environment and `caps` as the bounding set (the runtime's grant). As the
    manifests run it: the root file system read-only, /tmp a tmpfs, and /var/lib/ddprofiler
    the host directory `volume` (an emptyDir there) or a tmpfs."""
    cfg = _config()
    user, _, group = (cfg.get("User") or "root").partition(":")
    env = dict(e.split("=", 1) for e in cfg.get("Env", []))
    argv = [*(cfg.get("Entrypoint") or [] if entrypoint else []), *args]
    bounding = "-all" + "".join(f",+{c}" for c in caps)
    inner = ["/usr/bin/env", "-i", *[f"{k}={v}" for k, v in env.items()],
             "/usr/bin/setpriv", f"--reuid={user}", f"--regid={group or user}", "--clear-groups",
             "--inh-caps=-all", f"--bounding-set={bounding}", "--",
             *argv]
    workdir = cfg.get("WorkingDir") or "/"
    state = f'mount --bind {shlex.quote(str(volume))} "$r/var/lib/ddprofiler"; ' if volume else \
        'mount -t tmpfs -o mode=1777 tmpfs "$r/var/lib/ddprofiler"; '
    script = (
        f"set -e; r={shlex.quote(ROOTFS or '')}; "
        'mount --bind "$r" "$r"; '
        'mount --rbind /proc "$r/proc"; mount --rbind /sys "$r/sys"; '
        'mountpoint -q "$r/sys/fs/bpf" || mount --bind /sys/fs/bpf "$r/sys/fs/bpf"; '
        'mount -t tmpfs -o mode=1777 tmpfs "$r/tmp"; '
        + state +
        'mount -o remount,bind,ro "$r"; '
        f"exec chroot \"$r\" /bin/sh -c {shlex.quote('cd ' + shlex.quote(workdir) + ' && exec ' + shlex.join(inner))}"
    )
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script],
                          capture_output=True, text=True, timeout=timeout)


def test_image_has_no_compiler_and_caps_on_its_own_interpreter_only():
    root = Path(ROOTFS or "")
    for tool in ("gcc", "cc", "clang", "cargo", "rustc", "make"):
        assert not (root / "usr/bin" / tool).exists(), tool
    own = root / "opt/ddprofiler/bin/python3"
    assert os.getxattr(own, "security.capability")
    with pytest.raises(OSError):  # Debian's python3, shared by everything: none
        os.getxattr(root / "usr/bin/python3.11", "security.capability")


def test_image_runs_as_non_root_user():
    res = run_in_image(["/bin/sh", "-c", "id -u; grep -E '^Cap(Eff|Amb)' /proc/self/status"],
                       entrypoint=False)
    assert res.returncode == 0, res.stderr
    uid, eff, amb = res.stdout.split("\n")[:3]
    assert int(uid) != 0
    assert int(eff.split()[1], 16) == 0 and int(amb.split()[1], 16) == 0  # a shell gets none


def test_image_root_is_read_only_as_the_manifests_mount_it():
    res = run_in_image(["/bin/sh", "-c", "touch /opt/x 2>&1; touch /var/lib/ddprofiler/x /tmp/x && echo ok"],
                       entrypoint=False)
    assert "Read-only file system" in res.stdout and res.stdout.strip().endswith("ok"), res.stdout + res.stderr


def test_image_profiles_a_host_process_with_full_stacks(workloads, tmp_path):
    volume = tmp_path / "state"
    volume.mkdir()
    volume.chmod(0o777)
    with Workload([workloads["chain"], "60"]) as chain:
        res = run_in_image(["record", "--pid", str(chain.pid), "--duration", "3",
                            "-o", "/var/lib/ddprofiler/host.pprof"], volume=volume)
    assert res.returncode == 0, res.stderr
    assert "missing CAP_" not in res.stderr, res.stderr
    out = volume / "host.pprof"
    _, stacks = load(out)
    mine = for_pid(stacks, chain.pid)
    full = sum(s.count for s in mine if find_seq(s.frames, CHAIN_FRAMES) >= 0)
    assert total(mine) >= 50 and full >= 0.9 * total(mine), format_stacks(mine)


def test_image_names_a_capability_the_runtime_withheld(workloads):
    with Workload([workloads["chain"], "60"]) as chain:
        res = run_in_image(["record", "--pid", str(chain.pid), "--duration", "1",
                            "-o", "/var/lib/ddprofiler/partial.pprof"],
                           caps=tuple(c for c in GRANTED if c != "sys_ptrace"))
    assert res.returncode == 0, res.stderr
    assert "missing CAP_SYS_PTRACE: " in res.stderr and "--cap-add SYS_PTRACE" in res.stderr, res.stderr
