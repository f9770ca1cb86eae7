"""Protocol V1 client: connection, handshake, commands, and log continuity.

No curses here: the terminal client draws from this model, and scripts and tests can
drive it directly. One background thread owns the connection: it connects with backoff,
waits for `hello` and `snapshot`, then reads. Everything the UI reads lives under
`Client.lock`; `Client.version` grows on every change, so a UI redraws only when needed.

Receiving: websocket-client does the HTTP upgrade (and reports 401/403), then this module
reads the socket itself and splits frames in bulk. websocket-client's `recv()` tops out
near 24k messages/s at a full core, and a server streaming 20,000 lines/s must cost the
client a fraction of that.
"""
import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass

import websocket

from .logstore import LogEntry
from .protocol import PROTOCOL_VERSION, command, encode

ALL = None  # the scope of every service's logs

# Connection states, shown to the user as they are.
CONNECTING = "connecting"      # first attempt under way
CONNECTED = "connected"        # hello and snapshot received
RECONNECTING = "reconnecting"  # the connection was lost; retrying
UNAUTHORIZED = "unauthorized"  # HTTP 401: no token or not a Bearer one
FORBIDDEN = "forbidden"        # HTTP 403: wrong token
UNREACHABLE = "unreachable"    # never connected: refused, timed out, not a V1 endpoint
INCOMPATIBLE = "incompatible"  # the server speaks another protocol version

BACKOFF = (0.5, 1.0, 2.0, 5.0)  # seconds before attempt n+1; the last one repeats
COMMAND_TIMEOUT = 5.0
LOGS_TIMEOUT = 30.0
POLL = 0.1                 # how often the reader wakes to expire commands
UNKNOWN_LIMIT_CAP = 100_000  # memory guard used only until the server tells its limit
OLDER_PAGE_MAX = 1000        # entries asked per page of older history


def entry_from_wire(data):
    """The LogEntry of a `log` payload or a get_logs item; None when it has no int seq."""
    try:
        seq = data["seq"]
        if type(seq) is not int:
            return None
        return LogEntry(seq, str(data.get("service") or ""), str(data.get("phase") or ""),
                        str(data.get("stream") or "stdout"), str(data.get("message") or ""),
                        str(data.get("timestamp") or ""))
    except (TypeError, KeyError, AttributeError):
        return None


def _seq(entry):
    return entry.seq


@dataclass(frozen=True)
class Reply:
    """How a command ended: the result, a rejection, a timeout or a lost connection."""
    ok: bool
    data: object = None
    code: str = ""
    message: str = ""
    failed_services: tuple = ()

    @classmethod
    def from_payload(cls, payload):
        error = payload.get("error") if isinstance(payload.get("error"), dict) else {}
        failed = payload.get("failed_services")
        return cls(ok=payload.get("ok") is True, data=payload.get("data"),
                   code=str(error.get("code") or ""), message=str(error.get("message") or ""),
                   failed_services=tuple(failed) if isinstance(failed, list) else ())

    def describe(self):
        """One line for a footer: `ok`, or the error code and message."""
        if self.ok:
            return "ok"
        text = ": ".join(part for part in (self.code, self.message) if part) or "failed"
        if self.failed_services:
            text += f" ({', '.join(map(str, self.failed_services))})"
        return text


class Pending:
    """A command waiting for its ack and result."""

    def __init__(self, name, payload, timeout, on_done):
        self.id = str(uuid.uuid4())
        self.name = name
        self.payload = payload
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.on_done = on_done
        self.reply = None
        self._done = threading.Event()

    def finish(self, reply):
        self.reply = reply
        self._done.set()
        if self.on_done is not None:
            self.on_done(reply)

    def wait(self, timeout=None):
        """The Reply, or None if it did not come within `timeout`."""
        self._done.wait(timeout)
        return self.reply


@dataclass(frozen=True)
class Notice:
    """The last outcome worth telling the user (action results, errors)."""
    text: str
    error: bool = False


def backoff_delay(failures):
    """Seconds to wait after `failures` consecutive failed attempts (1 -> 0.5 s)."""
    return BACKOFF[min(max(failures, 1), len(BACKOFF)) - 1]


