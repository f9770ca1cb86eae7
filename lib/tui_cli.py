"""The client program: flags, -config, the terminal's setup and restore, exit codes."""
import curses
import locale
import os
import signal
import sys

from . import __version__
from .client import Client
from .config import ConfigError, parse_bind, read_jsonc
from .flags import UsageError, parse, report
from .tui_app import App

DEFAULT_ADDR = "127.0.0.1:6999"

HELP = f"""\
Usage: flowlayer-client-tui [-addr HOST:PORT] [-token TOKEN] [-config PATH]

Watch and control the services of a running FlowLayer server (session API, protocol V1):
their states, their live logs, start / stop / restart.

Options:
  -addr HOST:PORT   server address (default {DEFAULT_ADDR}; [v6]:port, :port and a
                    ws:// URL work too)
  -token TOKEN      bearer token of the session API
  -config PATH      read session.addr and session.token from a JSONC file; a server
                    config works too (its session.bind is used when it has no addr)
  -h, --help        show this help and exit
  --version         print the version and exit

Flags take one or two dashes, and -flag=value works too; flags given explicitly
override the config file.
Keys: tab panel  up/down j/k move  PgUp/PgDn b/f space page  u/d half page
      g/G top/bottom  / filter  esc close  s start/restart  x stop  z zoom logs
      i connection info  q quit
"""

FLAG_VALUES = ("addr", "token", "config")
FLAG_SWITCHES = ("help", "version")
FLAG_ALIASES = {"h": "help"}
LOOPBACK = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        flags, positionals = parse(argv, FLAG_VALUES, FLAG_SWITCHES, FLAG_ALIASES)
        if positionals:
            raise UsageError(f"unexpected argument: {positionals[0]}")
        if flags.get("help"):
            sys.stdout.write(HELP)
            return 0
        if flags.get("version"):
            sys.stdout.write(f"flowlayer-client-tui {__version__}\n")
            return 0
        url, token = resolve(flags)
    except UsageError as exc:
        return report(exc, HELP)
    except ConfigError as exc:
        return report(exc)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        sys.stderr.write("Error: flowlayer-client-tui needs a terminal "
                         "(stdin and stdout are not one)\n")
        return 1
    return run(url, token)


def resolve(flags):
    """(WebSocket URL, token) from the flags, over the config file's session fields."""
    addr, token = address(DEFAULT_ADDR), None
    if "config" in flags:
        addr, token = from_config(flags["config"], addr)
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


def run(url, token):
    """Run the screen until the user quits; the terminal is restored whatever happens."""
    locale.setlocale(locale.LC_ALL, "")
    os.environ.setdefault("ESCDELAY", "25")  # esc answers at once, not after a second
    color = not os.environ.get("NO_COLOR")
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)
    client = Client(url, token).start()
    app = App(client, token, color)
    try:
        screen = curses.initscr()
    except curses.error as exc:
        client.close()
        sys.stderr.write(f"Error: cannot use this terminal (TERM={os.environ.get('TERM', '')}): "
                         f"{exc}\n")
        return 1
    if not curses.tigetstr("cup"):
        curses.endwin()
        client.close()
        sys.stderr.write(f"Error: this terminal (TERM={os.environ.get('TERM', '')}) cannot "
                         "move the cursor; use a full-screen terminal type such as xterm\n")
        return 1
    try:
        curses.noecho()
        curses.cbreak()
        app.run(screen)
    except KeyboardInterrupt:
        pass
    finally:
        try:
            screen.keypad(False)
            curses.nocbreak()
            curses.echo()
        except curses.error:
            pass
        curses.endwin()
        client.close()
    return 0


def _exit_on_signal(signum, frame):
    raise SystemExit(0)
