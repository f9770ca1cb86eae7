"""The terminal client, driven in a real pseudo-terminal against a real server (and a fake
V1 one), its screen read with pyte; plus its command line."""
import datetime
import os
import queue
import re
import signal
import subprocess
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import PY, ROOT, free_port, wait_until, write_config
from fake_v1_server import WITH_GET_SERVICES, FakeV1Server
from lib import tui_cli
from lib.entry import LogEntry, clock_time
from lib.log_feed import LogBuffer
from lib.tui_app import (HELP_KEYS, LogView, details_lines, pick_hints,
                         scroll_position, service_actions, wrap)
from tui_helpers import Server, Tui, stack_config

TOKEN = "tui-test-token"
LOG_ROW = re.compile(r"(\d\d:\d\d:\d\d\.\d{3}) +(?:([\w.-]+) +)?([|!*]) (.*?) *│?$")


def start_stack(directory):
    port = free_port()
    config = stack_config(port, TOKEN, os.path.join(str(directory), "logs"), free_port())
    return Server(write_config(directory, config), f"127.0.0.1:{port}", TOKEN).start()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = start_stack(tmp_path_factory.mktemp("stack"))
    yield running
    running.stop()


@pytest.fixture
def tui():
    started = []

    def start(*args, **options):
        started.append(Tui(list(args), **options))
        return started[-1]

    yield start
    for t in started:
        t.close()


def connect(tui, server, *args, **options):
    t = tui("-config", server.config_path, *args, **options)
    t.wait_for("Connected")
    return t


def log_rows(t):
    """(service, mark, message) of every log row on the screen, top to bottom."""
    rows = []
    for line in t.text().splitlines():
        match = LOG_ROW.search(line)
        if match:
            rows.append((match.group(2), match.group(3), match.group(4)))
    return rows


def messages(t):
    return [message for _, _, message in log_rows(t)]


def service_row(t, name):
    """The services panel row of `name`: (y, text)."""
    for y, line in enumerate(t.text().splitlines()):
        if re.match(rf"│[> ] {re.escape(name)} ", line):
            return y, line[:line.index("│", 1)]
    return None, ""


def test_screen_shows_services_states_and_live_lines(server, tui):
    t = connect(tui, server)
    t.wait_for(lambda s: "ready" in service_row(t, "web")[1])
    assert "running" in service_row(t, "ticker")[1]
    assert "stopped" in service_row(t, "job")[1]
    assert "> all logs" in t.text()
    assert "flowlayer-client-tui" in t.line(0) and "s start all" in t.line(0)
    seen = wait_until(lambda: [m for m in messages(t) if m.startswith("tick ")], message="ticks")
    first = int(seen[-1].split()[1])
    t.wait_for(lambda s: f"tick {first + 2}" in s)
    t.wait_for(lambda s: ("ticker", "!") in [(svc, mark) for svc, mark, _ in log_rows(t)])
    assert t.find("follow")


def test_stderr_and_lifecycle_lines_are_marked(server, tui):
    t = connect(tui, server)
    t.send("/job\r")  # the filter selects the first matching service
    t.wait_for("Logs: job")
    t.wait_for(lambda s: ("*", "exited (code 0)") in [(m, x) for _, m, x in log_rows(t)])
    assert (None, "|", "job done") in log_rows(t)
    t.send("\x1b/ticker\r")
    t.wait_for("Logs: ticker")

    def red_warning(_):
        found = t.find("! warn")
        return found and t.cell(found[0], found[1] + 2).fg == "red"

    t.wait_for(red_warning)


def test_s_and_x_change_the_service_state_on_the_server(server, tui):
    t = connect(tui, server)
    t.send("/idle\r")
    t.wait_for("Logs: idle")
    t.wait_for(lambda s: "running" in service_row(t, "idle")[1] and "x stop" in t.line(0))
    t.send("x")
    t.wait_for(lambda s: "stopped" in service_row(t, "idle")[1])
    t.wait_for("stop_service idle: ok")
    assert server.statuses()["idle"] == "stopped"
    assert "s start" in t.line(0)
    t.send("s")
    t.wait_for(lambda s: "running" in service_row(t, "idle")[1])
    t.wait_for("start_service idle: ok")
    assert server.statuses()["idle"] == "running"
    t.wait_for(lambda s: messages(t).count("idle up") >= 2)


