"""SPEC 6.1-6.3 with real processes: env files, stop signal and timeout, readiness timeout
and waiting lines, exec and log probes, the port check before wave 0, shell-syntax
warnings and `--check`."""
import json
import os
import re
import socket
import subprocess
import threading

import pytest

from conftest import PY, ROOT, free_port, py_cmd, wait_until, write_config
from services import SLEEPER, STUBBORN
from lib import readiness

# Prints the variables named in argv[1:] as one JSON line, then sleeps.
ENV_PRINTER = ("import json, os, sys, time\n"
               "print(json.dumps({k: os.environ.get(k) for k in sys.argv[1:]}), flush=True)\n"
               "time.sleep(600)\n")

# Writes the name of the first stop signal it gets to argv[1], then exits 0 after
# argv[2] seconds (a service that takes its time to shut down cleanly).
RECORDER = ("import signal, sys, time\n"
            "def record(number, frame):\n"
            "    open(sys.argv[1], 'w').write(signal.Signals(number).name)\n"
            "    time.sleep(float(sys.argv[2]))\n"
            "    sys.exit(0)\n"
            "for name in ('SIGTERM', 'SIGINT', 'SIGQUIT', 'SIGHUP', 'SIGUSR1', 'SIGUSR2'):\n"
            "    signal.signal(getattr(signal, name), record)\n"
            "print('up', flush=True)\n"
            "while True:\n"
            "    time.sleep(1)\n")

# Answers every request on port argv[1] with 503: listening, never ready.
UNAVAILABLE = ("import socket, sys\n"
               "server = socket.create_server(('127.0.0.1', int(sys.argv[1])))\n"
               "print('listening', flush=True)\n"
               "while True:\n"
               "    conn, _ = server.accept()\n"
               "    conn.recv(4096)\n"
               "    conn.sendall(b'HTTP/1.0 503 Service Unavailable\\r\\nContent-Length: 0\\r\\n\\r\\n')\n"
               "    conn.close()\n")

# Prints its pid, then sleeps.
PID_SLEEPER = "import os, time\nprint('pid', os.getpid(), flush=True)\ntime.sleep(600)\n"


def gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def printed_pid(s, name):
    line = wait_until(lambda: next((l for l in s.lines(name, "stdout") if l.startswith("pid ")), None),
                      message="the service's pid")
    return int(line.split()[1])


# ---- envFile and layering ---------------------------------------------------------------------


def test_environment_layers_server_env_files_then_env(stack, tmp_path, monkeypatch):
    monkeypatch.setenv("FL_SERVER", "server")
    monkeypatch.setenv("FL_A", "server")
    (tmp_path / "a.env").write_text("FL_A=a\nFL_B=a\nexport FL_C='a'\n")
    (tmp_path / "b.env").write_text('# later file\nFL_B=b\nFL_C="b"\n')
    names = ["FL_SERVER", "FL_A", "FL_B", "FL_C"]
    s = stack({"app": {"cmd": py_cmd(ENV_PRINTER) + names, "envFile": ["a.env", "b.env"],
                       "env": {"FL_C": "env"}}})
    assert s.runtime.claim_start("app")().ok
    line = wait_until(lambda: next(iter(s.lines("app", "stdout")), None), message="the env line")
    assert json.loads(line) == {"FL_SERVER": "server", "FL_A": "a", "FL_B": "b", "FL_C": "env"}


def test_stop_cmd_and_exec_probe_get_the_env_file_variables(stack, tmp_path):
    (tmp_path / ".env").write_text("FL_TOKEN=from-file\n")
    out = tmp_path / "stop.txt"
    check = "import os, sys; sys.exit(0 if os.environ.get('FL_TOKEN') == 'from-file' else 1)"
    s = stack({"app": {
        "cmd": py_cmd(SLEEPER), "envFile": ".env",
        "stopCmd": py_cmd(f"import os; open({str(out)!r}, 'w').write(os.environ['FL_TOKEN'])"),
        "ready": {"type": "exec", "cmd": [PY, "-c", check], "timeout": 30},
    }})
    assert s.runtime.claim_start("app")().ok
    assert s.statuses("app") == ["starting", "running", "ready"]
    assert s.runtime.claim_stop("app")().ok
    assert out.read_text() == "from-file"


# ---- stopSignal and stopTimeout ---------------------------------------------------------------


