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

    def __init__(self, *args, cwd=None, env=None):
        import subprocess
        import threading
        self.lines = []
        self.proc = subprocess.Popen(
            [PY, os.path.join(ROOT, "flowlayer.py"), *args], cwd=cwd, env=env,
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
            with open(f"/proc/{entry}/stat") as f:
                if f.read().rsplit(") ", 1)[-1][:1] == "Z":
                    continue
        except OSError:
            continue
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
