"""Benchmark of the session API: live log delivery, command round trips, get_logs, idle CPU.

Run: python bench/session.py [--idle-seconds N]. Prints one table; targets in the last
column. The lagging client is one that reads only now and then, 2 s behind a writer at
50,000 lines/s: the time of its get_logs (5,000 entries) is from the send to the end of the
result, reading as fast as it can through what was queued before it.
The server runs in its own process (the runtime, log store and session server of lib/,
wired as server_cli wires them, without the terminal echo, so the numbers are the session's), with real services writing to real pipes. Benchmark clients are separate
processes reading raw sockets, many frames per recv(), parsed in bulk.
"""
import argparse
import json
import multiprocessing
import os
import re
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, ROOT)

from lib.framing import OP_TEXT, FrameDecoder  # noqa: E402
from wsraw import command_message, frame, upgrade  # noqa: E402  (tests/wsraw.py)

TOKEN = "bench-token"
LINES = 500_000
PAD = "x" * 60   # a writer line is about 80 characters, its log frame about 190 bytes

# A service that waits for a trigger file holding "count rate", then writes `count` lines
# (at `rate` lines/s, 0 = as fast as it can) and waits for the next trigger.
WRITER = r"""
import os, sys, time
trigger, out = sys.argv[1], sys.stdout
while True:
    while not os.path.exists(trigger):
        time.sleep(0.01)
    count, rate = map(int, open(trigger).read().split())
    os.remove(trigger)
    start = time.monotonic()
    for first in range(0, count, 1000):
        out.write("".join(f"line {i} PAD\n" for i in range(first, min(count, first + 1000))))
        out.flush()
        if rate:
            delay = start + (first + 1000) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
""".replace("PAD", PAD)

FILLER = ("import sys, time\n"
          "sys.stdout.write(''.join(f'{sys.argv[1]} line {i} PAD\\n' for i in range(6000)))\n"
          "sys.stdout.flush()\ntime.sleep(3600)").replace("PAD", PAD)
SLEEPER = "import time\ntime.sleep(3600)"


# ---- the server process --------------------------------------------------------------------

def serve(config_path, port, ready):
    from lib.config import load
    from lib.logstore import LogStore
    from lib.runtime import Runtime
    from lib.session import SessionServer
    config = load(config_path)
    store = LogStore(config.buffer_size, config.logs_dir)
    runtime = Runtime(config, store)
    server = SessionServer(runtime, store, config, "127.0.0.1", port, TOKEN)
    server.start()
    runtime.boot()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ready.set()
    stop.wait()
    runtime.shutdown()
    server.close()
    store.close()


class Server:
    def __init__(self, directory, services):
        self.port = free_port()
        path = os.path.join(directory, f"bench-{self.port}.json")
        with open(path, "w") as f:
            json.dump({"services": services}, f)
        ready = multiprocessing.Event()
        self.process = multiprocessing.Process(target=serve, args=(path, self.port, ready))
        self.process.start()
        if not ready.wait(120):
            raise SystemExit("the bench server did not boot")

    def cpu_seconds(self):
        """User + system CPU time of the server process (its services are other processes)."""
        with open(f"/proc/{self.process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        self.process.terminate()
        self.process.join(30)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def py(code, *args):
    return [sys.executable, "-u", "-c", code, *args]


# ---- clients ---------------------------------------------------------------------------------

class RawSession:
    """A WebSocket session on a plain socket (tests/wsraw.py): masked sends, bulk receives.

    Benchmark readers take frames in bulk from the socket, which websocket-client cannot.
    """

    def __init__(self, port):
        self.sock, _, self.buffer = upgrade(port, TOKEN, timeout=60)
        self.ids = 0

    def send_command(self, name, payload=None):
        self.ids += 1
        self.sock.sendall(frame(OP_TEXT, command_message(f"q{self.ids}", name, payload),
                                mask=os.urandom(4)))
        return f'{{"type":"result","id":"q{self.ids}"'.encode()

    def frames(self):
        """Yield the payload of every message received, reading 1 MiB at a time."""
        decoder = FrameDecoder(expect_masked=False)
        data = self.buffer
        while True:
            for _, payload in decoder.feed(data):
                yield payload
            data = self.sock.recv(1 << 20)
            if not data:
                return

    def command(self, name, payload=None):
        """Round trip of one command: seconds until its result frame is complete."""
        started = time.perf_counter()
        prefix = self.send_command(name, payload)
        for frame in self._frames:
            if frame.startswith(prefix):
                return time.perf_counter() - started, frame
        raise EOFError

    def start_frames(self):
        self._frames = self.frames()


SEQ = re.compile(rb'"seq":(\d+),"service":"writer"')


def bulk_reader(port, expected, ready, results):
    """Count the writer's lines in the stream without parsing frame by frame."""
    session = RawSession(port)
    ready.put(True)
    sock, tail, seen = session.sock, session.buffer, set()
    first = last = None
    sock.settimeout(5)
    while len(seen) < expected:
        try:
            chunk = sock.recv(1 << 20)
        except TimeoutError:
            break         # the rest was dropped: nothing more will come
        if not chunk:
            break
        data = tail + chunk
        cut = data.rfind(b"}}") + 2
        found = SEQ.findall(data, 0, cut)
        if found:
            last = time.perf_counter()
            first = first or last
            seen.update(map(int, found))
        tail = data[cut:]
    results.put((len(seen), first, last))


def wsclient_reader(port, expected, ready, results):
    """The same with websocket-client, one recv() per message, as a plain client would."""
    import websocket
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws", timeout=5,
                                     header=[f"Authorization: Bearer {TOKEN}"],
                                     skip_utf8_validation=True, suppress_origin=True)
    ready.put(True)
    count, first, last = 0, None, None
    try:
        while count < expected:
            message = ws.recv()
            if '"service":"writer"' in message:
                count += 1
                last = time.perf_counter()
                first = first or last
    except websocket.WebSocketTimeoutException:
        pass
    results.put((count, first, last))


