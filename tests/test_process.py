"""lib.process: spawning, line capture (SPEC 4.1), exit reporting, stopping (SPEC 3.4)."""
import contextlib
import os
import signal
import stat
import threading

import pytest
from hypothesis import given, settings, strategies as st

from conftest import PY, py_cmd, wait_until
from lib import process
from lib.process import LineSplitter, Process, SpawnError


class Capture:
    """Collects what a Process reports."""

    def __init__(self):
        self.lock = threading.Lock()
        self.lines = {"stdout": [], "stderr": []}
        self.calls = 0
        self.exit_codes = []
        self.lines_at_exit = None
        self.exited = threading.Event()

    def on_lines(self, stream, messages):
        assert isinstance(messages, list) and messages
        with self.lock:
            self.lines[stream].extend(messages)
            self.calls += 1

    def on_exit(self, returncode):
        with self.lock:
            self.exit_codes.append(returncode)
            self.lines_at_exit = {k: len(v) for k, v in self.lines.items()}
        self.exited.set()


def start(argv, env=None, cwd=None):
    capture = Capture()
    proc = Process(argv, env, cwd, capture.on_lines, capture.on_exit)
    proc.start()
    return proc, capture


def run(argv, env=None, cwd=None):
    """Run to completion; return the Capture."""
    proc, capture = start(argv, env, cwd)
    assert capture.exited.wait(30), "on_exit was not called"
    assert proc.wait(0) == capture.exit_codes[0]
    return capture


def write_bytes(*parts):
    """argv of a child writing each bytes literal to stdout, flushed separately."""
    code = "import sys, time\nout = sys.stdout.buffer\n"
    for part in parts:
        code += f"out.write({part!r}); out.flush(); time.sleep(0.02)\n"
    return py_cmd(code)