def test_filter_narrows_both_panels(server, tui):
    t = connect(tui, server)
    t.send("/tick")
    t.wait_for("Filter services: tick_")
    t.wait_for(lambda s: service_row(t, "ticker")[0] and not service_row(t, "web")[0])
    assert service_row(t, "ticker")[1].startswith("│> ")  # selected, as the only match
    t.send("\r\t/warn\r")
    t.wait_for("Logs: ticker /warn")
    t.wait_for(lambda s: len(messages(t)) >= 2)
    assert all(m.startswith("warn ") for m in messages(t))
    t.send("\x1b")  # esc clears the focused panel's filter
    t.wait_for(lambda s: any(m.startswith("tick ") for m in messages(t)))
    assert not service_row(t, "web")[0]  # the services filter stays


def test_i_shows_the_connection_info(server, tui):
    t = connect(tui, server)
    t.send("i")
    t.wait_for("Connection")
    text = t.text()
    assert f"ws://{server.addr}/ws" in text and TOKEN in text
    assert re.search(r"Server +flowlayer", text) and re.search(r"Protocol +1\b", text)
    assert re.search(r"State +Connected", text)
    t.send("\x1b")
    t.wait_for(lambda s: TOKEN not in s)


def test_older_history_is_paged_with_before_seq(server, tui):
    t = connect(tui, server)
    t.send("/burst\r")
    t.wait_for("burst 099")
    t.wait_for("history truncated")
    assert "burst 059" not in t.text()  # 40 entries held: 060..099
    t.send("\t")
    t.send("g")
    t.wait_for("loaded 20 older entries")
    wait_until(lambda: t.send("g") or "burst 000" in t.text(), 20, interval=0.2,
               message="the first burst line after paging back")
    assert messages(t)[:3] == ["burst 000", "burst 001", "burst 002"]
    t.wait_for(lambda s: "history truncated" not in s and "paused" in s)
    t.send("g")
    t.wait_for("no older logs available")
    assert re.search(r"lines 1-26 of 40 \(65%\) paused", t.text())  # 40 held at a time
    t.send("G")
    t.wait_for(lambda s: "burst 099" in s and "follow" in s)


def test_z_zooms_the_logs_to_clean_full_width_lines(server, tui):
    t = connect(tui, server, cols=90, rows=24)
    t.wait_for(lambda s: len(messages(t)) > 5)
    t.send("z")
    t.wait_for(lambda s: "Services" not in s)
    body = t.text().splitlines()[1:-1]
    assert not any("│" in line or "─" in line for line in body)
    assert all(re.match(r"\d\d:\d\d:\d\d\.\d{3} |  |$", line) for line in body)
    t.send("z")
    t.wait_for("Services")


def test_no_color_uses_attributes_only(server, tui):
    t = connect(tui, server, env={"NO_COLOR": "1"})
    t.wait_for(lambda s: "ready" in service_row(t, "web")[1])
    t.wait_for(lambda s: "! warn" in s)
    y, line = service_row(t, "web")
    ready = t.cell(y, line.index("ready"))
    assert ready.bold and ready.fg == "default"
    with t._lock:
        colours = {(c.fg, c.bg) for row in t.screen.buffer.values() for c in row.values()}
    assert colours == {("default", "default")}


def test_colours_per_status(server, tui):
    t = connect(tui, server)
    t.wait_for(lambda s: "ready" in service_row(t, "web")[1])
    for name, status, colour in (("web", "ready", "green"), ("ticker", "running", "blue")):
        y, line = service_row(t, name)
        assert t.cell(y, line.index(status)).fg == colour


