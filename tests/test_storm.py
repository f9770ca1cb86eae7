"""Restart storm: 20 clients send random start/stop/restart (and now and then start_all or
stop_all) to the real server program at once.

Nothing may deadlock: every command gets one ack and, when accepted, one result. Every
client sees the same status events in the same order, each a legal change of state. When
the storm is over, the reported state of each service matches its processes (a service up
has exactly one live process, a service down has none), and after the shutdown no process
is left. A few seconds by default; FLOWLAYER_STRESS=1 storms for 30 s.
"""
import os
import random
import threading
import time
import uuid

from conftest import SESSION_TOKEN, free_port, pids_with_marker, py_cmd, wait_until
from services import HTTP_SERVER, TCP_LISTENER
from test_session import Client

STRESS = bool(os.environ.get("FLOWLAYER_STRESS"))
CLIENTS = 20
SECONDS = 30 if STRESS else 4
COMMAND_TIMEOUT = 90     # seconds a client waits for a message before calling it a deadlock
COMMANDS = ("start_service", "stop_service", "restart_service", "start_all", "stop_all")
WEIGHTS = (30, 30, 30, 2, 2)

FLAKY = "import time\ntime.sleep(0.2)\nraise SystemExit(1)"

# Legal changes of state (SPEC 3.2, 3.4). A start that fails or a oneshot that exits may be
# stopped while its start is still being resolved, hence failed/stopped -> stopping.
NEXT = {
    "unknown": {"starting"},
    "starting": {"running", "failed", "stopping"},
    "running": {"ready", "stopped", "failed", "stopping"},
    "ready": {"stopped", "failed", "stopping"},
    "stopping": {"stopped"},
    "stopped": {"starting", "stopping"},
    "failed": {"starting", "stopping"},
}
UP, DOWN = ("running", "ready"), ("stopped", "failed", "unknown")


def storm_services(marker):
    db, api = free_port(), free_port()
    services = {
        "db": {"cmd": py_cmd(TCP_LISTENER) + [str(db)], "port": db,
               "ready": {"type": "tcp"}},
        "cache": {"cmd": ["sleep", "600"], "stopCmd": ["true"]},
        "migrate": {"kind": "oneshot", "cmd": ["true"], "stopCmd": ["true"], "dependsOn": ["db"]},
        "api": {"cmd": py_cmd(HTTP_SERVER) + [str(api)], "port": api,
                "ready": {"type": "http", "url": f"http://127.0.0.1:{api}/health"},
                "dependsOn": ["db", "cache"]},
        "worker": {"cmd": ["sleep", "600"], "dependsOn": ["migrate"]},
        "web": {"cmd": ["sleep", "600"], "dependsOn": ["api"]},
        "flaky": {"cmd": py_cmd(FLAKY)},
    }
    for name, service in services.items():
        service["env"] = {"STORM_MARK": f"{marker}:{name}:"}
    return services


class StormClient:
    """One client's connection, commands and everything it received."""

    def __init__(self, url, seed, names):
        self.client = Client(url, token=SESSION_TOKEN)
        self.client.ws.settimeout(COMMAND_TIMEOUT)
        self.rng = random.Random(seed)
        self.seed = seed
        self.names = names
        self.answers = []        # (command, payload, ack payload, result payload or None)
        self.sent = 0
        self.failure = None

    def storm(self, deadline):
        """Send bursts of one to three commands at once, and wait for all their answers."""
        try:
            while time.monotonic() < deadline:
                burst = {}
                for _ in range(self.rng.randint(1, 3)):
                    name = self.rng.choices(COMMANDS, weights=WEIGHTS)[0]
                    payload = {"service": self.rng.choice(self.names)} if "service" in name \
                        else None
                    id = f"{self.seed}-{self.sent}"
                    self.sent += 1
                    burst[id] = [name, payload, None, None]
                    self.client.send({"type": "command", "id": id, "name": name,
                                      "payload": payload})
                self._collect(burst)
                self.answers += [tuple(answer) for answer in burst.values()]
        except Exception as exc:   # reported by the test, with the command it hung on
            self.failure = exc

    def _collect(self, burst):
        """Read until every command of the burst has its ack, and its result if accepted.
        Anything else, or a second answer, is kept in `seen` (stray_answers finds it)."""
        def done(answer):
            return answer[2] is not None and (not answer[2]["accepted"] or answer[3] is not None)
        while not all(map(done, burst.values())):
            message = self.client.recv()
            answer = burst.get(message.get("id"))
            if answer is not None and message["type"] == "ack" and answer[2] is None:
                answer[2] = message["payload"]
            elif (answer is not None and message["type"] == "result" and answer[3] is None
                  and answer[2] is not None and answer[2]["accepted"]):
                answer[3] = message["payload"]
            else:
                self.client.seen.append(message)

    def status_events(self):
        return [(e["payload"]["service"], e["payload"]["status"], e["payload"]["timestamp"])
                for e in self.client.events if e["name"] == "service_status"]

    def stray_answers(self):
        """Acks and results that matched no command: duplicates, or answers to nothing."""
        return [m for m in self.client.seen if m["type"] in ("ack", "result", "error")]


