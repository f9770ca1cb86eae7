"""Protocol fuzzing against the real server program: random JSON values and envelopes,
random bytes in text and binary frames, fragmented, truncated, oversize and unframed
input, control frames with payloads, closes in the middle of a message, and a client
that pipelines commands without ever reading the answers.

Every well-framed message must get exactly the answer of SPEC 5.2/5.3, computed here by an
oracle written from the spec (not from lib/protocol.py); the server must stay up, print no
traceback, and keep answering a well-behaved client (the prober) all along. One server per
module; FLOWLAYER_STRESS=1 runs ten times as many examples.
"""
import json
import os
import socket
import struct
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SESSION_TOKEN, Prober, py_cmd, wait_until, watched_session
from lib import session as session_module
from lib.framing import OP_BINARY as BINARY, OP_CLOSE as CLOSE, OP_CONTINUATION as CONTINUATION
from lib.framing import OP_PING as PING, OP_PONG as PONG, OP_TEXT as TEXT
from wsraw import RawClient, frame

STRESS = bool(os.environ.get("FLOWLAYER_STRESS"))
FUZZ = settings(max_examples=600 if STRESS else 60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

SERVICES = {"api": {"cmd": ["sleep", "600"]},
            "job": {"kind": "oneshot", "cmd": ["true"]}}
SNAPSHOT = [{"name": "api", "status": "running"}, {"name": "job", "status": "stopped"}]
LOG_SCOPES = ("api", "job", "flowlayer")
DEFAULT_LIMIT = 5000                       # logs.bufferSize, as nothing else is set
MAX_MESSAGE = 1 << 20
TYPES = ("command", "ack", "result", "event", "error")
COMMANDS = ("get_snapshot", "get_logs", "start_service", "stop_service", "restart_service",
            "start_all", "stop_all")
SERVICE_COMMANDS = ("start_service", "stop_service", "restart_service")


@pytest.fixture(scope="module")
def watched_server(tmp_path_factory):
    yield from watched_session(tmp_path_factory.mktemp("fuzz"), SERVICES)


# ---- frames --------------------------------------------------------------------------------

def connect(watched):
    raw = RawClient(watched.stack.port, SESSION_TOKEN)
    raw.handshake()
    return raw


def next_answer(raw):
    """The next frame that is not an event: (opcode, payload), JSON decoded for text."""
    while True:
        opcode, data = raw.recv_frame()
        if opcode != TEXT:
            return opcode, data
        message = json.loads(data)
        if message["type"] != "event":
            return opcode, message


def close_cleanly(raw):
    raw.sock.sendall(frame(CLOSE, struct.pack(">H", 1000)))
    assert raw.close_code() == 1000
    assert raw.at_eof()
    raw.close()


# ---- the oracle (SPEC 5.2 and 5.3) ---------------------------------------------------------

def _text(value):
    return value if isinstance(value, str) and value.strip() else None


def _int(value, minimum):
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def error(code, message, id=None):
    answer = {"type": "error", "payload": {"code": code, "message": message}}
    if id is not None:
        answer["id"] = id
    return answer


def refusal(id, code, message):
    return {"type": "ack", "id": id,
            "payload": {"accepted": False, "error": {"code": code, "message": message}}}


def decode(data, binary):
    """The JSON object a frame carries, or None for anything else (SPEC 5.2 step 1)."""
    if binary:
        return None
    try:
        value = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def oracle(data, binary=False):
    """(the ack or error the server must answer, a check for the result or None)."""
    message = decode(data, binary)
    if message is None:
        return error("invalid_json", "invalid json message"), None
    id = _text(message.get("id"))
    type_ = _text(message.get("type"))
    if type_ is None:
        return error("missing_type", "type is required", id), None
    if type_ not in TYPES:
        return error("unknown_type", "unknown message type", id), None
    if type_ in ("command", "ack", "result") and id is None:
        return error("missing_id", f"{type_}.id is required"), None
    name = _text(message.get("name"))
    if type_ in ("command", "event") and name is None:
        return error("missing_name", f"{type_}.name is required", id), None
    payload = message.get("payload")
    if type_ != "command":
        well_formed = {
            "event": payload is None or isinstance(payload, dict),
            "ack": isinstance(payload, dict) and isinstance(payload.get("accepted"), bool),
            "result": isinstance(payload, dict) and isinstance(payload.get("ok"), bool),
            "error": isinstance(payload, dict) and isinstance(payload.get("code"), str),
        }[type_]
        if not well_formed:
            return error("invalid_payload", f"{type_}.payload is malformed", id), None
        return error("unsupported_message_type", "only command messages can be routed", id), None
    return command_oracle(id, name, payload)


def command_oracle(id, name, payload):
    if name not in COMMANDS:
        return refusal(id, "unknown_command", f'unknown command "{name}"'), None
    if payload is not None and not isinstance(payload, dict):
        return refusal(id, "invalid_payload", "payload must be an object"), None
    payload = payload or {}
    accepted = {"type": "ack", "id": id, "payload": {"accepted": True}}
    if name in SERVICE_COMMANDS:
        service = payload.get("service")
        if service is None:
            return refusal(id, "invalid_payload", "payload.service is required"), None
        if not isinstance(service, str):
            return refusal(id, "invalid_payload", "payload.service must be a string"), None
        assert service not in SERVICES, "the strategies never touch the real services"
        return refusal(id, "unknown_service", f'service "{service}" is not defined'), None
    if name == "get_snapshot":
        return accepted, lambda result: result == {"ok": True, "data": {"services": SNAPSHOT}}
    assert name == "get_logs", "the strategies never send start_all or stop_all"
    service = payload.get("service")
    if service is not None and not isinstance(service, str):
        return refusal(id, "invalid_payload", "payload.service must be a string"), None
    for key, minimum, relation in (("limit", 1, "> 0"), ("after_seq", 0, ">= 0"),
                                   ("before_seq", 1, "> 0")):
        if payload.get(key) is not None and not _int(payload[key], minimum):
            return refusal(id, "invalid_payload",
                           f"payload.{key} must be an integer {relation}"), None
    after, before = payload.get("after_seq"), payload.get("before_seq")
    if after is not None and before is not None:
        return refusal(id, "invalid_payload", "after_seq and before_seq cannot be combined"), None
    if service is not None and service not in LOG_SCOPES:
        return refusal(id, "unknown_service", f'service "{service}" is not defined'), None
    limit = payload.get("limit") or DEFAULT_LIMIT

    def check(result):
        data = result["data"]
        seqs = [e["seq"] for e in data["entries"]]
        return (result["ok"] is True and set(data) == {"entries", "truncated", "effective_limit"}
                and data["effective_limit"] == limit and len(seqs) <= limit
                and seqs == sorted(set(seqs))
                and all(service in (None, e["service"]) for e in data["entries"])
                and all(s > after for s in seqs if after is not None)
                and all(s < before for s in seqs if before is not None))
    return accepted, check


# ---- strategies ----------------------------------------------------------------------------

scalars = (st.none() | st.booleans() | st.integers(-2 ** 64, 2 ** 64)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
json_values = st.recursive(
    scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids,
                                                                       max_size=4),
    max_leaves=10)


def maybe(good):
    """Mostly the right kind of value for a field, sometimes anything at all."""
    return st.one_of(good, good, json_values)


counts = st.integers(0, 10 ** 6) | st.integers(-2, 2 ** 62)
service_field = maybe(st.sampled_from(LOG_SCOPES + ("nope", "")) | st.text(max_size=8))
payload_fields = st.fixed_dictionaries({}, optional={
    "service": service_field,
    "limit": maybe(counts), "after_seq": maybe(counts), "before_seq": maybe(counts),
    "accepted": maybe(st.booleans()), "ok": maybe(st.booleans()),
    "code": maybe(st.text(max_size=8))})
ids = st.text(min_size=1, max_size=12) | st.sampled_from(["", " ", "\t\n"])
names = st.sampled_from(COMMANDS[:5]) | st.text(max_size=16)
extra_keys = st.dictionaries(st.text(max_size=6), json_values, max_size=2)
envelopes = st.tuples(extra_keys, st.one_of(
    # commands, mostly well formed
    st.fixed_dictionaries({"type": st.just("command"), "id": ids, "name": names},
                          optional={"payload": maybe(payload_fields)}),
    st.fixed_dictionaries({"type": st.just("command"), "id": ids,
                           "name": st.sampled_from(COMMANDS[1:5]),
                           "payload": st.tuples(service_field, payload_fields).map(
                               lambda parts: {**parts[1], "service": parts[0]})}),
    # server messages sent by a client
    st.fixed_dictionaries({"type": st.sampled_from(TYPES[1:])},
                          optional={"id": ids, "name": names, "payload": maybe(payload_fields)}),
    # anything in any field
    st.fixed_dictionaries({}, optional={
        "type": maybe(st.sampled_from(TYPES) | st.text(max_size=8)), "id": maybe(ids),
        "name": maybe(names), "payload": maybe(payload_fields)}),
)).map(lambda parts: {**parts[0], **parts[1]})


def harmless(value):
    """Leave the real services alone: the oracle cannot know what a start or stop does."""
    if not isinstance(value, dict) or value.get("type") != "command":
        return True
    name, payload = value.get("name"), value.get("payload")
    if name in ("start_all", "stop_all"):
        return False
    return not (name in SERVICE_COMMANDS and isinstance(payload, dict)
                and isinstance(payload.get("service"), str) and payload["service"] in SERVICES)


@st.composite
def encoded(draw, values):
    value = draw(values)
    if draw(st.booleans()):
        return json.dumps(value).encode()
    # Raw UTF-8 instead of escapes; a lone surrogate makes the text invalid UTF-8.
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


text_messages = st.one_of(
    *[encoded(envelopes)] * 3,
    encoded(json_values),
    st.binary(max_size=200),
    st.text(max_size=100).map(str.encode),
).filter(lambda data: harmless(decode(data, False)))
messages = st.one_of(*[st.tuples(st.just(TEXT), text_messages)] * 5,
                     st.tuples(st.just(BINARY), st.binary(max_size=200)))


@st.composite
def framed(draw, message):
    """The frames of one message: maybe fragmented, maybe with pings and pongs inside.
    Returns (bytes, ping payloads in order)."""
    opcode, data = message
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=3)))
    pieces = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
    out, pings = b"", []
    for i, piece in enumerate(pieces):
        if i and draw(st.integers(0, 3)) == 0:
            if draw(st.booleans()):
                pings.append(draw(st.binary(max_size=125)))
                out += frame(PING, pings[-1])
            else:
                out += frame(PONG, draw(st.binary(max_size=125)))
        out += frame(opcode if i == 0 else CONTINUATION, piece, fin=i == len(pieces) - 1)
    return out, pings


