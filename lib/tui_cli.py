"""The client program: flags, -config, the terminal's setup and restore, exit codes."""
import curses
import locale
import os
import signal
import sys

from . import __version__
from . import ctl
from .client import Client
from .config import ConfigError
from .connect import DEFAULT_ADDR, FLAG_VALUES, resolve
from .flags import UsageError, parse, report
from .tui_app import App

PROGRAM = "flowlayer-client-tui"

HELP = f"""\
Usage: flowlayer-client-tui [-addr HOST:PORT] [-token TOKEN] [-config PATH] [COMMAND ...]

Watch and control the services of a running FlowLayer server (session API, protocol V1):
their states, their live logs, start / stop / restart.

Options:
  -addr HOST:PORT   server address (default {DEFAULT_ADDR}; [v6]:port, :port and a
                    ws:// URL work too)
  -token TOKEN      bearer token of the session API
  -config PATH      read session.addr and session.token from a JSONC file; a server
                    config works too (its session.bind is used when it has no addr).
                    Without -addr and -config, the server's config file in the current
                    directory is read (flowlayer.jsonc, flowlayer.json,
                    flowlayer.config.jsonc, flowlayer.config.json, in that order)
  -h, --help        show this help and exit
  --version         print the version and exit

Flags take one or two dashes, and -flag=value works too; flags given explicitly
override the config file.
With a COMMAND, run it against the server and exit instead of showing the screen:
  status, start|stop|restart NAME..., start-all, stop-all, reload,
  logs [-f] [-n N] [NAME], wait [--timeout S] [NAME...]
(`COMMAND --help` for each; also installed as flowlayer-ctl).
Keys: tab panel  up/down j/k move  PgUp/PgDn b/f space page  u/d half page
      g/G top/bottom  / filter  esc close  s start/restart  x stop  z zoom logs
      i connection info  q quit
"""

FLAG_SWITCHES = ("help", "version")
FLAG_ALIASES = {"h": "help"}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if ctl.has_command(argv):
        return ctl.main(argv, prog=PROGRAM)
    try:
        flags, _ = parse(argv, FLAG_VALUES, FLAG_SWITCHES, FLAG_ALIASES)   # no command
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
