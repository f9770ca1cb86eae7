"""Time to ready: how soon each probing design sees a service that starts listening, and
what probing costs with 20 services waiting (SPEC 6.2).

    python3 bench/readiness.py [--rounds R] [--replicas K] [--window S]

Services: each round starts K child processes per (kind, delay), tcp and http, delay in
{0.05, 0.3, 1, 3} s (plus up to 20 ms of jitter, so a poller's phase is random); each binds
at once, listens when its delay has passed after the bench began probing, and writes the moment it began to listen
(CLOCK_MONOTONIC, shared by all processes). The bench starts one probe per listener
and records when it returned ready: latency = ready - listen. Designs run one after the
other, so none slows another:
  doubling   lib/probes.wait_until_ready: 10 ms doubling to 200 ms (SPEC 3.3, before 6.2)
  fixed200   one check every 200 ms (the public server)
  connect5   a refused connect every 5 ms until the port connects, then the check
  connect10  the same every 10 ms
  watch-nl   lib/readiness.ReadinessWatcher over netlink sock_diag (the chosen design)
  watch-proc the same watcher reading /proc/net/tcp{,6}
CPU: 20 probes on ports that never listen, process CPU time over a window after a warm-up.
Targets: p99 <= 15 ms, probing <= 5% of one core with 20 waiting.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from lib import probes, readiness  # noqa: E402
from lib.listening import ListenTable  # noqa: E402

DELAYS = (0.05, 0.3, 1.0, 3.0)
KINDS = ("tcp", "http")
TARGET_P99_MS = 15.0
TARGET_CPU = 5.0

HOST = r"""
import http.server, json, random, socket, sys, threading, time
specs = json.loads(sys.argv[1])
lock = threading.Lock()

class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass

def say(obj):
    with lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

servers = []
for kind, delay in specs:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok, bind_and_activate=False)
    server.server_bind()
    servers.append((server, kind, delay + random.uniform(0, 0.02)))
say({"ports": [s.server_address[1] for s, _, _ in servers]})
sys.stdin.readline()  # "go": the bench probes from now on, like the runtime after spawn
began = time.monotonic()

def run(server, kind, delay):
    time.sleep(max(0.0, began + delay - time.monotonic()))
    server.server_activate()   # listen()
    say({"port": server.server_address[1], "listen": time.monotonic()})
    if kind == "http":
        server.serve_forever(poll_interval=0.05)
    else:
        sys.stdin.read()

for args in servers:
    threading.Thread(target=run, args=args, daemon=True).start()
sys.stdin.read()
"""


def fixed(period):
    def wait(check, port, cancel):
        while not cancel.is_set():
            if check():
                return True
            cancel.wait(period)
        return False
    return wait


def connect_then_check(period):
    def wait(check, port, cancel):
        while not cancel.is_set():
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            cancel.wait(period)
        return probes.wait_until_ready(check, cancel)
    return wait


def watcher_design(watcher):
    def wait(check, port, cancel):
        probe = readiness.Probe("bench", check, port)
        return watcher.wait(probe, cancel).state == "ready"
    return wait


def designs():
    nl, proc = readiness.ReadinessWatcher(), readiness.ReadinessWatcher(ListenTable(netlink=False))
    return {
        "doubling": lambda check, port, cancel: probes.wait_until_ready(check, cancel),
        "fixed200": fixed(0.2),
        "connect5": connect_then_check(0.005),
        "connect10": connect_then_check(0.010),
        f"watch-{'nl' if nl._table.source == 'netlink' else nl._table.source}": watcher_design(nl),
        "watch-proc": watcher_design(proc),
    }, (nl, proc)


def check_for(kind, port):
    if kind == "http":
        url = f"http://127.0.0.1:{port}/health"
        return lambda: probes.check_http(url)
    return lambda: probes.check_tcp(port)


def one_round(wait, replicas):
    """Latencies in ms of one round of services probed with `wait`, by (kind, delay)."""
    specs = [(kind, delay) for kind in KINDS for delay in DELAYS for _ in range(replicas)]
    hosts = [subprocess.Popen([sys.executable, "-c", HOST, json.dumps([spec])], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
             for spec in specs]
    ports = [json.loads(host.stdout.readline())["ports"][0] for host in hosts]
    listened, ready = {}, {}
    cancel = readiness.WakingEvent()

    def probe(kind, port):
        if wait(check_for(kind, port), port, cancel):
            ready[port] = time.monotonic()

    threads = [threading.Thread(target=probe, args=(kind, port))
               for (kind, _), port in zip(specs, ports)]
    for thread in threads:
        thread.start()
    for host in hosts:
        host.stdin.write("go\n")
        host.stdin.flush()
    for host, port in zip(hosts, ports):
        listened[port] = json.loads(host.stdout.readline())["listen"]
    for thread in threads:
        thread.join(30)
    cancel.set()
    for host in hosts:
        host.stdin.close()
        host.kill()
        host.wait()
    result = {}
    for (kind, delay), port in zip(specs, ports):
        if port in ready:
            result.setdefault((kind, delay), []).append((ready[port] - listened[port]) * 1000)
    return result


class Floor(threading.Thread):
    """How late a thread of this process wakes from a 2 ms wait, sampled during the
    latency rounds: the part of any latency that is the machine's, not the design's."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.late_ms = []

    def run(self):
        while True:
            began = time.monotonic()
            if self.stop.wait(0.002):
                return
            self.late_ms.append((time.monotonic() - began - 0.002) * 1000)
            self.stop.wait(0.05)


