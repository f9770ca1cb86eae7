"""Where a client connects: `-addr`, `-token`, `-config`, or the server's own config file
found in the current directory (SPEC 1.2, 6.5); shared by the screen and the one-shot
commands, so both connect where the server in this directory listens."""
from .config import ConfigError, discover, parse_bind, read_jsonc
from .flags import UsageError

DEFAULT_ADDR = "127.0.0.1:6999"
LOOPBACK = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}
FLAG_VALUES = ("addr", "token", "config")


def resolve(flags, directory=""):
    """(WebSocket URL, token) from the flags, over the config file's session fields.

    Without `-addr` and `-config`, the config file the server would find in `directory`
    is read as `-config` reads one; with none there, the default address."""
    addr, token = address(DEFAULT_ADDR), None
    path = flags.get("config")
    if path is None and "addr" not in flags:
        path = discover(directory)
    if path is not None:
        addr, token = from_config(path, addr)
    if "addr" in flags:
        try:
            addr = address(flags["addr"])
        except ValueError as exc:
            raise UsageError(f"-addr: {exc}") from None
    if "token" in flags:
        token = flags["token"]
    return addr, token or None


def from_config(path, addr):
    """session.addr (or session.bind, mapped to loopback) and session.token of a file."""
    data = read_jsonc(path)
    session = data.get("session", {})
    if not isinstance(session, dict):
        raise ConfigError(f"{path}: session: must be an object")
    token = session.get("token")
    if token is not None and (not isinstance(token, str) or not token):
        raise ConfigError(f"{path}: session.token: must be a non-empty string")
    key = "addr" if session.get("addr") is not None else "bind"
    value = session.get(key)
    if value is not None:
        if key == "addr" and not isinstance(value, str):
            raise ConfigError(f"{path}: session.addr: must be a string like 127.0.0.1:6999")
        try:
            addr = address(value)
        except ValueError as exc:
            raise ConfigError(f"{path}: session.{key}: {exc}") from None
    return addr, token


def address(value):
    """The ws:// URL of an address: host:port, [v6]:port, :port, a port, or a URL."""
    if isinstance(value, str) and value.startswith(("ws://", "wss://")):
        return value
    host, port = parse_bind(value)
    host = LOOPBACK.get(host, host)
    return f"ws://{f'[{host}]' if ':' in host else host}:{port}/ws"