@pytest.mark.parametrize("configured, received", [
    (None, "SIGTERM"), ("INT", "SIGINT"), ("SIGQUIT", "SIGQUIT"), ("HUP", "SIGHUP"), ("SIGUSR2", "SIGUSR2")])
def test_the_stop_signal_is_what_the_service_receives(stack, tmp_path, configured, received):
    record = tmp_path / "signal.txt"
    service = {"cmd": py_cmd(RECORDER) + [str(record), "0"]}
    if configured:
        service["stopSignal"] = configured
    s = stack({"app": service})
    s.runtime.claim_start("app")()
    wait_until(lambda: "up" in s.lines("app"), message="handlers installed")
    assert s.runtime.claim_stop("app")().ok
    assert record.read_text() == received
    assert "exited (code 0)" in s.lines("app", "system")


def test_stop_timeout_gives_a_slow_shutdown_its_time(stack, tmp_path):
    """Two seconds of clean-up: more than a fraction of the default, within stopTimeout."""
    record = tmp_path / "signal.txt"
    s = stack({"app": {"cmd": py_cmd(RECORDER) + [str(record), "2"], "stopTimeout": 60}})
    s.runtime.claim_start("app")()
    wait_until(lambda: "up" in s.lines("app"), message="handlers installed")
    assert s.runtime.claim_stop("app")().ok
    assert "exited (code 0)" in s.lines("app", "system")


def test_stop_timeout_ends_with_sigkill(stack):
    s = stack({"app": {"cmd": py_cmd(STUBBORN), "stopSignal": "TERM", "stopTimeout": 0.3}})
    s.runtime.claim_start("app")()
    wait_until(lambda: "up" in s.lines("app"), message="handler installed")
    assert s.runtime.claim_stop("app")().ok
    assert "exited (signal SIGKILL)" in s.lines("app", "system")


# ---- ready.timeout and the waiting lines ------------------------------------------------------


def test_ready_timeout_stops_the_process_and_fails_the_start(stack):
    port = free_port()
    s = stack({"api": {"cmd": py_cmd(PID_SLEEPER), "ready": {"type": "tcp", "port": port, "timeout": 0.5}},
               "web": {"cmd": py_cmd(SLEEPER), "dependsOn": ["api"]}})
    outcome = s.runtime.claim_start_all()()
    assert not outcome.ok and outcome.failed_services == ["api", "web"]
    assert s.statuses("api") == ["starting", "running", "failed"]
    system = s.lines("api", "system")
    assert system[-2:] == ["exited (signal SIGTERM)",
                           f"failed_start: not ready after 0.5s (tcp {port} -> connection refused)"]
    assert gone(printed_pid(s, "api"))
    assert "blocked: dependency api failed" in s.lines("web", "system")


def test_ready_timeout_uses_the_stop_signal(stack, tmp_path):
    record = tmp_path / "signal.txt"
    s = stack({"api": {"cmd": py_cmd(RECORDER) + [str(record), "0"], "stopSignal": "USR1",
                       "ready": {"type": "log", "pattern": "never printed", "timeout": 1}}})
    assert not s.runtime.claim_start("api")().ok
    assert record.read_text() == "SIGUSR1"
    assert s.lines("api", "system")[-1] == "failed_start: not ready after 1s (log /never printed/ -> no matching line yet)"


def test_waiting_lines_name_the_target_and_the_last_outcome(stack, monkeypatch):
    monkeypatch.setattr(readiness, "WAITING_EVERY", 0.3)
    port, refused = free_port(), free_port()
    url = f"http://127.0.0.1:{port}/health"
    s = stack({"api": {"cmd": py_cmd(UNAVAILABLE) + [str(port)], "ready": {"type": "http", "url": url, "timeout": 1.5}},
               "db": {"cmd": py_cmd(SLEEPER), "ready": {"type": "tcp", "port": refused, "timeout": 1.5}}})
    assert not s.runtime.claim_start_all()().ok
    api = [l for l in s.lines("api", "system") if l.startswith("waiting for ready")]
    db = [l for l in s.lines("db", "system") if l.startswith("waiting for ready")]
    assert api and all(re.fullmatch(rf"waiting for ready: GET {re.escape(url)} -> status 503 \(\d+s\)", l) for l in api), api
    assert db and all(re.fullmatch(rf"waiting for ready: tcp {refused} -> connection refused \(\d+s\)", l) for l in db), db
    assert s.lines("api", "system")[-1] == f"failed_start: not ready after 1.5s (GET {url} -> status 503)"


