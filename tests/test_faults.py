"""Faults during operation: outside kills, hanging stop commands and probes, odd output."""
import os
import signal
import socket
import threading

import pytest

from conftest import free_port, py_cmd, wait_until, write_config
from services import SLEEPER, STUBBORN
from lib import runtime as runtime_module



def start_in_background(stack, name):
    result = {}
    thread = threading.Thread(target=lambda: result.update(out=stack.runtime.claim_start(name)()))
    thread.start()
    return thread, result


def test_sigkill_while_starting(stack):
    s = stack({"api": {"cmd": py_cmd(SLEEPER), "ready": {"type": "tcp", "port": free_port()}}})
    thread, result = start_in_background(s, "api")
    wait_until(lambda: s.runtime.status("api") == "running" and "up" in s.lines("api"), message="probing")
    os.kill(s.runtime.process_groups()[0], signal.SIGKILL)
    thread.join(15)
    assert not result["out"].ok
    assert s.statuses("api") == ["starting", "running", "failed"]
    assert "failed_start: process exited before ready (signal SIGKILL)" in s.lines("api", "system")


def test_sigkill_while_ready(stack):
    s = stack({"app": {"cmd": py_cmd(SLEEPER)}})
    s.runtime.claim_start("app")()
    os.kill(s.runtime.process_groups()[0], signal.SIGKILL)
    wait_until(lambda: s.runtime.status("app") == "failed", message="failed")
    assert "exited (signal SIGKILL)" in s.lines("app", "system")
    assert s.runtime.claim_start("app")().ok   # and it can be started again


def test_sigkill_while_being_stopped(stack):
    s = stack({"app": {"cmd": py_cmd(STUBBORN)}})
    s.runtime.claim_start("app")()
    wait_until(lambda: "up" in s.lines("app"), message="handler installed")
    pid = s.runtime.process_groups()[0]
    stopper = threading.Thread(target=s.runtime.claim_stop("app"))
    stopper.start()
    wait_until(lambda: s.runtime.status("app") == "stopping", message="stopping")
    os.kill(pid, signal.SIGKILL)
    stopper.join(4)   # well before the 5 s grace would have run out
    assert not stopper.is_alive()
    assert s.statuses("app")[-2:] == ["stopping", "stopped"]


def test_hanging_stop_cmd_is_bounded(stack, monkeypatch):
    monkeypatch.setattr(runtime_module, "STOP_CMD_TIMEOUT", 0.5)
    s = stack({"app": {"cmd": py_cmd(SLEEPER), "stopCmd": py_cmd("import time;time.sleep(600)")}})
    s.runtime.claim_start("app")()
    assert s.runtime.claim_stop("app")().ok
    assert "stopCmd still running after 0.5s: killed" in s.lines("app", "system")
    assert s.runtime.process_groups() == []
    assert s.statuses("app")[-1] == "stopped"


def test_probe_that_never_answers_does_not_hold_up_stop_or_shutdown(stack):
    import socket
    with socket.create_server(("127.0.0.1", 0)) as silent:   # accepts, never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/health"
        s = stack({"api": {"cmd": py_cmd(SLEEPER), "ready": {"type": "http", "url": url}},
                   "web": {"cmd": py_cmd(SLEEPER), "ready": {"type": "http", "url": url}}})
        thread, result = start_in_background(s, "api")
        wait_until(lambda: s.runtime.status("api") == "running", message="probing")
        assert s.runtime.claim_stop("api")().ok
        thread.join(10)
        assert not thread.is_alive() and not result["out"].ok
        thread, result = start_in_background(s, "web")
        wait_until(lambda: s.runtime.status("web") == "running", message="probing")
        s.runtime.shutdown()
        thread.join(10)
        assert not thread.is_alive()
        assert s.runtime.status("web") == "stopped"


def test_service_that_closes_stdout_keeps_running(stack):
    code = "import os,sys,time;print('bye stdout',flush=True);os.close(1);print('still here',file=sys.stderr,flush=True);time.sleep(600)"
    s = stack({"app": {"cmd": py_cmd(code)}})
    s.runtime.claim_start("app")()
    wait_until(lambda: "still here" in s.lines("app", "stderr"), message="stderr after closing stdout")
    wait_until(lambda: "bye stdout" in s.lines("app", "stdout"), message="stdout before it closed")
    assert s.runtime.status("app") == "running"
    assert s.runtime.claim_stop("app")().ok
    assert s.runtime.status("app") == "stopped"


def test_ten_megabytes_of_stderr_without_newline(stack):
    code = "import os;b=b'x'*1048576\nfor _ in range(10): os.write(2,b)"
    s = stack({"flood": {"kind": "oneshot", "cmd": py_cmd(code)}})
    assert s.runtime.claim_start("flood")().ok
    pieces = s.lines("flood", "stderr")
    assert sum(map(len, pieces)) == 10 * 1048576
    assert max(map(len, pieces)) == 65536


