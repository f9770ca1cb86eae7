"""The client (lib/transport.py, lib/log_feed.py, lib/client.py): log buffer rules, backoff,
message decoding, and a Client against a fake V1 server."""
import json
import queue
import threading

import pytest

from fake_v1_server import FakeV1Server
from lib import transport
from lib.client import Client
from lib.entry import LogEntry
from lib.log_feed import ALL, LogBuffer
from lib.transport import (CONNECTED, FORBIDDEN, INCOMPATIBLE, RECONNECTING, UNAUTHORIZED,
                           UNREACHABLE, backoff_delay)

from conftest import free_port


def entry(seq, service="api", message=None):
    return LogEntry(seq, service, "running", "stdout", message or f"line {seq}",
                    "2026-01-01T00:00:00.000Z")


def seqs(buffer):
    return [e.seq for e in buffer.entries]


def logs(c):
    """The client's log buffer (the feed takes a new one when the scope changes)."""
    return c.feed.buffer


# ---- LogBuffer ----------------------------------------------------------------------------

def test_merge_keeps_seq_order_and_drops_duplicates():
    buf = LogBuffer()
    buf.add([entry(5), entry(6)])           # live events first
    buf.add([entry(3), entry(4), entry(5)])  # then the reply they overlap
    buf.add([entry(6), entry(7)])
    assert seqs(buf) == [3, 4, 5, 6, 7]
    assert buf.last_seq == 7


def test_no_trim_before_the_limit_is_known_then_trim_oldest():
    buf = LogBuffer()
    buf.add([entry(s) for s in range(1, 21)])
    assert len(buf.entries) == 20 and not buf.has_older
    buf.set_limit(5)
    assert seqs(buf) == [16, 17, 18, 19, 20]
    assert buf.has_older
    buf.add([entry(21)])
    assert seqs(buf) == [17, 18, 19, 20, 21]


def test_paused_buffer_holds_still_and_refuses_newer_entries():
    buf = LogBuffer()
    buf.set_limit(4)
    buf.add([entry(1), entry(2), entry(3)])
    buf.set_following(False)
    buf.add([entry(4), entry(5), entry(6)])
    assert seqs(buf) == [1, 2, 3, 4]
    assert buf.newer_dropped
    assert buf.last_seq == 6


def test_older_page_goes_in_front_and_an_empty_page_ends_paging():
    buf = LogBuffer()
    buf.set_limit(10)
    buf.add([entry(8), entry(9)])
    buf.set_following(False)
    epoch = buf.epoch
    assert buf.add_older([entry(5), entry(6), entry(7), entry(8)], truncated=True)
    assert seqs(buf) == [5, 6, 7, 8, 9]
    assert buf.has_older and buf.epoch > epoch
    assert not buf.add_older([entry(5)], truncated=False)  # nothing older than what we hold
    assert buf.older_exhausted and not buf.has_older


def test_older_pages_past_the_cap_drop_the_newest_end():
    buf = LogBuffer()
    buf.set_limit(4)
    buf.add([entry(10), entry(11), entry(12)])
    buf.set_following(False)
    buf.add_older([entry(8), entry(9)], truncated=True)
    assert seqs(buf) == [8, 9, 10, 11]
    assert buf.newer_dropped


# ---- backoff ---------------------------------------------------------------------------------

def test_backoff_is_half_one_two_then_five_forever():
    assert [backoff_delay(n) for n in range(1, 8)] == [0.5, 1, 2, 5, 5, 5, 5]


# ---- Client against a fake V1 server ----------------------------------------------------------

@pytest.fixture
def server():
    fake = FakeV1Server(services={"api": "running", "db": "ready"})
    yield fake
    fake.close()


@pytest.fixture
def make_client():
    made = []

    def make(url, token="secret", **options):
        options.setdefault("backoff", lambda failures: 0.05)
        made.append(Client(url, token, **options).start())
        return made[-1]

    yield make
    for c in made:
        c.close()


def next_command(server, name=None, timeout=10):
    while True:
        conn, message = server.commands.get(timeout=timeout)
        if name is None or message["name"] == name:
            return conn, message


def wait(c, predicate, what):
    assert c.wait_for(predicate, 10), f"timed out waiting for {what}"


