"""Settings of the continuous profiler: where each comes from, checked once at start.

Input: the flags given on the command line (``None`` when absent) and the environment.
Output: a frozen :class:`Settings` and, per setting, the source it came from (``flag
--x``, ``env DD_X``, ``default``). Precedence: flag > ``DD_HOST_PROFILING_X`` > ``DD_X`` >
default, with the names of ``datadog-contracts.md``. A malformed value raises
:class:`ConfigError` (the CLI turns it into a one-line usage error, exit 2).
Secrets (the API key) are only ever shown masked; the API key is checked only where it is
used (agentless upload, symbol upload). Datadog's own habits, as the tracers read them:

- ``DD_AGENT_HOST`` and ``DD_TRACE_AGENT_PORT``, either alone, stand for
  ``http://<host or localhost>:<port or 8126>``; ``DD_TRACE_AGENT_URL`` wins over both;
  a port that is not 1..65535 is an error.
- ``DD_HOSTNAME`` sets the host tag (after ``--node``/``DD_HOST_PROFILING_NODE``).
- ``env``, ``service``, ``version`` and ``host`` inside the tags (``DD_TAGS``, ``--tags``)
  are never sent as user tags, so no profile carries two values for one of them. They
  are fallbacks, as in dd-trace-py (``ddtrace/settings/_config.py``:
  ``self.env = _get_config("DD_ENV", self.tags.get("env"))``, the same for service
  and version): the dedicated setting wins (a process's own ``DD_ENV``/``DD_VERSION``,
  then ``--environment``/``DD_ENV``; ``--node``/``DD_HOSTNAME``/...; ``--host-service``),
  the tag is used only where that is unset. ``service`` from the tags is the service
  of the single profile without ``--split-by-service``; with it, each process's own
  service wins and the tag is unused (``unused_tags`` says so).
- A repeated ``--tags`` adds to the previous ones.

Non-goals: reading config files.
"""
from __future__ import annotations

import dataclasses
import re
import socket
import urllib.parse
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

from ddprofiler.tagging import parse_dd_tags

SITES = ("datadoghq.com", "datadoghq.eu", "us3.datadoghq.com", "us5.datadoghq.com",
         "ap1.datadoghq.com", "ap2.datadoghq.com", "ddog-gov.com")
_API_KEY = re.compile(r"^[0-9a-z]{32}$")
DEFAULT_STATUS_FILE = "/run/ddprofiler/status.json"
# The native core's defaults (ddprof-core's `memory`): checked equal by the tests.
DEFAULT_MEMORY_BUDGET = 128 << 20
MIN_MEMORY_BUDGET = 64 << 20
LOG_LEVELS = ("trace", "debug", "info", "warn", "warning", "error", "critical", "off")
RESERVED_TAGS = ("env", "service", "version", "host")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")


class ConfigError(ValueError):
    """A setting is malformed; the message names it and where it came from."""


@dataclasses.dataclass(frozen=True)
class Settings:
    agent_url: str = "http://localhost:8126"
    sampling_rate: int = 20
    upload_period: float = 60.0
    environment: Optional[str] = None
    tags: Tuple[str, ...] = ()
    split_by_service: bool = True
    host_service: Optional[str] = None
    node: str = ""
    site: str = "datadoghq.com"
    api_key: Optional[str] = dataclasses.field(default=None, repr=False)
    agentless: bool = False
    output_dir: Optional[str] = None
    shutdown_timeout: float = 10.0
    stack_bytes: int = 16384
    # A quarter of the memory budget unless set (the queue's compressed profiles count in it).
    max_queue_bytes: int = DEFAULT_MEMORY_BUDGET // 4
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    symbolize: str = "host"
    python: bool = True
    off_cpu: bool = False
    off_cpu_rate: float = 0.1
    off_cpu_cap: int = 250
    upload_symbols: bool = False
    app_key: Optional[str] = dataclasses.field(default=None, repr=False)
    symbols_dry_run: bool = False
    symbols_api_url: Optional[str] = None
    symbols_intake_url: Optional[str] = None
    status_file: Optional[str] = DEFAULT_STATUS_FILE
    output_max_files: int = 1000
    output_max_bytes: int = 1 << 30
    log_level: str = "info"
    dogstatsd_url: Optional[str] = None
    exporter: str = "datadog"
    otlp_endpoint: str = "http://localhost:4318"
    otlp_headers: Optional[str] = dataclasses.field(default=None, repr=False)
    # Not settings of their own: `version:` of the tags (fallback of the processes' own
    # DD_VERSION), and reserved tags that had to be left out, for the start-up log.
    version: Optional[str] = None
    unused_tags: Tuple[str, ...] = ()

    def __repr__(self) -> str:  # the key never shows, whatever prints a Settings
        fields = (f"{f.name}={mask(getattr(self, f.name)) if f.name in _SECRETS else getattr(self, f.name)!r}"
                  for f in dataclasses.fields(self))
        return f"Settings({', '.join(fields)})"


