"""The one-shot client commands (SPEC 6.5) as a script runs them: `python tui.py COMMAND`
against real servers (and the fake V1 server), output and exit codes; config discovery."""
import os
import re
import signal
import subprocess
import threading

import pytest

from conftest import (PY, ROOT, SESSION_TOKEN, ServerProcess, free_port, py_cmd, wait_until,
                      write_config)
from fake_v1_server import FakeV1Server
from lib import connect
from tui_helpers import Tui

TUI = os.path.join(ROOT, "tui.py")
SLEEP = "import time; time.sleep(600)"
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d\d\d (\S+) +\| (.*)$")


def ctl(*args, cwd, timeout=90):
    return subprocess.run([PY, TUI, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, stdin=subprocess.DEVNULL)


def listener(port, gate=None):
    wait = f"import os\nwhile not os.path.exists({gate!r}): time.sleep(0.02)\n" if gate else ""
    return py_cmd(f"import socket, time\n{wait}s = socket.socket()\n"
                  "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                  f"s.bind(('127.0.0.1', {port})); s.listen(); print('up', flush=True)\n"
                  "time.sleep(600)")


@pytest.fixture
def stack(session_stack, tmp_path):
    """A server with a probed daemon, a plain one, a oneshot, a failing one and one it
    blocks; `run(*args)` runs a command against it."""
    port = free_port()
    s = session_stack({
        "db": {"cmd": listener(port), "port": port, "ready": {"type": "tcp"}},
        "plain": {"cmd": py_cmd("print('plain says hi', flush=True)\n" + SLEEP)},
        "seed": {"kind": "oneshot", "cmd": py_cmd("print('seeded')"), "dependsOn": ["db"]},
        "bad": {"cmd": py_cmd("import sys; sys.exit(3)"), "ready": {"type": "tcp", "port": free_port()}},
        "after": {"cmd": py_cmd(SLEEP), "dependsOn": ["bad"]},
        "crash": {"kind": "oneshot", "cmd": py_cmd("import sys; sys.exit(2)")},
    })
    s.flags = ["-addr", f"127.0.0.1:{s.port}", "-token", SESSION_TOKEN]
    s.run = lambda *args: ctl(*s.flags, *args, cwd=tmp_path)
    return s


def table(stdout):
    """{name: {column: cell}} of a status table."""
    lines = stdout.splitlines()
    header = lines[0].split()
    starts = [lines[0].index(column) for column in header]
    rows = {}
    for line in lines[1:]:
        if not line or line.startswith("startup"):
            continue
        cells = [line[a:b].strip() for a, b in zip(starts, starts[1:] + [None])]
        rows[cells[0]] = dict(zip(header, cells))
    return rows


def test_status_table(stack):
    out = stack.run("status")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].split() == ["NAME", "STATUS", "PID", "EXIT", "PORT", "SINCE", "REASON"]
    rows = table(out.stdout)
    assert list(rows) == ["after", "bad", "crash", "db", "plain", "seed"]
    assert rows["db"]["STATUS"] == "ready" and rows["db"]["PID"].isdigit()
    assert rows["db"]["PORT"] == str(stack_port(stack, "db")) and rows["db"]["REASON"] == "-"
    assert re.fullmatch(r"\d\d:\d\d:\d\d", rows["db"]["SINCE"])
    assert (rows["seed"]["STATUS"], rows["seed"]["PID"], rows["seed"]["EXIT"]) == ("stopped", "-", "0")
    assert (rows["bad"]["STATUS"], rows["bad"]["EXIT"]) == ("failed", "3")
    assert rows["bad"]["REASON"] == "failed_start: process exited before ready (exit code 3)"
    assert (rows["after"]["STATUS"], rows["after"]["REASON"]) == ("unknown", "blocked: dependency bad failed")
    assert out.stdout.splitlines()[-1].startswith(
        "startup incomplete: 2 running, 1 done, 2 failed_start, 1 blocked (")
    assert (rows["crash"]["STATUS"], rows["crash"]["EXIT"], rows["crash"]["REASON"]) == ("failed", "2", "-")
    assert out.stderr == ""


def stack_port(stack, name):
    import json
    with open(stack.path) as f:
        return json.load(f)["services"][name]["port"]


