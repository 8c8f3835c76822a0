"""The ``ddprofiler`` command line (``python -m ddprofiler``).

``record`` samples all processes (or the ``--pid`` ones) for ``--duration`` seconds and
writes a gzip-compressed pprof to ``--output``. Every flag is checked before anything
starts: a bad one is a one-line usage error on stderr, exit 2, and nothing is written.
Failures at run time (extension missing, privileges missing, BPF unavailable, output not
writable: the ``ddprofiler.errors`` classes, and ``OSError``) are one line
``ddprofiler: error: ...``, exit 1. Ctrl-C or SIGTERM ends the
recording early; the profile is still written (atomically) and the exit code is 0.
Diagnostics go through ``logging`` (``-v`` for debug); the live status line (TTY only) and
the final summary go to stderr. ``run`` (the default command) is the continuous profiler
(``ddprofiler.runner``); ``config`` shows the settings; ``symbols`` inspects binaries and
uploads their symbols. Every command profiles through the public API
(``ddprofiler.Profiler``, ``ddprofiler.record``), like any other user.
"""
from __future__ import annotations

import logging
import math
import os
import signal
import sys
import tempfile
from typing import IO, TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple, TypeVar

import click

import ddprofiler
from ddprofiler import _startup, config, errors, health, logs, privileges
from ddprofiler.profiler import OFF_CPU_CAP, SymbolizeMode, load_native
from ddprofiler.status import StatusLine, summary_lines
from ddprofiler.stopping import stop_on_signals

if TYPE_CHECKING:
    from ddprofiler.dogstatsd import Metrics as DogStatsdMetrics
    from ddprofiler.profile import Value
    from ddprofiler.symbols.background import BackgroundSymbolUpload

log = logging.getLogger(__name__)

ERROR_PREFIX = "ddprofiler: error: "
_SYMBOLIZE_MODES: Tuple[SymbolizeMode, ...] = ("host", "backend", "both")
# What stops a profiler from starting: one line, exit 1.
_START_ERRORS = (errors.ProfilerError, PermissionError)

F = TypeVar("F", bound=Callable[..., Any])


class Failure(click.ClickException):
    """A run-time failure: one line on stderr, exit 1."""

    exit_code = 1

    def show(self, file: Optional[IO[Any]] = None) -> None:
        click.echo(ERROR_PREFIX + self.format_message(), err=True)


