"""The runtime's state machine, waves, starts and stops, with real processes."""
import os
import signal
import socket
import threading
from types import SimpleNamespace

import pytest

from conftest import free_port, py_cmd, wait_until
from services import HTTP_SERVER, SLEEPER, STUBBORN, TCP_LISTENER
from lib.runtime import ServiceBusy, UnknownService
from lib.service_state import ServiceState
from lib.summary import boot_summary



def test_daemon_without_probe_is_running(stack):
    s = stack({"app": {"cmd": py_cmd(SLEEPER)}})
    assert s.runtime.claim_start("app")().ok
    assert s.statuses("app") == ["starting", "running"]
    wait_until(lambda: "up" in s.lines("app"), message="output captured")


def test_tcp_probe_reaches_ready(stack):
    port = free_port()
    s = stack({"db": {"cmd": py_cmd(TCP_LISTENER) + [str(port)], "port": port, "ready": {"type": "tcp"}}})
    assert s.runtime.claim_start("db")().ok
    assert s.statuses("db") == ["starting", "running", "ready"]
    assert f"ready tcp: {port}" in s.lines("db", "system")


def test_http_probe_reaches_ready(stack):
    port = free_port()
    url = f"http://127.0.0.1:{port}/health"
    s = stack({"api": {"cmd": py_cmd(HTTP_SERVER) + [str(port)], "ready": {"type": "http", "url": url}}})
    assert s.runtime.claim_start("api")().ok
    assert s.statuses("api") == ["starting", "running", "ready"]
    assert f"ready http: {url}" in s.lines("api", "system")


@pytest.mark.parametrize("code,final", [(0, "stopped"), (3, "failed")])
def test_oneshot_resolves_on_exit_code(stack, code, final):
    s = stack({"job": {"kind": "oneshot", "cmd": py_cmd(f"print('seeding');raise SystemExit({code})")}})
    outcome = s.runtime.claim_start("job")()
    assert outcome.ok == (code == 0)
    assert s.statuses("job") == ["starting", "running", final]
    assert f"exited (code {code})" in s.lines("job", "system")


def test_oneshot_with_probe_still_resolves_on_exit(stack):
    s = stack({"job": {"kind": "oneshot", "cmd": py_cmd("pass"), "ready": {"type": "tcp", "port": free_port()}}})
    assert s.runtime.claim_start("job")().ok
    assert s.statuses("job") == ["starting", "running", "stopped"]


@pytest.mark.parametrize("code,final", [(0, "stopped"), (1, "failed")])
def test_daemon_that_quits_is_not_restarted(stack, code, final):
    s = stack({"app": {"cmd": py_cmd(f"import sys;sys.stdin.read() if False else None;raise SystemExit({code})")}})
    s.runtime.claim_start("app")()
    wait_until(lambda: s.statuses("app")[-1:] == [final], message=final)
    assert s.statuses("app") == ["starting", "running", final]


def test_exit_before_ready_fails_the_start(stack):
    s = stack({"api": {"cmd": py_cmd("raise SystemExit(3)"), "ready": {"type": "tcp", "port": free_port()}}})
    outcome = s.runtime.claim_start("api")()
    assert not outcome.ok and outcome.failed_services == ["api"]
    assert s.statuses("api") == ["starting", "running", "failed"]
    assert "failed_start: process exited before ready (exit code 3)" in s.lines("api", "system")


def test_spawn_failure(stack):
    s = stack({"ghost": {"cmd": "no-such-program-flowlayer --flag"}})
    outcome = s.runtime.claim_start("ghost")()
    assert not outcome.ok
    assert s.statuses("ghost") == ["starting", "failed"]
    assert any(line.startswith("failed_start: ") and "no-such-program-flowlayer" in line
               for line in s.lines("ghost", "system"))


def test_port_in_use_fails_before_spawn(stack, tmp_path):
    marker = tmp_path / "spawned"
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        s = stack({"api": {"cmd": py_cmd(f"open({str(marker)!r},'w')"), "port": port}})
        assert not s.runtime.claim_start("api")().ok
    assert s.statuses("api") == ["starting", "failed"]
    holder = f"pid {os.getpid()}: "  # this test process holds the port
    assert any(line.startswith(f"failed_start: port {port} is already in use ({holder}")
               for line in s.lines("api", "system")), s.lines("api", "system")
    assert not marker.exists()


