"""Capture throughput: how fast lines of a fast writer reach the log store and the whole
server, next to simpler ways of reading the same pipe, and the peak memory of each.

    python3 bench/capture.py [--lines N] [--repeat R] [--sustain-seconds S]

Rows (median of R runs, alternating between the rows, lines per second):
  1. the writer into /dev/null (the speed of the service itself)
  2. a plain Python readline() loop on the pipe
  3. 64 KiB reads, split, each line decoded on its own (the plain chunked reader)
  4. lib.process.Process capturing into lib.logstore.LogStore (the store alone)
     (and Process alone, to show how the time splits between capture and store)
  5. the whole server, `flowlayer.py` with the writer as its one service, echo to a file:
     from the writer's start to the server's `exited` line reaching the echo file
  6. the same with logs.dir (the JSONL files written too)
Then the peak RSS of (4) to (6), the lines the echo skipped, the time from the server's
start to the writer's spawn (bytecode cached, as an installed server starts), and the server's CPU (% of one core, the server process only)
while its service writes 50,000 lines/s for S seconds, without and with logs.dir.
Targets: (5) >= 2,500,000 lines/s and >= 40% of (3); (6) >= 1,500,000 lines/s; peak RSS
<= 40 MB in both; echo skips nothing; start to spawn <= 100 ms; 50k lines/s <= 3% of a
core without logs.dir, <= 6% with it.
"""
import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from lib.logstore import LogStore  # noqa: E402
from lib.process import Process  # noqa: E402

LINE = "x" * 59  # 60 bytes with its newline


def writer_argv(lines):
    return ["sh", "-c", f"yes {LINE} | head -n {lines}"]


def bench_devnull(lines):
    began = time.perf_counter()
    subprocess.run(writer_argv(lines), stdout=subprocess.DEVNULL, check=True)
    return lines, time.perf_counter() - began


def bench_readline(lines):
    began = time.perf_counter()
    proc = subprocess.Popen(writer_argv(lines), stdout=subprocess.PIPE, text=True)
    count = 0
    readline = proc.stdout.readline
    while readline():
        count += 1
    proc.wait()
    return count, time.perf_counter() - began


def bench_chunks(lines):
    began = time.perf_counter()
    proc = subprocess.Popen(writer_argv(lines), stdout=subprocess.PIPE, bufsize=0)
    fd = proc.stdout.fileno()
    count = 0
    rest = b""
    while chunk := os.read(fd, 65536):
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        for part in parts:
            part.decode("utf-8", "replace")
        count += len(parts)
    proc.wait()
    return count, time.perf_counter() - began


def bench_process(lines, store=None):
    """Process capturing into `store`, or only counting the lines when it is None."""
    count = [0]
    done = threading.Event()

    def on_lines(stream, messages):
        count[0] += len(messages)
        if store is not None:
            store.append("bench", stream, messages, "running")

    began = time.perf_counter()
    Process(writer_argv(lines), None, None, on_lines, lambda code: done.set()).start()
    done.wait()
    return count[0], time.perf_counter() - began


def bench_process_store(lines):
    store = LogStore()
    result = bench_process(lines, store)
    store.close()
    return result


# A service writing `rate` lines/s of 60 bytes, 1,000 lines at a time, for `seconds`.
PACED = """import sys, time
rate, seconds = int(sys.argv[1]), float(sys.argv[2])
block, out = (("x" * 59 + "\\n") * 1000).encode(), sys.stdout.buffer
start = time.monotonic()
for n in range(int(rate * seconds) // 1000):
    out.write(block); out.flush()
    delay = start + (n + 1) * 1000 / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
"""


# The server as installed code starts: with its bytecode cached (kept out of the tree).
SERVER_ENV = {key: value for key, value in os.environ.items()
              if key != "PYTHONDONTWRITEBYTECODE"}
SERVER_ENV["PYTHONPYCACHEPREFIX"] = os.path.join(tempfile.gettempdir(), "flowlayer-bench-pyc")


