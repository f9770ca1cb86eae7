"""One-shot client commands for scripts and CI (SPEC 6.5): `status`, `start`, `stop`,
`restart`, `start-all`, `stop-all`, `reload`, `logs`, `wait`.

No curses. Each command opens one session (transport.Transport, the same connection code
as the screen), does its one thing and exits with a code a script can test. A V1 server
without `get_services` still answers `status` and `wait`, from the snapshot and the status
events, and the output says what cannot be known that way.
"""
import os
import sys
import time
from datetime import datetime

from . import __version__
from .config import ConfigError
from .connect import DEFAULT_ADDR, FLAG_VALUES, resolve
from .entry import SERVER, clock_time, entry_from_dict
from .flags import UsageError, parse, report
from .transport import CONNECTING, FORBIDDEN, INCOMPATIBLE, UNAUTHORIZED, Transport

PROGRAM = "flowlayer-ctl"
ACTION_TIMEOUT = 7 * 24 * 3600.0   # a start waits on readiness, which has no timeout
QUERY_TIMEOUT = 30.0               # get_services, get_logs
RECHECK = 1.0                      # wait re-asks get_services this often without events
BACKOFF = (0.1, 0.2, 0.5, 1.0)     # a script waiting for a server that is starting
EXIT_TIMEOUT = 124                 # as timeout(1)
REFUSALS = (UNAUTHORIZED, FORBIDDEN, INCOMPATIBLE)


class Failure(Exception):
    """The command failed: `Error: <message>` on stderr and exit `code`."""

    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code


# ---- the session ---------------------------------------------------------------------------

class Session:
    """The transport's listener: service states from the snapshot and status events, a
    count of what may change an answer (`changes`), so a command waits on events, and
    (once `collect` is set) the live log entries for `logs -f`.

    Every connection receives every log event, and seqs are consecutive across all
    services, so a jump in the live seqs means the server dropped events: `gap` is set
    then, and on every new session, for the follower to fetch what it missed."""

    def __init__(self):
        self.services = {}      # name -> status
        self.blocked = {}       # name -> its `blocked:` line, seen live (V1 servers)
        self.changes = 0        # status events, lifecycle lines and openings
        self.collect = False    # keep live entries in `live`
        self.live = []          # LogEntry, in arrival order
        self.live_seq = 0       # the highest live seq of this session
        self.gap = False        # live entries may be missing (a jump, a new session)

    def on_open(self, snapshot):
        self._snapshot(snapshot)
        self.changes += 1
        self.live_seq = 0
        self.gap = True

    def on_events(self, events):
        for name, payload in events:
            if name == "service_status":
                service, status = payload.get("service"), payload.get("status")
                if isinstance(service, str) and isinstance(status, str):
                    self.services[service] = status
                    self.changes += 1
            elif name == "log":
                entry = entry_from_dict(payload)
                if entry is None:
                    continue
                if entry.seq > self.live_seq:
                    if self.live_seq and entry.seq != self.live_seq + 1:
                        self.gap = True
                    self.live_seq = entry.seq
                if self.collect:
                    self.live.append(entry)
                if entry.stream == "system":
                    if entry.message.startswith("blocked:"):
                        self.blocked[entry.service] = entry.message
                    self.changes += 1
            elif name == "snapshot":
                self._snapshot(payload)
                self.changes += 1

    def on_server_error(self, payload):
        pass

    def on_close(self):
        pass

    def _snapshot(self, payload):
        items = payload.get("services")
        self.services = {item["name"]: str(item.get("status") or "unknown")
                         for item in items if isinstance(item, dict)
                         and isinstance(item.get("name"), str)} if isinstance(items, list) else {}


