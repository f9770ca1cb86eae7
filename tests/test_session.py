"""session.py over real sockets on 127.0.0.1: HTTP routes and auth, the frame layer, every
envelope error and command, event order, slow and vanishing clients.

The runtime here is a fake that implements the interface of docs/internals.md and lets a
test decide what a command does and when; the log store and the config are the real ones.
End-to-end tests with the real runtime live in test_session_e2e.py.
"""
import http.client
import json
import socket
import struct
import threading
import time

import pytest
import websocket

from conftest import wait_until, write_config
from lib import commands
from lib import session as session_module
from lib.config import load
from lib.logstore import LogEntry, LogStore, chunk_bytes, format_timestamp
from lib.runtime import Outcome, ServiceBusy, StatusEvent, UnknownService
from lib.session import SessionServer
from wsraw import RawClient

TOKEN = "s3cret-token"
SERVICE_COMMANDS = ("start_service", "stop_service", "restart_service")


# ---- fakes and clients ---------------------------------------------------------------------

class FakeRuntime:
    """The Runtime interface used by the session; `behaviour(command, service)` is what an
    accepted command's action does (returns an Outcome)."""

    def __init__(self, names):
        self._lock = threading.Lock()
        self.statuses = {name: "unknown" for name in names}
        self.subscribers = {}
        self.busy = set()
        self.behaviour = lambda command, service: Outcome(True, [], "")
        self._tokens = 0

    @property
    def service_names(self):
        return sorted(self.statuses)

    def _snapshot(self):
        return [{"name": n, "status": s} for n, s in sorted(self.statuses.items())]

    def snapshot(self):
        with self._lock:
            return self._snapshot()

    def subscribe(self, callback):
        with self._lock:
            self._tokens += 1
            self.subscribers[self._tokens] = callback
            return self._tokens, self._snapshot()

    def unsubscribe(self, token):
        with self._lock:
            self.subscribers.pop(token, None)

    def set_status(self, service, status):
        with self._lock:
            self.statuses[service] = status
            event = StatusEvent(service, status, format_timestamp(time.time()))
            for callback in list(self.subscribers.values()):
                callback(event)

    def _claim(self, command, service=None):
        if command in SERVICE_COMMANDS and service not in self.statuses:
            raise UnknownService(service)
        if (command, service) in self.busy:
            raise ServiceBusy(f'service "{service}" is busy')
        return lambda: self.behaviour(command, service)

    def claim_start(self, service):
        return self._claim("start_service", service)

    def claim_stop(self, service):
        return self._claim("stop_service", service)

    def claim_restart(self, service):
        return self._claim("restart_service", service)

    def claim_start_all(self):
        return self._claim("start_all")

    def claim_stop_all(self):
        return self._claim("stop_all")


class Env:
    def __init__(self, tmp_path, config=None, buffer_size=None, logs_dir=None):
        data = config or {"logView": {"maxEntries": 50},
                          "services": {name: {"cmd": "true"} for name in ("api", "db", "web")}}
        self.config = load(write_config(tmp_path, data))
        self.store = LogStore(buffer_size or self.config.buffer_size, logs_dir)
        self.runtime = FakeRuntime(self.config.services)
        self.server = SessionServer(self.runtime, self.store, self.config, "127.0.0.1", 0, TOKEN)
        self.server.start()
        self.port = self.server.port

    def client(self, **kwargs):
        return Client(self.server.url, **kwargs)

    def connections(self):
        return len(self.server._connections)

    def close(self):
        self.server.close()
        self.store.close()


@pytest.fixture
def env(tmp_path):
    environment = Env(tmp_path)
    yield environment
    environment.close()


class Client:
    """websocket-client with the handshake read and commands correlated by id."""

    def __init__(self, url, token=TOKEN, handshake=True):
        self.ws = websocket.create_connection(
            url, header=[f"Authorization: Bearer {token}"], timeout=20,
            skip_utf8_validation=True, suppress_origin=True)
        self.seen = []           # messages skipped by wait_for, in arrival order
        self._ids = 0
        if handshake:
            self.hello = self.recv()
            self.snapshot = self.recv()

    def recv(self):
        return json.loads(self.ws.recv())

    def send(self, message):
        self.ws.send(message if isinstance(message, str) else json.dumps(message))

    def command(self, name, payload=None, id=None):
        """Send a command; return (ack payload, result payload or None if refused)."""
        self._ids += 1
        id = id or f"c{self._ids}"
        message = {"type": "command", "id": id, "name": name}
        if payload is not None:
            message["payload"] = payload
        self.send(message)
        ack = self.wait_for("ack", id)
        if not ack["payload"]["accepted"]:
            return ack["payload"], None
        return ack["payload"], self.wait_for("result", id)["payload"]

    def wait_for(self, type, id=None):
        """The next message of `type` (and `id`); the others are kept in `seen`."""
        while True:
            message = self.recv()
            if message["type"] == type and (id is None or message.get("id") == id):
                return message
            self.seen.append(message)

    @property
    def events(self):
        return [message for message in self.seen if message["type"] == "event"]

    def error_for(self, text):
        self.send(text)
        message = self.recv()
        assert message["type"] == "error", message
        return message

    def close(self):
        self.ws.close()


