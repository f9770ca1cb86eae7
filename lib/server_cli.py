"""The server program: flags, config discovery, boot lines, signals and exit codes."""
import os
import resource
import select
import signal
import socket
import sys
import threading
import time

from . import __version__
from .config import ConfigError, discover, load, parse_bind
from .echo import Echo
from .entry import SERVER
from .flags import UsageError, parse, report
from .guardian import Guardian
from .logstore import LogStore
from .process import become_subreaper, start_reaper
from .runtime import Reconfigured, Runtime, ServiceBusy

HELP = """\
Usage: flowlayer-server [-c PATH | --config PATH | PATH] [-s BIND] [-token TOKEN] [--no-color]
       flowlayer-server --check [-c PATH | --config PATH | PATH]

Start the services of a FlowLayer config in dependency waves, capture every output
line, and serve the session API that clients (flowlayer-client-tui) connect to.

Options:
  -c, --config PATH   config file; without one the current directory is searched for
                      flowlayer.jsonc, flowlayer.json, flowlayer.config.jsonc and
                      flowlayer.config.json, in that order
  -s BIND             session API address (host:port, [v6]:port, :port or port);
                      overrides session.bind and enables the API
  -token TOKEN        session API bearer token; overrides session.token (a random
                      fl_<uuid> token is generated when the API has none)
  --no-color          no colour, even on a terminal (NO_COLOR works too)
  --check             load and validate the config, print the plan and the warnings,
                      start nothing; exit 0 when it is valid, 2 when it is not
  -h, --help          show this help and exit
  --version           print the version and exit

Flags take one or two dashes, and -flag=value works too.
SIGUSR1 reloads the config file: removed services stop, changed ones restart, new
ones start, the rest run on (see README, "Live reload").
Ctrl-C, SIGTERM or SIGHUP stops every service in reverse dependency order, then
exits 0; a second Ctrl-C (more than 250 ms after the first) kills every remaining
process group at once and exits 130.
Exit codes: 0 clean run, 1 runtime failure, 2 usage or config error.
"""

FLAG_VALUES = ("config", "s", "token")
FLAG_SWITCHES = ("no-color", "help", "version", "check")
FLAG_ALIASES = {"c": "config", "h": "help"}


class RuntimeFailure(Exception):
    """The server cannot go on (address in use, logs dir): exit 1."""


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        return run(argv)
    except UsageError as exc:
        return report(exc, HELP)
    except ConfigError as exc:
        return report(exc)
    except RuntimeFailure as exc:
        sys.stderr.write(f"Error: {exc}\n")
        return 1
    except KeyboardInterrupt:   # Ctrl-C before the handlers were installed
        return 130


def run(argv):
    flags, positionals = parse_flags(argv)
    if flags.get("help"):
        sys.stdout.write(HELP)
        return 0
    if flags.get("version"):
        sys.stdout.write(f"flowlayer-server {__version__}\n")
        return 0
    path = find_config(flags, positionals)
    if path is None:
        if argv:
            raise UsageError("no config file given and none found in the current directory")
        sys.stdout.write(HELP)
        return 0
    config = load(path)
    if flags.get("check"):
        for line in [*plan_lines(config), "check: config is valid"]:
            sys.stdout.write(f"[{SERVER}] {line}\n")
        return 0
    bind = config.bind
    if "s" in flags:
        try:
            bind = parse_bind(flags["s"])
        except ValueError as exc:
            raise UsageError(f"-s: {exc}") from None
    token = flags.get("token", config.token)
    if token == "":
        raise UsageError("-token: must not be empty")
    if bind is not None and token is None:
        import uuid  # here: most runs never generate a token
        token = f"fl_{uuid.uuid4()}"
    return serve(config, bind, token, color=use_color(flags))


def parse_flags(argv):
    flags, positionals = parse(argv, FLAG_VALUES, FLAG_SWITCHES, FLAG_ALIASES)
    if len(positionals) > 1:
        raise UsageError(f"more than one config path given: {' '.join(positionals)}")
    if positionals and "config" in flags:
        raise UsageError("config path given both as a flag and as an argument")
    return flags, positionals


def find_config(flags, positionals):
    """The config path: from the flag or argument, else the first file found here."""
    if "config" in flags:
        return flags["config"]
    if positionals:
        return positionals[0]
    return discover()


def use_color(flags):
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR") and not flags.get("no-color")


def serve(config, bind, token, color):
    """Boot, wait for a signal, shut down; return the exit code."""
    signals = Signals()
    raise_descriptor_limit()
    if become_subreaper() or os.getpid() == 1:
        start_reaper()  # orphans that escaped their group are ours to reap
    echo = Echo(sys.stdout.buffer, config.services, color=color)
    try:
        # A warning (the logs dir failed) is a server line, so clients see it too.
        store = LogStore(config.buffer_size, config.logs_dir,
                         on_warning=lambda m: store.append_server(f"warning: {m}"))
    except OSError as exc:
        echo.close()
        raise RuntimeFailure(f"cannot use logs dir {config.logs_dir}: {exc.strerror or exc}") from None
    store.subscribe(echo.offer, wait=echo.wait_for_room)
    guardian = Guardian()
    runtime = Runtime(config, store, guardian)
    session = None

    def reconfigured(event):
        """After a reload, the echo and the session API follow the new config."""
        if isinstance(event, Reconfigured):
            echo.set_names(event.config.services)
            if session is not None:
                session.follow(event.config)

    runtime.subscribe(reconfigured)
    say = store.append_server
    for line in plan_lines(config):
        say(line)
    try:
        if bind is not None:
            session = start_session(runtime, store, config, bind, token)
            say(f"boot: session api: {session.url}")
            echo.say(f"boot: session token: {token}")
        else:
            say("boot: session api: off (no session.bind and no -s)")
            if config.addr is not None:
                say("boot: session.addr is the client's field (where tui.py connects); "
                    "session.bind enables the session API")
        wait_for_signal(runtime, signals)
    finally:
        guardian.close()
        if session is not None:
            session.close()
        store.close()
        echo.close()
    return 0


