"""Read a FlowLayer config file (JSONC), validate it strictly, return frozen dataclasses.

Parsing takes a fast path: comments and trailing commas are blanked out with spaces (so
offsets, lines and columns still point into the original file) and the rest goes to
`json.loads`. Only when that fails does the slow `json5` parser run, for JSON5-only syntax
or for its error message. Every mistake is a `ConfigError` whose text reads
`<file>:<line>:<col>: <key path>: <what is wrong>`; positions are computed by a small scan
of the text that runs only when there is an error to report.
"""
import difflib
import json
import math
import os
import re
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import urlsplit

import json5

from .plan import find_cycle, plan_waves

DEFAULT_BUFFER_SIZE = 5000
RESERVED_SERVICE = "flowlayer"  # the service name of the server's own log lines

_TOP_KEYS = ("session", "logs", "logView", "services")
_SESSION_KEYS = ("bind", "token", "addr")
_LOGS_KEYS = ("dir", "bufferSize")
_LOG_VIEW_KEYS = ("maxEntries", "all")
_MAX_ENTRIES_KEYS = ("maxEntries",)
_SERVICE_KEYS = ("cmd", "stopCmd", "kind", "port", "ready", "dependsOn", "env", "logView", "cwd")
_READY_KEYS = {"http": ("type", "url"), "tcp": ("type", "port"), "none": ("type",)}
_KINDS = ("daemon", "oneshot")
_SERVICE_NAME = re.compile(r"[A-Za-z0-9._-]+")


class ConfigError(ValueError):
    """A mistake in a config file; str() is the whole message, without an `Error: ` prefix."""


@dataclass(frozen=True)
class ReadySpec:
    type: str  # "http" or "tcp"
    url: str | None  # http only
    port: int  # tcp only: the ready port, or else the service port


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


@dataclass(frozen=True)
class Config:
    path: str  # absolute
    bind: str | int | None
    token: str | None
    logs_dir: str | None  # absolute
    buffer_size: int
    log_view_max: int | None
    log_view_all_max: int | None
    services: MappingProxyType  # name -> ServiceConfig, sorted by name
    waves: tuple

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
    file = os.fspath(path)
    data, blanked = _read_object(file)
    try:
        return _build(file, data)
    except _Invalid as invalid:
        raise ConfigError(_located(file, blanked, invalid)) from None


def read_jsonc(path):
    """Parse a JSONC file whose top level is an object, without validating its keys."""
    return _read_object(os.fspath(path))[0]


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


# Reading and parsing ----------------------------------------------------------------------