def split(data, cuts):
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0] + points, points + [len(data)]) if data[a:b]]


# ---- well-framed messages get the answers of the spec ---------------------------------------

@FUZZ
@given(batch=st.lists(messages, min_size=1, max_size=6), data=st.data(),
       chunking=st.one_of(st.just("whole"), st.just("bytes"), st.lists(st.integers(0, 10 ** 6),
                                                                         max_size=8)))
def test_every_message_gets_the_answer_of_the_spec(healthy, batch, data, chunking):
    """A batch of messages, pipelined, fragmented, cut into random TCP writes: acks,
    errors and pongs come back in order, each accepted command gets one result."""
    stream, expected = b"", []
    for opcode, payload in batch:
        frames, pings = data.draw(framed((opcode, payload)))
        stream += frames
        expected += [("pong", ping) for ping in pings]
        head, check = oracle(payload, binary=opcode == BINARY)
        expected.append(("message", head))
        if check is not None:
            expected.append(("result", (head["id"], check)))
    raw = connect(healthy)
    try:
        if chunking == "whole":
            raw.sock.sendall(stream)
        else:
            cuts = range(len(stream)) if chunking == "bytes" else chunking
            for chunk in split(stream, cuts):
                raw.sock.sendall(chunk)
        checks = [item for kind, item in expected if kind == "result"]
        ordered = [(kind, item) for kind, item in expected if kind != "result"]
        got_ordered, got_results = [], []
        while len(got_ordered) < len(ordered) or len(got_results) < len(checks):
            opcode, answer = next_answer(raw)
            if opcode == PONG:
                got_ordered.append(("pong", answer))
            elif opcode == TEXT and answer["type"] == "result":
                got_results.append(answer)
            else:
                assert opcode == TEXT, (opcode, answer)
                got_ordered.append(("message", answer))
        assert got_ordered == ordered
        pending = list(checks)
        for result in got_results:
            match = next((c for c in pending if c[0] == result["id"] and c[1](result["payload"])),
                         None)
            assert match is not None, f"unexpected or wrong result {result}"
            pending.remove(match)
        # Nothing else was queued: the next answer is for the next command.
        raw.sock.sendall(frame(TEXT, b'{"type":"command","id":"last","name":"get_snapshot"}'))
        assert next_answer(raw)[1] == {"type": "ack", "id": "last", "payload": {"accepted": True}}
        close_cleanly(raw)
    finally:
        raw.close()


