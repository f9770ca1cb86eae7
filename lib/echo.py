"""Terminal echo of captured lines: best effort, like a client.

The store hands entries to `offer` under its lock; a slow terminal must never slow
capture, so entries past a backlog bounded in bytes (`logstore.chunk_bytes`: a few long lines weigh
as much as many short ones) are counted instead of queued, and one
`[flowlayer] echo: N lines skipped` line reports them once the writer catches up.
An output that keeps up (a file, /dev/null) loses nothing: `wait_for_room`, which the store
calls outside its lock after an append, holds the capturing thread while the backlog is
over half its bound, unless a write has been blocked for more than STALL (a terminal held
with Ctrl-S), so a slow output costs capture at most STALL once.
The entries of a chunk (`entry.Chunk`) share service and stream, so their text is one
`str.join` of the messages with its prefix: the echo formats at C speed and keeps up with
capture when its output does.
"""
import threading
import time
from collections import deque

from .entry import SERVER
from .logstore import first_within

BACKLOG_BYTES = 4 << 20  # chunk_bytes() of the entries waiting for the terminal
WRITE_LINES = 2048  # lines formatted per write: a flood's chunk of 32,768 is never whole text
STALL = 0.05  # seconds a write may take before the output counts as slow
PALETTE = (36, 33, 35, 32, 34, 96, 93, 95, 92, 94)


class Echo:
    """Writes entries to a binary stream from its own thread."""

    def __init__(self, out, names, color=False):
        self._out = out
        self._color = color
        self._lock = threading.Lock()
        self.set_names(names)
        self._wake = threading.Condition(self._lock)
        self._room = threading.Condition(self._lock)
        self._write_started = None  # monotonic time of the write in progress
        self._queue = deque()
        self._pending = 0  # chunk_bytes() of the queued entries
        self._skipped = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="echo", daemon=True)
        self._thread.start()

    def set_names(self, names):
        """The services whose lines are echoed (again after a reload): name column width
        and colours. Safe under the runtime lock: it only takes the echo's own lock."""
        with self._lock:
            self._width = max((len(n) for n in names), default=0)
            self._colors = {name: PALETTE[i % len(PALETTE)]
                            for i, name in enumerate(sorted(names))}

    def offer(self, entries):
        """Store subscriber (`entries` is a Chunk): queue what fits in the backlog (a first line always fits an
        empty one), count the rest, never block."""
        with self._lock:
            part, size = first_within(entries, BACKLOG_BYTES - self._pending,
                                      empty=not self._queue)
            self._skipped += len(entries) - len(part)
            if part:
                self._queue.append(part)
                self._pending += size
                self._wake.notify()

    def wait_for_room(self):
        """Store waiter: hold the capturing thread while the output keeps up and the backlog
        is over half its bound, so that offer never has to skip."""
        with self._lock:
            while self._pending > BACKLOG_BYTES // 2 and not self._closed:
                started = self._write_started
                if started is not None and time.monotonic() - started > STALL:
                    return  # the output is slow: skip rather than slow capture
                self._room.wait(STALL)

    def say(self, text):
        """A server line that is not a log entry (the session token)."""
        with self._lock:
            self._queue.append(text)
            self._wake.notify()

    def close(self):
        """Write what is queued, then stop the thread."""
        with self._lock:
            self._closed = True
            self._wake.notify()
            self._room.notify_all()
        self._thread.join(timeout=10)

    def _run(self):
        while True:
            with self._lock:
                self._wake.wait_for(lambda: self._queue or self._skipped or self._closed)
                batches = list(self._queue)
                self._queue.clear()
                self._pending = 0
                self._room.notify_all()
                skipped, self._skipped = self._skipped, 0
                done = self._closed and not batches and not skipped
            if done:
                return
            parts = []
            for batch in batches:
                if isinstance(batch, str):
                    parts.append(self._server_line(batch))
                    continue
                prefix, suffix = self._decoration(batch.service, batch.stream)
                for start in range(0, len(batch), WRITE_LINES):
                    lines = batch.messages[start:start + WRITE_LINES]
                    parts += (prefix, (suffix + prefix).join(lines), suffix)
                    self._write(parts)
                    parts = []
            if skipped:
                parts.append(self._server_line(f"echo: {skipped} lines skipped"))
            self._write(parts)

    def _write(self, parts):
        self._write_started = time.monotonic()
        try:
            self._out.write("".join(parts).encode("utf-8", "replace"))
            self._out.flush()
        except (OSError, ValueError):
            pass
        self._write_started = None

    def _server_line(self, message):
        tag = "\x1b[1m[flowlayer]\x1b[0m" if self._color else "[flowlayer]"
        return f"{tag} {message}\n"

    def _decoration(self, service, stream):
        """(prefix, suffix) around each message of `service` on `stream`."""
        if service == SERVER:
            return self._server_line("")[:-1], "\n"
        mark = "!" if stream == "stderr" else "|"
        name = service.ljust(self._width)
        if not self._color:
            return f"{name} {mark} ", "\n"
        name = f"\x1b[{self._colors.get(service, 37)}m{name}\x1b[0m"
        if stream == "stderr":
            return f"{name} \x1b[31m{mark} ", "\x1b[0m\n"
        if stream == "system":
            return f"{name} {mark} \x1b[2m", "\x1b[0m\n"
        return f"{name} {mark} ", "\n"
