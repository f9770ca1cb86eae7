"""Waiting for a service to be ready (SPEC 3.3, 6.2): the probe kinds, the wait with its
timeout and `waiting for ready` lines, and the watcher that makes tcp/http probes fast.

Why a watcher: polling cannot be both quick and cheap (bench/readiness.py). One thread per
ReadinessWatcher reads the kernel's table of listening sockets (lib/listening.py) every
few milliseconds while probes are pending, whatever their number, and wakes a probe the
moment its port enters LISTEN; the probe then runs its real check (http keeps its meaning,
status 200..399). Each probe also keeps polling on the schedule of SPEC 3.3 (10 ms
doubling to 200 ms; to 1 s while the watcher watches its port, as a safety net), so it
works without the table, for a url on another host, and for an http service that listens
before it answers 200 (once woken by its port, a probe polls on the SPEC 3.3 schedule)."""
import math
import os
import re
import signal
import subprocess
import threading
import time
import urllib.parse

from . import probes
from .listening import ListenTable

WAITING_EVERY = 5.0  # seconds between `waiting for ready` lines
SCAN_PERIOD = 0.002  # seconds between reads of the listen table, at the least
SCAN_BUDGET = 0.02  # share of one core the reads may take; a costly table is read less often
WATCHED_MAX_DELAY = 1.0  # polling spacing, at most, while the watcher watches the port
EXEC_ATTEMPT_LIMIT = 5.0  # seconds an exec probe's command may run
EXEC_INTERVAL = 0.25  # default seconds between exec attempts
EXEC_POLL = 0.05  # how often a running exec attempt looks at its cancel event
LOG_INTERVAL = 1.0  # a log probe is woken by its matcher; this is only a safety net


class Attempt:
    """What one attempt found: truthy when ready; `text` is for the waiting lines."""
    __slots__ = ("ok", "text")

    def __init__(self, ok, text):
        self.ok, self.text = ok, text

    def __bool__(self):
        return self.ok

    def __repr__(self):
        return f"Attempt({self.ok}, {self.text!r})"


def describe(result):
    """The text of a check's result: an Attempt's, or a word for a bare bool."""
    return getattr(result, "text", None) or ("ok" if result else "not ready")


class WakingEvent(threading.Event):
    """An Event that, once set, also sets the Events registered with add_waker: a probe
    waits on one Event yet wakes for its cancellation, its log match or its port."""

    def __init__(self):
        super().__init__()
        self._wakers = set()
        self._wakers_lock = threading.Lock()

    def set(self):
        super().set()
        with self._wakers_lock:
            wakers = list(self._wakers)
        for waker in wakers:
            waker.set()

    def add_waker(self, waker):
        with self._wakers_lock:
            self._wakers.add(waker)
        if self.is_set():
            waker.set()

    def remove_waker(self, waker):
        with self._wakers_lock:
            self._wakers.discard(waker)


class LogMatcher:
    """The log probe of one run: the runtime feeds it the lines it captures
    (`feed(stream, lines)`, from the reader threads); `matched` is set at the first line of
    the wanted stream that the pattern matches (re.search: anywhere in the line)."""

    def __init__(self, pattern, stream="any"):
        self.pattern, self.stream = pattern, stream
        self.matched = WakingEvent()
        self.line = None

    def feed(self, stream, lines):
        if self.matched.is_set() or self.stream not in ("any", stream):
            return
        for line in lines:
            if self.pattern.search(line):
                self.line = line
                self.matched.set()
                return

    def outcome(self):
        if self.matched.is_set():
            return Attempt(True, f"matched: {self.line}")
        return Attempt(False, "no matching line yet")


def compile_pattern(text):
    """The compiled log pattern; ValueError with a short reason for a bad regex."""
    try:
        return re.compile(text)
    except re.error as error:
        raise ValueError(f"invalid regular expression: {error.msg} at position {error.pos}") from None


class Probe:
    """What to wait for: `check()` returns a truthy result when ready (an Attempt, or a
    bool); `target` names it in the waiting lines; `port` (> 0) lets the watcher fire the
    check when that port listens; `interval` fixes the spacing of attempts (None: the
    doubling schedule); `matcher` wakes the wait at its match."""

    def __init__(self, target, check, port=0, interval=None, matcher=None):
        self.target, self.check, self.port = target, check, port
        self.interval, self.matcher = interval, matcher


def http_probe(url):
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme, 0)
    except ValueError:  # a bad port in the url: the check reports it as not ready
        port = 0
    return Probe(f"GET {url}", lambda: Attempt(*probes.http_attempt(url)), port)


def tcp_probe(port):
    return Probe(f"tcp {port}", lambda: Attempt(*probes.tcp_attempt(port)), port)


def exec_probe(argv, env, cwd, cancel, interval=EXEC_INTERVAL):
    """Ready when `argv` exits 0; `env` and `cwd` as for the service's Process."""
    return Probe(f"exec {' '.join(argv)}", lambda: exec_attempt(argv, env, cwd, cancel),
                 interval=interval)


def log_probe(matcher):
    target = f"log /{matcher.pattern.pattern}/" + (
        f" on {matcher.stream}" if matcher.stream != "any" else "")
    return Probe(target, matcher.outcome, interval=LOG_INTERVAL, matcher=matcher)


