"""Live reload (SPEC 6.4, issue 11): the diff, its application to real processes, the busy
rules, the session (result, snapshot, logs of removed services) and SIGUSR1."""
import json
import os
import re
import signal
import subprocess
import threading

import pytest
import websocket

from conftest import (PY, ROOT, SESSION_TOKEN, ServerProcess, alive, free_port, py_cmd, wait_until,
                      write_config)
from lib import reload, runtime as runtime_module
from lib.client import Client
from lib.config import load
from lib.runtime import Reconfigured, ServiceBusy, StatusEvent

SLEEPER = ("import os,time;print('pid', os.getpid(), os.environ.get('V'), flush=True);"
           "time.sleep(600)")


def daemon(v="1", **extra):
    return {"cmd": py_cmd(SLEEPER), "env": {"V": v}, **extra}


class Reloadable:
    """A Stack whose config file can be rewritten; pids and status events per service."""

    def __init__(self, stack, tmp_path, services, **top):
        self.tmp_path = tmp_path
        self.stack = stack(services, **top)
        self.runtime = self.stack.runtime

    def boot(self):
        outcome = self.runtime.boot()
        assert outcome.ok, outcome
        return self

    def rewrite(self, services, **top):
        write_config(self.tmp_path, {"services": services, **top})

    def reload(self):
        return self.runtime.claim_reload()()

    def pid(self, name, run=1):
        """The pid that the `run`th start of `name` printed (waits for it)."""
        lines = wait_until(lambda: [m for m in self.stack.lines(name, "stdout")
                                    if m.startswith("pid ")][run - 1:], message=f"{name} run {run}")
        return int(lines[0].split()[1])

    def env_seen(self, name, run=1):
        self.pid(name, run)
        runs = [m for m in self.stack.lines(name, "stdout") if m.startswith("pid ")]
        return runs[run - 1].split()[2]

    def statuses(self, name, since=0):
        return [e.status for e in self.stack.events[since:]
                if isinstance(e, StatusEvent) and e.service == name]

    def mark(self):
        return len(self.stack.events)

    def reconfigured(self):
        return [e for e in self.stack.events if isinstance(e, Reconfigured)]


@pytest.fixture
def reloadable(stack, tmp_path):
    return lambda services, **top: Reloadable(stack, tmp_path, services, **top)


# ---- the diff ----------------------------------------------------------------------------------

def test_compare_counts_any_field_and_keeps_the_session_and_logs_settings(tmp_path):
    old = load(write_config(tmp_path, {"session": {"bind": "127.0.0.1:7001", "token": "a"},
                                       "services": {"a": daemon(), "b": daemon(), "c": daemon(),
                                                    "d": daemon()}}))
    new = load(write_config(tmp_path, {
        "session": {"bind": "127.0.0.1:7002", "token": "b"}, "logs": {"bufferSize": 10},
        "logView": {"maxEntries": 7},
        "services": {"a": daemon(), "b": daemon("2"), "c": daemon(dependsOn=["a"]),
                     "e": daemon()}}))
    diff = reload.compare(old, new)
    assert diff.added == ["e"] and diff.removed == ["d"]
    assert diff.changed == ["b", "c"] and diff.unchanged == ["a"]
    assert diff.ignored == ["session.bind", "session.token", "logs.bufferSize"]
    kept = reload.effective(old, new)
    assert (kept.bind, kept.token, kept.buffer_size) == (old.bind, old.token, old.buffer_size)
    assert kept.log_view_max == 7 and set(kept.services) == {"a", "b", "c", "e"}
    assert reload.dependents(new, ["a"]) == {"c"}


# ---- applying it to processes --------------------------------------------------------------------

