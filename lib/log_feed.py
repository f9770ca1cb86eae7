"""The selected scope's log entries, kept continuous over a stream that breaks.

`LogBuffer` holds the entries (merged by seq, capped); `LogFeed` owns every get_logs it
sends to fill what the live stream did not bring: the first load, the catch-up after a
reconnect (`after_seq`), older pages while the user reads back (`before_seq`), the newest
entries refused while the view was held, and the ranges of live events the server dropped.
"""
import itertools
from dataclasses import dataclass

from .entry import entry_from_dict

ALL = None  # the scope of every service's logs

LOGS_TIMEOUT = 30.0          # seconds a get_logs may take (a large reply under load)
UNKNOWN_LIMIT_CAP = 100_000  # memory guard used only until the server tells its limit
OLDER_PAGE_MAX = 1000        # entries asked per page of older history

_EPOCHS = itertools.count(1)  # shared by all buffers: a new buffer never repeats an epoch


def _seq(entry):
    return entry.seq


@dataclass(frozen=True)
class LogLines:
    """A buffer's entries at one moment, for drawing.

    `epoch` is the same for two snapshots only when the later one differs by entries
    appended at the end or trimmed from the start, so a view can update itself cheaply.
    """
    entries: tuple
    epoch: int
    has_older: bool


class LogBuffer:
    """The entries of one scope: ascending seq, no duplicates, capped.

    The cap is the server's `effective_limit`. While following, the oldest entries go;
    while the user reads back (not following), the view must hold still, so entries past
    the cap are refused at the new end instead and `newer_dropped` asks for a refetch when
    following resumes.
    """

    def __init__(self):
        self.entries = []
        self.limit = None
        self.last_seq = 0          # highest seq ever taken in: the reconnect cursor
        self.loaded = False        # the first get_logs of this scope succeeded
        self.has_older = False     # the server holds entries older than entries[0]
        self.older_exhausted = False
        self.newer_dropped = False
        self.following = True
        self.epoch = next(_EPOCHS)

    def lines(self):
        return LogLines(tuple(self.entries), self.epoch, self.has_older)

    def add(self, new):
        """Merge entries in any order (live events, replies), dropping known seqs."""
        entries = self.entries
        tail = entries[-1].seq if entries else -1
        late = []
        full = not self.following and self.limit is not None
        for entry in new:
            if entry.seq > self.last_seq:
                self.last_seq = entry.seq
            if entry.seq > tail:
                if full and len(entries) >= self.limit:
                    self.newer_dropped = True
                    continue
                entries.append(entry)
                tail = entry.seq
            else:
                late.append(entry)
        if late:
            known = {entry.seq for entry in entries}
            fresh = {}
            for entry in late:
                if entry.seq not in known:
                    fresh[entry.seq] = entry
            if fresh:
                entries.extend(fresh.values())
                entries.sort(key=_seq)
                self.epoch = next(_EPOCHS)
        self._trim()

    def add_older(self, page, truncated):
        """Put a page of older history in front; how many entries it brought (0: none)."""
        first = self.entries[0].seq if self.entries else None
        older = sorted({e.seq: e for e in page if first is None or e.seq < first}.values(),
                       key=_seq)
        if not older:
            self.older_exhausted = True
            self.has_older = False
            return 0
        self.entries[:0] = older
        self.has_older = bool(truncated)
        self.epoch = next(_EPOCHS)
        self._trim()
        return len(older)

    def set_limit(self, limit):
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            self.limit = limit
            self._trim()

    def set_following(self, following):
        self.following = following
        self._trim()

    def _trim(self):
        cap = self.limit or UNKNOWN_LIMIT_CAP
        excess = len(self.entries) - cap
        if excess <= 0:
            return
        if self.following:
            del self.entries[:excess]
            self.has_older = True
            self.older_exhausted = False
        else:
            del self.entries[cap:]
            self.newer_dropped = True
            self.epoch = next(_EPOCHS)


