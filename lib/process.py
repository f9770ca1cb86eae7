"""One OS process: spawn it in its own session, capture its output as lines, report its exit
and stop it together with everything it started (its process group).

Every process carries RUN_MARKER=RUN_ID in its environment, inherited by whatever it starts,
so that the guardian can tell our processes from others by pid. On Linux the server is a
child subreaper: a grandchild that leaves its group stays in our tree, and the sweeper
reaps such adopted orphans without touching the exit status of our own children.

Threads: two per process, one reader per stream. The reader whose stream ends first waits
for the exit (it is the watcher); the one whose stream ends last reports it, so the exit
comes after all output. One sweeper thread per server notices a process that exited while
a grandchild keeps both its pipes open, and reports that exit after DRAIN_TIMEOUT."""
import os
import signal
import subprocess
import sys
import threading
import time

CHUNK = 65536  # bytes per os.read: one pipe buffer's worth
MAX_LINE = 65536  # bytes; a longer line is cut into pieces of at most this size (SPEC 4.1)
DRAIN_TIMEOUT = 0.5  # seconds an exit noticed by the sweeper waits for the readers
RUN_MARKER = "FLOWLAYER_RUN"
RUN_ID = os.urandom(16).hex()  # this server run
REAP_INTERVAL = 0.25  # seconds between two rounds of the sweeper
PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>

_spawn_lock = threading.Lock()  # held by spawn() and by the reaper
_children = set()  # pids of our own Popen children, until their Popen reaped them
_unwatched = {}  # pid -> Process whose two streams are both still open (the sweeper's work)
_sweeper = {"started": False, "orphans": False}  # under _spawn_lock


class SpawnError(Exception):
    """The process could not be started; the text is a short reason for a log line."""


def _cut_point(data, start):
    """End of the piece of at most MAX_LINE bytes that starts at `start`, moved back to the
    start of a UTF-8 character so that no character is split (unless the bytes are not UTF-8)."""
    end = start + MAX_LINE
    for back in range(4):  # a UTF-8 character spans at most 4 bytes
        if data[end - back] & 0xC0 != 0x80:  # not a continuation byte
            return end - back
    return end


def _decode_line(raw):
    """The messages of one complete line (bytes without its "\\n")."""
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    pieces = []
    start = 0
    while len(raw) - start > MAX_LINE:
        end = _cut_point(raw, start)
        pieces.append(raw[start:end].decode("utf-8", "replace"))
        start = end
    pieces.append(raw[start:].decode("utf-8", "replace"))
    return pieces


class LineSplitter:
    """Turns a byte stream into messages by the line rules of SPEC 4.1.

    Only complete lines are decoded, so a character split across two reads stays intact.
    The common case (short lines) decodes and splits a whole chunk at once; carriage returns
    and over-long lines take a slower path only when they are present."""

    def __init__(self):
        self._rest = b""  # bytes after the last newline; at most MAX_LINE + 1 long

    def feed(self, chunk):
        """The messages completed by `chunk` (possibly none)."""
        data = self._rest + chunk if self._rest else chunk
        end = data.rfind(b"\n")
        if end < 0:
            return self._cut_rest(data)
        self._rest = data[end + 1:]
        text = data[:end].decode("utf-8", "replace")
        lines = text.split("\n")
        # A line over MAX_LINE bytes has over MAX_LINE / 4 characters: cheap to rule out.
        if end > MAX_LINE and max(map(len, lines)) > MAX_LINE // 4:
            lines = [piece for raw in data[:end].split(b"\n") for piece in _decode_line(raw)]
        elif "\r" in text:
            lines = [line[:-1] if line.endswith("\r") else line for line in lines]
        if len(self._rest) > MAX_LINE + 1:
            lines.extend(self._cut_rest(self._rest))
        return lines

    def finish(self):
        """The messages of output that ended without a newline."""
        rest, self._rest = self._rest, b""
        return _decode_line(rest) if rest else []

    def _cut_rest(self, rest):
        """Emit full pieces of an unfinished line that is already too long. One spare byte is
        kept back so that a line of exactly MAX_LINE bytes ending in "\\r\\n" stays whole."""
        pieces = []
        start = 0
        while len(rest) - start > MAX_LINE + 1:
            end = _cut_point(rest, start)
            pieces.append(rest[start:end].decode("utf-8", "replace"))
            start = end
        self._rest = rest[start:]
        return pieces