def test_reload_stops_removed_restarts_changed_starts_added_and_leaves_the_rest(reloadable):
    r = reloadable({"keep": daemon(), "edit": daemon("old"), "gone": daemon()}).boot()
    pids = {name: r.pid(name) for name in ("keep", "edit", "gone")}
    mark = r.mark()
    r.rewrite({"keep": daemon(), "edit": daemon("new"), "fresh": daemon()})
    outcome = r.reload()
    assert outcome.ok
    assert outcome.data == {"added": ["fresh"], "removed": ["gone"], "changed": ["edit"],
                            "unchanged": ["keep"]}
    assert r.runtime.snapshot() == [{"name": n, "status": "running"}
                                    for n in ("edit", "fresh", "keep")]
    assert r.pid("keep") == pids["keep"] and alive(pids["keep"])
    assert r.statuses("keep", mark) == []
    assert not alive(pids["edit"]) and alive(r.pid("edit", 2)) and r.env_seen("edit", 2) == "new"
    assert r.statuses("edit", mark) == ["stopping", "stopped", "starting", "running"]
    assert not alive(pids["gone"]) and r.statuses("gone", mark) == ["stopping", "stopped"]
    assert r.statuses("fresh", mark) == ["starting", "running"]
    [event] = r.reconfigured()
    assert event.listed and [s["name"] for s in event.services] == ["edit", "fresh", "keep"]
    assert r.runtime.config.waves == (("edit", "fresh", "keep"),)
    lines = r.stack.lines("flowlayer")
    assert "reload: added fresh" in lines and "reload: removed gone" in lines
    assert "reload: changed edit" in lines and "reload: 1 unchanged" in lines


def test_an_unchanged_file_touches_nothing_and_sends_no_snapshot(reloadable):
    r = reloadable({"a": daemon()}).boot()
    mark = r.mark()
    outcome = r.reload()
    assert outcome.data == {"added": [], "removed": [], "changed": [], "unchanged": ["a"]}
    assert r.statuses("a", mark) == []
    assert [e.listed for e in r.reconfigured()] == [False]


def test_a_changed_dependency_restarts_its_running_dependents_in_wave_order(reloadable):
    r = reloadable({"db": daemon(), "api": daemon(dependsOn=["db"]),
                    "web": daemon(dependsOn=["api"]), "other": daemon()}).boot()
    before = {name: r.pid(name) for name in ("db", "api", "web", "other")}
    mark = r.mark()
    r.rewrite({"db": daemon("2"), "api": daemon(dependsOn=["db"]),
               "web": daemon(dependsOn=["api"]), "other": daemon()})
    outcome = r.reload()
    assert outcome.data["changed"] == ["db"]
    assert outcome.data["unchanged"] == ["api", "other", "web"]
    order = [(e.service, e.status) for e in r.stack.events[mark:] if isinstance(e, StatusEvent)]
    stops = [s for s, status in order if status == "stopping"]
    starts = [s for s, status in order if status == "starting"]
    assert stops == ["web", "api", "db"] and starts == ["db", "api", "web"]
    assert all(not alive(before[n]) and alive(r.pid(n, 2)) for n in ("db", "api", "web"))
    assert r.pid("other") == before["other"]
    assert "reload: restarting dependents api, web" in r.stack.lines("flowlayer")


def test_a_stopped_dependent_of_a_changed_service_stays_stopped(reloadable):
    r = reloadable({"db": daemon(), "api": daemon(dependsOn=["db"])}).boot()
    r.runtime.claim_stop("api")()
    mark = r.mark()
    r.rewrite({"db": daemon("2"), "api": daemon(dependsOn=["db"])})
    r.reload()
    assert r.statuses("api", mark) == [] and r.runtime.status("api") == "stopped"


def test_a_renamed_service_is_removed_and_added(reloadable):
    r = reloadable({"old-name": daemon()}).boot()
    old_pid = r.pid("old-name")
    r.rewrite({"new-name": daemon()})
    outcome = r.reload()
    assert outcome.data == {"added": ["new-name"], "removed": ["old-name"], "changed": [],
                            "unchanged": []}
    assert not alive(old_pid) and alive(r.pid("new-name"))
    assert r.runtime.service_names == ["new-name"]