def reality(marker, snapshot):
    """Services whose reported state does not match their processes right now. flaky
    counts as wrong until it is down: it fails on its own, so only then is the state
    settled (nothing changes without a command)."""
    wrong = {}
    for entry in snapshot:
        pids = pids_with_marker(f"{marker}:{entry['name']}:")
        expected = 1 if entry["status"] in UP else 0 if entry["status"] in DOWN else None
        if entry["name"] == "flaky" and entry["status"] in UP:
            expected = None
        if len(pids) != expected:
            wrong[entry["name"]] = (entry["status"], pids)
    return wrong


def check_answer(name, payload, ack, result, names):
    if not ack["accepted"]:
        assert ack["error"]["code"] == "service_busy", (name, payload, ack)
        assert result is None
        return
    assert result is not None
    if result["ok"]:
        assert result == {"ok": True}, (name, payload, result)
        return
    failed = result["failed_services"]
    assert name not in ("stop_service", "stop_all"), (name, payload, result)
    assert result["error"] == {"code": "start_failed",
                               "message": "failed to start: " + ", ".join(failed)}
    assert failed == sorted(set(failed)) and set(failed) <= set(names), result


def test_restart_storm(session_stack):
    marker = f"FLOWLAYER_STORM_{uuid.uuid4().hex}"
    stack = session_stack(storm_services(marker))
    names = sorted(storm_services(marker))
    clients = []
    try:
        first = Client(stack.url, token=SESSION_TOKEN)
        # The boot is over; wait for flaky to fail on its own, then nothing changes by itself.
        wait_until(lambda: dict((s["name"], s["status"]) for s in first.command(
            "get_snapshot")[1]["data"]["services"])["flaky"] == "failed", message="flaky down")
        first.close()
        clients = [StormClient(stack.url, seed, names) for seed in range(CLIENTS)]
        start = clients[0].client.snapshot["payload"]["services"]
        assert all(c.client.snapshot["payload"]["services"] == start for c in clients)
        assert not reality(marker, start), reality(marker, start)

        deadline = time.monotonic() + SECONDS
        threads = [threading.Thread(target=c.storm, args=(deadline,)) for c in clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(SECONDS + 3 * COMMAND_TIMEOUT)
        hung = [c.seed for c, t in zip(clients, threads) if t.is_alive()]
        assert not hung, f"deadlock: clients {hung} still wait for an answer"
        failures = [(c.seed, c.failure, c.answers[-1:]) for c in clients if c.failure]
        assert not failures, f"clients lost their connection or an answer: {failures}"
        stack.assert_alive()

        answers = [a for c in clients for a in c.answers]
        for answer in answers:
            check_answer(*answer, names)
        accepted = sum(1 for a in answers if a[2]["accepted"])
        assert accepted >= CLIENTS, f"the storm barely ran: {len(answers)} commands"

        # Settled: reported states match the processes.
        probe = clients[0].client
        deadline = time.monotonic() + 30   # flaky may still be up, about to fail
        while True:
            final = probe.command("get_snapshot")[1]["data"]["services"]
            wrong = reality(marker, final)
            if not wrong or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert not wrong, f"reported states do not match the processes: {wrong}"

        # Every client: no stray answer, the same legal events in the same order, and
        # the final state is its snapshot plus its events.
        for c in clients:
            c.client.command("get_snapshot")   # every event before this answer has arrived
            assert not c.stray_answers(), c.stray_answers()
        events = clients[0].status_events()
        assert [e[2] for e in events] == sorted(e[2] for e in events), "timestamps went back"
        state = {s["name"]: s["status"] for s in start}
        for service, status, _ in events:
            assert status in NEXT[state[service]], f"{service}: {state[service]} -> {status}"
            state[service] = status
        assert [{"name": n, "status": state[n]} for n in names] == final
        for c in clients[1:]:
            assert c.status_events() == events, f"client {c.seed} saw other events"
        print(f"storm: {len(answers)} commands, {accepted} accepted, {len(events)} status events")
    finally:
        for c in clients:
            c.client.close()
        if stack.server.proc.poll() is None:
            stack.stop()
        wait_until(lambda: pids_with_marker(marker) == [], timeout=30, message="no orphans")
