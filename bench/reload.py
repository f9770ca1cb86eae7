"""Live reload: reload_config of a 20-service config with one changed service, next to
that service's own restart.

    python3 bench/reload.py [--services N] [--repeat R]

Runs `flowlayer.py` with the session API over N services (python sleepers in dependency
chains; the changed one is a TCP server with a tcp readiness probe and no dependents).
Each round changes one env var of it in the file and times, from send to result:
  1. restart_service of that service (its own restart time)
  2. reload_config (read and diff the file, restart that service, leave the rest)
and prints the medians. Target: reload <= restart + 50 ms.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import websocket

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "bench-reload-token"
TARGET_MS = 50.0
SLEEPER = "import time; time.sleep(3600)"
LISTENER = ("import socket, time\ns = socket.socket()\n"
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            "s.bind(('127.0.0.1', {port})); s.listen()\ntime.sleep(3600)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(count, port, api_port, round_):
    services = {}
    for i in range(count - 1):
        name = f"svc-{i:02d}"
        services[name] = {"cmd": [sys.executable, "-c", SLEEPER], "env": {"N": str(i)}}
        if i % 5:
            services[name]["dependsOn"] = [f"svc-{i - 1:02d}"]
    services["changed"] = {"cmd": [sys.executable, "-c", LISTENER.format(port=port)],
                           "port": port, "ready": {"type": "tcp"}, "env": {"ROUND": str(round_)}}
    return {"session": {"bind": f"127.0.0.1:{api_port}", "token": TOKEN}, "services": services}


class Wire:
    def __init__(self, url):
        self.ws = websocket.create_connection(url, header=[f"Authorization: Bearer {TOKEN}"],
                                              timeout=60, suppress_origin=True)
        self.n = 0

    def timed(self, name, payload=None):
        """Seconds from sending the command to its result."""
        self.n += 1
        id = f"b{self.n}"
        started = time.perf_counter()
        self.ws.send(json.dumps({"type": "command", "id": id, "name": name, "payload": payload}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == id and message["type"] == "result":
                elapsed = time.perf_counter() - started
                assert message["payload"]["ok"], message
                return elapsed, message["payload"].get("data")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    port, api_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "flowlayer.json")

        def write(round_):
            with open(path, "w") as f:
                json.dump(config(args.services, port, api_port, round_), f)

        write(0)
        server = subprocess.Popen([sys.executable, os.path.join(ROOT, "flowlayer.py"), "-c", path,
                                   "--no-color"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            for line in server.stdout:
                if b"boot: startup" in line:
                    break
            threading.Thread(target=server.stdout.read, daemon=True).start()   # keep draining
            wire = Wire(f"ws://127.0.0.1:{api_port}/ws")
            restarts, reloads = [], []
            for round_ in range(1, args.repeat + 1):
                restarts.append(wire.timed("restart_service", {"service": "changed"})[0])
                write(round_)
                elapsed, data = wire.timed("reload_config")
                assert data["changed"] == ["changed"], data
                assert len(data["unchanged"]) == args.services - 1, data
                reloads.append(elapsed)
        finally:
            server.terminate()
            server.communicate(timeout=60)
    restart = statistics.median(restarts) * 1000
    reload_ = statistics.median(reloads) * 1000
    print(f"reload_config, {args.services} services, 1 changed, median of {args.repeat}")
    print(f"{'measure':<36}{'ms':>10}")
    print(f"{'restart_service of the changed one':<36}{restart:>10.1f}")
    print(f"{'reload_config':<36}{reload_:>10.1f}")
    print(f"{'reload overhead':<36}{reload_ - restart:>10.1f}")
    print(f"{'target overhead':<36}{'<= ' + format(TARGET_MS, '.0f'):>10}")
    print("PASS" if reload_ - restart <= TARGET_MS else "FAIL")


if __name__ == "__main__":
    main()