def cpu_share(wait, services=20, warmup=1.0, window=3.0):
    """% of one core the process spends while `services` probes wait on refused ports."""
    holders = []
    for _ in range(services):  # bound, never listening: every connect is refused
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        holders.append(sock)
    cancel = readiness.WakingEvent()
    threads = [threading.Thread(target=wait, args=(check_for("tcp", s.getsockname()[1]),
                                                   s.getsockname()[1], cancel))
               for s in holders]
    for thread in threads:
        thread.start()
    time.sleep(warmup)  # past the first, quick attempts of the doubling schedules
    began_cpu, began = time.process_time(), time.monotonic()
    time.sleep(window)
    share = (time.process_time() - began_cpu) / (time.monotonic() - began) * 100
    cancel.set()
    for thread in threads:
        thread.join(10)
    for sock in holders:
        sock.close()
    return share


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12, help="rounds per design")
    parser.add_argument("--replicas", type=int, default=2, help="services per kind and delay")
    parser.add_argument("--window", type=float, default=3.0, help="CPU window, seconds")
    parser.add_argument("--designs", help="comma-separated subset of the designs")
    args = parser.parse_args()
    table, watchers = designs()
    if args.designs:
        table = {name: table[name] for name in args.designs.split(",")}
    print(f"readiness latency, ms from listen() to ready ({args.rounds} rounds x "
          f"{args.replicas} per cell); CPU with 20 waiting, % of one core")
    header = (f"{'design':<11}{'kind':<6}{'n':>5}{'p50':>8}{'p99':>8}{'max':>8}"
              + "".join(f"{f'p99@{d:g}s':>10}" for d in DELAYS) + f"{'cpu%':>8}")
    print(header)
    print("-" * len(header), flush=True)
    floor = Floor()
    floor.start()
    meets = []
    for name, wait in table.items():  # one design at a time: none slows another
        samples = {}
        for _ in range(args.rounds):
            for key, values in one_round(wait, args.replicas).items():
                samples.setdefault(key, []).extend(values)
        cpu = cpu_share(wait, window=args.window)
        ok = cpu <= TARGET_CPU
        for kind in KINDS:
            values = [v for d in DELAYS for v in samples.get((kind, d), [])]
            p99 = percentile(values, 0.99)
            ok = ok and p99 <= TARGET_P99_MS
            cells = "".join(f"{percentile(samples[(kind, d)], 0.99):>10.1f}" for d in DELAYS)
            print(f"{name:<11}{kind:<6}{len(values):>5}{statistics.median(values):>8.1f}"
                  f"{p99:>8.1f}{max(values):>8.1f}{cells}{cpu:>8.2f}", flush=True)
        if ok:
            meets.append(name)
    floor.stop.set()
    for watcher in watchers:
        watcher.close()
    print(f"machine floor: a 2 ms wait wakes late by p50 {statistics.median(floor.late_ms):.1f} ms, "
          f"p99 {percentile(floor.late_ms, 0.99):.1f} ms (os.getloadavg: "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())})")
    print(f"targets p99 <= {TARGET_P99_MS:g} ms and cpu <= {TARGET_CPU:g}%: met by "
          f"{', '.join(meets) or 'none'}")


if __name__ == "__main__":
    main()
