"""The FlowLayer config schema: validate every key of a parsed JSONC file strictly and
return frozen dataclasses (SPEC 2). Reading and parsing the file, and pointing at a key
path in it, is `jsonc`'s; every mistake here is a `ConfigError` whose text reads
`<file>:<line>:<col>: <key path>: <what is wrong>`.
"""
import difflib
import json
import os
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import urlsplit

from . import dotenv, jsonc
from .entry import SERVER
from .plan import find_cycle, plan_waves
from .readiness import EXEC_INTERVAL, compile_pattern
from .shell_syntax import shell_warning

DEFAULT_BUFFER_SIZE = 5000
DISCOVERY = ("flowlayer.jsonc", "flowlayer.json", "flowlayer.config.jsonc", "flowlayer.config.json")
DEFAULT_STOP_TIMEOUT = 5.0
MAX_SECONDS = 1e6  # about 11 days: longer waits overflow the platform's timers

_TOP_KEYS = ("session", "logs", "logView", "services", "$schema")
_SESSION_KEYS = ("bind", "token", "addr")
_LOGS_KEYS = ("dir", "bufferSize")
_LOG_VIEW_KEYS = ("maxEntries", "all")
_MAX_ENTRIES_KEYS = ("maxEntries",)
_SERVICE_KEYS = ("cmd", "stopCmd", "kind", "port", "ready", "dependsOn", "env", "envFile", "logView", "cwd",
                 "stopSignal", "stopTimeout")
_READY_KEYS = {"http": ("type", "url", "timeout"), "tcp": ("type", "port", "timeout"),
               "exec": ("type", "cmd", "interval", "timeout"), "log": ("type", "pattern", "stream", "timeout"),
               "none": ("type",)}
_ALL_READY_KEYS = ("type", "url", "port", "cmd", "interval", "pattern", "stream", "timeout")
_STREAMS = ("stdout", "stderr", "any")
STOP_SIGNALS = ("TERM", "INT", "QUIT", "HUP", "USR1", "USR2", "KILL")
_KINDS = ("daemon", "oneshot")
_SERVICE_NAME = re.compile(r"[A-Za-z0-9._-]+")
MAX_SERVICE_NAME = 200  # characters (ASCII only): <name>.jsonl must fit a 255-byte file name
_UNSAFE = re.compile("[\0\ud800-\udfff]")  # characters no OS string (argv, env, path) can hold


class ConfigError(ValueError):
    """A mistake in a config file; str() is the whole message, without an `Error: ` prefix."""


@dataclass(frozen=True)
class ReadySpec:
    type: str  # "http", "tcp", "exec" or "log"
    url: str | None  # http only
    port: int  # tcp only: the ready port, or else the service port
    timeout: float | None = None  # seconds; None: wait for as long as it takes
    cmd: tuple | None = None  # exec only: argv
    interval: float = EXEC_INTERVAL  # exec only: seconds between attempts
    pattern: str | None = None  # log only: a Python regex, checked at load
    stream: str = "any"  # log only: "stdout", "stderr" or "any"


@dataclass(frozen=True)
class ServiceConfig:
    name: str
    cmd: tuple
    stop_cmd: tuple | None
    kind: str
    port: int
    ready: ReadySpec | None
    depends_on: tuple  # sorted, unique
    env: MappingProxyType  # the config's own variables only
    cwd: str | None  # absolute
    log_view_max: int | None
    env_files: tuple = ()  # absolute paths, in order
    file_env: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))  # their variables, read at load, later files win
    stop_signal: str = "TERM"  # a name of STOP_SIGNALS, without the SIG prefix
    stop_timeout: float = DEFAULT_STOP_TIMEOUT  # seconds from the stop signal to SIGKILL
    warnings: tuple = ()  # the shell-syntax warnings of cmd/stopCmd (SPEC 6.1), boot lines


