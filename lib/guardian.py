"""Orphan guard: a small process that outlives a server killed without cleanup.

The server tells it, over a pipe, which process groups it owns (`+PGID` / `-PGID` lines).
When the pipe closes, because the server exited for whatever reason (SIGKILL, crash, out
of memory, or a clean shutdown), the guardian sends SIGTERM to every group still alive,
SIGKILL after a grace period, and exits. It blocks on the pipe and costs nothing until
then. Stdlib only: it runs as `python guardian.py`, outside the package.
"""
import os
import signal
import subprocess
import sys
import threading
import time

GRACE = 5.0


class Guardian:
    """The server's side: spawns the guardian and reports groups to it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__)], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True)

    def watch(self, pgid):
        self._send(f"+{pgid}\n")

    def forget(self, pgid):
        self._send(f"-{pgid}\n")

    def _send(self, line):
        with self._lock:
            try:
                self._proc.stdin.write(line.encode())
                self._proc.stdin.flush()
            except (OSError, ValueError):
                pass

    def close(self):
        """Clean shutdown: closing the pipe lets the guardian sweep and exit."""
        with self._lock:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
        try:
            self._proc.wait(GRACE + 5)
        except subprocess.TimeoutExpired:
            self._proc.kill()


def _signal_groups(groups, sig):
    """Signal every group; return those that still exist."""
    alive = set()
    for pgid in groups:
        try:
            os.killpg(pgid, sig)
            alive.add(pgid)
        except (ProcessLookupError, PermissionError):
            pass
    return alive


def sweep(groups, grace=GRACE):
    """SIGTERM every group, then SIGKILL whatever is left after `grace` seconds."""
    alive = _signal_groups(groups, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = _signal_groups(alive, 0)
    _signal_groups(alive, signal.SIGKILL)


def main():
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    groups = set()
    for line in sys.stdin.buffer:
        try:
            pgid = int(line[1:])
        except ValueError:
            continue
        if line.startswith(b"+"):
            groups.add(pgid)
        elif line.startswith(b"-"):
            groups.discard(pgid)
    sweep(groups)


if __name__ == "__main__":
    main()
