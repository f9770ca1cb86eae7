"""Who listens on a TCP port, for the port-in-use messages of SPEC 6.3.

Linux only, from /proc: the LISTEN sockets of the port in /proc/net/tcp and tcp6 give
socket inodes, the process whose /proc/<pid>/fd links to one of them holds the port.
Anywhere the OS does not tell (another platform, a process of another user), the answer
is None and the message names just the port."""
import os

from .listening import proc_listeners

MAX_COMMAND = 200  # characters of the command line kept in a message


def port_holder(port, proc="/proc"):
    """`pid 4242: node server.js` for the process listening on `port`, or None."""
    inodes = {inode for listening, inode in proc_listeners(proc) if listening == port} - {"0"}
    if not inodes:
        return None
    links = {f"socket:[{inode}]" for inode in inodes}
    for pid in sorted(int(name) for name in _listdir(proc) if name.isdigit()):
        fd_dir = f"{proc}/{pid}/fd"
        for fd in _listdir(fd_dir):
            try:
                if os.readlink(f"{fd_dir}/{fd}") in links:
                    return f"pid {pid}: {_command(proc, pid)}"
            except OSError:  # closed meanwhile, or not ours to read
                continue
    return None


def in_use_reason(port, holder):
    """The failed_start reason for a port in use, naming its holder when known."""
    return f"port {port} is already in use" + (f" ({holder})" if holder else "")


def _command(proc, pid):
    """The command line of `pid` (its name in brackets when the line is empty)."""
    try:
        with open(f"{proc}/{pid}/cmdline", "rb") as f:
            words = f.read().rstrip(b"\0").split(b"\0")
        command = b" ".join(words).decode("utf-8", "replace").strip()
        if not command:
            with open(f"{proc}/{pid}/comm", "rb") as f:
                command = f"[{f.read().decode('utf-8', 'replace').strip()}]"
    except OSError:
        return "?"
    return command if len(command) <= MAX_COMMAND else command[:MAX_COMMAND] + "..."


def _listdir(path):
    try:
        return os.listdir(path)
    except OSError:
        return []