def test_resize_redraws_the_layout(server, tui):
    t = connect(tui, server, cols=100, rows=30)
    t.wait_for(lambda s: len(messages(t)) > 5)
    t.resize(80, 24)
    t.wait_for(lambda s: s.splitlines()[22].startswith("└") and s.splitlines()[22].endswith("┘"))
    assert "follow" in t.line(23)
    t.resize(120, 40)
    t.wait_for(lambda s: s.splitlines()[38].endswith("┘") and len(messages(t)) > 25)


def test_quit_keys_and_signals_restore_the_terminal(server, tui):
    for stop in ("q", "\x03", signal.SIGTERM):
        t = connect(tui, server)
        assert not t.echoes()
        if isinstance(stop, str):
            t.send(stop)
        else:
            os.kill(t.pid, stop)
        assert t.wait_exit() == 0
        assert t.echoes()
        tail = bytes(t.raw[t.raw.rfind(b"Connected"):])
        assert b"\x1b[?1049l" in tail  # left the alternate screen
        assert b"Traceback" not in t.raw


def test_a_crash_restores_the_terminal_before_the_traceback(tmp_path, tui):
    crashing = tmp_path / "crashing_tui.py"
    crashing.write_text(
        "import sys\n"
        f"sys.path.insert(0, {ROOT!r})\n"
        "from lib import tui_app, tui_cli\n"
        "def explode(self, key):\n"
        "    raise RuntimeError('boom')\n"
        "tui_app.App.handle = explode\n"
        "sys.exit(tui_cli.main(sys.argv[1:]))\n")
    t = tui("-addr", f"127.0.0.1:{free_port()}", program=str(crashing))
    t.wait_for("Unreachable")
    assert not t.echoes()
    t.send("j")
    assert t.wait_exit() == 1
    assert t.echoes()
    raw = bytes(t.raw)
    assert raw.rfind(b"\x1b[?1049l") < raw.find(b"RuntimeError: boom")


def test_reconnect_after_a_server_restart_has_no_gap_or_duplicate(tmp_path, tui):
    server = start_stack(tmp_path)
    try:
        t = connect(tui, server)
        t.send("/counter\r")
        t.wait_for("Logs: counter")
        t.wait_for(lambda s: sum("count" in m for m in messages(t)) == 5)
        first_pid = [m for m in messages(t) if "count" in m][0].split()[0]
        server.stop()
        t.wait_for("Reconnecting")
        server.start()
        t.wait_for("Connected")
        t.wait_for(lambda s: sum("count" in m for m in messages(t)) == 10)
        counts = [m for m in messages(t) if "count" in m]
        second_pid = counts[-1].split()[0]
        assert second_pid != first_pid
        assert counts == ([f"{first_pid} count {i}" for i in range(5)]
                          + [f"{second_pid} count {i}" for i in range(5)])
        lines = messages(t)
        assert len(lines) == len(set(lines)) and "stopping" in lines
    finally:
        server.stop()


@pytest.mark.parametrize("args, label", [((), "Unauthorized (401)"),
                                         (("-token", "wrong"), "Forbidden (403)")])
def test_bad_tokens_are_shown(server, tui, args, label):
    t = tui("-addr", server.addr, *args)
    t.wait_for(label)
    t.wait_for("retry in")


def test_nothing_listening_is_unreachable_and_retried(tui):
    t = tui("-addr", f"127.0.0.1:{free_port()}")
    t.wait_for("Unreachable, retry in")
    t.wait_for("connection refused")


def test_works_against_another_v1_server(tui):
    fake = FakeV1Server(token="fake", services={"api": "running", "db": "ready"})
    try:
        t = tui("-addr", fake.addr, "-token", "fake", cols=80, rows=24)
        t.wait_for("Connected")
        fake.add_log("api", "hello from a fake server")
        t.wait_for("hello from a fake server")
        t.send("j")
        t.wait_for("Logs: api")
        held = queue.Queue()
        fake.handler = lambda conn, m: m["name"] == "stop_service" and (held.put((conn, m)) or True)
        t.send("x")
        t.wait_for(lambda s: service_row(t, "api")[1].rstrip().endswith("*") and "busy: stop" in s)
        t.send("s")  # busy: nothing is sent
        t.wait_for("restart_service api: busy with stop_service")
        conn, message = held.get(timeout=10)
        fake.set_status("api", "stopped")
        fake.reply(conn, message)
        t.wait_for("stop_service api: ok")
        t.wait_for(lambda s: "stopped" in service_row(t, "api")[1])
        assert not service_row(t, "api")[1].rstrip().endswith("*")
        assert [m["name"] for _, m in list(fake.commands.queue)].count("start_service") == 0
    finally:
        fake.close()


