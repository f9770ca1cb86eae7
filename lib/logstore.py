"""The log store: one seq counter for every captured line, a ring of recent entries per
service, queries over them, subscribers, and the JSONL projection on disk (SPEC 4.1-4.3).

`append` is the capture hot path (reader threads, one call per 64 KiB chunk): it does one
lock acquisition and stores the read as one `Chunk`, nothing per line. Rings, subscribers and
the writer hold chunks; LogEntry objects are made only for a query's answer.
Disk writes happen on a writer thread whose queue is bounded in bytes: when the disk is
slower than a service, `append` waits (outside the lock) until the writer has room, so that
service's capture slows down and nothing is lost. Disk reads happen only for `before_seq`
queries that reach past memory. The JSONL files are sorted by seq (the writer receives batches in seq order and
a new run starts above the highest seq on disk), which lets a query bisect them.
"""
import bisect
import heapq
import itertools
import json
import os
import stat
import sys
import threading
import time
from collections import deque
from itertools import islice
from json.encoder import encode_basestring_ascii as _json_string
from operator import attrgetter, itemgetter

from .entry import FILE, SERVER, Chunk, LogEntry, entries_json, format_timestamp

ALL_FILE = "all.jsonl"
FLUSH_INTERVAL = 0.2  # seconds an entry may wait in the writer before it reaches the file
_MAX_PENDING = 1 << 20  # bytes the writer buffers before writing early
_FORMAT_SLICE = 4096  # entries the writer formats at a time
_BLOCK = 1 << 16  # bytes per read when scanning a JSONL file backwards
_SYNC_TIMEOUT = 10.0  # seconds a disk query waits for the writer to catch up
_SEQ = itemgetter(0)
_MESSAGE = itemgetter(4)
_FIRST = attrgetter("first")
ENTRY_OVERHEAD = 200  # bytes of memory a LogEntry holds besides its message's characters
WRITER_QUEUE_BYTES = 4 << 20  # chunk_bytes() queued for the writer before append waits


def chunk_bytes(entries):
    """About the memory a chunk of entries (a Chunk or a list) holds as entries: what every
    queue of them is bounded by."""
    if isinstance(entries, Chunk):
        return entries.message_bytes() + ENTRY_OVERHEAD * len(entries)
    return sum(map(len, map(_MESSAGE, entries))) + ENTRY_OVERHEAD * len(entries)


def first_within(entries, room, empty):
    """The first entries of a chunk whose chunk_bytes() fit in `room` (estimated from the
    average entry; at least one when the queue is `empty`), and that size. A queue that may
    drop takes part of a huge chunk (a flood's read holds 32,768 lines), not all or none."""
    size = chunk_bytes(entries)
    if size <= room:
        return entries, size
    keep = len(entries) * max(room, 0) // size or int(empty)
    part = entries[:keep]
    return part, chunk_bytes(part)


def _file_name(service):
    """The JSONL file holding `service`'s entries besides all.jsonl; None when its entries live
    only in all.jsonl (server-level lines, and a service named `all` whose file would be it)."""
    name = service + ".jsonl"
    return None if service == SERVER or name == ALL_FILE else name


