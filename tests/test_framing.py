"""The WebSocket framing leaf: frames out, messages in, the rules that close a connection."""
import json

import pytest
from hypothesis import given, strategies as st

from lib.entry import FILE, LogEntry, entries_json
from lib.framing import (CLOSE_INVALID_DATA, CLOSE_PROTOCOL_ERROR, CLOSE_TOO_BIG, OP_BINARY,
                         OP_CLOSE, OP_CONTINUATION, OP_PING, OP_TEXT, FrameDecoder,
                         close_frame, close_reply, encode_frame, unmask)

MASK = b"\x01\x02\x03\x04"


@given(payloads=st.lists(st.binary(max_size=70_000), min_size=1, max_size=5),
       cut=st.integers(min_value=1, max_value=5000), masked=st.booleans())
def test_messages_survive_any_chunking(payloads, cut, masked):
    stream = b"".join(encode_frame(p, OP_BINARY, mask=MASK if masked else None)
                      for p in payloads)
    decoder = FrameDecoder(expect_masked=masked)
    got = []
    for start in range(0, len(stream), cut):
        got += decoder.feed(stream[start:start + cut])
    assert got == [(OP_BINARY, p) for p in payloads]
    assert decoder.violation is None


def test_fragments_are_joined_around_a_control_frame():
    stream = (encode_frame(b"ab", OP_TEXT, fin=False, mask=MASK)
              + encode_frame(b"p", OP_PING, mask=MASK)
              + encode_frame(b"cd", OP_CONTINUATION, mask=MASK))
    assert FrameDecoder(expect_masked=True).feed(stream) == [(OP_PING, b"p"), (OP_TEXT, b"abcd")]


@pytest.mark.parametrize("frame, code", [
    (encode_frame(b"x", OP_TEXT), CLOSE_PROTOCOL_ERROR),                     # not masked
    (bytes([0x80 | 0x40 | OP_TEXT, 0x80]) + MASK, CLOSE_PROTOCOL_ERROR),     # RSV bit
    (encode_frame(b"", 0x3, mask=MASK), CLOSE_PROTOCOL_ERROR),               # unknown opcode
    (encode_frame(b"x", OP_PING, fin=False, mask=MASK), CLOSE_PROTOCOL_ERROR),
    (encode_frame(b"x" * 126, OP_PING, mask=MASK), CLOSE_PROTOCOL_ERROR),
    (encode_frame(b"x", OP_CONTINUATION, mask=MASK), CLOSE_PROTOCOL_ERROR),  # stray
    (bytes([0x80 | OP_TEXT, 0x80 | 127]) + (1 << 40).to_bytes(8, "big"), CLOSE_TOO_BIG),
])
def test_broken_rules_set_the_close_code_and_keep_earlier_messages(frame, code):
    decoder = FrameDecoder(expect_masked=True, max_message=1 << 20)
    good = encode_frame(b"ok", OP_TEXT, mask=MASK)
    assert decoder.feed(good + frame + good) == [(OP_TEXT, b"ok")]
    assert decoder.violation == code
    assert decoder.feed(good) == []


def test_a_client_refuses_masked_frames():
    decoder = FrameDecoder(expect_masked=False)
    assert decoder.feed(encode_frame(b"x", mask=MASK)) == []
    assert decoder.violation == CLOSE_PROTOCOL_ERROR


def test_size_limit_counts_the_whole_fragmented_message():
    decoder = FrameDecoder(expect_masked=True, max_message=10)
    decoder.feed(encode_frame(b"x" * 6, OP_TEXT, fin=False, mask=MASK))
    decoder.feed(encode_frame(b"x" * 5, OP_CONTINUATION, mask=MASK)[:2])
    assert decoder.violation == CLOSE_TOO_BIG


@pytest.mark.parametrize("payload, reply", [
    (b"", close_frame()),
    (b"\x03", close_frame(CLOSE_PROTOCOL_ERROR)),
    ((1005).to_bytes(2, "big"), close_frame(CLOSE_PROTOCOL_ERROR)),
    ((3000).to_bytes(2, "big") + b"bye", close_frame(3000)),
    ((1000).to_bytes(2, "big") + b"\xff", close_frame(CLOSE_INVALID_DATA)),
])
def test_close_reply(payload, reply):
    assert close_reply(payload) == reply
    assert FrameDecoder(expect_masked=False).feed(reply)[0][0] == OP_CLOSE


def test_unmask_is_its_own_inverse():
    data = bytes(range(256)) * 3 + b"xyz"
    assert unmask(unmask(data, MASK), MASK) == data
    assert unmask(data, MASK)[:4] == bytes(a ^ b for a, b in zip(data[:4], MASK))


@given(st.lists(st.tuples(st.sampled_from(["api", "d\u00e9j\u00e0", 'q"t']),
                          st.sampled_from(["stdout", "stderr"]), st.text()), max_size=20))
def test_entry_encoders_match_json_dumps(rows):
    entries = [LogEntry(i, service, "running", stream, message, "2026-12-02T10:00:00.000+00:00")
               for i, (service, stream, message) in enumerate(rows)]
    assert entries_json(entries) == [json.dumps(e.as_dict(), separators=(",", ":"))
                                     for e in entries]
    assert entries_json(entries, FILE) == [json.dumps(e.as_dict()) for e in entries]