def http_get(port, path="/health", method="GET", authorization=f"Bearer {TOKEN}", headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    all_headers = dict(headers or {})
    if authorization is not None:
        all_headers["Authorization"] = authorization
    connection.request(method, path, headers=all_headers)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, response, body


# ---- HTTP ----------------------------------------------------------------------------------

AUTH_MATRIX = [
    (None, 401),
    (f"Basic {TOKEN}", 401),
    ("Bearer", 401),
    ("Bearer wrong-token", 403),
    (f"Bearer {TOKEN}x", 403),
    (f"bearer {TOKEN}", 200),
    (f"BEARER  {TOKEN}", 200),
    (f"Bearer {TOKEN}", 200),
]


@pytest.mark.parametrize("authorization, status", AUTH_MATRIX)
def test_health_auth_matrix(env, authorization, status):
    got, response, body = http_get(env.port, authorization=authorization)
    assert got == status
    assert response.getheader("Content-Type") == "application/json"
    assert response.getheader("Connection") == "close"
    data = json.loads(body)
    if status == 200:
        assert data == {"ok": True}
    else:
        assert data["ok"] is False
        assert data["error"]["code"] == {401: "unauthorized", 403: "forbidden"}[status]


@pytest.mark.parametrize("authorization, status", AUTH_MATRIX)
def test_ws_auth_matrix(env, authorization, status):
    header = [] if authorization is None else [f"Authorization: {authorization}"]
    if status != 200:
        with pytest.raises(websocket.WebSocketBadStatusException) as info:
            websocket.create_connection(env.server.url, header=header, timeout=20,
                                        suppress_origin=True)
        assert info.value.status_code == status
        assert env.runtime.subscribers == {}
        return
    ws = websocket.create_connection(env.server.url, header=header, timeout=20,
                                     suppress_origin=True)
    assert json.loads(ws.recv())["name"] == "hello"
    ws.close()


def test_auth_comes_before_routing(env):
    assert http_get(env.port, "/nope", authorization=None)[0] == 401
    assert http_get(env.port, "/nope", method="POST", authorization="Bearer x")[0] == 403


def test_unknown_path_is_404_and_other_methods_405(env):
    status, response, body = http_get(env.port, "/nope")
    assert status == 404 and json.loads(body)["error"]["code"] == "not_found"
    assert response.getheader("Connection") == "close"
    for path in ("/health", "/ws"):
        for method in ("POST", "DELETE", "HEAD"):
            status, response, _ = http_get(env.port, path, method=method)
            assert status == 405
            assert response.getheader("Allow") == "GET"
    assert http_get(env.port, "/health?probe=1")[0] == 200


def test_ws_route_without_an_upgrade_is_a_bad_request(env):
    status, _, body = http_get(env.port, "/ws")
    assert status == 400
    assert json.loads(body)["error"]["code"] == "bad_request"
    status, _, _ = http_get(env.port, "/ws", headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": "abc",
        "Sec-WebSocket-Version": "8"})
    assert status == 400