# Whitespace and comments. Possessive quantifiers: backtracking into a comment made the
# trailing-comma lookahead 200 times slower on a large file.
_SKIP = r"\s*+(?:(?://[^\n\r\u2028\u2029]*+|/\*.*?\*/)\s*+)*+"
_JSONC = re.compile(
    r"""(?P<keep>"[^"\\\n]*+(?:\\.[^"\\\n]*+)*+"|'[^'\\\n]*+(?:\\.[^'\\\n]*+)*+'"""  # strings
    rf"|[\[{{,]{_SKIP},{_SKIP}[\]}}])"  # a comma after nothing, as in {,}: invalid, kept
    r"|(?P<drop>//[^\n\r\u2028\u2029]*|/\*.*?\*/"  # comments
    rf"|,(?={_SKIP}[\]}}]))",  # trailing commas
    re.S,
)
_NOT_NEWLINE = re.compile(r"[^\n]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_UNSAFE = re.compile("[\0\ud800-\udfff]")  # characters no OS string (argv, env, path) can hold


def _blank_match(match):
    if match.lastgroup == "keep":
        return match.group()
    text = match.group()
    return _NOT_NEWLINE.sub(" ", text) if "\n" in text else " " * len(text)


def _blank(text):
    """`text` with comments and trailing commas replaced by spaces, newlines kept."""
    return _JSONC.sub(_blank_match, text)


class _DuplicateKey(Exception):
    """Raised by the object hook; not a ValueError, so both parsers let it through."""


class _NotFinite(Exception):
    """Raised for 1e999, Infinity and NaN, which would otherwise become floats."""


def _unique_object(pairs):
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _DuplicateKey
    return obj


def _finite_float(text):
    number = float(text)
    if not math.isfinite(number):
        raise _NotFinite
    return number


def _no_constant(text):
    raise _NotFinite


_HOOKS = {"object_pairs_hook": _unique_object, "parse_float": _finite_float, "parse_constant": _no_constant}
_JSON5_ERROR = re.compile(r"<string>:(\d+) Unexpected (.*) at column (\d+)", re.S)


def _read_text(file):
    try:
        with open(file, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{file}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{file}: is a directory, not a config file") from None
    except OSError as error:
        raise ConfigError(f"{file}: cannot read: {error.strerror or error}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        line_start = data.rfind(b"\n", 0, error.start) + 1
        column = len(data[line_start:error.start].decode("utf-8")) + 1
        raise ConfigError(f"{file}:{line}:{column}: not valid UTF-8 (byte 0x{data[error.start]:02x})") from None
    return text.removeprefix("\ufeff")


def _parse(text, file):
    """Parse JSONC `text`; return (value, blanked text for locating errors)."""
    blanked = _blank(text)
    if not blanked.strip():
        raise ConfigError(f"{file}: empty config: expected a JSON object")
    try:
        try:
            return json.loads(blanked, **_HOOKS), blanked
        except (ValueError, RecursionError):
            pass
        try:
            return _json5_loads(text), blanked
        except ValueError as error:
            raise ConfigError(_syntax_message(file, str(error))) from None
        except RecursionError:
            raise ConfigError(f"{file}: nested too deeply") from None
    except _DuplicateKey:
        layout = _Layout(blanked)
        if not layout.duplicates:
            raise ConfigError(f"{file}: duplicate key") from None
        path, offset = layout.duplicates[0]
        message = "duplicate key (first defined at line {}, column {})".format(*_line_col(blanked, layout.keys[path]))
        raise ConfigError(_located(file, blanked, _Invalid(path, message), offset)) from None
    except _NotFinite:
        layout = _Layout(blanked)
        if not layout.non_finite:
            raise ConfigError(f"{file}: numbers must be finite") from None
        path, offset, token = layout.non_finite[0]
        invalid = _Invalid(path, f"must be a finite number, got {token}")
        raise ConfigError(_located(file, blanked, invalid, offset)) from None


def _json5_loads(text):
    """The slow path: json5 with the same hooks, surrogate pairs joined as json.loads does."""
    return _join_surrogates(json5.loads(text, **_HOOKS))


def _join_surrogates(value):
    """json5 keeps an escaped pair such as "\\ud83d\\ude00" as two characters: join them."""
    if isinstance(value, str):
        if not _SURROGATE.search(value):
            return value
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    if isinstance(value, list):
        return [_join_surrogates(item) for item in value]
    if isinstance(value, dict):
        joined = {_join_surrogates(key): _join_surrogates(item) for key, item in value.items()}
        if len(joined) != len(value):
            raise _DuplicateKey
        return joined
    return value


def _syntax_message(file, error):
    """json5's `<string>:L Unexpected X at column C` reshaped as `file:L:C: ...`."""
    match = _JSON5_ERROR.fullmatch(error)
    if not match:
        return f"{file}: {error}"
    line, thing, column = match.groups()
    if thing.startswith('"'):
        thing = json.dumps(thing[1:-1], ensure_ascii=False)
    return f"{file}:{line}:{column}: syntax error: unexpected {thing}"


def _read_object(file):
    text = _read_text(file)
    data, blanked = _parse(text, file)
    if not isinstance(data, dict):
        raise ConfigError(_located(file, blanked, _Invalid((), f"must be an object, got {_show(data)}")))
    return data, blanked


# Validation --------------------------------------------------------------------------------


class _Invalid(Exception):
    """A validation failure at a key path; `at` says whether to point at the key or value."""

    def __init__(self, path, message, at="value"):
        super().__init__(message)
        self.path = path
        self.message = message
        self.at = at


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
        parse_bind(value)
    except ValueError as error:
        raise _Invalid(path, str(error)) from None
    return value


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
    ready = _object(value, path, ("type", "url", "port"))
    if "type" not in ready:
        raise _Invalid(path + ("type",), f"required ({_alternatives(_READY_KEYS)})")
    kind = _choice(ready["type"], path + ("type",), tuple(_READY_KEYS))
    for key in ready:
        if key not in _READY_KEYS[kind]:
            raise _Invalid(path + (key,), f'not allowed when type is "{kind}"', at="key")
    if kind == "none":
        return None
    if kind == "http":
        if "url" not in ready:
            raise _Invalid(path + ("url",), 'required when type is "http"')
        return ReadySpec("http", _url(ready["url"], path + ("url",)), 0)
    port = _get(ready, "port", path, _port, 0) or service_port
    if not port:
        raise _Invalid(path + ("port",), 'required when type is "tcp" and the service has no port')
    return ReadySpec("tcp", None, port)


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
    if name == RESERVED_SERVICE:
        raise _Invalid(path, f'"{RESERVED_SERVICE}" is reserved for the server\'s own log lines', at="key")
    body = _object(value, path, _SERVICE_KEYS)
    if "cmd" not in body:
        raise _Invalid(path + ("cmd",), "required")
    port = _get(body, "port", path, _port, 0)
    log_view = _get(body, "logView", path, lambda v, p: _object(v, p, _MAX_ENTRIES_KEYS), {})
    return ServiceConfig(
        name=name,
        cmd=_argv(body["cmd"], path + ("cmd",)),
        stop_cmd=_get(body, "stopCmd", path, _argv),
        kind=_get(body, "kind", path, lambda v, p: _choice(v, p, _KINDS), "daemon"),
        port=port,
        ready=_get(body, "ready", path, lambda v, p: _ready(v, p, port)),
        depends_on=_get(body, "dependsOn", path, lambda v, p: _depends_on(v, p, name, names), ()),
        env=_get(body, "env", path, _env, MappingProxyType({})),
        cwd=_get(body, "cwd", path, lambda v, p: _cwd(v, p, base)),
        log_view_max=_get(log_view, "maxEntries", path + ("logView",), _positive),
    )


def _build(file, data):
    base = os.path.dirname(os.path.abspath(file))
    top = _object(data, (), _TOP_KEYS)
    session = _get(top, "session", (), lambda v, p: _object(v, p, _SESSION_KEYS), {})
    bind = _get(session, "bind", ("session",), _bind)
    token = _get(session, "token", ("session",), _string)
    _get(session, "addr", ("session",), lambda v, p: _string(v, p, empty_ok=True))
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
        raise ConfigError(f"{file}: dependency cycle: {' -> '.join(cycle)}")
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
    )


# Locating errors ---------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:([{}\[\]:,])"""  # 1: punctuation
    r"""|("[^"\\\n]*(?:\\.[^"\\\n]*)*"|'[^'\\\n]*(?:\\.[^'\\\n]*)*')"""  # 2: string
    r"""|([^\s{}\[\]:,"']+))""",  # 3: anything else (numbers, literals, JSON5 names)
    re.S,
)
_PUNCTUATION, _STRING, _WORD = 1, 2, 3


def _key_text(kind, token):
    if kind != _STRING:
        return token
    try:
        return json.loads(token, strict=False)
    except ValueError:
        try:
            return _json5_loads(token)
        except ValueError:
            return token[1:-1]


def _is_non_finite(token):
    try:
        return not math.isfinite(float(token))
    except ValueError:
        return False


class _Layout:
    """Where the key and the value of each key path start in a blanked text (offsets)."""

    def __init__(self, text):
        self.keys = {}
        self.values = {}
        self.duplicates = []  # (path, offset) of keys repeated in their object, text order
        self.non_finite = []  # (path, offset, token)
        self._tokens = []
        position = 0
        while match := _TOKEN.match(text, position):
            self._tokens.append((match.lastindex, match.group(match.lastindex), match.start(match.lastindex)))
            position = match.end()
        try:
            self._value(0, ())
        except RecursionError:
            pass  # keep what was found before the nesting got too deep

    def _value(self, i, path):
        if i >= len(self._tokens):
            return i
        kind, token, offset = self._tokens[i]
        self.values.setdefault(path, offset)
        if token == "{":
            return self._object(i + 1, path)
        if token == "[":
            return self._array(i + 1, path)
        if kind == _WORD and _is_non_finite(token):
            self.non_finite.append((path, offset, token))
        return i + 1

    def _object(self, i, path):
        seen = set()
        while i < len(self._tokens):
            kind, token, offset = self._tokens[i]
            if token == ",":
                i += 1
                continue
            if kind == _PUNCTUATION:
                return i + 1  # "}" (or a stray mark, in text that did not parse)
            child = path + (_key_text(kind, token),)
            if child[-1] in seen:
                self.duplicates.append((child, offset))
            seen.add(child[-1])
            self.keys.setdefault(child, offset)
            i += 1
            if i < len(self._tokens) and self._tokens[i][1] == ":":
                i = self._value(i + 1, child)
        return i

    def _array(self, i, path):
        index = 0
        while i < len(self._tokens):
            token = self._tokens[i][1]
            if token == "]":
                return i + 1
            if token == ",":
                i += 1
                continue
            i = self._value(i, path + (index,))
            index += 1
        return i

    def offset(self, path, at):
        """The key's offset (at="key") or the value's; else where the nearest parent starts."""
        if at == "key" and path in self.keys:
            return self.keys[path]
        while path not in self.values and path:
            path = path[:-1]
        return self.values.get(path)


def _line_col(text, offset):
    return text.count("\n", 0, offset) + 1, offset - text.rfind("\n", 0, offset)


def _render(path):
    """Key path as `services.api.cmd[0]`; empty or unprintable keys are quoted."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            shown = part if part and part.isprintable() else json.dumps(part, ensure_ascii=False)
            text += ("." if text else "") + shown
    return text or "top level"


def _located(file, blanked, invalid, offset=None):
    """The full error message for `invalid`, with line and column when they can be found."""
    if offset is None:
        offset = _Layout(blanked).offset(invalid.path, invalid.at)
    where = file if offset is None else "{}:{}:{}".format(file, *_line_col(blanked, offset))
    return f"{where}: {_render(invalid.path)}: {invalid.message}"
