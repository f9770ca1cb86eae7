"""A small FlowLayer protocol V1 server written from the public protocol, for client tests.

It proves the client works against any V1 server, not just ours, and lets a test script
the server side: hold replies back, drop connections, skip log events, answer 401/403.
Plain sockets and threads; one thread per connection.
"""
import base64
import hashlib
import json
import queue
import socket
import threading
import time

from lib.framing import OP_CLOSE, OP_TEXT, FrameDecoder, encode_frame

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
COMMANDS = ["get_snapshot", "get_logs", "start_service", "stop_service", "restart_service",
            "start_all", "stop_all"]
WITH_GET_SERVICES = COMMANDS + ["get_services"]   # a server with SPEC 6.4's get_services


class FakeConnection:
    def __init__(self, sock):
        self.sock = sock
        self._send_lock = threading.Lock()
        self.closed = threading.Event()

    def send(self, message):
        frame = encode_frame(json.dumps(message).encode())
        with self._send_lock:
            try:
                self.sock.sendall(frame)
            except OSError:
                self.closed.set()

    def close(self):
        self.closed.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class FakeV1Server:
    """Serves /ws with hello, snapshot, log events and the 7 commands of protocol V1.

    `commands` is a queue of (connection, message) for every command received. Set
    `handler(conn, message) -> bool` to answer commands yourself (return True when done).
    `reject_status` makes every upgrade fail with that HTTP status. `get_services` (answered
    only when the hello lists it) reports `details[name]` over defaults of the SPEC shape.
    """

    def __init__(self, token="secret", services=None, limit=500, hello=None, port=0):
        self.token = token
        self.services = dict(services or {"api": "running", "db": "ready"})
        self.limit = limit
        self.hello = hello or {"protocol_version": 1, "server": "fake-v1",
                               "capabilities": COMMANDS}
        self.details = {}   # name -> fields of its get_services entry
        self.logs = []
        self.next_seq = 1000
        self.handler = None
        self.reject_status = None
        self.snapshot_gate = None   # an Event: the snapshot waits for it when set
        self.commands = queue.Queue()
        self.connections = []
        self.upgrades = 0
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"
        self.url = f"ws://{self.addr}/ws"
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    # ---- test controls -----------------------------------------------------------------

    def add_log(self, service, message, stream="stdout", broadcast=True):
        """Store an entry (next seq) and send it as a `log` event unless told not to."""
        with self._lock:
            entry = {"seq": self.next_seq, "service": service, "phase": "running",
                     "stream": stream, "message": message,
                     "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())}
            self.next_seq += 1
            self.logs.append(entry)
        if broadcast:
            self.broadcast({"type": "event", "name": "log", "payload": entry})
        return entry

    def set_status(self, service, status, **details):
        """Change a status (and `details` fields of get_services) and send the event."""
        with self._lock:
            self.services[service] = status
            self.details.setdefault(service, {}).update(details)
        self.broadcast({"type": "event", "name": "service_status",
                        "payload": {"service": service, "status": status,
                                    "timestamp": "2026-01-01T00:00:00Z"}})

    def broadcast(self, message):
        for conn in list(self.connections):
            conn.send(message)

    def drop_connections(self):
        for conn in list(self.connections):
            conn.close()
        self.connections.clear()

    def close(self):
        self._stopped = True
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self._listener.close()
        self.drop_connections()

    def query(self, payload):
        """get_logs over the stored entries, as protocol V1 and SPEC 4.3 describe it."""
        payload = payload or {}
        with self._lock:
            entries = [e for e in self.logs
                       if "service" not in payload or e["service"] == payload["service"]]
        if "after_seq" in payload:
            entries = [e for e in entries if e["seq"] > payload["after_seq"]]
        if "before_seq" in payload:
            entries = [e for e in entries if e["seq"] < payload["before_seq"]]
        limit = payload.get("limit", self.limit)
        return {"entries": entries[-limit:], "truncated": len(entries) > limit,
                "effective_limit": limit}

    def service_details(self):
        """get_services data: SPEC 6.4's shape, from `services` and `details`."""
        with self._lock:
            services = [{"name": name, "status": status, "kind": "daemon", "probe": "none",
                         "port": None, "dependsOn": [], "satisfied": status in ("running", "ready"),
                         "pid": None, "exit_code": None, "reason": None, "since": None,
                         "cmd": [name], **self.details.get(name, {})}
                        for name, status in sorted(self.services.items())]
        return {"services": services, "startup": {"state": "done", "summary": None}}

    def reply(self, conn, message, data=None, ok=True, accepted=True, error=None):
        """Send the ack (and the result when accepted) of a command."""
        ack = {"accepted": accepted}
        if not accepted:
            ack["error"] = error
        conn.send({"type": "ack", "id": message["id"], "payload": ack})
        if accepted:
            result = {"ok": ok}
            if data is not None:
                result["data"] = data
            if error is not None and not ok:
                result["error"] = error
            conn.send({"type": "result", "id": message["id"], "payload": result})

    # ---- serving ---------------------------------------------------------------------

    def _accept(self):
        while not self._stopped:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = sock.recv(4096)
            if not chunk:
                sock.close()
                return
            request += chunk
        lines = request.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in lines[1:] if line)}
        status = self.reject_status or self._auth_status(headers.get("authorization"))
        if status:
            body = json.dumps({"error": "unauthorized" if status == 401 else "forbidden"})
            sock.sendall(f"HTTP/1.1 {status} No\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}".encode())
            sock.close()
            return
        accept = base64.b64encode(hashlib.sha1(
            (headers["sec-websocket-key"] + _GUID).encode()).digest()).decode()
        sock.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").encode())
        conn = FakeConnection(sock)
        self.upgrades += 1
        conn.send({"type": "event", "name": "hello", "payload": self.hello})
        if self.snapshot_gate is not None:
            self.snapshot_gate.wait(30)
        with self._lock:
            services = [{"name": n, "status": s} for n, s in sorted(self.services.items())]
            # Subscribed before the snapshot goes out, as a real server does: a test that
            # broadcasts once the client is connected must reach it.
            self.connections.append(conn)
        conn.send({"type": "event", "name": "snapshot", "payload": {"services": services}})
        try:
            for text in _read_frames(sock):
                message = json.loads(text)
                self.commands.put((conn, message))
                if not (self.handler and self.handler(conn, message)):
                    self._answer(conn, message)
        except (OSError, ValueError):
            pass
        conn.closed.set()

    def _auth_status(self, header):
        if not header or not header.lower().startswith("bearer "):
            return 401
        return None if header[7:].strip() == self.token else 403

    def _answer(self, conn, message):
        name, payload = message.get("name"), message.get("payload") or {}
        if name == "get_logs":
            self.reply(conn, message, self.query(payload))
        elif name == "get_snapshot":
            with self._lock:
                services = [{"name": n, "status": s} for n, s in sorted(self.services.items())]
            self.reply(conn, message, {"services": services})
        elif name == "get_services" and name in self.hello["capabilities"]:
            self.reply(conn, message, self.service_details())
        elif name in ("start_service", "restart_service"):
            self.set_status(payload["service"], "running")
            self.reply(conn, message)
        elif name == "stop_service":
            self.set_status(payload["service"], "stopped")
            self.reply(conn, message)
        elif name in ("start_all", "stop_all"):
            self.reply(conn, message)
        else:  # as a V1 server answers a command it does not have (SPEC 5.3)
            self.reply(conn, message, accepted=False, error={
                "code": "unknown_command", "message": f"unknown command {name!r}"})


def _read_frames(sock):
    """Text payloads of the client's (masked) frames until it closes or breaks a rule."""
    decoder = FrameDecoder(expect_masked=True)
    while decoder.violation is None:
        chunk = sock.recv(65536)
        if not chunk:
            raise OSError("closed")
        for opcode, payload in decoder.feed(chunk):
            if opcode == OP_CLOSE:
                return
            if opcode == OP_TEXT:
                yield payload.decode()