# ---- frames that are not well formed -------------------------------------------------------

COMMAND = json.dumps({"type": "command", "id": "t", "name": "get_snapshot"}).encode()


@FUZZ
@given(cuts=st.lists(st.integers(1, len(frame(TEXT, COMMAND)) - 1), min_size=1, max_size=4),
       reset=st.booleans())
def test_truncated_frames_hold_nothing_but_their_own_connection(healthy, cuts, reset):
    """Clients that stop in the middle of a frame are idle connections: others are served
    while they wait, and hanging up (FIN or RST) frees them."""
    whole = frame(TEXT, COMMAND)
    stalled = []
    try:
        for cut in cuts:
            raw = connect(healthy)
            raw.sock.sendall(whole[:cut])
            stalled.append(raw)
        healthy.prober.assert_serving()
        # The one that completes its frame late is answered.
        stalled[0].sock.sendall(whole[cuts[0]:])
        assert next_answer(stalled[0])[1]["type"] == "ack"
    finally:
        for raw in stalled:
            if reset:
                raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raw.close()


def test_hung_up_connections_leave_no_thread_or_descriptor_behind(healthy):
    """Connections that hang up in the middle of a frame, with a FIN or a reset, cost the
    server no thread and no descriptor once they are gone."""
    baseline = healthy.stack.usage()
    whole = frame(TEXT, COMMAND)
    for cut in range(1, len(whole)):
        raw = connect(healthy)
        raw.sock.sendall(whole[:cut])
        if cut % 2:
            raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()
    wait_until(lambda: all(now <= then for now, then in zip(healthy.stack.usage(), baseline)),
               message=f"threads and fds back to {baseline}")


