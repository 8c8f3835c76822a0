"""Does this process have the privileges the eBPF sampler needs?

Loading perf_event BPF programs on every CPU takes CAP_SYS_ADMIN (root), or CAP_BPF and
CAP_PERFMON together (Linux 5.8+). ``problem()`` reads the effective capability set
(``CapEff`` in ``/proc/self/status``) and returns None when they are there, else one line
saying exactly what is missing and how to fix it. ``kernel.perf_event_paranoid`` is named
when it is at a distribution's locked-down level (> 2), since that is where users look
first; it does not matter once CAP_PERFMON is granted.
"""
from __future__ import annotations

import os
import sys
from typing import Optional

CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39

# CAP_SYS_PTRACE reads other users' /proc/PID/maps and memory; CAP_SYS_RESOURCE lifts the
# locked-memory limit that kernels before 5.11 charge BPF maps to.
SETCAP_CAPS = "cap_bpf,cap_perfmon,cap_sys_ptrace,cap_sys_resource+ep"


def setcap_command(executable: Optional[str] = None) -> str:
    """The command granting the capabilities to the interpreter file itself: this process's
    executable with links resolved (a venv's `python` and pyenv's shims are links or
    scripts; capabilities belong to the file the kernel executes)."""
    return f"sudo setcap {SETCAP_CAPS} {os.path.realpath(executable or sys.executable)}"


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
            "add them (docker run --cap-add BPF --cap-add PERFMON) or run it privileged"
        )
    else:
        message += f"run as root with sudo, or grant them to the interpreter with `{setcap_command()}`"
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
