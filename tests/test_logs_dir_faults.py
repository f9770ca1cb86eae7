"""The logs dir fails under a running server: deleted, replaced by a file, its files turned
into directories or into a full disk, made immutable.

The tests run as root, which ignores permission bits, so "read-only" is made real by
other means: every one of these makes the next write fail for root too. In each case the
server prints exactly one clear warning, capture goes on in memory without losing a line,
get_logs (disk-reaching queries included) and commands keep working, and the server shuts
down cleanly.
"""
import os
import shutil
import subprocess

import pytest

from conftest import SESSION_TOKEN, py_cmd, wait_until
from test_session import Client

TICKER = ("import time\ni = 0\nwhile True:\n"
          "    print(i, flush=True)\n    i += 1\n    time.sleep(0.005)")
WARNING = "[flowlayer] warning: cannot write log file "


def delete(logs):
    shutil.rmtree(logs)


def replace_with_a_file(logs):
    shutil.rmtree(logs)
    logs.write_text("not a directory\n")


def turn_files_into_directories(logs):
    for path in logs.iterdir():
        path.unlink()
        path.mkdir()


def turn_files_into_a_full_disk(logs):
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    for path in logs.iterdir():
        path.unlink()
        path.symlink_to("/dev/full")


def make_immutable(logs):
    """chattr +i stops root too; not every filesystem or container allows it."""
    paths = [str(p) for p in logs.iterdir()] + [str(logs)]
    if not shutil.which("chattr") or subprocess.run(["chattr", "+i", *paths],
                                                    capture_output=True).returncode:
        subprocess.run(["chattr", "-i", *paths], capture_output=True)
        pytest.skip("chattr +i is not available here")


FAULTS = [
    (delete, "No such file or directory"),
    (replace_with_a_file, "Not a directory"),
    (turn_files_into_directories, "Is a directory"),
    (turn_files_into_a_full_disk, "No space left on device"),
    (make_immutable, "Operation not permitted"),
]


@pytest.fixture
def unfreeze(tmp_path):
    """Undo make_immutable afterwards, so that tmp_path can be removed."""
    yield
    if shutil.which("chattr"):
        paths = [str(p) for p in tmp_path.rglob("*")]
        subprocess.run(["chattr", "-i", *paths], capture_output=True)


@pytest.mark.parametrize("fault, reason", FAULTS, ids=[f.__name__ for f, _ in FAULTS])
def test_logs_dir_failing_while_running(tmp_path, session_stack, fault, reason, unfreeze):
    logs = tmp_path / "logs"
    stack = session_stack({"ticker": {"cmd": py_cmd(TICKER)},
                           "app": {"cmd": ["sleep", "600"]}}, logs={"dir": "logs"})
    client = Client(stack.url, token=SESSION_TOKEN)
    try:
        def ticks():
            return client.command("get_logs", {"service": "ticker"})[1]["data"]["entries"]

        wait_until(lambda: (logs / "ticker.jsonl").exists() and len(ticks()) > 20,
                   message="the first lines on disk")
        fault(logs)
        line = stack.server.wait_line(WARNING)
        assert str(logs) in line and reason in line and "going on without" in line, line

        # Capture goes on: more lines than several flushes' worth arrive after the warning.
        seen = int(ticks()[-1]["message"])
        wait_until(lambda: int(ticks()[-1]["message"]) > seen + 200, message="more ticks")
        entries = ticks()
        assert [e["message"] for e in entries] == [str(i) for i in range(len(entries))], \
            "a line was lost"
        seqs = [e["seq"] for e in entries]
        # A query that reaches for the files is answered from what is left.
        older = client.command("get_logs", {"service": "ticker", "before_seq": seqs[100],
                                            "limit": 50})[1]["data"]
        assert [e["seq"] for e in older["entries"]] == seqs[50:100]
        # Commands still work.
        assert client.command("restart_service", {"service": "app"})[1] == {"ok": True}
        warnings = [text for text in stack.server.lines if "warning" in text]
        assert warnings == [line], "the failure must be reported exactly once"
        stack.assert_alive()
    finally:
        client.close()
    stack.stop()
    assert [text for text in stack.server.lines if "warning" in text] == [line]