def _spawn_reason(error, program, cwd):
    """A short human reason for a failed spawn, naming the program or the directory."""
    if cwd is not None and error.filename == cwd:  # the chdir before exec failed
        if isinstance(error, FileNotFoundError):
            return f"no such directory: {cwd}"
        target = cwd
    else:
        if isinstance(error, FileNotFoundError):
            return f'no such program "{program}"'
        target = program
    return f"{(error.strerror or str(error)).lower()}: {target}"


def spawn(argv, **popen_args):
    """subprocess.Popen with the run marker in the environment, its pid registered as one
    of ours (the reaper leaves it to Popen) until `release(pid)`."""
    env = popen_args.pop("env", None)
    env = {**(os.environ if env is None else env), RUN_MARKER: RUN_ID}
    with _spawn_lock:
        popen = subprocess.Popen(argv, env=env, **popen_args)
        _children.add(popen.pid)
    return popen


def release(pid):
    """`pid` was reaped by its Popen: the number may now belong to an adopted orphan."""
    with _spawn_lock:
        _children.discard(pid)


def become_subreaper():
    """Linux: orphans of our descendants are re-parented to us, not to init. Returns whether
    it worked (elsewhere, or without prctl, it does nothing)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes  # here, not at import: tests and the guardian do not need it
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the C library linked into Python
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def reap_adopted():
    """Reap the zombie children that are not ours (orphans handed to us as subreaper or as
    PID 1). waitid(WNOWAIT) peeks without reaping; when the zombie it shows is one of our
    own, the rest are found through /proc so that no Popen loses its exit status."""
    with _spawn_lock:
        while True:
            try:
                found = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if found is None:
                return
            if found.si_pid in _children:
                break
            _reap(found.si_pid)
        for pid in _zombie_children(os.getpid()):
            if pid not in _children:
                _reap(pid)


def _reap(pid):
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _zombie_children(parent):
    """Pids of zombies whose parent is `parent`, read from /proc."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        if fields[0] == b"Z" and int(fields[1]) == parent:
            yield int(name)


def start_reaper():
    """Let the sweeper also reap adopted orphans every REAP_INTERVAL (Linux only)."""
    if sys.platform.startswith("linux"):
        _start_sweeper(orphans=True)


def _start_sweeper(orphans=False):
    """The one sweeper thread of the server, started once; `orphans` turns on reaping."""
    with _spawn_lock:
        _sweeper["orphans"] |= orphans
        if _sweeper["started"]:
            return
        _sweeper["started"] = True
    threading.Thread(target=_sweep, name="sweeper", daemon=True).start()


def _sweep():
    while True:
        time.sleep(REAP_INTERVAL)
        for proc in list(_unwatched.values()):
            proc._notice_exit()
        if _sweeper["orphans"]:
            reap_adopted()


