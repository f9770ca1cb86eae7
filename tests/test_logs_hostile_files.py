"""Hostile files in logs.dir at boot and on disk queries (issue 14 item 9): a FIFO where a
JSONL file should be, and a torn last line of 40 MB."""
import json
import os
import subprocess
import sys

import pytest

from conftest import PY, ROOT, py_cmd, write_config
from lib import logstore
from lib.logstore import ALL_FILE, LogEntry, LogStore
from test_config import finishes


SCANS = {"split", "rsplit", "splitlines", "find", "rfind", "index", "rindex", "count", "partition",
         "rpartition", "decode"}  # bytes methods whose work grows with the bytes' length


def entry_line(seq):
    return json.dumps(LogEntry(seq, "api", "running", "stdout", "ok", "x").as_dict()).encode() + b"\n"


@pytest.fixture
def fifo(tmp_path):
    """Make a FIFO; at the end, free any reader still blocked opening it."""
    made = []

    def make(path):
        os.mkfifo(path)
        made.append(path)
        return str(path)

    yield make
    for path in made:
        os.close(os.open(path, os.O_RDWR | os.O_NONBLOCK))


def test_all_jsonl_that_is_a_fifo_stops_boot_with_exit_1(tmp_path, fifo):
    logs = tmp_path / "logs"
    logs.mkdir()
    fifo(logs / ALL_FILE)
    path = write_config(tmp_path, {"logs": {"dir": "logs"}, "services": {"a": {"cmd": py_cmd("pass")}}})
    out = subprocess.run([PY, os.path.join(ROOT, "flowlayer.py"), "-c", path], capture_output=True, text=True,
                         timeout=30, stdin=subprocess.DEVNULL)
    assert (out.returncode, out.stderr) == (1, f"Error: cannot use logs dir {logs}: {logs}/{ALL_FILE} "
                                               "is not a regular file\n")


def test_disk_query_skips_a_service_file_that_is_a_fifo(tmp_path, fifo):
    store = LogStore(10, str(tmp_path))
    try:
        fifo(tmp_path / "api.jsonl")
        assert finishes(lambda: store._read_disk("api", 10**18, 5)) == []
    finally:
        store.close()


def test_torn_40_mb_last_line_is_scanned_once(tmp_path):
    """The backward scan joined each new block to the unfinished line and split the whole
    again: quadratic in the line's length (18.9 s at boot for 40 MB). Count the bytes that
    the scanning bytes methods are called on: a few times the file's size, not its square."""
    path = tmp_path / ALL_FILE
    torn = b'{"seq": 99, "message": "' + b"x" * (40 << 20)
    path.write_bytes(entry_line(7) + torn)
    scanned = 0

    def count(frame, event, arg):
        nonlocal scanned
        if event == "c_call" and arg.__name__ in SCANS and isinstance(getattr(arg, "__self__", None), bytes):
            scanned += len(arg.__self__)

    sys.setprofile(count)
    try:
        highest = logstore._highest_seq(str(path))
    finally:
        sys.setprofile(None)
    assert highest == 7
    assert scanned < 3 * path.stat().st_size


@pytest.mark.parametrize("block", [1, 2, 3, 5, 64])
@pytest.mark.parametrize("data", [b"", b"\n", b"a", b"a\n", b"\n\na\n\nbb\nccc", b"abc\ndefgh\nij\n", b"x" * 20])
def test_lines_backwards_matches_a_split_of_the_whole_file(tmp_path, monkeypatch, block, data):
    monkeypatch.setattr(logstore, "_BLOCK", block)
    path = tmp_path / "f"
    path.write_bytes(data)
    expected = [line for line in reversed(data.split(b"\n")) if line]
    for end in range(len(data) + 1):
        with open(path, "rb") as f:
            assert list(logstore._lines_backwards(f, end)) == [
                line for line in reversed(data[:end].split(b"\n")) if line]
    with open(path, "rb") as f:
        assert list(logstore._lines_backwards(f, len(data))) == expected
