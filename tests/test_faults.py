"""Faults during operation: outside kills, hanging stop commands and probes, odd output."""
import os
import signal
import threading

from conftest import free_port, py_cmd, wait_until
from services import SLEEPER, STUBBORN
from lib import runtime as runtime_module



def start_in_background(stack, name):
    result = {}
    thread = threading.Thread(target=lambda: result.update(out=stack.runtime.run("start_service", name)))
    thread.start()
    return thread, result


def test_sigkill_while_starting(stack):
    s = stack({"api": {"cmd": py_cmd(SLEEPER), "ready": {"type": "tcp", "port": free_port()}}})
    thread, result = start_in_background(s, "api")
    wait_until(lambda: s.runtime.status("api") == "running" and "up" in s.lines("api"), message="probing")
    os.kill(s.runtime.pids()[0], signal.SIGKILL)
    thread.join(15)
    assert not result["out"].ok
    assert s.statuses("api") == ["starting", "running", "failed"]
    assert "failed_start: process exited before ready (signal SIGKILL)" in s.lines("api", "system")


def test_sigkill_while_ready(stack):
    s = stack({"app": {"cmd": py_cmd(SLEEPER)}})
    s.runtime.run("start_service", "app")
    os.kill(s.runtime.pids()[0], signal.SIGKILL)
    wait_until(lambda: s.runtime.status("app") == "failed", message="failed")
    assert "exited (signal SIGKILL)" in s.lines("app", "system")
    assert s.runtime.run("start_service", "app").ok   # and it can be started again


def test_sigkill_while_being_stopped(stack):
    s = stack({"app": {"cmd": py_cmd(STUBBORN)}})
    s.runtime.run("start_service", "app")
    wait_until(lambda: "up" in s.lines("app"), message="handler installed")
    pid = s.runtime.pids()[0]
    stopper = threading.Thread(target=s.runtime.run, args=("stop_service", "app"))
    stopper.start()
    wait_until(lambda: s.runtime.status("app") == "stopping", message="stopping")
    os.kill(pid, signal.SIGKILL)
    stopper.join(4)   # well before the 5 s grace would have run out
    assert not stopper.is_alive()
    assert s.statuses("app")[-2:] == ["stopping", "stopped"]


def test_hanging_stop_cmd_is_bounded(stack, monkeypatch):
    monkeypatch.setattr(runtime_module, "STOP_CMD_TIMEOUT", 0.5)
    s = stack({"app": {"cmd": py_cmd(SLEEPER), "stopCmd": py_cmd("import time;time.sleep(600)")}})
    s.runtime.run("start_service", "app")
    assert s.runtime.run("stop_service", "app").ok
    assert "stopCmd still running after 0.5s: killed" in s.lines("app", "system")
    assert s.runtime.pids() == []
    assert s.statuses("app")[-1] == "stopped"


def test_probe_that_never_answers_does_not_hold_up_stop_or_shutdown(stack):
    import socket
    with socket.create_server(("127.0.0.1", 0)) as silent:   # accepts, never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/health"
        s = stack({"api": {"cmd": py_cmd(SLEEPER), "ready": {"type": "http", "url": url}},
                   "web": {"cmd": py_cmd(SLEEPER), "ready": {"type": "http", "url": url}}})
        thread, result = start_in_background(s, "api")
        wait_until(lambda: s.runtime.status("api") == "running", message="probing")
        assert s.runtime.run("stop_service", "api").ok
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
    s.runtime.run("start_service", "app")
    wait_until(lambda: "still here" in s.lines("app", "stderr"), message="stderr after closing stdout")
    assert "bye stdout" in s.lines("app", "stdout")
    assert s.runtime.status("app") == "running"
    assert s.runtime.run("stop_service", "app").ok
    assert s.runtime.status("app") == "stopped"


def test_ten_megabytes_of_stderr_without_newline(stack):
    code = "import os;b=b'x'*1048576\nfor _ in range(10): os.write(2,b)"
    s = stack({"flood": {"kind": "oneshot", "cmd": py_cmd(code)}})
    assert s.runtime.run("start_service", "flood").ok
    pieces = s.lines("flood", "stderr")
    assert sum(map(len, pieces)) == 10 * 1048576
    assert max(map(len, pieces)) == 65536


def test_a_thousand_short_lived_children(stack):
    code = ("import os\nfor i in range(1000):\n  pid=os.fork()\n  if pid==0: os._exit(0)\n  os.waitpid(pid,0)\n"
            "print('forked 1000',flush=True)\nimport time;time.sleep(600)")
    s = stack({"forker": {"cmd": py_cmd(code)}})
    s.runtime.run("start_service", "forker")
    wait_until(lambda: "forked 1000" in s.lines("forker"), timeout=60, message="forks done")
    assert s.runtime.run("stop_service", "forker").ok
    assert s.runtime.pids() == []