def test_handshake_then_first_get_logs_and_live_events(server, make_client):
    server.snapshot_gate = threading.Event()
    for i in range(3):
        server.add_log("api", f"old {i}", broadcast=False)
    c = make_client(server.url)
    wait(c, lambda: server.upgrades == 1, "the upgrade")
    early = c.request("get_snapshot")
    assert early.wait(1).code == "disconnected"  # no command before the snapshot
    server.snapshot_gate.set()
    _, first = next_command(server)
    assert first["name"] == "get_logs" and first.get("payload") in (None, {})
    wait(c, lambda: c.view().state == CONNECTED and len(logs(c).entries) == 3,
         "the first logs")
    assert c.view().services == {"api": "running", "db": "ready"}
    assert c.view().server["server"] == "fake-v1"
    server.add_log("db", "live one")
    server.set_status("api", "stopped")
    wait(c, lambda: len(logs(c).entries) == 4 and c.view().services["api"] == "stopped",
         "live events")
    assert logs(c).entries[-1].message == "live one"


def test_live_events_and_the_reply_merge_without_duplicates(server, make_client):
    for i in range(5):
        server.add_log("api", f"stored {i}", broadcast=False)
    held = queue.Queue()
    server.handler = lambda conn, m: m["name"] == "get_logs" and (held.put((conn, m)) or True)
    c = make_client(server.url)
    conn, message = held.get(timeout=10)
    server.add_log("api", "live 5")
    server.add_log("api", "live 6")
    wait(c, lambda: len(logs(c).entries) == 2, "the live events")
    server.reply(conn, message, server.query(message.get("payload")))  # holds live 5 and 6 too
    wait(c, lambda: len(logs(c).entries) == 7, "the merged reply")
    assert seqs(logs(c)) == sorted(set(seqs(logs(c))))
    assert [e.message for e in logs(c).entries][-2:] == ["live 5", "live 6"]


def test_effective_limit_caps_the_buffer(make_client):
    server = FakeV1Server(limit=5)
    try:
        for i in range(8):
            server.add_log("api", f"stored {i}", broadcast=False)
        c = make_client(server.url)
        wait(c, lambda: logs(c).loaded, "the first logs")
        assert len(logs(c).entries) == 5 and logs(c).limit == 5 and logs(c).has_older
        for i in range(10):
            server.add_log("api", f"live {i}")
        wait(c, lambda: logs(c).entries[-1].message == "live 9", "the live tail")
        assert [e.message for e in logs(c).entries] == [f"live {i}" for i in range(5, 10)]
    finally:
        server.close()


def test_a_late_reply_for_an_old_scope_is_ignored(server, make_client):
    server.add_log("api", "api line", broadcast=False)
    server.add_log("db", "db line", broadcast=False)
    c = make_client(server.url)
    wait(c, lambda: logs(c).loaded, "the first logs")
    held = queue.Queue()
    server.handler = lambda conn, m: m["name"] == "get_logs" and (held.put((conn, m)) or True)
    c.select("api")
    api_request = held.get(timeout=10)
    c.select("db")
    db_request = held.get(timeout=10)
    server.reply(*db_request, server.query(db_request[1]["payload"]))
    wait(c, lambda: logs(c).loaded, "the db logs")
    server.reply(*api_request, server.query(api_request[1]["payload"]))
    c.request("get_snapshot").wait(5)  # the api reply came before this one
    assert [e.message for e in logs(c).entries] == ["db line"]
    assert api_request[1]["payload"] == {"service": "api"}


def test_reconnect_continues_after_last_seq_without_gaps_or_duplicates(server, make_client):
    server.add_log("api", "before 1", broadcast=False)
    c = make_client(server.url)
    wait(c, lambda: logs(c).loaded, "the first logs")
    server.add_log("api", "before 2")
    wait(c, lambda: len(logs(c).entries) == 2, "a live line")
    last = logs(c).last_seq
    next_command(server, "get_logs")  # the first load
    server.snapshot_gate = threading.Event()
    server.drop_connections()
    server.add_log("api", "while away 1", broadcast=False)
    server.add_log("api", "while away 2", broadcast=False)
    server.snapshot_gate.set()
    _, message = next_command(server, "get_logs")
    assert message["payload"] == {"after_seq": last}
    wait(c, lambda: len(logs(c).entries) == 4, "the replay")
    assert [e.message for e in logs(c).entries] == ["before 1", "before 2",
                                                   "while away 1", "while away 2"]
    assert c.view().state == CONNECTED and server.upgrades == 2