def test_blocked_dependents_stay_where_they_were(stack):
    s = stack({
        "db": {"cmd": py_cmd("raise SystemExit(2)"), "ready": {"type": "tcp", "port": free_port()}},
        "cache": {"cmd": py_cmd(SLEEPER)},
        "api": {"cmd": py_cmd(SLEEPER), "dependsOn": ["db", "cache"]},
        "web": {"cmd": py_cmd(SLEEPER), "dependsOn": ["api"]},
    })
    outcome = s.runtime.claim_start_all()()
    assert not outcome.ok
    assert outcome.failed_services == ["api", "db", "web"]
    assert s.statuses("api") == [] and s.statuses("web") == []
    assert "blocked: dependency db failed" in s.lines("api", "system")
    assert "blocked: dependency api failed" in s.lines("web", "system")
    assert s.runtime.status("cache") == "running"


def test_waves_start_in_order_and_stop_in_reverse(stack):
    port = free_port()
    s = stack({
        "db": {"cmd": py_cmd(TCP_LISTENER) + [str(port)], "ready": {"type": "tcp", "port": port}},
        "api": {"cmd": py_cmd(SLEEPER), "dependsOn": ["db"]},
        "web": {"cmd": py_cmd(SLEEPER), "dependsOn": ["api"]},
    })
    assert s.runtime.claim_start_all()().ok
    order = [(e.service, e.status) for e in s.events]
    assert order.index(("db", "ready")) < order.index(("api", "starting"))
    assert order.index(("api", "running")) < order.index(("web", "starting"))
    s.events.clear()
    assert s.runtime.claim_stop_all()().ok
    stops = [e.service for e in s.events if e.status == "stopping"]
    assert stops == ["web", "api", "db"]
    assert all(s.runtime.status(n) == "stopped" for n in ("db", "api", "web"))


def test_start_service_starts_missing_dependencies_first(stack):
    s = stack({
        "db": {"kind": "oneshot", "cmd": py_cmd("print('migrated')")},
        "api": {"cmd": py_cmd(SLEEPER), "dependsOn": ["db"]},
        "other": {"cmd": py_cmd(SLEEPER)},
    })
    assert s.runtime.claim_start("api")().ok
    assert s.statuses("db") == ["starting", "running", "stopped"]
    assert s.statuses("other") == []
    # An exited oneshot runs again on start_service, but start_all leaves it done.
    assert s.runtime.claim_start("db")().ok
    assert s.statuses("db").count("starting") == 2
    assert s.runtime.claim_start_all()().ok
    assert s.statuses("db").count("starting") == 2


def test_start_of_a_running_service_has_nothing_to_do(stack):
    s = stack({"app": {"cmd": py_cmd(SLEEPER)}})
    s.runtime.claim_start("app")()
    before = list(s.events)
    assert s.runtime.claim_start("app")().ok
    assert s.events == before


def test_stop_of_a_stopped_service_emits_nothing(stack):
    s = stack({"app": {"cmd": py_cmd(SLEEPER)}})
    assert s.runtime.claim_stop("app")().ok
    assert s.events == []


def test_restart(stack):
    s = stack({"app": {"cmd": py_cmd(SLEEPER)}})
    s.runtime.claim_start("app")()
    assert s.runtime.claim_restart("app")().ok
    assert s.statuses("app") == ["starting", "running", "stopping", "stopped", "starting", "running"]


def test_sigterm_ignoring_service_is_killed_after_stop_timeout(stack):
    s = stack({"app": {"cmd": py_cmd(STUBBORN), "stopTimeout": 0.5}})
    s.runtime.claim_start("app")()
    wait_until(lambda: "up" in s.lines("app"), message="handler installed")
    assert s.runtime.claim_stop("app")().ok
    assert s.statuses("app")[-2:] == ["stopping", "stopped"]
    assert "exited (signal SIGKILL)" in s.lines("app", "system")


def test_stop_cmd_runs_with_the_service_env(stack, tmp_path):
    out = tmp_path / "stopped.txt"
    s = stack({"app": {
        "cmd": py_cmd(SLEEPER),
        "stopCmd": py_cmd(f"import os;print('bye', os.environ['GREETING']);open({str(out)!r},'w').write('x')"),
        "env": {"GREETING": "hello-env"},
    }})
    s.runtime.claim_start("app")()
    s.runtime.claim_stop("app")()
    assert out.exists()
    assert "bye hello-env" in s.lines("app", "stdout")


def test_oneshot_stop_cmd_runs_once_after_exit(stack, tmp_path):
    count = tmp_path / "count"
    s = stack({"seed": {
        "kind": "oneshot",
        "cmd": py_cmd("pass"),
        "stopCmd": py_cmd(f"open({str(count)!r},'a').write('x')"),
    }})
    s.runtime.claim_start("seed")()
    s.runtime.claim_stop("seed")()
    assert s.statuses("seed") == ["starting", "running", "stopped", "stopping", "stopped"]
    s.runtime.claim_stop("seed")()
    assert count.read_text() == "x"
    assert s.statuses("seed") == ["starting", "running", "stopped", "stopping", "stopped"]