def test_start_stop_restart(stack):
    out = stack.run("stop", "db", "plain")
    assert (out.returncode, out.stdout, out.stderr) == (0, "stop db: ok\nstop plain: ok\n", "")
    assert table(stack.run("status").stdout)["db"]["STATUS"] == "stopped"
    out = stack.run("start", "seed")   # starts db, what seed depends on
    assert (out.returncode, out.stdout) == (0, "start seed: ok\n")
    rows = table(stack.run("status").stdout)
    assert rows["db"]["STATUS"] == "ready" and rows["plain"]["STATUS"] == "stopped"
    pid = rows["db"]["PID"]
    out = stack.run("restart", "db")
    assert (out.returncode, out.stdout) == (0, "restart db: ok\n")
    assert table(stack.run("status").stdout)["db"]["PID"] not in (pid, "-")
    out = stack.run("start", "plain", "nope", "after")
    assert out.returncode == 1
    assert out.stdout == "start plain: ok\n"
    assert out.stderr == ('Error: start nope: unknown_service: service "nope" is not defined\n'
                          "Error: start after: start_failed: failed to start: after, bad (after, bad)\n")


def test_start_all_and_stop_all(stack):
    out = stack.run("stop-all")
    assert (out.returncode, out.stdout) == (0, "stop-all: ok\n")
    assert {row["STATUS"] for row in table(stack.run("status").stdout).values()} <= {"stopped", "failed", "unknown"}
    out = stack.run("start-all")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr == ("Error: start-all: start_failed: failed to start: after, bad, crash "
                          "(after, bad, crash)\n")
    rows = table(stack.run("status").stdout)
    assert rows["db"]["STATUS"] == "ready" and rows["plain"]["STATUS"] == "running"


def test_reload(stack):
    out = stack.run("reload")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:3] == ["added: -", "removed: -", "changed: -"], lines
    assert lines[3].startswith("unchanged: ") and "seed" in lines[3]


def test_logs(stack):
    wait_until(lambda: "plain says hi" in stack.run("logs", "plain").stdout, message="plain's line")
    out = stack.run("logs", "-n", "2", "seed")
    assert out.returncode == 0
    lines = [LOG_LINE.match(line).groups() for line in out.stdout.splitlines()]
    assert lines == [("seed", "seeded"), ("seed", "exited (code 0)")]
    out = stack.run("logs")
    parsed = [LOG_LINE.match(line) for line in out.stdout.splitlines()]
    assert all(parsed), out.stdout
    assert ("flowlayer", f"boot: config {stack.path}") in [m.groups() for m in parsed]
    # the service column is padded to the longest name (flowlayer) in `all`
    assert any(line.split(" ", 1)[1].startswith("db        | ") for line in out.stdout.splitlines())
    assert stack.run("logs", "-n", "0", "seed").stdout == ""
    out = stack.run("logs", "nope")
    assert out.returncode == 1 and 'service "nope" is not defined' in out.stderr


def test_logs_follow_across_a_server_restart(tmp_path):
    """`logs -f` over two server runs on one address: every line of the second run, none
    twice, and the first run's lines without a hole."""
    port = free_port()
    ticker = py_cmd("import os, time\nfor i in range(100000):\n"
                    "    print(os.environ['RUN'], i, flush=True); time.sleep(0.005)")
    path = write_config(tmp_path, {"session": {"bind": f"127.0.0.1:{port}", "token": "t"},
                                   "services": {"tick": {"cmd": ticker}}})
    first = ServerProcess("-c", path, env={**os.environ, "RUN": "1"})
    first.wait_line("boot: session api:")
    follower = subprocess.Popen([PY, TUI, "logs", "-f", "tick"], cwd=tmp_path, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(follower.stdout), daemon=True)
    reader.start()
    second = None
    try:
        numbers = lambda run: [int(m.split()[1]) for m in messages(lines) if m.startswith(f"{run} ")]
        wait_until(lambda: len(numbers(1)) >= 50, timeout=30, message="lines of the first run")
        assert first.stop() == 0
        second = ServerProcess("-c", path, env={**os.environ, "RUN": "2"})
        wait_until(lambda: len(numbers(2)) >= 50, timeout=30, message="lines of the second run")
        follower.send_signal(signal.SIGINT)
        assert follower.wait(30) == 0
        reader.join(10)
    finally:
        if follower.poll() is None:
            follower.kill()
        for s in (first, second):
            if s is not None and s.proc.poll() is None:
                s.stop()
    texts = messages(lines)
    assert len(texts) == len(set(texts)), "a line was printed twice"
    one, two = numbers(1), numbers(2)
    assert one == list(range(len(one))), "a hole in the first run's lines"
    assert two == list(range(len(two))), "a hole in the second run's lines"
    assert texts.index(f"1 {one[-1]}") < texts.index("2 0")


def messages(lines):
    return [LOG_LINE.match(line).group(2) for line in list(lines) if LOG_LINE.match(line)]


