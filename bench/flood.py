"""Memory under a log flood: `yes` as a service, the real server (flowlayer.py), three setups.

    python bench/flood.py [--seconds 60]

Setups: logs.dir and no client (the JSONL writer is the bottleneck: capture must slow to its
pace); one client reading as fast as it can and no logs.dir (the broadcaster and the
connection's outbox: they must drop log events, counted); neither. The server's stdout (the
terminal echo) goes to /dev/null. RSS of the server process tree (the server, its guardian
and `yes`) is sampled every second. Target: peak RSS <= 60 MB, SIGTERM to exit <= 2 s.

Columns: peak and end RSS of the tree, peak RSS of the server process alone (the guardian
adds about 11 MB, `yes` 2 MB), lines captured (seqs the store handed out to `yes`, read from the last entry),
lines stored in yes.jsonl (logs.dir) or received by the client, and lines dropped on the way
to the client (captured - received).
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, ROOT)

from wsraw import RawClient  # noqa: E402  (tests/wsraw.py)

TOKEN = "flood-token"
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss(pid):
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:
        return 0


def tree_rss(root):
    """Resident bytes of `root` and all its descendants (from /proc)."""
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(parent, []).append(int(name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, ()))
        total += rss(pid)
    return total


class Reader(threading.Thread):
    """One client reading as fast as it can, counting the log events of `yes` in bulk."""

    PATTERN = b'"service":"yes"'

    def __init__(self, port):
        super().__init__(daemon=True)
        self.client = RawClient(port, token=TOKEN)
        self.received = 0

    def run(self):
        tail = self.client.buffer
        try:
            while True:
                chunk = self.client.sock.recv(1 << 20)
                if not chunk:
                    return
                data = tail + chunk  # the tail: a pattern may be cut between two reads
                self.received += data.count(self.PATTERN)
                tail = data[-(len(self.PATTERN) - 1):]
        except OSError:
            return


def last_seq(port, service):
    """The seq of `service`'s newest entry in the store."""
    client = RawClient(port, token=TOKEN)
    try:
        result = client.command("get_logs", {"service": service, "limit": 1})
        return result["payload"]["data"]["entries"][-1]["seq"]
    finally:
        client.close()


def run_setup(name, seconds, logs, client, directory):
    port = free_port()
    config = {"session": {"bind": f"127.0.0.1:{port}", "token": TOKEN},
              "services": {"yes": {"cmd": ["yes"]}}}
    if logs:
        config["logs"] = {"dir": os.path.join(directory, name)}
    path = os.path.join(directory, f"{name}.json")
    with open(path, "w") as f:
        json.dump(config, f)
    server = subprocess.Popen([sys.executable, os.path.join(ROOT, "flowlayer.py"), "-c", path],
                              start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"{name}: the server did not come up")
            time.sleep(0.05)
    first = last_seq(port, "flowlayer")
    reader = Reader(port) if client else None
    if reader:
        reader.start()
    samples, alone = [], []   # RSS of the tree, of the server process alone
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        samples.append(tree_rss(server.pid))
        alone.append(rss(server.pid))
        time.sleep(1)
    captured = last_seq(port, "yes") - first
    samples.append(tree_rss(server.pid))
    stopped = time.monotonic()
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(60)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
    exit_time = time.monotonic() - stopped
    if logs:
        with open(os.path.join(directory, name, "yes.jsonl"), "rb") as f:
            stored = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        delivered, dropped = f"{stored:,} in yes.jsonl", "0" if stored >= captured else "?"
    elif reader:
        reader.join(10)
        seen = reader.received
        delivered, dropped = f"{seen:,} to the client", f"{max(0, captured - seen):,}"
    else:
        delivered, dropped = "-", "-"
    return (name, max(samples) / 1e6, samples[-1] / 1e6, max(alone) / 1e6, exit_time,
            f"{captured:,}", delivered, dropped)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    setups = [("logs.dir, no client", True, False),
              ("one fast client", False, True),
              ("neither", False, False)]
    print(f"`yes` flood, {args.seconds:g} s per setup; RSS of the server process tree")
    print(f"{'setup':<21}{'peak MB':>8}{'end MB':>8}{'server':>8}{'SIGTERM s':>10}"
          f"{'captured':>14}  {'stored / received':<26}{'dropped':>12}")
    with tempfile.TemporaryDirectory() as directory:
        for name, logs, client in setups:
            row = run_setup(name.split(",")[0].replace(" ", "-"), args.seconds, logs, client,
                            directory)
            print(f"{name:<21}{row[1]:>8.1f}{row[2]:>8.1f}{row[3]:>8.1f}{row[4]:>10.2f}"
                  f"{row[5]:>14}  {row[6]:<26}{row[7]:>12}", flush=True)


if __name__ == "__main__":
    main()