@FUZZ
@given(size=st.integers(MAX_MESSAGE + 1, 2 ** 63 - 1), opcode=st.sampled_from([TEXT, BINARY]))
def test_oversize_frame_closes_with_1009_before_its_payload(healthy, size, opcode):
    raw = connect(healthy)
    try:
        raw.sock.sendall(frame(opcode, b"", length=size))   # the header alone
        assert raw.close_code() == 1009
        assert raw.at_eof()
    finally:
        raw.close()


@FUZZ
@given(first=st.integers(0, 65536), size=st.integers(0, 2 ** 63 - 1),
       opcode=st.sampled_from([TEXT, BINARY]))
def test_fragments_adding_up_past_one_mib_close_with_1009(healthy, first, size, opcode):
    size = max(size, MAX_MESSAGE + 1 - first)
    raw = connect(healthy)
    try:
        raw.sock.sendall(frame(opcode, b"x" * first, fin=False)
                         + frame(CONTINUATION, b"", length=size))
        assert raw.close_code() == 1009
        assert raw.at_eof()
    finally:
        raw.close()


def test_length_with_the_top_bit_set_closes_the_connection(healthy):
    raw = connect(healthy)
    try:
        raw.sock.sendall(frame(TEXT, b"", length=2 ** 64 - 1))
        assert raw.close_code() in (1002, 1009)
        assert raw.at_eof()
    finally:
        raw.close()