# ---- wait ----------------------------------------------------------------------------------

def gated_server(tmp_path, services):
    api = free_port()
    path = write_config(tmp_path, {"session": {"bind": f"127.0.0.1:{api}", "token": "t"},
                                   "services": services})
    return ServerProcess("-c", path)


def test_wait_for_a_boot_that_succeeds(tmp_path):
    """Started before the server: wait retries until it answers, then until db is ready."""
    port, gate = free_port(), str(tmp_path / "gate")
    services = {"db": {"cmd": listener(port, gate), "port": port, "ready": {"type": "tcp"}},
                "web": {"cmd": py_cmd(SLEEP), "dependsOn": ["db"]}}
    write_config(tmp_path, {"session": {"bind": f"127.0.0.1:{free_port()}", "token": "t"},
                            "services": services})
    waiter = subprocess.Popen([PY, TUI, "wait", "--timeout", "60"], cwd=tmp_path, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    server = ServerProcess(cwd=tmp_path)
    try:
        server.wait_line("boot: session api:")
        assert waiter.poll() is None
        open(gate, "w").close()
        out, err = waiter.communicate(timeout=60)
        assert (waiter.returncode, out, err) == (0, "wait: 2 services satisfied: db, web\n", "")
        assert any("startup ok" in line for line in server.lines)
    finally:
        if waiter.poll() is None:
            waiter.kill()
        assert server.stop() == 0


def test_wait_failure_block_and_timeout(stack):
    out = stack.run("wait", "--timeout", "60", "db", "seed")
    assert (out.returncode, out.stdout) == (0, "wait: 2 services satisfied: db, seed\n")
    out = stack.run("wait", "--timeout", "60")
    assert (out.returncode, out.stderr) == (
        1, "Error: after is blocked: blocked: dependency bad failed\n")
    out = stack.run("wait", "bad", "db")
    assert (out.returncode, out.stderr) == (
        1, "Error: bad failed: failed_start: process exited before ready (exit code 3)\n")
    assert stack.run("stop", "plain").returncode == 0
    out = stack.run("wait", "--timeout", "0.5", "db", "plain")
    assert (out.returncode, out.stderr) == (
        124, "Error: timed out after 0.5s waiting for: plain (stopped)\n")
    out = stack.run("wait", "crash")   # a oneshot's failure has no failed_start line
    assert (out.returncode, out.stderr) == (1, "Error: crash failed (exit code 2)\n")
    out = stack.run("wait", "nope")
    assert (out.returncode, out.stderr) == (1, 'Error: service "nope" is not defined\n')


def test_wait_times_out_when_nothing_answers(tmp_path):
    out = ctl("-addr", f"127.0.0.1:{free_port()}", "wait", "--timeout", "1", cwd=tmp_path)
    assert out.returncode == 124
    assert out.stderr.startswith("Error: timed out: cannot reach the server at ws://127.0.0.1:")


# ---- errors ----------------------------------------------------------------------------------

def test_unreachable_and_refused_tokens(stack, tmp_path):
    out = ctl("-addr", f"127.0.0.1:{free_port()}", "status", cwd=tmp_path)
    assert out.returncode == 1 and re.fullmatch(
        r"Error: cannot reach the server at ws://127\.0\.0\.1:\d+/ws: connection refused\n", out.stderr)
    out = ctl("-addr", f"127.0.0.1:{stack.port}", "-token", "wrong", "status", cwd=tmp_path)
    assert (out.returncode, out.stderr) == (
        1, f"Error: the server at {stack.url} rejected the token (HTTP 403)\n")
    out = ctl("status", "-addr", f"127.0.0.1:{stack.port}", cwd=tmp_path)   # flags after it too
    assert out.returncode == 1 and out.stderr.startswith(f"Error: the server at {stack.url} wants a token")


@pytest.mark.parametrize("args, message", [
    ([], "no command given"),
    (["launch"], "unknown command: launch"),
    (["start"], "start needs at least one service name"),
    (["status", "db"], "status takes no arguments (got db)"),
    (["logs", "-n", "x"], "-n: expected a number of lines >= 0, got 'x'"),
    (["logs", "a", "b"], "logs takes one service name at most (got a b)"),
    (["wait", "--timeout", "0"], "--timeout: expected seconds > 0, got '0'"),
    (["wait", "--timeout", "soon"], "--timeout: expected seconds > 0, got 'soon'"),
    (["logs", "--bogus"], "flag provided but not defined: --bogus"),
    (["-token", "a", "status", "-token", "b"], "flag -token given twice"),
])
def test_usage_errors_exit_2_with_help(tmp_path, args, message):
    if args:
        out = ctl(*args, cwd=tmp_path)
    else:   # tui.py without a command is the screen: ask flowlayer-ctl
        out = subprocess.run([PY, "-c", "import sys; from lib.ctl import main; sys.exit(main())"],
                             capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 2, out
    assert out.stderr.startswith(f"Error: {message}\n\nUsage: "), out.stderr
    assert out.stdout == ""


@pytest.mark.parametrize("command", ["status", "start", "stop", "restart", "start-all",
                                     "stop-all", "reload", "logs", "wait"])
def test_every_command_has_help(tmp_path, command):
    out = ctl(command, "--help", cwd=tmp_path)
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout.startswith(f"Usage: flowlayer-client-tui [CONNECTION] {command}")
    assert "Exit codes:" in out.stdout


def test_flowlayer_ctl_entry_point(stack):
    out = subprocess.run([PY, "-c", "import sys; from lib.ctl import main; sys.exit(main())",
                          *stack.flags, "status"], capture_output=True, text=True, cwd=ROOT,
                         timeout=60)
    assert out.returncode == 0 and "db" in table(out.stdout)
    help_ = subprocess.run([PY, "-c", "import sys; from lib.ctl import main; sys.exit(main())",
                            "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert help_.stdout.startswith("Usage: flowlayer-ctl [CONNECTION] COMMAND [ARGS]")
    for command in ("status", "start NAME...", "logs [-f] [-n N] [NAME]", "wait [--timeout S]"):
        assert f"\n  {command}" in help_.stdout


# ---- config discovery ------------------------------------------------------------------------

def session(bind=None, token=None, addr=None):
    fields = {"bind": bind, "token": token, "addr": addr}
    return {"session": {k: v for k, v in fields.items() if v is not None},
            "services": {"a": {"cmd": "true"}}}


def test_discovery_follows_the_servers_order(tmp_path):
    assert connect.resolve({}, str(tmp_path)) == ("ws://127.0.0.1:6999/ws", None)
    write_config(tmp_path, session(bind="127.0.0.1:7004", token="t4"), "flowlayer.config.json")
    assert connect.resolve({}, str(tmp_path)) == ("ws://127.0.0.1:7004/ws", "t4")
    write_config(tmp_path, session(bind=":7003", token="t3"), "flowlayer.config.jsonc")
    assert connect.resolve({}, str(tmp_path)) == ("ws://127.0.0.1:7003/ws", "t3")
    write_config(tmp_path, session(bind="7002"), "flowlayer.json")
    assert connect.resolve({}, str(tmp_path)) == ("ws://127.0.0.1:7002/ws", None)
    write_config(tmp_path, session(addr="10.0.0.1:7001", bind="7000", token="t1"))
    assert connect.resolve({}, str(tmp_path)) == ("ws://10.0.0.1:7001/ws", "t1")
    # -token overrides the file's; -addr or -config turn the search off
    assert connect.resolve({"token": "x"}, str(tmp_path)) == ("ws://10.0.0.1:7001/ws", "x")
    assert connect.resolve({"addr": "127.0.0.1:9"}, str(tmp_path)) == ("ws://127.0.0.1:9/ws", None)
    other = write_config(tmp_path, session(bind="7005"), "other.jsonc")
    assert connect.resolve({"config": other}, str(tmp_path)) == ("ws://127.0.0.1:7005/ws", None)
    os.mkdir(tmp_path / "empty")
    write_config(tmp_path / "empty", session(bind="7006"), "flowlayer.config.json")
    os.mkdir(tmp_path / "empty" / "flowlayer.jsonc")   # not a file: skipped, as by the server
    assert connect.resolve({}, str(tmp_path / "empty")) == ("ws://127.0.0.1:7006/ws", None)


def test_discovered_config_is_used_by_the_commands(tmp_path):
    """In the server's directory, with no flags at all, the commands find the server."""
    api = free_port()
    write_config(tmp_path, {"session": {"bind": f":{api}", "token": "disc"},
                            "services": {"a": {"cmd": py_cmd(SLEEP)}}})
    server = ServerProcess(cwd=tmp_path)
    try:
        server.wait_line("boot: startup ok")
        out = ctl("status", cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert table(out.stdout)["a"]["STATUS"] == "running"
    finally:
        assert server.stop() == 0


def test_the_screen_finds_the_server_of_its_directory(tmp_path):
    """The screen, started with no flags in the server's directory, connects to it."""
    api = free_port()
    write_config(tmp_path, {"session": {"bind": f"127.0.0.1:{api}", "token": "disc"},
                            "services": {"discovered": {"cmd": py_cmd(SLEEP)}}})
    here = tmp_path / "screen_here.py"   # the screen, run from tmp_path
    here.write_text(f"import os, sys\nos.chdir({str(tmp_path)!r})\nsys.path.insert(0, {ROOT!r})\n"
                    "from lib import tui_cli\nsys.exit(tui_cli.main(sys.argv[1:]))\n")
    server = ServerProcess(cwd=tmp_path)
    screen = None
    try:
        server.wait_line("boot: startup ok")
        screen = Tui([], program=str(here))
        screen.wait_for("Connected")
        screen.wait_for(lambda text: re.search(r"discovered +running", text))
        screen.send("q")
        assert screen.wait_exit() == 0
    finally:
        if screen is not None:
            screen.close()
        assert server.stop() == 0


def test_a_broken_discovered_config_is_reported(tmp_path):
    write_config(tmp_path, '{"session": {"token": 5}, "services": {}}')
    out = ctl("status", cwd=tmp_path)
    assert (out.returncode, out.stderr) == (
        2, "Error: flowlayer.jsonc: session.token: must be a non-empty string\n")


# ---- against a V1 server without get_services -------------------------------------------------

@pytest.fixture
def fake(tmp_path):
    server = FakeV1Server(token="secret", services={"api": "running", "db": "ready", "web": "unknown"})
    server.run = lambda *args: ctl("-addr", server.addr, "-token", "secret", *args, cwd=tmp_path)
    yield server
    server.close()


def test_v1_status_from_the_snapshot(fake):
    out = fake.run("status")
    assert out.returncode == 0
    rows = table(out.stdout)
    assert {name: row["STATUS"] for name, row in rows.items()} == {
        "api": "running", "db": "ready", "web": "unknown"}
    assert rows["api"]["PID"] == rows["api"]["REASON"] == "-"
    assert "no get_services" in out.stderr and "`running` may still wait for a probe" in out.stderr


def test_v1_server_without_reload(fake):
    out = fake.run("reload")
    assert (out.returncode, out.stderr) == (
        1, "Error: the server does not support reload (it has no reload_config command)\n")


def test_v1_wait_says_what_it_cannot_be_sure_of(fake):
    out = fake.run("wait", "--timeout", "30", "api", "db")
    assert (out.returncode, out.stdout) == (0, "wait: 2 services up: api, db\n")
    assert out.stderr == ("note: this server has no get_services (protocol V1 only), so "
                          "readiness is not certain for: api (running)\n")
    fake.set_status("api", "failed")
    out = fake.run("wait", "api")
    assert (out.returncode, out.stderr) == (1, "Error: api failed\n")


def test_v1_wait_follows_status_events_and_blocked_lines(fake, tmp_path):
    waiter = subprocess.Popen([PY, TUI, "-addr", fake.addr, "-token", "secret", "wait", "web"],
                              cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: fake.connections, message="the waiter's session")
        fake.set_status("web", "starting")
        fake.add_log("web", "blocked: dependency db failed", stream="system")
        out, err = waiter.communicate(timeout=30)
        assert (waiter.returncode, err) == (1, "Error: web is blocked: blocked: dependency db failed\n")
    finally:
        if waiter.poll() is None:
            waiter.kill()


def test_logs_follow_fetches_what_the_live_stream_skipped(fake, tmp_path):
    follower = subprocess.Popen([PY, TUI, "-addr", fake.addr, "-token", "secret", "logs", "-f"],
                                cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(follower.stdout), daemon=True)
    reader.start()
    try:
        wait_until(lambda: fake.connections, message="the follower's session")
        fake.add_log("api", "one")
        wait_until(lambda: messages(lines) == ["one"], message="the first line")
        fake.add_log("db", "two", broadcast=False)   # dropped by the server
        fake.add_log("api", "three")
        wait_until(lambda: len(messages(lines)) >= 3, message="the skipped line fetched")
        follower.send_signal(signal.SIGINT)
        assert follower.wait(30) == 0
        reader.join(10)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert messages(lines) == ["one", "two", "three"]
    assert [LOG_LINE.match(line).group(1) for line in lines] == ["api", "db", "api"]


def test_v1_reload_is_not_supported(fake):
    def refuse(conn, message):
        if message["name"] != "reload_config":
            return False
        fake.reply(conn, message, accepted=False, error={
            "code": "unknown_command", "message": 'unknown command "reload_config"'})
        return True
    fake.handler = refuse
    out = fake.run("reload")
    assert (out.returncode, out.stderr) == (
        1, "Error: the server does not support reload (it has no reload_config command)\n")
