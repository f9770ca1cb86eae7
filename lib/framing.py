"""WebSocket framing (RFC 6455 section 5): frames out, messages in, close codes.

A leaf: imports nothing from lib, so the server, the client, the tests and the benchmarks
share one reading of the format. No sockets here: the decoder is fed bytes as they arrive
and hands back whole messages, which lets a reader take many frames per system call.
"""

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009
# Close codes a peer may send (RFC 6455 7.4): the defined ones except 1004-1006 and 1015,
# and the ranges of libraries and applications.
SENDABLE_CLOSE_CODES = frozenset([*range(1000, 1004), *range(1007, 1015), *range(3000, 5000)])

_FIN = 0x80
_RSV = 0x70
_OPCODE = 0x0F
_MASKED = 0x80
_LENGTH = 0x7F
_LENGTH_16 = 126
_LENGTH_64 = 127
_MAX_CONTROL = 125
_WHOLE_TEXT = _FIN | OP_TEXT
_WHOLE_BINARY = _FIN | OP_BINARY
_KNOWN_OPCODES = frozenset((OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG))


def encode_frame(payload, opcode=OP_TEXT, *, fin=True, mask=None):
    """One frame; masked with the 4-byte `mask` when given (a client's frames must be)."""
    size = len(payload)
    first = (_FIN if fin else 0) | opcode
    flag = _MASKED if mask is not None else 0
    if size < _LENGTH_16:
        head = bytes((first, flag | size))
    elif size < 1 << 16:
        head = bytes((first, flag | _LENGTH_16)) + size.to_bytes(2, "big")
    else:
        head = bytes((first, flag | _LENGTH_64)) + size.to_bytes(8, "big")
    if mask is None:
        return head + payload
    return head + mask + unmask(payload, mask)


def close_frame(code=None, reason=b""):
    """A close frame with `code` and `reason`, or an empty one when `code` is None."""
    payload = b"" if code is None else code.to_bytes(2, "big") + reason
    return encode_frame(payload, OP_CLOSE)


def close_reply(payload):
    """The answer to a peer's close frame: its code echoed, an empty close for an empty one,
    1002 for half a code or a code no endpoint may send, 1007 for a reason that is not
    UTF-8 (RFC 6455 5.5.1, 7.4)."""
    if not payload:
        return close_frame()
    code = int.from_bytes(payload[:2], "big")
    if len(payload) == 1 or code not in SENDABLE_CLOSE_CODES:
        return close_frame(CLOSE_PROTOCOL_ERROR)
    try:
        payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        return close_frame(CLOSE_INVALID_DATA)
    return close_frame(code)


def unmask(data, mask):
    """XOR with the repeated 4-byte mask, as one big-integer operation rather than per byte."""
    size = len(data)
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(
        size, "little")


class FrameDecoder:
    """Turns a byte stream into messages: `(opcode, payload)` of each whole text or binary
    message (fragments joined) and of each control frame, in order of arrival.

    `expect_masked`: a server requires masked frames, a client unmasked ones.
    `max_message`: bytes of one data message; a longer one is refused from its header on,
    before its payload is buffered. A broken rule sets `violation` to the close code to
    send; the messages before it are still returned, and nothing after it is read.
    """

    def __init__(self, expect_masked, max_message=None):
        self._expect_mask = _MASKED if expect_masked else 0
        self._max_message = max_message
        self._partial = bytearray()  # the start of a frame that has not fully arrived
        self._partial_needs = 0      # its whole size, once its header has arrived
        self._fragments = []
        self._fragment_opcode = None
        self._fragment_size = 0
        self.violation = None

    def feed(self, data):
        """The messages completed by `data`, plus what earlier calls left incomplete."""
        if self.violation is not None:
            return []
        if self._partial:
            self._partial += data
            if len(self._partial) < self._partial_needs:
                return []  # a long frame still arriving: no copy, no parse
            buf = bytes(self._partial)
        else:
            buf = bytes(data)
        size = len(buf)
        pos = 0
        needs = 0  # bytes the first incomplete frame needs, where its header tells
        out = []
        expect_mask = self._expect_mask
        while size - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            length = second & _LENGTH
            start = pos + 2
            if length == _LENGTH_16:
                if size - start < 2:
                    break
                length = int.from_bytes(buf[start:start + 2], "big")
                start += 2
            elif length == _LENGTH_64:
                if size - start < 8:
                    break
                length = int.from_bytes(buf[start:start + 8], "big")
                start += 8
            # The common frame (a whole text or binary message) skips the rule checks.
            whole = ((first == _WHOLE_TEXT or first == _WHOLE_BINARY)
                     and second & _MASKED == expect_mask and self._fragment_opcode is None
                     and (self._max_message is None or length <= self._max_message))
            if not whole:
                code = self._check_header(first, second, first & _OPCODE, length)
                if code is not None:
                    self.violation = code
                    break
            end = start + (4 if expect_mask else 0) + length
            if end > size:
                needs = end - pos
                break
            if expect_mask:
                payload = unmask(buf[start + 4:end], buf[start:start + 4]) if length else b""
            else:
                payload = buf[start:end]
            pos = end
            if whole:
                out.append((first & _OPCODE, payload))
            else:
                self._collect(first & _FIN, first & _OPCODE, payload, out)
        if self.violation is not None or pos == size:
            self._partial = bytearray()
        else:
            self._partial = bytearray(buf[pos:] if pos else buf)
        self._partial_needs = needs
        return out

    def _check_header(self, first, second, opcode, length):
        """The close code a frame's header breaks, or None."""
        if first & _RSV or (second & _MASKED) != self._expect_mask:
            return CLOSE_PROTOCOL_ERROR
        if opcode not in _KNOWN_OPCODES:
            return CLOSE_PROTOCOL_ERROR
        if opcode >= OP_CLOSE:
            return CLOSE_PROTOCOL_ERROR if not first & _FIN or length > _MAX_CONTROL else None
        if (opcode == OP_CONTINUATION) != (self._fragment_opcode is not None):
            return CLOSE_PROTOCOL_ERROR  # a stray continuation, or messages interleaved
        if self._max_message is not None and self._fragment_size + length > self._max_message:
            return CLOSE_TOO_BIG
        return None

    def _collect(self, fin, opcode, payload, out):
        if opcode >= OP_CLOSE:
            out.append((opcode, payload))
        elif opcode == OP_CONTINUATION:
            self._fragments.append(payload)
            self._fragment_size += len(payload)
            if fin:
                out.append((self._fragment_opcode, b"".join(self._fragments)))
                self._fragments, self._fragment_opcode, self._fragment_size = [], None, 0
        elif fin:
            out.append((opcode, payload))
        else:
            self._fragments, self._fragment_opcode = [payload], opcode
            self._fragment_size = len(payload)
