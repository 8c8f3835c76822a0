"""Container ids, pod UIDs and cgroup inodes from /proc/PID/cgroup text.

The table holds the shapes that the runtimes write (Docker, containerd, CRI-O, Podman,
Kubernetes with the cgroupfs and systemd drivers, ECS and Fargate, Garden), cgroup v1 and
v2, and the host cgroups that name no container. Shapes follow the test data of libdatadog
(ddcommon entity_id), dd-otel-host-profiler (containermetadata) and datadog-agent
(pkg/util/cgroups); the ids are made up. Full files are in tests/data/cgroups/.

One live check (root) builds a docker-style cgroup, moves a `sleep` into it and reads its
/proc/PID/cgroup back.
"""
from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest

from cgroups import container_cgroup
from ddprofiler import ProcessInfo
from ddprofiler.tagging import (cgroup_inode, container_id_from_cgroup, pod_uid_from_cgroup,
                                process_tags)
from ddprofiler.tagging.containers import is_host_cgroup

DATA = Path(__file__).parent / "data" / "cgroups"

A = "b6fca87d67bd05a61568efae6f10178d739033a478c212adfa93637732c3cb37"
B = "5c112c2a88a94e0f2e0ce2cda5d70bba57dd52d42b0e01c2f91d659a889fdc51"
C = "33d7997ba30eccff5acaa0253f352faab2faf6fe20b7e4d7c841ef13dadd243b"
D = "6f5c3cf7ec68470f9d4d2d6c05af343b67c69913b3b7dbffb9c8ae84f1279bf9"
E = "b53de9302f24d57859547ad6bb6545a83d152cfd09bef5802ea153627649fb67"
F = "b3fcd653f05da776dd3643664b1d0bf55d1236716a4d7c2a54a2c387378642a6"
G = "9fb8d4b6fd8992927255a57326a28ceb12e42e9aaff9c7fa9a7373eba2b91d58"
H = "200196f4f982b0e59181eb187c7a73e3af7c2b742663a3622572ba4889d8cfb4"
POD = "66c125f7-9ac3-4f6a-a68a-a9447956c149"
POD_ = POD.replace("-", "_")
TASK = "88468cb1ab63428ca49fcccd2959cf4f"

