"""lib.readiness: the wait (ready, cancel, timeout, waiting lines), the listen watcher, and
the exec and log probes (SPEC 6.2), against real processes and sockets."""
import http.server
import re
import subprocess
import threading

import pytest

from conftest import PY, free_port, wait_until
from lib import readiness
from lib.process import Process
from lib.readiness import (LogMatcher, Attempt, Probe, ReadinessWatcher, WakingEvent,
                           compile_pattern, exec_attempt, exec_probe, http_probe, log_probe,
                           not_ready_reason, tcp_probe, waiting_line)

LISTEN_LATER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
sys.stdin.readline()          # the test says when to listen
s.listen()
print("listening", flush=True)
sys.stdin.read()
"""


class NoTable:
    """A system without a table of listening sockets."""
    source = None

    def close(self):
        pass


@pytest.fixture(params=["table", "no table"])
def watcher(request):
    watcher = ReadinessWatcher(None if request.param == "table" else NoTable())
    yield watcher
    watcher.close()


@pytest.fixture
def later_listener():
    """A child process that binds a port and listens when told (a line on its stdin)."""
    port = free_port()
    child = subprocess.Popen([PY, "-c", LISTEN_LATER, str(port)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    yield child, port
    child.kill()
    child.wait()


def wait_in_thread(watcher, probe, cancel, **kwargs):
    result = {}
    thread = threading.Thread(
        target=lambda: result.setdefault("waited", watcher.wait(probe, cancel, **kwargs)))
    thread.start()
    return thread, result


def test_tcp_probe_is_ready_once_the_service_listens(watcher, later_listener):
    child, port = later_listener
    calls = []
    probe = tcp_probe(port)
    check = probe.check
    probe.check = lambda: calls.append(1) or check()
    thread, result = wait_in_thread(watcher, probe, WakingEvent())
    wait_until(lambda: len(calls) >= 3, message="a few refused attempts")
    assert thread.is_alive()
    child.stdin.write("go\n")
    child.stdin.flush()
    assert child.stdout.readline() == "listening\n"
    thread.join(15)
    assert result["waited"].state == "ready"


def test_the_watcher_fires_the_check_when_the_port_listens(later_listener):
    child, port = later_listener
    watcher = ReadinessWatcher()
    try:
        probe = tcp_probe(port)
        probe.interval = 600  # polling alone would not try again within the test
        thread, result = wait_in_thread(watcher, probe, WakingEvent())
        wait_until(lambda: watcher._watches, message="the port to be watched")
        child.stdin.write("go\n")
        child.stdin.flush()
        thread.join(15)
        assert result["waited"].state == "ready"
    finally:
        watcher.close()


class Flaky(http.server.BaseHTTPRequestHandler):
    status = 503

    def do_GET(self):
        self.send_response(Flaky.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_http_keeps_its_meaning_and_a_listening_503_is_polled_not_spun(watcher):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/health"
        probe = http_probe(url)
        assert probe.target == f"GET {url}" and probe.port == server.server_address[1]
        calls = []
        check = probe.check
        probe.check = lambda: calls.append(1) or check()
        thread, result = wait_in_thread(watcher, probe, WakingEvent())
        wait_until(lambda: len(calls) >= 6, message="attempts answered 503")
        # doubling from 10 ms reaches 6 attempts after ~0.3 s; a check fired at every 2 ms
        # scan would be past 100 by then
        assert len(calls) < 60 and thread.is_alive()
        Flaky.status = 200
        thread.join(15)
        assert result["waited"].state == "ready"
    finally:
        Flaky.status = 503
        server.shutdown()
        server.server_close()


def test_cancel_ends_the_wait_at_once(watcher):
    cancel = WakingEvent()
    probe = Probe("tcp 1", lambda: Attempt(False, "connection refused"), interval=60)
    thread, result = wait_in_thread(watcher, probe, cancel)
    wait_until(lambda: thread.is_alive(), message="the wait")
    cancel.set()
    thread.join(5)  # far less than the 60 s interval
    assert result["waited"].state == "cancelled"
    assert result["waited"].last == "connection refused"


def test_timeout_gives_the_last_outcome(watcher):
    port = free_port()
    waited = watcher.wait(tcp_probe(port), WakingEvent(), timeout=0.3)
    assert (waited.state, waited.last) == ("timeout", "connection refused")
    assert not_ready_reason(0.3, f"tcp {port}", waited.last) == \
        f"not ready after 0.3s (tcp {port} -> connection refused)"


def test_waiting_lines_every_period(watcher, monkeypatch):
    monkeypatch.setattr(readiness, "WAITING_EVERY", 0.2)
    lines = []
    probe = Probe("tcp 5432", lambda: Attempt(False, "connection refused"))
    waited = watcher.wait(probe, WakingEvent(), timeout=0.7, on_waiting=lines.append)
    assert waited.state == "timeout"
    assert len(lines) == 3
    assert all(re.fullmatch(r"waiting for ready: tcp 5432 -> connection refused \(\d+s\)", line)
               for line in lines)


def test_line_texts():
    url = "http://127.0.0.1:3000/health"
    assert waiting_line(f"GET {url}", "connection refused", 10.02) == \
        f"waiting for ready: GET {url} -> connection refused (10s)"
    assert waiting_line(f"GET {url}", "status 503", 14.9) == \
        f"waiting for ready: GET {url} -> status 503 (15s)"
    assert waiting_line("tcp 5432", "connection refused", 5) == \
        "waiting for ready: tcp 5432 -> connection refused (5s)"
    assert not_ready_reason(30, "tcp 5432", "connection refused") == \
        "not ready after 30s (tcp 5432 -> connection refused)"


# exec probe

def test_exec_success_failure_env_and_cwd(tmp_path):
    code = "import os, sys; sys.exit(0 if os.environ['WANT'] == open('flag').read() else 3)"
    (tmp_path / "flag").write_text("yes")
    assert exec_attempt([PY, "-c", code], {"WANT": "yes"}, str(tmp_path)).text == "exit code 0"
    failed = exec_attempt([PY, "-c", code], {"WANT": "no"}, str(tmp_path))
    assert (failed.ok, failed.text) == (False, "exit code 3")
    missing = exec_attempt(["/no/such/program"])
    assert not missing.ok and missing.text.startswith("cannot run /no/such/program: no such file")


def test_exec_hang_is_killed_with_its_group(tmp_path):
    pid_file = tmp_path / "grandchild"
    code = ("import subprocess, sys, time;"
            f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
            f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    outcome = exec_attempt([PY, "-c", code], limit=1.0)
    assert (outcome.ok, outcome.text) == (False, "timed out after 1s")
    grandchild = int(pid_file.read_text())
    wait_until(lambda: not alive(grandchild), message="the grandchild to be gone")


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_exec_attempt_ends_on_cancel():
    cancel = WakingEvent()
    threading.Timer(0.2, cancel.set).start()
    outcome = exec_attempt([PY, "-c", "import time; time.sleep(60)"], cancel=cancel, limit=30)
    assert outcome.text == "cancelled"


def test_exec_probe_waits_for_exit_0(watcher, tmp_path):
    code = "import os, sys; sys.exit(0 if os.path.exists('ready') else 1)"
    cancel = WakingEvent()
    probe = exec_probe([PY, "-c", code], None, str(tmp_path), cancel, interval=0.05)
    calls = []
    check = probe.check
    probe.check = lambda: calls.append(check()) or calls[-1]
    thread, result = wait_in_thread(watcher, probe, cancel)
    wait_until(lambda: len(calls) >= 2, message="failing attempts")
    assert calls[0].text == "exit code 1"
    (tmp_path / "ready").write_text("")
    thread.join(15)
    assert result["waited"].state == "ready"


# log probe

def run_and_match(matcher, code):
    """Run `code` as a real Process whose lines feed `matcher`; wait for it to exit."""
    done = threading.Event()
    proc = Process([PY, "-u", "-c", code], None, None, on_lines=matcher.feed,
                   on_exit=lambda _: done.set())
    proc.start()
    assert done.wait(15)


@pytest.mark.parametrize("stream, ready", [
    ("stdout", False), ("stderr", True), ("any", True),
])
def test_log_probe_matches_the_wanted_stream(stream, ready):
    matcher = LogMatcher(compile_pattern(r"compiled (\w+)ly"), stream)
    run_and_match(matcher, "import sys; print('compiled successfully', file=sys.stderr);"
                           "print('compiled, not yet')")
    assert matcher.matched.is_set() is ready
    if ready:
        assert matcher.outcome().text == "matched: compiled successfully"
    else:
        assert matcher.outcome().text == "no matching line yet"


def test_log_probe_wakes_the_wait_on_a_match(watcher):
    matcher = LogMatcher(compile_pattern("^ready$"), "stdout")
    probe = log_probe(matcher)
    assert probe.target == "log /^ready$/ on stdout"
    thread, result = wait_in_thread(watcher, probe, WakingEvent())
    run_and_match(matcher, "print('starting'); print('ready')")
    thread.join(5)  # the 1 s safety-net interval would do too; the match wakes it first
    assert result["waited"].state == "ready"


def test_bad_regex():
    with pytest.raises(ValueError, match=r"invalid regular expression: missing \), "
                                         r"unterminated subpattern at position 0"):
        compile_pattern("(abc")
