"""A Ctrl-C while the command line is still loading ends it quietly.

``python -m ddprofiler`` and the ``ddprofiler`` script import this package, click and the
settings before the CLI can catch anything: an interrupt there (the first ~0.1 s) would
print a ``KeyboardInterrupt`` traceback. ``guard()``, called first thing by the package
when (and only when) this process is that command line, makes SIGINT print
``ddprofiler: interrupted`` and exit 130 (the CLI's own answer to a Ctrl-C) until
``release()``, which the CLI calls once it handles interrupts itself. A program that
imports ddprofiler as a library is left alone. What remains is the interpreter's own
start, before this package is imported (site and .pth files: a few tens of ms),
which no package can cover.
"""
from __future__ import annotations

import os
import signal
import sys
from types import FrameType  # cheap; `typing` is not: it takes a window of its own

_guarded = False


def _is_the_cli() -> bool:
    argv = list(getattr(sys, "orig_argv", ()))
    if "-m" in argv[:-1] and argv[argv.index("-m") + 1] == "ddprofiler":
        return True
    return os.path.basename(sys.argv[0] if sys.argv else "") == "ddprofiler"


def _interrupted(signum: int, frame: FrameType | None) -> None:
    os.write(2, b"ddprofiler: interrupted\n")
    os._exit(130)


def guard() -> None:
    global _guarded
    if _is_the_cli() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupted)
        _guarded = True


def release() -> None:
    global _guarded
    if _guarded and signal.getsignal(signal.SIGINT) is _interrupted:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    _guarded = False
