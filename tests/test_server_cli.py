"""The server program end to end: flags, discovery, boot lines, echo, signals, exit codes."""
import os
import pty
import signal
import json
import subprocess
import time
import uuid

import pytest

from conftest import PY, ROOT, free_port, pids_with_marker, py_cmd, wait_until, write_config
from services import SLEEPER, STUBBORN

FLOWLAYER = os.path.join(ROOT, "flowlayer.py")


def run(*args, cwd=None, timeout=30):
    return subprocess.run([PY, FLOWLAYER, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def simple_config(tmp_path, **services):
    return write_config(tmp_path, {"services": services or {"app": {"cmd": py_cmd(SLEEPER)}}})


def test_version():
    out = run("--version")
    assert out.returncode == 0
    assert out.stdout.startswith("flowlayer-server ")


@pytest.mark.parametrize("flag", ["-h", "--help", "-help"])
def test_help(flag):
    out = run(flag)
    assert out.returncode == 0
    assert "Usage: flowlayer-server" in out.stdout


def test_no_config_and_no_arguments_prints_help(tmp_path):
    out = run(cwd=tmp_path)
    assert out.returncode == 0 and "Usage:" in out.stdout


@pytest.mark.parametrize("args,needle", [
    (["-v"], "flag provided but not defined: -v"),
    (["--no-color"], "no config file"),
    (["-c", "a.jsonc", "--config", "b.jsonc"], "conflicts"),
    (["-c", "a.jsonc", "b.jsonc"], "both"),
    (["a.jsonc", "b.jsonc"], "more than one"),
    (["-token"], "needs an argument"),
])
def test_usage_errors_exit_2_with_help(tmp_path, args, needle):
    out = run(*args, cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.startswith("Error: ") and needle in out.stderr
    assert "Usage:" in out.stderr and "Traceback" not in out.stderr


def test_missing_config_file_is_a_config_error(tmp_path):
    out = run("-c", str(tmp_path / "nope.jsonc"))
    assert out.returncode == 2
    assert out.stderr.startswith("Error: ") and "nope.jsonc" in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_config_names_file_and_key(tmp_path):
    path = write_config(tmp_path, '{\n  "services": {\n    "api": {"cmd": "x", "dependOn": []}\n  }\n}\n')
    out = run("-c", path)
    assert out.returncode == 2
    assert out.stderr.startswith(f"Error: {path}:3:")
    assert "dependsOn" in out.stderr and "Traceback" not in out.stderr


def test_bad_bind_flag_is_a_usage_error(tmp_path):
    out = run("-c", simple_config(tmp_path), "-s", "127.0.0.1:99999")
    assert out.returncode == 2 and out.stderr.startswith("Error: -s")


def test_discovery_order(tmp_path, server):
    write_config(tmp_path, {"services": {"second": {"cmd": py_cmd(SLEEPER)}}}, "flowlayer.json")
    write_config(tmp_path, {"services": {"first": {"cmd": py_cmd(SLEEPER)}}}, "flowlayer.jsonc")
    s = server(cwd=tmp_path)
    s.wait_line(f"boot: config {tmp_path / 'flowlayer.jsonc'}")
    s.wait_line("first")
    assert s.stop() == 0


def test_boot_lines_and_echo(tmp_path, server):
    path = simple_config(
        tmp_path,
        db={"cmd": py_cmd(SLEEPER)},
        api={"cmd": py_cmd("import sys,time;print('out',flush=True);print('oops',file=sys.stderr,flush=True);"
                           "time.sleep(600)"), "dependsOn": ["db"]},
        cache={"cmd": py_cmd(SLEEPER)},
    )
    s = server("-c", path)
    s.wait_line("startup ok")
    assert s.lines[:3] == [
        f"[flowlayer] boot: config {path}",
        "[flowlayer] boot: services: 3",
        "[flowlayer] boot: plan: [0] cache, db  [1] api",
    ]
    s.wait_line("api   | out")
    s.wait_line("api   ! oops")
    summary = s.wait_line("startup ok")
    assert summary.startswith("[flowlayer] boot: startup ok: 3 running, 0 done, 0 failed_start, 0 blocked (")
    assert s.stop() == 0
    assert not any("\x1b[" in line for line in s.lines)


def test_startup_incomplete_summary(tmp_path, server):
    path = simple_config(tmp_path, bad={"cmd": "no-such-program-x"}, dep={"cmd": py_cmd(SLEEPER), "dependsOn": ["bad"]})
    s = server("-c", path)
    s.wait_line("startup incomplete: 0 running, 0 done, 1 failed_start, 1 blocked")
    s.wait_line("dep | blocked: dependency bad failed")
    assert s.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_shuts_down_cleanly_in_reverse_order(tmp_path, server, sig):
    marker = f"FLOWLAYER_TEST_{uuid.uuid4().hex}"
    child = ("import subprocess,sys,time;subprocess.Popen([sys.executable,'-c','import time;time.sleep(600)']);"
             "print('up',flush=True);time.sleep(600)")
    env = {"MARK": marker}
    path = simple_config(tmp_path, db={"cmd": py_cmd(child), "env": env},
                         api={"cmd": py_cmd(child), "env": env, "dependsOn": ["db"]})
    s = server("-c", path)
    s.wait_line("startup ok")
    wait_until(lambda: len(pids_with_marker(marker)) == 4, message="services and their children")
    assert s.stop(sig) == 0
    assert pids_with_marker(marker) == []
    stopping = [l.split()[0] for l in s.lines if l.endswith("| stopping")]
    assert stopping == ["api", "db"]
    assert s.lines[-1].startswith("[flowlayer] shutdown: complete (")


def test_second_sigint_kills_at_once(tmp_path, server):
    marker = f"FLOWLAYER_TEST_{uuid.uuid4().hex}"
    s = server("-c", simple_config(tmp_path, app={"cmd": py_cmd(STUBBORN), "env": {"MARK": marker}}))
    s.wait_line("app | up")
    first = time.monotonic()
    s.proc.send_signal(signal.SIGINT)
    s.wait_line("app | stopping")
    time.sleep(max(0.0, first + 0.3 - time.monotonic()))  # past the one-keypress window
    assert s.stop(signal.SIGINT) == 130
    wait_until(lambda: pids_with_marker(marker) == [], message="group killed")


def test_two_sigints_of_one_keypress_count_once(tmp_path, server):
    """`timeout -s INT` and some managers send one SIGINT to the process and to its group."""
    stubborn = ("import signal,time;signal.signal(signal.SIGTERM,signal.SIG_IGN);"
                "print('up',flush=True);time.sleep(600)")
    s = server("-c", simple_config(tmp_path, app={"cmd": py_cmd(stubborn)}))
    s.wait_line("app | up")
    sent = time.monotonic()
    os.kill(s.proc.pid, signal.SIGINT)
    s.wait_line("shutdown: SIGINT received")  # handled: a second one is not merged by the kernel
    late = time.monotonic() - sent
    os.kill(s.proc.pid, signal.SIGINT)
    if late > 0.2:
        s.proc.kill()
        pytest.skip(f"the first SIGINT took {late:.2f}s to show; too slow to send one keypress")
    assert s.stop(signal.SIGCONT) == 0
    assert not any("forced" in line for line in s.lines)


def test_sighup_shuts_down_cleanly(tmp_path, server):
    """The terminal closed: stopCmds run, logs.dir gets every line, exit 0 (SPEC 3.4)."""
    flag = tmp_path / "stopped"
    chatty = "import time\nfor i in range(2000): print('line', i)\nprint('up', flush=True)\ntime.sleep(600)"
    path = write_config(tmp_path, {"logs": {"dir": "logs"}, "services": {"app": {
        "cmd": py_cmd(chatty), "stopCmd": py_cmd(f"open({str(flag)!r}, 'w').write('ok')")}}})
    s = server("-c", path)
    s.wait_line("app | up")
    assert s.stop(signal.SIGHUP) == 0
    assert flag.read_text() == "ok"
    assert "[flowlayer] shutdown: SIGHUP received, stopping services" in s.lines
    with open(tmp_path / "logs" / "all.jsonl", encoding="utf-8") as f:
        stored = [json.loads(line) for line in f]
    stored = {f"{e['service']} | {e['message']}" for e in stored}
    echoed = [" | ".join(part.strip() for part in line.split(" | ", 1))
              for line in s.lines if " | " in line]
    assert len(echoed) > 2000 and [line for line in echoed if line not in stored] == []


def test_logs_dir_that_cannot_be_created_exits_1(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    path = write_config(tmp_path, {"logs": {"dir": "file/logs"}, "services": {"a": {"cmd": py_cmd(SLEEPER)}}})
    out = run("-c", path)
    assert out.returncode == 1
    assert out.stderr.startswith("Error: cannot use logs dir") and "Traceback" not in out.stderr


def _run_in_pty(args, env):
    """Run the server in a pseudo-terminal until its first service line; return the output."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(PY, [PY, FLOWLAYER, *args], env)
    out = b""
    try:
        while b"startup ok" not in out:
            out += os.read(fd, 65536)
    finally:
        os.kill(pid, signal.SIGTERM)
        while True:
            try:
                if not os.read(fd, 65536):
                    break
            except OSError:
                break
        os.waitpid(pid, 0)
    return out


def test_colour_only_on_a_terminal_without_no_color(tmp_path):
    path = simple_config(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    assert b"\x1b[" in _run_in_pty(["-c", path], env)
    assert b"\x1b[" not in _run_in_pty(["-c", path, "--no-color"], env)
    assert b"\x1b[" not in _run_in_pty(["-c", path], {**env, "NO_COLOR": "1"})


def test_session_address_in_use_exits_1(tmp_path):
    import socket
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        out = run("-c", simple_config(tmp_path), "-s", f"127.0.0.1:{port}")
    assert out.returncode == 1
    assert f"Error: cannot listen on 127.0.0.1:{port}:" in out.stderr and "Traceback" not in out.stderr


def test_generated_token_is_printed(tmp_path, server):
    s = server("-c", simple_config(tmp_path), "-s", str(free_port()))
    line = s.wait_line("boot: session token: ")
    token = line.rsplit(" ", 1)[1]
    assert token.startswith("fl_") and len(token) == 3 + 36
    s.wait_line("boot: session api: ws://127.0.0.1:")
    assert s.stop() == 0


def test_descriptor_limit_is_raised_to_the_hard_limit(tmp_path, server):
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))   # inherited
    try:
        s = server("-c", simple_config(tmp_path))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    s.wait_line("startup ok")
    assert resource.prlimit(s.proc.pid, resource.RLIMIT_NOFILE) == (hard, hard)
    assert s.stop() == 0


def test_a_signal_storm_shuts_down_once(tmp_path, server):
    """Hundreds of SIGTERM and SIGHUP in a burst: one shutdown, exit 0, no traceback."""
    s = server("-c", simple_config(tmp_path))
    s.wait_line("app | up")
    for _ in range(200):
        os.kill(s.proc.pid, signal.SIGTERM)
        os.kill(s.proc.pid, signal.SIGHUP)
    assert s.stop(signal.SIGCONT) == 0
    assert len([line for line in s.lines if "shutdown: " in line and "received" in line]) == 1
    assert not any("Traceback" in line for line in s.lines)


def test_a_sigint_storm_still_forces_the_exit(tmp_path, server):
    """Ctrl-C held down: SIGINTs 50 ms apart. Each is within 250 ms of the previous one, but
    the window counts from the first: the storm forces exit 130 (a stubborn service)."""
    stubborn = ("import signal,time;signal.signal(signal.SIGTERM,signal.SIG_IGN);"
                "print('up',flush=True);time.sleep(600)")
    s = server("-c", simple_config(tmp_path, app={"cmd": py_cmd(stubborn)}))
    s.wait_line("app | up")
    while s.proc.poll() is None:
        os.kill(s.proc.pid, signal.SIGINT)
        try:
            s.proc.wait(0.05)
        except subprocess.TimeoutExpired:
            pass
    assert s.stop() == 130
