"""Shared test helpers: free ports, waiting on conditions, writing configs."""
import json
import os
import socket
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

PY = sys.executable


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout=15.0, interval=0.01, message="condition"):
    """Poll `predicate` until it returns a truthy value; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def write_config(directory, data, name="flowlayer.jsonc"):
    """Write `data` (a dict, or raw text) as a config file and return its path."""
    path = os.path.join(str(directory), name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(data if isinstance(data, str) else json.dumps(data, indent=2))
    return path


def py_cmd(code):
    """argv running a Python one-liner with the test interpreter."""
    return [PY, "-u", "-c", code]


class ServerProcess:
    """`python flowlayer.py ARGS` with its output collected line by line."""

    def __init__(self, *args, cwd=None, env=None, prefix=()):
        import subprocess
        import threading
        self.lines = []
        self.proc = subprocess.Popen(  # `prefix`: a wrapper command, e.g. unshare
            [*prefix, PY, os.path.join(ROOT, "flowlayer.py"), *args], cwd=cwd, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def wait_line(self, text, timeout=20):
        """Wait for an output line containing `text`; return it."""
        return wait_until(lambda: next((l for l in self.lines if text in l), None),
                          timeout, message=f"output line {text!r}; got {self.lines[-5:]}")

    def stop(self, sig=None, timeout=30):
        """Signal the server (SIGTERM by default) and return its exit code."""
        import signal
        if self.proc.poll() is None:
            self.proc.send_signal(sig or signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        return code


@pytest.fixture
def server():
    """Start servers with `server(*args)`; each is stopped (SIGTERM) after the test."""
    started = []

    def start(*args, **kwargs):
        started.append(ServerProcess(*args, **kwargs))
        return started[-1]

    yield start
    for s in started:
        if s.proc.poll() is None:
            s.stop()


def alive(pid):
    """True while `pid` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[-1][:1] != "Z"
    except OSError:
        return False


def pids_with_marker(marker):
    """Live (non-zombie) processes whose environment contains `marker`."""
    found = []
    needle = marker.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle not in f.read():
                    continue
        except OSError:
            continue
        if alive(int(entry)):
            found.append(int(entry))
    return found


class Stack:
    """An in-process runtime over a config written to tmp_path, recording every status event."""

    def __init__(self, tmp_path, services, **top):
        from lib.config import load
        from lib.logstore import LogStore
        from lib.runtime import Runtime
        self.path = write_config(tmp_path, {"services": services, **top})
        self.config = load(self.path)
        self.store = LogStore(self.config.buffer_size, self.config.logs_dir)
        self.runtime = Runtime(self.config, self.store)
        self.events = []
        self.runtime.subscribe(self.events.append)

    def statuses(self, name):
        return [e.status for e in self.events if e.service == name]

    def lines(self, name, stream=None):
        entries, _ = self.store.query(name, limit=100000)
        return [e.message for e in entries if stream is None or e.stream == stream]

    def close(self):
        self.runtime.shutdown()
        self.store.close()


@pytest.fixture
def stack(tmp_path):
    made = []

    def make(services, **top):
        made.append(Stack(tmp_path, services, **top))
        return made[-1]

    yield make
    for s in made:
        s.close()


# ---- a server with its session API, for the hostile-input, storm and fault tests ----------

SESSION_TOKEN = "test-session-token"


def process_usage(pid):
    """(threads, open file descriptors) of a live process, read from /proc."""
    with open(f"/proc/{pid}/status") as f:
        threads = next(int(line.split()[1]) for line in f if line.startswith("Threads:"))
    return threads, len(os.listdir(f"/proc/{pid}/fd"))


class SessionStack:
    """`flowlayer.py` over `services` with the session API on a free 127.0.0.1 port,
    returned once the boot summary is out."""

    def __init__(self, directory, services, env=None, **top):
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.path = write_config(directory, {"services": services, **top})
        self.server = ServerProcess("-c", self.path, "-s", f"127.0.0.1:{self.port}",
                                    "-token", SESSION_TOKEN, env=env)
        self.server.wait_line("boot: startup ")

    @property
    def pid(self):
        return self.server.proc.pid

    def usage(self):
        return process_usage(self.pid)

    def assert_alive(self):
        """The server runs and has printed no traceback (an uncaught error on a thread)."""
        assert self.server.proc.poll() is None, f"server exited: {self.server.lines[-10:]}"
        assert not any("Traceback" in line for line in self.server.lines), \
            "\n".join(self.server.lines[-40:])

    def stop(self):
        """SIGTERM; assert a clean exit without a traceback."""
        code = self.server.stop()
        assert code == 0, self.server.lines[-20:]
        assert not any("Traceback" in line for line in self.server.lines)


@pytest.fixture
def session_stack(tmp_path):
    """Start SessionStacks with `session_stack(services, **top)`; whatever happens in the
    test, each one still running afterwards gets SIGTERM."""
    made = []

    def make(services, **top):
        made.append(SessionStack(tmp_path, services, **top))
        return made[-1]

    yield make
    for stack in made:
        if stack.server.proc.poll() is None:
            stack.server.stop()


class Prober:
    """A well-behaved client asking get_snapshot over and over on its own thread: proof that
    the server keeps serving others while a test abuses it."""

    def __init__(self, url, token=SESSION_TOKEN):
        import threading
        import websocket
        self._ws = websocket.create_connection(
            url, header=[f"Authorization: Bearer {token}"], timeout=30,
            skip_utf8_validation=True, suppress_origin=True)
        self.answered = 0
        self.failure = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prober", daemon=True)
        self._thread.start()

    def _run(self):
        try:
            while not self._stop.is_set():
                id = f"probe-{self.answered}"
                self._ws.send(json.dumps({"type": "command", "id": id, "name": "get_snapshot"}))
                answers = []
                while len(answers) < 2:
                    message = json.loads(self._ws.recv())
                    if message.get("id") == id:
                        answers.append((message["type"], message["payload"]))
                assert answers[0] == ("ack", {"accepted": True}), answers
                assert answers[1][0] == "result" and answers[1][1]["ok"], answers
                self.answered += 1
                self._stop.wait(0.02)   # pace, so the prober does not hog a core
        except Exception as exc:   # reported by assert_serving
            self.failure = exc

    def assert_serving(self, timeout=30):
        """Two more round trips complete, and none has failed so far."""
        start = self.answered
        wait_until(lambda: self.failure is not None or self.answered >= start + 2, timeout,
                   message="the prober's get_snapshot answers")
        assert self.failure is None, f"a well-behaved client was not served: {self.failure!r}"

    def close(self):
        self._stop.set()
        self._thread.join(30)
        self._ws.close()


def watched_session(directory, services):
    """Body of a module fixture `watched_server`: one server for the module, and a prober
    that uses it all along."""
    from types import SimpleNamespace
    stack = SessionStack(directory, services)
    ns = SimpleNamespace(stack=stack, prober=Prober(stack.url))
    yield ns
    ns.prober.close()
    stack.stop()


@pytest.fixture
def healthy(watched_server):
    """After each test: the server of the module's `watched_server` is up, printed no
    traceback, and served the prober."""
    yield watched_server
    watched_server.stack.assert_alive()
    watched_server.prober.assert_serving()
