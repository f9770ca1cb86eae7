"""The process groups the orphan guardian must know about.

The guardian signals every group still on its list when the server exits, so a group must
leave the list once it is gone, or a later process that reuses its id would be signalled.
Each group is watched before it can be forgotten, and forgotten once: at its leader's exit
when nothing is left in it, at the end of its stop (which SIGKILLs it), or when a later
check finds it empty.
"""
import os
import threading
import time

LINGER_POLL = 0.2   # seconds between checks of groups whose leader exited before them


def group_alive(pgid):
    """Whether group `pgid` holds a process that is not a zombie. A zombie can no longer
    be stopped, and where nothing reaps orphans (a PID 1 that does not) it would keep
    the group listed for good. /proc tells on Linux; elsewhere a zombie counts."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not os.path.isdir("/proc/self"):
        return True
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                state, _ppid, group = f.read().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(group) == pgid and state != "Z":
            return True
    return False


class NoGuardian:
    """Stands in for lib.guardian.Guardian where no orphan guard runs (tests)."""

    def watch(self, pgid):
        pass

    def forget(self, pgid):
        pass


class GroupList:
    """What the guardian is told, kept in step with it. Its lock is taken without the
    runtime lock held, and is only held around a message to the guardian."""

    def __init__(self, guardian=None):
        self._guardian = guardian or NoGuardian()
        self._lock = threading.Lock()
        self._listed = {}          # pgid -> the Process that leads the group
        self._lingering = set()    # pgids whose leader exited while members were left
        self._sweeping = False

    def listed(self):
        """Group ids on the guardian's list now."""
        with self._lock:
            return sorted(self._listed)

    def holds(self, process):
        """Whether the group of `process` is still listed (not known to be gone)."""
        with self._lock:
            return self._listed.get(process.pid) is process

    def watch(self, process):
        """Right after `process.start()`: its group (id = its pid) is ours."""
        with self._lock:
            self._listed[process.pid] = process   # an id reused by us replaces a gone group
            self._lingering.discard(process.pid)
            self._guardian.watch(process.pid)

    def forget(self, process):
        """The group was ended (SIGKILL to it), or was never more than its leader."""
        with self._lock:
            self._forget(process)

    def leader_exited(self, process):
        """Forget the group when it is empty now; else check again until it is."""
        with self._lock:
            if self._listed.get(process.pid) is not process:
                return
            if not group_alive(process.pid):
                self._forget(process)
                return
            self._lingering.add(process.pid)
            if not self._sweeping:
                self._sweeping = True
                threading.Thread(target=self._sweep, name="group-sweeper", daemon=True).start()

    def _sweep(self):
        while True:
            time.sleep(LINGER_POLL)
            with self._lock:
                for pgid in [p for p in self._lingering if not group_alive(p)]:
                    self._forget(self._listed[pgid])
                if not self._lingering:
                    self._sweeping = False
                    return

    def _forget(self, process):
        if self._listed.get(process.pid) is process:
            del self._listed[process.pid]
            self._lingering.discard(process.pid)
            self._guardian.forget(process.pid)