class _CommandFailure(Failure):
    """The command after ``--`` cannot be started: exit 127 (not found) or 126."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _Group(click.Group):
    """A click group whose usage errors are a single line, never a traceback."""

    def main(self, args: Any = None, prog_name: Optional[str] = None,
             complete_var: Optional[str] = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        _startup.release()  # from here on, click turns a Ctrl-C into Abort
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


def _setting_options(f: F) -> F:
    """The settings of the continuous profiler as flags (None when absent, so that the
    environment and defaults can take over: see ddprofiler.config)."""
    defaults = config.Settings()
    for spec in reversed(config.SPECS):
        envs = ", ".join(spec.envs)
        default = getattr(defaults, spec.name)
        shown = {True: "true", False: "false", None: "none", (): "none"}.get(default, default) \
            if isinstance(default, (bool, tuple, type(None))) else default
        if spec.name == "node":
            shown = "the hostname"
        elif spec.name == "max_queue_bytes":
            shown = "a quarter of the memory budget"
        elif spec.name in ("memory_budget", "output_max_bytes"):
            shown = config.format_bytes(default).replace(" ", "")
        help_text = f"{spec.help} [env: {envs}; default: {shown}]"
        if "/" in spec.flag:
            f = click.option(spec.flag, spec.name, default=None, help=help_text)(f)
        elif spec.name == "tags":  # repeatable: each adds
            f = click.option(spec.flag, spec.name, multiple=True, metavar="VALUE",
                             help=help_text + " Repeatable: each adds.")(f)
        else:
            # The names py-spy and perf users guess, beside the settings' own (record's too).
            aliases = {"sampling_rate": ("-r", "--rate")}.get(spec.name, ())
            f = click.option(*aliases, spec.flag, spec.name, default=None, metavar="VALUE", help=help_text)(f)
    return f


@click.group(cls=_Group, invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"],
                               # wide enough that no variable name is cut in two
                               "terminal_width": 120, "max_content_width": 120})
@click.version_option(ddprofiler.__version__, prog_name="ddprofiler")
@_setting_options
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
@click.pass_context
def main(ctx: click.Context, /, verbose: bool, **flags: Any) -> None:
    """ddprofiler: a continuous eBPF CPU profiler.

    Without a command, runs the continuous profiler (same as `ddprofiler run`): samples
    every CPU and sends one profile per service per period to the Datadog Agent (or the
    intake with --agentless, or files with --output-dir) until SIGTERM or SIGINT.
    """
    ctx.ensure_object(dict)
    ctx.obj["flags"] = _given(flags)
    ctx.obj["verbose"] = verbose
    if ctx.invoked_subcommand is None:
        _run(ctx.obj["flags"], verbose)


def _given(flags: Dict[str, Any]) -> Dict[str, Any]:
    """The flags given on the command line (an absent repeatable one is ``()``)."""
    return {k: v for k, v in flags.items() if v is not None and v != ()}


def _settings(flags: Dict[str, Any]) -> Tuple[config.Settings, Dict[str, str]]:
    try:
        return config.resolve(flags, os.environ)
    except config.ConfigError as e:
        raise click.UsageError(str(e)) from None


@main.command()
@_setting_options
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
@click.pass_context
def run(ctx: click.Context, /, verbose: bool, **flags: Any) -> None:
    """Profile continuously and upload every period (the default command)."""
    merged = {**ctx.obj.get("flags", {}), **_given(flags)}
    _run(merged, verbose or ctx.obj.get("verbose", False))


@main.command("config")
@_setting_options
@click.pass_context
def config_command(ctx: click.Context, /, **flags: Any) -> None:
    """Show the effective settings and where each came from (secrets masked)."""
    merged = {**ctx.obj.get("flags", {}), **_given(flags)}
    settings, sources = _settings(merged)
    rows = config.describe(settings, sources)
    width = max(len(r[0]) for r in rows)
    vwidth = min(60, max(len(r[1]) for r in rows))
    for name, value, source in rows:
        click.echo(f"{name:<{width}}  {value:<{vwidth}}  {source}")


def _run(flags: Dict[str, Any], verbose: bool) -> None:
    settings, sources = _settings(flags)
    symbolize = _symbolize_mode(settings.symbolize)
    if settings.output_dir:
        _check_output_dir(settings.output_dir)
    level = logs.level_of(settings.log_level)
    logs.configure(min(level, logging.DEBUG) if verbose else level)
    _check_can_profile()
    from ddprofiler import exporters
    from ddprofiler.runner import Runner  # protobuf, zstandard: only from here on

    exporter = exporters.from_settings(settings)
    destination = exporters.describe(settings)
    log.info("ddprofiler %s starting: %s; %s", ddprofiler.__version__, destination,
             _startup_details(settings))
    if settings.unused_tags:
        log.warning("tags not sent, a dedicated setting wins over them: %s (see `ddprofiler config`)",
                    ", ".join(settings.unused_tags))
    status = health.StatusFile(settings.status_file, version=ddprofiler.__version__,
                               upload_period=settings.upload_period, profiles_go_to=destination)
    status.start()
    metrics = _metrics(settings)

    def on_period(figures: Dict[str, Any]) -> None:
        status.period(figures)
        if metrics is not None:
            metrics.period(figures)
    with stop_on_signals(second_exits=True) as stop_requested:
        profiler = ddprofiler.Profiler(frequency=settings.sampling_rate,
                                       stack_bytes=settings.stack_bytes,
                                       symbolize=symbolize, python=settings.python,
                                       memory_budget=settings.memory_budget,
                                       off_cpu=settings.off_cpu, off_cpu_rate=settings.off_cpu_rate,
                                       off_cpu_cap=settings.off_cpu_cap)
        try:
            profiler.start()
        except _START_ERRORS as e:
            exporter.close(0)
            raise _start_failure(e) from e
        with profiler:
            symbols = _symbol_upload(settings)
            Runner(settings, profiler, exporter, symbols=symbols,
                   on_period=on_period).run(stop_requested)
            if symbols is not None:
                symbols.close(0)
        if stop_requested.signum is not None:
            log.info("stop requested by %s", signal.Signals(stop_requested.signum).name)
        pending = exporter.stats().get("queue_len", 0)
        # An OTLP upload is one request a period holding every profile: what is counted.
        unit = "OTLP requests" if settings.exporter == "otlp" and not settings.output_dir else "profiles"
        if pending:
            log.info("stopping: %d %s to deliver, waiting up to %gs", pending, unit,
                     settings.shutdown_timeout)
        exporter.close(settings.shutdown_timeout)
        stats, dest = exporter.stats(), exporter.health()
        status.stopped(stats, dest)
        if metrics is not None:
            metrics.close()
        _exit_summary(stats, dest, unit, "written" if settings.output_dir else "sent")


def _metrics(settings: config.Settings) -> Optional[DogStatsdMetrics]:
    """The DogStatsD sender, when --dogstatsd-url asks for one."""
    if not settings.dogstatsd_url:
        return None
    from ddprofiler.dogstatsd import Metrics

    tags = ["service:ddprofiler", f"profiler_version:{ddprofiler.__version__}"]
    if settings.environment:
        tags.append(f"env:{settings.environment}")
    log.info("sending the figures of each period to DogStatsD at %s", settings.dogstatsd_url)
    return Metrics(settings.dogstatsd_url, tags + list(settings.tags))


def _startup_details(settings: config.Settings) -> str:
    """The start-up line's settings: what an operator checks first (no secret)."""
    return (f"env {settings.environment or '(none: each process keeps its own DD_ENV)'}, host {settings.node}, "
            f"tags {','.join(settings.tags) or '(none)'}"
            + (f", version {settings.version}" if settings.version else "")
            + f", sampling {settings.sampling_rate} Hz per CPU"
            + (f", off-CPU {settings.off_cpu_rate:g} of switch-outs (at most {settings.off_cpu_cap}/s per CPU)"
               if settings.off_cpu else "")
            + f", symbolize {settings.symbolize}, "
            f"memory budget {config.format_bytes(settings.memory_budget)} (queue "
            f"{config.format_bytes(settings.max_queue_bytes)}), status file {settings.status_file or 'off'}, capabilities "
            f"{health.describe_capabilities()}")