# (case, cgroup text, container id, pod uid)
CASES = [
    # Docker
    ("docker v1 cgroupfs", f"4:memory:/docker/{A}\n1:name=systemd:/docker/{A}", A, None),
    ("docker v1 systemd", f"8:memory:/system.slice/docker-{A}.scope\n"
                          f"1:name=systemd:/system.slice/docker-{A}.scope", A, None),
    ("docker v2 systemd", f"0::/system.slice/docker-{B}.scope", B, None),
    ("docker v2 cgroupfs (cgroupns=host)", f"0::/docker/{B}", B, None),
    ("docker trailing blanks", f"13:name=systemd:/docker/{A}    ", A, None),
    ("docker-in-docker: innermost", f"0::/docker/{A}/docker/{B}", B, None),
    ("minikube: kube container inside the node container",
     f"0::/docker/{A}/kubepods/besteffort/pod{POD}/{C}", C, POD),
    # containerd / Kubernetes
    ("k8s cgroupfs v1", f"10:hugetlb:/kubepods/burstable/pod{POD}/{C}", C, POD),
    ("k8s cgroupfs v2 guaranteed", f"0::/kubepods/pod{POD}/{C}", C, POD),
    ("k8s systemd v2 containerd",
     f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_}.slice/"
     f"cri-containerd-{D}.scope", D, POD),
    ("k8s systemd v1 containerd, guaranteed QoS",
     f"11:devices:/kubepods.slice/kubepods-pod{POD_}.slice/cri-containerd-{D}.scope", D, POD),
    ("containerd without SystemdCgroup under a systemd kubelet",
     f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_}.slice"
     f":cri-containerd:{D}", D, POD),
    ("k8s systemd driver with docker (cri-dockerd)",
     f"1:name=systemd:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_}"
     f".slice/docker-{E}.scope", E, POD),
    ("k8s systemd, no runtime prefix",
     f"11:devices:/kubepods.slice/kubepods-pod{POD_}.slice/{E}", E, POD),
    # CRI-O
    ("crio v2 systemd", f"0::/kubepods.slice/kubepods-besteffort.slice/"
                        f"kubepods-besteffort-pod{POD_}.slice/crio-{F}.scope", F, POD),
    ("crio v2 systemd, nested container cgroup",
     f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_}.slice/"
     f"crio-{F}.scope/container", F, POD),
    ("crio v1 cgroupfs", f"9:memory:/kubepods/besteffort/pod{POD}/crio-{F}", F, POD),
    ("crio conmon (systemd) is not the container",
     f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_}.slice/"
     f"crio-conmon-{F}.scope", None, POD),
    ("crio conmon (cgroupfs) is not the container",
     f"9:memory:/kubepods/besteffort/pod{POD}/crio-conmon-{F}", None, POD),
    # Podman
    ("podman rootful v2", f"0::/machine.slice/libpod-{G}.scope", G, None),
    ("podman rootless v2", f"0::/user.slice/user-1000.slice/user@1000.service/user.slice/"
                           f"libpod-{G}.scope", G, None),
    ("podman split cgroups", f"0::/machine.slice/libpod-{G}.scope/container", G, None),
    ("podman v1 cgroupfs", f"7:memory:/libpod_parent/libpod-{G}", G, None),
    ("podman conmon is not the container", f"0::/machine.slice/libpod-conmon-{G}.scope",
     None, None),
    # ECS, Fargate, Garden
    ("ecs ec2", f"9:perf_event:/ecs/{POD}/{H}", H, None),
    ("ecs ec2, old task id", f"9:perf_event:/ecs/{TASK}/{H}", H, None),
    ("fargate 1.4", f"1:name=systemd:/ecs/{TASK}/{TASK}-2863807935", f"{TASK}-2863807935", None),
    ("garden / uuid", f"1:name=systemd:/uuid/{POD}", POD, None),
    ("garden handle", "1:name=systemd:/garden/3f1b7a2c-9d4e-4b5a-8c6d-7e8f",
     "3f1b7a2c-9d4e-4b5a-8c6d-7e8f", None),
    # host processes and non-ids
    ("v2 root", "0::/", None, None),
    ("v2 init", "0::/init.scope", None, None),
    ("v2 user session", "0::/user.slice/user-1000.slice/session-3.scope", None, None),
    ("dockerd itself", "0::/system.slice/docker.service", None, None),
    ("containerd itself", "0::/system.slice/containerd.service", None, None),
    ("hybrid host", "12:pids:/user.slice/user-0.slice/session-14.scope\n4:memory:/\n"
                    "1:name=systemd:/user.slice/user-0.slice/session-14.scope\n0::/", None, None),
    ("pod cgroup, no container", f"0::/kubepods.slice/kubepods-burstable.slice/"
                                 f"kubepods-burstable-pod{POD_}.slice", None, POD),
    ("pod uid is not a container id", f"4:memory:/kubepods/burstable/pod{POD}", None, POD),
    ("mount unit", f"0::/system.slice/var-lib-docker-containers-{A}-mounts-shm.mount", None, None),
    ("63 hex digits", f"13:name=systemd:/docker/{A[:63]}", None, None),
    ("65 hex digits", f"13:name=systemd:/docker/{A}0", None, None),
    ("not hex", f"13:name=systemd:/docker/{A[:10]}g{A[11:]}", None, None),
    ("uppercase hex", f"13:name=systemd:/docker/{A.upper()}", None, None),
    ("id but not a cgroup line", f"/docker/{A}", None, None),
    ("empty", "", None, None),
    ("garbage", "not a cgroup file\n\n::::", None, None),
]


