"""get_services (SPEC 6.4) against real servers and services, the startup state through a
boot, a cancelled boot and a stop_all, and the boot lines about the session API."""
import datetime
import json
import os
import socket

import pytest
import websocket

from conftest import SESSION_TOKEN, free_port, py_cmd, wait_until, write_config
from lib import commands

SLEEP = "import time; time.sleep(600)"
V1 = ["get_snapshot", "get_logs", "start_service", "stop_service", "restart_service",
      "start_all", "stop_all"]


def listener(port, gate=None):
    """A daemon that listens on `port` (once `gate` exists, when given)."""
    wait = f"import os\nwhile not os.path.exists({gate!r}): time.sleep(0.02)\n" if gate else ""
    return py_cmd(f"import socket, time\n{wait}s = socket.socket()\n"
                  "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                  f"s.bind(('127.0.0.1', {port})); s.listen(); print('up', flush=True)\n"
                  "time.sleep(600)")


class Peer:
    """A raw protocol client: commands by name, every event recorded."""

    def __init__(self, url):
        self.ws = websocket.create_connection(url, header=[f"Authorization: Bearer {SESSION_TOKEN}"],
                                              timeout=60, suppress_origin=True)
        self.hello = json.loads(self.ws.recv())
        self.events = [json.loads(self.ws.recv())]
        self._ids = 0

    def ask(self, name, payload=None):
        """The result payload of a command (events meanwhile are recorded)."""
        self._ids += 1
        id = f"c{self._ids}"
        self.ws.send(json.dumps({"type": "command", "id": id, "name": name, "payload": payload}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == id and message["type"] in ("result", "ack"):
                if message["type"] == "result" or not message["payload"]["accepted"]:
                    return message["payload"]
            elif message["type"] == "event":
                self.events.append(message)

    def services(self):
        result = self.ask("get_services")
        assert result["ok"] is True, result
        return result["data"]

    def last_status_time(self, service):
        return [e["payload"]["timestamp"] for e in self.events
                if e.get("name") == "service_status" and e["payload"]["service"] == service][-1]

    def close(self):
        self.ws.close()


def by_name(data):
    return {item["name"]: item for item in data["services"]}


def rfc3339(text):
    moment = datetime.datetime.fromisoformat(text)
    assert moment.tzinfo is not None and "." in text
    return moment


@pytest.fixture
def taken_port():
    """A port something listens on, for a start that must fail."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_get_services_fields_for_each_kind_and_state(session_stack, taken_port, tmp_path):
    db_port = free_port()
    stack = session_stack({
        "db": {"cmd": listener(db_port), "port": db_port, "ready": {"type": "tcp"}},
        "plain": {"cmd": py_cmd(SLEEP)},
        "seed": {"kind": "oneshot", "cmd": py_cmd("print('seeded')"), "dependsOn": ["db"]},
        "crash": {"kind": "oneshot", "cmd": py_cmd("import sys; sys.exit(2)")},
        "bad": {"cmd": py_cmd("import sys; sys.exit(3)"), "ready": {"type": "tcp", "port": free_port()}},
        "after": {"cmd": ["sleep", "600"], "dependsOn": ["bad", "db"]},
        "taken": {"cmd": py_cmd(SLEEP), "port": taken_port},
    })
    peer = Peer(stack.url)
    assert peer.hello["payload"]["capabilities"][:7] == V1
    assert peer.hello["payload"]["capabilities"] == list(commands.NAMES)
    assert "get_services" in peer.hello["payload"]["capabilities"][7:]
    data = peer.services()
    assert [item["name"] for item in data["services"]] == sorted(
        ["db", "plain", "seed", "crash", "bad", "after", "taken"])
    assert data["startup"]["state"] == "done"
    assert data["startup"]["summary"].startswith(
        "startup incomplete: 2 running, 1 done, 3 failed_start, 1 blocked (")
    services = by_name(data)
    assert set(services["db"]) == {"name", "status", "kind", "probe", "port", "dependsOn",
                                   "satisfied", "pid", "exit_code", "reason", "since", "cmd"}

    db = services["db"]
    assert (db["status"], db["kind"], db["probe"], db["port"], db["dependsOn"]) == (
        "ready", "daemon", "tcp", db_port, [])
    assert db["satisfied"] is True and isinstance(db["pid"], int) and db["pid"] > 0
    assert (db["exit_code"], db["reason"]) == (None, None)
    assert db["cmd"] == stack_cmd(stack, "db")
    rfc3339(db["since"])
    with open(f"/proc/{db['pid']}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[0] == db["cmd"][0].encode()

    plain = services["plain"]
    assert (plain["status"], plain["probe"], plain["port"], plain["satisfied"]) == (
        "running", "none", 0, True)
    assert isinstance(plain["pid"], int)

    seed = services["seed"]   # a finished oneshot: stopped, exit code 0, satisfied
    assert (seed["status"], seed["kind"], seed["satisfied"], seed["pid"], seed["exit_code"],
            seed["dependsOn"]) == ("stopped", "oneshot", True, None, 0, ["db"])

    crash = services["crash"]
    assert (crash["status"], crash["satisfied"], crash["pid"], crash["exit_code"]) == (
        "failed", False, None, 2)

    bad = services["bad"]
    assert (bad["status"], bad["satisfied"], bad["pid"], bad["exit_code"], bad["reason"]) == (
        "failed", False, None, 3, "failed_start: process exited before ready (exit code 3)")

    after = services["after"]   # blocked: never started, and says why
    assert (after["status"], after["satisfied"], after["pid"], after["exit_code"],
            after["since"], after["reason"]) == (
        "unknown", False, None, None, None, "blocked: dependency bad failed")
    assert after["cmd"] == ["sleep", "600"] and after["dependsOn"] == ["bad", "db"]

    taken = services["taken"]
    assert (taken["status"], taken["pid"], taken["exit_code"]) == ("failed", None, None)
    assert taken["reason"].startswith(  # the holder is this test
        f"failed_start: port {taken_port} is already in use (pid {os.getpid()}: ")

    # A stopped daemon: no pid, the signal's exit code, not satisfied; since = its event.
    assert peer.ask("stop_service", {"service": "db"})["ok"] is True
    db = by_name(peer.services())["db"]
    assert (db["status"], db["pid"], db["exit_code"], db["satisfied"]) == ("stopped", None, -15, False)
    assert db["since"] == peer.last_status_time("db")
    seed_before = by_name(peer.services())["seed"]["since"]

    # A new run forgets the old run's reason and exit code; a restarted oneshot runs again.
    assert peer.ask("start_service", {"service": "after"})["ok"] is False   # bad fails again
    after = by_name(peer.services())["after"]
    assert after["reason"] == "blocked: dependency bad failed" and after["pid"] is None
    assert peer.ask("start_service", {"service": "seed"})["ok"] is True
    services = by_name(peer.services())
    assert services["db"]["status"] == "ready" and services["db"]["exit_code"] is None
    assert services["seed"]["exit_code"] == 0 and services["seed"]["since"] > seed_before
    peer.close()
    stack.stop()


def stack_cmd(stack, name):
    with open(stack.path) as f:
        return json.load(f)["services"][name]["cmd"]


def test_startup_state_through_a_boot_and_a_stop_all(tmp_path, server):
    port, gate = free_port(), str(tmp_path / "gate")
    api = free_port()
    path = write_config(tmp_path, {"services": {
        "db": {"cmd": listener(port, gate), "port": port, "ready": {"type": "tcp"}},
        "web": {"cmd": py_cmd(SLEEP), "dependsOn": ["db"]}}})
    s = server("-c", path, "-s", f"127.0.0.1:{api}", "-token", SESSION_TOKEN)
    s.wait_line("boot: session api:")
    peer = Peer(f"ws://127.0.0.1:{api}/ws")
    data = peer.services()
    assert data["startup"] == {"state": "booting", "summary": None}
    assert by_name(data)["db"]["satisfied"] is False
    open(gate, "w").close()
    s.wait_line("boot: startup ok")
    data = peer.services()
    assert data["startup"]["state"] == "done"
    assert data["startup"]["summary"].startswith("startup ok: 2 running, 0 done, 0 failed_start, 0 blocked (")
    assert ("[flowlayer] boot: " + data["startup"]["summary"]) in s.lines
    assert peer.ask("stop_all")["ok"] is True
    data = peer.services()
    assert data["startup"]["state"] == "done"   # the last start's outcome stays
    assert {item["status"] for item in data["services"]} == {"stopped"}
    assert peer.ask("start_all")["ok"] is True
    data = peer.services()
    assert data["startup"]["state"] == "done"
    assert data["startup"]["summary"].startswith("startup ok: 2 running")
    peer.close()
    assert s.stop() == 0


def test_a_cancelled_boot(tmp_path, server):
    port, api = free_port(), free_port()
    path = write_config(tmp_path, {"services": {
        "db": {"cmd": listener(port, str(tmp_path / "never")), "port": port, "ready": {"type": "tcp"}},
        "web": {"cmd": py_cmd(SLEEP), "dependsOn": ["db"]}}})
    s = server("-c", path, "-s", f"127.0.0.1:{api}", "-token", SESSION_TOKEN)
    s.wait_line("boot: session api:")
    peer = Peer(f"ws://127.0.0.1:{api}/ws")
    wait_until(lambda: by_name(peer.services())["db"]["status"] == "running", message="db running")
    assert peer.services()["startup"]["state"] == "booting"
    assert peer.ask("stop_all")["ok"] is True
    s.wait_line("boot: startup cancelled")
    data = peer.services()
    assert data["startup"]["state"] == "cancelled"
    assert data["startup"]["summary"].startswith("startup cancelled: 0 running, 0 done, 1 failed_start, 0 blocked (")
    db = by_name(data)["db"]
    assert (db["status"], db["pid"], db["satisfied"]) == ("stopped", None, False)
    peer.close()
    assert s.stop() == 0


def test_idle_until_anything_runs(stack):
    s = stack({"a": {"cmd": py_cmd(SLEEP)}})
    assert s.runtime.describe()["startup"] == {"state": "idle", "summary": None}
    assert s.runtime.describe()["services"][0]["since"] is None
    s.runtime.claim_stop_all()()
    assert s.runtime.describe()["startup"] == {"state": "done", "summary": None}


def test_probe_kind_is_read_from_the_config(stack):
    s = stack({"h": {"cmd": py_cmd(SLEEP), "ready": {"type": "http", "url": "http://127.0.0.1:1/"}},
               "n": {"cmd": py_cmd(SLEEP), "ready": {"type": "none"}}})
    probes = {item["name"]: item["probe"] for item in s.runtime.describe()["services"]}
    assert probes == {"h": "http", "n": "none"}


# ---- boot lines about the session API -----------------------------------------------------

def test_boot_says_when_the_session_api_is_off(tmp_path, server):
    path = write_config(tmp_path, {"services": {"a": {"cmd": py_cmd(SLEEP)}}})
    s = server("-c", path)
    s.wait_line("boot: startup ok")
    assert "[flowlayer] boot: session api: off (no session.bind and no -s)" in s.lines
    assert not any("session.addr" in line for line in s.lines)
    assert s.stop() == 0


def test_boot_explains_addr_without_bind(tmp_path, server):
    path = write_config(tmp_path, {"session": {"addr": "127.0.0.1:6999"},
                                   "services": {"a": {"cmd": py_cmd(SLEEP)}}})
    s = server("-c", path)
    s.wait_line("boot: startup ok")
    assert "[flowlayer] boot: session api: off (no session.bind and no -s)" in s.lines
    assert ("[flowlayer] boot: session.addr is the client's field (where tui.py connects); "
            "session.bind enables the session API") in s.lines
    assert s.stop() == 0


def test_no_off_line_when_the_api_is_on(tmp_path, server):
    path = write_config(tmp_path, {"session": {"addr": "127.0.0.1:6999"},
                                   "services": {"a": {"cmd": py_cmd(SLEEP)}}})
    s = server("-c", path, "-s", f"127.0.0.1:{free_port()}")
    s.wait_line("boot: startup ok")
    assert not any("session api: off" in line or "session.addr" in line for line in s.lines)
    assert s.stop() == 0
