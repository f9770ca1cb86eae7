"""Soak: the real server program under steady load for a while, watched for leaks and loss.

Run: python bench/soak.py [--minutes 10] [--rate 20000] [--interval 60]

20 services (one writing `--rate` lines/s, five tickers, daemons with and without probes,
a oneshot, a stopCmd, one that quits on its own), 5 clients that connect, read, stall and
hang up at random (cleanly or with a reset) and reconnect with the after_seq pattern, and a
restarter that restarts a random service every few seconds. Every `--interval` seconds one
table row: the server's RSS, threads, open descriptors and CPU, what it stored and sent.

At the end, after a SIGTERM: the seq sequence of all.jsonl must have no gap and no repeat,
each run of each counting service must appear in full (what it printed, in order), and no
process of any service may be left. Not a test: it prints, it does not assert.
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, ROOT)

from lib.framing import OP_CLOSE, OP_TEXT  # noqa: E402
from wsraw import command_message, frame, upgrade  # noqa: E402  (tests/wsraw.py)
TOKEN = "soak-token"

# Prints "<pid> <n>" for n = 0, 1, ... at argv[1] lines/s, up to 100 writes/s; each write is
# below PIPE_BUF, so it reaches the pipe whole or not at all, even when the process is killed.
COUNTER = """
import os, sys, time
rate, run = int(sys.argv[1]), os.getpid()
batch = max(1, rate // 100)
n, start = 0, time.monotonic()
while True:
    os.write(1, "".join(f"{run} {i}\\n" for i in range(n, n + batch)).encode())
    n += batch
    delay = start + n / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
"""
LISTEN = ("import socket, sys, time\n"
          "server = socket.create_server(('127.0.0.1', int(sys.argv[1])))\n")
HTTP = LISTEN + ("while True:\n"
                 "    conn, _ = server.accept()\n"
                 "    conn.recv(4096)\n"
                 "    conn.sendall(b'HTTP/1.0 200 OK\\r\\nContent-Length: 0\\r\\n\\r\\n')\n"
                 "    conn.close()\n")
TCP = LISTEN + "time.sleep(10 ** 6)\n"
QUITTER = "import time\nprint('working', flush=True)\ntime.sleep(5)\nprint('done', flush=True)"
SLEEP = ["sleep", "1000000"]


def py(code, *args):
    return [sys.executable, "-c", code, *map(str, args)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def services(rate):
    db, api = free_port(), free_port()
    stack = {
        "loud": {"cmd": py(COUNTER, rate)},
        "db": {"cmd": py(TCP, db), "port": db, "ready": {"type": "tcp"}},
        "api": {"cmd": py(HTTP, api), "port": api, "dependsOn": ["db"],
                "ready": {"type": "http", "url": f"http://127.0.0.1:{api}/health"}},
        "cache": {"cmd": SLEEP},
        "migrate": {"kind": "oneshot", "cmd": ["true"], "dependsOn": ["db"]},
        "web": {"cmd": SLEEP, "dependsOn": ["api"]},
        "stopper": {"cmd": SLEEP, "stopCmd": ["true"]},
        "quitter": {"cmd": py(QUITTER)},
    }
    stack.update({f"tick{i}": {"cmd": py(COUNTER, 2)} for i in range(1, 6)})
    stack.update({f"worker{i}": {"cmd": SLEEP, "dependsOn": ["migrate" if i % 2 else "cache"]}
                  for i in range(1, 8)})
    return stack


# ---- the server process --------------------------------------------------------------------

class Server:
    def __init__(self, directory, rate, marker):
        self.port = free_port()
        self.logs = os.path.join(directory, "logs")
        config = os.path.join(directory, "soak.json")
        with open(config, "w") as f:
            json.dump({"logs": {"dir": self.logs, "bufferSize": 20000},
                       "services": services(rate)}, f)
        self.stderr = open(os.path.join(directory, "stderr.txt"), "w+")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "flowlayer.py"), "-c", config,
             "-s", f"127.0.0.1:{self.port}", "-token", TOKEN],
            env={**os.environ, "SOAK_MARK": marker}, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=self.stderr)
        self._cpu = (time.monotonic(), self.cpu_seconds())

    def usage(self):
        """(RSS in MiB, threads, open descriptors) of the server process."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f)
        return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["Threads"]),
                len(os.listdir(f"/proc/{self.proc.pid}/fd")))

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            values = f.read().rsplit(")", 1)[1].split()
        return (int(values[11]) + int(values[12])) / os.sysconf("SC_CLK_TCK")

    def cpu_percent(self):
        """CPU use since the last call, in % of one core."""
        then, used = self._cpu
        self._cpu = (time.monotonic(), self.cpu_seconds())
        return 100 * (self._cpu[1] - used) / (self._cpu[0] - then)

    def newest_seq(self):
        """The seq of the last complete line of all.jsonl (flushed every 200 ms)."""
        with open(os.path.join(self.logs, "all.jsonl"), "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 65536))
            line = f.read().rsplit(b"\n", 2)[-2]
        return json.loads(line)["seq"]

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return "killed after 60 s"


# ---- clients -------------------------------------------------------------------------------

class Session:
    """A WebSocket session on a plain socket that reads in bulk and scans the stream for
    what it needs (our server writes compact JSON in a fixed key order), so that 20,000
    log events a second cost the reader little."""

    ACK = re.compile(rb'"type":"ack","id":"([^"]+)","payload":\{"accepted":(true|false)')
    RESULT = re.compile(rb'"type":"result","id":"([^"]+)","payload":\{"ok":(true|false)')
    LOG = re.compile(rb'"name":"log","payload":\{"seq":(\d+)')

    def __init__(self, port):
        self.sock, _, self.tail = upgrade(port, TOKEN, timeout=60)
        self.answers = {}        # command id -> [accepted, ok]
        self.changed = threading.Condition()
        self.reading = False     # a reader thread pumps; command() only waits
        self.log_events = 0
        self.highest_seq = 0
        self.sent = 0

    def send(self, name, payload=None):
        self.sent += 1
        ident = f"c{self.sent}"
        with self.changed:
            self.answers[ident] = [None, None]
        self.sock.sendall(frame(OP_TEXT, command_message(ident, name, payload),
                                mask=os.urandom(4)))
        return ident

    def pump(self):
        """Read what has arrived (blocking for the first bytes); False at the end."""
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            with self.changed:
                self.reading = False
                self.changed.notify_all()
            return False
        data = self.tail + chunk
        cut = data.rfind(b"}}") + 2
        done, self.tail = data[:cut], data[cut:]
        seqs = self.LOG.findall(done)
        with self.changed:
            if seqs:
                self.log_events += len(seqs)
                self.highest_seq = max(self.highest_seq, int(seqs[-1]))
            for ident, accepted in self.ACK.findall(done):
                if ident.decode() in self.answers:
                    self.answers[ident.decode()][0] = accepted == b"true"
            for ident, ok in self.RESULT.findall(done):
                if ident.decode() in self.answers:
                    self.answers[ident.decode()][1] = ok == b"true"
            self.changed.notify_all()
        return True

    def start_reader(self):
        """Read on a thread of its own from now on, until the connection ends."""
        self.reading = True
        threading.Thread(target=self._read_forever, daemon=True).start()

    def _read_forever(self):
        try:
            while self.pump():
                pass
        except OSError:   # closed under our feet by close()
            with self.changed:
                self.reading = False
                self.changed.notify_all()

    def command(self, name, payload=None):
        """Send and wait for the answer: (accepted, ok)."""
        ident = self.send(name, payload)
        answer = self.answers[ident]

        def answered():
            return answer[0] is not None and (not answer[0] or answer[1] is not None)
        while not answered():
            if self.reading:
                with self.changed:
                    self.changed.wait_for(lambda: answered() or not self.reading, 120)
                if not self.reading and not answered():
                    raise ConnectionError("closed while waiting for an answer")
            elif not self.pump():
                raise ConnectionError("closed while waiting for an answer")
        with self.changed:
            return tuple(self.answers.pop(ident))

    def close(self, abrupt):
        if abrupt:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        else:
            try:
                self.sock.sendall(frame(OP_CLOSE, (1000).to_bytes(2, "big"), mask=os.urandom(4)))
            except OSError:
                pass
        self.sock.close()


class Stats:
    """Counters shared by the load threads; each table row takes and resets them."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {"events": 0, "ok": 0, "refused": 0, "failed": 0, "reconnects": 0,
                       "errors": 0}
        self.slowest = 0.0
        self.problems = []

    def add(self, key, n=1):
        with self.lock:
            self.counts[key] += n

    def take(self):
        with self.lock:
            counts, self.counts = self.counts, dict.fromkeys(self.counts, 0)
            slowest, self.slowest = self.slowest, 0.0
        return counts, slowest


def client_loop(port, stats, stop, rng):
    """Connect, catch up with after_seq, read (stalling now and then), hang up, again."""
    highest = 0
    while not stop.is_set():
        try:
            session = Session(port)
            if highest:
                session.command("get_logs", {"after_seq": highest, "limit": 1000})
            end = time.monotonic() + rng.uniform(3, 40)
            next_command = time.monotonic() + 1
            while time.monotonic() < end and not stop.is_set():
                if rng.random() < 0.002:
                    stop.wait(rng.uniform(1, 8))      # stall: the server must drop, not wait
                if time.monotonic() > next_command:
                    if rng.random() < 0.5:
                        session.send("get_snapshot")
                    else:
                        session.send("get_logs", {"limit": 200})
                    next_command = time.monotonic() + 1
                before = session.log_events
                if not session.pump():
                    break
                stats.add("events", session.log_events - before)
            highest = max(highest, session.highest_seq)
            session.close(abrupt=rng.random() < 0.5)
        except OSError as exc:
            stats.add("errors")
            stats.problems.append(f"client: {exc!r}")
        stats.add("reconnects")
        stop.wait(rng.uniform(0, 3))


def restarter(port, names, stats, stop, rng):
    """Restart a random service every 2 to 5 s; the loud one about one time in five."""
    session = Session(port)
    session.start_reader()
    try:
        while not stop.wait(rng.uniform(2, 5)):
            name = "loud" if rng.random() < 0.2 else rng.choice(names)
            started = time.monotonic()
            accepted, ok = session.command("restart_service", {"service": name})
            elapsed = time.monotonic() - started
            with stats.lock:
                stats.slowest = max(stats.slowest, elapsed)
            stats.add("ok" if ok else "refused" if not accepted else "failed")
    except OSError as exc:
        stats.problems.append(f"restarter: {exc!r}")
    finally:
        session.close(abrupt=False)


# ---- checks at the end ---------------------------------------------------------------------

LINE = re.compile(rb'\{"seq": (\d+), "service": "([^"]*)", "phase": "[^"]*", '
                  rb'"stream": "(\w+)", "message": "(.*)", "timestamp": ')


def check_store(logs, counters):
    """Read all.jsonl: seq gaps and repeats, and every counting service's runs in full."""
    gaps = repeats = entries = 0
    previous = None
    runs = {}          # (service, pid) -> next expected n
    broken = []
    with open(os.path.join(logs, "all.jsonl"), "rb") as f:
        for line in f:
            match = LINE.match(line)
            if match is None:
                broken.append(line[:80])
                continue
            entries += 1
            seq = int(match[1])
            if previous is not None:
                if seq <= previous:
                    repeats += 1
                elif seq != previous + 1:
                    gaps += 1
            previous = seq
            service = match[2].decode()
            if service in counters and match[3] == b"stdout":
                pid, n = match[4].split()
                n, expected = int(n), runs.get((service, pid), 0)
                if n != expected and n != 0:   # 0: a new run (its pid may be a reused one)
                    broken.append(f"{service} run {pid.decode()}: {n} after {expected - 1}")
                runs[(service, pid)] = n + 1
    lines = {s: sum(n for (svc, _), n in runs.items() if svc == s) for s in counters}
    run_counts = {s: sum(1 for svc, _ in runs if svc == s) for s in counters}
    return entries, gaps, repeats, broken, lines, run_counts


def pids_with_marker(marker):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if marker.encode() in f.read():
                        with open(f"/proc/{entry}/stat") as g:
                            if g.read().rsplit(") ", 1)[-1][:1] != "Z":
                                found.append(int(entry))
            except OSError:
                pass
    return found


# ---- main ----------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=int, default=20000, help="lines/s of the loud service")
    parser.add_argument("--interval", type=float, default=60, help="seconds between rows")
    parser.add_argument("--clients", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(1)
    marker = f"soak-{uuid.uuid4().hex}"
    directory = tempfile.mkdtemp(prefix="flowlayer-soak-")
    print(f"soak: {args.minutes:g} min, loud service at {args.rate} lines/s, 20 services, "
          f"{args.clients} clients reconnecting at random, a restart every 2-5 s")
    try:
        server = Server(directory, args.rate, marker)
        stats, stop, threads = Stats(), threading.Event(), []
        try:
            wait_for_boot(server)
            names = sorted(services(args.rate))
            for _ in range(args.clients):
                threads.append(threading.Thread(target=client_loop, daemon=True, args=(
                    server.port, stats, stop, random.Random(rng.random()))))
            threads.append(threading.Thread(target=restarter, daemon=True, args=(
                server.port, names, stats, stop, random.Random(rng.random()))))
            for thread in threads:
                thread.start()
            rows = run_rows(server, stats, args)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
            code = server.stop()
        report(server, stats, rows, code, marker)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def wait_for_boot(server):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            session = Session(server.port)
            session.close(abrupt=False)
            if os.path.exists(os.path.join(server.logs, "all.jsonl")):
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not come up")


def run_rows(server, stats, args):
    header = (f"{'min':>5} {'RSS MiB':>8} {'threads':>7} {'fds':>5} {'CPU %':>6} "
              f"{'stored/s':>9} {'events/s':>9} {'restarts':>8} {'busy':>5} {'slowest':>8} "
              f"{'reconn':>6}")
    print(header)
    print("-" * len(header))
    started = time.monotonic()
    stats.take()
    server.cpu_percent()
    seq = server.newest_seq()
    rows = []
    end = started + args.minutes * 60
    tick = last = started
    while tick < end - 1:
        tick = min(tick + args.interval, end)
        time.sleep(max(0.0, tick - time.monotonic()))
        if server.proc.poll() is not None:
            print("the server exited")
            break
        rss, threads, fds = server.usage()
        cpu = server.cpu_percent()
        newest = server.newest_seq()
        counts, slowest = stats.take()
        now = time.monotonic()
        elapsed, seconds, last = (now - started) / 60, now - last, now
        rows.append((elapsed, rss, threads, fds))
        print(f"{elapsed:5.1f} {rss:8.1f} {threads:7d} {fds:5d} {cpu:6.0f} "
              f"{(newest - seq) / seconds:9.0f} {counts['events'] / seconds:9.0f} "
              f"{counts['ok'] + counts['failed']:8d} {counts['refused']:5d} {slowest:7.2f}s "
              f"{counts['reconnects']:6d}", flush=True)
        seq = newest
    return rows


def report(server, stats, rows, code, marker):
    print()
    later = [row for row in rows if row[0] >= 0.99] or rows
    for label, column in (("RSS MiB", 1), ("threads", 2), ("fds", 3)):
        values = [row[column] for row in later]
        print(f"{label} after the first minute: {min(values):g} .. {max(values):g}")
    entries, gaps, repeats, broken, lines, runs = check_store(
        server.logs, ["loud"] + [f"tick{i}" for i in range(1, 6)])
    print(f"all.jsonl: {entries} entries, {gaps} seq gaps, {repeats} seq repeats")
    print(f"loud: {lines['loud']} lines in {runs['loud']} runs; tickers: "
          f"{sum(lines.values()) - lines['loud']} lines; lines lost or out of order: {len(broken)}")
    for problem in broken[:10]:
        print(f"  {problem}")
    deadline = time.monotonic() + 30
    while pids_with_marker(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    print(f"server exit code: {code}; orphans: {len(pids_with_marker(marker))}")
    server.stderr.seek(0)
    errors = server.stderr.read()
    print(f"server stderr: {'empty' if not errors else errors[-2000:]}")
    if stats.problems:
        print(f"client problems: {len(stats.problems)}, e.g. {stats.problems[:3]}")


if __name__ == "__main__":
    main()