class LogBuffer:
    """The entries of one scope: ascending seq, no duplicates, capped.

    The cap is the server's `effective_limit`. While following, the oldest entries go;
    while the user reads back (not following), the view must hold still, so entries past
    the cap are refused at the new end instead and `newer_dropped` asks for a refetch when
    following resumes. `epoch` grows whenever entries change other than by appending at
    the end or trimming the start, so a view can update itself incrementally.
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
        self.epoch = 0

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
                self.epoch += 1
        self._trim()

    def add_older(self, page, truncated):
        """Put a page of older history in front; True when it brought anything."""
        first = self.entries[0].seq if self.entries else None
        older = sorted({e.seq: e for e in page if first is None or e.seq < first}.values(),
                       key=_seq)
        if not older:
            self.older_exhausted = True
            self.has_older = False
            return False
        self.entries[:0] = older
        self.has_older = bool(truncated)
        self.epoch += 1
        self._trim()
        return True

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
            self.epoch += 1


class FrameReader:
    """Splits the server's byte stream into WebSocket messages, many per read."""

    def __init__(self):
        self._buffer = bytearray()
        self._fragments = []
        self._fragment_opcode = 0

    def feed(self, data):
        """Complete messages in `data` (plus what was kept), as (opcode, payload) pairs."""
        buf = self._buffer
        buf += data
        size = len(buf)
        pos = 0
        out = []
        while size - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            length = second & 0x7F
            start = pos + 2
            if length == 126:
                if size - start < 2:
                    break
                length = (buf[start] << 8) | buf[start + 1]
                start += 2
            elif length == 127:
                if size - start < 8:
                    break
                length = int.from_bytes(buf[start:start + 8], "big")
                start += 8
            mask = None
            if second & 0x80:
                if size - start < 4:
                    break
                mask = bytes(buf[start:start + 4])
                start += 4
            end = start + length
            if end > size:
                break
            payload = bytes(buf[start:end])
            if mask:
                payload = _unmask(payload, mask)
            pos = end
            self._collect(first, payload, out)
        if pos:
            del buf[:pos]
        return out

    def _collect(self, first, payload, out):
        fin = first & 0x80
        opcode = first & 0x0F
        if opcode == 0:
            self._fragments.append(payload)
            if fin:
                out.append((self._fragment_opcode, b"".join(self._fragments)))
                self._fragments = []
        elif opcode in (1, 2) and not fin:
            self._fragment_opcode = opcode
            self._fragments = [payload]
        else:
            out.append((opcode, payload))