class LogFeed:
    """One scope's buffer and the get_logs that keep it continuous.

    All of it is called with the client's lock held. Requests in flight and what the live
    stream showed are forgotten in one place, `_start_over`: when the scope changes (with a
    new buffer) and when the connection drops (with the same one, to continue after its
    last seq); replies to what was forgotten are dropped.
    """

    def __init__(self, transport, notify, timeout=LOGS_TIMEOUT):
        self._transport = transport
        self._notify = notify
        self._timeout = timeout
        self.scope = ALL
        self._repairs_work = True  # False once the server showed it cannot page by seq
        self._generation = 0
        self._start_over(LogBuffer())

    def _start_over(self, buffer):
        self.buffer = buffer
        self._generation += 1       # replies carry the generation they were asked in
        self.loading_older = False
        self._refetching = False
        self._repairing = False
        self._gap = None            # (after, before): seqs of live events the server dropped
        self._live_seq = 0          # the highest seq of a live event
        self._consecutive = False   # live seqs came one by one: a jump means a drop

    # ---- what the client asks ---------------------------------------------------------

    def open(self):
        """The session is ready: first load of the scope, or the catch-up (after_seq)."""
        buffer = self.buffer
        cursor = buffer.last_seq if buffer.loaded else None
        self._request(self._cursor_payload("after_seq", cursor), self._on_load)

    def close(self):
        """The connection dropped: keep the entries, forget the rest."""
        self._start_over(self.buffer)

    def select(self, scope):
        """Start over on `scope`'s logs; False when it is the scope already."""
        if scope == self.scope:
            return False
        self.scope = scope
        self._start_over(LogBuffer())
        if self._transport.ready:
            self.open()
        return True

    def set_following(self, following):
        """Follow the newest entries, or hold still; False when nothing changed."""
        buffer = self.buffer
        if following == buffer.following:
            return False
        buffer.set_following(following)
        if (following and buffer.newer_dropped and self._transport.ready
                and not self._refetching):
            buffer.newer_dropped = False
            self._refetching = True
            self._request(self._cursor_payload("after_seq", buffer.entries[-1].seq
                                               if buffer.entries else None), self._on_refetch)
        return True

    def load_older(self):
        """Ask for a page of entries before the oldest held; False when there is none."""
        buffer = self.buffer
        if (not self._transport.ready or self.loading_older or buffer.older_exhausted
                or not buffer.entries or not buffer.loaded):
            return False
        self.loading_older = True
        page = max(1, min(OLDER_PAGE_MAX, (buffer.limit or OLDER_PAGE_MAX * 2) // 2))
        payload = self._cursor_payload("before_seq", buffer.entries[0].seq)
        payload["limit"] = page
        self._request(payload, self._on_older)
        return True

    def on_live(self, payloads):
        """Live `log` events: keep those of the scope; notice seqs the server skipped."""
        scope = self.scope
        taken = []
        for payload in payloads:
            entry = entry_from_dict(payload)
            if entry is None:
                continue
            previous = self._live_seq
            if entry.seq > previous:
                if entry.seq == previous + 1:
                    self._consecutive = True
                elif previous and self._consecutive:
                    self._note_gap(previous, entry.seq)
                self._live_seq = entry.seq
            if scope is ALL or entry.service == scope:
                taken.append(entry)
        self.buffer.add(taken)
        if self._gap and not self._repairing and self._repairs_work:
            self._repair()

    # ---- requests and their replies -----------------------------------------------------

    def _cursor_payload(self, key, seq):
        payload = {} if self.scope is ALL else {"service": self.scope}
        if seq is not None:
            payload[key] = seq
        return payload

    def _request(self, payload, handler):
        """get_logs whose reply is dropped if the feed started over meanwhile."""
        generation = self._generation

        def done(reply):
            if generation != self._generation:
                return
            if not reply.ok:
                self._notify(f"get_logs: {reply.describe()}", error=True)
            handler(reply, reply.data if reply.ok and isinstance(reply.data, dict) else None)

        self._transport.enqueue("get_logs", payload, self._timeout, done)

    def _on_load(self, reply, data):
        if data is None:
            return
        buffer = self.buffer
        buffer.set_limit(data.get("effective_limit"))
        if not buffer.loaded:
            buffer.has_older = data.get("truncated") is True
            buffer.loaded = True
        buffer.add(_entries(data))

    def _on_refetch(self, reply, data):
        self._refetching = False
        if data is not None:
            self.buffer.set_limit(data.get("effective_limit"))
            self.buffer.add(_entries(data))

    def _on_older(self, reply, data):
        self.loading_older = False
        if data is None:
            self.buffer.older_exhausted = True  # the server cannot page back (no before_seq)
            return
        brought = self.buffer.add_older(_entries(data), data.get("truncated") is True)
        if brought:
            self._notify(f"loaded {brought} older entries")
        else:
            self._notify("no older logs available")

    def _note_gap(self, after, before):
        if self._gap:
            after, before = min(after, self._gap[0]), max(before, self._gap[1])
        self._gap = (after, before)

    def _repair(self):
        """Fetch exactly the entries of a gap in the live stream (before_seq + limit)."""
        after, before = self._gap
        self._gap = None
        self._repairing = True
        limit = before - after - 1
        if self.buffer.limit:
            limit = min(limit, self.buffer.limit)
        payload = self._cursor_payload("before_seq", before)
        payload["limit"] = limit

        def repaired(reply, data):
            self._repairing = False
            if data is None:
                if reply.code != "timeout":
                    self._repairs_work = False  # a server without before_seq: stop trying
                return
            self.buffer.add([entry for entry in _entries(data) if entry.seq > after])
            if self._gap:
                self._repair()

        self._request(payload, repaired)


def _entries(data):
    items = data.get("entries")
    if not isinstance(items, list):
        return []
    return [entry for entry in map(entry_from_dict, items) if entry is not None]
