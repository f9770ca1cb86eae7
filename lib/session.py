"""The session API server (SPEC 5): HTTP routes and auth, WebSocket connections, events.

Built on websocket-server's skeleton (`WebsocketServer`: ThreadingMixIn + TCPServer, one
daemon thread per connection) and its frame constants and handshake response; the parts
of it that are unfit (handshake, frame reader, sender, broadcast) are replaced here.

Threads: the accept loop; per connection, a reader (the handler thread: handshake, frames,
dispatch) and a sender that drains the connection's outbox, many frames per socket write;
one worker per running command except get_snapshot, so commands never wait on each other;
one broadcaster that turns captured log lines into frames once for every connection.
Nothing but a connection's own sender ever blocks on its socket.
"""
import base64
import errno
import json
import logging
import socket
import struct
import threading
import time
from collections import deque
from hmac import compare_digest
from http import HTTPStatus
from socketserver import BaseRequestHandler, TCPServer

from . import commands, protocol
from .framing import (CLOSE_GOING_AWAY, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, FrameDecoder,
                      close_frame, close_reply, encode_frame)
from .logstore import chunk_bytes, first_within
from .protocol import ProtocolError
from .runtime import Reconfigured


def _import_websocket_server():
    """Import websocket_server without the root-logger setup its import does, which would
    put every library's warnings on stderr in its own format; the program owns logging."""
    root = logging.getLogger()
    before = list(root.handlers)
    import websocket_server
    for handler in root.handlers[:]:
        if handler not in before:
            root.removeHandler(handler)
    return websocket_server


_ws = _import_websocket_server()
logger = logging.getLogger(__name__)

MAX_MESSAGE = 1 << 20          # bytes of one client message; more closes with 1009
MAX_BACKLOG = 10_000           # undroppable frames queued for a connection before it is closed
MAX_BACKLOG_BYTES = 64 << 20   # or bytes of them (a get_logs result can be megabytes)
LOG_BACKLOG_BYTES = 8 << 20    # bytes of log frames queued for a connection; more are dropped
LOG_BLOB_BYTES = 64 << 10      # the broadcaster hands log frames over in blobs of about this
LOG_TAKE_BYTES = 64 << 10      # log bytes a sender writes between two looks at the other lane
LOG_SLICE = 1024               # entries the broadcaster turns into frames at a time
LOG_QUEUE_BYTES = 4 << 20      # chunk_bytes() of lines waiting for the broadcaster; more are dropped
HEAD_TIMEOUT = 5.0             # seconds to receive a request's line and headers
MAX_HEAD = 32 << 10            # bytes of a request's line and headers
CLOSE_TIMEOUT = 2.0            # seconds a closing connection may take to flush and hang up
ACCEPT_POLL = 0.2              # seconds between the accept loop's shutdown checks
SEND_POLL_US = 100_000         # microseconds between checks for a cut while a client does not read
_IOV_MAX = 1024                # buffers per sendmsg() call (the Linux limit)
_READ_SIZE = 1 << 16           # bytes asked of a connection's socket per read



# ---- frames --------------------------------------------------------------------------------

def _message_frame(message):
    return encode_frame(protocol.encode(message).encode("ascii"))


def _log_frames(entries):
    """The `log` event frames of `entries`, back to back in one bytes object."""
    return b"".join([encode_frame(text.encode("ascii"))
                     for text in protocol.log_events_json(entries)])


def _send_frames(sock, frames, cut):
    """Write frames back to back, many per system call, without first joining them: a
    joined backlog (up to megabytes, on every connection's thread) is what made the C
    allocator's footprint grow under steady load, although Python freed each buffer.
    While the client does not read, a write times out every SEND_POLL_US (the socket's
    send timeout) and `cut()` is asked; when it says so the write ends with
    ConnectionAbortedError."""
    views = [memoryview(frame) for frame in frames]
    first = 0
    while first < len(views):
        try:
            sent = sock.sendmsg(views[first:first + _IOV_MAX])
        except BlockingIOError:
            if cut():
                raise ConnectionAbortedError("connection cut") from None
            continue
        while first < len(views) and sent >= len(views[first]):
            sent -= len(views[first])
            first += 1
        if sent:
            views[first] = views[first][sent:]