@pytest.mark.parametrize("services, error", [
    ({"a": daemon(dependsOn=["b"]), "b": daemon(dependsOn=["a"])}, "dependency cycle: a -> b -> a"),
    ({"a": daemon(dependsOn=["nope"])}, "nope"),
])
def test_a_cycle_or_an_unknown_dependency_is_refused_and_nothing_changes(reloadable, services,
                                                                          error):
    r = reloadable({"a": daemon(), "b": daemon()}).boot()
    pids, config, mark = (r.pid("a"), r.pid("b")), r.runtime.config, r.mark()
    r.rewrite(services)
    outcome = r.reload()
    assert not outcome.ok and outcome.data is None
    assert outcome.message.startswith(f"Error: {r.stack.path}:") and error in outcome.message
    assert r.runtime.config is config and r.stack.events[mark:] == []
    assert (r.pid("a"), r.pid("b")) == pids and all(map(alive, pids))
    assert f"reload: refused, nothing changed: {outcome.message}" in r.stack.lines("flowlayer")


def test_a_removed_service_that_ignores_sigterm_is_killed_after_its_grace(reloadable):
    stubborn = ("import os,signal,time;signal.signal(signal.SIGTERM, signal.SIG_IGN);"
                "print('pid', os.getpid(), 1, flush=True);time.sleep(600)")
    r = reloadable({"stubborn": {"cmd": py_cmd(stubborn), "stopTimeout": 0.5},
                    "keep": daemon()}).boot()
    pid = r.pid("stubborn")
    r.rewrite({"keep": daemon()})
    assert r.reload().data["removed"] == ["stubborn"]
    assert not alive(pid)
    assert "exited (signal SIGKILL)" in r.stack.lines("stubborn")


def test_a_changed_oneshot_runs_again(reloadable):
    r = reloadable({"job": {"cmd": py_cmd("print('ran')"), "kind": "oneshot"}}).boot()
    r.rewrite({"job": {"cmd": py_cmd("print('ran again')"), "kind": "oneshot"}})
    assert r.reload().data["changed"] == ["job"]
    assert r.stack.lines("job", "stdout") == ["ran", "ran again"]


# ---- busy ----------------------------------------------------------------------------------------

SLOW_STOP = ("import os,signal,sys,time\n"
             "def bye(*_):\n time.sleep(1.5); sys.exit(0)\n"
             "signal.signal(signal.SIGTERM, bye)\n"
             "print('pid', os.getpid(), 1, flush=True)\ntime.sleep(600)")


def test_two_reloads_race_and_commands_wait_for_the_reload(reloadable):
    r = reloadable({"slow": {"cmd": py_cmd(SLOW_STOP), "env": {"V": "1"}}, "other": daemon()})
    r.boot().pid("slow")   # its SIGTERM handler is in place
    r.rewrite({"slow": {"cmd": py_cmd(SLOW_STOP), "env": {"V": "2"}}, "other": daemon()})
    first = r.runtime.claim_reload()
    with pytest.raises(ServiceBusy, match="reload is already running"):
        r.runtime.claim_reload()
    done = []
    thread = threading.Thread(target=lambda: done.append(first()))
    thread.start()
    wait_until(lambda: r.runtime.status("slow") == "stopping", message="the reload's stop")
    for claim in (r.runtime.claim_reload, r.runtime.claim_start_all, r.runtime.claim_stop_all,
                  lambda: r.runtime.claim_restart("other")):
        with pytest.raises(ServiceBusy):
            claim()
    thread.join(30)
    assert done[0].data["changed"] == ["slow"]
    r.runtime.claim_reload()()   # free again


def test_a_reload_during_the_boot_or_a_service_command_is_busy(reloadable, tmp_path):
    flag = tmp_path / "go"
    waits = py_cmd(f"import os,time\nwhile not os.path.exists({str(flag)!r}): time.sleep(0.02)\n")
    r = reloadable({"setup": {"cmd": waits, "kind": "oneshot"}})
    boot = threading.Thread(target=r.runtime.boot)
    boot.start()
    wait_until(lambda: r.runtime.status("setup") == "running", message="the boot's oneshot")
    with pytest.raises(ServiceBusy, match="boot"):
        r.runtime.claim_reload()
    flag.touch()
    boot.join(30)
    flag.unlink()
    start = r.runtime.claim_start("setup")
    with pytest.raises(ServiceBusy, match='"setup" is busy'):
        r.runtime.claim_reload()
    flag.touch()
    start()
    assert r.reload().ok