@dataclass(frozen=True)
class Config:
    path: str  # absolute
    bind: tuple | None  # (host, port), as parse_bind gives it
    token: str | None
    logs_dir: str | None  # absolute
    buffer_size: int
    log_view_max: int | None
    log_view_all_max: int | None
    services: MappingProxyType  # name -> ServiceConfig, sorted by name
    waves: tuple
    addr: str | None = None  # the client's field: the server only mentions it at boot

    def log_limit(self, service=None):
        """The `get_logs` limit when the request gives none (SPEC 4.3)."""
        if service is None:
            chain = (self.log_view_all_max, self.log_view_max)
        else:
            own = self.services.get(service)
            chain = (own.log_view_max if own else None, self.log_view_max)
        return next((limit for limit in chain if limit is not None), self.buffer_size)


def load(path):
    """Read, parse and validate the config at `path`; raise ConfigError on any mistake."""
    document = _read_object(path)
    try:
        return _build(document.file, document.value)
    except _Invalid as invalid:
        raise ConfigError(document.error(invalid.path, invalid.message, invalid.at)) from None
    except _EnvFileError as error:
        raise ConfigError(str(error)) from None


def discover(directory=""):
    """The config file found in `directory` as the server looks for one (SPEC 1.1): the
    first of DISCOVERY that is a file, or None; "" is the current directory (the name is
    returned as is, as the server always did). The client looks the same way."""
    found = (os.path.join(directory, name) for name in DISCOVERY)
    return next((path for path in found if os.path.isfile(path)), None)


def read_jsonc(path):
    """Parse a JSONC file whose top level is an object, without validating its keys."""
    return _read_object(path).value


def _read_object(path):
    try:
        document = jsonc.read(path)
    except jsonc.JsoncError as error:
        raise ConfigError(str(error)) from None
    if not isinstance(document.value, dict):
        raise ConfigError(document.error((), f"must be an object, got {_show(document.value)}"))
    return document


def parse_bind(value):
    """Split a bind address into (host, port); raise ValueError when it is not valid.

    `6999` or "6999" -> 127.0.0.1, ":6999" -> 0.0.0.0, "[::1]:6999" -> ::1, "h:6999" -> h.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return "127.0.0.1", _bind_port(value)
    if not isinstance(value, str):
        raise ValueError(f"invalid address {_show(value)}: expected host:port or a port")
    if value.isascii() and value.isdigit():
        return "127.0.0.1", _bind_port(int(value))
    if value.startswith("["):
        host, separator, port = value[1:].partition("]:")
    else:
        host, separator, port = value.rpartition(":")
        if ":" in host:
            raise ValueError(f"invalid address {_show(value)}: put an IPv6 host in brackets, as in [::1]:6999")
        host = host or "0.0.0.0"
    if not separator or not host:
        raise ValueError(f"invalid address {_show(value)}: expected host:port, :port or a port")
    if not (port.isascii() and port.isdigit()):
        raise ValueError(f"invalid address {_show(value)}: the port must be a number")
    return host, _bind_port(int(port))


def _bind_port(port):
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be between 1 and 65535, got {port}")
    return port


# Validation --------------------------------------------------------------------------------


class _Invalid(Exception):
    """A validation failure at a key path; `at` says whether to point at the key or value."""

    def __init__(self, path, message, at="value"):
        super().__init__(message)
        self.path = path
        self.message = message
        self.at = at


class _EnvFileError(Exception):
    """A bad line in an envFile: the message names that file's line, not the config's."""


def _show(value):
    """A short rendering of a value for error messages."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def _alternatives(choices):
    """`"a", "b" or "c"` (at least two choices)."""
    quoted = [f'"{choice}"' for choice in choices]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _suggest(word, choices):
    by_lower = {choice.lower(): choice for choice in choices}
    match = difflib.get_close_matches(word.lower(), by_lower, n=1, cutoff=0.6)
    return by_lower[match[0]] if match else None


def _get(obj, key, path, check, default=None):
    """`check(obj[key], key path)` when the key is present, else `default`."""
    return check(obj[key], path + (key,)) if key in obj else default