# ---- command line ---------------------------------------------------------------------------

def run_cli(*args, **options):
    return subprocess.run([PY, os.path.join(ROOT, "tui.py"), *args], capture_output=True,
                          text=True, timeout=30, **options)


def test_version_and_help():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout == f"flowlayer-client-tui {tui_cli.__version__}\n"
    result = run_cli("-h")
    assert result.returncode == 0 and "-config PATH" in result.stdout


@pytest.mark.parametrize("args, message", [
    (("-v",), "flag provided but not defined: -v"),
    (("extra",), "unknown command: extra"),
    (("-addr",), "flag needs an argument"),
    (("-addr", "nowhere"), "-addr: invalid address"),
])
def test_usage_errors_print_the_help_and_exit_2(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    assert result.stderr.startswith(f"Error: {message}") and "Usage:" in result.stderr


def test_a_bad_config_file_is_an_error_without_traceback(tmp_path):
    bad = write_config(tmp_path, "{ session: ", name="bad.jsonc")
    for path in (bad, str(tmp_path / "missing.jsonc")):
        result = run_cli("-config", path)
        assert result.returncode == 2 and result.stderr.startswith("Error: ")
        assert "Traceback" not in result.stderr and "Usage:" not in result.stderr


def test_config_addr_bind_and_flag_precedence(tmp_path):
    client_cfg = write_config(tmp_path, {"session": {"addr": "10.0.0.5:7000", "token": "t1"}},
                              name="client.jsonc")
    server_cfg = write_config(tmp_path, {"session": {"bind": ":7001", "token": "t2"},
                                         "services": {"a": {"cmd": "true"}}}, name="server.jsonc")
    v6_cfg = write_config(tmp_path, {"session": {"bind": "[::]:7002"}}, name="v6.jsonc")
    assert tui_cli.resolve({}) == ("ws://127.0.0.1:6999/ws", None)
    assert tui_cli.resolve({"config": client_cfg}) == ("ws://10.0.0.5:7000/ws", "t1")
    assert tui_cli.resolve({"config": server_cfg}) == ("ws://127.0.0.1:7001/ws", "t2")
    assert tui_cli.resolve({"config": v6_cfg}) == ("ws://[::1]:7002/ws", None)
    assert tui_cli.resolve({"config": server_cfg, "addr": "127.0.0.2:9", "token": "t3"}) == (
        "ws://127.0.0.2:9/ws", "t3")


def test_no_terminal_is_an_error(tmp_path):
    result = run_cli("-addr", "127.0.0.1:1", stdin=subprocess.DEVNULL)
    assert result.returncode == 1 and "needs a terminal" in result.stderr


# ---- pure parts of the screen ------------------------------------------------------------------

def test_text_is_wrapped_by_cells():
    assert wrap("abcdef", 4) == ["abcd", "ef"]
    assert wrap("job done in 330ms", 10) == ["job done ", "in 330ms"]
    assert wrap("a verylongword", 6) == ["a very", "longwo", "rd"]
    assert wrap("日本語ab", 4) == ["日本", "語ab"]
    assert wrap("", 5) == [""]


def test_times_show_local_milliseconds():
    moment = datetime.datetime(2026, 3, 4, 10, 30, 0, 123456).astimezone()
    assert clock_time(moment.isoformat(timespec="milliseconds")) == "10:30:00.123"
    utc = moment.astimezone(datetime.timezone.utc)
    assert clock_time(utc.strftime("%Y-%m-%dT%H:%M:%S.123456789Z")) == "10:30:00.123"
    assert clock_time("yesterday") == "--:--:--.---"


def test_actions_follow_the_status():
    assert service_actions("ready") == {"s": "restart_service", "x": "stop_service"}
    assert service_actions("failed") == {"s": "start_service"}
    assert service_actions("starting") == {"x": "stop_service"}
    assert service_actions("stopping") == {}


STYLES = types.SimpleNamespace(dim=0, stream=lambda stream: 0,
                               palette=types.SimpleNamespace(attr=lambda style, base=0: base))


def entry(seq, message=None):
    return LogEntry(seq, "api", "running", "stdout", message or f"line {seq}",
                    "2026-01-01T00:00:00.000")  # no offset: shown as is, whatever the TZ


def view_of(buffer, width=40, height=5, needle=""):
    view = LogView()
    view.set_layout(width, 0)
    view.sync(buffer.lines(), needle)
    return view


def shown(view, height=5):
    rows, _ = view.visible(height, STYLES)
    return ["".join(text for text, _ in row).strip() for row in rows]


def test_the_view_holds_still_while_lines_arrive_and_follows_again_at_the_bottom():
    buffer = LogBuffer()
    buffer.add([entry(s) for s in range(1, 21)])
    view = view_of(buffer)
    assert shown(view)[-1].endswith("line 20")
    view.scroll(-3, 5)
    before = shown(view)
    assert before[-1].endswith("line 17") and not view.follow
    buffer.add([entry(s) for s in range(21, 30)])
    view.sync(buffer.lines(), "")
    assert shown(view) == before
    view.scroll(+100, 5)
    assert view.follow and shown(view)[-1].endswith("line 29")


def test_a_long_line_scrolls_row_by_row_with_an_indent():
    buffer = LogBuffer()
    buffer.add([entry(1, "x" * 50), entry(2)])
    view = view_of(buffer, width=40)
    view.go_top()
    rows = shown(view, 2)
    assert rows[0] == "00:00:00.000 | " + "x" * 25 and rows[1] == "x" * 25
    view.scroll(1, 2)
    assert shown(view, 2) == ["x" * 25, "00:00:00.000 | line 2"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 12), st.booleans()), max_size=25),
       st.sampled_from(["", "line 1", "7"]), st.integers(3, 30))