# ---- the session: result, snapshot, logs ---------------------------------------------------------

class Wire:
    """A raw V1 client: commands and their answers, with every event kept."""

    def __init__(self, url):
        self.ws = websocket.create_connection(
            url, header=[f"Authorization: Bearer {SESSION_TOKEN}"], timeout=30,
            suppress_origin=True)
        self.events = []
        self._n = 0
        while not any(name == "snapshot" for name, _ in self.events):
            self._read()

    def _read(self):
        message = json.loads(self.ws.recv())
        if message["type"] == "event":
            self.events.append((message["name"], message["payload"]))
        return message

    def command(self, name, payload=None):
        self._n += 1
        id = f"c{self._n}"
        self.ws.send(json.dumps({"type": "command", "id": id, "name": name, "payload": payload}))
        answers = []
        while len(answers) < 2:
            message = self._read()
            if message.get("id") == id:
                answers.append(message["payload"])
                if message["type"] == "ack" and not message["payload"]["accepted"]:
                    return message["payload"]
        return answers[1]

    def wait_event(self, wanted):
        """Read until an event (name, payload) satisfies `wanted`."""
        while not any(wanted(name, payload) for name, payload in self.events):
            self._read()

    def snapshots(self):
        return [[s["name"] for s in p["services"]] for name, p in self.events if name == "snapshot"]


class Server:
    """flowlayer.py over a config file with the session API on a free port."""

    def __init__(self, tmp_path, services, **top):
        self.tmp_path = tmp_path
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.path = write_config(tmp_path, {"services": services, **top})
        self.proc = ServerProcess("-c", self.path, "-s", f"127.0.0.1:{self.port}",
                                  "-token", SESSION_TOKEN, "--no-color")
        self.proc.wait_line("boot: startup ")

    def rewrite(self, services, **top):
        write_config(self.tmp_path, {"services": services, **top})


@pytest.fixture
def server_at(tmp_path):
    made = []

    def make(services, **top):
        made.append(Server(tmp_path, services, **top))
        return made[-1]

    yield make
    for s in made:
        code = s.proc.stop()
        assert code == 0 and not any("Traceback" in line for line in s.proc.lines), s.proc.lines


def test_reload_config_over_the_session_and_a_fresh_snapshot(server_at):
    s = server_at({"keep": daemon(), "gone": daemon()})
    wire = Wire(s.url)
    assert "reload_config" in dict(wire.events)["hello"]["capabilities"]
    s.rewrite({"keep": daemon(), "fresh": daemon()})
    result = wire.command("reload_config")
    assert result == {"ok": True, "data": {"added": ["fresh"], "removed": ["gone"],
                                           "changed": [], "unchanged": ["keep"]}}
    wire.wait_event(lambda name, p: name == "service_status" and p["service"] == "fresh"
                    and p["status"] == "running")
    assert [p["status"] for name, p in wire.events
            if name == "service_status" and p["service"] == "gone"] == ["stopping", "stopped"]
    assert wire.snapshots()[-1] == ["fresh", "keep"] and len(wire.snapshots()) == 2
    assert wire.command("get_logs", {"service": "fresh"})["ok"]
    assert wire.command("reload_config")["data"]["unchanged"] == ["fresh", "keep"]
    assert len(wire.snapshots()) == 2   # nothing added or removed: no snapshot


def test_an_invalid_file_answers_invalid_config_with_the_cli_text(server_at, tmp_path):
    s = server_at({"a": daemon()})
    wire = Wire(s.url)
    s.rewrite({"a": daemon(dependsOn=["a2"])})
    cli = subprocess.run([PY, os.path.join(ROOT, "flowlayer.py"), "-c", s.path],
                         capture_output=True, text=True, timeout=30)
    assert cli.returncode == 2
    result = wire.command("reload_config")
    assert result == {"ok": False, "error": {"code": "invalid_config",
                                             "message": cli.stderr.strip()}}
    assert wire.command("get_snapshot")["data"]["services"] == [{"name": "a", "status": "running"}]