class Connection:
    """A transport with its Session, opened at once or (patient) until a deadline."""

    def __init__(self, url, token):
        self.url = url
        self.session = Session()
        self.transport = Transport(url, token, self.session, backoff=_backoff)
        self.lock = self.transport.lock

    def open(self, deadline=None):
        """Connect. Without a deadline the first failed attempt is an error; with one,
        attempts go on until it (an unreachable server may be starting); a refused token
        or another protocol is an error at once."""
        t = self.transport.start()

        def settled():
            if t.ready or t.state in REFUSALS:
                return True
            return deadline is None and t.state != CONNECTING

        with self.lock:
            if not t.wait_for(settled, _remaining(deadline)):
                raise Failure(f"timed out: cannot reach the server at {self.url}: "
                              f"{t.detail or 'no answer'}", EXIT_TIMEOUT)
            if not t.ready:
                raise Failure(self._refusal(t.state, t.detail))

    def _refusal(self, state, detail):
        if state == UNAUTHORIZED:
            return (f"the server at {self.url} wants a token ({detail}): give -token, or "
                    "-config with the server's config file")
        if state == FORBIDDEN:
            return f"the server at {self.url} rejected the token ({detail})"
        if state == INCOMPATIBLE:
            return f"{self.url}: {detail}"
        return f"cannot reach the server at {self.url}: {detail}"

    def close(self):
        self.transport.close()

    @property
    def has_services(self):
        """The server answers get_services (it lists it in hello.capabilities)."""
        with self.lock:
            capabilities = self.transport.server.get("capabilities")
        return isinstance(capabilities, list) and "get_services" in capabilities

    def call(self, name, payload=None, timeout=ACTION_TIMEOUT):
        return self.transport.request(name, payload, timeout).wait()

    def query(self, name, payload=None):
        """A read command that must succeed: its data, or Failure."""
        reply = self.call(name, payload, QUERY_TIMEOUT)
        if not reply.ok:
            raise Failure(f"{name}: {reply.describe()}")
        return reply.data if isinstance(reply.data, dict) else {}

    def wait_change(self, seen, deadline=None):
        """Wait until the session's `changes` passes `seen` (or the deadline)."""
        with self.lock:
            self.transport.wait_for(lambda: self.session.changes != seen, _remaining(deadline))


def _backoff(failures):
    return BACKOFF[min(max(failures, 1), len(BACKOFF)) - 1]


def _remaining(deadline):
    return None if deadline is None else max(0.0, deadline - time.monotonic())


# ---- status --------------------------------------------------------------------------------

COLUMNS = ("NAME", "STATUS", "PID", "EXIT", "PORT", "SINCE", "REASON")