def plan_lines(config):
    """The boot lines that describe a config: its path, its plan, its warnings (SPEC 6.1)."""
    yield f"boot: config {config.path}"
    yield f"boot: services: {len(config.services)}"
    yield "boot: plan: " + "  ".join(f"[{i}] {', '.join(wave)}" for i, wave in enumerate(config.waves))
    for service in config.services.values():
        for warning in service.warnings:
            yield f"warning: {warning}"


def raise_descriptor_limit():
    """Soft RLIMIT_NOFILE up to the hard limit: every service costs two pipes and every
    client a socket, and the soft default (often 1024) is low for a large stack."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def start_session(runtime, store, config, bind, token):
    # Imported here: websocket-server is only loaded when the API is enabled.
    from .session import SessionServer
    host, port = bind
    session = SessionServer(runtime, store, config, host, port, token)
    try:
        session.start()
    except OSError as exc:
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise RuntimeFailure(f"cannot listen on {where}: {exc.strerror or exc}") from None
    return session


KEYPRESS_WINDOW = 0.25  # seconds: a SIGINT this soon after the previous one is the same keypress


class Signals:
    """SIGINT, SIGTERM and SIGHUP, seen reliably by the main thread.

    Python runs signal handlers in the main thread only, and a signal that the kernel
    hands to another thread does not interrupt a main thread blocked on a lock. The
    wakeup fd is written whichever thread gets the signal, so the main thread waits in
    select() on it instead.
    """

    def __init__(self):
        self._read, self._write = socket.socketpair()
        self._read.setblocking(False)
        self._write.setblocking(False)
        self.received = []  # signal numbers, a SIGINT echo of one keypress left out
        self._last_sigint = None
        self.reloads = 0              # SIGUSR1s not yet handled
        signal.set_wakeup_fd(self._write.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGUSR1, lambda signum, _frame: self._reload_requested())
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            if sig != signal.SIGHUP or signal.getsignal(sig) is not signal.SIG_IGN:  # nohup
                signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, _frame):
        """One Ctrl-C may come twice (to the process and to its group, as `timeout -s INT`
        and some managers send it): a SIGINT within KEYPRESS_WINDOW of the last one counted
        is that echo. Measured from the counted one, so that a storm still forces exit."""
        if signum == signal.SIGINT:
            now = time.monotonic()
            if self._last_sigint is not None and now - self._last_sigint < KEYPRESS_WINDOW:
                return
            self._last_sigint = now
        self.received.append(signum)

    def _reload_requested(self):
        self.reloads += 1

    def take_reloads(self):
        """How many SIGUSR1s arrived since the last call (only the main thread calls)."""
        count, self.reloads = self.reloads, 0
        return count

    def wake(self):
        """Wake wait() from another thread."""
        try:
            self._write.send(b"\0")
        except OSError:
            pass

    def wait(self):
        """Block until a signal arrives or wake() is called."""
        select.select([self._read], [], [])
        try:
            while self._read.recv(4096):
                pass
        except BlockingIOError:
            pass


def wait_for_signal(runtime, signals):
    """Boot in the background; the first SIGINT/SIGTERM/SIGHUP shuts down, a second SIGINT
    kills."""
    boot = threading.Thread(target=runtime.boot, name="boot", daemon=True)
    boot.start()
    while not signals.received:
        signals.wait()
        if signals.take_reloads() and not signals.received:
            threading.Thread(target=reload_on_signal, args=(runtime,), name="reload",
                             daemon=True).start()
    started = time.monotonic()
    finished = threading.Event()

    def shut_down():
        runtime.store.append_server(f"shutdown: {signal.Signals(signals.received[0]).name} received, stopping services")
        runtime.shutdown()
        boot.join()
        runtime.store.append_server(f"shutdown: complete ({time.monotonic() - started:.2f}s)")
        finished.set()
        signals.wake()

    threading.Thread(target=shut_down, name="shutdown", daemon=True).start()
    while not finished.is_set():
        signals.wait()
        if signal.SIGINT in signals.received[1:]:
            force_exit(runtime)


def reload_on_signal(runtime):
    """SIGUSR1: reload_config; the runtime writes the `reload: ...` lines, a refusal here."""
    try:
        reload = runtime.claim_reload()
    except ServiceBusy as exc:
        runtime.store.append_server(f"reload: refused: {exc}")
        return
    reload()


def force_exit(runtime):
    """Second Ctrl-C: no more waiting, every group gets SIGKILL now."""
    runtime.kill_all()
    try:
        os.write(1, b"[flowlayer] shutdown: forced, killed every process group\n")
    except OSError:
        pass
    os._exit(130)