def test_our_client_replaces_its_list_with_a_second_snapshot(server_at):
    s = server_at({"one": daemon(), "two": daemon()})
    client = Client(s.url, token=SESSION_TOKEN)
    client.start()
    try:
        wait_until(lambda: set(client.view().services) == {"one", "two"}, message="first list")
        s.rewrite({"two": daemon(), "three": daemon()})
        reply = client.request("reload_config").wait(30)
        assert reply.ok
        wait_until(lambda: client.view().services == {"three": "running", "two": "running"},
                   message=f"the new list, got {client.view().services}")
    finally:
        client.close()


def test_a_removed_services_history_is_still_served_and_paged(server_at):
    chatty = py_cmd("import time\nfor i in range(300): print(f'line {i}')\ntime.sleep(600)")
    s = server_at({"chatty": {"cmd": chatty}, "keep": daemon()}, logs={"bufferSize": 1000})
    wire = Wire(s.url)
    wait_until(lambda: len(wire.command("get_logs", {"service": "chatty", "limit": 1000})
                           ["data"]["entries"]) >= 300, message="chatty's lines")
    first = wire.command("get_logs", {"service": "chatty", "limit": 50})["data"]["entries"]
    s.rewrite({"keep": daemon()})
    assert wire.command("reload_config")["data"]["removed"] == ["chatty"]
    # paging back from where the client was, after the service is gone
    page = wire.command("get_logs", {"service": "chatty", "limit": 50,
                                     "before_seq": first[0]["seq"]})["data"]["entries"]
    assert len(page) == 50 and page[-1]["seq"] < first[0]["seq"]
    messages = [e["message"] for e in wire.command(
        "get_logs", {"service": "chatty", "limit": 1000})["data"]["entries"]]
    assert "line 0" in messages and "line 299" in messages and "stopping" in messages


def test_log_view_limits_follow_the_new_config(server_at):
    s = server_at({"a": {"cmd": py_cmd("import time\nfor i in range(40): print(i)\n"
                                       "time.sleep(600)")}})
    wire = Wire(s.url)
    wait_until(lambda: len(wire.command("get_logs", {"service": "a"})["data"]["entries"]) >= 40,
               message="a's lines")
    s.rewrite({"a": {"cmd": py_cmd("import time\nfor i in range(40): print(i)\n"
                                   "time.sleep(600)")}}, logView={"maxEntries": 5})
    assert wire.command("reload_config")["ok"]
    assert wire.command("get_logs", {"service": "a"})["data"]["effective_limit"] == 5


def test_sigusr1_reloads_and_prints_reload_lines_and_echoes_new_names(server_at):
    s = server_at({"a": daemon()})
    s.rewrite({"a": daemon(), "a-much-longer-name": {"cmd": py_cmd("print('hello')")}})
    s.proc.proc.send_signal(signal.SIGUSR1)
    s.proc.wait_line("[flowlayer] reload: added a-much-longer-name")
    s.proc.wait_line("[flowlayer] reload: 1 unchanged")
    assert s.proc.wait_line("a-much-longer-name | hello").startswith("a-much-longer-name |")
    s.rewrite({"a": "not an object"})
    s.proc.proc.send_signal(signal.SIGUSR1)
    assert "Error: " in s.proc.wait_line("[flowlayer] reload: refused, nothing changed: Error: ")


def listed(screen):
    """The service names of the TUI's services panel."""
    return [m.group(1) for m in re.finditer(r"^│[> ] ([\w-]+) +\S", screen, re.M)
            if m.group(1) != "all"]


