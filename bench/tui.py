"""The terminal client under a log flood: line-to-screen latency, keys, CPU.

    python3 bench/tui.py [--rate 20000] [--seconds 5] [--colour]

Starts a real server whose one service writes `--rate` lines/s (each line carries the
time it was written; with `--colour`, in SGR colours as test runners write them), runs
tui.py in a pseudo-terminal (100x30, read with pyte, as the tests do) on the all-logs
view, and measures for `--seconds`:
  1. how long after a line is written it shows on the screen (p50, p99), over every line
     that showed; the screen is scanned once per read from the pty, in the reader thread;
  2. the client's CPU (utime + stime from /proc) as a share of one core, and the server's;
  3. how long a key takes to show its effect (`i` opens the details box, esc closes it).
Targets: latency p99 <= 100 ms, client CPU <= 30 % of a core, keys <= 50 ms.
"""
import argparse
import os
import re
import statistics
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from conftest import free_port, write_config  # noqa: E402
from tui_helpers import Server, Tui  # noqa: E402

TOKEN = "bench"
LINE = re.compile(r"\| L (\d+\.\d+) (\d+) ")
FLOOD = """\
import sys, time
rate, batch = {rate}, max(1, {rate} // 100)
period, i, due = batch / rate, 0, time.monotonic()
pad = "x" * 60
start, middle, end = {colours}
while True:
    stamp = f"{{time.time():.6f}}"
    sys.stdout.write("".join(f"{{start}}L {{stamp}} {{i + k}}{{middle}} {{pad}}{{end}}\\n"
                             for k in range(batch)))
    sys.stdout.flush()
    i += batch
    due += period
    time.sleep(max(0.0, due - time.monotonic()))
"""
COLOURS = {False: ("", "", ""), True: ("\x1b[1;32m", "\x1b[0;33m", "\x1b[0m")}


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class Watcher:
    """Scans the screen after every read from the pty (in the reader thread)."""

    def __init__(self):
        self.seen = set()
        self.latencies = []
        self.highest = 0
        self.changed = threading.Event()
        self.modal = False

    def __call__(self, lines):
        now = time.time()
        text = "\n".join(lines)
        for stamp, index in LINE.findall(text):
            if index not in self.seen:
                self.seen.add(index)
                self.latencies.append(now - float(stamp))
                self.highest = max(self.highest, int(index))
        modal = "Protocol" in text
        if modal != self.modal:
            self.modal = modal
            self.changed.set()

    def measure(self, seconds):
        """Latencies of the lines that showed during `seconds`, and the newest index."""
        self.latencies = []
        time.sleep(seconds)
        return list(self.latencies), self.highest

    def time_keys(self, tui, rounds=20):
        """Seconds from a key press to its effect on the screen, for `i` and esc."""
        timings = []
        for _ in range(rounds):
            for key, shown in (("i", True), ("\x1b", False)):
                self.changed.clear()
                start = time.monotonic()
                tui.send(key)
                while self.modal != shown:
                    if not self.changed.wait(5):
                        raise SystemExit(f"key {key!r} had no effect within 5 s")
                    self.changed.clear()
                timings.append(time.monotonic() - start)
        return timings


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=20000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--colour", action="store_true",
                        help="lines in colour: bold green, then yellow, then a reset")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        port = free_port()
        flood = FLOOD.format(rate=args.rate, colours=COLOURS[args.colour])
        config = {"session": {"bind": f"127.0.0.1:{port}", "token": TOKEN},
                  "services": {"flood": {"cmd": [sys.executable, "-u", "-c", flood]}}}
        server = Server(write_config(directory, config), f"127.0.0.1:{port}", TOKEN).start()
        watcher = Watcher()
        tui = Tui(["-config", server.config_path], cols=100, rows=30, on_output=watcher)
        try:
            tui.wait_for(lambda text: LINE.search(text))
            watcher.measure(1.0)  # warm up
            client_cpu, server_cpu = cpu_seconds(tui.pid), cpu_seconds(server.process.pid)
            started = time.monotonic()
            _, first = watcher.measure(0)
            latencies, last = watcher.measure(args.seconds)
            elapsed = time.monotonic() - started
            client_cpu = (cpu_seconds(tui.pid) - client_cpu) / elapsed
            server_cpu = (cpu_seconds(server.process.pid) - server_cpu) / elapsed
            keys = watcher.time_keys(tui)
            tui.send("q")
            tui.wait_exit()
        finally:
            tui.close()
            server.stop()
    shown_rate = (last - first) / elapsed
    rows = [
        ("lines written per second (asked)", f"{args.rate:,}", ""),
        ("lines shown per second (newest index)", f"{shown_rate:,.0f}", ""),
        ("lines sampled on screen", f"{len(latencies):,}", ""),
        ("line to screen p50", f"{percentile(latencies, 50) * 1000:.1f} ms", ""),
        ("line to screen p99", f"{percentile(latencies, 99) * 1000:.1f} ms", "<= 100 ms"),
        ("client CPU (share of one core)", f"{client_cpu * 100:.0f} %", "<= 30 %"),
        ("server CPU (share of one core)", f"{server_cpu * 100:.0f} %", ""),
        ("key to screen p50", f"{statistics.median(keys) * 1000:.1f} ms", ""),
        ("key to screen p99", f"{percentile(keys, 99) * 1000:.1f} ms", "<= 50 ms"),
    ]
    colour = ", coloured lines" if args.colour else ""
    print(f"tui.py under a {args.rate:,} lines/s flood{colour}, 100x30 pty, {args.seconds:g} s")
    print(f"{'metric':<40} {'value':>12}  target")
    for name, value, target in rows:
        print(f"{name:<40} {value:>12}  {target}")


if __name__ == "__main__":
    main()