def test_incremental_sync_equals_a_rebuild(batches, needle, limit):
    buffer, view, seq = LogBuffer(), LogView(), 0
    view.set_layout(40, 0)
    buffer.set_limit(limit)
    for size, late in batches:
        new = [entry(seq + i + 1) for i in range(size)]
        seq += size
        buffer.add(new[::-1] if late else new)
        view.sync(buffer.lines(), needle)
        assert view.items == view_of(buffer, needle=needle).items


def test_terminals_without_colour_or_cursor_addressing(server, tui):
    t = connect(tui, server, env={"TERM": "vt100"})   # no colours: attributes only
    t.wait_for(lambda s: "ready" in service_row(t, "web")[1])
    t.send("q")
    assert t.wait_exit() == 0
    dumb = tui("-config", server.config_path, env={"TERM": "dumb"})
    assert dumb.wait_exit() == 1
    assert b"Error: this terminal (TERM=dumb) cannot move the cursor" in bytes(dumb.raw)
    assert b"Traceback" not in bytes(dumb.raw)


# ---- help, details, confirmation, colours, header and footer ---------------------------------

@pytest.fixture
def fake():
    servers = []

    def start(**options):
        servers.append(FakeV1Server(token="fake", **options))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def connect_fake(tui, server, **options):
    t = tui("-addr", server.addr, "-token", "fake", **options)
    t.wait_for("Connected")
    return t


@pytest.mark.parametrize("key", ["?", "h", "\x1bOP"])  # F1 as xterm sends it
def test_help_lists_every_key_and_any_key_closes_it(server, tui, key):
    t = connect(tui, server)
    t.send(key)
    t.wait_for("any key closes")
    text = t.text()
    for keys, meaning in HELP_KEYS:
        assert re.search(rf"{re.escape(keys)} +{re.escape(meaning.split()[0])}", text), keys
    t.send("j")  # closes the help, moves nothing
    t.wait_for(lambda s: "any key closes" not in s)
    assert "> all logs" in t.text()


