"""Stop requests by signal: SIGINT and SIGTERM set a flag that the main loop polls, instead
of raising KeyboardInterrupt or killing the process, so that a stopped recording still
writes its file and a stopped run exports its partial period.

One stop request may arrive as two signals (to the process and to its group): signals
within ``StopFlag.SAME_REQUEST_S`` of each other count once. Non-goals: the command
launched under ``record -- CMD`` (``launch`` passes signals on to it).
"""
from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from types import FrameType
from typing import Optional


class StopFlag:
    """Callable flag set by SIGINT/SIGTERM; remembers which signal."""

    # `timeout -s INT`, `kill -INT -PGID` and a terminal deliver one stop request as a
    # signal to the process and another to its group, microseconds apart: signals within
    # this window are one request. A person asking twice takes longer than this.
    SAME_REQUEST_S = 0.5

    def __init__(self, second_exits: bool = False) -> None:
        self.signum: Optional[int] = None
        self.second_exits = second_exits
        self._at = 0.0

    def __call__(self) -> bool:
        return self.signum is not None

    def set(self, signum: int, frame: Optional[FrameType]) -> None:
        now = time.monotonic()
        if self.signum is not None:
            if self.second_exits and now - self._at > self.SAME_REQUEST_S:
                os.write(2, b"ddprofiler: second signal, exiting now\n")
                os._exit(128 + signum)
            return
        self.signum, self._at = signum, now


@contextlib.contextmanager
def stop_on_signals(second_exits: bool = False) -> Iterator[StopFlag]:
    """While inside, SIGINT and SIGTERM set the yielded flag instead of killing us; with
    `second_exits`, a second signal ends the process at once."""
    flag = StopFlag(second_exits)
    previous = {sig: signal.signal(sig, flag.set) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