def _object(value, path, allowed=None):
    """An object whose keys are all in `allowed` (any keys when None)."""
    if not isinstance(value, dict):
        raise _Invalid(path, f"must be an object, got {_show(value)}")
    for key in value:
        if allowed is not None and key not in allowed:
            hint = _suggest(key, allowed)
            hint = f"did you mean {_show(hint)}?" if hint else f"valid keys: {', '.join(allowed)}"
            raise _Invalid(path + (key,), f"unknown key {_show(key)} ({hint})", at="key")
    return value


def _string(value, path, empty_ok=False):
    if not isinstance(value, str):
        raise _Invalid(path, f"must be a string, got {_show(value)}")
    if not value and not empty_ok:
        raise _Invalid(path, "must not be empty")
    if _UNSAFE.search(value):
        raise _Invalid(path, "must not contain NUL or unpaired surrogate characters")
    return value


def _integer(value, path, low, high=None):
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(path, f"must be an integer, got {_show(value)}")
    if value < low or (high is not None and value > high):
        expected = f"> {low - 1}" if high is None else f"between {low} and {high}"
        raise _Invalid(path, f"must be {expected}, got {value}")
    return value


def _positive(value, path):
    return _integer(value, path, 1)


def _port(value, path):
    return _integer(value, path, 0, 65535)


def _choice(value, path, choices):
    if not isinstance(value, str) or value not in choices:
        raise _Invalid(path, f"must be {_alternatives(choices)}, got {_show(value)}")
    return value


