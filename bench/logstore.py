"""Benchmark of the log store: append rate (the capture hot path) and query times.

Run: python bench/logstore.py. Prints one table; targets in the last column. Appends are
1,000-line batches of ~80-character lines, as a reader thread delivers them from one 64 KiB
chunk. Queries run over 20 services whose rings are full (5,000 entries each).
"""
import os
import statistics
import sys
import tempfile
import time
from collections import deque

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from lib.logstore import LogStore  # noqa: E402

BATCH = [f"line {i} " + "x" * 70 for i in range(1000)]
SERVICES = [f"svc{i:02d}" for i in range(20)]


def append_rate(store, batches):
    """Lines per second appended, and the time until close() had written everything."""
    start = time.perf_counter()
    for i in range(batches):
        store.append(SERVICES[i % len(SERVICES)], "stdout", BATCH, "running")
    appended = time.perf_counter() - start
    store.close()
    closed = time.perf_counter() - start
    lines = batches * len(BATCH)
    return lines / appended, lines / closed


def query_ms(run, repeat=20):
    """Median milliseconds of one query."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        entries, _ = run()
        times.append((time.perf_counter() - start) * 1000)
        assert len(entries) == 5000
    return statistics.median(times)


def main():
    rows = []
    memory, _ = append_rate(LogStore(), 2000)
    rows.append(("append, memory only", f"{memory / 1e6:.2f} M lines/s", ">= 1 M lines/s"))

    subscribed = LogStore()
    subscribed.subscribe(deque(maxlen=100).append)  # a consumer that keeps up
    rate, _ = append_rate(subscribed, 2000)
    rows.append(("append, 1 subscriber", f"{rate / 1e6:.2f} M lines/s",
                 ">= 1 M lines/s"))

    with tempfile.TemporaryDirectory() as directory:
        rate, written = append_rate(LogStore(logs_dir=directory), 1000)
        rows.append(("append, JSONL dir", f"{rate / 1e6:.2f} M lines/s", ">= 1 M lines/s"))
        rows.append(("append + written to JSONL (close)", f"{written / 1e6:.2f} M lines/s", ""))

        # Two runs on the same dir: the second one's before_seq queries reach into the first.
        store = LogStore(logs_dir=directory)
        append_rate(store, 100)
        store = LogStore(logs_dir=directory)
        for i in range(100):  # 20 services x 5000 entries, all rings full
            store.append(SERVICES[i % 20], "stdout", BATCH, "running")
        newest = store.query(limit=1)[0][0].seq
        # below the oldest entry of the newest full ring memory is incomplete: disk
        floor = max(store.query(s, limit=5000)[0][0].seq for s in SERVICES)
        svc05_floor = store.query("svc05", limit=5000)[0][0].seq
        cases = [
            ("query all services, newest 5000", lambda: store.query(limit=5000), "< 20 ms"),
            ("query one service, newest 5000", lambda: store.query("svc05", limit=5000),
             "< 20 ms"),
            ("query all, after_seq", lambda: store.query(limit=5000, after_seq=newest - 50_000),
             "< 20 ms"),
            ("query all, before_seq in memory",
             lambda: store.query(limit=5000, before_seq=newest - 10_000), "< 20 ms"),
            ("query one service, before_seq from disk",
             lambda: store.query("svc05", limit=5000, before_seq=svc05_floor), ""),
            ("query all, before_seq from disk",
             lambda: store.query(limit=5000, before_seq=floor), ""),
        ]
        for name, run, target in cases:
            rows.append((name, f"{query_ms(run):.2f} ms", target))
        store.close()

    width = max(len(r[0]) for r in rows)
    print(f"{'log store':<{width}}  {'result':>16}  target")
    for name, result, target in rows:
        print(f"{name:<{width}}  {result:>16}  {target}")


if __name__ == "__main__":
    main()