def exec_attempt(argv, env=None, cwd=None, cancel=None, limit=EXEC_ATTEMPT_LIMIT):
    """Run `argv` once in its own process group (`env`: variables over the server's
    environment); its group is killed when it ends, runs past `limit` or `cancel` is set."""
    try:
        proc = subprocess.Popen(argv, env={**os.environ, **env} if env else None, cwd=cwd,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    except (OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        return Attempt(False, f"cannot run {argv[0]}: {reason.lower()}")
    deadline = time.monotonic() + limit
    code = None
    try:
        while code is None and time.monotonic() < deadline and not (cancel and cancel.is_set()):
            try:
                code = proc.wait(min(EXEC_POLL, max(0.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                pass
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # what it left behind, or all of it
        except ProcessLookupError:
            pass
        proc.wait()
    if code is None:
        return Attempt(False, "cancelled" if cancel and cancel.is_set()
                       else f"timed out after {limit:g}s")
    if code < 0:
        return Attempt(False, f"killed by {signal.Signals(-code).name}")
    return Attempt(code == 0, f"exit code {code}")


def waiting_line(target, last, elapsed):
    """`waiting for ready: tcp 5432 -> connection refused (5s)`."""
    return f"waiting for ready: {target} -> {last} ({round(elapsed)}s)"


def not_ready_reason(timeout, target, last):
    """The failed_start reason when ready.timeout passed: `not ready after 30s (tcp 5432 ->
    connection refused)`."""
    return f"not ready after {timeout:g}s ({target} -> {last})"


class Waited:
    """How a wait ended: `state` "ready", "cancelled" or "timeout"; `last` the text of the
    last attempt's outcome."""
    __slots__ = ("state", "last")

    def __init__(self, state, last):
        self.state, self.last = state, last

    def __repr__(self):
        return f"Waited({self.state!r}, {self.last!r})"


class ReadinessWatcher:
    """Waits for probes; one per runtime, shared by every pending probe. close() at the end."""

    def __init__(self, table=None):
        self._table = table if table is not None else ListenTable()
        self._cond = threading.Condition()
        self._watches = {}  # wake Event -> port
        self._thread = None
        self._closed = False
        self._broken = False  # the table failed to read once: never tried again

    def wait(self, probe, cancel, timeout=None, on_waiting=None):
        """Run `probe` until it passes, `cancel` (a WakingEvent) is set or `timeout` seconds
        pass; call `on_waiting(line)` every WAITING_EVERY seconds meanwhile. -> Waited."""
        began = time.monotonic()
        deadline = began + timeout if timeout else math.inf
        next_line = began + WAITING_EVERY
        wake = threading.Event()
        sources = [cancel] + ([probe.matcher.matched] if probe.matcher else [])
        for source in sources:
            source.add_waker(wake)
        watched = probe.port > 0 and self._watch(probe.port, wake)
        delay = probes.FIRST_DELAY
        last = "no answer yet"
        try:
            while not cancel.is_set():
                woken = wake.is_set()
                wake.clear()
                result = probe.check()
                last = describe(result)
                if result:
                    return Waited("ready", last)
                if woken and watched:  # the port listens yet the check fails: poll from now
                    self._unwatch(wake)
                    watched = False
                    delay = probes.FIRST_DELAY
                now = time.monotonic()
                due = now + (probe.interval or delay)
                delay = min(delay * 2, WATCHED_MAX_DELAY if watched else probes.MAX_DELAY)
                while now < due and not wake.is_set():
                    if now >= deadline:
                        return Waited("timeout", last)
                    if now >= next_line:
                        if on_waiting:
                            on_waiting(waiting_line(probe.target, last, now - began))
                        next_line += WAITING_EVERY
                    wake.wait(min(due, deadline, next_line) - now)
                    now = time.monotonic()
                if now >= deadline:
                    return Waited("timeout", last)
            return Waited("cancelled", last)
        finally:
            self._unwatch(wake)
            for source in sources:
                source.remove_waker(wake)

    def close(self):
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread:
            thread.join()
        self._table.close()

    def _watch(self, port, wake):
        """Have the scanner set `wake` while `port` listens; False without a table."""
        with self._cond:
            if self._closed or self._broken or self._table.source is None:
                return False
            self._watches[wake] = port
            if self._thread is None:
                self._thread = threading.Thread(target=self._scan, name="readiness", daemon=True)
                self._thread.start()
            self._cond.notify_all()
            return True

    def _unwatch(self, wake):
        with self._cond:
            self._watches.pop(wake, None)

    def _scan(self):
        with self._cond:
            while not self._closed:
                if not self._watches:
                    self._cond.wait()
                    continue
                watches = dict(self._watches)
                self._cond.release()
                try:
                    began = time.thread_time()
                    listening = self._table.ports()
                    cost = time.thread_time() - began
                except OSError:  # the table went away: the probes' own polling carries on
                    listening, cost = None, 0.0
                finally:
                    self._cond.acquire()
                if listening is None:
                    self._broken = True
                    self._watches.clear()
                    return
                for wake, port in watches.items():
                    if port in listening:
                        wake.set()
                self._cond.wait(max(SCAN_PERIOD, cost / SCAN_BUDGET))
