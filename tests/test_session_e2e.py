"""The session API over the real runtime, real services and the real server program."""
import signal
import subprocess

import pytest

from conftest import PY, ROOT, free_port, py_cmd, wait_until, write_config
from services import SLEEPER
from lib.config import load
from lib.logstore import LogStore
from lib.runtime import Runtime
from lib.session import SessionServer
from test_session import TOKEN, Client, http_get
from wsraw import RawClient



class Stack:
    """Config, store, runtime and session server in this process."""

    def __init__(self, tmp_path, services):
        self.config = load(write_config(tmp_path, {"services": services}))
        self.store = LogStore(self.config.buffer_size)
        self.runtime = Runtime(self.config, self.store)
        self.server = SessionServer(self.runtime, self.store, self.config, "127.0.0.1", 0, TOKEN)
        self.server.start()

    def client(self):
        return Client(self.server.url)

    def close(self):
        self.runtime.shutdown()
        self.server.close()
        self.store.close()


@pytest.fixture
def stack(tmp_path):
    stacks = []

    def make(services):
        stacks.append(Stack(tmp_path, services))
        return stacks[-1]

    yield make
    for s in stacks:
        s.close()


def statuses(client, service):
    return [e["payload"]["status"] for e in client.events
            if e["name"] == "service_status" and e["payload"]["service"] == service]


def test_start_stop_and_failed_start_through_the_session(stack):
    s = stack({
        "app": {"cmd": py_cmd(SLEEPER)},
        "bad": {"cmd": py_cmd("print('oops'); raise SystemExit(3)"), "kind": "oneshot"},
    })
    client, watcher = s.client(), s.client()
    assert client.command("start_service", {"service": "app"}) == ({"accepted": True},
                                                                   {"ok": True})
    assert statuses(client, "app") == ["starting", "running"]
    ack, result = client.command("start_service", {"service": "bad"})
    assert result == {"ok": False, "error": {"code": "start_failed",
                                             "message": result["error"]["message"]},
                      "failed_services": ["bad"]}
    assert statuses(client, "bad") == ["starting", "running", "failed"]
    assert client.command("stop_service", {"service": "app"})[1] == {"ok": True}
    assert statuses(client, "app")[-2:] == ["stopping", "stopped"]
    assert client.command("start_service", {"service": "nope"})[0]["error"] == {
        "code": "unknown_service", "message": 'service "nope" is not defined'}
    snapshot = client.command("get_snapshot")[1]["data"]["services"]
    assert snapshot == [{"name": "app", "status": "stopped"}, {"name": "bad", "status": "failed"}]
    # Another connection saw the same changes, in the same order.
    expected = [(e["payload"]["service"], e["payload"]["status"]) for e in client.events
                if e["name"] == "service_status"]
    seen = []
    while len(seen) < len(expected):
        message = watcher.recv()
        if message.get("name") == "service_status":
            seen.append((message["payload"]["service"], message["payload"]["status"]))
    assert seen == expected
    logs = client.command("get_logs", {"service": "bad"})[1]["data"]["entries"]
    assert "oops" in [e["message"] for e in logs]
    client.close()
    watcher.close()


def test_a_start_waiting_for_its_probe_blocks_nothing(stack):
    never = f"http://127.0.0.1:{free_port()}/"   # nothing will ever answer there
    s = stack({"slow": {"cmd": py_cmd(SLEEPER), "ready": {"type": "http", "url": never}},
               "other": {"cmd": py_cmd(SLEEPER)}})
    client, second = s.client(), s.client()
    client.send({"type": "command", "id": "start-slow", "name": "start_service",
                 "payload": {"service": "slow"}})
    assert client.wait_for("ack", "start-slow")["payload"] == {"accepted": True}
    wait_until(lambda: s.runtime.status("slow") == "running", message="slow to run")
    for c in (client, second):
        assert c.command("get_logs", {"service": "slow"})[1]["ok"]
        assert c.command("get_snapshot")[1]["ok"]
    assert second.command("start_service", {"service": "other"})[1] == {"ok": True}
    assert second.command("start_service", {"service": "slow"})[0]["error"]["code"] == \
        "service_busy"
    assert second.command("stop_service", {"service": "slow"})[1] == {"ok": True}
    result = client.wait_for("result", "start-slow")["payload"]
    assert result["ok"] is False and result["failed_services"] == ["slow"]
    client.close()
    second.close()


def test_flowlayer_server_program_serves_the_session(tmp_path):
    port = free_port()
    path = write_config(tmp_path, {"services": {
        "api": {"cmd": py_cmd(SLEEPER)},
        "job": {"cmd": py_cmd("print('job done')"), "kind": "oneshot", "dependsOn": ["api"]}}})
    server = subprocess.Popen([PY, f"{ROOT}/flowlayer.py", "-c", path, "-s", f"127.0.0.1:{port}",
                               "-token", TOKEN], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        wait_until(lambda: _health(port), timeout=30, message="the session API")
        client = Client(f"ws://127.0.0.1:{port}/ws")
        assert client.hello["payload"]["protocol_version"] == 1
        messages = wait_until(lambda: _server_lines(client, "boot: startup"), timeout=30,
                              message="the startup summary")
        assert f"boot: session api: ws://127.0.0.1:{port}/ws" in messages
        assert any(m.startswith("boot: startup ok") for m in messages)
        snapshot = client.command("get_snapshot")[1]["data"]["services"]
        assert snapshot == [{"name": "api", "status": "running"},
                            {"name": "job", "status": "stopped"}]
        raw = RawClient(port, TOKEN)
        raw.handshake()
        server.send_signal(signal.SIGTERM)
        assert raw.close_code() == 1001
        assert server.wait(30) == 0
    finally:
        if server.poll() is None:
            server.kill()
        out, err = server.communicate()
    assert "Traceback" not in err
    assert f"boot: session api: ws://127.0.0.1:{port}/ws" in out


def _health(port):
    try:
        return http_get(port)[0] == 200
    except OSError:
        return False


def _server_lines(client, prefix):
    """The server's own log lines once one of them starts with `prefix`, else None."""
    entries = client.command("get_logs", {"service": "flowlayer"})[1]["data"]["entries"]
    messages = [e["message"] for e in entries]
    return messages if any(m.startswith(prefix) for m in messages) else None