def test_stop_abandons_a_pending_start(stack):
    s = stack({"api": {"cmd": py_cmd(SLEEPER), "ready": {"type": "tcp", "port": free_port()}}})
    result = {}
    starter = threading.Thread(target=lambda: result.update(out=s.runtime.claim_start("api")()))
    starter.start()
    wait_until(lambda: s.runtime.status("api") == "running", message="probing")
    assert s.runtime.claim_stop("api")().ok
    starter.join(timeout=15)
    assert not result["out"].ok and result["out"].failed_services == ["api"]
    assert s.statuses("api") == ["starting", "running", "stopping", "stopped"]


def test_busy_rules(stack):
    s = stack({"api": {"cmd": py_cmd(SLEEPER), "ready": {"type": "tcp", "port": free_port()}},
               "other": {"cmd": py_cmd(SLEEPER)}})
    threading.Thread(target=s.runtime.claim_start("api"), daemon=True).start()
    wait_until(lambda: s.runtime.status("api") == "running", message="probing")
    for claim in (s.runtime.claim_start, s.runtime.claim_restart):
        with pytest.raises(ServiceBusy):
            claim("api")
    with pytest.raises(UnknownService) as info:
        s.runtime.claim_start("nope")
    assert str(info.value) == 'service "nope" is not defined'
    stop_all = s.runtime.claim_stop_all()
    with pytest.raises(ServiceBusy):
        s.runtime.claim_stop_all()
    with pytest.raises(ServiceBusy):
        s.runtime.claim_start_all()
    assert stop_all().ok
    assert s.runtime.claim_start("other")().ok


def test_stop_all_cuts_a_boot_short(stack):
    s = stack({
        "db": {"cmd": py_cmd(SLEEPER), "ready": {"type": "tcp", "port": free_port()}},
        "api": {"cmd": py_cmd(SLEEPER), "dependsOn": ["db"]},
    })
    booted = threading.Thread(target=s.runtime.boot)
    booted.start()
    wait_until(lambda: s.runtime.status("db") == "running", message="db probing")
    assert s.runtime.claim_stop_all()().ok
    booted.join(timeout=15)
    assert s.statuses("api") == []
    summary = [m for m in s.lines("flowlayer") if "startup" in m]
    assert summary and summary[0].startswith("boot: startup cancelled: 0 running, 0 done, 1 failed_start")


def test_boot_summary_counts(stack):
    s = stack({
        "ok": {"cmd": py_cmd(SLEEPER)},
        "seed": {"kind": "oneshot", "cmd": py_cmd("pass")},
        "bad": {"kind": "oneshot", "cmd": py_cmd("raise SystemExit(1)")},
        "after": {"cmd": py_cmd(SLEEPER), "dependsOn": ["bad"]},
    })
    s.runtime.boot()
    summary = [m for m in s.lines("flowlayer") if "startup" in m][0]
    assert summary.startswith("boot: startup incomplete: 1 running, 1 done, 1 failed_start, 1 blocked (")