def _seconds(value, path):
    """A duration: a number > 0 (integer or not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(path, f"must be a number of seconds, got {_show(value)}")
    if not 0 < value <= MAX_SECONDS:
        raise _Invalid(path, f"must be > 0 and at most {MAX_SECONDS:g} seconds, got {_show(value)}")
    return float(value)


def _stop_signal(value, path):
    """`TERM` for "TERM" or "SIGTERM"."""
    name = value[3:] if isinstance(value, str) and value.startswith("SIG") else value
    if name not in STOP_SIGNALS:
        hint = _suggest(name, STOP_SIGNALS) if isinstance(name, str) else None
        hint = f" (did you mean {_show(hint)}?)" if hint else ""
        raise _Invalid(path, f"must be {_alternatives(STOP_SIGNALS)} (a SIG prefix is accepted), "
                             f"got {_show(value)}{hint}")
    return name


def _pattern(value, path):
    text = _string(value, path, empty_ok=True)
    try:
        compile_pattern(text)
    except ValueError as error:
        raise _Invalid(path, str(error)) from None
    return text


def _path(value, path, base):
    return os.path.abspath(os.path.join(base, _string(value, path)))


def _argv(value, path):
    """`cmd`/`stopCmd`: a string split on whitespace, or a non-empty array of strings."""
    if isinstance(value, str):
        argv = _string(value, path).split()
        if not argv:
            raise _Invalid(path, "must name a program, got a blank string")
        return tuple(argv)
    if not isinstance(value, list):
        raise _Invalid(path, f"must be a string or an array of strings, got {_show(value)}")
    if not value:
        raise _Invalid(path, "must not be an empty array")
    return tuple(_string(arg, path + (index,), empty_ok=index > 0) for index, arg in enumerate(value))


def _bind(value, path):
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _Invalid(path, f"must be a string or an integer port, got {_show(value)}")
    try:
        return parse_bind(value)
    except ValueError as error:
        raise _Invalid(path, str(error)) from None


def _url(value, path):
    url = _string(value, path)
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a bad port or IPv6 host
        valid = False
    if not valid:
        raise _Invalid(path, f"must be an http:// or https:// URL with a host, got {_show(url)}")
    return url


def _ready(value, path, service_port):
    """ReadySpec, or None for type "none"; a tcp port absent or 0 means the service port."""
    ready = _object(value, path, _ALL_READY_KEYS)
    if "type" not in ready:
        raise _Invalid(path + ("type",), f"required ({_alternatives(_READY_KEYS)})")
    kind = _choice(ready["type"], path + ("type",), tuple(_READY_KEYS))
    for key in ready:
        if key not in _READY_KEYS[kind]:
            raise _Invalid(path + (key,), f'not allowed when type is "{kind}"', at="key")
    if kind == "none":
        return None
    timeout = _get(ready, "timeout", path, _seconds)
    required = {"http": "url", "exec": "cmd", "log": "pattern"}.get(kind)
    if required and required not in ready:
        raise _Invalid(path + (required,), f'required when type is "{kind}"')
    if kind == "http":
        return ReadySpec("http", _url(ready["url"], path + ("url",)), 0, timeout)
    if kind == "exec":
        return ReadySpec("exec", None, 0, timeout, cmd=_argv(ready["cmd"], path + ("cmd",)),
                         interval=_get(ready, "interval", path, _seconds, EXEC_INTERVAL))
    if kind == "log":
        return ReadySpec("log", None, 0, timeout, pattern=_pattern(ready["pattern"], path + ("pattern",)),
                         stream=_get(ready, "stream", path, lambda v, p: _choice(v, p, _STREAMS), "any"))
    port = _get(ready, "port", path, _port, 0) or service_port
    if not port:
        raise _Invalid(path + ("port",), 'required when type is "tcp" and the service has no port')
    return ReadySpec("tcp", None, port, timeout)


def _depends_on(value, path, name, names):
    """Names of other defined services, duplicates dropped, sorted."""
    if not isinstance(value, list):
        raise _Invalid(path, f"must be an array of service names, got {_show(value)}")
    for index, dependency in enumerate(value):
        item = path + (index,)
        _string(dependency, item)
        if dependency == name:
            raise _Invalid(item, "a service cannot depend on itself")
        if dependency not in names:
            hint = _suggest(dependency, names)
            hint = f" (did you mean {_show(hint)}?)" if hint else ""
            raise _Invalid(item, f"unknown service {_show(dependency)}{hint}")
    return tuple(sorted(set(value)))


def _env(value, path):
    env = _object(value, path)
    for key, text in env.items():
        if not key or "=" in key or _UNSAFE.search(key):
            raise _Invalid(path + (key,), 'invalid variable name (empty, or has "=" or NUL)', at="key")
        _string(text, path + (key,), empty_ok=True)
    return MappingProxyType(dict(env))


def _env_files(value, path, base):
    """The envFile paths (absolute) and their variables, read now (SPEC 6.1): a missing
    file or a bad line is a config error, naming the dotenv file's line where it has one."""
    if isinstance(value, list):
        items = [(item, path + (index,)) for index, item in enumerate(value)]
    elif isinstance(value, str):
        items = [(value, path)]
    else:
        raise _Invalid(path, f"must be a path or an array of paths, got {_show(value)}")
    files, variables = [], {}
    for item, item_path in items:
        file = _path(item, item_path, base)
        try:
            variables.update(dotenv.load(file))
        except dotenv.DotenvError as error:
            if error.line is None:
                raise _Invalid(item_path, f"cannot read {file}: {error.reason}") from None
            raise _EnvFileError(f"{file}:{error.line}: {jsonc.render_path(item_path)}: {error.reason}") from None
        files.append(file)
    return tuple(files), MappingProxyType(variables)


def _cwd(value, path, base):
    """Checked at load time, so a typo is a config error rather than a failed start."""
    directory = _path(value, path, base)
    if not os.path.isdir(directory):
        raise _Invalid(path, f"not a directory: {directory}")
    return directory