@pytest.mark.parametrize("text,cid,pod", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_container_id_table(text, cid, pod):
    assert container_id_from_cgroup(text) == cid
    assert pod_uid_from_cgroup(text) == pod


FILES = [
    ("docker-v1-cgroupfs", A, None),
    ("k8s-containerd-v1-systemd",
     "00043da6f8787f5171160b0dcf627360fdf12e258a71ba56a81e3ec41c832bec",
     "02588c4b-e0d7-4e24-8b82-8a67f806fbdd"),
    ("k8s-crio-conmon-v2", None, "73f4137b-985d-4738-915a-5174b05bea7e"),
    ("ecs-fargate-1.4-v1", f"{TASK}-2863807935", None),
    ("host-v1-systemd-service", None, None),
]


@pytest.mark.parametrize("name,cid,pod", FILES, ids=[f[0] for f in FILES])
def test_whole_files(name, cid, pod):
    text = (DATA / name).read_text()
    assert container_id_from_cgroup(text) == cid
    assert pod_uid_from_cgroup(text) == pod


def test_first_line_with_an_id_wins():
    assert container_id_from_cgroup(f"5:cpuset:/\n4:memory:/docker/{A}\n0::/docker/{B}") == A


def test_host_cgroups():
    assert is_host_cgroup("0::/")
    assert is_host_cgroup("0::/init.scope")
    assert is_host_cgroup("0::/user.slice/user-1000.slice/session-3.scope")
    assert is_host_cgroup("0::/system.slice/cron.service")
    assert is_host_cgroup((DATA / "host-v1-systemd-service").read_text())
    assert not is_host_cgroup(f"0::/system.slice/docker-{A}.scope")
    assert not is_host_cgroup(f"0::/kubepods.slice/kubepods-pod{POD_}.slice")
    assert not is_host_cgroup("0::/lxc.payload.web")


def _fake_root(tmp_path, v2: bool) -> Path:
    root = tmp_path / "cgroup"
    (root / "memory" / "docker" / A).mkdir(parents=True)
    v2_root = root if v2 else root / "unified"
    (v2_root / "kubepods" / "pod1").mkdir(parents=True)
    if v2:
        (root / "cgroup.controllers").write_text("cpu memory pids\n")
    return root


def test_cgroup_inode_v2(tmp_path):
    root = _fake_root(tmp_path, v2=True)
    want = os.stat(root / "kubepods" / "pod1").st_ino
    assert cgroup_inode("0::/kubepods/pod1\n", str(root)) == want
    assert cgroup_inode("0::/absent\n", str(root)) is None
    assert cgroup_inode("", str(root)) is None


def test_cgroup_inode_hybrid_prefers_memory_controller(tmp_path):
    root = _fake_root(tmp_path, v2=False)
    memory = os.stat(root / "memory" / "docker" / A).st_ino
    unified = os.stat(root / "unified" / "kubepods" / "pod1").st_ino
    assert cgroup_inode(f"4:memory:/docker/{A}\n0::/kubepods/pod1\n", str(root)) == memory
    assert cgroup_inode("0::/kubepods/pod1\n", str(root)) == unified
    assert cgroup_inode("4:memory:/gone\n0::/kubepods/pod1\n", str(root)) == unified


def test_process_tags_inode_only_without_container_id(monkeypatch):
    import ddprofiler.tagging as tagging
    monkeypatch.setattr(tagging, "cgroup_inode", lambda text: 4242)
    base = ProcessInfo(pid=7, name="app", exe="/app", env={}, cgroup="")
    assert process_tags(base._replace(cgroup=f"0::/docker/{A}")).cgroup_inode is None
    assert process_tags(base._replace(cgroup=f"0::/docker/{A}")).container_id == A
    assert process_tags(base._replace(cgroup="0::/lxc.payload.web")).cgroup_inode == 4242
    assert process_tags(base._replace(cgroup="0::/user.slice/user-0.slice")).cgroup_inode is None
    assert process_tags(base).cgroup_inode is None


# ---------------------------------------------------------------- live, needs root


def test_live_docker_style_cgroup():
    cid = secrets.token_hex(32)
    child = subprocess.Popen(["sleep", "30"])
    try:
        with container_cgroup(child.pid, cid) as leaves:
            text = Path(f"/proc/{child.pid}/cgroup").read_text()
            assert container_id_from_cgroup(text) == cid, text
            for root, v2, leaf in leaves:
                line = [ln for ln in text.splitlines() if leaf.parent.name in ln or cid in ln]
                line = [ln for ln in line if ln.startswith("0::") == v2]
                assert line and container_id_from_cgroup(line[0]) == cid, text
                if v2:
                    cgroup_root = root.parent if root.name == "unified" else root
                    assert cgroup_inode(line[0], str(cgroup_root)) == os.stat(leaf).st_ino
            tags = process_tags(ProcessInfo(pid=child.pid, name="sleep", exe="/usr/bin/sleep",
                                            env={}, cgroup=text))
            assert tags.container_id == cid and tags.cgroup_inode is None
    finally:
        child.kill()
        child.wait()