def _unmask(payload, mask):
    repeated = (mask * (len(payload) // 4 + 1))[:len(payload)]
    value = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return value.to_bytes(len(payload), "big")


def decode_messages(texts):
    """JSON objects of many text frames, parsed as one array when they all are valid."""
    if not texts:
        return []
    try:
        return json.loads(b"[" + b",".join(texts) + b"]")
    except (ValueError, RecursionError):
        messages = []
        for text in texts:
            try:
                messages.append(json.loads(text.decode("utf-8", "replace")))
            except (ValueError, RecursionError):
                continue
        return messages


class _SessionEnded(Exception):
    """The session is over; the message says why (shown as the state's detail)."""

    def __init__(self, message, state=None):
        super().__init__(message)
        self.state = state


class Client:
    """A V1 session that reconnects forever and keeps one scope's logs continuous.

    Read attributes under `lock`: `state`, `detail`, `next_attempt_at` (monotonic, or
    None while an attempt runs), `server` (the hello payload), `services` (name ->
    status, sorted), `busy` (target -> command; target None is the all-services row),
    `scope`, `logs` (a LogBuffer), `loading_older`, `notice`, `version`.
    """

    def __init__(self, url, token=None, *, command_timeout=COMMAND_TIMEOUT,
                 logs_timeout=LOGS_TIMEOUT, backoff=backoff_delay):
        self.url = url
        self.token = token
        self.command_timeout = command_timeout
        self.logs_timeout = logs_timeout
        self._backoff = backoff
        self.lock = threading.RLock()
        self._changed = threading.Condition(self.lock)
        self.version = 0
        self.state = CONNECTING
        self.detail = ""
        self.next_attempt_at = None
        self.connected_at = None
        self.server = {}
        self.services = {}
        self.busy = {}
        self.scope = ALL
        self.logs = LogBuffer()
        self.notice = None
        self._generation = 0      # bumped when the scope changes; stale replies carry an old one
        self.loading_older = False
        self._refetch_pending = False
        self._gap = None          # (after, before) seqs of live events the server dropped
        self._repair_pending = False
        self._repairs_work = True
        self._live_seq = 0
        self._consecutive = False
        self._ws = None
        self._ready = False
        self._pending = {}
        self._outbox = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flowlayer-client", daemon=True)

    # ---- lifecycle -------------------------------------------------------------------

    def start(self):
        self._thread.start()
        return self

    def close(self):
        """Stop reconnecting and drop the connection; safe to call twice."""
        self._stop.set()
        ws = self._ws
        if ws is not None:
            try:
                ws.send_close()  # polite; the reader sees the stop flag within POLL
            except Exception:
                pass
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)

    def wait_for(self, predicate, timeout):
        """Wait until `predicate()` (called under the lock) is true; return its value."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    # ---- commands --------------------------------------------------------------------

    def request(self, name, payload=None, timeout=None, on_done=None):
        """Send a command; the Pending ends with a Reply (also when not connected)."""
        with self.lock:
            pending = self._request(name, payload, timeout, on_done)
        self._flush()
        return pending

    def run_action(self, name, service=ALL):
        """Send a start/stop/restart command unless its target is busy; say how it ended.

        Returns False (with a notice) when nothing was sent.
        """
        label = f"{name} {service}" if service is not None else name
        with self.lock:
            if not self._ready:
                self.notify(f"{label}: not connected", error=True)
                return False
            if service in self.busy:
                self.notify(f"{label}: busy with {self.busy[service]}", error=True)
                return False
            self.busy[service] = name

            def done(reply):
                self.busy.pop(service, None)
                self.notify(f"{label}: {reply.describe()}", error=not reply.ok)

            self._request(name, {"service": service} if service is not None else None,
                          None, done)
        self._flush()
        return True

    def _request(self, name, payload, timeout, on_done):
        if timeout is None:
            timeout = self.logs_timeout if name == "get_logs" else self.command_timeout
        pending = Pending(name, payload, timeout, on_done)
        if not self._ready:
            pending.finish(Reply(False, code="disconnected", message="not connected"))
            self._bump()
            return pending
        self._pending[pending.id] = pending
        self._outbox.append(pending)
        return pending

    def _flush(self):
        """Send queued commands outside the lock, so a full socket never stalls the UI."""
        with self.lock:
            batch, self._outbox = self._outbox, []
            ws = self._ws
        for pending in batch:
            try:
                ws.send(encode(command(pending.id, pending.name, pending.payload)))
            except Exception:
                ws.abort()  # the reader notices and ends the session
                return

    # ---- logs ------------------------------------------------------------------------

    def select(self, scope):
        """Show `scope`'s logs (a service name, or ALL): start over and fetch them."""
        with self.lock:
            if scope == self.scope:
                return
            self.scope = scope
            self._generation += 1
            self.logs = LogBuffer()
            self.loading_older = self._refetch_pending = self._repair_pending = False
            self._gap = None
            if self._ready:
                self._load_logs()
            self._bump()
        self._flush()

    def set_following(self, following):
        """Follow the newest entries, or hold the view still while the user reads back."""
        with self.lock:
            logs = self.logs
            if following == logs.following:
                return
            logs.set_following(following)
            if following and logs.newer_dropped and self._ready and not self._refetch_pending:
                logs.newer_dropped = False
                self._refetch_pending = True
                self._logs_request(self._cursor_payload("after_seq", logs.entries[-1].seq
                                                        if logs.entries else None),
                                   self._on_refetch)
            self._bump()
        self._flush()

    def load_older(self):
        """Ask for a page of entries before the oldest held; False when there is none."""
        with self.lock:
            logs = self.logs
            if (not self._ready or self.loading_older or logs.older_exhausted
                    or not logs.entries or not logs.loaded):
                return False
            self.loading_older = True
            page = max(1, min(OLDER_PAGE_MAX, (logs.limit or OLDER_PAGE_MAX * 2) // 2))
            payload = self._cursor_payload("before_seq", logs.entries[0].seq)
            payload["limit"] = page
            self._logs_request(payload, self._on_older)
        self._flush()
        return True

    def _cursor_payload(self, key, seq):
        payload = {} if self.scope is ALL else {"service": self.scope}
        if seq is not None:
            payload[key] = seq
        return payload

    def _logs_request(self, payload, handler):
        """get_logs whose reply is dropped if the scope changed meanwhile."""
        generation = self._generation

        def done(reply):
            if generation != self._generation:
                return
            if not reply.ok:
                self.notify(f"get_logs: {reply.describe()}", error=True)
            handler(reply, reply.data if reply.ok and isinstance(reply.data, dict) else None)

        self._request("get_logs", payload, None, done)

    def _load_logs(self):
        """First load of the scope, or the catch-up after a reconnect (after_seq)."""
        logs = self.logs
        cursor = logs.last_seq if logs.loaded else None
        self._logs_request(self._cursor_payload("after_seq", cursor), self._on_load)

    def _on_load(self, reply, data):
        if data is None:
            return
        logs = self.logs
        logs.set_limit(data.get("effective_limit"))
        entries = _entries(data)
        if not logs.loaded:
            logs.has_older = data.get("truncated") is True
            logs.loaded = True
        logs.add(entries)

    def _on_refetch(self, reply, data):
        self._refetch_pending = False
        if data is not None:
            self.logs.set_limit(data.get("effective_limit"))
            self.logs.add(_entries(data))

    def _on_older(self, reply, data):
        self.loading_older = False
        if data is None:
            self.logs.older_exhausted = True  # the server cannot page back (no before_seq)
            return
        self.logs.add_older(_entries(data), data.get("truncated") is True)

    def _on_live(self, payloads):
        """Live `log` events: keep those of the scope; notice seqs the server skipped."""
        scope = self.scope
        taken = []
        for payload in payloads:
            entry = entry_from_wire(payload)
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
        self.logs.add(taken)
        if self._gap and not self._repair_pending and self._repairs_work:
            self._repair()

    def _note_gap(self, after, before):
        if self._gap:
            after, before = min(after, self._gap[0]), max(before, self._gap[1])
        self._gap = (after, before)

    def _repair(self):
        """Fetch exactly the entries of a gap in the live stream (before_seq + limit)."""
        after, before = self._gap
        self._gap = None
        self._repair_pending = True
        limit = before - after - 1
        if self.logs.limit:
            limit = min(limit, self.logs.limit)
        payload = self._cursor_payload("before_seq", before)
        payload["limit"] = limit

        def repaired(reply, data):
            self._repair_pending = False
            if data is None:
                if reply.code != "timeout":
                    self._repairs_work = False  # a server without before_seq: stop trying
                return
            self.logs.add([entry for entry in _entries(data) if entry.seq > after])
            if self._gap:
                self._repair()

        self._logs_request(payload, repaired)

    # ---- connection ------------------------------------------------------------------

    def _run(self):
        failures = 0
        ever_connected = False
        while not self._stop.is_set():
            try:
                ws = websocket.create_connection(
                    self.url, timeout=self.command_timeout, skip_utf8_validation=True,
                    suppress_origin=True,
                    header=[f"Authorization: Bearer {self.token}"] if self.token else [])
            except websocket.WebSocketBadStatusException as exc:
                state = {401: UNAUTHORIZED, 403: FORBIDDEN}.get(exc.status_code)
                state = state or (RECONNECTING if ever_connected else UNREACHABLE)
                detail = f"HTTP {exc.status_code}"
            except (OSError, websocket.WebSocketException) as exc:
                state = RECONNECTING if ever_connected else UNREACHABLE
                detail = _describe_error(exc)
            else:
                state = None
                try:
                    self._session(ws)
                    detail = "connection closed"
                except _SessionEnded as end:
                    state, detail = end.state, str(end)
                except (OSError, websocket.WebSocketException) as exc:
                    detail = _describe_error(exc)
                except Exception as exc:  # a bug or a server message we misread: reconnect
                    detail = f"client error: {exc!r}"
                finally:
                    if self._ready:
                        ever_connected = True
                        failures = 0
                    self._disconnect(ws)
                state = state or (RECONNECTING if ever_connected else UNREACHABLE)
            if self._stop.is_set():
                break
            failures += 1
            delay = self._backoff(failures)
            with self.lock:
                self.state, self.detail = state, detail
                self.next_attempt_at = time.monotonic() + delay
                self._bump()
            self._stop.wait(delay)
            with self.lock:
                self.next_attempt_at = None
                self._bump()

    def _session(self, ws):
        """Handshake, then read until the connection ends (raises _SessionEnded)."""
        sock = ws.sock
        sock.settimeout(POLL)
        with self.lock:
            self._ws = ws
            self._live_seq = 0
            self._consecutive = False
        frames = FrameReader()
        handshake_deadline = time.monotonic() + self.command_timeout
        while not self._stop.is_set():
            try:
                data = sock.recv(1 << 18)
            except socket.timeout:
                if not self._ready and time.monotonic() > handshake_deadline:
                    raise _SessionEnded("no hello and snapshot from the server") from None
                self._expire()
                continue
            if not data:
                raise _SessionEnded("connection closed by the server")
            texts = []
            for opcode, payload in frames.feed(data):
                if opcode == 1:
                    texts.append(payload)
                elif opcode == 8:
                    raise _SessionEnded("connection closed by the server")
                elif opcode == 9:
                    ws.pong(payload)
            if texts:
                self._dispatch(decode_messages(texts))
                self._flush()
            self._expire()

    def _disconnect(self, ws):
        with self.lock:
            self._ws = None
            self._ready = False
            self._outbox = []
            pending, self._pending = self._pending, {}
            self.loading_older = self._refetch_pending = self._repair_pending = False
            self._gap = None
            lost = Reply(False, code="disconnected", message="connection lost")
            for command_ in pending.values():
                command_.finish(lost)
            self._bump()
        ws.shutdown()

    def _expire(self):
        now = time.monotonic()
        with self.lock:
            late = [p for p in self._pending.values() if now > p.deadline]
            for pending in late:
                del self._pending[pending.id]
                pending.finish(Reply(False, code="timeout",
                                     message=f"no reply within {pending.timeout:g} s"))
            if late:
                self._bump()

    # ---- incoming messages -----------------------------------------------------------

    def _dispatch(self, messages):
        with self.lock:
            live = []
            for message in messages:
                if not isinstance(message, dict):
                    continue
                kind = message.get("type")
                payload = message.get("payload")
                if not isinstance(payload, dict):
                    payload = {}
                if kind == "event":
                    name = message.get("name")
                    if name == "log":
                        live.append(payload)
                    elif name == "service_status":
                        self._on_status(payload)
                    elif name == "hello":
                        self._on_hello(payload)
                    elif name == "snapshot":
                        self._on_snapshot(payload)
                elif kind in ("ack", "result"):
                    self._on_reply(kind, message.get("id"), payload)
                elif kind == "error":
                    self.notify(f"server error: {Reply.from_payload({'error': payload}).describe()}",
                                 error=True)
            if live:
                self._on_live(live)
            self._bump()

    def _on_hello(self, payload):
        version = payload.get("protocol_version")
        if version != PROTOCOL_VERSION:
            raise _SessionEnded(f"the server speaks protocol version {version}; "
                                f"this client speaks {PROTOCOL_VERSION}", INCOMPATIBLE)
        self.server = payload

    def _on_snapshot(self, payload):
        services = payload.get("services")
        self.services = dict(sorted(
            (item["name"], str(item.get("status") or "unknown")) for item in services
            if isinstance(item, dict) and isinstance(item.get("name"), str)
        )) if isinstance(services, list) else {}
        if not self._ready:
            self._ready = True
            self.state, self.detail = CONNECTED, ""
            self.connected_at = time.time()
            self._load_logs()

    def _on_status(self, payload):
        name, status = payload.get("service"), payload.get("status")
        if not isinstance(name, str) or not isinstance(status, str):
            return
        if name not in self.services:
            self.services[name] = status
            self.services = dict(sorted(self.services.items()))
        self.services[name] = status

    def _on_reply(self, kind, id, payload):
        pending = self._pending.get(id)
        if pending is None:
            return  # timed out already, or not ours
        if kind == "ack" and payload.get("accepted") is True:
            return  # the result follows
        del self._pending[id]
        if kind == "ack":
            error = payload.get("error") if isinstance(payload.get("error"), dict) else {}
            pending.finish(Reply(False, code=str(error.get("code") or "rejected"),
                                 message=str(error.get("message") or "")))
        else:
            pending.finish(Reply.from_payload(payload))

    # ---- model helpers (lock held) ---------------------------------------------------

    def notify(self, text, error=False):
        """Set the notice the UI shows (action outcomes, errors)."""
        with self.lock:
            self.notice = Notice(text, error)
            self._bump()

    def _bump(self):
        self.version += 1
        self._changed.notify_all()


def _entries(data):
    items = data.get("entries")
    if not isinstance(items, list):
        return []
    return [entry for entry in map(entry_from_wire, items) if entry is not None]


def _describe_error(exc):
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (socket.timeout, websocket.WebSocketTimeoutException)):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    text = str(exc) or type(exc).__name__
    return text[0].lower() + text[1:] if text else text