def test_no_waiting_line_once_ready(stack, monkeypatch):
    monkeypatch.setattr(readiness, "WAITING_EVERY", 0.1)
    s = stack({"app": {"cmd": py_cmd(SLEEPER), "ready": {"type": "log", "pattern": "^up$"}}})
    assert s.runtime.claim_start("app")().ok
    assert s.lines("app", "system") == ["ready log: /^up$/"]


# ---- exec probes ------------------------------------------------------------------------------


def test_exec_probe_passes_when_the_command_exits_0(stack, tmp_path):
    flag = tmp_path / "up"
    service = f"import time\ntime.sleep(0.3)\nopen({str(flag)!r}, 'w').close()\ntime.sleep(600)\n"
    check = [PY, "-c", f"import os, sys; sys.exit(0 if os.path.exists({str(flag)!r}) else 1)"]
    s = stack({"app": {"cmd": py_cmd(service), "ready": {"type": "exec", "cmd": check, "interval": 0.05}}})
    assert s.runtime.claim_start("app")().ok
    assert s.statuses("app") == ["starting", "running", "ready"]
    assert f"ready exec: {' '.join(check)}" in s.lines("app", "system")


def test_exec_probe_runs_in_the_service_cwd(stack, tmp_path):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "ready.flag").write_text("")
    check = [PY, "-c", "import os, sys; sys.exit(0 if os.path.exists('ready.flag') else 1)"]
    s = stack({"app": {"cmd": py_cmd(SLEEPER), "cwd": "work", "ready": {"type": "exec", "cmd": check, "timeout": 30}}})
    assert s.runtime.claim_start("app")().ok


def test_exec_probe_that_fails_times_out_with_its_exit_code(stack):
    check = [PY, "-c", "raise SystemExit(3)"]
    s = stack({"app": {"cmd": py_cmd(SLEEPER), "ready": {"type": "exec", "cmd": check, "interval": 0.1, "timeout": 1}}})
    assert not s.runtime.claim_start("app")().ok
    assert s.lines("app", "system")[-1] == f"failed_start: not ready after 1s (exec {' '.join(check)} -> exit code 3)"


def test_exec_probe_that_cannot_run_says_why(stack):
    s = stack({"app": {"cmd": py_cmd(SLEEPER), "ready": {"type": "exec", "cmd": "no-such-probe-flowlayer", "timeout": 0.5}}})
    assert not s.runtime.claim_start("app")().ok
    assert s.lines("app", "system")[-1] == ("failed_start: not ready after 0.5s "
                                            "(exec no-such-probe-flowlayer -> cannot run no-such-probe-flowlayer: "
                                            "no such file or directory)")