def test_shutdown_leaves_no_grandchild(stack, tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    code = ("import subprocess,sys,time;"
            "p=subprocess.Popen([sys.executable,'-c','import time;time.sleep(600)']);"
            f"open({str(pidfile)!r},'w').write(str(p.pid));print('spawned',flush=True);time.sleep(600)")
    s = stack({"app": {"cmd": py_cmd(code)}})
    s.runtime.claim_start("app")()
    wait_until(lambda: "spawned" in s.lines("app"), message="grandchild spawned")
    grandchild = int(pidfile.read_text())
    s.runtime.shutdown()
    wait_until(lambda: not _alive(grandchild), message="grandchild gone")


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


def test_log_lines_carry_the_phase(stack):
    s = stack({"app": {"cmd": py_cmd("import time;time.sleep(0.2);print('hello',flush=True);time.sleep(600)")}})
    s.runtime.claim_start("app")()
    wait_until(lambda: "hello" in s.lines("app"), message="hello")
    entries, _ = s.store.query("app", limit=100)
    assert [e.phase for e in entries if e.message == "hello"] == ["running"]


def test_status_timestamps_never_decrease(stack):
    s = stack({"a": {"cmd": py_cmd(SLEEPER)}, "b": {"cmd": py_cmd(SLEEPER)}})
    s.runtime.claim_start_all()()
    s.runtime.claim_stop_all()()
    stamps = [e.timestamp for e in s.events]
    assert stamps == sorted(stamps)


def test_env_gets_pythonunbuffered(stack):
    s = stack({"app": {"cmd": py_cmd("import os;print(os.environ.get('PYTHONUNBUFFERED'), os.environ['X'])"),
                       "env": {"X": "y"}}})
    s.runtime.claim_start("app")()
    wait_until(lambda: "1 y" in s.lines("app"), message="env printed")


def test_kill_all_signals_every_group(stack):
    s = stack({"app": {"cmd": py_cmd(SLEEPER)}})
    s.runtime.claim_start("app")()
    pid = s.runtime.process_groups()[0]
    s.runtime.kill_all()
    wait_until(lambda: s.runtime.status("app") == "failed", message="killed")
    assert f"exited (signal {signal.SIGKILL.name})" in s.lines("app", "system")
    assert not _alive(pid)
    assert os.getpgid(os.getpid()) != pid


def test_boot_after_shutdown_began_is_cancelled(stack):
    s = stack({"app": {"cmd": py_cmd(SLEEPER)}})
    s.runtime.shutdown()
    assert s.runtime.boot().ok
    assert s.statuses("app") == []
    assert any(m.startswith("boot: startup cancelled: 0 running") for m in s.lines("flowlayer"))


def test_a_raising_status_subscriber_is_reported_once_and_stops_nothing(stack):
    s = stack({"app": {"cmd": py_cmd(SLEEPER)}})

    def broken(event):
        raise RuntimeError("boom")

    s.runtime.subscribe(broken)
    later = []
    s.runtime.subscribe(later.append)
    assert s.runtime.claim_start("app")().ok
    assert s.runtime.claim_stop("app")().ok
    assert [e.status for e in later] == ["starting", "running", "stopping", "stopped"]
    warnings = [m for m in s.lines("flowlayer") if "status subscriber" in m]
    assert len(warnings) == 1 and "boom" in warnings[0] and warnings[0].startswith("warning: ")


# ---- the boot summary, as a pure function ------------------------------------------------

@pytest.mark.parametrize("results, statuses, cancelled, line", [
    ({}, {}, False, "startup ok: 0 running, 0 done, 0 failed_start, 0 blocked (1.50s)"),
    ({"a": "ok", "b": "ok", "c": "ok"}, {"a": "running", "b": "ready", "c": "stopped"}, False,
     "startup ok: 2 running, 1 done, 0 failed_start, 0 blocked (1.50s)"),
    ({"a": "ok", "b": "failed", "c": "blocked"}, {"a": "failed", "b": "failed", "c": "unknown"},
     False, "startup incomplete: 0 running, 0 done, 2 failed_start, 1 blocked (1.50s)"),
    ({"a": "ok", "b": "failed"}, {"a": "ready", "b": "stopped"}, True,
     "startup cancelled: 1 running, 0 done, 1 failed_start, 0 blocked (1.50s)"),
])
def test_boot_summary_line(results, statuses, cancelled, line):
    assert boot_summary(results, statuses, cancelled, 1.5) == line


# ---- the state object's transitions, without processes -------------------------------------

def state(kind="daemon", ready=None, stop_cmd=None):
    cfg = SimpleNamespace(name="svc", kind=kind, ready=ready, stop_cmd=stop_cmd)
    seen = []
    svc = ServiceState(cfg, {}, lambda s: seen.append(s.status), lambda s, m: seen.append(m))
    return svc, seen


PROBE = SimpleNamespace(type="tcp", port=1, url=None)


def test_an_exit_before_the_spawn_is_recorded_resolves_at_the_spawn():
    svc, seen = state(ready=PROBE)
    run = svc.begin_start()
    svc.begin_spawn(run)
    svc.exited(run, 3)
    assert svc.status == "starting" and run.outcome is None
    assert svc.spawned(run, object()) is False
    assert seen == ["starting", "exited (code 3)", "running",
                    "failed_start: process exited before ready (exit code 3)", "failed"]
    assert run.outcome is False and run.cancel.is_set() and not svc.alive


def test_a_probe_that_passes_after_the_stop_is_ignored():
    svc, seen = state(ready=PROBE)
    run = svc.begin_start()
    svc.begin_spawn(run)
    assert svc.spawned(run, object()) is True       # the start now waits on the probe
    assert svc.start_busy
    svc.begin_stop()
    assert run.outcome is False and not svc.starting   # the stop resolved the start
    svc.probe_passed(run)
    assert svc.status == "stopping"
    svc.exited(run, -15)
    svc.stopped()
    assert seen == ["starting", "running", "stopping", "stopping", "exited (signal SIGTERM)",
                    "stopped"]
    assert not svc.start_busy and svc.begin_start() is not run


def test_transitions_refuse_what_is_not_legal():
    svc, _ = state()
    run = svc.begin_start()
    with pytest.raises(AssertionError):
        svc.begin_start()             # a start is in flight
    with pytest.raises(AssertionError):
        svc.stopped()                 # not stopping
    svc.begin_spawn(run)
    svc.spawned(run, object())
    assert run.outcome is True and svc.satisfied
    with pytest.raises(AssertionError):
        svc.probe_passed(run)         # a daemon without probe is already resolved
