"""Starting a command to profile it from its first instruction (``record -- CMD ARGS``).

The command is started held: ``/bin/sh`` waits on a pipe, then ``exec``s it, so that its
pid is known (and handed to the profiler, which follows its children) before it runs
anything; ``release()`` lets it go once sampling has started. The process keeps that pid
through the ``exec``. ``exit_code()`` is what a shell would report: its status, or 128 +
the signal that ended it. Non-goals: terminals, process groups (the command stays in ours,
so a Ctrl-C at the terminal reaches it as it would without the profiler).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from typing import Optional

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

    def exit_code(self) -> int:
        """Waits for the command; its exit status, or 128 + the signal that ended it."""
        code = self.proc.wait()
        return 128 - code if code < 0 else code