def _exit_summary(stats: Dict[str, int], dest: Dict[str, Any], unit: str = "profiles", verb: str = "sent") -> None:
    """One line whose numbers add up: produced = sent (or written) + failed + dropped + not
    delivered."""
    produced = stats.get("uploads_submitted", 0)
    sent, failed = stats.get("uploads_ok", 0), stats.get("uploads_failed", 0)
    dropped, unsent = stats.get("uploads_dropped", 0), stats.get("uploads_abandoned", 0)
    level = logging.INFO if failed + dropped + unsent == 0 else logging.WARNING
    log.log(level, f"stopped: %d %s produced: %d {verb}, %d failed (rejected or retried too "
            f"often), %d dropped (queue full, or after the stop), %d not {verb} at exit%s; %d retries", produced, unit, sent,
            failed, dropped, unsent,
            f" (destination failing: {dest.get('reason')})" if dest.get("state") == "failing" else "",
            stats.get("uploads_retried", 0))


def _symbol_upload(settings: config.Settings) -> Optional[BackgroundSymbolUpload]:
    """The background symbol uploader, when --upload-symbols asks for one."""
    if not settings.upload_symbols:
        return None
    from ddprofiler.symbols import SymbolUploader
    from ddprofiler.symbols.background import BackgroundSymbolUpload

    if not settings.api_key:  # config.resolve refuses --upload-symbols without one
        raise click.UsageError("--upload-symbols needs an API key: set DD_API_KEY")
    uploader = SymbolUploader(settings.api_key, settings.app_key, settings.site,
                              dry_run=settings.symbols_dry_run,
                              api_base_url=settings.symbols_api_url,
                              intake_base_url=settings.symbols_intake_url,
                              origin_version=ddprofiler.__version__)
    log.info("%s the symbols of new binaries to %s",
             "dry run: not uploading" if settings.symbols_dry_run else "uploading",
             uploader.intake_url)
    return BackgroundSymbolUpload(uploader)


