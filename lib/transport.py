"""Protocol V1 transport: one session kept open with backoff, commands matched to replies.

Nothing here knows about logs or services. One background thread owns the connection: it
connects with backoff, waits for `hello` (the protocol version is checked) and the first
`snapshot`, then reads. What the session hears goes to a listener (the client model), with
`lock` held: `on_open(snapshot)`, `on_events([(name, payload)])` once per read,
`on_server_error(payload)` and `on_close()`. `version` grows on every change, so a UI
redraws only when needed.

Receiving: websocket-client does the HTTP upgrade (and reports 401/403), then this module
reads the socket itself and splits frames in bulk (framing.FrameDecoder). websocket-client's
`recv()` tops out near 24k messages/s at a full core, and a server streaming 20,000 lines/s
must cost the client a fraction of that.
"""
import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass

import websocket

from .framing import OP_CLOSE, OP_PING, OP_TEXT, FrameDecoder
from .protocol import PROTOCOL_VERSION, command, encode

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
POLL = 0.1                 # how often the reader wakes to expire commands
READ_SIZE = 1 << 18        # bytes asked of the socket per read


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


def backoff_delay(failures):
    """Seconds to wait after `failures` consecutive failed attempts (1 -> 0.5 s)."""
    return BACKOFF[min(max(failures, 1), len(BACKOFF)) - 1]


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


class Transport:
    """A V1 session that reconnects forever and matches commands to their replies.

    Read under `lock`: `state`, `detail`, `retry_at` (monotonic time of the next attempt,
    or None while one runs), `connected_at` (epoch seconds), `server` (the hello payload),
    `ready` (hello and snapshot received: commands can be sent), `version`.
    """

    def __init__(self, url, token, listener, *, command_timeout=COMMAND_TIMEOUT,
                 backoff=backoff_delay):
        self.url = url
        self.token = token
        self.listener = listener
        self.command_timeout = command_timeout
        self._backoff = backoff
        self.lock = threading.RLock()
        self._changed = threading.Condition(self.lock)
        self.version = 0
        self.state = CONNECTING
        self.detail = ""
        self.retry_at = None
        self.connected_at = None
        self.server = {}
        self.ready = False
        self._ws = None
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
            _close_quietly(ws)  # polite; the reader sees the stop flag within POLL
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)

    def wait_for(self, predicate, timeout):
        """Wait until `predicate()` (called under the lock) is true; return its value."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    def bump(self):
        """Something the UI shows changed (lock held): count it and wake the waiters."""
        self.version += 1
        self._changed.notify_all()

    # ---- commands --------------------------------------------------------------------

    def request(self, name, payload=None, timeout=None, on_done=None):
        """Send a command now; the Pending ends with a Reply (also when not connected)."""
        with self.lock:
            pending = self.enqueue(name, payload, timeout, on_done)
        self.flush()
        return pending

    def enqueue(self, name, payload=None, timeout=None, on_done=None):
        """Queue a command (lock held) for the next `flush()`; without a session it fails now."""
        pending = Pending(name, payload,
                          self.command_timeout if timeout is None else timeout, on_done)
        if not self.ready:
            pending.finish(Reply(False, code="disconnected", message="not connected"))
            self.bump()
            return pending
        self._pending[pending.id] = pending
        self._outbox.append(pending)
        return pending

    def flush(self):
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
                    if self.ready:
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
                self.retry_at = time.monotonic() + delay
                self.bump()
            self._stop.wait(delay)
            with self.lock:
                self.retry_at = None
                self.bump()

    def _session(self, ws):
        """Handshake, then read until the connection ends (raises _SessionEnded)."""
        sock = ws.sock
        sock.settimeout(POLL)
        with self.lock:
            self._ws = ws
        frames = FrameDecoder(expect_masked=False)
        handshake_deadline = time.monotonic() + self.command_timeout
        while not self._stop.is_set():
            try:
                data = sock.recv(READ_SIZE)
            except socket.timeout:
                if not self.ready and time.monotonic() > handshake_deadline:
                    raise _SessionEnded("no hello and snapshot from the server") from None
                self._expire()
                continue
            if not data:
                raise _SessionEnded("connection closed by the server")
            texts = []
            for opcode, payload in frames.feed(data):
                if opcode == OP_TEXT:
                    texts.append(payload)
                elif opcode == OP_CLOSE:
                    raise _SessionEnded("connection closed by the server")
                elif opcode == OP_PING:
                    ws.pong(payload)
            if texts:
                self._dispatch(decode_messages(texts))
                self.flush()
            if frames.violation is not None:
                _close_quietly(ws, frames.violation)
                raise _SessionEnded(f"the server broke the WebSocket framing "
                                    f"(close code {frames.violation})")
            self._expire()

    def _disconnect(self, ws):
        with self.lock:
            self._ws = None
            self.ready = False
            self._outbox = []
            pending, self._pending = self._pending, {}
            self.listener.on_close()
            lost = Reply(False, code="disconnected", message="connection lost")
            for command_ in pending.values():
                command_.finish(lost)
            self.bump()
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
                self.bump()

    # ---- incoming messages -----------------------------------------------------------

    def _dispatch(self, messages):
        """Replies and errors in order; the read's events to the listener at the end, in
        one call (the snapshot that opens the session goes at once, so the listener's
        requests on opening come before anything newer is applied)."""
        with self.lock:
            events = []
            for message in messages:
                if not isinstance(message, dict):
                    continue
                kind = message.get("type")
                payload = message.get("payload")
                if not isinstance(payload, dict):
                    payload = {}
                if kind == "event":
                    name = message.get("name")
                    if name == "hello":
                        self._on_hello(payload)
                    elif name == "snapshot" and not self.ready:
                        self._open(payload)
                    else:
                        events.append((name, payload))
                elif kind in ("ack", "result"):
                    self._on_reply(kind, message.get("id"), payload)
                elif kind == "error":
                    self.listener.on_server_error(payload)
            if events:
                self.listener.on_events(events)
            self.bump()

    def _on_hello(self, payload):
        version = payload.get("protocol_version")
        if version != PROTOCOL_VERSION:
            raise _SessionEnded(f"the server speaks protocol version {version}; "
                                f"this client speaks {PROTOCOL_VERSION}", INCOMPATIBLE)
        self.server = payload

    def _open(self, snapshot):
        self.ready = True
        self.state, self.detail = CONNECTED, ""
        self.connected_at = time.time()
        self.listener.on_open(snapshot)

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


def _close_quietly(ws, code=None):
    """Send a close frame if the socket still takes one."""
    try:
        ws.send_close() if code is None else ws.send_close(code)
    except Exception:
        pass


def _describe_error(exc):
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (socket.timeout, websocket.WebSocketTimeoutException)):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    text = str(exc) or type(exc).__name__
    return text[0].lower() + text[1:] if text else text
