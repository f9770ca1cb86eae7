"""commands.py: the command table, the payload checks of SPEC 4.3/5.3, and the mapping of
the runtime's refusals to wire codes."""
from types import SimpleNamespace

import pytest

from lib import commands, protocol
from lib.protocol import ProtocolError
from lib.runtime import OK, Outcome, ServiceBusy, UnknownService

SCOPES = frozenset({"api", "db", "flowlayer"})
SERVICE_COMMANDS = ("start_service", "stop_service", "restart_service")
V1 = ("get_snapshot", "get_logs", "start_service", "stop_service", "restart_service",
      "start_all", "stop_all")


def args_of(name, payload):
    return commands.check(protocol.Command("c", name, payload), SCOPES)[1]


def test_the_seven_v1_commands_come_first_in_their_order():
    assert commands.NAMES[:7] == V1
    assert protocol.hello(commands.NAMES)["payload"]["capabilities"][:7] == list(V1)


def rejection(name, payload=None):
    with pytest.raises(ProtocolError) as info:
        commands.check(protocol.Command("c1", name, payload), SCOPES)
    assert info.value.id == "c1"
    return info.value.code, info.value.message


def test_unknown_command():
    assert rejection("launch") == ("unknown_command", 'unknown command "launch"')


@pytest.mark.parametrize("name", commands.NAMES)
@pytest.mark.parametrize("payload", ["x", [], 3, True])
def test_a_payload_that_is_not_an_object_is_invalid(name, payload):
    assert rejection(name, payload) == ("invalid_payload", "payload must be an object")


@pytest.mark.parametrize("name", SERVICE_COMMANDS)
def test_service_commands_need_a_string_service(name):
    assert rejection(name) == ("invalid_payload", "payload.service is required")
    assert rejection(name, {"service": None})[0] == "invalid_payload"
    assert rejection(name, {"service": 5}) == ("invalid_payload",
                                               "payload.service must be a string")
    # The service's existence is the runtime's to check (it knows about busy too).
    assert args_of(name, {"service": "zz"}) == {
        "service": "zz"}


@pytest.mark.parametrize("name", ["get_snapshot", "start_all", "stop_all"])
def test_commands_without_arguments_ignore_their_payload(name):
    for payload in (None, {}, {"service": 5, "anything": []}):
        assert args_of(name, payload) == {}


NONE = {"service": None, "limit": None, "after_seq": None, "before_seq": None}


@pytest.mark.parametrize("payload, args", [
    (None, NONE),
    ({}, NONE),
    ({"service": "api", "limit": 3}, {**NONE, "service": "api", "limit": 3}),
    ({"service": "flowlayer", "after_seq": 0}, {**NONE, "service": "flowlayer", "after_seq": 0}),
    ({"before_seq": 1, "limit": None}, {**NONE, "before_seq": 1}),
    ({"after_seq": 10 ** 20}, {**NONE, "after_seq": 10 ** 20}),
])
def test_get_logs_accepted_forms(payload, args):
    assert args_of("get_logs", payload) == args


@pytest.mark.parametrize("payload, message", [
    ({"limit": 0}, "payload.limit must be an integer > 0"),
    ({"limit": -1}, "payload.limit must be an integer > 0"),
    ({"limit": "5"}, "payload.limit must be an integer > 0"),
    ({"limit": 2.0}, "payload.limit must be an integer > 0"),
    ({"limit": True}, "payload.limit must be an integer > 0"),
    ({"after_seq": -1}, "payload.after_seq must be an integer >= 0"),
    ({"after_seq": False}, "payload.after_seq must be an integer >= 0"),
    ({"before_seq": 0}, "payload.before_seq must be an integer > 0"),
    ({"before_seq": "9"}, "payload.before_seq must be an integer > 0"),
    ({"after_seq": 1, "before_seq": 9}, "after_seq and before_seq cannot be combined"),
    ({"service": 5}, "payload.service must be a string"),
    ({"service": ["api"]}, "payload.service must be a string"),
])
def test_get_logs_invalid_payloads(payload, message):
    assert rejection("get_logs", payload) == ("invalid_payload", message)


def test_get_logs_unknown_service_comes_after_the_shape_checks():
    assert rejection("get_logs", {"service": "zz"}) == (
        "unknown_service", 'service "zz" is not defined')
    assert rejection("get_logs", {"service": "zz", "limit": 0})[0] == "invalid_payload"


class Refusing:
    """A runtime whose every claim raises `error`, or returns an action giving `outcome`."""

    def __init__(self, error=None, outcome=OK):
        self.error, self.outcome, self.claims = error, outcome, []

    def __getattr__(self, name):
        if not name.startswith("claim_"):
            raise AttributeError(name)

        def claim(*args):
            self.claims.append((name, *args))
            if self.error is not None:
                raise self.error
            return lambda: self.outcome
        return claim


def server_with(runtime):
    return SimpleNamespace(runtime=runtime, log_scopes=SCOPES)


@pytest.mark.parametrize("error, code", [
    (ServiceBusy('service "api" is busy'), "service_busy"),
    (UnknownService("zz"), "unknown_service"),
])
def test_runtime_refusals_become_wire_codes(error, code):
    with pytest.raises(ProtocolError) as info:
        commands.prepare(server_with(Refusing(error)),
                         protocol.Command("c9", "start_service", {"service": "api"}))
    assert (info.value.code, info.value.id) == (code, "c9")
    assert info.value.message == str(error)


@pytest.mark.parametrize("name, payload, claim", [
    ("start_service", {"service": "api"}, ("claim_start", "api")),
    ("stop_service", {"service": "api"}, ("claim_stop", "api")),
    ("restart_service", {"service": "api"}, ("claim_restart", "api")),
    ("start_all", None, ("claim_start_all",)),
    ("stop_all", {"service": 3}, ("claim_stop_all",)),
])
def test_runtime_commands_claim_before_the_ack_and_run_on_a_worker(name, payload, claim):
    runtime = Refusing(outcome=Outcome(False, ["api"], "failed to start: api"))
    work, inline = commands.prepare(server_with(runtime), protocol.Command("c", name, payload))
    assert runtime.claims == [claim] and not inline
    assert protocol.decode(work()) == protocol.result_error(
        "c", "start_failed", "failed to start: api", ["api"])


def test_get_snapshot_is_answered_inline():
    runtime = SimpleNamespace(snapshot=lambda: [{"name": "api", "status": "ready"}])
    work, inline = commands.prepare(server_with(runtime), protocol.Command("s", "get_snapshot", None))
    assert inline
    assert protocol.decode(work()) == protocol.result_ok(
        "s", {"services": [{"name": "api", "status": "ready"}]})


def test_a_new_row_is_routed_by_check_and_prepare(monkeypatch):
    row = commands.Row(lambda id, payload, scopes: {"n": payload.get("n")},
                       lambda server, id, args: lambda: protocol.encode(protocol.result_ok(id, args)),
                       inline=True)
    monkeypatch.setitem(commands.TABLE, "echo_number", row)
    work, inline = commands.prepare(server_with(None), protocol.Command("e", "echo_number", {"n": 4}))
    assert inline and protocol.decode(work()) == protocol.result_ok("e", {"n": 4})