def test_a_thousand_short_lived_children(stack):
    code = ("import os\nfor i in range(1000):\n  pid=os.fork()\n  if pid==0: os._exit(0)\n  os.waitpid(pid,0)\n"
            "print('forked 1000',flush=True)\nimport time;time.sleep(600)")
    s = stack({"forker": {"cmd": py_cmd(code)}})
    s.runtime.claim_start("forker")()
    wait_until(lambda: "forked 1000" in s.lines("forker"), timeout=60, message="forks done")
    assert s.runtime.claim_stop("forker")().ok
    assert s.runtime.process_groups() == []


# ---- a probe whose attempt never ends ---------------------------------------------------

class SlowHttp:
    """A ready URL, served by a thread of the test (outside every service's group), that
    answers one byte every 20 ms without end: an HTTP probe attempt on it never completes."""

    def __init__(self):
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}/health"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.requests = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn):
        head = b"HTTP/1.1 200 OK\r\nX-Slow: "
        with conn:
            try:
                conn.recv(65536)
                with self._lock:
                    self.requests += 1
                sent = 0
                while not self._stop.wait(0.02):   # the pace of the answer, not a wait for us
                    conn.sendall(head[sent:sent + 1] or b"a")
                    sent += 1
            except OSError:
                return

    def close(self):
        self._stop.set()
        self._server.close()


@pytest.fixture
def slow_http():
    responder = SlowHttp()
    yield responder
    responder.close()


def test_slow_http_probe_holds_up_neither_stop_nor_the_next_start_nor_shutdown(stack, slow_http):
    s = stack({"api": {"cmd": py_cmd(SLEEPER), "ready": {"type": "http", "url": slow_http.url}}})
    thread, result = start_in_background(s, "api")
    wait_until(lambda: slow_http.requests >= 1, message="a probe attempt under way")
    assert s.runtime.claim_stop("api")().ok
    thread.join(10)
    assert not thread.is_alive() and not result["out"].ok
    thread, result = start_in_background(s, "api")     # accepted: not service_busy
    wait_until(lambda: slow_http.requests >= 2, message="the second start's probe")
    s.runtime.shutdown()
    thread.join(10)
    assert not thread.is_alive() and not result["out"].ok
    assert s.runtime.status("api") == "stopped"
    assert s.lines("api", "system").count("stopping") == 2    # once per stop, no more


def test_sigterm_during_a_boot_on_a_slow_probe_exits_promptly(server, slow_http, tmp_path):
    path = write_config(tmp_path, {"services": {
        "api": {"cmd": py_cmd(SLEEPER), "ready": {"type": "http", "url": slow_http.url}},
        "web": {"cmd": py_cmd(SLEEPER), "dependsOn": ["api"]}}})
    flowlayer = server("-c", path)
    wait_until(lambda: slow_http.requests >= 1, message="the boot's probe attempt")
    assert flowlayer.stop(timeout=20) == 0
    assert [line for line in flowlayer.lines if line.endswith("| stopping")] == [
        next(line for line in flowlayer.lines if line.endswith("| stopping"))]
    assert any("boot: startup cancelled: 0 running, 0 done, 1 failed_start" in line
               for line in flowlayer.lines)
    assert any("shutdown: complete" in line for line in flowlayer.lines)


# ---- the orphan guardian's list ------------------------------------------------------------

class RecordingGuardian:
    """The guardian's list as the server's messages leave it; a forget of a group that is
    not listed (sent before its watch) is recorded."""

    def __init__(self):
        self._lock = threading.Lock()
        self.listed = set()
        self.early_forgets = []

    def watch(self, pgid):
        with self._lock:
            self.listed.add(pgid)

    def forget(self, pgid):
        with self._lock:
            if pgid not in self.listed:
                self.early_forgets.append(pgid)
            self.listed.discard(pgid)


def guarded_runtime(tmp_path, services):
    from lib.config import load
    from lib.logstore import LogStore
    from lib.runtime import Runtime
    guardian = RecordingGuardian()
    store = LogStore()
    runtime = Runtime(load(write_config(tmp_path, {"services": services})), store, guardian)
    return runtime, store, guardian


def test_quick_exits_leave_nothing_on_the_guardians_list(tmp_path):
    runtime, store, guardian = guarded_runtime(tmp_path, {"job": {"kind": "oneshot", "cmd": ["true"]}})
    try:
        for _ in range(100):
            assert runtime.claim_start("job")().ok
        assert guardian.early_forgets == []
        wait_until(lambda: not guardian.listed, message=f"an empty list, not {guardian.listed}")
    finally:
        runtime.shutdown()
        store.close()


def test_a_group_that_outlives_its_leader_is_forgotten_once_empty(tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    code = ("import subprocess\n"
            "p=subprocess.Popen(['sleep','600'],stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL)\n"
            f"open({str(pidfile)!r},'w').write(str(p.pid))")
    runtime, store, guardian = guarded_runtime(tmp_path, {"job": {"kind": "oneshot", "cmd": py_cmd(code)}})
    try:
        assert runtime.claim_start("job")().ok
        grandchild = int(pidfile.read_text())
        assert guardian.listed == {os.getpgid(grandchild)}   # still ours: still listed
        os.kill(grandchild, signal.SIGKILL)
        wait_until(lambda: not guardian.listed, message="the emptied group forgotten")
    finally:
        runtime.shutdown()
        store.close()