def writer_round(directory, server, readers, reader=bulk_reader):
    """Trigger LINES lines and return [(received, lines/s)] per reader."""
    ready, results = multiprocessing.Queue(), multiprocessing.Queue()
    procs = [multiprocessing.Process(target=reader, args=(server.port, LINES, ready, results))
             for _ in range(readers)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=60)
    time.sleep(0.5)    # hello and snapshot read, clients idle: start from a quiet server
    trigger(directory, LINES, 0)
    rows = []
    for _ in procs:
        received, first, last = results.get(timeout=600)
        rate = received / (last - first) if received > 1 and last > first else 0.0
        rows.append((received, rate))
    for p in procs:
        p.join()
    return rows


def trigger(directory, count, rate):
    path = os.path.join(directory, "trigger")
    with open(path + ".tmp", "w") as f:
        f.write(f"{count} {rate}")
    os.rename(path + ".tmp", path)


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def round_trips(port, count):
    session = RawSession(port)
    session.start_frames()
    times = [session.command("get_snapshot")[0] for _ in range(count)]
    session.sock.close()
    return times


class LaggingClient(RawSession):
    """A client that reads only now and then: its connection stays behind the writer.
    Every byte it reads is scanned for the writer's seqs, to count what it was sent."""

    def __init__(self, port):
        super().__init__(port)
        self.data, self.seen = self.buffer, set()

    def _scan(self):
        cut = self.data.rfind(b"}}") + 2
        self.seen.update(map(int, SEQ.findall(self.data, 0, cut)))
        return cut

    def reply_time(self, name, payload, end):
        """Seconds from sending a command to the end of its result, reading as fast as
        possible through what was queued before it; `end` closes the result's text."""
        started = time.perf_counter()
        prefix = self.send_command(name, payload)
        pieces, searched, at, tail = [], 0, -1, self.data[-64:]
        while True:   # a search of each received piece only, joined at the end
            data = tail + self.sock.recv(1 << 20)
            pieces.append(data[len(tail):])
            if at < 0 and (found := data.find(prefix)) >= 0:
                at = searched - len(tail) + found
            if at >= 0 and data.find(end, max(0, at - searched + len(tail))) >= 0:
                elapsed = time.perf_counter() - started
                break
            searched += len(data) - len(tail)
            tail = data[-64:]
        data = self.data + b"".join(pieces)
        at += len(self.data)
        stop = data.find(end, at) + len(end)
        self.data = data[:at] + data[stop:]   # the result's entries are not log events
        self.data = self.data[self._scan():]
        return elapsed

    def drain(self, quiet=2.0):
        """Read until nothing came for `quiet` seconds."""
        self.sock.settimeout(quiet)
        try:
            while chunk := self.sock.recv(1 << 20):
                self.data += chunk
                self.data = self.data[self._scan():]
        except TimeoutError:
            pass


def lagging_replies(directory, server, rounds=40, rate=50_000, behind=2.0, pause=0.1):
    """get_logs of 5,000 entries on a connection `behind` seconds behind a writer at `rate`
    lines/s, which stops reading for `pause` after each reply; (times, lines dropped)."""
    session = RawSession(server.port)
    session.start_frames()
    count = int(rate * (behind + rounds * (pause + 0.05) + 2))
    trigger(directory, count, rate)
    time.sleep(1.0)
    session.command("get_logs", {"service": "writer", "limit": 1})   # the writer is running
    session.sock.close()
    client = LaggingClient(server.port)
    time.sleep(behind)
    times = []
    for _ in range(rounds):
        times.append(client.reply_time("get_logs", {"service": "writer", "limit": 5000},
                                       b'"effective_limit":5000}}}'))
        time.sleep(pause)
    client.drain()
    sent = len(client.seen)
    client.sock.close()
    return times, sent, count


