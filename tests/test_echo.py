"""The terminal echo: its backlog is bounded in bytes, what it skips is counted (SPEC 4.2)."""
import threading
import time

from lib import echo as echo_module
from lib.echo import Echo
from lib.logstore import LogStore, chunk_bytes


class StalledTerminal:
    """A binary stream whose first write blocks until `release`: a terminal nobody reads."""

    def __init__(self):
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.data = b""

    def write(self, data):
        self.entered.set()
        self.gate.wait()
        self.data += data

    def flush(self):
        pass


def chunk(store, service, count, width):
    """Append `count` lines of `width` characters; return the chunk the store made."""
    seen = []
    token = store.subscribe(seen.append)
    store.append(service, "stdout", ["x" * width] * count, "running")
    store.unsubscribe(token)
    return seen[0]


def test_long_lines_fill_the_backlog_by_bytes_and_skipped_lines_are_counted(monkeypatch):
    store = LogStore()
    big = chunk(store, "api", 4, 64 << 10)      # four 64 KiB lines: few lines, many bytes
    monkeypatch.setattr(echo_module, "BACKLOG_BYTES", 3 * chunk_bytes(big))
    out = StalledTerminal()
    echo = Echo(out, ["api"])
    try:
        echo.offer(chunk(store, "api", 1, 10))   # taken by the writer, which then blocks
        assert out.entered.wait(30)
        for _ in range(5):                      # three fit in the backlog, two do not
            echo.offer(big)
    finally:
        out.gate.set()
        echo.close()
    text = out.data.decode()
    assert text.count("x" * (64 << 10)) == 3 * 4
    assert text.endswith("[flowlayer] echo: 8 lines skipped\n")


def test_a_chunk_larger_than_the_bound_is_echoed_in_part_and_the_rest_counted(monkeypatch):
    """A flood's read holds thousands of lines: the empty backlog takes what fits of it
    (one line at least), not the whole chunk."""
    store = LogStore()
    lines = chunk(store, "api", 10, 100)
    monkeypatch.setattr(echo_module, "BACKLOG_BYTES", chunk_bytes(lines[:4]))
    out = StalledTerminal()
    out.gate.set()
    echo = Echo(out, ["api"])
    echo.offer(lines)
    echo.close()
    text = out.data.decode()
    assert text.count("x" * 100) == 4
    assert text.endswith("[flowlayer] echo: 6 lines skipped\n")

    monkeypatch.setattr(echo_module, "BACKLOG_BYTES", 10)   # less than one line
    out = StalledTerminal()
    out.gate.set()
    echo = Echo(out, ["api"])
    echo.offer(lines)
    echo.close()
    assert out.data.decode().count("x" * 100) == 1


class SlowFile:
    """A binary stream that keeps up, slowly: every write takes a little while."""

    def __init__(self):
        self.data = bytearray()

    def write(self, data):
        time.sleep(0.002)
        self.data += data

    def flush(self):
        pass


def test_an_output_that_keeps_up_gets_every_line(monkeypatch):
    """Capture outpaces the echo (tiny backlog, slow writes): the capturing thread waits for
    room instead of the echo skipping."""
    monkeypatch.setattr(echo_module, "BACKLOG_BYTES", 20_000)
    store = LogStore()
    out = SlowFile()
    echo = Echo(out, ["api"])
    store.subscribe(echo.offer, wait=echo.wait_for_room)
    for i in range(200):
        store.append("api", "stdout", [f"{i}.{n}" for n in range(50)], "running")
    echo.close()
    text = out.data.decode()
    assert "skipped" not in text
    assert text.splitlines() == [f"api | {i}.{n}" for i in range(200) for n in range(50)]


def test_a_stalled_output_holds_capture_once_for_at_most_the_stall_time(monkeypatch):
    monkeypatch.setattr(echo_module, "BACKLOG_BYTES", 20_000)
    store = LogStore()
    out = StalledTerminal()
    echo = Echo(out, ["api"])
    store.subscribe(echo.offer, wait=echo.wait_for_room)
    store.append("api", "stdout", ["first"], "running")
    assert out.entered.wait(30)                  # the writer is blocked in its write
    done = threading.Event()

    def capture():
        for i in range(200):
            store.append("api", "stdout", [f"{i}.{n}" for n in range(50)], "running")
        done.set()

    thread = threading.Thread(target=capture)
    thread.start()
    try:
        assert done.wait(30), "capture must go on while the terminal is stalled"
    finally:
        out.gate.set()
        thread.join(30)
        echo.close()
    skipped = int(out.data.decode().rsplit("echo: ", 1)[1].split()[0])
    echoed = out.data.decode().count("api | ")
    assert echoed + skipped == 1 + 200 * 50 and skipped > 0