def _service(name, value, names, base):
    path = ("services", name)
    if not name:
        raise _Invalid(path, "service name must not be empty", at="key")
    if not _SERVICE_NAME.fullmatch(name):
        raise _Invalid(path, 'invalid service name: use letters, digits, ".", "_" and "-"', at="key")
    if len(name) > MAX_SERVICE_NAME:
        raise _Invalid(path, f"service name is {len(name)} characters long; the limit is {MAX_SERVICE_NAME}", at="key")
    if name == SERVER:
        raise _Invalid(path, f'"{SERVER}" is reserved for the server\'s own log lines', at="key")
    body = _object(value, path, _SERVICE_KEYS)
    if "cmd" not in body:
        raise _Invalid(path + ("cmd",), "required")
    port = _get(body, "port", path, _port, 0)
    log_view = _get(body, "logView", path, lambda v, p: _object(v, p, _MAX_ENTRIES_KEYS), {})
    cmd = _argv(body["cmd"], path + ("cmd",))
    stop_cmd = _get(body, "stopCmd", path, _argv)
    env_files, file_env = _get(body, "envFile", path, lambda v, p: _env_files(v, p, base),
                               ((), MappingProxyType({})))
    warnings = (shell_warning(name, key, body.get(key)) for key in ("cmd", "stopCmd"))
    return ServiceConfig(
        name=name,
        cmd=cmd,
        stop_cmd=stop_cmd,
        kind=_get(body, "kind", path, lambda v, p: _choice(v, p, _KINDS), "daemon"),
        port=port,
        ready=_get(body, "ready", path, lambda v, p: _ready(v, p, port)),
        depends_on=_get(body, "dependsOn", path, lambda v, p: _depends_on(v, p, name, names), ()),
        env=_get(body, "env", path, _env, MappingProxyType({})),
        cwd=_get(body, "cwd", path, lambda v, p: _cwd(v, p, base)),
        log_view_max=_get(log_view, "maxEntries", path + ("logView",), _positive),
        env_files=env_files,
        file_env=file_env,
        stop_signal=_get(body, "stopSignal", path, _stop_signal, "TERM"),
        stop_timeout=_get(body, "stopTimeout", path, _seconds, DEFAULT_STOP_TIMEOUT),
        warnings=tuple(warning for warning in warnings if warning),
    )


def _build(file, data):
    base = os.path.dirname(os.path.abspath(file))
    top = _object(data, (), _TOP_KEYS)
    _get(top, "$schema", (), lambda v, p: _string(v, p, empty_ok=True))  # for editors; ignored
    session = _get(top, "session", (), lambda v, p: _object(v, p, _SESSION_KEYS), {})
    bind = _get(session, "bind", ("session",), _bind)
    token = _get(session, "token", ("session",), _string)
    addr = _get(session, "addr", ("session",), lambda v, p: _string(v, p, empty_ok=True))
    logs = _get(top, "logs", (), lambda v, p: _object(v, p, _LOGS_KEYS), {})
    logs_dir = _get(logs, "dir", ("logs",), lambda v, p: _path(v, p, base))
    buffer_size = _get(logs, "bufferSize", ("logs",), _positive, DEFAULT_BUFFER_SIZE)
    log_view = _get(top, "logView", (), lambda v, p: _object(v, p, _LOG_VIEW_KEYS), {})
    log_view_max = _get(log_view, "maxEntries", ("logView",), _positive)
    log_view_all = _get(log_view, "all", ("logView",), lambda v, p: _object(v, p, _MAX_ENTRIES_KEYS), {})
    log_view_all_max = _get(log_view_all, "maxEntries", ("logView", "all"), _positive)
    if "services" not in top:
        raise _Invalid(("services",), "required")
    names = _object(top["services"], ("services",))
    if not names:
        raise _Invalid(("services",), "must define at least one service")
    services = {name: _service(name, value, names, base) for name, value in names.items()}
    dependencies = {name: service.depends_on for name, service in services.items()}
    cycle = find_cycle(dependencies)
    if cycle:
        raise _Invalid(("services", cycle[0], "dependsOn"), f"dependency cycle: {' -> '.join(cycle)}")
    return Config(
        path=os.path.abspath(file),
        bind=bind,
        token=token,
        logs_dir=logs_dir,
        buffer_size=buffer_size,
        log_view_max=log_view_max,
        log_view_all_max=log_view_all_max,
        services=MappingProxyType({name: services[name] for name in sorted(services)}),
        waves=tuple(tuple(wave) for wave in plan_waves(dependencies)),
        addr=addr,
    )
