"""The ``ddprofiler`` command line (``python -m ddprofiler``).

``record`` samples all processes (or the ``--pid`` ones) for ``--duration`` seconds and
writes a gzip-compressed pprof to ``--output``. Every flag is checked before anything
starts: a bad one is a one-line usage error on stderr, exit 2, and nothing is written.
Failures at run time (extension missing, privileges missing, BPF unavailable, output not
writable) are one line ``ddprofiler: error: ...``, exit 1. Ctrl-C or SIGTERM ends the
recording early; the profile is still written (atomically) and the exit code is 0.
Diagnostics go through ``logging`` (``-v`` for debug); the live status line (TTY only) and
the final summary go to stderr.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import tempfile
from typing import Callable, Iterator, Optional, Tuple

import click

import ddprofiler
from ddprofiler import privileges
from ddprofiler.status import StatusLine, summary_lines

log = logging.getLogger(__name__)

ERROR_PREFIX = "ddprofiler: error: "


class Failure(click.ClickException):
    """A run-time failure: one line on stderr, exit 1."""

    exit_code = 1

    def show(self, file=None) -> None:
        click.echo(ERROR_PREFIX + self.format_message(), err=True)


class _Group(click.Group):
    """A click group whose usage errors are a single line, never a traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # `ddprofiler` alone shows the help
                e.show()
            else:
                message = " ".join(e.format_message().split())
                click.echo(f"{ERROR_PREFIX}{message} (see --help)", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except click.Abort:  # Ctrl-C outside the recording window
            click.echo("ddprofiler: interrupted", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(ddprofiler.__version__, prog_name="ddprofiler")
def main() -> None:
    """ddprofiler: a continuous eBPF CPU profiler."""


def _check_duration(ctx, param, value: float) -> float:
    if not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number of seconds.")
    return value


def _check_stack_bytes(ctx, param, value: int) -> int:
    if value % 8:
        raise click.BadParameter(f"{value} is not a multiple of 8.")
    return value


def _check_pids(ctx, param, value: Tuple[int, ...]) -> Tuple[int, ...]:
    for pid in value:
        if not os.path.isdir(f"/proc/{pid}"):
            raise click.BadParameter(f"no process with pid {pid}.")
    return tuple(dict.fromkeys(value))


def _check_output(ctx, param, value: str) -> str:
    if not value or value.endswith(os.sep) or os.path.isdir(value):
        raise click.BadParameter(f"'{value}' is a directory.")
    if os.path.lexists(value) and not os.path.isfile(value):
        raise click.BadParameter(f"'{value}' exists and is not a regular file.")
    directory = os.path.dirname(os.path.abspath(value))
    if not os.path.isdir(directory):
        raise click.BadParameter(f"directory '{directory}' does not exist.")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise click.BadParameter(f"directory '{directory}' is not writable.")
    try:  # root passes access(); the filesystem may still refuse (procfs, sysfs...)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as e:
        raise click.BadParameter(f"directory '{directory}' is not writable ({e.strerror or e}).") from e
    return value


@main.command()
@click.option(
    "--pid", "pids", type=click.IntRange(min=1), multiple=True, callback=_check_pids,
    help="Sample only this process (repeatable). Default: all processes.",
)
@click.option(
    "--duration", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
    callback=_check_duration, help="Seconds to record; Ctrl-C stops earlier.",
)
@click.option(
    "--frequency", type=click.IntRange(1, 10000), default=99, show_default=True,
    help="Samples per second on each CPU.",
)
@click.option(
    "--stack-bytes", type=click.IntRange(1024, 65536), default=16384, show_default=True,
    callback=_check_stack_bytes, help="Bytes of user stack copied per sample (a multiple of 8).",
)
@click.option(
    "-o", "--output", type=click.Path(), default="profile.pprof", show_default=True,
    callback=_check_output, help="Where to write the gzip-compressed pprof.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def record(pids, duration, frequency, stack_bytes, output, verbose) -> None:
    """Record a CPU profile of all processes (or the given ones) to a pprof file."""
    _configure_logging(verbose)
    try:
        native = ddprofiler.load_native()
    except ImportError as e:
        raise Failure(str(e)) from e
    problem = privileges.problem()
    if problem:
        raise Failure(problem)
    log.debug("recording pids=%s duration=%ss frequency=%sHz stack_bytes=%s",
              list(pids) or "all", duration, frequency, stack_bytes)

    status = StatusLine(sys.stderr)
    with _stop_on_signals() as stop_requested:
        try:
            snapshot = ddprofiler.record(
                duration, pids=pids, frequency=frequency, stack_bytes=stack_bytes,
                should_stop=stop_requested, on_progress=status.update,
            )
        except native.BpfUnavailableError as e:
            raise Failure(str(e)) from e
        except PermissionError as e:
            raise Failure(str(e) or privileges.problem(cap_eff=0) or "permission denied") from e
        finally:
            status.finish()
    if stop_requested():
        log.debug("stopped early by %s", signal.Signals(stop_requested.signum).name)

    from ddprofiler.pprof import write_pprof  # protobuf is only needed from here on

    try:
        write_pprof(snapshot, output)
    except OSError as e:
        raise Failure(f"cannot write {output}: {e.strerror or e}") from e
    seconds = max(0, snapshot["end_ns"] - snapshot["start_ns"]) / 1e9
    click.echo(f"ddprofiler: wrote {output} ({seconds:.1f} s)", err=True)
    for line in summary_lines(snapshot["stats"]):
        click.echo(f"  {line}", err=True)


class _StopFlag:
    """Callable flag set by SIGINT/SIGTERM; remembers which signal."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None

    def __call__(self) -> bool:
        return self.signum is not None

    def set(self, signum, frame) -> None:
        self.signum = signum


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[Callable[[], bool]]:
    """While inside, SIGINT and SIGTERM set the yielded flag instead of killing us."""
    flag = _StopFlag()
    previous = {sig: signal.signal(sig, flag.set) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="ddprofiler: %(levelname)s: %(name)s: %(message)s",
        stream=sys.stderr,
    )