def _check_can_profile() -> None:
    """Fails (one line, exit 1) unless the extension loads and the privileges are there,
    before anything else starts."""
    try:
        load_native()
    except errors.NativeExtensionError as e:
        raise Failure(str(e)) from e
    privileges.raise_effective()  # the image's interpreter holds them as +p file capabilities
    problem = privileges.problem()
    if problem:
        raise Failure(problem)
    # Enough to start, maybe not to see everything: each capability missing, and its cost.
    shortfalls = privileges.shortfalls()
    for line in shortfalls:
        log.warning("%s", line)
    if shortfalls:
        log.warning("%s", privileges.shortfall_hint())


def _start_failure(e: BaseException) -> Failure:
    """The one error line of a profiler that did not start."""
    if isinstance(e, PermissionError) and not isinstance(e, errors.PrivilegeError):
        # EPERM from somewhere without a message of ours: say what is usually missing.
        return Failure(str(e) or privileges.problem(cap_eff=0) or "permission denied")
    return Failure(str(e) or type(e).__name__)


def _symbolize_mode(text: str) -> SymbolizeMode:
    for mode in _SYMBOLIZE_MODES:
        if text == mode:
            return mode
    raise click.UsageError(f"--symbolize: {text!r} is not one of {', '.join(_SYMBOLIZE_MODES)}")