def test_reconnecting_shows_a_countdown(server, make_client):
    c = make_client(server.url, backoff=lambda failures: 30)
    wait(c, lambda: c.view().state == CONNECTED, "the connection")
    server.drop_connections()
    wait(c, lambda: c.view().retry_at is not None, "the countdown")
    assert c.view().state == RECONNECTING and "closed" in c.view().detail


@pytest.mark.parametrize("token, state", [(None, UNAUTHORIZED), ("wrong", FORBIDDEN)])
def test_bad_tokens_show_their_state_and_retries_go_on(server, make_client, token, state):
    attempts = []
    c = make_client(server.url, token, backoff=lambda failures: attempts.append(failures) or 0.05)
    wait(c, lambda: len(attempts) >= 3, "three attempts")
    assert c.view().state == state
    assert attempts[:3] == [1, 2, 3]


def test_nothing_listening_is_unreachable(make_client):
    c = make_client(f"ws://127.0.0.1:{free_port()}/ws", backoff=lambda failures: 30)
    wait(c, lambda: c.view().retry_at is not None, "the first failure")
    assert c.view().state == UNREACHABLE and c.view().detail == "connection refused"


def test_another_protocol_version_is_incompatible(make_client):
    server = FakeV1Server(hello={"protocol_version": 2, "server": "future"})
    try:
        c = make_client(server.url, backoff=lambda failures: 30)
        wait(c, lambda: c.view().retry_at is not None, "the refusal")
        assert c.view().state == INCOMPATIBLE and "version 2" in c.view().detail
    finally:
        server.close()


def test_commands_time_out_and_late_replies_are_ignored(server, make_client):
    c = make_client(server.url, command_timeout=0.3)
    wait(c, lambda: c.view().state == CONNECTED, "the connection")
    swallowed = queue.Queue()
    server.handler = lambda conn, m: m["name"] == "get_snapshot" and (swallowed.put((conn, m)) or True)
    reply = c.request("get_snapshot").wait(10)
    assert reply.code == "timeout" and not reply.ok
    server.reply(*swallowed.get(timeout=1), {"services": []})  # too late: dropped
    assert c.request("get_logs").wait(10).ok


def test_pending_commands_fail_when_the_connection_drops(server, make_client):
    c = make_client(server.url, backoff=lambda failures: 30)
    wait(c, lambda: c.view().state == CONNECTED, "the connection")
    server.handler = lambda conn, m: m["name"] == "start_all"
    assert c.run_action("start_all")
    assert c.view().busy == {ALL: "start_all"}
    next_command(server, "start_all")
    server.drop_connections()
    wait(c, lambda: not c.view().busy, "the action to end")
    assert "connection lost" in c.view().notice.text and c.view().notice.error


def test_no_action_is_sent_for_a_busy_service(server, make_client):
    c = make_client(server.url)
    wait(c, lambda: c.view().state == CONNECTED, "the connection")
    held = queue.Queue()
    server.handler = lambda conn, m: m["name"] == "stop_service" and (held.put((conn, m)) or True)
    assert c.run_action("stop_service", "api")
    conn, message = held.get(timeout=10)
    assert not c.run_action("restart_service", "api")
    assert "busy" in c.view().notice.text
    server.reply(conn, message, ok=False, error={"code": "start_failed", "message": "boom"})
    wait(c, lambda: "api" not in c.view().busy, "the result")
    assert c.view().notice.text == "stop_service api: start_failed: boom" and c.view().notice.error
    assert c.request("get_snapshot").wait(10).ok
    assert "restart_service" not in [m["name"] for _, m in iter_commands(server)]


