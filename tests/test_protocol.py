"""protocol.py: validation order of SPEC 5.2 and the hand-built JSON of log entries."""
import json

import pytest
from hypothesis import given, strategies as st

from lib import protocol
from lib.logstore import LogEntry
from lib.protocol import ProtocolError, parse_message


def refusal(text, binary=False):
    with pytest.raises(ProtocolError) as info:
        parse_message(text, binary=binary)
    return info.value.code, info.value.message, info.value.id


@pytest.mark.parametrize("text", ["nope", "[1]", '"text"', "3", "null", "{", "", "\xff"])
def test_not_a_json_object_is_invalid_json(text):
    assert refusal(text) == ("invalid_json", "invalid json message", None)


def test_binary_and_bad_utf8_are_invalid_json():
    assert refusal(b'{"type":"command"}', binary=True)[0] == "invalid_json"
    assert refusal(b'{"type":"\xff"}')[0] == "invalid_json"
    assert refusal("[" * 100000)[0] == "invalid_json"


@pytest.mark.parametrize("message, expected", [
    ({}, ("missing_type", "type is required", None)),
    ({"type": 5, "id": "a"}, ("missing_type", "type is required", "a")),
    ({"type": "  ", "id": "a"}, ("missing_type", "type is required", "a")),
    ({"type": "bogus", "id": "a"}, ("unknown_type", "unknown message type", "a")),
    ({"type": "Command", "id": "a", "name": "x"}, ("unknown_type", "unknown message type", "a")),
    ({"type": "command", "name": "get_snapshot"}, ("missing_id", "command.id is required", None)),
    ({"type": "command", "id": " ", "name": "x"}, ("missing_id", "command.id is required", None)),
    ({"type": "command", "id": 7, "name": "x"}, ("missing_id", "command.id is required", None)),
    ({"type": "command", "id": "a"}, ("missing_name", "command.name is required", "a")),
    ({"type": "command", "id": "a", "name": ""}, ("missing_name", "command.name is required", "a")),
    ({"type": "command", "id": "a", "name": 3}, ("missing_name", "command.name is required", "a")),
])
def test_envelope_errors_in_spec_order(message, expected):
    assert refusal(json.dumps(message)) == expected


@pytest.mark.parametrize("message", [
    {"type": "ack", "id": "a", "payload": {"accepted": True}},
    {"type": "result", "id": "a", "payload": {"ok": False, "error": {"code": "x"}}},
    {"type": "event", "name": "log", "payload": {"seq": 1}},
    {"type": "event", "name": "hello"},
    {"type": "error", "payload": {"code": "invalid_json", "message": "m"}},
])
def test_well_formed_server_messages_are_not_routed(message):
    code, text, id = refusal(json.dumps(message))
    assert (code, text) == ("unsupported_message_type", "only command messages can be routed")
    assert id == message.get("id")


@pytest.mark.parametrize("message, code", [
    ({"type": "ack", "payload": {"accepted": True}}, "missing_id"),
    ({"type": "result", "id": "", "payload": {"ok": True}}, "missing_id"),
    ({"type": "ack", "id": "a", "payload": {"accepted": "yes"}}, "invalid_payload"),
    ({"type": "ack", "id": "a"}, "invalid_payload"),
    ({"type": "result", "id": "a", "payload": []}, "invalid_payload"),
    ({"type": "event", "payload": {}}, "missing_name"),
    ({"type": "event", "name": "log", "payload": "x"}, "invalid_payload"),
    ({"type": "error", "payload": {"message": "m"}}, "invalid_payload"),
])
def test_malformed_server_messages_get_the_command_codes(message, code):
    assert refusal(json.dumps(message))[0] == code


def test_a_command_is_returned_with_its_payload_as_sent():
    cmd = parse_message('{"type":"command","id":"1","name":"get_logs","payload":{"limit":3}}')
    assert cmd == ("1", "get_logs", {"limit": 3})
    assert parse_message(b'{"type":"command","id":"1","name":"x"}').payload is None


def test_envelopes_leave_out_keys_that_do_not_apply():
    assert protocol.ack("1") == {"type": "ack", "id": "1", "payload": {"accepted": True}}
    assert protocol.ack("1", "service_busy", "busy") == {
        "type": "ack", "id": "1",
        "payload": {"accepted": False, "error": {"code": "service_busy", "message": "busy"}}}
    assert protocol.result_ok("1") == {"type": "result", "id": "1", "payload": {"ok": True}}
    assert protocol.result_error("1", "start_failed", "m", ["b", "a"])["payload"] == {
        "ok": False, "error": {"code": "start_failed", "message": "m"},
        "failed_services": ["b", "a"]}
    assert protocol.error("invalid_json", "m") == {
        "type": "error", "payload": {"code": "invalid_json", "message": "m"}}
    assert list(protocol.command("1", "get_snapshot")) == ["type", "id", "name"]
    assert protocol.hello(("a", "b"))["payload"] == {
        "protocol_version": 1, "server": "flowlayer", "capabilities": ["a", "b"]}


text = st.text(st.characters(codec="utf-8") | st.sampled_from(["\ud800", "\x00", '"', "\\"]))
entry = st.builds(LogEntry, st.integers(0, 2 ** 63), st.sampled_from(["api", "db", 'we"b']),
                  st.sampled_from(["running", "ready"]), st.sampled_from(["stdout", "system"]),
                  text, st.sampled_from(["2026-11-25T10:30:00.123+01:00", "t\u00e9"]))


@given(seq=st.integers(0, 2 ** 63), service=text, message=text, phase=text)
def test_hand_built_log_json_matches_json_dumps(seq, service, message, phase):
    entry = LogEntry(seq, service, phase, "stdout", message, "2026-11-25T10:30:00.123+01:00")
    event = protocol.event("log", entry.as_dict())
    text, = protocol.log_events_json([entry])
    assert json.loads(text) == event
    assert text == protocol.encode(event)
    assert text.isascii()


@given(st.lists(entry, max_size=30))
def test_entries_sharing_parts_are_each_encoded_right(entries):
    texts = protocol.log_events_json(entries)
    assert texts == [protocol.encode(protocol.event("log", e.as_dict())) for e in entries]


def test_logs_result_json_is_the_result_envelope():
    entries = [LogEntry(i, "api", "running", "stdout", f"line {i}", "t") for i in (4, 5)]
    text = protocol.logs_result_json("q", entries, True, 2)
    assert text == protocol.encode(protocol.result_ok("q", {
        "entries": [e.as_dict() for e in entries], "truncated": True, "effective_limit": 2}))
    empty = json.loads(protocol.logs_result_json("q", [], False, 7))
    assert empty["payload"]["data"] == {"entries": [], "truncated": False, "effective_limit": 7}