def test_details_show_the_fields_of_get_services_reason_first_and_live(fake, tui):
    server = fake(services={"api": "failed", "db": "ready"},
                  hello={"protocol_version": 1, "server": "fake-v2", "capabilities": WITH_GET_SERVICES})
    server.details["api"] = {"kind": "daemon", "probe": "http", "port": 8080, "dependsOn": ["db"],
                             "satisfied": False, "exit_code": 3, "cmd": ["node", "api.js"],
                             "reason": "exited with code 3 before it was ready",
                             "since": "2026-01-01T00:00:00.000"}
    t = connect_fake(tui, server, cols=100, rows=34)
    t.send("j")
    t.wait_for("Logs: api")
    t.send("i")
    t.wait_for("Details: api")
    t.wait_for("exited with code 3")
    rows = [line.strip("│ ") for line in t.text().splitlines()]
    reason = next(i for i, row in enumerate(rows) if row.startswith("Reason "))
    assert reason < next(i for i, row in enumerate(rows) if row.startswith("Name "))
    for label, value in (("Status", "failed"), ("Kind", "daemon"), ("Probe", "http"),
                         ("Port", "8080"), ("Depends on", "db"), ("Satisfied", "no"),
                         ("PID", "-"), ("Exit code", "3"), ("Since", "00:00:00.000"),
                         ("Command", "node api.js"), ("Protocol", "1"), ("Server", "fake-v2")):
        assert any(re.match(rf"{label} +{re.escape(value)}$", row) for row in rows), label
    server.set_status("api", "running", pid=4242, exit_code=None, reason=None, satisfied=True)
    t.wait_for(lambda s: re.search(r"PID +4242", s) and "Reason" not in s)
    assert re.search(r"Satisfied +yes", t.text())
    t.send("\x1b")
    t.wait_for(lambda s: "Details: api" not in s)
    asked = [m["name"] for _, m in list(server.commands.queue)].count("get_services")
    server.set_status("api", "stopped")  # closed: no more requests
    t.wait_for(lambda s: "stopped" in service_row(t, "api")[1])
    assert [m["name"] for _, m in list(server.commands.queue)].count("get_services") == asked


def test_details_from_a_v1_server_say_what_the_client_knows(fake, tui):
    server = fake(services={"api": "running"})
    t = connect_fake(tui, server)
    t.send("j")
    t.wait_for("Logs: api")
    t.send("i")
    t.wait_for("the server does not report details")
    assert re.search(r"Status +running", t.text()) and re.search(r"Protocol +1", t.text())
    assert "get_services" not in [m["name"] for _, m in list(server.commands.queue)]


def test_stop_all_asks_first_and_only_y_confirms(fake, tui):
    server = fake()
    t = connect_fake(tui, server)
    t.send("x")
    t.wait_for("Stop all services? y confirms, any other key cancels")
    t.send("n")
    t.wait_for("stop all: cancelled")
    t.send("x")
    t.wait_for("Stop all services?")
    t.send("y")
    t.wait_for(lambda s: "stop_all" in [m["name"] for _, m in list(server.commands.queue)])
    t.wait_for(lambda s: "stop_all" in s and ": ok" in s)
    assert [m["name"] for _, m in list(server.commands.queue)].count("stop_all") == 1


def cell_at(t, needle, offset=0):
    y, x = t.find(needle)
    return t.cell(y, x + offset)