def test_paging_older_uses_before_seq_and_stops_on_an_empty_page(make_client):
    server = FakeV1Server(limit=10)
    try:
        for i in range(30):
            server.add_log("api", f"line {i}", broadcast=False)
        c = make_client(server.url)
        wait(c, lambda: logs(c).loaded, "the first logs")
        c.set_following(False)
        first = logs(c).entries[0].seq
        assert c.load_older()
        _, message = next_command(server, "get_logs")
        _, message = next_command(server, "get_logs")
        assert message["payload"] == {"before_seq": first, "limit": 5}
        wait(c, lambda: logs(c).entries[0].message == "line 15", "the older page")
        assert len(logs(c).entries) == 10 and logs(c).newer_dropped
        while c.load_older():
            wait(c, lambda: not c.feed.loading_older, "a page")
        assert logs(c).entries[0].message == "line 0" and logs(c).older_exhausted
        assert not logs(c).has_older
    finally:
        server.close()


def test_a_page_lost_with_the_connection_does_not_end_paging(make_client):
    server = FakeV1Server(limit=10)
    try:
        for i in range(30):
            server.add_log("api", f"line {i}", broadcast=False)
        c = make_client(server.url)
        wait(c, lambda: logs(c).loaded, "the first logs")
        c.set_following(False)
        held = queue.Queue()
        server.handler = lambda conn, m: ("before_seq" in (m.get("payload") or {})
                                          and (held.put(m) or True))
        assert c.load_older()
        held.get(timeout=10)
        server.drop_connections()  # the page never comes
        wait(c, lambda: c.view().state != CONNECTED, "the drop")
        wait(c, lambda: c.view().state == CONNECTED and not c.feed.loading_older, "the reconnect")
        server.handler = None
        assert c.load_older()
        wait(c, lambda: logs(c).entries[0].message == "line 15", "the older page")
    finally:
        server.close()


def test_resuming_follow_refetches_what_was_dropped(make_client):
    server = FakeV1Server(limit=3)
    try:
        c = make_client(server.url)
        wait(c, lambda: logs(c).loaded, "the first logs")
        c.set_following(False)
        for i in range(6):
            server.add_log("api", f"line {i}")
        wait(c, lambda: logs(c).newer_dropped, "the cap")
        assert [e.message for e in logs(c).entries] == ["line 0", "line 1", "line 2"]
        c.set_following(True)
        # Live events may show line 5 before the refetch fills in 3 and 4: wait for both.
        wait(c, lambda: [e.message for e in logs(c).entries] == ["line 3", "line 4", "line 5"],
             "the refetch")
        assert not logs(c).newer_dropped
    finally:
        server.close()


def test_log_events_the_server_dropped_are_fetched_back(server, make_client):
    c = make_client(server.url)
    wait(c, lambda: logs(c).loaded, "the first logs")
    server.add_log("api", "a")
    server.add_log("db", "b")
    server.add_log("api", "lost 1", broadcast=False)
    server.add_log("api", "lost 2", broadcast=False)
    gap_end = server.add_log("db", "c")
    wait(c, lambda: len(logs(c).entries) == 5, "the repair")
    assert [e.message for e in logs(c).entries] == ["a", "b", "lost 1", "lost 2", "c"]
    repair = [m for _, m in iter_commands(server) if "before_seq" in (m["payload"] or {})]
    assert repair[0]["payload"] == {"before_seq": gap_end["seq"], "limit": 2}


def iter_commands(server):
    while not server.commands.empty():
        yield server.commands.get_nowait()


def test_protocol_errors_and_junk_do_not_break_the_session(server, make_client):
    c = make_client(server.url)
    wait(c, lambda: c.view().state == CONNECTED, "the connection")
    server.broadcast({"type": "error", "payload": {"code": "invalid_json", "message": "bad"}})
    server.broadcast({"type": "event", "name": "log", "payload": {"seq": "x"}})
    server.broadcast({"type": "event", "name": "snapshot", "payload": {"services": 3}})
    server.broadcast(["not", "an", "object"])
    wait(c, lambda: c.view().notice and "invalid_json" in c.view().notice.text, "the error notice")
    assert c.request("get_snapshot").wait(10).ok
    assert c.view().state == CONNECTED


def test_entries_are_decoded_in_bulk_and_singly_when_one_is_bad():
    good = json.dumps({"type": "event"}).encode()
    assert transport.decode_messages([good, b"{oops", good]) == [{"type": "event"}] * 2