_SECRETS = ("api_key", "app_key", "otlp_headers")


def mask(secret: Optional[str]) -> str:
    """How a secret is shown: its last four characters at most."""
    if not secret:
        return "(unset)"
    return "****" + secret[-4:] if len(secret) >= 12 else "****"


# ------------------------------------------------------------------- parsing of values

def _bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on", "y", "t"):
        return True
    if t in ("0", "false", "no", "off", "n", "f"):
        return False
    raise ValueError(f"'{text}' is not a boolean (true/false)")


def _seconds(text: str) -> float:
    """Seconds from '60', '60s', '1m', '500ms', '1.5h' (Go-style durations, as the peer takes)."""
    m = _DURATION.match(str(text).strip())
    if not m:
        raise ValueError(f"'{text}' is not a duration (e.g. 60, 60s, 1m)")
    value = float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]
    return value


parse_duration = _seconds  # for the CLI's durations, with the same words


def _positive_int(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            v = int(str(text).strip())
        except ValueError:
            raise ValueError(f"'{text}' is not a whole number") from None
        if not lo <= v <= hi:
            raise ValueError(f"{v} is outside {lo}..{hi}")
        return v
    return parse


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(|b|k|ki|kib|kb|m|mi|mib|mb|g|gi|gib|gb|t|ti|tib|tb)\s*$", re.IGNORECASE)
_SIZE_SHIFT = {"": None, "b": 0, "k": 10, "m": 20, "g": 30, "t": 40}


def _size(lo: int, hi: int, bare_shift: int) -> Callable[[str], int]:
    """Bytes from '128MiB', '128M', '128Mi', '1GiB', '512KiB' (binary units, as Kubernetes'
    'Mi'; 'MB' is taken as MiB too: these are budgets, not disk sizes); a bare number is in
    units of ``1 << bare_shift`` bytes."""
    def parse(text: str) -> int:
        m = _SIZE.match(str(text))
        if not m:
            raise ValueError(f"'{text}' is not a size (such as 128MiB or 1GiB)")
        shift = _SIZE_SHIFT[m.group(2)[:1].lower()]
        v = int(float(m.group(1)) * (1 << (bare_shift if shift is None else shift)))
        if not lo <= v <= hi:
            raise ValueError(f"{format_bytes(v)} is outside {format_bytes(lo)}..{format_bytes(hi)}")
        return v
    return parse


def format_bytes(n: int) -> str:
    """'128 MiB', '1.5 GiB', '512 KiB', '100 B': what logs and errors show."""
    for shift, unit in ((40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")):
        if n >= 1 << shift:
            v = n / (1 << shift)
            return f"{v:.0f} {unit}" if v == int(v) or v >= 100 else f"{v:.1f} {unit}"
    return f"{n} B"


def _fraction(text: str) -> float:
    try:
        v = float(str(text).strip())
    except ValueError:
        raise ValueError(f"'{text}' is not a number") from None
    if not 0 < v <= 1:
        raise ValueError(f"{v} is not a fraction in (0, 1]")
    return v


def _period(text: str) -> float:
    v = _seconds(text)
    if not 1 <= v <= 3600:
        raise ValueError(f"{v:g} s is outside 1 s..1 h")
    return v


def _timeout(text: str) -> float:
    v = _seconds(text)
    if not 0 <= v <= 600:
        raise ValueError(f"{v:g} s is outside 0..600 s")
    return v


def _agent_url(text: str) -> str:
    url = text.strip()
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "unix":
        if not parsed.path.startswith("/"):
            raise ValueError(f"'{url}' names no absolute socket path (unix:///path/to/apm.socket)")
        return url
    return _check_http(url, parsed, "an http://, https:// or unix://")


def _check_http(url: str, parsed: urllib.parse.SplitResult, expected: str) -> str:
    """`url` without a trailing slash, if it is http(s) with a host and a valid port."""
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"'{url}' is not {expected} URL")
    try:
        parsed.port
    except ValueError:
        raise ValueError(f"'{url}' has an invalid port") from None
    return url.rstrip("/")


def _http_url(text: str) -> str:
    url = text.strip()
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme in ("http", "https") and (parsed.username or parsed.password or parsed.query
                                               or parsed.fragment):
        # Credentials would be logged with the URL, and a query would be dropped.
        raise ValueError(f"'{parsed.scheme}://{parsed.hostname}...' must be a base URL: no user:password@, ? or #")
    return _check_http(url, parsed, "an http:// or https://")


def _site(text: str) -> str:
    site = text.strip().lower()
    if site not in SITES:
        raise ValueError(f"'{text}' is not a Datadog site (one of {', '.join(SITES)})")
    return site


def check_api_key(text: str) -> str:
    """The key, stripped, if it looks like a Datadog API key. Raises ValueError (which
    never holds the value)."""
    key = text.strip()
    if not _API_KEY.match(key):
        # Never echo the value: it may be a real key with a typo.
        raise ValueError("is malformed: expected 32 lowercase hexadecimal-like characters")
    return key


SYMBOLIZE_MODES = ("host", "backend", "both")


def _symbolize(text: str) -> str:
    mode = text.strip().lower()
    if mode not in SYMBOLIZE_MODES:
        raise ValueError(f"'{text}' is not one of {', '.join(SYMBOLIZE_MODES)}")
    return mode


def _text(text: str) -> Optional[str]:
    return text.strip() or None


def _tags(text: str) -> Tuple[str, ...]:
    # As Datadog's libraries read DD_TAGS: split on commas when there are any, else spaces.
    return tuple(parse_dd_tags(text))


def _status_file(text: str) -> Optional[str]:
    path = text.strip()
    if path.lower() in ("off", "none", "-"):
        return None
    if not path.startswith("/"):
        raise ValueError(f"'{path}' is not an absolute path (or 'off')")
    return path


def _log_level(text: str) -> str:
    level = text.strip().lower()
    if level not in LOG_LEVELS:
        raise ValueError(f"'{text}' is not a log level ({', '.join(LOG_LEVELS)})")
    return "warning" if level == "warn" else level


def _dogstatsd_url(text: str) -> str:
    from ddprofiler.dogstatsd import parse_url

    parse_url(text)
    return text.strip()


EXPORTERS = ("datadog", "otlp")


def _exporter(text: str) -> str:
    name = text.strip().lower()
    if name not in EXPORTERS:
        raise ValueError(f"'{text}' is not one of {', '.join(EXPORTERS)}")
    return name


def _otlp_headers(text: str) -> str:
    from ddprofiler.exporters.otlp import parse_headers

    parse_headers(text)  # its errors never hold a value
    return text.strip()


def _port(text: str) -> int:
    try:
        port = int(text.strip())
    except ValueError:
        raise ValueError(f"'{text}' is not a port number") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"{port} is not a port number (1..65535)")
    return port


@dataclasses.dataclass(frozen=True)
class Spec:
    name: str
    flag: str
    envs: Tuple[str, ...]
    parse: Callable[[str], Any]
    help: str
    secret: bool = False


SPECS: Tuple[Spec, ...] = (
    Spec("agent_url", "--agent-url", ("DD_HOST_PROFILING_TRACE_AGENT_URL", "DD_TRACE_AGENT_URL"),
         _agent_url, "Datadog Agent URL: http(s)://host:port or unix:///path/apm.socket. "
         "Also DD_AGENT_HOST + DD_TRACE_AGENT_PORT."),
    Spec("sampling_rate", "--sampling-rate", ("DD_HOST_PROFILING_SAMPLING_RATE",), _positive_int(1, 10000),
         "Samples per second on each CPU."),
    Spec("upload_period", "--upload-period", ("DD_HOST_PROFILING_UPLOAD_PERIOD",), _period,
         "Seconds between uploads (60, 60s, 1m), with a few percent of jitter."),
    Spec("environment", "--environment", ("DD_HOST_PROFILING_ENV", "DD_ENV"), _text,
         "env tag of processes that set no DD_ENV of their own."),
    Spec("tags", "--tags", ("DD_HOST_PROFILING_TAGS", "DD_TAGS"), _tags,
         "Extra tags, 'k:v' separated by commas (or spaces when there is no comma)."),
    Spec("split_by_service", "--split-by-service/--no-split-by-service",
         ("DD_HOST_PROFILING_SPLIT_BY_SERVICE",), _bool, "One profile per service per period."),
    Spec("host_service", "--host-service", ("DD_HOST_PROFILING_SERVICE",), _text,
         "Service of the single profile when not splitting by service."),
    Spec("node", "--node", ("DD_HOST_PROFILING_NODE", "DD_HOSTNAME", "KUBERNETES_NODE_NAME", "NODE_NAME"),
         _text, "host tag. Default: host: of the tags, else the hostname."),
    Spec("site", "--site", ("DD_HOST_PROFILING_SITE", "DD_SITE"), _site, "Datadog site, for agentless uploads."),
    Spec("api_key", "--api-key", ("DD_HOST_PROFILING_API_KEY", "DD_API_KEY"), _text,
         "Datadog API key, for agentless uploads. Prefer the environment to the flag.", secret=True),
    Spec("agentless", "--agentless/--no-agentless", ("DD_HOST_PROFILING_AGENTLESS",), _bool,
         "Upload straight to the intake of --site instead of the Agent."),
    Spec("output_dir", "--output-dir", ("DD_HOST_PROFILING_OUTPUT_DIR",), _text,
         "Write one pprof file per service per period here instead of uploading."),
    Spec("shutdown_timeout", "--shutdown-timeout", ("DD_HOST_PROFILING_SHUTDOWN_TIMEOUT",), _timeout,
         "Seconds to wait for pending uploads at exit."),
    Spec("stack_bytes", "--stack-bytes", ("DD_HOST_PROFILING_STACK_BYTES",), _positive_int(1024, 65536),
         "Bytes of user stack copied per sample (a multiple of 8)."),
    Spec("max_queue_bytes", "--max-queue-bytes", ("DD_HOST_PROFILING_MAX_QUEUE_BYTES",),
         _size(1 << 20, 1 << 30, 0), "Bound of the upload queue, compressed (bytes, or 32MiB). "
         "At most half of --memory-budget."),
    Spec("memory_budget", "--memory-budget", ("DD_HOST_PROFILING_MEMORY_BUDGET",),
         _size(MIN_MEMORY_BUDGET, 64 << 30, 20),
         "Resident memory to keep under (MiB, or 256MiB, 1GiB; at least 64 MiB). It sizes "
         "the symbol caches and the upload queue; a period ending over 7/8 of it drops the "
         "caches (memory_sheds). See docs/operations.md."),
    Spec("symbolize", "--symbolize", ("DD_HOST_PROFILING_SYMBOLIZE",), _symbolize,
         "Where native frames are symbolized: host (here), backend (sent as addresses with "
         "build ids, remote_symbols:yes), or both."),
    Spec("python", "--python/--no-python", ("DD_HOST_PROFILING_PYTHON",), _bool,
         "Read the Python frames of CPython processes (3.8 to 3.14) and show them in place "
         "of the interpreter's own."),
    Spec("off_cpu", "--off-cpu/--no-off-cpu", ("DD_HOST_PROFILING_OFF_CPU",), _bool,
         "Also profile off-CPU time: how long threads stay switched out (blocked on I/O, locks, "
         "sleeps, or preempted), by the stack they blocked in (sched_switch; sample type "
         "off-cpu-time). Costs about 12 us per recorded switch-out (a stack copy) and 0.4 us per "
         "other context switch, bounded by --off-cpu-rate and --off-cpu-cap."),
    Spec("off_cpu_rate", "--off-cpu-rate", ("DD_HOST_PROFILING_OFF_CPU_RATE",), _fraction,
         "With --off-cpu: the fraction of switch-outs recorded (a busy host switches tens of "
         "thousands of times a second); the time is scaled up by its inverse."),
    Spec("off_cpu_cap", "--off-cpu-cap", ("DD_HOST_PROFILING_OFF_CPU_CAP",), _positive_int(1, 1_000_000),
         "With --off-cpu: at most this many stacks a second on each CPU (a context-switch "
         "storm costs no more; what it drops is counted in offcpu_capped)."),
    Spec("upload_symbols", "--upload-symbols/--no-upload-symbols",
         ("DD_HOST_PROFILING_UPLOAD_SYMBOLS", "DD_HOST_PROFILING_EXPERIMENTAL_UPLOAD_SYMBOLS"), _bool,
         "Upload the symbols of the binaries seen in profiles where ours beat Datadog's "
         "(needs DD_API_KEY)."),
    Spec("app_key", "--app-key", ("DD_HOST_PROFILING_APP_KEY", "DD_APP_KEY"), _text,
         "Datadog application key, for the symbol query.", secret=True),
    Spec("symbols_dry_run", "--symbols-dry-run/--no-symbols-dry-run", ("DD_HOST_PROFILING_SYMBOLS_DRY_RUN",),
         _bool, "With --upload-symbols: query and log what would be uploaded, upload nothing."),
    Spec("symbols_api_url", "--symbols-api-url", ("DD_HOST_PROFILING_SYMBOLS_API_URL",), _http_url,
         "Base URL of the symbol query API (a proxy). Default: https://api.<site>."),
    Spec("symbols_intake_url", "--symbols-intake-url",
         ("DD_HOST_PROFILING_SYMBOLS_INTAKE_URL", "DATADOG_SOURCEMAP_INTAKE_URL"), _http_url,
         "Base URL of the symbol intake (a proxy). Default: https://sourcemap-intake.<site>."),
    Spec("status_file", "--status-file", ("DD_HOST_PROFILING_STATUS_FILE",), _status_file,
         "Where the health figures are written every period, for `ddprofiler status` ('off': nowhere)."),
    Spec("output_max_files", "--output-max-files", ("DD_HOST_PROFILING_OUTPUT_MAX_FILES",),
         _positive_int(1, 10_000_000), "With --output-dir: profiles kept; the oldest are removed."),
    Spec("output_max_bytes", "--output-max-bytes", ("DD_HOST_PROFILING_OUTPUT_MAX_BYTES",),
         _size(1 << 20, 1 << 50, 0), "With --output-dir: bytes kept (bytes, or 512MiB, 2GiB); the oldest "
         "profiles are removed."),
    Spec("log_level", "--log-level", ("DD_HOST_PROFILING_LOG_LEVEL", "DD_LOG_LEVEL"), _log_level,
         "trace, debug, info, warn, error, critical or off (-v is debug)."),
    Spec("dogstatsd_url", "--dogstatsd-url", ("DD_HOST_PROFILING_DOGSTATSD_URL", "DD_DOGSTATSD_URL"),
         _dogstatsd_url, "Send the period's figures as metrics to DogStatsD: udp://host:8125 or "
         "unix:///path/dsd.socket. Default: off."),
    Spec("exporter", "--exporter", ("DD_HOST_PROFILING_EXPORTER",), _exporter,
         "Where profiles go: datadog (the Agent, or the intake with --agentless) or otlp (OTLP/HTTP "
         "profiles, to --otlp-endpoint). --output-dir writes files instead of either."),
    Spec("otlp_endpoint", "--otlp-endpoint",
         ("DD_HOST_PROFILING_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
         _http_url, "With --exporter otlp: the collector's OTLP/HTTP base URL (/v1development/profiles "
         "is added; OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT is used as it is)."),
    Spec("otlp_headers", "--otlp-headers",
         ("DD_HOST_PROFILING_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_PROFILES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"),
         _otlp_headers, "With --exporter otlp: extra headers, key=value,key2=value2 (never logged).",
         secret=True),
)
SPEC_BY_NAME: Dict[str, Spec] = {s.name: s for s in SPECS}


def resolve(flags: Mapping[str, Any], environ: Mapping[str, str]) -> Tuple[Settings, Dict[str, str]]:
    """Settings from `flags` (already typed by click, None when absent) and `environ`.

    Returns the settings and, per setting, where its value came from."""
    values: Dict[str, Any] = {}
    sources: Dict[str, str] = {}
    for spec in SPECS:
        flag_value = flags.get(spec.name)
        if flag_value is not None and flag_value != ():
            try:
                if isinstance(flag_value, str):
                    values[spec.name] = spec.parse(flag_value)
                elif spec.name == "tags":  # a repeated --tags adds
                    values[spec.name] = tuple(t for text in flag_value for t in spec.parse(text))
                else:
                    values[spec.name] = flag_value
            except ValueError as e:
                raise ConfigError(f"{spec.flag.split('/')[0]}: {e}") from None
            sources[spec.name] = f"flag {spec.flag.split('/')[0]}"
            continue
        for env in spec.envs:
            raw = environ.get(env)
            if raw is None or raw.strip() == "":
                continue
            try:
                values[spec.name] = spec.parse(raw)
            except ValueError as e:
                raise ConfigError(f"{env}: {e}") from None
            sources[spec.name] = f"env {env}"
            break
        else:
            sources[spec.name] = "default"

    host_env = (environ.get("DD_AGENT_HOST") or "").strip()
    port_env = (environ.get("DD_TRACE_AGENT_PORT") or "").strip()
    if "agent_url" not in values and (host_env or port_env):
        # As the tracers: either alone stands for its half, the other is the default.
        try:
            port = _port(port_env) if port_env else 8126
        except ValueError as e:
            raise ConfigError(f"DD_TRACE_AGENT_PORT: {e}") from None
        host = host_env or "localhost"
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        try:
            values["agent_url"] = _agent_url(f"http://{host}:{port}")
        except ValueError as e:
            raise ConfigError(f"DD_AGENT_HOST: {e}") from None
        sources["agent_url"] = "env " + " + ".join(
            name for name, v in (("DD_AGENT_HOST", host_env), ("DD_TRACE_AGENT_PORT", port_env)) if v)
    _reserved_tags(values, sources)
    _otlp_url(values, sources)
    if "node" not in values:
        values["node"] = socket.gethostname()
        sources["node"] = "default (hostname)"

    budget = values.get("memory_budget", DEFAULT_MEMORY_BUDGET)
    if "max_queue_bytes" not in values:
        values["max_queue_bytes"] = budget // 4
        sources["max_queue_bytes"] = "default (a quarter of memory_budget)"
    elif values["max_queue_bytes"] > budget // 2:
        raise ConfigError(f"{_origin('max_queue_bytes', sources)}: {format_bytes(values['max_queue_bytes'])} is "
                          f"over half of the memory budget ({format_bytes(budget)}): raise --memory-budget too")
    settings = Settings(**values)
    if settings.stack_bytes % 8:
        raise ConfigError(f"{_origin('stack_bytes', sources)}: {settings.stack_bytes} is not a multiple of 8")
    if not settings.split_by_service and not settings.host_service:
        raise ConfigError("--host-service (DD_HOST_PROFILING_SERVICE) is required with --no-split-by-service")
    if settings.upload_symbols and not settings.api_key:
        raise ConfigError("--upload-symbols needs an API key: set DD_API_KEY (or DD_HOST_PROFILING_API_KEY)")
    key_used = settings.upload_symbols or (settings.agentless and not settings.output_dir)
    if settings.agentless and not settings.output_dir and not settings.api_key:
        raise ConfigError("--agentless needs an API key: set DD_API_KEY (or DD_HOST_PROFILING_API_KEY)")
    if key_used and settings.api_key:
        # Checked only here: a DD_API_KEY meant for another component must not stop a
        # profiler that sends through the Agent and never reads it.
        try:
            check_api_key(settings.api_key)
        except ValueError as e:
            raise ConfigError(f"{_origin('api_key', sources)}: {e}") from None
    return settings, sources


def _otlp_url(values: Dict[str, Any], sources: Dict[str, str]) -> None:
    """The URL requests go to: a signal-specific variable's as it is (OpenTelemetry's rule),
    else the base URL (flag, DD_HOST_PROFILING_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT,
    the default) + /v1development/profiles."""
    from ddprofiler.exporters.otlp import profiles_url

    base = values.get("otlp_endpoint", Settings.otlp_endpoint)
    if sources.get("otlp_endpoint") != "env OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT":
        values["otlp_endpoint"] = profiles_url(base)


def _reserved_tags(values: Dict[str, Any], sources: Dict[str, str]) -> None:
    """Moves env/service/version/host out of the tags into their settings, where those
    are unset (the precedence of the module docstring)."""
    tags = values.get("tags", ())
    kept, reserved = [], {}
    for tag in tags:
        key, sep, value = tag.partition(":")
        if sep and key.strip().lower() in RESERVED_TAGS:
            reserved[key.strip().lower()] = value.strip()  # the last one wins, as in a dict
        else:
            kept.append(tag)
    if not reserved:
        return
    origin = sources.get("tags", "tags")
    unused = []
    for key, value in reserved.items():
        name = {"env": "environment", "host": "node", "service": "host_service", "version": "version"}[key]
        if not value or name in values:
            unused.append(f"{key}:{value}")
            continue
        if key == "service" and values.get("split_by_service", True):
            unused.append(f"{key}:{value}")  # each process's service wins
            continue
        values[name] = value
        sources[name] = f"{origin} ({key}:)"
    values["tags"] = tuple(kept)
    values["unused_tags"] = tuple(unused)


def _origin(name: str, sources: Mapping[str, str]) -> str:
    src = sources.get(name, "")
    return src.split(" ", 1)[1] if " " in src else SPEC_BY_NAME[name].flag


def describe(settings: Settings, sources: Mapping[str, str]) -> Sequence[Tuple[str, str, str]]:
    """(name, shown value, source) per setting, secrets masked: what `config` prints."""
    rows = []
    for spec in SPECS:
        value = getattr(settings, spec.name)
        if spec.secret:
            shown = mask(value)
        elif isinstance(value, tuple):
            shown = ",".join(value) or "(none)"
        elif value is None:
            shown = "(unset)"
        elif isinstance(value, bool):
            shown = "true" if value else "false"
        else:
            shown = str(value)
        rows.append((spec.name, shown, sources.get(spec.name, "default")))
    if settings.version:
        rows.append(("version", settings.version, sources.get("version", "tags")))
    if settings.unused_tags:
        rows.append(("unused_tags", ",".join(settings.unused_tags), "tags (a dedicated setting wins)"))
    return rows