def test_exec_probe_that_hangs_is_killed_after_its_attempt_limit(stack, tmp_path):
    pid_file = tmp_path / "probe.pid"
    check = [PY, "-c", f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(600)"]
    s = stack({"app": {"cmd": py_cmd(SLEEPER), "ready": {"type": "exec", "cmd": check, "timeout": 0.5}}})
    assert not s.runtime.claim_start("app")().ok
    assert s.lines("app", "system")[-1].endswith(f"-> timed out after {readiness.EXEC_ATTEMPT_LIMIT:g}s)")
    assert gone(int(pid_file.read_text()))


def test_a_stop_ends_a_hanging_exec_probe(stack, tmp_path):
    pid_file = tmp_path / "probe.pid"
    check = [PY, "-c", f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(600)"]
    s = stack({"app": {"cmd": py_cmd(SLEEPER), "ready": {"type": "exec", "cmd": check}}})
    start = s.runtime.claim_start("app")
    results = []
    thread = threading.Thread(target=lambda: results.append(start()))
    thread.start()
    wait_until(lambda: pid_file.exists() and pid_file.read_text(), message="the probe runs")
    assert s.runtime.claim_stop("app")().ok
    thread.join(30)
    assert results and not results[0].ok
    wait_until(lambda: gone(int(pid_file.read_text())), message="the probe's process ended")


# ---- log probes -------------------------------------------------------------------------------


def printer(stream):
    """A service printing `booting`, then `compiled successfully` on `stream`."""
    return py_cmd("import sys, time\nprint('booting', flush=True)\n"
                  f"print('compiled successfully', file=sys.{stream}, flush=True)\ntime.sleep(600)\n")


@pytest.mark.parametrize("configured, printed", [
    ("any", "stdout"), ("any", "stderr"), ("stdout", "stdout"), ("stderr", "stderr"), (None, "stderr")])
def test_log_probe_matches_a_line_of_its_stream(stack, configured, printed):
    ready = {"type": "log", "pattern": r"compiled\s+successfully", "timeout": 30}
    if configured:
        ready["stream"] = configured
    s = stack({"app": {"cmd": printer(printed), "ready": ready}})
    assert s.runtime.claim_start("app")().ok
    assert s.statuses("app") == ["starting", "running", "ready"]
    assert r"ready log: /compiled\s+successfully/" in s.lines("app", "system")


@pytest.mark.parametrize("configured, printed", [("stdout", "stderr"), ("stderr", "stdout")])
def test_log_probe_ignores_the_other_stream(stack, configured, printed):
    s = stack({"app": {"cmd": printer(printed),
                       "ready": {"type": "log", "pattern": "compiled", "stream": configured, "timeout": 1}}})
    assert not s.runtime.claim_start("app")().ok
    assert "compiled successfully" in s.lines("app", printed)
    assert s.lines("app", "system")[-1] == (f"failed_start: not ready after 1s "
                                            f"(log /compiled/ on {configured} -> no matching line yet)")


def test_log_probe_sees_only_the_current_run(stack, tmp_path):
    """The second run must print the line again: a match of the first run does not count."""
    count = tmp_path / "runs"
    code = (f"import time\nruns = open({str(count)!r}, 'a+')\nruns.write('x')\nruns.seek(0)\n"
            "n = len(runs.read())\nprint('ready now' if n == 1 else 'not this time', flush=True)\n"
            "time.sleep(600)\n")
    s = stack({"app": {"cmd": py_cmd(code), "ready": {"type": "log", "pattern": "^ready now$", "timeout": 1}}})
    assert s.runtime.claim_start("app")().ok
    assert not s.runtime.claim_restart("app")().ok
    assert s.lines("app", "system")[-1].startswith("failed_start: not ready after 1s (log /^ready now$/")


# ---- through the server: warnings, port check, --check ----------------------------------------


SHELL_FORMS = {"and": ("&&", "-c pass && echo started"), "or": ("||", "-c pass || true"),
               "pipe": ("|", "-c pass | cat"), "semicolon": (";", "-c pass ; echo"),
               "out": (">", "-c pass > out.txt"), "in": ("<", "-c pass < in.txt"),
               "dollar": ("$", "-c pass $HOME"), "backquote": ("`", "-c pass `date`"),
               "single": ("'", "-c 'pass'"), "double": ('"', '-c "pass"')}


def test_boot_warns_once_per_field_with_shell_syntax(server, tmp_path):
    services = {name: {"cmd": f"{PY} {args}", "kind": "oneshot"} for name, (_, args) in SHELL_FORMS.items()}
    services["assign"] = {"cmd": f"FL_PORT=28000 {PY} -c pass", "kind": "oneshot"}
    services["plain"] = {"cmd": f"{PY} -c pass", "kind": "oneshot", "stopCmd": f"{PY} -c pass"}
    services["array"] = {"cmd": [PY, "-c", "pass", "&&", "$HOME"], "kind": "oneshot"}
    services["stopper"] = {"cmd": f"{PY} -c pass", "kind": "oneshot", "stopCmd": f"{PY} -c pass; echo"}
    srv = server("-c", write_config(tmp_path, {"services": services}))
    srv.wait_line("boot: startup ")
    warnings = [l for l in srv.lines if l.startswith("[flowlayer] warning: ")]
    for name, (syntax, args) in SHELL_FORMS.items():
        expected = (f'[flowlayer] warning: service "{name}": cmd is split on whitespace and run without a shell, '
                    f"but it holds shell syntax ({syntax}); it starts as written. To run it through a shell, "
                    f'write "cmd": {json.dumps(["sh", "-c", f"{PY} {args}"])}')
        assert expected in warnings, (name, warnings)
    assert (f'[flowlayer] warning: service "assign": cmd is split on whitespace and run without a shell, but it '
            f"starts with FL_PORT=28000, which runs as a program; it starts as written. Write "
            f'"env": {{"FL_PORT": "28000"}}, "cmd": {json.dumps([PY, "-c", "pass"])}') in warnings
    assert [l for l in warnings if '"stopper"' in l] == [
        f'[flowlayer] warning: service "stopper": stopCmd is split on whitespace and run without a shell, but it '
        f'holds shell syntax (;); it starts as written. To run it through a shell, write "stopCmd": '
        f'{json.dumps(["sh", "-c", f"{PY} -c pass; echo"])}']
    assert len(warnings) == len(SHELL_FORMS) + 2  # none for plain, array
    assert srv.stop() == 0


def test_ports_in_use_are_listed_before_wave_0_with_their_holder(server, tmp_path):
    marker = tmp_path / "migrated"
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        free = free_port()
        services = {"migrate": {"cmd": py_cmd(f"open({str(marker)!r}, 'w')"), "kind": "oneshot"},
                    "api": {"cmd": py_cmd(SLEEPER), "port": port, "dependsOn": ["migrate"]},
                    "web": {"cmd": py_cmd(SLEEPER), "port": free}}
        srv = server("-c", write_config(tmp_path, {"services": services}))
        summary = srv.wait_line("boot: startup ")
        holder = f"pid {os.getpid()}: "
        listed = srv.wait_line("boot: ports already in use: ")
        assert listed.startswith(f"[flowlayer] boot: ports already in use: {port} (api; {holder}")
        assert str(free) not in listed
        assert srv.lines.index(listed) < next(i for i, l in enumerate(srv.lines) if l.startswith("migrate"))
        failed = srv.wait_line("failed_start: port")
        assert failed.startswith("api") and f"failed_start: port {port} is already in use ({holder}" in failed
        assert "1 failed_start" in summary
    assert marker.exists()  # wave 0 still ran: the port fails its own service at its wave
    assert srv.stop() == 0


def run_check(*args, cwd=None):
    return subprocess.run([PY, os.path.join(ROOT, "flowlayer.py"), "--check", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_check_prints_the_plan_and_warnings_and_starts_nothing(tmp_path):
    marker = tmp_path / "started"
    services = {"db": {"cmd": py_cmd(f"open({str(marker)!r}, 'w')"), "port": free_port()},
                "api": {"cmd": "node server.js && echo", "dependsOn": ["db"]}}
    path = write_config(tmp_path, {"services": services})
    result = run_check("-c", path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    warning = ('service "api": cmd is split on whitespace and run without a shell, but it holds shell syntax '
               '(&&); it starts as written. To run it through a shell, write "cmd": ["sh", "-c", "node server.js && echo"]')
    assert result.stdout.splitlines() == [
        f"[flowlayer] boot: config {path}",
        "[flowlayer] boot: services: 2",
        "[flowlayer] boot: plan: [0] db  [1] api",
        f"[flowlayer] warning: {warning}",
        "[flowlayer] check: config is valid",
    ]
    assert not marker.exists()


def test_check_finds_the_config_in_the_current_directory(tmp_path):
    write_config(tmp_path, {"services": {"a": {"cmd": "x"}}})
    result = run_check(cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.endswith("[flowlayer] check: config is valid\n")


@pytest.mark.parametrize("data, error", [
    ({"services": {"a": {"cmd": "x", "stopSignal": "TERMINATE"}}}, "services.a.stopSignal: must be"),
    ({"services": {"a": {"cmd": "x", "ready": {"type": "log", "pattern": "("}}}},
     "services.a.ready.pattern: invalid regular expression"),
    ({"services": {"a": {"cmd": "x", "dependsOn": ["a"]}}}, "cannot depend on itself"),
])
def test_check_of_a_bad_config_exits_2(tmp_path, data, error):
    result = run_check(write_config(tmp_path, data))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("Error: ") and error in result.stderr and "Traceback" not in result.stderr


def test_check_of_a_missing_config_exits_2(tmp_path):
    result = run_check("-c", str(tmp_path / "nope.jsonc"))
    assert result.returncode == 2 and result.stderr.startswith("Error: ")


def test_help_mentions_check():
    result = subprocess.run([PY, os.path.join(ROOT, "flowlayer.py"), "--help"], capture_output=True, text=True,
                            timeout=60)
    assert "--check" in result.stdout and "start nothing" in re.sub(r"\s+", " ", result.stdout)
