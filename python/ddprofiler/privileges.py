"""Does this process have the privileges the eBPF sampler needs, and what do the missing
ones cost?

Loading perf_event BPF programs on every CPU takes CAP_SYS_ADMIN (root), or CAP_BPF and
CAP_PERFMON together (Linux 5.8+). ``problem()`` reads the effective capability set
(``CapEff`` in ``/proc/self/status``) and returns None when they are there, else one line
saying exactly what is missing and how to fix it (the profiler cannot start without them).
``kernel.perf_event_paranoid`` is named when it is at a distribution's locked-down level
(> 2), since that is where users look first; it does not matter once CAP_PERFMON is granted.

``shortfalls()`` names the capabilities the profiler starts without but whose absence costs
part of every profile, one line each saying what is lost (warnings at start):

- CAP_SYS_PTRACE: other users' processes' files (``/proc/PID/root``, ``map_files``) cannot
  be opened, so their stacks stop at the first frame (``unwind_no_access``).
- CAP_DAC_READ_SEARCH: files the profiler's user may not read are not unwound either, and
  tracefs (mode 700) hides the munmap tracepoint.
- CAP_SYSLOG: ``/proc/kallsyms`` shows zero addresses, so kernel frames stay unsymbolized
  (not needed when ``kptr_restrict=0`` and ``perf_event_paranoid <= 1``).
- CAP_SYS_RESOURCE: only below Linux 5.11, which charges BPF maps to RLIMIT_MEMLOCK.

``raise_effective()`` makes the permitted set effective. An image's dedicated interpreter
carries its capabilities as permitted-only file capabilities (``setcap ...+p``: a container
runtime runs a non-root user with none of its own, and with ``+ep`` the exec would fail
outright wherever one of them was not granted), so the process raises them itself at start.

The fix offered is never ``setcap`` on the interpreter: a capability on a shared
``python3`` file is granted to every script any user runs with it. Root, or a dedicated
user holding the capabilities as ambient ones (systemd ``AmbientCapabilities=``,
``setpriv --ambient-caps``, a container's ``--cap-add``), keeps them to this process.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import resource
from typing import List, Optional, Tuple

log = logging.getLogger(__name__)

CAP_DAC_READ_SEARCH = 2
CAP_SYS_PTRACE = 19
CAP_SYS_ADMIN = 21
CAP_SYS_RESOURCE = 24
CAP_SYSLOG = 34
CAP_PERFMON = 38
CAP_BPF = 39

# The least set for a non-root profiler of the whole host on Linux 5.11+ (5.8+ with
# CAP_SYS_RESOURCE added). Used by the docs' commands, the systemd unit and the manifests.
LEAST_CAPABILITIES = ("CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH", "CAP_SYSLOG")

# How a non-root user gets them without `setcap` on a shared interpreter (see the module doc).
AMBIENT_HINT = (
    "run as root with sudo, or as a dedicated user holding them as ambient capabilities "
    "(systemd AmbientCapabilities=, see deploy/systemd/ddprofiler.service; or "
    "`sudo setpriv --reuid USER --init-groups --inh-caps=+bpf,+perfmon,+sys_ptrace,"
    "+dac_read_search,+syslog --ambient-caps=+bpf,+perfmon,+sys_ptrace,+dac_read_search,"
    "+syslog python3 -m ddprofiler`)"
)

CONTAINER_HINT = (
    "add them to the container (docker run --cap-add BPF --cap-add PERFMON --cap-add SYS_PTRACE "
    "--cap-add DAC_READ_SEARCH --cap-add SYSLOG; in Kubernetes, securityContext.capabilities.add "
    "as in deploy/kubernetes/daemonset.yaml), no need for a privileged container"
)

# Linux 5.11 moved BPF maps from RLIMIT_MEMLOCK to memory cgroup accounting.
MEMCG_BPF_KERNEL = (5, 11)


def effective_capabilities(status_text: Optional[str] = None) -> int:
    """The CapEff bit mask of this process (or of the given /proc/PID/status text)."""
    if status_text is None:
        with open("/proc/self/status") as f:
            status_text = f.read()
    for line in status_text.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split(":", 1)[1].strip(), 16)
    raise ValueError("no CapEff line in the process status")


def problem(
    cap_eff: Optional[int] = None,
    cap_last_cap: Optional[int] = None,
    perf_event_paranoid: Optional[int] = None,
    euid: Optional[int] = None,
) -> Optional[str]:
    """None when privileged enough, else a one-line message. Arguments default to this host."""
    if cap_eff is None:
        try:
            cap_eff = effective_capabilities()
        except (OSError, ValueError):
            return None  # cannot tell: let the kernel decide (PermissionError on start)
    if _has(cap_eff, CAP_SYS_ADMIN) or (_has(cap_eff, CAP_BPF) and _has(cap_eff, CAP_PERFMON)):
        return None
    if cap_last_cap is None:
        cap_last_cap = _read_int("/proc/sys/kernel/cap_last_cap")
    if perf_event_paranoid is None:
        perf_event_paranoid = _read_int("/proc/sys/kernel/perf_event_paranoid")
    if euid is None:
        euid = os.geteuid()

    if cap_last_cap is not None and cap_last_cap < CAP_BPF:
        # Before Linux 5.8 there is no CAP_BPF/CAP_PERFMON: only CAP_SYS_ADMIN will do.
        return "missing CAP_SYS_ADMIN (this kernel has no CAP_BPF/CAP_PERFMON): run as root with sudo"

    wanted = (("CAP_BPF", CAP_BPF), ("CAP_PERFMON", CAP_PERFMON))
    missing = " and ".join(name for name, bit in wanted if not _has(cap_eff, bit))
    message = f"missing {missing} (or CAP_SYS_ADMIN) needed to load the eBPF sampler: "
    if euid == 0:
        message += (
            "running as root without them, probably in a container: "
            + CONTAINER_HINT
        )
    else:
        message += AMBIENT_HINT + "; in a container, " + CONTAINER_HINT
    if not _has(cap_eff, CAP_PERFMON) and perf_event_paranoid is not None and perf_event_paranoid > 2:
        message += (
            f" (kernel.perf_event_paranoid={perf_event_paranoid} denies perf events to processes"
            " without CAP_PERFMON; lowering it alone is not enough)"
        )
    return message


def _has(mask: int, bit: int) -> bool:
    return bool(mask >> bit & 1)


def _read_int(path: str) -> Optional[int]:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def shortfalls(
    cap_eff: Optional[int] = None,
    kptr_restrict: Optional[int] = None,
    perf_event_paranoid: Optional[int] = None,
    kernel: Optional[Tuple[int, int]] = None,
    memlock_hard: Optional[int] = None,
) -> List[str]:
    """One line per capability the profiler can start without but whose absence costs part
    of the profile: "missing CAP_X: <what is lost>; <how to fix>". Empty when nothing is
    missing or the capability set cannot be read. Arguments default to this host;
    ``kernel`` is (major, minor), ``memlock_hard`` bytes (``resource.RLIM_INFINITY``: none)."""
    if cap_eff is None:
        try:
            cap_eff = effective_capabilities()
        except (OSError, ValueError):
            return []
    out: List[str] = []
    if not _has(cap_eff, CAP_SYS_PTRACE):
        out.append(
            "missing CAP_SYS_PTRACE: the executables and libraries of other users' processes cannot be "
            "opened, so their stacks stop at the first frame ([unwind failed: no access to the file], "
            "counted in unwind_no_access and files_denied)"
        )
    if not _has(cap_eff, CAP_DAC_READ_SEARCH):
        out.append(
            "missing CAP_DAC_READ_SEARCH: binaries this user may not read are not unwound (counted in "
            "unwind_no_access), and tracefs (/sys/kernel/tracing) is closed, so unloaded libraries are "
            "not noticed at once"
        )
    if kptr_restrict is None:
        kptr_restrict = _read_int("/proc/sys/kernel/kptr_restrict")
    if perf_event_paranoid is None:
        perf_event_paranoid = _read_int("/proc/sys/kernel/perf_event_paranoid")
    if kptr_restrict is not None and kptr_restrict >= 2:
        out.append(
            "kernel.kptr_restrict=2 hides kernel addresses from everyone: kernel frames stay "
            "unsymbolized (set it to 0 or 1 and grant CAP_SYSLOG)"
        )
    elif not _has(cap_eff, CAP_SYSLOG) and not (kptr_restrict == 0 and perf_event_paranoid is not None
                                                 and perf_event_paranoid <= 1):
        out.append(
            "missing CAP_SYSLOG: /proc/kallsyms shows no addresses, so kernel frames stay unsymbolized"
        )
    if kernel is None:
        kernel = _kernel_version()
    if memlock_hard is None:
        memlock_hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
    if (kernel is not None and kernel < MEMCG_BPF_KERNEL and not _has(cap_eff, CAP_SYS_RESOURCE)
            and memlock_hard != resource.RLIM_INFINITY and memlock_hard < 64 << 20):
        out.append(
            f"missing CAP_SYS_RESOURCE: Linux {kernel[0]}.{kernel[1]} charges BPF maps to the locked-memory "
            f"limit ({memlock_hard >> 10} KiB here), which the sampler's maps may exceed: grant it, or raise "
            "the limit (LimitMEMLOCK=infinity, ulimit -l unlimited)"
        )
    return out


def shortfall_hint(euid: Optional[int] = None) -> str:
    """The one line that follows the shortfalls: how to grant what they name (root without
    them is a container's root)."""
    if euid is None:
        euid = os.geteuid()
    if euid == 0:
        return "to profile fully, grant the missing capabilities: " + CONTAINER_HINT
    return "to profile fully, grant the missing capabilities: " + AMBIENT_HINT + "; in a container, " + CONTAINER_HINT


def _kernel_version() -> Optional[Tuple[int, int]]:
    """(major, minor) of the running kernel, from uname's release ("6.1.0-13-amd64")."""
    try:
        major, minor = os.uname().release.split(".")[:2]
        return int(major), int("".join(c for c in minor if c.isdigit()) or 0)
    except ValueError:
        return None


# capget(2)/capset(2), version 3: two 32-bit words per set. By ctypes because the standard
# library has no call for it, and the packages that wrap libcap need a compiler to install.
_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def raise_effective() -> int:
    """Makes every permitted capability of this thread effective (for an interpreter given
    its capabilities as ``+p`` file capabilities); call it before any other thread starts.
    Returns the effective mask afterwards; on any failure logs at debug level and changes
    nothing (the privilege check that follows says what is missing)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        header = _CapHeader(_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)()
        if libc.capget(ctypes.byref(header), data) != 0:
            raise OSError(ctypes.get_errno(), "capget")
        if all(d.effective == d.permitted for d in data):
            return _mask(data)
        for d in data:
            d.effective = d.permitted
        if libc.capset(ctypes.byref(header), data) != 0:
            raise OSError(ctypes.get_errno(), "capset")
        return _mask(data)
    except (OSError, AttributeError) as e:
        log.debug("could not raise the permitted capabilities: %s", e)
        return 0


def _mask(data: "ctypes.Array[_CapData]") -> int:
    return int(data[0].effective) | int(data[1].effective) << 32