def cmd_status(conn, flags, args):
    """A table of every service, then the startup state."""
    if conn.has_services:
        data = conn.query("get_services")
        rows = [_row(item) for item in data.get("services") or [] if isinstance(item, dict)]
        startup = data.get("startup") if isinstance(data.get("startup"), dict) else {}
        footer = startup.get("summary") or f"startup: {startup.get('state', 'unknown')}"
    else:
        with conn.lock:
            services = dict(sorted(conn.session.services.items()))
        rows = [(name, status, "-", "-", "-", "-", "-") for name, status in services.items()]
        footer = None
        _note("this server has no get_services (protocol V1 only): pid, exit code, port, "
              "since and reason are unknown, and `running` may still wait for a probe")
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(COLUMNS)]
    for row in [COLUMNS, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if footer:
        print(footer)
    return 0


def _row(item):
    def text(value):
        return "-" if value is None or value == "" else str(value)
    port = item.get("port")
    return (text(item.get("name")), text(item.get("status")), text(item.get("pid")),
            text(item.get("exit_code")), text(port if port else None),
            _since(item.get("since")), text(item.get("reason")))


def _since(timestamp):
    """Local `HH:MM:SS` of today, or the date and time of an older change."""
    if not isinstance(timestamp, str):
        return "-"
    try:
        moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00")).astimezone()
    except ValueError:
        return timestamp
    same_day = moment.date() == datetime.now().astimezone().date()
    return moment.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M:%S")


# ---- actions -------------------------------------------------------------------------------

SERVICE_ACTIONS = {"start": "start_service", "stop": "stop_service",
                   "restart": "restart_service"}
ALL_ACTIONS = {"start-all": "start_all", "stop-all": "stop_all"}


def cmd_service_action(verb):
    """start|stop|restart NAME...: all sent at once; each outcome printed in order."""
    def run(conn, flags, args):
        pending = [(name, conn.transport.request(SERVICE_ACTIONS[verb], {"service": name},
                                                 ACTION_TIMEOUT)) for name in args]
        return _report([(f"{verb} {name}", p.wait()) for name, p in pending])
    return run


def cmd_all_action(verb):
    def run(conn, flags, args):
        return _report([(verb, conn.call(ALL_ACTIONS[verb]))])
    return run


def _report(outcomes):
    """`<label>: ok` on stdout, `Error: <label>: <why>` on stderr; 1 if any failed."""
    code = 0
    for label, reply in outcomes:
        if reply.ok:
            print(f"{label}: ok")
        else:
            sys.stderr.write(f"Error: {label}: {reply.describe()}\n")
            code = 1
    return code


def cmd_reload(conn, flags, args):
    reply = conn.call("reload_config")
    if reply.code == "unknown_command":
        raise Failure("the server does not support reload (it has no reload_config command)")
    if not reply.ok:
        raise Failure(f"reload: {reply.message or reply.describe()}")
    data = reply.data if isinstance(reply.data, dict) else {}
    for key in ("added", "removed", "changed", "unchanged"):
        names = data.get(key)
        if isinstance(names, list):
            print(f"{key}: {', '.join(map(str, names)) or '-'}")
    return 0


# ---- logs ----------------------------------------------------------------------------------

def cmd_logs(conn, flags, args):
    """The scope's logs (`-n N` newest), then with `-f` every newer line as it comes, across
    reconnects, printed in seq order and only past the last one printed: live events while
    their seqs run on, and a fetch of `after_seq` of the last line printed after a jump or
    a new session, so nothing shows twice and nothing between is skipped (as far as the
    server still holds it)."""
    scope = {"service": args[0]} if args else {}
    count = None if flags.get("n") is None else int(flags["n"])
    session = conn.session
    with conn.lock:
        session.collect = bool(flags.get("follow"))
        names = list(session.services) + [SERVER]
    width = 0 if args else max(map(len, names))
    first = conn.query("get_logs", {**scope, "limit": max(count, 1)} if count is not None else scope)
    entries = _entries(first)
    last = entries[-1].seq if entries else 0
    _print_entries(entries if count != 0 else [], width)
    if not flags.get("follow"):
        return 0
    while True:
        with conn.lock:
            conn.transport.wait_for(lambda: session.live or session.gap, None)
            live, session.live = session.live, []
            gap, session.gap = session.gap, False
            ready = conn.transport.ready
        if gap:
            fetched = _fetch_after(conn, scope, last) if ready else None
            if fetched is None:
                # Lost with the session (its next opening sets gap) or timed out: the
                # live entries past the hole wait for the next fetch.
                with conn.lock:
                    session.gap = session.gap or conn.transport.ready
                continue
            _print_entries(fetched, width)
            last = fetched[-1].seq if fetched else last
        fresh = sorted((e for e in live if e.seq > last and (not scope or e.service == args[0])),
                       key=lambda e: e.seq)
        if fresh:
            _print_entries(fresh, width)
            last = fresh[-1].seq


def _fetch_after(conn, scope, last):
    """Every entry after seq `last`, ascending; None when the session was lost or the
    reply late; Failure when the server refuses (the service is gone). A reply cut by
    the server's limit is completed by pages back (before_seq)."""
    reply = conn.call("get_logs", {**scope, "after_seq": last}, QUERY_TIMEOUT)
    if not reply.ok:
        if reply.code in ("disconnected", "timeout"):
            return None
        raise Failure(f"get_logs: {reply.describe()}")
    data = reply.data if isinstance(reply.data, dict) else {}
    pages = [_entries(data)]
    while data.get("truncated") is True and pages[0]:
        reply = conn.call("get_logs", {**scope, "before_seq": pages[0][0].seq}, QUERY_TIMEOUT)
        if not reply.ok:
            return None
        data = reply.data if isinstance(reply.data, dict) else {}
        page = _entries(data)
        newer = [entry for entry in page if entry.seq > last]
        pages.insert(0, newer)
        if len(newer) < len(page):
            break
    return [entry for page in pages for entry in page]


def _entries(data):
    items = data.get("entries")
    found = [e for e in map(entry_from_dict, items if isinstance(items, list) else []) if e]
    return sorted(found, key=lambda e: e.seq)


def _print_entries(entries, width):
    if entries:
        sys.stdout.write("".join(f"{clock_time(e.timestamp)} {e.service.ljust(width)} | "
                                 f"{e.message}\n" for e in entries))
        sys.stdout.flush()


# ---- wait ----------------------------------------------------------------------------------

def cmd_wait(conn, flags, args, deadline):
    """Until every named service (or all) is satisfied: 0; one failed or blocked: 1;
    the deadline: 124."""
    with conn.lock:
        known = set(conn.session.services)
    unknown = [name for name in args if name not in known]
    if unknown:
        raise Failure(f'service "{unknown[0]}" is not defined')
    judge = _judge_services if conn.has_services else _judge_statuses
    names = args or sorted(known)
    pending = names
    while True:
        with conn.lock:
            seen = conn.session.changes
        if conn.transport.ready:
            verdict, pending = judge(conn, names, pending)
            if verdict is not None:
                return verdict
        if deadline is not None and time.monotonic() >= deadline:
            break
        step = time.monotonic() + RECHECK
        conn.wait_change(seen, step if deadline is None else min(step, deadline))
    with conn.lock:
        statuses = dict(conn.session.services)
    waited = ", ".join(f"{name} ({statuses.get(name, 'unknown')})" for name in pending)
    raise Failure(f"timed out after {flags['timeout']}s waiting for: {waited}", EXIT_TIMEOUT)


def _judge_services(conn, names, pending):
    """(exit code, or None to go on waiting; the names still waited for), from
    get_services. Raises Failure for a failed or blocked service."""
    reply = conn.call("get_services", None, QUERY_TIMEOUT)
    if not reply.ok or not isinstance(reply.data, dict):
        return None, pending
    details = {item.get("name"): item for item in reply.data.get("services") or []
               if isinstance(item, dict)}
    for name in names:
        item = details.get(name, {})
        reason = item.get("reason") or ""
        if item.get("status") == "failed":
            code = item.get("exit_code")
            raise Failure(f"{name} failed" + (f": {reason}" if reason else
                                              f" (exit code {code})" if code is not None else ""))
        if reason.startswith("blocked:") and not item.get("satisfied"):
            raise Failure(f"{name} is blocked: {reason}")
    pending = [name for name in names if details.get(name, {}).get("satisfied") is not True]
    if pending:
        return None, pending
    print(f"wait: {len(names)} service{'s' * (len(names) != 1)} satisfied: {', '.join(names)}")
    return 0, pending


def _judge_statuses(conn, names, pending):
    """The verdict of a V1 server, from statuses alone: `ready` is sure; `running` (maybe
    still probing) and `stopped` (a oneshot done, or a stopped daemon) count as up, and
    the output says so."""
    with conn.lock:
        statuses = dict(conn.session.services)
        blocked = dict(conn.session.blocked)
    for name in names:
        if statuses.get(name) == "failed":
            raise Failure(f"{name} failed")
        if name in blocked:
            raise Failure(f"{name} is blocked: {blocked[name]}")
    pending = [name for name in names if statuses.get(name) not in ("ready", "running", "stopped")]
    if pending:
        return None, pending
    unsure = [name for name in names if statuses[name] != "ready"]
    if unsure:
        _note("this server has no get_services (protocol V1 only), so readiness is not "
              f"certain for: {', '.join(f'{n} ({statuses[n]})' for n in unsure)}")
    print(f"wait: {len(names)} service{'s' * (len(names) != 1)} up: {', '.join(names)}")
    return 0, pending


def _note(text):
    sys.stderr.write(f"note: {text}\n")


# ---- the command line ----------------------------------------------------------------------

CONNECTION_HELP = f"""\
Connection (before or after the command):
  -addr HOST:PORT   server address (default {DEFAULT_ADDR}; [v6]:port, :port, ws:// URL)
  -token TOKEN      bearer token of the session API
  -config PATH      read session.addr / session.bind and session.token from a JSONC file
Without -addr and -config, the server's config file in the current directory is read
(flowlayer.jsonc, flowlayer.json, flowlayer.config.jsonc, flowlayer.config.json).
"""

COMMANDS = {
    # name: (arguments, one line, value flags, switch flags, aliases, more help)
    "status": ("", "a table of the services (status, pid, exit, port, since, reason)",
               (), (), {}, ""),
    "start": ("NAME...", "start services and their dependencies; waits until up",
              (), (), {}, ""),
    "stop": ("NAME...", "stop services; waits until they are stopped", (), (), {}, ""),
    "restart": ("NAME...", "restart services; waits until they are up again", (), (), {}, ""),
    "start-all": ("", "start every service that is not up, in dependency waves", (), (), {}, ""),
    "stop-all": ("", "stop every service, in reverse dependency waves", (), (), {}, ""),
    "reload": ("", "make the server read its config file again",
               (), (), {}, ""),
    "logs": ("[-f] [-n N] [NAME]", "print log lines: HH:MM:SS.mmm service | message",
             ("n",), ("follow",), {"f": "follow"},
             "  -n N       the newest N lines (default: as many as the server returns)\n"
             "  -f         follow: print new lines as they come until Ctrl-C, across server\n"
             "             restarts and reconnects, without duplicates or gaps\n"),
    "wait": ("[--timeout S] [NAME...]", "wait until services (default: all) are satisfied", ("timeout",), (), {},
             "  --timeout S  give up after S seconds (exit 124); the server may still be\n"
             "               starting: wait retries until it answers\n"
             "Satisfied: ready (with a probe), running (daemon without probe), or exited 0\n"
             "(oneshot). A failed or blocked service ends the wait with exit 1.\n"),
}

EXIT_CODES = """\
Exit codes: 0 done; 1 failed (a service failed or was blocked, the server cannot be
reached or rejected the token: `Error: ...`); 2 usage error; 124 wait timed out.
"""


def usage(prog):
    lines = [f"Usage: {prog} [CONNECTION] COMMAND [ARGS]", "",
             "Run one command against a running FlowLayer server and exit (for scripts and CI).",
             "", "Commands:"]
    lines += [f"  {f'{name} {args}'.strip():<30}{text}" for name, (args, text, *_) in COMMANDS.items()]
    return ("\n".join(lines) + "\n\n" + CONNECTION_HELP
            + f"\n`{prog} COMMAND --help` describes one command.\n" + EXIT_CODES)


def command_help(prog, name):
    args, text, _, _, _, more = COMMANDS[name]
    return (f"Usage: {prog} [CONNECTION] {name} {args}".rstrip() + f"\n\n{text[0].upper()}{text[1:]}.\n"
            + (f"\nOptions:\n{more}" if more else "") + "\n" + CONNECTION_HELP + "\n" + EXIT_CODES)


def split(argv):
    """(flags before the command, the command or None, what follows it)."""
    for i, arg in enumerate(argv):
        if arg == "--":
            rest = argv[i + 1:]
            return argv[:i], (rest[0] if rest else None), rest[1:]
        if not arg.startswith("-") or arg == "-":
            previous = argv[i - 1] if i else ""
            if previous.lstrip("-") in FLAG_VALUES and "=" not in previous:
                continue    # the value of a connection flag
            return argv[:i], arg, argv[i + 1:]
    return argv, None, []


def has_command(argv):
    """Whether argv names a command (for the screen's program, which has none)."""
    return split(argv)[1] is not None


def main(argv=None, prog=PROGRAM):
    argv = sys.argv[1:] if argv is None else argv
    help_text = usage(prog)
    try:
        before, name, rest = split(argv)
        flags, _ = parse(before, FLAG_VALUES, ("help", "version"), {"h": "help"})
        if name is None:
            if flags.get("help"):
                sys.stdout.write(help_text)
                return 0
            if flags.get("version"):
                sys.stdout.write(f"{PROGRAM} {__version__}\n")
                return 0
            raise UsageError("no command given")
        if name not in COMMANDS:
            raise UsageError(f"unknown command: {name}")
        help_text = command_help(prog, name)
        _, _, values, switches, aliases, _ = COMMANDS[name]
        own, args = parse(rest, FLAG_VALUES + values, ("help",) + switches,
                          {"h": "help", **aliases})
        both = sorted(set(flags) & set(own))
        if both:
            raise UsageError(f"flag -{both[0]} given twice")
        flags.update(own)
        if flags.get("help"):
            sys.stdout.write(help_text)
            return 0
        if flags.get("version"):
            raise UsageError("--version goes without a command")
        check_args(name, flags, args)
        url, token = resolve(flags)
    except UsageError as exc:
        return report(exc, help_text)
    except ConfigError as exc:
        return report(exc)
    deadline = time.monotonic() + float(flags["timeout"]) if "timeout" in flags else None
    return run(name, flags, args, url, token, deadline)


def check_args(name, flags, args):
    """The command's arguments make sense (before anything is sent), or UsageError."""
    if name in SERVICE_ACTIONS and not args:
        raise UsageError(f"{name} needs at least one service name")
    if name in ("status", "reload", *ALL_ACTIONS) and args:
        raise UsageError(f"{name} takes no arguments (got {args[0]})")
    if name == "logs":
        if len(args) > 1:
            raise UsageError(f"logs takes one service name at most (got {' '.join(args)})")
        if "n" in flags and not (flags["n"].isascii() and flags["n"].isdigit()):
            raise UsageError(f"-n: expected a number of lines >= 0, got {flags['n']!r}")
    if name == "wait" and "timeout" in flags:
        try:
            seconds = float(flags["timeout"])
        except ValueError:
            seconds = -1.0
        if not 0 < seconds < float("inf"):
            raise UsageError(f"--timeout: expected seconds > 0, got {flags['timeout']!r}")


def run(name, flags, args, url, token, deadline):
    """Connect, run the command, close; the exit code."""
    conn = Connection(url, token)
    try:
        conn.open(deadline if name == "wait" else None)
        if name == "wait":
            return cmd_wait(conn, flags, args, deadline)
        if name in SERVICE_ACTIONS:
            return cmd_service_action(name)(conn, flags, args)
        if name in ALL_ACTIONS:
            return cmd_all_action(name)(conn, flags, args)
        return {"status": cmd_status, "reload": cmd_reload, "logs": cmd_logs}[name](
            conn, flags, args)
    except Failure as exc:
        sys.stderr.write(f"Error: {exc}\n")
        return exc.code
    except KeyboardInterrupt:
        return 0 if name == "logs" else 130
    except BrokenPipeError:     # `... logs | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        conn.close()