VALID_CLOSE_CODES = set(range(1000, 1004)) | set(range(1007, 1015)) | set(range(3000, 5000))


def utf8(data):
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


controls = st.one_of(
    st.tuples(st.just("ping"), st.binary(max_size=125)),
    st.tuples(st.just("pong"), st.binary(max_size=125)),
    st.tuples(st.just("close"), st.integers(0, 65535), st.binary(max_size=123)),
    st.tuples(st.just("bare close")),
    st.tuples(st.just("cut close"), st.binary(min_size=1, max_size=1)),
    st.tuples(st.just("long"), st.sampled_from([PING, PONG, CLOSE]), st.integers(126, 4000)),
    st.tuples(st.just("fragmented"), st.sampled_from([PING, PONG, CLOSE]), st.binary(max_size=20)))


@FUZZ
@given(control=controls, inside=st.booleans())
def test_control_frames_with_payloads(healthy, control, inside):
    """Pings are answered with their payload, pongs ignored, closes echoed with their code
    (1002 for a code nobody may send), malformed control frames close with 1002; all of
    it also in the middle of a fragmented message."""
    raw = connect(healthy)
    try:
        before = frame(TEXT, COMMAND[:5], fin=False) if inside else b""
        after = frame(CONTINUATION, COMMAND[5:]) if inside else frame(TEXT, COMMAND)
        kind = control[0]
        if kind in ("ping", "pong"):
            opcode = PING if kind == "ping" else PONG
            raw.sock.sendall(before + frame(opcode, control[1]) + after)
            if kind == "ping":
                assert next_answer(raw) == (PONG, control[1])
            assert next_answer(raw)[1] == {"type": "ack", "id": "t", "payload": {"accepted": True}}
            close_cleanly(raw)
            return
        if kind == "close":
            code, reason = control[1], control[2]
            raw.sock.sendall(before + frame(CLOSE, struct.pack(">H", code) + reason))
            expected = 1002 if code not in VALID_CLOSE_CODES else code if utf8(reason) else 1007
        elif kind == "bare close":
            raw.sock.sendall(before + frame(CLOSE))
            expected = None
        elif kind == "cut close":
            raw.sock.sendall(before + frame(CLOSE, control[1]))
            expected = 1002
        elif kind == "long":
            raw.sock.sendall(before + frame(control[1], b"p" * control[2]))
            expected = 1002
        else:
            raw.sock.sendall(before + frame(control[1], control[2], fin=False))
            expected = 1002
        # The partial message is never answered: the close is the first thing back.
        opcode, data = next_answer(raw)
        assert opcode == CLOSE
        assert (struct.unpack(">H", data)[0] if data else None) == expected
        assert raw.at_eof()
    finally:
        raw.close()


@FUZZ
@given(fragments=st.lists(st.binary(max_size=50), min_size=1, max_size=4),
       opcode=st.sampled_from([TEXT, BINARY]), code=st.sampled_from(sorted(VALID_CLOSE_CODES)))
def test_close_in_the_middle_of_a_fragmented_message(healthy, fragments, opcode, code):
    raw = connect(healthy)
    try:
        stream = b"".join(frame(opcode if i == 0 else CONTINUATION, piece, fin=False)
                          for i, piece in enumerate(fragments))
        raw.sock.sendall(stream + frame(CLOSE, struct.pack(">H", code) + b"bye"))
        assert next_answer(raw) == (CLOSE, struct.pack(">H", code))
        assert raw.at_eof()
    finally:
        raw.close()


@FUZZ
@given(garbage=st.binary(min_size=1, max_size=300))
def test_unframed_garbage_ends_only_its_own_connection(healthy, garbage):
    """Random bytes where frames should be: whatever they decode to, every frame back is a
    well-formed server frame, and once the client hangs up the server does too."""
    raw = connect(healthy)
    try:
        raw.sock.sendall(garbage)
        raw.sock.shutdown(socket.SHUT_WR)
        while True:
            try:
                opcode, data = raw.recv_frame()   # asserts final and unmasked
            except (EOFError, ConnectionResetError):
                break
            if opcode == TEXT:
                assert json.loads(data)["type"] in ("error", "ack", "result", "event")
            elif opcode == CLOSE:   # a garbage close frame is echoed, or refused with 1002
                assert not data or struct.unpack(">H", data)[0] in VALID_CLOSE_CODES
            else:
                assert opcode == PONG
    finally:
        raw.close()