_HELLO = _message_frame(protocol.hello(commands.NAMES))


class _HttpError(Exception):
    """A plain HTTP answer instead of a session: status and a small JSON error body."""

    def __init__(self, status, message, headers=""):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def _head_end(data):
    """(end of the head, start of what follows) in `data`, or None while incomplete. A bare
    LF ends a line as CRLF does (RFC 9112 2.2)."""
    ends = [(i, i + len(mark)) for mark in (b"\r\n\r\n", b"\n\n", b"\n\r\n")
            if (i := data.find(mark)) >= 0]
    return min(ends) if ends else None


def _read_head(sock):
    """The request line and headers, and the bytes received after them.

    Bounded in time and size, so a slow or endless request cannot hold the thread.
    """
    deadline = time.monotonic() + HEAD_TIMEOUT
    data = bytearray()
    while True:
        end = _head_end(data)
        if end is not None:
            return data[:end[0]].decode("latin-1"), bytes(data[end[1]:])
        if len(data) > MAX_HEAD:
            raise _HttpError(431, "request headers are too large")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _HttpError(408, "request headers not received in time")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(8192)
        except TimeoutError:
            raise _HttpError(408, "request headers not received in time") from None
        if not chunk:
            raise ConnectionAbortedError("client left before its request was complete")
        data += chunk


# Fields that must come once: a second Authorization or Host could mean two different things
# to two parsers (RFC 9110 5.3, RFC 9112 3.2), and the handshake fields have one value.
_SINGLE_FIELDS = ("authorization", "host", "sec-websocket-key", "sec-websocket-version")
_FIELD_NAME = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")  # RFC 9110 5.6.2


def _parse_head(head):
    """(method, path, headers with lower-case names) of a request head. A field that is
    repeated is joined with commas (RFC 9110 5.3), except the _SINGLE_FIELDS: 400."""
    lines = [line[:-1] if line.endswith("\r") else line for line in head.split("\n")]
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _HttpError(400, "malformed request line")
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        name = name.lower()
        if not colon or not name or not _FIELD_NAME.issuperset(name):
            # also whitespace before the colon and folded lines (RFC 9112 5.1, 5.2)
            raise _HttpError(400, "malformed header line")
        value = value.strip(" \t")
        if name in headers:
            if name in _SINGLE_FIELDS:
                raise _HttpError(400, f"repeated {name} header")
            value = f"{headers[name]}, {value}"
        headers[name] = value
    if parts[2] != "HTTP/1.0" and "host" not in headers:
        raise _HttpError(400, "missing Host header")   # required since HTTP/1.1 (RFC 9112 3.2)
    return parts[0], parts[1].split("?", 1)[0], headers


def _check_auth(headers, token):
    """401 without a Bearer credential, 403 with a wrong one (compared in constant time)."""
    scheme, _, credential = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise _HttpError(401, "a bearer token is required", "WWW-Authenticate: Bearer\r\n")
    if not compare_digest(credential.strip().encode("latin-1"), token.encode("utf-8")):
        raise _HttpError(403, "invalid token")


def _websocket_key(headers):
    """The Sec-WebSocket-Key of a valid upgrade request: base64 of 16 bytes (RFC 6455 4.1);
    400 otherwise."""
    upgrade = headers.get("upgrade", "").lower()
    connection = [word.strip() for word in headers.get("connection", "").lower().split(",")]
    key = headers.get("sec-websocket-key", "")
    if (upgrade != "websocket" or "upgrade" not in connection or not key
            or headers.get("sec-websocket-version") != "13"):
        raise _HttpError(400, "expected a WebSocket upgrade (version 13)")
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        valid = False
    if not valid:
        raise _HttpError(400, "Sec-WebSocket-Key is not the base64 of 16 bytes")
    return key


def _respond(sock, status, body, headers=""):
    data = json.dumps(body).encode("ascii")
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            f"{headers}Connection: close\r\n\r\n")
    sock.sendall(head.encode("ascii") + data)