def running(pid):
    """True while `pid` is a live (not zombie) process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# --- capture through real processes ---------------------------------------------------

def test_stdout_and_stderr_are_separate_streams():
    capture = run(py_cmd("import sys; print('out1'); print('err1', file=sys.stderr); print('out2')"))
    assert capture.lines == {"stdout": ["out1", "out2"], "stderr": ["err1"]}
    assert capture.exit_codes == [0]


def test_crlf_ending_counts_as_one_and_inner_cr_is_kept():
    capture = run(write_bytes(b"one\r\ntwo\r\n", b"mid\rdle\n", b"x\r\r\n"))
    assert capture.lines["stdout"] == ["one", "two", "mid\rdle", "x\r"]


def test_invalid_utf8_becomes_replacement_character():
    capture = run(write_bytes(b"ok\xff\xfeok\n", b"\xc3\n"))
    assert capture.lines["stdout"] == ["ok\ufffd\ufffdok", "\ufffd"]


def test_multibyte_character_split_across_writes_stays_intact():
    text = "é€😀"
    parts = [bytes([b]) for b in text.encode()] + [b"\n"]
    capture = run(write_bytes(*parts))
    assert capture.lines["stdout"] == [text]


def test_long_line_is_cut_into_64k_pieces():
    capture = run(py_cmd("import sys; sys.stdout.write('a' * 200000 + '\\nafter\\n')"))
    pieces = capture.lines["stdout"]
    assert [len(p) for p in pieces] == [65536, 65536, 65536, 200000 - 3 * 65536, 5]
    assert pieces[-1] == "after"


def test_long_line_is_cut_on_character_boundaries():
    line = "€" * 70000  # 3 bytes each: 65536 is not a boundary
    capture = run(py_cmd("import sys; sys.stdout.write('\\u20ac' * 70000 + '\\n')"))
    pieces = capture.lines["stdout"]
    assert "".join(pieces) == line
    assert len(pieces) == 4
    assert all(len(p.encode()) <= 65536 for p in pieces)
    assert len(pieces[0].encode()) == 65535


def test_last_line_without_newline_is_delivered():
    capture = run(write_bytes(b"a\nb"))
    assert capture.lines["stdout"] == ["a", "b"]


def test_empty_lines_are_preserved_and_no_output_gives_no_lines():
    capture = run(write_bytes(b"a\n\n\nb\n", b"\n"))
    assert capture.lines["stdout"] == ["a", "", "", "b", ""]
    assert run(py_cmd("pass")).lines == {"stdout": [], "stderr": []}


def test_large_volume_is_delivered_in_order_before_exit():
    count = 100_000
    capture = run(py_cmd(
        f"import sys; sys.stdout.write(''.join('line %d\\n' % i for i in range({count})))"
    ))
    assert capture.lines["stdout"] == [f"line {i}" for i in range(count)]
    assert capture.lines_at_exit == {"stdout": count, "stderr": 0}
    assert capture.calls < count // 100  # lines come in batches, one call per chunk


def test_on_exit_waits_for_a_lagging_reader():
    """The reader is held inside on_lines until the exit is seen; on_exit must still come
    after every line."""
    seen = []
    at_exit = []
    exited = threading.Event()
    proc = None

    def on_lines(stream, messages):
        assert proc.wait(30) is not None
        seen.extend(messages)

    def on_exit(returncode):
        at_exit.append(list(seen))
        exited.set()

    proc = Process(py_cmd("print('first'); print('last')"), None, None, on_lines, on_exit)
    proc.start()
    assert exited.wait(30)
    assert at_exit == [["first", "last"]]


def test_exit_code_and_signal_exit_code():
    assert run(py_cmd("import sys; sys.exit(3)")).exit_codes == [3]
    killed = run(py_cmd("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"))
    assert killed.exit_codes == [-signal.SIGKILL]


def test_pid_alive_and_wait():
    proc, capture = start(py_cmd("import sys; sys.stdin.read(); print('stdin closed')"))
    assert proc.pid > 0
    assert capture.exited.wait(30)
    assert capture.lines["stdout"] == ["stdin closed"]  # stdin is /dev/null
    assert not proc.alive
    assert proc.wait(0) == 0

    proc, capture = start(py_cmd("import time; time.sleep(60)"))
    assert proc.alive
    assert proc.wait(0.05) is None
    proc.terminate()
    assert not proc.alive


def test_env_is_layered_over_the_environment_and_cwd_is_used(tmp_path):
    code = "import os; print(os.environ['FOO']); print(os.getcwd()); print('PATH' in os.environ)"
    capture = run(py_cmd(code), env={"FOO": "bar baz"}, cwd=str(tmp_path))
    assert capture.lines["stdout"] == ["bar baz", os.path.realpath(tmp_path), "True"]


def test_spawn_errors_give_short_reasons(tmp_path):
    with pytest.raises(SpawnError, match='^no such program "no-such-program-xyz"$'):
        Process(["no-such-program-xyz"], None, None, print, print).start()

    script = tmp_path / "x.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(stat.S_IRUSR | stat.S_IWUSR)
    with pytest.raises(SpawnError, match=r"^permission denied: \./x\.sh$"):
        Process(["./x.sh"], None, str(tmp_path), print, print).start()

    missing = str(tmp_path / "a" / "b")
    with pytest.raises(SpawnError, match=f"^no such directory: {missing}$"):
        Process([PY, "-c", "pass"], None, missing, print, print).start()


def test_terminate_sends_sigterm_first():
    proc, capture = start(py_cmd(
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: (print('got term', flush=True), sys.exit(7)))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)"
    ))
    wait_until(lambda: capture.lines["stdout"] == ["ready"], message="child ready")
    assert proc.terminate(grace=30) == 7
    assert capture.exited.wait(30)
    assert capture.lines["stdout"] == ["ready", "got term"]


def test_terminate_uses_sigkill_when_sigterm_is_ignored():
    proc, capture = start(py_cmd(
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)"
    ))
    wait_until(lambda: capture.lines["stdout"] == ["ready"], message="child ready")
    assert proc.terminate(grace=0.2) == -signal.SIGKILL
    assert capture.exited.wait(30)
    assert capture.exit_codes == [-signal.SIGKILL]


@pytest.mark.parametrize("grandchild_ignores_term", [False, True])
def test_terminate_kills_grandchildren_in_the_group(grandchild_ignores_term):
    grandchild = (
        "import signal, time; "
        + ("signal.signal(signal.SIGTERM, signal.SIG_IGN); " if grandchild_ignores_term else "")
        + "print('gc ready', flush=True); time.sleep(60)"
    )
    proc, capture = start(py_cmd(
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', {grandchild!r}])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)"
    ))
    wait_until(lambda: "gc ready" in capture.lines["stdout"], message="grandchild ready")
    grandchild_pid = int(capture.lines["stdout"][0])
    assert running(grandchild_pid)
    proc.terminate(grace=30)
    wait_until(lambda: not running(grandchild_pid), message="grandchild gone")
    assert capture.exited.wait(30)


def test_grandchild_holding_the_pipe_does_not_delay_exit_and_is_still_read(tmp_path):
    flag = tmp_path / "go"
    grandchild = (
        "import os, time\n"
        f"while not os.path.exists({str(flag)!r}): time.sleep(0.01)\n"
        "print('late', flush=True)"
    )
    proc, capture = start(py_cmd(
        f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', {grandchild!r}])"
    ))
    assert capture.exited.wait(30)
    assert capture.exit_codes == [0]
    flag.touch()
    wait_until(lambda: capture.lines["stdout"] == ["late"], message="grandchild output")
    assert capture.exit_codes == [0]  # on_exit exactly once


def test_a_process_that_closes_its_output_and_runs_on_is_reported_at_its_exit(tmp_path):
    flag = tmp_path / "go"
    proc, capture = start(py_cmd(
        "import os, sys, time\n"
        "print('bye', flush=True); os.close(1); os.close(2)\n"
        f"while not os.path.exists({str(flag)!r}): time.sleep(0.01)\n"
        "sys.exit(4)"
    ))
    wait_until(lambda: capture.lines["stdout"] == ["bye"], message="last line")
    assert not capture.exited.wait(0.5)  # still running: nothing reported
    assert proc.alive
    flag.touch()
    assert capture.exited.wait(30)
    assert capture.exit_codes == [4]
    assert capture.lines_at_exit == {"stdout": 1, "stderr": 0}


def test_two_threads_per_process():
    proc, capture = start(py_cmd("import time; time.sleep(60)"))
    mine = [t for t in threading.enumerate() if t.name.endswith(f"-{proc.pid}")]
    assert sorted(t.name.split("-")[0] for t in mine) == ["stderr", "stdout"]
    proc.terminate()
    assert capture.exited.wait(30)
    wait_until(lambda: not any(t.name.endswith(f"-{proc.pid}") for t in threading.enumerate()),
               message="no thread left")


# --- the line splitter on its own: any chunking gives the same messages ----------------

@contextlib.contextmanager
def max_line(limit):
    """Shrink the cut size so that over-long lines are cheap to generate."""
    saved = process.MAX_LINE
    process.MAX_LINE = limit
    try:
        yield
    finally:
        process.MAX_LINE = saved


def split_all(data, cuts):
    splitter = LineSplitter()
    messages = []
    start = 0
    for cut in sorted(set(cuts)) + [len(data)]:
        messages += splitter.feed(data[start:cut]) if cut > start else []
        start = max(start, cut)
    return messages + splitter.finish()


def reference(text, limit):
    """SPEC 4.1 for valid UTF-8: each line without its "\\n" and one trailing "\\r", packed
    greedily into pieces of whole characters of at most `limit` bytes."""
    raw_lines = text.split("\n")
    if raw_lines[-1] == "":
        raw_lines.pop()
    messages = []
    for line in raw_lines:
        line = line[:-1] if line.endswith("\r") else line
        piece = ""
        for char in line:
            if len((piece + char).encode()) > limit:
                messages.append(piece)
                piece = ""
            piece += char
        messages.append(piece)
    return messages


line_text = st.text(alphabet=st.sampled_from("ab\r\né€😀"), max_size=60)
cut_positions = st.lists(st.integers(min_value=0, max_value=300), max_size=12)


@settings(max_examples=300, deadline=None)
@given(text=line_text, cuts=cut_positions, limit=st.integers(min_value=4, max_value=12))
def test_splitter_matches_reference_for_any_chunking(text, cuts, limit):
    with max_line(limit):
        assert split_all(text.encode(), cuts) == reference(text, limit)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=80), cuts=cut_positions, limit=st.integers(min_value=4, max_value=12))
def test_splitter_chunking_does_not_matter_for_any_bytes(data, cuts, limit):
    with max_line(limit):
        assert split_all(data, cuts) == split_all(data, [])


def test_splitter_keeps_a_full_size_line_with_crlf_whole():
    data = b"x" * 65536 + b"\r\n"
    assert split_all(data, range(1, len(data))[::4096]) == ["x" * 65536]
    assert split_all(data, [65536, 65537]) == ["x" * 65536]