class Process:
    """A child process in its own session (process group) whose stdout and stderr are
    delivered as lists of lines, and whose exit is reported once, after its output.

    `env` holds variables layered over the server's environment (None: inherit as is).
    Callbacks run on this object's threads: `on_lines(stream, messages)` on the reader of
    that stream ("stdout" or "stderr"), `on_exit(returncode)` on the reader that finished
    last (or, when a grandchild holds the pipes, a short-lived drain thread)."""

    def __init__(self, argv, env, cwd, on_lines, on_exit):
        self.argv = list(argv)
        self.env = dict(env) if env else None
        self.cwd = cwd
        self._on_lines = on_lines
        self._on_exit = on_exit
        self._popen = None
        self._exited = threading.Event()
        self._readers = []
        self._lock = threading.Lock()
        self._open_streams = 2
        self._released = False  # the pid was reaped and handed back (release)
        self._reported = False

    def start(self):
        """Spawn the process and its two reader threads; raise SpawnError on failure."""
        if not self.argv:
            raise SpawnError("empty command")
        _start_sweeper()
        try:
            self._popen = spawn(
                self.argv,
                env={**os.environ, **self.env} if self.env else None,
                cwd=self.cwd,
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=0,
                close_fds=True,
            )
        except OSError as error:
            raise SpawnError(_spawn_reason(error, self.argv[0], self.cwd)) from None
        except ValueError as error:  # e.g. a NUL byte in an argument
            raise SpawnError(f"invalid command: {error}") from None
        pid = self._popen.pid
        for stream, pipe in (("stdout", self._popen.stdout), ("stderr", self._popen.stderr)):
            reader = threading.Thread(
                target=self._read, args=(stream, pipe), name=f"{stream}-{pid}", daemon=True
            )
            self._readers.append(reader)
            reader.start()
        with self._lock:  # only now may the sweeper drain (join) the readers
            if self._open_streams == 2:  # else a reader already ended and watches the exit
                _unwatched[pid] = self

    @property
    def pid(self):
        return self._popen.pid if self._popen else None

    @property
    def alive(self):
        """True from a successful start() until the process exited."""
        return self._popen is not None and not self._exited.is_set()

    def wait(self, timeout=None):
        """The return code once the process exited, or None if `timeout` ran out first."""
        if self._exited.wait(timeout):
            return self._popen.returncode
        return None

    def signal_group(self, sig):
        """Send `sig` to every process of the group; an empty group is not an error."""
        try:
            os.killpg(self._popen.pid, sig)
        except ProcessLookupError:
            pass

    def terminate(self, grace=5.0, sig=signal.SIGTERM):
        """`sig` (SIGTERM, or the service's stopSignal) to the group, then SIGKILL to the
        group when the process exited or `grace` ran out. The SIGKILL is sent in both cases so that no member of the group (a
        grandchild that ignored SIGTERM or outlived its parent) survives the stop.
        Returns the return code."""
        self.signal_group(sig)
        self.wait(grace)
        self.signal_group(signal.SIGKILL)
        return self.wait()

    def _read(self, stream, pipe):
        splitter = LineSplitter()
        fd = pipe.fileno()
        deliver = self._on_lines
        try:
            while True:
                chunk = os.read(fd, CHUNK)
                if not chunk:
                    break
                lines = splitter.feed(chunk)
                if lines:
                    deliver(stream, lines)
            lines = splitter.finish()
            if lines:
                deliver(stream, lines)
        finally:
            pipe.close()
            self._stream_ended()

    def _stream_ended(self):
        """The first stream to end makes its reader the watcher: it waits for the exit (a
        process may close its output and run on). The last one reports the exit."""
        with self._lock:
            self._open_streams -= 1
            last = self._open_streams == 0
        if not last:
            _unwatched.pop(self._popen.pid, None)
            self._reap()
        else:
            self._exited.wait()
            self._report()

    def _reap(self):
        self._popen.wait()  # reaps the child: no zombie
        self._mark_exited()

    def _mark_exited(self):
        """Once, after the Popen reaped the process: the pid is no longer ours."""
        with self._lock:
            if self._released:
                return
            self._released = True
        release(self._popen.pid)
        self._exited.set()

    def _notice_exit(self):
        """Sweeper: the process exited while a grandchild holds both pipes open. Its exit
        is reported once the readers drained or DRAIN_TIMEOUT passed; later output still
        flows."""
        with self._lock:
            if self._open_streams < 2 or self._popen.poll() is None:
                return
            _unwatched.pop(self._popen.pid, None)
        self._mark_exited()
        threading.Thread(target=self._drain, name=f"drain-{self._popen.pid}",
                         daemon=True).start()

    def _drain(self):
        deadline = time.monotonic() + DRAIN_TIMEOUT
        for reader in self._readers:
            reader.join(max(0.0, deadline - time.monotonic()))
        self._report()

    def _report(self):
        with self._lock:
            if self._reported:
                return
            self._reported = True
        self._on_exit(self._popen.returncode)