class LogStore:
    """Sequenced, per-service rings of log entries, with an optional JSONL projection.

    `logs_dir` is created if missing; if that fails the constructor raises OSError (the
    server exits 1). A dir that turns out unwritable later is reported once through
    `on_warning(message)` and the store goes on in memory only.
    """

    def __init__(self, buffer_size=5000, logs_dir=None, on_warning=None):
        if buffer_size <= 0:
            raise ValueError("buffer_size must be > 0")
        self.buffer_size = buffer_size
        self._warn = on_warning or _print_warning
        self._lock = threading.Lock()
        self._rings = {}  # service -> _Ring of its newest entries
        self._subscribers = ()  # ((token, callback), ...), replaced as a whole on change
        self._waiters = ()  # ((token, wait), ...): called by append outside the lock
        self._tokens = itertools.count(1)
        self._broken = set()  # tokens of subscribers that raised (reported once)
        self._logs_dir = logs_dir
        highest = 0
        if logs_dir is not None:
            os.makedirs(logs_dir, exist_ok=True)
            highest = _highest_seq(os.path.join(logs_dir, ALL_FILE))
        self._first_seq = max(time.time_ns() // 1000, highest + 1)
        self._next_seq = self._first_seq
        self._writer = _JsonlWriter(logs_dir, self._warn) if logs_dir is not None else None

    def append(self, service, stream, messages, phase):
        """Store one captured chunk of lines: consecutive seqs, one timestamp. Waits while
        the JSONL writer's queue is full (the caller is the service's reader thread)."""
        writer = self._append(service, stream, messages, phase)
        if writer is not None:
            writer.wait_for_room()
        for _, wait in self._waiters:
            wait()

    def append_server(self, message):
        """One server-level line (boot, summary, shutdown, warnings): service `flowlayer`.
        Never waits: the writer itself reports its failures through here."""
        self._append(SERVER, "system", [message], "running")

    def _append(self, service, stream, messages, phase):
        """Append under the lock; return the writer to wait for, if any."""
        if not messages:
            return None
        broken = []
        with self._lock:
            stamp = format_timestamp(time.time())
            entries = Chunk(self._next_seq, service, phase, stream, messages, stamp)
            self._next_seq += len(messages)
            ring = self._rings.get(service)
            if ring is None:
                ring = self._rings[service] = _Ring(self.buffer_size)
            ring.add(entries)
            writer = self._writer
            if writer is not None:
                writer.put(entries)
            for token, callback in self._subscribers:
                try:
                    callback(entries)
                except Exception as exc:  # a subscriber's bug must not stop capture
                    if token not in self._broken:
                        self._broken.add(token)
                        broken.append(f"log subscriber {callback!r} failed: {exc!r}")
        for message in broken:  # outside the lock: the handler may append itself
            self._warn(message)
        return writer

    def subscribe(self, callback, wait=None):
        """Call `callback(entries)` for every appended chunk, under the store lock (so in seq
        order); it must only enqueue. `wait()`, if given, is called after each append of a
        service's lines, outside the lock: it may hold that capture thread (backpressure).
        Returns a token for `unsubscribe`."""
        with self._lock:
            token = next(self._tokens)
            self._subscribers += ((token, callback),)
            if wait is not None:
                self._waiters += ((token, wait),)
        return token

    def unsubscribe(self, token):
        with self._lock:
            self._subscribers = tuple(s for s in self._subscribers if s[0] != token)
            self._waiters = tuple(w for w in self._waiters if w[0] != token)

    def query(self, service=None, limit=None, after_seq=None, before_seq=None):
        """`(entries, truncated)` of SPEC 4.3 for one service (`flowlayer` included) or all
        (`service=None`), in ascending seq. `limit` defaults to `buffer_size`. A `before_seq`
        query that reaches past memory continues in the JSONL files when `logs_dir` is set."""
        if after_seq is not None and before_seq is not None:
            raise ValueError("after_seq and before_seq are exclusive")
        limit = self.buffer_size if limit is None else limit
        if limit <= 0:
            raise ValueError("limit must be > 0")
        from_disk = before_seq is not None and self._logs_dir is not None
        with self._lock:
            rings = list(self._rings.values()) if service is None else (
                [self._rings[service]] if service in self._rings else [])
            # Memory holds every entry of the scope from `floor` on; older ones are on disk.
            floor = self._memory_floor(rings) if from_disk else 0
            low = floor if after_seq is None else max(floor, after_seq + 1)
            newest = _newest(rings, low, before_seq, limit + 1)
            writer = self._writer
        if from_disk and len(newest) <= limit:
            if writer is not None:
                writer.sync()  # entries below `floor` may still wait in the writer
            newest += self._read_disk(service, min(floor, before_seq), limit + 1 - len(newest))
        truncated = len(newest) > limit
        entries = newest[:limit]
        entries.reverse()
        return entries, truncated

    def close(self):
        """Write what the writer still holds and stop it; the store stays usable in memory."""
        with self._lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    def _memory_floor(self, rings):
        """Lowest seq from which memory holds every entry of the scope of `rings`: where a
        full ring may have dropped older entries, and this run's first seq otherwise."""
        floor = self._first_seq
        for ring in rings:
            if ring.count == ring.limit:
                floor = max(floor, ring.chunks[0].first)
        return floor

    def _read_disk(self, service, bound, count):
        """The newest `count` entries of the scope below seq `bound` in the JSONL files,
        newest first."""
        name = ALL_FILE if service is None else _file_name(service) or ALL_FILE
        only = service if name == ALL_FILE and service is not None else None
        try:
            return _read_before(os.path.join(self._logs_dir, name), bound, count, only)
        except OSError:  # no such file yet, or the dir went away: nothing older to serve
            return []


def _print_warning(message):
    print(f"warning: {message}", file=sys.stderr)


class _Ring:
    """The newest `limit` entries of one service, as the chunks they came in (the oldest
    one cut to fit)."""
    __slots__ = ("chunks", "count", "limit")

    def __init__(self, limit):
        self.chunks = deque()
        self.count = 0
        self.limit = limit

    def add(self, chunk):
        self.chunks.append(chunk)
        self.count += len(chunk)
        while self.count > self.limit:
            oldest, excess = self.chunks[0], self.count - self.limit
            if len(oldest) <= excess:
                self.chunks.popleft()
                self.count -= len(oldest)
            else:
                self.chunks[0] = oldest[excess:]
                self.count -= excess

    def newest_first(self, low, high):
        """The entries with `low <= seq < high` (no upper bound when `high` is None), newest
        first; the entries of a chunk are made only when the scan reaches it."""
        chunks = self.chunks
        stop = len(chunks) if high is None else bisect.bisect_left(chunks, high, key=_FIRST)
        for index in range(stop - 1, -1, -1):
            chunk = chunks[index]
            end = len(chunk) if high is None else min(len(chunk), high - chunk.first)
            begin = max(0, low - chunk.first)
            if begin < end:
                yield from reversed(chunk[begin:end].entries())
            if chunk.first <= low:
                return


def _newest(rings, low, high, count):
    """The newest `count` entries with `low <= seq < high` (no upper bound when `high` is
    None) across the rings, newest first: a merge of the rings read backwards."""
    ranges = [ring.newest_first(low, high) for ring in rings]
    if len(ranges) == 1:
        return list(islice(ranges[0], count))
    return list(islice(heapq.merge(*ranges, key=_SEQ, reverse=True), count))


# --- JSONL files -------------------------------------------------------------------------

def _format_lines(entries):
    """The JSONL text of a batch: one `json.dumps(entry.as_dict())` line per entry."""
    if isinstance(entries, Chunk):
        return entries.json_lines(FILE)
    return "\n".join(entries_json(entries, FILE)) + "\n"


def _parse_line(line):
    """The LogEntry of one JSONL line, or None for a torn or foreign line."""
    try:
        data = json.loads(line)
        entry = LogEntry(data["seq"], data["service"], data["phase"], data["stream"],
                         data["message"], data["timestamp"])
    except (ValueError, KeyError, TypeError):
        return None
    return entry if type(entry.seq) is int else None


def _lines_backwards(f, end):
    """The lines of binary file `f` that end at or before offset `end`, last first, read in
    blocks so that a large file is never read whole. A line longer than a block is kept as
    pieces and joined once, so the scan stays linear in the bytes read."""
    position, pieces = end, []  # pieces: the unfinished line's blocks, last first
    while position > 0:
        size = min(_BLOCK, position)
        position -= size
        f.seek(position)
        block = f.read(size)
        cut = block.rfind(b"\n")
        if cut < 0:
            pieces.append(block)
            continue
        pieces.append(block[cut + 1:])
        lines = block[:cut].split(b"\n")
        for line in (b"".join(reversed(pieces)), *reversed(lines[1:])):
            if line:
                yield line
        pieces = [lines[0]]  # may continue in the previous block
    line = b"".join(reversed(pieces))
    if line:
        yield line


def _open_regular(path):
    """`path` opened for binary reading; OSError if it is not a regular file (a FIFO would
    block the reader, a device might never end). The open itself does not wait on a FIFO."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise OSError(f"{path} is not a regular file")
    return open(descriptor, "rb")


def _highest_seq(path):
    """The seq of the last readable entry of a JSONL file (0 if none): torn lines at the end
    of a crashed run and garbage are skipped. OSError when it exists but cannot be read."""
    try:
        with _open_regular(path) as f:
            end = f.seek(0, os.SEEK_END)
            for line in _lines_backwards(f, end):
                entry = _parse_line(line)
                if entry is not None:
                    return entry.seq
    except FileNotFoundError:
        pass
    return 0


def _bisect_file(f, bound):
    """An offset in binary file `f` (sorted by seq) at a line start, such that every entry
    with seq < `bound` starts before it; narrowed to within one block by bisection."""
    low, high = 0, f.seek(0, os.SEEK_END)
    while high - low > _BLOCK:
        f.seek((low + high) // 2 - 1)
        f.readline()  # to the next line start
        position = start = f.tell()
        entry = None
        while position < high and entry is None:
            line = f.readline()
            entry = _parse_line(line)
            position += len(line)
        if entry is None:
            if start >= high:
                break  # one long line spans the middle: close enough
            high = start  # only torn lines from start to high
        elif entry.seq >= bound:
            high = position - len(line)
        else:
            low = position
    return high


def _read_before(path, bound, count, service=None):
    """The newest `count` entries with seq < `bound` (of `service` only, if given) in a JSONL
    file, newest first."""
    marker = None if service is None else f'"service": {_json_string(service)},'.encode()
    found = []
    with _open_regular(path) as f:
        for line in _lines_backwards(f, _bisect_file(f, bound)):
            if marker is not None and marker not in line:
                continue  # cheap pre-filter before parsing
            entry = _parse_line(line)
            if entry is not None and entry.seq < bound and (
                    service is None or entry.service == service):
                found.append(entry)
                if len(found) == count:
                    break
    return found


_STOP = object()


class _JsonlWriter:
    """Appends entry batches to all.jsonl and <service>.jsonl on its own thread.

    `put` never blocks (it runs under the store lock, so batches arrive in seq order);
    `wait_for_room` then holds the appending thread while more than WRITER_QUEUE_BYTES wait,
    so the queue stays bounded and nothing is dropped. Text is buffered and written at most
    FLUSH_INTERVAL after it arrived. Files are opened per write, so a deleted dir is noticed.
    A service file that fails is reported once and left out from then on; all.jsonl failing
    (the dir gone, full, read-only: it is written first in every round) is reported once
    and ends the projection for the rest of the run.
    """

    def __init__(self, directory, warn):
        self._directory = directory
        self._warn = warn
        self._max_queued = WRITER_QUEUE_BYTES
        self._changed = threading.Condition(threading.Lock())
        self._queue = deque()  # chunks, sync events and _STOP, in order
        self._queued = 0  # chunk_bytes() of the chunks in the queue
        self._pending = {}  # file name -> list of encoded chunks
        self._pending_size = 0
        self._opened = set()  # file names already opened (and their tail checked) this run
        self._failed_files = set()  # service files left out after a write failed
        self._failed = False  # all.jsonl failed: nothing is written any more
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="logstore-writer", daemon=True)
        self._thread.start()

    def put(self, entries):
        with self._changed:
            self._queue.append(entries)
            self._queued += chunk_bytes(entries)
            self._changed.notify_all()

    def wait_for_room(self):
        """Block while the queue is over its bound (until the writer catches up or closes)."""
        with self._changed:
            self._changed.wait_for(lambda: self._queued <= self._max_queued or self._closed)

    def sync(self):
        """Wait until everything put before this call is in the files (or given up on)."""
        done = threading.Event()
        with self._changed:
            if self._closed:
                return  # close() wrote everything
            self._queue.append(done)
            self._changed.notify_all()
        done.wait(_SYNC_TIMEOUT)

    def close(self):
        """Write everything queued, then stop; threads waiting for room go on at once."""
        with self._changed:
            self._closed = True
            self._queue.append(_STOP)
            self._changed.notify_all()
        self._thread.join()

    def _get(self, timeout):
        """The next queued item, or None after `timeout` seconds (None: no limit)."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._queue, timeout):
                return None
            item = self._queue.popleft()
            if isinstance(item, Chunk):
                self._queued -= chunk_bytes(item)
                self._changed.notify_all()
            return item

    def _run(self):
        deadline = None  # when the oldest buffered text must be written
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            item = self._get(timeout)
            if isinstance(item, Chunk):
                if self._failed:
                    continue
                self._buffer(item)
                if deadline is None:
                    deadline = time.monotonic() + FLUSH_INTERVAL
                if time.monotonic() < deadline and self._pending_size < _MAX_PENDING:
                    continue
            self._write()
            deadline = None
            if isinstance(item, threading.Event):
                item.set()
            elif item is _STOP:
                return

    def _buffer(self, entries):
        """Format a batch _FORMAT_SLICE entries at a time (a flood's batch holds 32,768),
        each slice encoded once for both files."""
        both = [self._pending.setdefault(ALL_FILE, [])]
        name = _file_name(entries.service)
        if name is not None and name not in self._failed_files:
            both.append(self._pending.setdefault(name, []))
        for start in range(0, len(entries), _FORMAT_SLICE):
            data = _format_lines(entries[start:start + _FORMAT_SLICE]).encode("ascii")
            for chunks in both:
                chunks.append(data)
            self._pending_size += len(data)

    def _write(self):
        pending, self._pending, self._pending_size = self._pending, {}, 0
        for name, chunks in pending.items():  # all.jsonl first: _buffer adds it first
            if self._failed:
                return
            path = os.path.join(self._directory, name)
            try:
                with open(path, "a+b") as f:
                    if name not in self._opened:
                        self._opened.add(name)
                        f.write(_after_torn_tail(f))
                    f.writelines(chunks)
            except OSError as exc:
                if name == ALL_FILE:
                    self._failed = True
                    consequence = "going on without the JSONL logs"
                else:
                    self._failed_files.add(name)
                    consequence = f"going on without it ({ALL_FILE} still has its lines)"
                self._warn(f"cannot write log file {path}: {exc.strerror or exc}; "
                           f"{consequence}")


def _after_torn_tail(f):
    """A newline to write first when a crashed run left the file's last line unfinished."""
    if f.seek(0, os.SEEK_END) == 0:
        return b""
    f.seek(-1, os.SEEK_END)
    return b"" if f.read(1) == b"\n" else b"\n"
