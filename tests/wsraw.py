"""The raw WebSocket client of the tests and the benchmarks: a plain socket past the upgrade,
client frames built on lib/framing.py, and deliberately broken frames (wrong RSV bits, a
lying length, no mask) that no WebSocket library will send.

Importable from bench/ too (`sys.path` gets tests/): one copy of the format outside lib/.
"""
import base64
import json
import os
import socket
import struct

from lib import framing
from lib.framing import OP_CLOSE, OP_TEXT

MASK = b"\xa5\x5a\x3c\xc3"  # a fixed mask keeps generated frames reproducible


def frame(opcode, payload=b"", fin=True, mask=MASK, length=None, rsv=0):
    """A client frame. Well formed by default (masked, true length: lib/framing's encoder);
    `mask=None` leaves it unmasked, `length` declares a length other than the payload's,
    `rsv` sets reserved bits (0x70 mask of the first byte)."""
    if length is None and not rsv:
        return framing.encode_frame(payload, opcode, fin=fin, mask=mask)
    size = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    bit = 0x80 if mask is not None else 0
    if size < 126:
        head += bytes([bit | size])
    elif size < 1 << 16:
        head += bytes([bit | 126]) + size.to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + size.to_bytes(8, "big")
    if mask is None:
        return head + payload
    return head + mask + framing.unmask(payload, mask)


def command_message(ident, name, payload=None):
    message = {"type": "command", "id": ident, "name": name}
    if payload is not None:
        message["payload"] = payload
    return json.dumps(message).encode()


def upgrade(port, token, host="127.0.0.1", rcvbuf=None, timeout=20):
    """A socket past the WebSocket upgrade of /ws, the response head, and the bytes that
    came after it (frames already sent by the server)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1 << 16)
        if not chunk:
            sock.close()
            raise ConnectionError("the server closed the connection during the upgrade")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    return sock, head, rest


class RawClient:
    """A WebSocket session on a plain socket, one frame at a time."""

    def __init__(self, port, token, rcvbuf=None, host="127.0.0.1"):
        self.sock, head, self.buffer = upgrade(port, token, host, rcvbuf)
        assert head.startswith(b"HTTP/1.1 101 "), head
        self._ids = 0

    def close(self):
        self.sock.close()

    def _recv(self):
        data = self.sock.recv(1 << 20)
        if not data:
            raise EOFError
        return data

    def send_frame(self, opcode, payload=b"", fin=True, masked=True, rsv=0):
        self.sock.sendall(frame(opcode, payload, fin, os.urandom(4) if masked else None,
                                rsv=rsv))

    def send_text(self, text):
        self.send_frame(OP_TEXT, text.encode())

    def _take(self, size):
        while len(self.buffer) < size:
            self.buffer += self._recv()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def recv_frame(self):
        """(opcode, payload) of the next server frame."""
        first, second = self._take(2)
        assert first & 0x80 and not second & 0x80, "server frames are final and unmasked"
        size = second & 0x7F
        if size == 126:
            size = struct.unpack(">H", self._take(2))[0]
        elif size == 127:
            size = struct.unpack(">Q", self._take(8))[0]
        return first & 0x0F, self._take(size)

    def recv_json(self):
        opcode, data = self.recv_frame()
        assert opcode == OP_TEXT
        return json.loads(data)

    def handshake(self):
        assert [self.recv_json()["name"] for _ in range(2)] == ["hello", "snapshot"]

    def command(self, name, payload=None):
        """Send a command and return its result message (events and the ack skipped)."""
        self._ids += 1
        ident = f"raw{self._ids}"
        self.send_frame(OP_TEXT, command_message(ident, name, payload))
        while True:
            message = self.recv_json()
            if message.get("type") == "result" and message.get("id") == ident:
                return message

    def at_eof(self):
        """True once the server has closed the TCP connection."""
        try:
            while True:
                self._recv()
        except (EOFError, ConnectionResetError):
            return True

    def close_code(self):
        """Skip frames up to the server's close frame and return its code."""
        while True:
            opcode, data = self.recv_frame()
            if opcode == OP_CLOSE:
                return struct.unpack(">H", data[:2])[0] if data else None
