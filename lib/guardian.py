"""Orphan guard: a small process that outlives a server killed without cleanup.

When its pipe from the server closes, because the server exited for whatever reason
(SIGKILL, crash, out of memory, or a clean shutdown), the guardian sends SIGTERM to the
process groups of every live process that is still ours, SIGKILL after a grace period,
and exits as soon as none is left alive (zombies do not count). It blocks on the pipe and
costs nothing until then.

What is ours is checked just before each signal, never remembered, so a group id that
has been reused by someone else is never signalled:
- Linux: a process whose environment holds this run's marker (RUN_MARKER=RUN_ID, set on
  every service process and inherited by what it starts, even across setsid), or, while
  the server lives, a child of the server (a subreaper: what escaped its group and wiped
  its environment lands there). The +PGID/-PGID lines are not needed.
- elsewhere (no /proc): the groups the server listed with `+PGID` and not withdrawn with
  `-PGID`, pruned of groups that are gone; a group id reused after its group died unseen
  can still be hit there.
Stdlib only: it runs as `python -c '...main()' RUN_ID SERVER_PID`, importing nothing else of the
package.
"""
import os
import signal
import subprocess
import sys
import threading
import time

GRACE = 5.0
POLL = 0.05  # seconds between two looks at what is left during the grace period
RUN_MARKER = "FLOWLAYER_RUN"  # lib/process.py sets it on every process it spawns
PROC = "/proc"


def _launcher():
    """The `python -c` text that runs this module's `main` from wherever the package lives:
    a checkout, a vendored copy, site-packages or inside flowlayer.pyz (a file in a zip
    cannot be run by path)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return (f"import sys; sys.path.insert(0, {root!r}); "
            f"from {__package__}.guardian import main; main()")


class Guardian:
    """The server's side: spawns the guardian and reports groups to it."""

    def __init__(self):
        from .process import RUN_ID, spawn  # the package exists on this side only
        self._lock = threading.Lock()
        self._proc = spawn(
            [sys.executable, "-c", _launcher(), RUN_ID, str(os.getpid())], stdin=subprocess.PIPE,
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


def _proc_entries():
    """(pid, stat fields after the command name) of every process in /proc."""
    for name in os.listdir(PROC):
        if name.isdigit():
            try:
                with open(f"{PROC}/{name}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            yield int(name), stat[stat.rindex(b")") + 2:].split()


def _has_marker(pid, marker):
    try:
        with open(f"{PROC}/{pid}/environ", "rb") as f:
            return marker in b"\0" + f.read()
    except OSError:
        return False


def our_groups_linux(run_id, server, spared):
    """Groups of the live processes that are ours now (see the module docstring), except
    the groups in `spared`."""
    marker = f"\0{RUN_MARKER}={run_id}\0".encode()
    me = os.getpid()
    server_alive = os.getppid() == server
    groups = set()
    for pid, fields in _proc_entries():
        if pid == me or fields[0] in (b"Z", b"X"):  # a zombie is dead already
            continue
        if (server_alive and int(fields[1]) == server) or _has_marker(pid, marker):
            groups.add(int(fields[2]))
    return groups - spared


def live_groups(groups):
    """The listed groups that still exist (elsewhere than Linux)."""
    alive = set()
    for pgid in groups:
        try:
            os.killpg(pgid, 0)
            alive.add(pgid)
        except (ProcessLookupError, PermissionError):
            pass
    return alive


def _signal_groups(groups, sig):
    for pgid in groups:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def sweep(ours, grace=GRACE):
    """SIGTERM what `ours()` names, then SIGKILL what is still there after `grace`
    seconds; return as soon as nothing is left. `ours` is asked again before each signal."""
    _signal_groups(ours(), signal.SIGTERM)
    deadline = time.monotonic() + grace
    while ours() and time.monotonic() < deadline:
        time.sleep(POLL)
    _signal_groups(ours(), signal.SIGKILL)


def main():
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    # The server names itself: had it died before this line, getppid() would name whoever
    # adopted us (init), and "a child of the server" would then be every child of init.
    run_id, server = sys.argv[1], int(sys.argv[2])
    spared = {os.getpgid(0)}  # never our own group nor the server's
    try:
        spared.add(os.getpgid(server))
    except ProcessLookupError:
        pass
    listed = set()
    for line in sys.stdin.buffer:
        try:
            pgid = int(line[1:])
        except ValueError:
            continue
        if line.startswith(b"+"):
            listed = live_groups(listed)  # bounded: ids of dead groups are dropped
            listed.add(pgid)
        elif line.startswith(b"-"):
            listed.discard(pgid)
    if os.path.isdir(f"{PROC}/self"):
        sweep(lambda: our_groups_linux(run_id, server, spared))
    else:
        sweep(lambda: live_groups(listed) - spared)


if __name__ == "__main__":
    main()