# ---- the benchmark -----------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    args = parser.parse_args()
    rows = []

    def row(what, value, target):
        rows.append((what, value, target))
        print(f"  {what:<58} {value:>22}   {target}", flush=True)

    print(f"{'measure':<60} {'value':>22}   target")
    with tempfile.TemporaryDirectory() as directory:
        writer = {"cmd": py(WRITER, os.path.join(directory, "trigger"))}
        server = Server(directory, {"writer": writer})
        try:
            for readers, target in ((1, ">= 300,000/s, 0 dropped"), (10, ">= 100,000/s each")):
                result = writer_round(directory, server, readers)
                rates = [rate for _, rate in result]
                dropped = sum(LINES - received for received, _ in result)
                row(f"live {LINES:,} lines, {readers} raw client(s): lines/s per client (min)",
                    f"{min(rates):,.0f}", target)
                row(f"  dropped lines (all {readers} client(s))", f"{dropped:,}", "")
            (received, rate), = writer_round(directory, server, 1, wsclient_reader)
            row("live, 1 websocket-client recv() loop: messages/s", f"{rate:,.0f}",
                "(its own limit)")
            row("  dropped lines", f"{LINES - received:,}", "best effort")

            idle = round_trips(server.port, 2000)
            row("get_snapshot round trip, idle: p50 / p99 ms",
                f"{percentile(idle, .5) * 1e3:.2f} / {percentile(idle, .99) * 1e3:.2f}",
                "p50 <= 0.5 ms")
            ready, results = multiprocessing.Queue(), multiprocessing.Queue()
            sink = multiprocessing.Process(target=bulk_reader,
                                           args=(server.port, 1_000_000, ready, results))
            sink.start()
            ready.get(timeout=60)
            trigger(directory, 1_000_000, 100_000)
            time.sleep(1.0)
            loaded = round_trips(server.port, 2000)
            row("get_snapshot round trip, writer at 100,000 lines/s: p50 / p99 ms",
                f"{percentile(loaded, .5) * 1e3:.2f} / {percentile(loaded, .99) * 1e3:.2f}",
                "p99 <= 5 ms")
        finally:
            server.stop()
        received, first, last = results.get(timeout=60)
        row("  writer lines a raw client received meanwhile, lines/s",
            f"{received / (last - first):,.0f}", "~100,000")
        sink.join()

        server = Server(directory, {"writer": writer})
        try:
            times, sent, count = lagging_replies(directory, server)
        finally:
            server.stop()
        row("get_logs 5,000, client 2 s behind 50,000 lines/s: p50 / p99 ms",
            f"{percentile(times, .5) * 1e3:.1f} / {percentile(times, .99) * 1e3:.1f}",
            "p99 <= 20 ms")
        row("  log events not sent to it (dropped) / lines written",
            f"{count - sent:,} / {count:,}", "(dropped)")

        fillers = {f"svc{i:02d}": {"cmd": py(FILLER, f"svc{i:02d}")} for i in range(20)}
        server = Server(directory, fillers)
        try:
            session = RawSession(server.port)
            session.start_frames()
            while True:   # until every ring is full
                counts = [session.command("get_logs", {"service": name, "limit": 5000})[1]
                          .count(b'"seq"') for name in ("svc00", "svc19")]
                if min(counts) == 5000:
                    break
                time.sleep(0.2)
            times, sizes = [], []
            for _ in range(30):
                elapsed, frame = session.command("get_logs", {"limit": 5000})
                times.append(elapsed)
                sizes.append(frame.count(b'"seq"'))
            assert set(sizes) == {5000}, sizes
            row("get_logs 5,000 entries of 20 full services: p50 / max ms",
                f"{statistics.median(times) * 1e3:.1f} / {max(times) * 1e3:.1f}", "<= 20 ms")
            session.sock.close()
        finally:
            server.stop()

        sleepers = {f"idle{i:02d}": {"cmd": py(SLEEPER)} for i in range(20)}
        server = Server(directory, sleepers)
        try:
            clients = [RawSession(server.port) for _ in range(3)]
            time.sleep(1.0)
            before, started = server.cpu_seconds(), time.monotonic()
            time.sleep(args.idle_seconds)
            used = server.cpu_seconds() - before
            share = used / (time.monotonic() - started) * 100
            row(f"idle server, 20 services, 3 clients, {args.idle_seconds:g}s: CPU % of a core",
                f"{share:.2f}", "<= 0.5 %")
            for client in clients:
                client.sock.close()
        finally:
            server.stop()


if __name__ == "__main__":
    multiprocessing.set_start_method("fork")
    main()