def _hang_up(sock):
    """Half-close, then read what the client still sends until it closes too (bounded):
    closing with unread input would reset the connection and could lose our last bytes."""
    deadline = time.monotonic() + CLOSE_TIMEOUT
    try:
        sock.shutdown(socket.SHUT_WR)
        while (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            if not sock.recv(65536):
                return
    except OSError:
        pass


# ---- one connection ------------------------------------------------------------------------

class _Outbox:
    """The frames waiting for one connection's sender, in two lanes.

    Replies, acks and events other than `log` are never dropped and always go first, in
    their order; log blobs follow, LOG_TAKE_BYTES at a time, so a reply waits behind at most
    that much of them. Log blobs are dropped (their lines counted in `dropped_lines`; a
    client gets them back with `get_logs` `after_seq`) when the queued log bytes would pass
    LOG_BACKLOG_BYTES. `put` returns False once more than MAX_BACKLOG undroppable frames,
    or more than MAX_BACKLOG_BYTES of them (a lone frame aside, however large), wait.
    Nothing reaches the sender before `release`, which puts hello and snapshot first.
    """

    def __init__(self):
        self._ready = threading.Condition(threading.Lock())
        self._frames = []        # the undroppable lane
        self._logs = deque()     # log blobs
        self._log_bytes = 0
        self.dropped_lines = 0
        self._backlog_bytes = 0
        self._released = False
        self._closed = False
        self._final = None

    def put(self, frame):
        with self._ready:
            if self._closed:
                return True
            self._frames.append(frame)
            self._backlog_bytes += len(frame)
            self._ready.notify()
            backlog = len(self._frames)
            return backlog <= MAX_BACKLOG and (
                backlog == 1 or self._backlog_bytes <= MAX_BACKLOG_BYTES)

    def offer(self, blob, lines):
        """Queue a blob of `lines` log frames, or drop and count it when the log backlog is
        full."""
        with self._ready:
            if self._closed:
                return
            if self._log_bytes + len(blob) > LOG_BACKLOG_BYTES:
                self.dropped_lines += lines
                return
            self._logs.append(blob)
            self._log_bytes += len(blob)
            self._ready.notify()

    def release(self, first):
        with self._ready:
            self._frames[:0] = first
            self._released = True
            self._ready.notify()

    def drop(self):
        """No more frames, and those queued are thrown away: the connection is being cut."""
        with self._ready:
            self._closed = True
            self._frames = []
            self._logs.clear()
            self._ready.notify()

    def close(self, final=None):
        """No more frames; the sender writes what is queued, then `final` if given."""
        with self._ready:
            self._closed = True
            self._final = final
            self._ready.notify()

    def take(self):
        """Block until frames are due; return (frames, whether they are the last): every
        undroppable frame, then log blobs up to LOG_TAKE_BYTES (all of them at the end)."""
        with self._ready:
            while not self._closed and not (self._released and (self._frames or self._logs)):
                self._ready.wait()
            if not self._released:
                return ([self._final] if self._final is not None else []), True
            frames, self._frames, self._backlog_bytes = self._frames, [], 0
            taken = 0
            while self._logs and (self._closed or taken < LOG_TAKE_BYTES):
                blob = self._logs.popleft()
                frames.append(blob)
                taken += len(blob)
            self._log_bytes -= taken
            last = self._closed and not self._logs
            if last and self._final is not None:
                frames.append(self._final)
            return frames, last


class _Connection:
    """One WebSocket session: reads and dispatches client messages on the handler thread;
    its sender thread writes the outbox."""

    def __init__(self, server, sock, received):
        self.server = server
        self.sock = sock
        self.outbox = _Outbox()
        self._received = received      # bytes that came with the handshake
        self._decoder = FrameDecoder(expect_masked=True, max_message=MAX_MESSAGE)
        self._going_away = False
        self._aborted = False
        self._sender = threading.Thread(target=self._send_loop, name="session-sender",
                                        daemon=True)
        # A send blocked on a client that does not read wakes up now and then (receives
        # are not affected), so that the sender sees when the connection is to be cut.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                        struct.pack("ll", 0, SEND_POLL_US))

    def run(self):
        runtime = self.server.runtime
        token, services = runtime.subscribe(self._on_status)
        final = None
        try:
            self._sender.start()
            self.outbox.release([_HELLO, _message_frame(protocol.snapshot_event(services))])
            self.server._register(self)
            final = self._read_loop()
        finally:
            runtime.unsubscribe(token)
            self._finish(final)
            self.server._unregister(self)

    def going_away(self):
        """Server shutdown: end the reader (it sends close 1001 on its way out)."""
        self._going_away = True
        self._shutdown(socket.SHUT_RD)

    def abort(self):
        """Cut the connection at once: its client stopped reading, or its socket failed."""
        self._shutdown(socket.SHUT_RDWR)

    def _shutdown(self, how):
        try:
            self.sock.shutdown(how)
        except OSError:
            pass

    def _finish(self, final):
        self.outbox.close(final)
        self._sender.join(CLOSE_TIMEOUT)
        if self._sender.is_alive():   # stuck on a client that does not read
            self.abort()
            self._sender.join()
        if final is not None:
            _hang_up(self.sock)

    # -- sending

    def _send_loop(self):
        """Write the outbox until its last frame. Cut the connection when a write fails
        or when `_put` marked it (logged here, on the connection's own thread)."""
        try:
            while True:
                frames, last = self.outbox.take()
                if frames:
                    _send_frames(self.sock, frames, lambda: self._aborted)
                if last:
                    break
        except OSError:
            self.abort()
        if self._aborted:
            logger.warning("session: closing a connection with more than %d messages or "
                           "%d MiB waiting (its client stopped reading)", MAX_BACKLOG,
                           MAX_BACKLOG_BYTES >> 20)
            self.abort()

    def _send(self, message):
        self._put(_message_frame(message))

    def _put(self, frame):
        """Queue a frame. Past the backlog limits the connection is only marked to be cut
        and its queue dropped: this runs on any thread (the runtime's, under its lock), so
        the sender, the connection's own thread, logs and closes the socket."""
        if not self.outbox.put(frame) and not self._aborted:
            self._aborted = True
            self.outbox.drop()

    def _on_status(self, event):
        """Runtime subscriber: called under the runtime lock, so it only enqueues."""
        frame = self.server._status_frame(event)
        if frame is not None:
            self._put(frame)

    # -- reading

    def _read_loop(self):
        """Read messages until the connection ends; return the close frame to send last.
        Once the connection is cut, the commands already received are left unanswered."""
        decoder = self._decoder
        messages = decoder.feed(self._received)
        try:
            while True:
                for opcode, data in messages:
                    if self._aborted:
                        return None
                    if opcode == OP_CLOSE:
                        return close_reply(data)
                    if opcode == OP_PING:
                        self._put(encode_frame(data, OP_PONG))
                    elif opcode != OP_PONG:
                        self._on_message(opcode, data)
                if decoder.violation is not None:
                    return close_frame(decoder.violation)
                chunk = self.sock.recv(_READ_SIZE)
                if not chunk:
                    break
                messages = decoder.feed(chunk)
        except OSError:
            pass
        return close_frame(CLOSE_GOING_AWAY) if self._going_away else None

    # -- commands

    def _on_message(self, opcode, data):
        try:
            command = protocol.parse_message(data, binary=opcode == OP_BINARY)
        except ProtocolError as exc:
            self._send(protocol.error(exc.code, exc.message, exc.id))
            return
        self._dispatch(command)

    def _dispatch(self, command):
        """Ack at once (SPEC 5.3), then answer: inline or on a worker, per the table."""
        id = command.id
        try:
            work, inline = commands.prepare(self.server, command)
        except ProtocolError as exc:
            self._send(protocol.ack(id, exc.code, exc.message))
            return
        self._send(protocol.ack(id))
        if inline:
            self._put(encode_frame(work().encode("ascii")))
        else:
            self._in_worker(id, work)

    def _in_worker(self, id, work):
        """Run `work` (which returns the result's JSON text) on its own thread; a command
        still waiting to run when its connection is cut is left undone."""
        def run():
            if self._aborted:
                return
            try:
                text = work()
            except Exception as exc:   # a bug must still answer the command
                logger.exception("session: command %s failed", id)
                text = protocol.encode(protocol.result_error(
                    id, protocol.INTERNAL_ERROR, f"internal error: {exc}"))
            self._put(encode_frame(text.encode("ascii")))
        threading.Thread(target=run, name="session-command", daemon=True).start()


# ---- the server ----------------------------------------------------------------------------

class _Handler(BaseRequestHandler):
    """One accepted socket: route and authorize the request, then run the session."""

    def handle(self):
        sock = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        session = self.server.session
        try:
            head, received = _read_head(sock)
            method, path, headers = _parse_head(head)
            _check_auth(headers, session.token)
            if path not in ("/health", "/ws"):
                raise _HttpError(404, f"no route {path}")
            if method != "GET":
                raise _HttpError(405, f"method {method} not allowed", "Allow: GET\r\n")
            if path == "/health":
                _respond(sock, 200, {"ok": True})
                _hang_up(sock)
                return
            key = _websocket_key(headers)
            sock.settimeout(None)
            sock.sendall(_ws.WebSocketHandler.make_handshake_response(key).encode("ascii"))
        except _HttpError as exc:
            try:
                _respond(sock, exc.status, {"ok": False, "error": {
                    "code": HTTPStatus(exc.status).phrase.lower().replace(" ", "_"),
                    "message": exc.message}}, exc.headers)
            except OSError:
                return
            _hang_up(sock)
            return
        except OSError:
            return
        _Connection(session, sock, received).run()


class _TcpServer(_ws.WebsocketServer):
    """websocket-server's ThreadingMixIn + TCPServer skeleton with our handler.

    Its own constructor is skipped: it fixes the handler class and takes TLS options we
    must never pass (on Python >= 3.12 they silently serve plain text).
    """

    block_on_close = False       # connections are ended by SessionServer.close()
    request_queue_size = 128

    def __init__(self, session, host, port):
        self.session = session
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._out_of_descriptors = False
        TCPServer.__init__(self, (host, port), _Handler)

    def get_request(self):
        """Accept a connection. Out of file descriptors, the listening socket stays readable
        and every accept fails at once: warn once and pause, rather than spin on a core
        until connections close; the clients waiting meanwhile are accepted then."""
        try:
            accepted = TCPServer.get_request(self)
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                if not self._out_of_descriptors:
                    logger.warning("session: out of file descriptors (%s): new connections "
                                   "wait until some close", exc.strerror)
                self._out_of_descriptors = True
                time.sleep(ACCEPT_POLL)
            raise
        self._out_of_descriptors = False
        return accepted

    def handle_error(self, request, client_address):
        logger.exception("session: unexpected error on a connection from %s", client_address)


class SessionServer:
    """The session API of one runtime (SPEC 5); see the module docstring for its threads."""

    def __init__(self, runtime, store, config, host, port, token):
        self.runtime = runtime
        self.store = store
        self.config = config
        self.host = host
        self.port = port
        self.token = token
        self.log_scopes = frozenset(config.services) | {protocol.SERVER_LOG_SCOPE}
        self._lock = threading.Lock()
        self._no_connections = threading.Condition(self._lock)
        self._connections = ()         # replaced as a whole, so readers need no lock
        self._closing = False
        self._last_status = (None, b"")
        self._log_ready = threading.Condition(threading.Lock())
        self._log_queue = deque()      # entry chunks for the broadcaster; None ends it
        self._log_queued = 0           # chunk_bytes() of them
        self.dropped_lines = 0         # lines lost to every client: the broadcaster was behind
        self._tcp = None
        self._threads = []
        self._store_token = None

    @property
    def url(self):
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}/ws"

    def start(self):
        """Bind (OSError when the address is taken) and serve on daemon threads."""
        self._tcp = _TcpServer(self, self.host, self.port)
        self.port = self._tcp.server_address[1]
        self._store_token = self.store.subscribe(self._on_logs)
        self._threads = [
            threading.Thread(target=self._tcp.serve_forever, args=(ACCEPT_POLL,),
                             name="session-accept", daemon=True),
            threading.Thread(target=self._broadcast_logs, name="session-broadcast",
                             daemon=True)]
        for thread in self._threads:
            thread.start()

    def close(self):
        """Stop accepting, close every connection (code 1001), stop the threads."""
        with self._lock:
            if self._closing or self._tcp is None:
                return
            self._closing = True
            connections = self._connections
        self._tcp.shutdown()
        self._tcp.server_close()
        self.store.unsubscribe(self._store_token)
        with self._log_ready:
            self._log_queue.append(None)
            self._log_ready.notify()
        for connection in connections:
            connection.going_away()
        with self._lock:
            self._no_connections.wait_for(lambda: not self._connections, 2 * CLOSE_TIMEOUT)
        for thread in self._threads:
            thread.join()

    def _register(self, connection):
        with self._lock:
            self._connections += (connection,)
            if self._closing:
                connection.going_away()

    def _unregister(self, connection):
        with self._lock:
            self._connections = tuple(c for c in self._connections if c is not connection)
            self._no_connections.notify_all()

    def _status_frame(self, event):
        """The frame of a runtime event, encoded once for all connections: the runtime
        calls every subscriber with the same event, one event at a time. A reload that
        changed the set of services is a fresh `snapshot` (same shape as on connect), so
        a client that knows nothing of reload shows the new list; other reloads send
        nothing (their status events say what changed)."""
        last_event, frame = self._last_status
        if event is not last_event:
            if isinstance(event, Reconfigured):
                frame = (_message_frame(protocol.snapshot_event(event.services))
                         if event.listed else None)
            else:
                frame = _message_frame(protocol.status_event(*event))
            self._last_status = (event, frame)
        return frame

    def follow(self, config):
        """After a reload: get_logs follows the new config's limits and names; a removed
        service's name stays, since its history is still served. Only assigns, so it may
        run under the runtime lock."""
        self.config = config
        self.log_scopes = self.log_scopes | frozenset(config.services)

    def _on_logs(self, entries):
        """Store subscriber: called under the store lock, so it only enqueues what fits in
        LOG_QUEUE_BYTES (a first line always fits an empty queue) and counts the rest."""
        if self._connections:
            with self._log_ready:
                part, size = first_within(entries, LOG_QUEUE_BYTES - self._log_queued,
                                          empty=not self._log_queue)
                self.dropped_lines += len(entries) - len(part)
                if part:
                    self._log_queue.append(part)
                    self._log_queued += size
                    self._log_ready.notify()

    def _next_logs(self, wait):
        """The next chunk for the broadcaster (None: closing), or False when none is queued
        and `wait` is false."""
        with self._log_ready:
            if not self._log_queue:
                if not wait:
                    return False
                self._log_ready.wait_for(lambda: self._log_queue)
            entries = self._log_queue.popleft()
            if entries is not None:
                self._log_queued -= chunk_bytes(entries)
            return entries

    def _broadcast_logs(self):
        """Encode captured lines once, in blobs of about LOG_BLOB_BYTES, and offer each blob
        to every connection. A chunk is encoded LOG_SLICE entries at a time: one read of a
        flood holds 32,768 lines, whose frames must never all exist at once."""
        parts, size, lines = [], 0, 0
        while True:
            entries = self._next_logs(wait=not parts)
            if not entries:   # nothing more queued for now (False), or closing (None)
                if parts:
                    self._offer(b"".join(parts), lines)
                    parts, size, lines = [], 0, 0
                if entries is None:
                    return
                continue
            for start in range(0, len(entries), LOG_SLICE):
                piece = entries[start:start + LOG_SLICE]
                parts.append(_log_frames(piece))
                size += len(parts[-1])
                lines += len(piece)
                if size >= LOG_BLOB_BYTES:
                    self._offer(b"".join(parts), lines)
                    parts, size, lines = [], 0, 0

    def _offer(self, blob, lines):
        for connection in self._connections:
            connection.outbox.offer(blob, lines)
