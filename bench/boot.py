"""Boot of a 20-service, 4-wave stack whose services each take 100 ms to listen (tcp probes):
the server's whole boot beside the sum over the waves of the services' own start-up time.

Each service writes, when it listens, how long it took from the moment its process started
(its start time in /proc) to its listen(); a wave's own time is its slowest service's. The
overhead per wave is what the server adds: spawning, probing, and starting the next wave.
Prints a table; `--runs N` boots (default 5).
"""
import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WAVES, PER_WAVE, DELAY = 4, 5, 0.1

SERVICE = """
import os, socket, sys, time
ticks = os.sysconf("SC_CLK_TCK")
with open("/proc/self/stat") as f:
    started = int(f.read().rsplit(")", 1)[1].split()[19]) / ticks
time.sleep(%r)
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
with open("/proc/uptime") as f:
    own = float(f.read().split()[0]) - started
with open(sys.argv[2], "w") as f:
    f.write(repr(own))
time.sleep(600)
""" % DELAY


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stack(directory):
    services = {}
    for wave in range(WAVES):
        for i in range(PER_WAVE):
            name = f"w{wave}s{i}"
            port = free_port()
            services[name] = {
                "cmd": [sys.executable, "-c", SERVICE, str(port), os.path.join(directory, name)],
                "ready": {"type": "tcp", "port": port},
                "dependsOn": [f"w{wave - 1}s{j}" for j in range(PER_WAVE)] if wave else []}
    path = os.path.join(directory, "flowlayer.jsonc")
    with open(path, "w") as f:
        json.dump({"services": services}, f)
    return path


def boot_once():
    with tempfile.TemporaryDirectory() as directory:
        server = subprocess.Popen([sys.executable, os.path.join(ROOT, "flowlayer.py"), "-c",
                                   stack(directory), "--no-color"],
                                  stdout=subprocess.PIPE, text=True)
        try:
            for line in server.stdout:
                match = re.search(r"startup (?:ok|incomplete).*\((\d+\.\d+)s\)", line)
                if match:
                    boot = float(match.group(1))
                    break
            else:
                raise SystemExit("the server ended before its startup summary")
            own = 0.0
            for wave in range(WAVES):
                times = []
                for i in range(PER_WAVE):
                    with open(os.path.join(directory, f"w{wave}s{i}")) as f:
                        times.append(float(f.read()))
                own += max(times)
        finally:
            server.terminate()
            server.wait(30)
    return boot, own


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = [boot_once() for _ in range(parser.parse_args().runs)]
    boots, owns = [b for b, _ in runs], [o for _, o in runs]
    overheads = [(b - o) / WAVES * 1000 for b, o in runs]
    print(f"boot of {WAVES * PER_WAVE} services in {WAVES} waves, {DELAY * 1000:.0f} ms each "
          f"(median of {len(runs)} runs; /proc clock: 10 ms ticks)")
    print(f"{'whole boot':<34}{statistics.median(boots) * 1000:8.0f} ms")
    print(f"{'sum of the waves own times':<34}{statistics.median(owns) * 1000:8.0f} ms")
    print(f"{'overhead per wave (target <= 15)':<34}{statistics.median(overheads):8.1f} ms"
          f"   (min {min(overheads):.1f}, max {max(overheads):.1f})")


if __name__ == "__main__":
    main()