def test_the_tui_r_key_reloads_shows_the_outcome_and_the_new_list(tmp_path):
    from tui_helpers import Server as TuiServer, Tui
    port = free_port()
    top = {"session": {"bind": f"127.0.0.1:{port}", "token": SESSION_TOKEN}}
    path = write_config(tmp_path, {"services": {"before": daemon()}, **top})
    server = TuiServer(path, f"127.0.0.1:{port}", SESSION_TOKEN).start()
    t = Tui(["-config", path])
    try:
        t.wait_for("Connected")
        t.wait_for(lambda s: listed(s) == ["before"])
        t.send("/before\r")   # the selected service is the one that goes
        t.wait_for("Logs: before")
        write_config(tmp_path, {"services": {"after": daemon()}, **top})
        t.send("R")
        t.wait_for("reload_config: ok")
        t.wait_for("* stopping")   # the removed service's history is still on screen
        t.send("\x1b")             # clear the services filter
        t.wait_for(lambda s: listed(s) == ["after"])
        write_config(tmp_path, {"services": {"after": "oops"}, **top})
        t.send("R")
        t.wait_for("invalid_config: Error: ")
    finally:
        t.close()
        server.stop()


def test_paging_a_removed_service_past_memory_reads_its_file_and_new_services_get_files(
        server_at, tmp_path):
    chatty = py_cmd("import time\nfor i in range(300): print(f'line {i}')\ntime.sleep(600)")
    logs = {"bufferSize": 100, "dir": str(tmp_path / "logs")}
    s = server_at({"chatty": {"cmd": chatty}}, logs=logs)
    wire = Wire(s.url)
    wait_until(lambda: wire.command("get_logs", {"service": "chatty"})["data"]["entries"][-1:]
               and wire.command("get_logs", {"service": "chatty"})["data"]["entries"][-1]
               ["message"] == "line 299", message="chatty's last line")
    s.rewrite({"fresh": {"cmd": py_cmd("print('fresh line')")}}, logs=logs)
    assert wire.command("reload_config")["data"]["removed"] == ["chatty"]
    seq = wire.command("get_logs", {"service": "chatty"})["data"]["entries"][0]["seq"]
    older = []
    while True:
        page = wire.command("get_logs", {"service": "chatty", "limit": 64, "before_seq": seq})
        entries = page["data"]["entries"]
        if not entries:
            break
        older = entries + older
        seq = entries[0]["seq"]
    assert [e["message"] for e in older if e["message"].startswith("line ")][:1] == ["line 0"]
    wait_until(lambda: os.path.exists(tmp_path / "logs" / "fresh.jsonl")
               and "fresh line" in (tmp_path / "logs" / "fresh.jsonl").read_text(),
               message="fresh.jsonl")


def test_sigterm_during_a_reload_shuts_down_cleanly_with_nothing_left(server_at, tmp_path):
    marker = f"RELOAD_SHUTDOWN_{os.getpid()}"
    from conftest import pids_with_marker
    slow = {"cmd": py_cmd(SLOW_STOP), "env": {"V": "1", marker: "1"}}
    s = server_at({"slow": slow, "other": {**daemon(), "env": {marker: "1"}}})
    wire = Wire(s.url)
    s.proc.wait_line("slow  | pid ")   # its SIGTERM handler is in place (names padded to 5)
    s.rewrite({"slow": {**slow, "env": {"V": "2", marker: "1"}},
               "new": {**daemon(), "env": {marker: "1"}}})
    wire.ws.send(json.dumps({"type": "command", "id": "r", "name": "reload_config"}))
    wire.wait_event(lambda name, p: name == "service_status" and p["service"] == "slow"
                    and p["status"] == "stopping")
    assert s.proc.stop() == 0
    assert not any("Traceback" in line for line in s.proc.lines), s.proc.lines
    assert pids_with_marker(marker) == []


def test_an_environment_built_differently_counts_as_changed(reloadable, monkeypatch):
    """What the environment reads besides the entry (an envFile's contents) is compared
    on what the service would get now against what it runs with."""
    r = reloadable({"a": daemon(), "b": daemon()}).boot()
    first = r.pid("a")
    plain = runtime_module.service_env
    monkeypatch.setattr(runtime_module, "service_env",
                        lambda cfg: {**plain(cfg), "EXTRA": "x"} if cfg.name == "a" else plain(cfg))
    outcome = r.reload()
    assert outcome.data["changed"] == ["a"] and outcome.data["unchanged"] == ["b"]
    assert r.pid("a", 2) != first and not alive(first)