def _check_output_dir(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise click.UsageError(f"--output-dir: cannot create '{path}' ({e.strerror or e})") from None
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise click.UsageError(f"--output-dir: '{path}' is not writable ({e.strerror or e})") from None


def _check_duration(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[float]:
    """Seconds: 10, 2.5, or with a unit as --upload-period takes them (500ms, 10s, 2m)."""
    if value is None:
        return None
    try:
        seconds = config.parse_duration(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    if not (math.isfinite(seconds) and seconds > 0):
        raise click.BadParameter(f"{value} is not a positive, finite number of seconds.")
    return seconds


def _suffix_format(path: str) -> Optional[str]:
    from ddprofiler import formats

    try:
        return formats.format_of(path)
    except ValueError:
        return None




def _check_stack_bytes(ctx: click.Context, param: click.Parameter, value: int) -> int:
    if value % 8:
        raise click.BadParameter(f"{value} is not a multiple of 8.")
    return value


def _check_pids(ctx: click.Context, param: click.Parameter, value: Tuple[int, ...]) -> Tuple[int, ...]:
    for pid in value:
        if not os.path.isdir(f"/proc/{pid}"):
            raise click.BadParameter(f"no process with pid {pid}.")
    return tuple(dict.fromkeys(value))


def _check_output(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if value == "-":  # standard output
        return value
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


@main.command(context_settings={"allow_interspersed_args": False})
@click.option(
    "-p", "--pid", "pids", type=click.IntRange(min=1), multiple=True, callback=_check_pids,
    help="Sample only this process (repeatable); recording stops when all have exited. "
         "Default: all processes.",
)
@click.option(
    "--subprocesses", is_flag=True,
    help="With --pid: also sample the processes running under them, and those they start (and theirs).",
)
@click.option("--idle", is_flag=True,
              help="Keep the idle task's samples (the kernel's swapper/N, pid 0): dropped by default.")
@click.option(
    "-d", "--duration", default=None, metavar="SECONDS", callback=_check_duration,
    help="Seconds to record [default: 10; with -- CMD, until it exits]; Ctrl-C stops earlier.",
)
@click.option(
    "-r", "-F", "--rate", "--frequency", "frequency", type=click.IntRange(1, 10000), default=99,
    show_default=True, help="Samples per second on each CPU (-F as perf; --frequency: the old name).",
)
@click.option(
    "--stack-bytes", type=click.IntRange(1024, 65536), default=16384, show_default=True,
    callback=_check_stack_bytes, help="Bytes of user stack copied per sample (a multiple of 8).",
)
@click.option(
    "-o", "--output", type=click.Path(allow_dash=True), default="profile.pprof", show_default=True,
    callback=_check_output,
    help="Where to write the profile; '-' writes to standard output. The suffix says the format "
         "unless --format does: .pprof/.pb.gz (pprof), .svg (flame graph), .speedscope.json/.json "
         "(speedscope), .txt/.folded (collapsed stacks).",
)
@click.option(
    "-f", "--format", "fmt", type=click.Choice(["pprof", "svg", "speedscope", "collapsed"]),
    default=None, help="Output format (default: from the output's suffix; needed with -o -).",
)
@click.option(
    "--python/--no-python", default=True, show_default=True,
    help="Read the Python frames of CPython processes (3.8 to 3.14) and show them in place "
         "of the interpreter's own.",
)
@click.option(
    "--off-cpu", is_flag=True,
    help="Also record off-CPU time: how long threads stay switched out (blocked on I/O, locks, "
         "sleeps, or preempted), by the stack they blocked in (the sched_switch tracepoint), as the "
         "profile's off-cpu-time sample type. Costs about 12 us per recorded switch-out (a stack "
         "copy) and 0.4 us per other context switch: see --off-cpu-rate and --off-cpu-cap.",
)
@click.option(
    "--off-cpu-rate", type=click.FloatRange(0, 1, min_open=True), default=None, metavar="FRACTION",
    help="With --off-cpu: the fraction of switch-outs recorded; the time is scaled up by its inverse "
         "[default: 1 with --pid or a command, 0.1 system-wide].",
)
@click.option(
    "--off-cpu-cap", type=click.IntRange(1, 1_000_000), default=OFF_CPU_CAP, show_default=True, metavar="N",
    help="With --off-cpu: at most N stacks a second on each CPU, whatever the switch rate (what the "
         "cap drops is counted: offcpu_capped).",
)
@click.option(
    "--value", "value", type=click.Choice(["cpu", "off-cpu"]), default="cpu", show_default=True,
    help="What the flame graph, speedscope and collapsed outputs weigh: CPU samples, or (with "
         "--off-cpu) time switched out. pprof holds both.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="[-- CMD [ARGS]...]")
def record(pids: Tuple[int, ...], subprocesses: bool, idle: bool, duration: Optional[float], frequency: int,
           stack_bytes: int, output: str, fmt: Optional[str], python: bool, off_cpu: bool,
           off_cpu_rate: Optional[float], off_cpu_cap: int, value: str, verbose: bool,
           command: Tuple[str, ...]) -> int:
    """Record a CPU profile of all processes, the given ones, or a command started here
    (`record [OPTIONS] -- CMD ARGS`: it and every process it starts, until it exits; its
    exit code is passed on) to a file: pprof, a flame graph, speedscope or collapsed
    stacks. Native stacks are always there (and Python frames where CPython runs): there is
    no --native to ask for."""
    from ddprofiler import formats, launch

    try:
        fmt = formats.format_of(output, fmt)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="'-o' / '--output'") from None
    if command and pids:
        raise click.UsageError("give --pid or a command after --, not both")
    if value == "off-cpu" and not off_cpu:
        raise click.UsageError("--value off-cpu needs --off-cpu")
    if (off_cpu_rate is not None or off_cpu_cap != OFF_CPU_CAP) and not off_cpu:
        raise click.UsageError("--off-cpu-rate and --off-cpu-cap go with --off-cpu")
    if subprocesses and not pids:
        raise click.UsageError("--subprocesses follows the processes of --pid (a command after -- is "
                               "always followed)")
    if command and (problem := launch.find_command(command)):
        # As env, nohup and timeout (POSIX's utilities that run a command): 127 when it is
        # not found, 126 when it cannot run; the command's own status passes through otherwise.
        raise _CommandFailure(problem, 126 if problem.endswith("not executable") else 127)
    if duration is None:
        duration = math.inf if command else 10.0
    _configure_logging(verbose)
    _check_can_profile()
    log.debug("recording pids=%s command=%s duration=%ss frequency=%sHz stack_bytes=%s",
              list(pids) or "all", list(command), duration, frequency, stack_bytes)

    child = launch.Launched(command) if command else None
    status = StatusLine(sys.stderr)
    with stop_on_signals() as stop_requested:
        try:
            profile = ddprofiler.record(
                duration, pids=(child.pid,) if child else pids or None, frequency=frequency,
                stack_bytes=stack_bytes, python=python, follow_children=bool(child) or subprocesses, idle=idle,
                off_cpu=off_cpu, off_cpu_rate=off_cpu_rate, off_cpu_cap=off_cpu_cap,
                should_stop=stop_requested, on_progress=status.update,
                on_start=child.release if child else None,
            )
        except _START_ERRORS as e:
            if child:
                child.abandon()
            raise _start_failure(e) from e
        except BaseException:
            if child:
                child.abandon()
            raise
        finally:
            status.finish()
        if child and stop_requested.signum == signal.SIGTERM:
            child.forward(signal.SIGTERM)  # a terminal's Ctrl-C reached the command itself
    if stop_requested.signum is not None:
        log.debug("stopped early by %s", signal.Signals(stop_requested.signum).name)
    if pids and profile.total == 0 and not (off_cpu and profile.off_cpu_total_ns):
        what = "it and the processes under it" if subprocesses else "it"
        hint = ("" if subprocesses else " A wrapper (sh -c, a gunicorn master, a pyenv shim) runs its work in "
                "child processes: add --subprocesses.")
        if off_cpu:
            hint += (" Off-CPU time is counted from a switch-out seen while recording: a thread blocked since "
                     "before the start has none until it runs again.")
        click.echo(f"ddprofiler: no samples of pid {', '.join(map(str, pids))}: {what} used no CPU while "
                   f"recorded.{hint}", err=True)

    try:
        profile.write(output, fmt, value="off-cpu" if value == "off-cpu" else "cpu")
    except OSError as e:
        raise Failure(f"cannot write {output}: {e.strerror or e}") from e
    where = "standard output" if output == "-" else output
    click.echo(f"ddprofiler: wrote {where} ({fmt}, {profile.duration_s:.1f} s)", err=True)
    for line in summary_lines(profile.stats):
        click.echo(f"  {line}", err=True)
    if off_cpu:
        st = profile.stats
        click.echo(f"  off-CPU: {profile.off_cpu_total_ns / 1e9:.2f} s switched out; "
                   f"{st.get('offcpu_recorded', 0)} of {st.get('offcpu_switches', 0)} switch-outs recorded "
                   f"({st.get('offcpu_capped', 0)} over the cap), {st.get('offcpu_joined', 0)} joined with their time",
                   err=True)
        capped, switches = st.get("offcpu_capped", 0), st.get("offcpu_switches", 0)
        if capped:
            log.warning("the off-CPU cap (%d stacks a second per CPU) dropped %.0f%% of the switch-outs: the off-CPU "
                        "time is an underestimate; raise --off-cpu-cap or lower --off-cpu-rate", off_cpu_cap,
                        100.0 * capped / max(1, switches))
    if child is None:
        return 0
    code = child.exit_code(waiting=lambda: click.echo(
        f"ddprofiler: recording ended; waiting for {command[0]} (pid {child.pid}) to exit "
        "(Ctrl-C or SIGTERM is passed on to it)", err=True))
    log.debug("%s exited with %d", command[0], code)
    return code


def _configure_logging(verbose: bool, default: int = logging.WARNING) -> None:
    logs.configure(logging.DEBUG if verbose else default)


@main.command("status")
@click.option("--status-file", type=click.Path(dir_okay=False), envvar="DD_HOST_PROFILING_STATUS_FILE",
              default=config.DEFAULT_STATUS_FILE, show_default=True,
              help="The running profiler's status file. [env: DD_HOST_PROFILING_STATUS_FILE]")
@click.option("--json", "as_json", is_flag=True, help="Print the status file as it is.")
def status_command(status_file: str, as_json: bool) -> None:
    """Is the profiler alive and uploading? Exit 0 when healthy, 1 when not (a liveness
    probe can run it): last upload, samples per period, queue, counters."""
    import json

    try:
        doc = health.read(status_file)
    except FileNotFoundError:
        raise Failure(f"no status file at {status_file}: is `ddprofiler run` running "
                      "(with this --status-file)?") from None
    except (OSError, ValueError) as e:
        raise Failure(f"cannot read {status_file}: {getattr(e, 'strerror', None) or e}") from None
    if as_json:
        click.echo(json.dumps(doc, indent=1, sort_keys=True))
    else:
        for line in health.format_status(doc):
            click.echo(line)
    if health.verdict(doc):
        sys.exit(1)


@main.command("top")
@click.option("-p", "--pid", "pids", type=click.IntRange(min=1), multiple=True, callback=_check_pids,
              help="Only this process (repeatable). Default: all processes.")
@click.option("--subprocesses", is_flag=True, help="With --pid: and the processes under them, now and later.")
@click.option("-r", "--rate", "frequency", type=click.IntRange(1, 10000), default=99, show_default=True,
              help="Samples per second on each CPU.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("--sort", type=click.Choice(["self", "total"]), default="self", show_default=True,
              help="Rank by self (innermost function) or total (anywhere in the stack); s / t switch.")
@click.option("-n", "--rows", "n", type=click.IntRange(min=1), default=None,
              help="Rows to show [default: what the terminal holds; 20 when not a terminal].")
@click.option("--python/--no-python", default=True, show_default=True,
              help="Show the Python functions of CPython processes.")
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def top_command(pids: Tuple[int, ...], subprocesses: bool, frequency: int, interval: float, sort: str,
                n: Optional[int], python: bool, verbose: bool) -> None:
    """The hottest functions, live, refreshed every --interval (like perf top and py-spy top).
    q quits. Not on a terminal: one table per interval."""
    from ddprofiler import top

    if subprocesses and not pids:
        raise click.UsageError("--subprocesses follows the processes of --pid")
    _configure_logging(verbose)
    _check_can_profile()
    with stop_on_signals() as stop_requested:
        profiler = ddprofiler.Profiler(pids or None, frequency, python=python, follow_children=subprocesses)
        try:
            profiler.start()
        except _START_ERRORS as e:
            raise _start_failure(e) from e
        with profiler:
            top.run(profiler, interval, "self" if sort == "self" else "total", n, stop_requested)


@main.command("report")
@click.argument("profile", type=click.Path(exists=True, dir_okay=False))
@click.option("-n", "--top", "n", type=click.IntRange(min=1), default=20, show_default=True,
              help="How many functions to list.")
@click.option("--by", "--sort", "by", type=click.Choice(["self", "total"]), default="self", show_default=True,
              help="Rank by self samples (the innermost function) or total (anywhere in the stack).")
@click.option("--lines", is_flag=True, help="Count each source line of a function on its own.")
@click.option("--diff", "base", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A base profile: list what changed from it, and with -o draw a differential "
                   "flame graph (red grew, blue shrank).")
@click.option("--value", type=click.Choice(["cpu", "off-cpu"]), default="cpu", show_default=True,
              help="Rank and draw by CPU samples, or by time switched out (a profile recorded with --off-cpu).")
@click.option("-o", "--output", type=click.Path(allow_dash=True), default=None,
              help="Also write PROFILE in another format (from the suffix or --format: svg, "
                   "speedscope, collapsed, pprof); with --diff, the differential flame graph (SVG).")
@click.option("-f", "--format", "fmt", type=click.Choice(["pprof", "svg", "speedscope", "collapsed"]),
              default=None, help="Format of -o (default: from its suffix).")
def report_command(profile: str, n: int, by: str, lines: bool, base: Optional[str], value: str,
                   output: Optional[str], fmt: Optional[str]) -> None:
    """The hottest functions of PROFILE (a pprof file: ddprofiler's, or any CPU profile's), or
    with --diff BASE what grew and shrank since BASE."""
    from ddprofiler import formats, report

    if output is not None and output != "-":
        _check_output(click.get_current_context(), click.Option(["-o"]), output)
    if output is not None and base is not None and (fmt or ("svg" if output == "-" else _suffix_format(output))) != "svg":
        raise click.UsageError("--diff draws an SVG flame graph: give -o with .svg (or -f svg)")
    if output is not None and base is None:
        try:
            fmt = formats.format_of(output, fmt)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="'-o' / '--output'") from None
    try:
        new = report.load(profile)
        old = report.load(base) if base else None
    except (OSError, ValueError) as e:
        raise Failure(str(e)) from None
    by_: report.By = "self" if by == "self" else "total"
    value_: Value = "off-cpu" if value == "off-cpu" else "cpu"
    for p, path in ((new, profile), (old, base)):
        try:
            if p is not None:
                p.check_value(value_)
        except ValueError as e:
            raise click.UsageError(f"--value: {path}: {e}") from None
    rows = (report.top_table(new, n, by_, lines, value_) if old is None
            else report.diff_table(new, old, n, by_, lines, value_))
    if output is not None:
        try:
            if old is not None:
                svg = report.diff_svg(new, old, value=value_).encode()
                if output == "-":
                    sys.stdout.buffer.write(svg)
                else:
                    from ddprofiler.pprof.builder import write_atomic

                    write_atomic(output, svg)
            else:
                fmt = formats.write(new, output, fmt, value=value_)
        except OSError as e:
            raise Failure(f"cannot write {output}: {e.strerror or e}") from e
    table = sys.stderr if output == "-" else sys.stdout
    for row in rows:
        click.echo(row, file=table)
    if output is not None and output != "-":
        what = "differential flame graph" if base is not None else fmt
        click.echo(f"ddprofiler: wrote {output} ({what})", err=True)


@main.group()
def symbols() -> None:
    """Inspect native binaries and upload their symbols to Datadog (the datadog-ci use case)."""


@symbols.command("inspect")
@click.argument("binary", type=click.Path(exists=True, dir_okay=False))
@click.option("--root", default="/", show_default=True, type=click.Path(file_okay=False),
              help="Root to look for separate debug files in (e.g. /proc/PID/root).")
def symbols_inspect(binary: str, root: str) -> None:
    """Print the build ids, arch, symbol source and sizes of BINARY, as JSON."""
    import json

    from ddprofiler.symbols import InvalidBinary, inspect

    try:
        info = inspect(binary, root=root)
    except InvalidBinary as e:
        raise click.UsageError(f"{binary}: {e}") from None
    click.echo(json.dumps(info.to_dict(), indent=2))


@symbols.command("upload")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--api-key", envvar=["DD_HOST_PROFILING_API_KEY", "DD_API_KEY"], metavar="VALUE",
              help="Datadog API key. [env: DD_HOST_PROFILING_API_KEY, DD_API_KEY]")
@click.option("--app-key", envvar=["DD_HOST_PROFILING_APP_KEY", "DD_APP_KEY"], metavar="VALUE",
              help="Datadog application key, where the query needs one. [env: DD_APP_KEY]")
@click.option("--site", envvar=["DD_HOST_PROFILING_SITE", "DD_SITE"], default="datadoghq.com",
              show_default=True, help="Datadog site. [env: DD_HOST_PROFILING_SITE, DD_SITE]")
@click.option("--dry-run", is_flag=True, help="Query and build the debug files; upload nothing.")
@click.option("--root", default="/", show_default=True, type=click.Path(file_okay=False),
              help="Root to look for separate debug files in.")
@click.option("--max-bytes-in-flight", type=click.IntRange(1 << 20), default=64 << 20,
              show_default=True, help="Bound on the bytes being uploaded at once.")
@click.option("--max-workers", type=click.IntRange(1, 32), default=4, show_default=True)
@click.option("--state-path", type=click.Path(dir_okay=False),
              help="Record of what was uploaded (default: ~/.local/state/ddprofiler/).")
@click.option("--no-state", is_flag=True, help="Keep no record: upload again what the backend lacks.")
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def symbols_upload(paths: Tuple[str, ...], api_key: Optional[str], app_key: Optional[str], site: str,
                   dry_run: bool, root: str, max_bytes_in_flight: int, max_workers: int,
                   state_path: Optional[str], no_state: bool, verbose: bool) -> None:
    """Upload the symbols of PATHS (ELF files, or directories searched for them) where ours
    are better than what Datadog has."""
    _configure_logging(verbose, default=logging.INFO)
    try:
        key = config.check_api_key(api_key) if api_key else None
        site = config.SPEC_BY_NAME["site"].parse(site)
    except ValueError as e:
        raise click.UsageError(f"--api-key/--site: {e}") from None
    if not key:
        raise click.UsageError("symbols upload needs an API key: set DD_API_KEY")
    from ddprofiler.symbols import SymbolUploader

    uploader = SymbolUploader(key, app_key, site, dry_run=dry_run, max_bytes_in_flight=max_bytes_in_flight,
                              max_workers=max_workers,
                              state_path=None if no_state else (state_path or "default"),
                              origin_version=ddprofiler.__version__)
    summary = uploader.upload_paths(list(paths), root=root)
    verb = "would upload" if dry_run else "uploaded"
    done = summary.would_upload if dry_run else summary.uploaded
    click.echo(f"ddprofiler: {verb} {len(done)}, skipped {len(summary.skipped)}, "
               f"failed {len(summary.failed)}", err=True)
    for path, reason in summary.failed:
        click.echo(f"  failed: {path}: {reason}", err=True)
    if not summary.ok:
        sys.exit(1)