def raw_http(port, data, timeout=20):
    """Send raw bytes, return everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_malformed_request_line_is_400(env):
    assert raw_http(env.port, b"HELLO\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw_http(env.port, b"GET /health HTTP/1.1\r\nno colon\r\n\r\n").startswith(
        b"HTTP/1.1 400 ")


def test_huge_request_head_is_refused(env):
    head = b"GET /health HTTP/1.1\r\n" + b"X-Pad: " + b"a" * (64 << 10) + b"\r\n\r\n"
    assert raw_http(env.port, head).startswith(b"HTTP/1.1 431 ")


def test_slow_request_head_times_out(env, monkeypatch):
    monkeypatch.setattr(session_module, "HEAD_TIMEOUT", 0.5)
    assert raw_http(env.port, b"GET /health HTTP/1.1\r\nAuthor").startswith(b"HTTP/1.1 408 ")


def test_client_that_connects_and_leaves_costs_nothing(env):
    baseline = threading.active_count()
    for _ in range(20):
        socket.create_connection(("127.0.0.1", env.port)).close()
    wait_until(lambda: threading.active_count() <= baseline, message="handler threads to end")


# ---- session start -------------------------------------------------------------------------

def test_hello_then_snapshot(env):
    env.runtime.statuses["db"] = "ready"
    client = env.client()
    assert client.hello == {"type": "event", "name": "hello", "payload": {
        "protocol_version": 1, "server": "flowlayer", "capabilities": list(commands.NAMES)}}
    assert commands.NAMES[:7] == ("get_snapshot", "get_logs", "start_service", "stop_service",
                                  "restart_service", "start_all", "stop_all")
    assert {"get_services", "reload_config"} <= set(commands.NAMES[7:])
    assert client.snapshot == {"type": "event", "name": "snapshot", "payload": {"services": [
        {"name": "api", "status": "unknown"}, {"name": "db", "status": "ready"},
        {"name": "web", "status": "unknown"}]}}
    client.close()


def test_no_change_is_lost_or_early_between_snapshot_and_events(env):
    """Clients connect while a service changes state as fast as it can: each sees, right
    after its snapshot, exactly the changes that followed it, in order."""
    stop = threading.Event()

    def churn():
        n = 0
        while not stop.is_set():
            for _ in range(10):
                n += 1
                env.runtime.set_status("api", f"s{n}")
            time.sleep(0.001)   # a pace a client can follow, not a synchronisation

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        for _ in range(5):
            client = env.client()
            state = next(s["status"] for s in client.snapshot["payload"]["services"]
                         if s["name"] == "api")
            n = 0 if state == "unknown" else int(state[1:])
            for _ in range(50):
                event = client.recv()
                assert event["name"] == "service_status"
                n += 1
                assert event["payload"]["status"] == f"s{n}"
            client.close()
    finally:
        stop.set()
        thread.join()


def test_two_clients_see_the_same_status_events_in_the_same_order(env):
    first, second = env.client(), env.client()
    changers = [threading.Thread(target=lambda k=k: [
        env.runtime.set_status(name, f"{k}-{i}") for i in range(200)
        for name in ("api", "db", "web")]) for k in range(3)]
    for thread in changers:
        thread.start()
    for thread in changers:
        thread.join()
    seen = [[client.recv()["payload"] for _ in range(1800)] for client in (first, second)]
    assert seen[0] == seen[1]
    stamps = [event["timestamp"] for event in seen[0]]
    assert stamps == sorted(stamps)
    first.close()
    second.close()


# ---- envelope errors (SPEC 5.2) ------------------------------------------------------------

ENVELOPE_ERRORS = [
    ("nope", "invalid_json", "invalid json message", None),
    ("[1, 2]", "invalid_json", "invalid json message", None),
    ('"a string"', "invalid_json", "invalid json message", None),
    ("{}", "missing_type", "type is required", None),
    ('{"id": "k1", "type": 3}', "missing_type", "type is required", "k1"),
    ('{"id": "k2", "type": " "}', "missing_type", "type is required", "k2"),
    ('{"type": "command", "name": "get_snapshot"}', "missing_id", "command.id is required",
     None),
    ('{"type": "command", "id": "  ", "name": "get_snapshot"}', "missing_id",
     "command.id is required", None),
    ('{"type": "command", "id": "k3"}', "missing_name", "command.name is required", "k3"),
    ('{"type": "ack", "id": "k4", "payload": {"accepted": true}}', "unsupported_message_type",
     "only command messages can be routed", "k4"),
    ('{"type": "result", "id": "k5", "payload": {"ok": true}}', "unsupported_message_type",
     "only command messages can be routed", "k5"),
    ('{"type": "event", "name": "log", "payload": {}}', "unsupported_message_type",
     "only command messages can be routed", None),
    ('{"type": "error", "payload": {"code": "x", "message": "y"}}',
     "unsupported_message_type", "only command messages can be routed", None),
    ('{"type": "ack", "payload": {"accepted": true}}', "missing_id", "ack.id is required", None),
    ('{"type": "result", "id": "k6", "payload": 5}', "invalid_payload",
     "result.payload is malformed", "k6"),
    ('{"type": "event", "payload": {}}', "missing_name", "event.name is required", None),
    ('{"type": "subscribe", "id": "k7"}', "unknown_type", "unknown message type", "k7"),
]


def test_every_envelope_error_keeps_the_connection_open(env):
    client = env.client()
    for text, code, message, id in ENVELOPE_ERRORS:
        error = client.error_for(text)
        expected = {"type": "error", "payload": {"code": code, "message": message}}
        if id is not None:
            expected["id"] = id
        assert error == expected, text
    ack, result = client.command("get_snapshot")
    assert ack == {"accepted": True} and "services" in result["data"]
    client.close()


def test_binary_frame_is_invalid_json(env):
    client = env.client()
    client.ws.send_binary(b'{"type": "command", "id": "b", "name": "get_snapshot"}')
    assert client.recv() == {"type": "error", "payload": {
        "code": "invalid_json", "message": "invalid json message"}}
    client.ws.send(b'{"type": "\xff"}', opcode=websocket.ABNF.OPCODE_TEXT)  # not UTF-8
    assert client.recv()["payload"]["code"] == "invalid_json"
    assert client.command("get_snapshot")[0]["accepted"]
    client.close()


# ---- commands (SPEC 5.3) -------------------------------------------------------------------

def test_get_snapshot(env):
    env.runtime.statuses["web"] = "running"
    client = env.client()
    for payload in (None, {}, {"ignored": 1}):
        ack, result = client.command("get_snapshot", payload)
        assert ack == {"accepted": True}
        assert result == {"ok": True, "data": {"services": [
            {"name": "api", "status": "unknown"}, {"name": "db", "status": "unknown"},
            {"name": "web", "status": "running"}]}}
    client.send({"type": "command", "id": "n", "name": "get_snapshot", "payload": None})
    assert client.wait_for("ack", "n")["payload"] == {"accepted": True}
    assert client.wait_for("result", "n")["payload"]["ok"]
    client.close()


def test_ack_and_result_envelopes_echo_the_id(env):
    client = env.client()
    client.send({"type": "command", "id": "id-1", "name": "get_snapshot"})
    ack, result = client.recv(), client.recv()
    assert ack == {"type": "ack", "id": "id-1", "payload": {"accepted": True}}
    assert list(result) == ["type", "id", "payload"] and result["id"] == "id-1"
    client.close()


def test_refused_commands(env):
    env.runtime.busy.add(("start_service", "db"))
    client = env.client()
    cases = [
        ("launch", {"service": "api"}, "unknown_command", 'unknown command "launch"'),
        ("start_service", None, "invalid_payload", "payload.service is required"),
        ("start_service", {"service": 3}, "invalid_payload", "payload.service must be a string"),
        ("stop_service", {"svc": "api"}, "invalid_payload", "payload.service is required"),
        ("restart_service", ["api"], "invalid_payload", "payload must be an object"),
        ("start_all", "now", "invalid_payload", "payload must be an object"),
        ("stop_all", 1, "invalid_payload", "payload must be an object"),
        ("start_service", {"service": "zz"}, "unknown_service", 'service "zz" is not defined'),
        ("start_service", {"service": "db"}, "service_busy", 'service "db" is busy'),
    ]
    for name, payload, code, message in cases:
        ack, result = client.command(name, payload)
        assert ack == {"accepted": False, "error": {"code": code, "message": message}}, name
        assert result is None
    client.close()


@pytest.mark.parametrize("name, payload", [
    ("start_service", {"service": "api"}), ("stop_service", {"service": "api"}),
    ("restart_service", {"service": "api"}), ("start_all", None), ("stop_all", {"x": 1})])
def test_runtime_commands_succeed_without_data(env, name, payload):
    calls = []
    env.runtime.behaviour = lambda command, service: calls.append((command, service)) or \
        Outcome(True, [], "")
    client = env.client()
    assert client.command(name, payload) == ({"accepted": True}, {"ok": True})
    assert calls == [(name, (payload or {}).get("service") if "service" in name else None)]
    client.close()


def test_failed_start_lists_failed_services(env):
    env.runtime.behaviour = lambda command, service: Outcome(
        False, ["api", "db"], "failed to start: api, db")
    client = env.client()
    assert client.command("start_all") == ({"accepted": True}, {
        "ok": False, "error": {"code": "start_failed", "message": "failed to start: api, db"},
        "failed_services": ["api", "db"]})
    client.close()


def test_a_crashing_action_answers_internal_error(env, caplog):
    def crash(command, service):
        raise RuntimeError("boom")
    env.runtime.behaviour = crash
    client = env.client()
    ack, result = client.command("start_service", {"service": "api"})
    assert ack == {"accepted": True}
    assert result["ok"] is False and result["error"]["code"] == "internal_error"
    assert client.command("get_snapshot")[1]["ok"]
    client.close()


def test_result_comes_after_the_status_events_of_the_action(env):
    def start(command, service):
        for status in ("starting", "running", "ready"):
            env.runtime.set_status(service, status)
        return Outcome(True, [], "")
    env.runtime.behaviour = start
    client = env.client()
    assert client.command("start_service", {"service": "web"})[1] == {"ok": True}
    assert [e["payload"]["status"] for e in client.events] == ["starting", "running", "ready"]
    client.close()


def test_a_slow_command_blocks_no_other_command(env):
    """A start that waits (a probe) must not delay get_logs or get_snapshot, on the same
    connection or another one."""
    release = threading.Event()
    env.runtime.behaviour = lambda command, service: release.wait(60) and Outcome(
        True, [], "")
    env.store.append("api", "stdout", ["one", "two"], "running")
    first, second = env.client(), env.client()
    first.send({"type": "command", "id": "slow", "name": "start_service",
                "payload": {"service": "api"}})
    assert first.wait_for("ack", "slow")["payload"] == {"accepted": True}
    for client in (first, second):
        ack, result = client.command("get_logs", {"service": "api"})
        assert [e["message"] for e in result["data"]["entries"]] == ["one", "two"]
        assert client.command("get_snapshot")[1]["ok"]
        client.send({"type": "command", "id": f"other-{id(client)}", "name": "stop_service",
                     "payload": {"service": "db"}})
    assert not release.is_set()
    release.set()
    assert first.wait_for("result", "slow")["payload"] == {"ok": True}
    first.close()
    second.close()


# ---- get_logs (SPEC 4.3) -------------------------------------------------------------------

def add_lines(store, service, count, prefix="line"):
    store.append(service, "stdout", [f"{prefix} {i}" for i in range(count)], "running")


def test_get_logs_forms(env):
    add_lines(env.store, "api", 30, "api")
    add_lines(env.store, "db", 30, "db")
    env.store.append("flowlayer", "system", ["boot: services: 3"], "running")
    client = env.client()

    def logs(**payload):
        ack, result = client.command("get_logs", payload)
        assert ack == {"accepted": True} and result["ok"]
        return result["data"]

    data = logs()
    assert data["effective_limit"] == 50          # logView.maxEntries
    assert data["truncated"] is True
    seqs = [e["seq"] for e in data["entries"]]
    assert seqs == sorted(seqs) and len(seqs) == 50
    newest = seqs[-1]
    assert data["entries"][-1] == {"seq": newest, "service": "flowlayer", "phase": "running",
                                   "stream": "system", "message": "boot: services: 3",
                                   "timestamp": data["entries"][-1]["timestamp"]}

    data = logs(service="api", limit=5)
    assert [e["message"] for e in data["entries"]] == [f"api {i}" for i in range(25, 30)]
    assert data["truncated"] is True and data["effective_limit"] == 5

    data = logs(service="api", after_seq=seqs[0])     # seqs[0] is "api 11"
    assert [e["message"] for e in data["entries"]] == [f"api {i}" for i in range(12, 30)]
    assert data["truncated"] is False

    data = logs(service="db", before_seq=newest, limit=3)
    assert [e["message"] for e in data["entries"]] == ["db 27", "db 28", "db 29"]

    data = logs(after_seq=newest - 2, limit=100)
    assert len(data["entries"]) == 2 and data["truncated"] is False

    assert [e["message"] for e in logs(service="flowlayer")["entries"]] == ["boot: services: 3"]
    assert logs(service="web") == {"entries": [], "truncated": False, "effective_limit": 50}
    client.close()


def test_get_logs_refusals(env):
    client = env.client()
    cases = [
        ({"limit": 0}, "invalid_payload", "payload.limit must be an integer > 0"),
        ({"limit": True}, "invalid_payload", "payload.limit must be an integer > 0"),
        ({"limit": 2.5}, "invalid_payload", "payload.limit must be an integer > 0"),
        ({"after_seq": -1}, "invalid_payload", "payload.after_seq must be an integer >= 0"),
        ({"before_seq": 0}, "invalid_payload", "payload.before_seq must be an integer > 0"),
        ({"after_seq": 1, "before_seq": 5}, "invalid_payload",
         "after_seq and before_seq cannot be combined"),
        ({"service": 1}, "invalid_payload", "payload.service must be a string"),
        ({"service": "nope"}, "unknown_service", 'service "nope" is not defined'),
        ("api", "invalid_payload", "payload must be an object"),
    ]
    for payload, code, message in cases:
        assert client.command("get_logs", payload) == (
            {"accepted": False, "error": {"code": code, "message": message}}, None), payload
    client.close()


def test_get_logs_limit_falls_back_to_per_service_and_all_settings(tmp_path):
    env = Env(tmp_path, config={
        "logs": {"bufferSize": 40}, "logView": {"all": {"maxEntries": 7}},
        "services": {"api": {"cmd": "true", "logView": {"maxEntries": 3}},
                     "db": {"cmd": "true"}}})
    try:
        client = env.client()
        assert client.command("get_logs")[1]["data"]["effective_limit"] == 7
        assert client.command("get_logs", {"service": "api"})[1]["data"]["effective_limit"] == 3
        assert client.command("get_logs", {"service": "db"})[1]["data"]["effective_limit"] == 40
        assert client.command(
            "get_logs", {"service": "flowlayer"})[1]["data"]["effective_limit"] == 40
        client.close()
    finally:
        env.close()


def test_get_logs_before_seq_reaches_into_the_jsonl_files(tmp_path):
    env = Env(tmp_path, buffer_size=10, logs_dir=str(tmp_path / "logs"))
    try:
        add_lines(env.store, "api", 100)
        client = env.client()
        memory = client.command("get_logs", {"service": "api", "limit": 10})[1]["data"]
        assert [e["message"] for e in memory["entries"]] == [f"line {i}" for i in range(90, 100)]
        lowest = memory["entries"][0]["seq"]
        ack, result = client.command("get_logs", {"service": "api", "before_seq": lowest,
                                                  "limit": 30})
        assert [e["message"] for e in result["data"]["entries"]] == [
            f"line {i}" for i in range(60, 90)]
        assert result["data"]["truncated"] is True
        client.close()
    finally:
        env.close()


# ---- log events ----------------------------------------------------------------------------

def test_log_events_are_the_entries_of_get_logs(env):
    client = env.client()
    env.store.append("api", "stderr", ["é ünïcode \u2603", 'quote " and \\ back'], "starting")
    events = [client.recv() for _ in range(2)]
    assert [e["name"] for e in events] == ["log", "log"]
    entries = client.command("get_logs", {"service": "api"})[1]["data"]["entries"]
    assert [e["payload"] for e in events] == entries
    assert entries[0]["message"] == "é ünïcode \u2603" and entries[0]["stream"] == "stderr"
    client.close()


def test_reconnecting_client_recovers_every_missed_line_with_after_seq(env):
    client = env.client()
    add_lines(env.store, "api", 20, "before")
    last_seq = max(client.recv()["payload"]["seq"] for _ in range(20))
    client.close()
    wait_until(lambda: env.connections() == 0, message="the connection to end")
    add_lines(env.store, "api", 30, "missed")
    again = env.client()
    add_lines(env.store, "api", 5, "live")
    entries = again.command("get_logs", {"after_seq": last_seq})[1]["data"]["entries"]
    live = [e["payload"] for e in again.events if e["name"] == "log"]
    merged = {e["seq"]: e["message"] for e in entries + live}
    assert [merged[s] for s in sorted(merged)] == (
        [f"missed {i}" for i in range(30)] + [f"live {i}" for i in range(5)])
    again.close()


# ---- frames --------------------------------------------------------------------------------

def test_fragmented_message_with_a_ping_inside(env):
    raw = RawClient(env.port, TOKEN)
    raw.handshake()
    text = json.dumps({"type": "command", "id": "frag", "name": "get_snapshot"}).encode()
    raw.send_frame(0x1, text[:10], fin=False)
    raw.send_frame(0x9, b"are you there")
    raw.send_frame(0x0, text[10:20], fin=False)
    raw.send_frame(0x0, text[20:])
    assert raw.recv_frame() == (0xA, b"are you there")
    assert raw.recv_json()["type"] == "ack"
    assert raw.recv_json()["payload"]["ok"] is True
    raw.send_frame(0x2, b"{}", fin=False)
    raw.send_frame(0x0, b"")
    assert raw.recv_json()["payload"]["code"] == "invalid_json"
    raw.close()


def test_close_is_echoed_and_the_connection_ends(env):
    raw = RawClient(env.port, TOKEN)
    raw.handshake()
    raw.send_frame(0x8, struct.pack(">H", 1000) + b"bye")
    assert raw.recv_frame() == (0x8, struct.pack(">H", 1000))
    assert raw.at_eof()
    wait_until(lambda: env.connections() == 0 and not env.runtime.subscribers,
               message="the session to be forgotten")


def test_message_of_exactly_one_mib_is_accepted(env):
    raw = RawClient(env.port, TOKEN)
    raw.handshake()
    text = json.dumps({"type": "command", "id": "big", "name": "get_snapshot",
                       "payload": {"pad": ""}})
    pad = (1 << 20) - len(text)
    raw.send_text(text.replace('"pad": ""', '"pad": "' + "x" * pad + '"'))
    assert raw.recv_json() == {"type": "ack", "id": "big", "payload": {"accepted": True}}
    raw.close()


@pytest.mark.parametrize("fragments", [1, 2])
def test_message_above_one_mib_closes_with_1009(env, fragments):
    raw = RawClient(env.port, TOKEN)
    raw.handshake()
    data = b"x" * ((1 << 20) + 1)
    if fragments == 1:
        raw.send_frame(0x1, data)
    else:
        raw.send_frame(0x1, data[:600000], fin=False)
        raw.send_frame(0x0, data[600000:])
    assert raw.close_code() == 1009
    assert raw.at_eof()


def test_websocket_client_sees_1009_for_an_oversized_message(env):
    client = env.client()
    client.ws.send("x" * (2 << 20))
    opcode, frame = client.ws.recv_data_frame(True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    assert struct.unpack(">H", frame.data[:2])[0] == 1009


@pytest.mark.parametrize("send", [
    lambda raw: raw.send_frame(0x1, b"{}", masked=False),          # clients must mask
    lambda raw: raw.send_frame(0x1, b"{}", rsv=0x40),              # no extension agreed
    lambda raw: raw.send_frame(0x0, b"{}"),                        # nothing to continue
    lambda raw: raw.send_frame(0x3, b"{}"),                        # reserved opcode
    lambda raw: raw.send_frame(0x9, b"x", fin=False),              # fragmented control
    lambda raw: raw.send_frame(0x9, b"x" * 126),                   # control too long
    lambda raw: (raw.send_frame(0x1, b"{", fin=False), raw.send_frame(0x1, b"}")),
    lambda raw: raw.send_frame(0x8, b"\x03"),                      # close code cut in half
])
def test_malformed_frames_close_with_1002(env, send):
    raw = RawClient(env.port, TOKEN)
    raw.handshake()
    send(raw)
    assert raw.close_code() == 1002
    assert raw.at_eof()


# ---- slow and vanishing clients ------------------------------------------------------------

def test_disconnect_without_close_leaks_nothing(env):
    baseline = threading.active_count()
    for abrupt in (False, True):
        clients = [RawClient(env.port, TOKEN) for _ in range(5)]
        for raw in clients:
            raw.handshake()
        wait_until(lambda: env.connections() == 5, message="five connections")
        for raw in clients:
            if abrupt:    # RST instead of FIN
                raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raw.close()
        wait_until(lambda: env.connections() == 0, message="connections to be dropped")
        assert env.runtime.subscribers == {}
        wait_until(lambda: threading.active_count() <= baseline, message="threads to end")
    env.runtime.set_status("api", "running")   # nobody left to tell: nothing breaks


def test_stalled_client_slows_neither_capture_nor_other_clients(env):
    stalled = RawClient(env.port, TOKEN, rcvbuf=4096)   # never reads past the handshake
    wait_until(lambda: env.connections() == 1, message="the stalled connection")
    client = env.client()
    done = threading.Event()

    def capture():
        for _ in range(200):
            add_lines(env.store, "api", 1000, "flood " + "x" * 100)
        done.set()

    writer = threading.Thread(target=capture)
    writer.start()
    answered = 0
    while not done.is_set():   # commands are answered all along the flood
        assert client.command("get_snapshot")[1]["ok"]
        client.seen.clear()
        answered += 1
    writer.join(60)
    assert not writer.is_alive() and answered > 0
    env.runtime.set_status("db", "ready")
    status = client.wait_for("event")
    while status["name"] != "service_status":
        status = client.wait_for("event")
    assert status["payload"]["status"] == "ready"
    assert env.connections() == 2      # dropping logs is not a reason to close
    stalled.close()
    client.close()


def test_broadcaster_behind_drops_live_lines_by_bytes_and_counts_them(env, monkeypatch):
    """The broadcaster's queue holds a bounded number of bytes: past it, live log events are
    lost to every client and counted; status events are not; get_logs after_seq has all."""
    gate, busy = threading.Event(), threading.Event()
    log_frames = session_module._log_frames

    def stalled_log_frames(entries):
        busy.set()
        gate.wait()
        return log_frames(entries)

    monkeypatch.setattr(session_module, "_log_frames", stalled_log_frames)
    client = env.client()
    wait_until(lambda: env.connections() == 1, message="the connection")
    try:
        add_lines(env.store, "api", 1, "first")     # taken by the broadcaster, which stalls
        assert busy.wait(30)
        long_line = "x" * 10_000
        chunks = [[f"{long_line} {i}", "b", "c"] for i in range(6)]
        size = chunk_bytes([LogEntry(0, "api", "running", "stdout", m, "") for m in chunks[0]])
        monkeypatch.setattr(session_module, "LOG_QUEUE_BYTES", 3 * size)
        for lines in chunks:                         # three fit in the queue, three do not
            env.store.append("api", "stdout", lines, "running")
        assert env.server.dropped_lines == 9
        env.runtime.set_status("db", "ready")
    finally:
        gate.set()
    messages = []
    while len([m for m in messages if m["type"] == "event" and m["name"] == "log"]) < 10:
        messages.append(client.recv())
    while not any(m["name"] == "service_status" for m in messages if m["type"] == "event"):
        messages.append(client.recv())
    received = [m["payload"]["message"] for m in messages if m.get("name") == "log"]
    assert received == ["first 0"] + [m for i in range(3) for m in (f"{long_line} {i}", "b", "c")]
    first_seq = [m["payload"]["seq"] for m in messages if m.get("name") == "log"][0]
    _, result = client.command("get_logs", {"service": "api", "after_seq": first_seq})
    assert [e["message"] for e in result["data"]["entries"]] == [
        m for i in range(6) for m in (f"{long_line} {i}", "b", "c")]
    client.close()


def test_outbox_drops_log_blobs_by_bytes_and_counts_their_lines(monkeypatch):
    monkeypatch.setattr(session_module, "LOG_BACKLOG_BYTES", 1000)
    outbox = session_module._Outbox()
    outbox.release([b"hello"])
    outbox.offer(b"a" * 600, 3)
    outbox.offer(b"b" * 600, 5)                       # 1,200 bytes would pass the bound
    assert outbox.put(b"status")                      # never dropped
    outbox.offer(b"c" * 400, 2)
    assert outbox.dropped_lines == 5
    frames, last = outbox.take()   # the undroppable lane first (issue 12)
    assert frames == [b"hello", b"status", b"a" * 600, b"c" * 400] and not last
    outbox.offer(b"d" * 1000, 1)                      # taken: the backlog is empty again
    assert outbox.take()[0] == [b"d" * 1000] and outbox.dropped_lines == 5


def test_replies_go_before_queued_log_blobs_which_are_taken_a_bounded_amount_at_a_time(
        monkeypatch):
    monkeypatch.setattr(session_module, "LOG_TAKE_BYTES", 1000)
    outbox = session_module._Outbox()
    outbox.release([])
    for name in b"abc":
        outbox.offer(bytes([name]) * 600, 1)
    assert outbox.take() == ([b"a" * 600, b"b" * 600], False)
    outbox.put(b"reply")
    assert outbox.take() == ([b"reply", b"c" * 600], False)
    outbox.offer(b"d" * 600, 1)
    outbox.offer(b"e" * 600, 1)
    outbox.close(b"final")
    assert outbox.take() == ([b"d" * 600, b"e" * 600, b"final"], True)   # all at the end


def test_client_whose_undroppable_backlog_passes_the_limit_is_closed(env):
    stalled = RawClient(env.port, TOKEN, rcvbuf=4096)
    client = env.client()
    wait_until(lambda: env.connections() == 2, message="two connections")
    received = []

    def read():
        while True:
            status = client.recv()["payload"]["status"]
            received.append(status)
            if status == "last":
                return

    reader = threading.Thread(target=read)
    reader.start()
    pad = "p" * 2000
    sent = []
    while env.connections() == 2 and len(sent) < 200_000:   # kernel buffers fill first
        sent.append(f"{pad}{len(sent)}")
        env.runtime.set_status("api", sent[-1])
        if len(sent) % 100 == 0:   # keep the reading client close behind
            wait_until(lambda: len(received) >= len(sent) - 100, message="the reader")
    wait_until(lambda: env.connections() == 1, message="the stalled connection to be closed")
    assert len(sent) > session_module.MAX_BACKLOG
    assert len(env.runtime.subscribers) == 1
    env.runtime.set_status("api", "last")
    reader.join(60)
    assert received == sent + ["last"]     # the reading client lost nothing
    assert stalled.at_eof()
    client.close()


def test_close_sends_going_away_to_every_client(tmp_path):
    env = Env(tmp_path)
    raws = [RawClient(env.port, TOKEN) for _ in range(3)]
    for raw in raws:
        raw.handshake()
    wait_until(lambda: env.connections() == 3, message="three connections")
    env.close()
    for raw in raws:
        assert raw.close_code() == 1001
        assert raw.at_eof()
    assert env.runtime.subscribers == {}
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", env.port), timeout=5)


def test_address_in_use_raises_oserror(env, tmp_path):
    other = SessionServer(env.runtime, env.store, env.config, "127.0.0.1", env.port, TOKEN)
    with pytest.raises(OSError):
        other.start()
    other.close()
    assert http_get(env.port)[0] == 200


def test_url_shows_the_bound_address(env):
    assert env.server.url == f"ws://127.0.0.1:{env.port}/ws"


def test_serves_on_ipv6(env):
    try:
        socket.socket(socket.AF_INET6).close()
        server = SessionServer(env.runtime, env.store, env.config, "::1", 0, TOKEN)
        server.start()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        assert server.url == f"ws://[::1]:{server.port}/ws"
        client = Client(server.url)
        assert client.command("get_snapshot")[1]["ok"]
        client.close()
    finally:
        server.close()