def test_a_message_sent_a_byte_at_a_time_is_answered(healthy):
    raw = connect(healthy)
    try:
        for byte in frame(TEXT, COMMAND):
            raw.sock.sendall(bytes([byte]))
        assert next_answer(raw)[1] == {"type": "ack", "id": "t", "payload": {"accepted": True}}
        assert next_answer(raw)[1] == {"type": "result", "id": "t",
                                       "payload": {"ok": True, "data": {"services": SNAPSHOT}}}
        close_cleanly(raw)
    finally:
        raw.close()


def test_deeply_nested_json_is_invalid_json(healthy):
    raw = connect(healthy)
    try:
        for text in (b"[" * 200_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000):
            raw.sock.sendall(frame(TEXT, text))
            assert next_answer(raw)[1] == error("invalid_json", "invalid json message")
        close_cleanly(raw)
    finally:
        raw.close()


# ---- a client that never reads its answers -------------------------------------------------

CHATTY = "import time\nfor i in range(5000):\n    print(i, 'x' * 150)\ntime.sleep(600)"


def test_client_that_never_reads_its_answers_is_closed_at_the_byte_bound(session_stack):
    """Pipelined get_logs of a megabyte each, never read: the server closes the connection
    once its unread answers pass the byte bound, long before the 10,000-message bound (a
    few hundred megabytes here, gigabytes with more commands), and serves others."""
    stack = session_stack({"chatty": {"cmd": py_cmd(CHATTY)}})
    prober = Prober(stack.url)
    threads = stack.usage()[0]
    raw = RawClient(stack.port, SESSION_TOKEN)
    try:
        wait_until(lambda: any("4999 x" in line for line in stack.server.lines),
                   message="5,000 lines in the store")
        flood = b"".join(frame(TEXT, json.dumps({"type": "command", "id": f"g{i}",
                                                 "name": "get_logs"}).encode())
                         for i in range(20000))
        sender = threading.Thread(target=_send_quietly, args=(raw.sock, flood))
        sender.start()
        line = stack.server.wait_line("session: closing a connection")
        assert "MiB" in line and "stopped reading" in line
        sender.join(30)
        assert raw.at_eof()
        # The commands it had sent but the server had not answered yet are dropped with
        # it: once the connection's threads are gone, the server's peak memory is still
        # far below the gigabytes their answers would take.
        wait_until(lambda: stack.usage()[0] <= threads, message="the connection's threads to end")
        assert peak_rss_mib(stack.pid) < 400
        prober.assert_serving()
        stack.assert_alive()
    finally:
        raw.close()
        prober.close()
    stack.stop()


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def _send_quietly(sock, data):
    try:
        sock.sendall(data)
    except OSError:
        pass   # the server hung up: that is the point


# ---- the server's side of the framing ------------------------------------------------------

class ShortWriter:
    """A socket whose sendmsg accepts a random number of bytes per call."""

    def __init__(self, sizes):
        self.sizes = iter(sizes)
        self.written = b""
        self.calls = []

    def sendmsg(self, buffers):
        self.calls.append(len(buffers))
        data = b"".join(bytes(b) for b in buffers)
        taken = data[:max(1, next(self.sizes, len(data)))]
        self.written += taken
        return len(taken)


@given(frames=st.lists(st.binary(max_size=300), max_size=3000),
       sizes=st.lists(st.integers(1, 5000), max_size=200))
def test_frames_are_written_whole_and_in_order_whatever_each_write_takes(frames, sizes):
    writer = ShortWriter(sizes)
    session_module._send_frames(writer, frames, lambda: False)
    assert writer.written == b"".join(frames)
    assert max(writer.calls, default=0) <= session_module._IOV_MAX
