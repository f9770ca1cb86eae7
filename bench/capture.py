"""Capture throughput: how fast lines of a fast writer reach the log store, next to simpler
ways of reading the same pipe, and the peak memory of a capturing process.

    python3 bench/capture.py [--lines N] [--repeat R]

Rows (best of R runs, lines per second):
  1. the writer into /dev/null (the speed of the service itself)
  2. a plain Python readline() loop on the pipe
  3. 64 KiB reads, split, each line decoded on its own (a ceiling for per-line work)
  4. lib.process.Process capturing into lib.logstore.LogStore
     (and Process alone, to show how the time splits between capture and store)
Targets: (4) >= 1,000,000 lines/s and >= 1/3 of (3); peak RSS of (4) <= 60 MB.
"""
import argparse
import os
import resource
import subprocess
import sys
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
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.lines)
        return

    rows = [
        ("1. writer into /dev/null", bench_devnull),
        ("2. Python readline() loop", bench_readline),
        ("3. 64 KiB chunks, per-line decode", bench_chunks),
        ("4. Process -> LogStore", bench_process_store),
        ("   Process only (no store)", bench_process),
    ]
    rates = {}
    for label, bench in rows:
        best = 0.0
        for _ in range(args.repeat):
            count, elapsed = bench(args.lines)
            if count != args.lines:
                sys.exit(f"{label}: got {count} lines, expected {args.lines}")
            best = max(best, count / elapsed)
        rates[label] = best

    print(f"capture of {args.lines:,} lines of {len(LINE) + 1} bytes, best of {args.repeat}")
    print(f"{'reader':36} {'lines/s':>12}")
    for label, rate in rates.items():
        print(f"{label:36} {rate:>12,.0f}")
    ratio = rates[rows[3][0]] / rates[rows[2][0]]
    print(f"{'ratio (4) / (3)':36} {ratio:>12.2f}")
    baseline, peak = peak_rss_child(args.lines)
    print(f"{'peak RSS of (4), MB':36} {peak:>12.1f}  (interpreter + imports: {baseline:.1f})")


if __name__ == "__main__":
    main()