def test_service_colours_are_rendered_and_filters_ignore_them(fake, tui):
    server = fake(services={"api": "running"})
    t = connect_fake(tui, server)
    server.add_log("api", "\x1b[32mgreen\x1b[0m plain \x1b[1;31mbold red\x1b[0m \x1b[4munder\x1b[24m")
    server.add_log("api", "\x1b[38;5;208morange256\x1b[0m \x1b[38;2;0;0;255mtruecolour\x1b[0m \x1b]0;title\x07end")
    server.add_log("api", " \t \x1b[0m ")  # shows nothing: no row
    server.add_log("api", "progress 10%\rprogress 100%")
    server.add_log("api", "a\tb")
    server.add_log("api", "last line")
    t.wait_for("last line")
    assert cell_at(t, "green").fg == "green" and cell_at(t, "plain").fg == "default"
    red = cell_at(t, "bold red")
    assert red.fg == "red" and red.bold and cell_at(t, "under").underscore
    assert cell_at(t, "orange256").fg not in ("default", "red", "yellow")
    assert cell_at(t, "truecolour").fg not in ("default", "green")
    assert "title" not in t.text() and "truecolour end" in t.text()
    assert "progress 100%" in t.text() and "progress 10%" not in t.text()
    rows = messages(t)
    y, x = t.find("| a")
    assert t.line(y)[x + 2:x + 11] == "a       b"  # the tab stops at column 8 of the message
    assert rows[2:] == ["progress 100%", "a       b", "last line"]  # the blank line took no row
    t.send("\t/plain bold\r")
    t.wait_for(lambda s: messages(t) == ["green plain bold red under"])


def test_no_color_keeps_the_attributes_of_service_output(fake, tui):
    server = fake(services={"api": "running"})
    t = connect_fake(tui, server, env={"NO_COLOR": "1"})
    server.add_log("api", "\x1b[1;31mbold red\x1b[0m plain")
    t.wait_for("bold red plain")
    assert cell_at(t, "bold red").bold and cell_at(t, "bold red").fg == "default"
    assert not cell_at(t, "plain").bold


def test_header_keeps_the_most_useful_keys_at_80_and_60_columns(fake, tui):
    server = fake(services={"api": "running"})
    t = connect_fake(tui, server, cols=80, rows=24)
    for hint in ("flowlayer", "Connected", "s start all", "x stop all", "? help", "i info",
                 "q quit"):
        assert hint in t.line(0), hint
    t.send("j")
    t.wait_for(lambda s: "s restart" in t.line(0))
    assert all(hint in t.line(0) for hint in ("x stop", "? help", "i info", "q quit"))
    t.resize(60, 24)
    t.wait_for(lambda s: len(t.line(0).rstrip()) <= 60 and all(
        hint in t.line(0) for hint in ("s restart", "Connected", "x stop", "? help")))
    t.send("k")
    t.wait_for(lambda s: all(hint in t.line(0) for hint in ("x stop all", "? help", "Connected")))


def test_footer_shows_the_scroll_range(fake, tui):
    server = fake(services={"api": "running"})
    for i in range(300):
        server.add_log("api", f"entry {i}", broadcast=False)
    t = connect_fake(tui, server, cols=100, rows=30)
    t.wait_for(lambda s: re.search(r"lines \d+-300 of 300 \(100%\) follow", s))
    t.send("\tg")
    t.wait_for(lambda s: re.search(r"lines 1-\d+ of 300 \(\d%\) paused", s))
    t.wait_for("no older logs available")  # all 300 came in the first page
    t.resize(50, 30)  # the short form leaves the notice its room
    t.wait_for(lambda s: re.search(r"no older logs available +1-\d+/300 \d% paused $", t.line(29)))


def test_pure_parts_of_help_header_details_and_footer():
    assert scroll_position(119, 149, 5000, False) == "lines 120-150 of 5000 (3%) paused"
    assert scroll_position(0, 0, 0, True) == "no lines follow"
    assert scroll_position(119, 149, 5000, True, compact=True) == "120-150/5000 3% follow"
    actions = ["s start all", "x stop all"]
    assert pick_hints(actions, 200).endswith("? help  q quit")
    assert pick_hints(actions, 31) == "s start all  x stop all  ? help"
    assert pick_hints(actions, 10) == ""
    rows = details_lines("api", "failed", {"reason": "boom", "cmd": ["a", "b"]}, True)
    assert rows[0] == ("Reason", "boom") and ("Command", "a b") in rows and ("PID", "-") in rows
    assert details_lines("api", "ready", None, False)[:2] == [("Name", "api"), ("Status", "ready")]