class Server:
    """flowlayer.py in a temporary directory with one service `writer`, its echo to a file."""

    def __init__(self, directory, cmd, logs):
        config = {"services": {"writer": {"cmd": cmd, "kind": "oneshot"}}}
        if logs:
            config["logs"] = {"dir": os.path.join(directory, "logs")}
        path = os.path.join(directory, "flowlayer.json")
        with open(path, "w") as f:
            json.dump(config, f)
        self.echo_path = os.path.join(directory, "echo.txt")
        self.echo = open(self.echo_path, "wb")
        self.began = time.time()
        self.popen = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "flowlayer.py"), "-c", path, "--no-color"],
            stdout=self.echo, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=directory, start_new_session=True, env=SERVER_ENV)

    def wait_for_exit_line(self, timeout=120):
        """Poll the echo file's tail until the writer's `exited` line is in it."""
        deadline = time.monotonic() + timeout
        with open(self.echo_path, "rb") as f:
            while time.monotonic() < deadline:
                end = f.seek(0, os.SEEK_END)
                f.seek(max(0, end - 4096))
                if b"writer | exited (" in f.read():
                    return time.time()
                time.sleep(0.002)
        self.stop()
        sys.exit("the whole server: no exit line in the echo")

    def peak_rss_mb(self):
        with open(f"/proc/{self.popen.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def cpu_seconds(self):
        with open(f"/proc/{self.popen.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        """SIGTERM, wait for the exit; the echo file's content."""
        self.popen.send_signal(signal.SIGTERM)
        self.popen.wait(60)
        self.echo.close()
        with open(self.echo_path, "rb") as f:
            return f.read()


def bench_server(lines, logs, details):
    """Row 5 or 6; `details` gets the run's peak RSS, echo skips and start-to-spawn time."""
    with tempfile.TemporaryDirectory() as directory:
        stamp = os.path.join(directory, "spawned")
        cmd = ["sh", "-c", f"date +%s.%N > {stamp}; yes {LINE} | head -n {lines}"]
        server = Server(directory, cmd, logs)
        ended = server.wait_for_exit_line()
        with open(stamp) as f:
            spawned = float(f.read())
        details.setdefault("rss", []).append(server.peak_rss_mb())
        details.setdefault("spawn", []).append(spawned - server.began)
        echo = server.stop()
        details.setdefault("skipped", []).append(lines - echo.count(f"| {LINE}\n".encode()))
        if logs:
            with open(os.path.join(directory, "logs", "writer.jsonl"), "rb") as f:
                stored = sum(1 for line in f if b'"stream": "stdout"' in line)
            if stored != lines:
                sys.exit(f"logs.dir: {stored} lines in writer.jsonl, expected {lines}")
        return lines, ended - spawned


def sustained_cpu(seconds, logs, rate=50_000):
    """% of one core the server process uses while its service writes `rate` lines/s; the
    first second (start-up) is left out."""
    with tempfile.TemporaryDirectory() as directory:
        server = Server(directory, [sys.executable, "-c", PACED, str(rate), str(seconds + 2)],
                        logs)
        time.sleep(1.0)
        cpu, began = server.cpu_seconds(), time.monotonic()
        time.sleep(seconds)
        used = (server.cpu_seconds() - cpu) / (time.monotonic() - began)
        server.stop()
    return 100 * used


def peak_rss_child(lines):
    """Run (4) in a fresh interpreter: (RSS before capturing, peak RSS) in MB."""
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", "--lines", str(lines)],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    return float(out[0]), float(out[1])


def peak_rss_mb():
    """This process's peak RSS. VmHWM rather than ru_maxrss: the latter keeps the high-water
    mark of the forking parent across exec."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_child(lines):
    baseline = peak_rss_mb()
    bench_process_store(lines)
    print(f"{baseline:.1f} {peak_rss_mb():.1f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sustain-seconds", type=float, default=10)
    parser.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.lines)
        return

    details = {False: {}, True: {}}
    rows = [
        ("1. writer into /dev/null", bench_devnull),
        ("2. Python readline() loop", bench_readline),
        ("3. 64 KiB chunks, per-line decode", bench_chunks),
        ("4. Process -> LogStore (store alone)", bench_process_store),
        ("   Process only (no store)", bench_process),
        ("5. whole server, echo to a file", lambda n: bench_server(n, False, details[False])),
        ("6. whole server with logs.dir", lambda n: bench_server(n, True, details[True])),
    ]
    rates = {label: [] for label, _ in rows}
    for _ in range(args.repeat):  # alternating: a change of load hits every row alike
        for label, bench in rows:
            count, elapsed = bench(args.lines)
            if count != args.lines:
                sys.exit(f"{label}: got {count} lines, expected {args.lines}")
            rates[label].append(count / elapsed)
    rate = {label: statistics.median(values) for label, values in rates.items()}

    print(f"capture of {args.lines:,} lines of {len(LINE) + 1} bytes, median of {args.repeat}")
    print(f"{'reader':42} {'median':>12} {'min':>12} {'max':>12}")
    for label, values in rates.items():
        print(f"{label:42} {rate[label]:>12,.0f} {min(values):>12,.0f} {max(values):>12,.0f}")
    plain = rate[rows[2][0]]
    for number, index in ((4, 3), (5, 5), (6, 6)):
        print(f"{f'ratio ({number}) / (3)':42} {rate[rows[index][0]] / plain:>12.2f}")
    baseline, peak = peak_rss_child(args.lines)
    print(f"{'peak RSS of (4), MB':42} {peak:>12.1f}  (interpreter + imports: {baseline:.1f})")
    for number, logs in ((5, False), (6, True)):
        got = details[logs]
        print(f"{f'peak RSS of ({number}), MB':42} {statistics.median(got['rss']):>12.1f}"
              f" {min(got['rss']):>12.1f} {max(got['rss']):>12.1f}")
        print(f"{f'lines the echo skipped in ({number})':42} {statistics.median(got['skipped']):>12,.0f}"
              f" {min(got['skipped']):>12,} {max(got['skipped']):>12,}")
    spawns = [1000 * t for t in details[False]["spawn"] + details[True]["spawn"]]
    print(f"{'server start to first spawn, ms':42} {statistics.median(spawns):>12.0f}"
          f" {min(spawns):>12.0f} {max(spawns):>12.0f}")
    if args.sustain_seconds > 0:
        cpu = {False: [], True: []}
        for _ in range(3):
            for logs in (False, True):
                cpu[logs].append(sustained_cpu(args.sustain_seconds, logs))
        for logs, label in ((False, "without logs.dir"), (True, "with logs.dir")):
            print(f"{f'50k lines/s, % of a core, {label}':42} {statistics.median(cpu[logs]):>12.1f}"
                  f" {min(cpu[logs]):>12.1f} {max(cpu[logs]):>12.1f}")


if __name__ == "__main__":
    main()
