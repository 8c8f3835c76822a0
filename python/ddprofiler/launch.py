"""Starting a command to profile it from its first instruction (``record -- CMD ARGS``).

The command is started held: ``/bin/sh`` waits on a pipe, then ``exec``s it, so that its
pid is known (and handed to the profiler, which follows its children) before it runs
anything; ``release()`` lets it go once sampling has started. The process keeps that pid
through the ``exec``. ``exit_code()`` is what a shell would report: its status, or 128 +
the signal that ended it. Non-goals: terminals, process groups (the command stays in ours,
so a Ctrl-C at the terminal reaches it as it would without the profiler). ``descendants``
lists the processes already running under a pid (``--pid --subprocesses`` follows them too).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from typing import Callable, Dict, Iterable, List, Optional, Set

__all__ = ["Launched", "find_command"]

# `read` blocks until release() writes (or the pipe closes: the profiler gave up, and the
# command is killed before it runs). fd 3 is closed before the command starts.
_HOLD = 'read _ <&3 || exit 126; exec 3<&-; exec "$@"'


def find_command(argv: Sequence[str]) -> Optional[str]:
    """Why ``argv`` cannot be started (not found, not executable), or None."""
    if not argv:
        return "no command given after --"
    name = argv[0]
    if "/" in name:
        if not os.path.isfile(name):
            return f"{name}: no such file"
        if not os.access(name, os.X_OK):
            return f"{name}: not executable"
        return None
    if shutil.which(name) is None:
        return f"{name}: command not found (PATH={os.environ.get('PATH', '')})"
    return None


class Launched:
    """A command started held; ``pid`` is its process id from now to its exit."""

    def __init__(self, argv: Sequence[str]) -> None:
        read_end, self._write_end = os.pipe()
        try:
            self.proc = subprocess.Popen(["/bin/sh", "-c", _HOLD, "sh", *argv], pass_fds=(read_end,))
        except BaseException:
            os.close(self._write_end)
            raise
        finally:
            os.close(read_end)
        self.pid = self.proc.pid
        self._released = False

    def release(self) -> None:
        """Let the command run (once)."""
        if not self._released:
            self._released = True
            try:
                os.write(self._write_end, b"go\n")
            finally:
                os.close(self._write_end)

    def running(self) -> bool:
        return self.proc.poll() is None

    def abandon(self) -> None:
        """The profiler could not start: end the held command before it runs anything."""
        if not self._released:
            self._released = True
            os.close(self._write_end)  # `read` fails: the shell exits 126 without exec
        if self.running():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def forward(self, signum: int) -> None:
        if self.running():
            self.proc.send_signal(signum)

    def exit_code(self, waiting: Optional[Callable[[], None]] = None) -> int:
        """Waits for the command; its exit status, or 128 + the signal that ended it.

        SIGINT, SIGTERM and SIGHUP received while waiting are passed on to the command (as
        `timeout` does), so that stopping the profiler never leaves the command behind.
        ``waiting()`` is called once they are, when the command is still running (to say
        that it is waited for)."""
        forwarded = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {s: signal.signal(s, lambda signum, _frame: self.forward(signum)) for s in forwarded}
        try:
            if waiting is not None and self.running():
                waiting()
            code = self.proc.wait()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        return 128 - code if code < 0 else code


def descendants(pids: Iterable[int]) -> Set[int]:
    """The processes running now under ``pids`` (children, theirs, ...), from each
    process's parent in ``/proc/PID/stat``; ``pids`` themselves not included. A process
    that exits while it is read is left out."""
    children: Dict[int, List[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name (field 2) may hold spaces and parentheses: the fields after it
        # start past its last ')'.
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: Set[int] = set()
    todo = list(pids)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found - set(pids)
