"""Log lines a daemon operator can use, in the Datadog Agent's layout.

``configure(level)`` sends every record of the process (Python's and the Rust core's,
which ``pyo3_log`` forwards to ``logging``) to stderr, one line each::

    2026-11-30 15:46:26 UTC | DDPROF | WARN | (exporters.uploader:212 in _attempt_failed) | upload ...

that is: UTC time, the component (``DDPROF``, as the Agent writes ``CORE`` or
``TRACE``), the level (the Agent's words: ``TRACE``, ``DEBUG``, ``INFO``, ``WARN``,
``ERROR``, ``CRITICAL``), where (logger without its ``ddprofiler.`` prefix, line,
function), the message. A message or traceback spanning several lines is folded into one
(newlines written as ``\\n``) except at the trace level, where dumps keep their shape.

Levels (``level_of``): ``trace`` (5, the level ``pyo3_log`` gives Rust's ``trace!``),
``debug``, ``info``, ``warning``, ``error``, ``critical``, ``off``. The BPF loader's
chatter (``aya``, ``aya_obj``: one line per relocation at debug) is only shown at trace:
``-v`` (debug) stays readable. Non-goals: log files, rotation (the service manager's job).
"""
from __future__ import annotations

import logging
import sys
import time
from typing import IO, Optional

TRACE = 5
COMPONENT = "DDPROF"
# The BPF loader (aya) logs a line per relocation and program at debug: trace level only.
_CHATTY = ("aya", "aya_obj", "aya_log")
_LEVELS = {"trace": TRACE, "debug": logging.DEBUG, "info": logging.INFO,
           "warning": logging.WARNING, "warn": logging.WARNING, "error": logging.ERROR,
           "critical": logging.CRITICAL, "off": logging.CRITICAL + 10}
_NAMES = {TRACE: "TRACE", logging.WARNING: "WARN"}


def level_of(name: str) -> int:
    """The ``logging`` level of a level name (``config.LOG_LEVELS``). Raises KeyError."""
    return _LEVELS[name.strip().lower()]


class OneLineFormatter(logging.Formatter):
    """The Agent's layout; one line per record below the trace level."""

    converter = staticmethod(time.gmtime)  # UTC, as the line says

    def __init__(self) -> None:
        super().__init__(fmt="%(asctime)s UTC | " + COMPONENT + " | %(agent_level)s | "
                             "(%(where)s) | %(message)s", datefmt="%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        record.agent_level = _NAMES.get(record.levelno, record.levelname)
        name = record.name[len("ddprofiler."):] if record.name.startswith("ddprofiler.") else record.name
        func = record.funcName  # None for records of the Rust core (pyo3_log)
        record.where = f"{name}:{record.lineno}" + (f" in {func}" if func and func != "<module>" else "")
        text = super().format(record)
        if record.levelno > TRACE:
            text = text.rstrip("\n").replace("\r", "").replace("\n", "\\n")
        return text


def configure(level: int, stream: Optional[IO[str]] = None) -> None:
    """Everything at ``level`` and above to ``stream`` (stderr) in the Agent's layout;
    replaces the handlers of the root logger (so calling it again changes the level)."""
    logging.addLevelName(TRACE, "TRACE")
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(OneLineFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(level if level <= TRACE else max(level, logging.INFO))
