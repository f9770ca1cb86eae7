"""lib.config: JSONC parsing, strict validation (SPEC 2), error messages with positions."""
import ast
import copy
import dataclasses
import json
import os
import re
import subprocess
import sys
import threading

import json5
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import PY, ROOT, write_config
from lib import config, jsonc
from lib.config import ConfigError, ReadySpec, load, parse_bind, read_jsonc

MINIMAL = {"services": {"api": {"cmd": "python3 -c pass"}}}


def expect_error(tmp_path, data):
    """The ConfigError message that loading `data` (a dict or raw text) produces."""
    path = write_config(tmp_path, data)
    with pytest.raises(ConfigError) as caught:
        load(path)
    return str(caught.value)


def position(text, needle, occurrence=1):
    """(line, column) of the `occurrence`-th `needle` in `text`, both from 1."""
    offset = -1
    for _ in range(occurrence):
        offset = text.index(needle, offset + 1)
    line = text.count("\n", 0, offset) + 1
    return line, offset - text.rfind("\n", 0, offset)


def with_change(change):
    """MINIMAL with `change(data)` applied to a deep copy."""
    data = copy.deepcopy(MINIMAL)
    change(data)
    return data


def api(**fields):
    """A change that sets fields of service `api`."""
    return lambda data: data["services"]["api"].update(fields)


def top(**fields):
    return lambda data: data.update(fields)


# Accepted configs ----------------------------------------------------------------------------


def test_minimal_config_and_defaults(tmp_path):
    cfg = load(write_config(tmp_path, MINIMAL))
    assert cfg.path == os.path.join(str(tmp_path), "flowlayer.jsonc")
    assert (cfg.bind, cfg.token, cfg.logs_dir) == (None, None, None)
    assert (cfg.buffer_size, cfg.log_view_max, cfg.log_view_all_max) == (5000, None, None)
    assert cfg.waves == (("api",),)
    service = cfg.services["api"]
    assert service == config.ServiceConfig(
        name="api", cmd=("python3", "-c", "pass"), stop_cmd=None, kind="daemon", port=0, ready=None,
        depends_on=(), env={}, cwd=None, log_view_max=None)


def test_full_config(tmp_path):
    (tmp_path / "work").mkdir()
    text = """// a full config
{
  "session": { "bind": "127.0.0.1:7000", "token": "secret", "addr": "ignored:1", },
  "logs": { "dir": "logs", "bufferSize": 100 },
  "logView": { "maxEntries": 50, "all": { "maxEntries": 80 } },
  "services": {
    "web": {
      "cmd": ["python3", "-m", "http.server", "8000"],
      "stopCmd": "echo   bye",
      "port": 8000,
      "ready": { "type": "http", "url": "http://127.0.0.1:8000/" },
      "dependsOn": ["db", "cache", "db"],
      "env": { "MODE": "dev", "EMPTY": "" },
      "logView": { "maxEntries": 20 },
      "cwd": "work",
    },
    "db": { "cmd": "db", "port": 5432, "ready": { "type": "tcp" } },
    "cache": { "cmd": "cache", "ready": { "type": "tcp", "port": 6379 }, "kind": "daemon" },
    "migrate": { "cmd": "migrate", "kind": "oneshot", "dependsOn": ["db"], "ready": { "type": "none" } },
  },
}
"""
    cfg = load(write_config(tmp_path, text))
    assert (cfg.bind, cfg.token) == (("127.0.0.1", 7000), "secret")
    assert cfg.logs_dir == os.path.join(str(tmp_path), "logs")
    assert (cfg.buffer_size, cfg.log_view_max, cfg.log_view_all_max) == (100, 50, 80)
    assert list(cfg.services) == ["cache", "db", "migrate", "web"]
    assert cfg.waves == (("cache", "db"), ("migrate", "web"))
    web = cfg.services["web"]
    assert web.cmd == ("python3", "-m", "http.server", "8000")
    assert web.stop_cmd == ("echo", "bye")
    assert web.ready == ReadySpec("http", "http://127.0.0.1:8000/", 0)
    assert web.depends_on == ("cache", "db")
    assert dict(web.env) == {"MODE": "dev", "EMPTY": ""}
    assert web.cwd == os.path.join(str(tmp_path), "work")
    assert web.log_view_max == 20
    assert cfg.services["db"].ready == ReadySpec("tcp", None, 5432)  # tcp port defaults to the service port
    assert cfg.services["cache"].ready == ReadySpec("tcp", None, 6379)
    assert cfg.services["migrate"].ready is None
    assert cfg.services["migrate"].kind == "oneshot"


def test_ready_port_overrides_service_port(tmp_path):
    cfg = load(write_config(tmp_path, with_change(api(port=3000, ready={"type": "tcp", "port": 3001}))))
    assert cfg.services["api"].ready.port == 3001


def test_relative_paths_are_relative_to_the_config_dir_not_the_cwd(tmp_path, monkeypatch):
    (tmp_path / "sub" / "work").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path / "sub", with_change(lambda d: (api(cwd="work")(d), top(logs={"dir": "l"})(d))))
    cfg = load(os.path.relpath(path))
    assert cfg.path == path
    assert cfg.services["api"].cwd == str(tmp_path / "sub" / "work")
    assert cfg.logs_dir == str(tmp_path / "sub" / "l")


@pytest.mark.parametrize("bind", [6999, "6999", ":6999", "0.0.0.0:6999", "[::1]:6999", "localhost:1"])
def test_bind_forms_are_accepted(tmp_path, bind):
    assert load(write_config(tmp_path, with_change(top(session={"bind": bind})))).bind == parse_bind(bind)


def test_config_is_frozen(tmp_path):
    cfg = load(write_config(tmp_path, MINIMAL))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.buffer_size = 1
    with pytest.raises(TypeError):
        cfg.services["api"].env["X"] = "1"


# One test per validation rule ------------------------------------------------------------------

RULES = [
    # top level
    (top(extra=1), "extra", 'unknown key "extra"'),
    (lambda d: d.pop("services"), "services", "required"),
    (top(services=[]), "services", "must be an object"),
    (top(services={}), "services", "must define at least one service"),
    # session
    (top(session=[]), "session", "must be an object"),
    (top(session={"bnd": ":1"}), "session.bnd", 'unknown key "bnd" (did you mean "bind"?)'),
    (top(session={"bind": True}), "session.bind", "must be a string or an integer port, got true"),
    (top(session={"bind": 1.5}), "session.bind", "must be a string or an integer port"),
    (top(session={"bind": "nope"}), "session.bind", 'invalid address "nope"'),
    (top(session={"bind": "::1:6999"}), "session.bind", "brackets"),
    (top(session={"bind": 0}), "session.bind", "port must be between 1 and 65535, got 0"),
    (top(session={"bind": "h:65536"}), "session.bind", "port must be between 1 and 65535, got 65536"),
    (top(session={"token": ""}), "session.token", "must not be empty"),
    (top(session={"token": 5}), "session.token", "must be a string, got 5"),
    (top(session={"addr": 5}), "session.addr", "must be a string"),
    # logs
    (top(logs=1), "logs", "must be an object"),
    (top(logs={"dir": ""}), "logs.dir", "must not be empty"),
    (top(logs={"dir": 3}), "logs.dir", "must be a string"),
    (top(logs={"bufferSize": 0}), "logs.bufferSize", "must be > 0, got 0"),
    (top(logs={"bufferSize": True}), "logs.bufferSize", "must be an integer, got true"),
    (top(logs={"bufferSize": 10.0}), "logs.bufferSize", "must be an integer, got 10.0"),
    (top(logs={"bufferSize": "10"}), "logs.bufferSize", 'must be an integer, got "10"'),
    (top(logs={"size": 1}), "logs.size", 'unknown key "size"'),
    # logView
    (top(logView={"maxEntries": 0}), "logView.maxEntries", "must be > 0"),
    (top(logView={"maxEntries": False}), "logView.maxEntries", "must be an integer"),
    (top(logView={"all": 5}), "logView.all", "must be an object"),
    (top(logView={"all": {"maxEntries": -1}}), "logView.all.maxEntries", "must be > 0, got -1"),
    (top(logView={"all": {"max": 1}}), "logView.all.max", 'unknown key "max"'),
    # service names and bodies
    (top(services={"": {"cmd": "x"}}), 'services.""', "must not be empty"),
    (top(services={"a b": {"cmd": "x"}}), "services.a b", "invalid service name"),
    (top(services={"a/b": {"cmd": "x"}}), "services.a/b", "invalid service name"),
    (top(services={"flowlayer": {"cmd": "x"}}), "services.flowlayer", "reserved"),
    (top(services={"api": "python3"}), "services.api", "must be an object"),
    (api(comand="x"), "services.api.comand", 'unknown key "comand" (did you mean "cmd"?)'),
    # cmd and stopCmd
    (lambda d: d["services"]["api"].pop("cmd"), "services.api.cmd", "required"),
    (api(cmd=""), "services.api.cmd", "must not be empty"),
    (api(cmd="   "), "services.api.cmd", "must name a program"),
    (api(cmd=[]), "services.api.cmd", "must not be an empty array"),
    (api(cmd=["python3", 1]), "services.api.cmd[1]", "must be a string, got 1"),
    (api(cmd=["", "x"]), "services.api.cmd[0]", "must not be empty"),
    (api(cmd=42), "services.api.cmd", "must be a string or an array of strings"),
    (api(cmd="a\0b"), "services.api.cmd", "NUL"),
    (api(env={"A": "\ud800"}), "services.api.env.A", "unpaired surrogate"),
    (api(stopCmd=[]), "services.api.stopCmd", "must not be an empty array"),
    (api(stopCmd=" "), "services.api.stopCmd", "must name a program"),
    # kind and port
    (api(kind="worker"), "services.api.kind", 'must be "daemon" or "oneshot", got "worker"'),
    (api(kind=1), "services.api.kind", 'must be "daemon" or "oneshot"'),
    (api(port=-1), "services.api.port", "must be between 0 and 65535, got -1"),
    (api(port=65536), "services.api.port", "must be between 0 and 65535, got 65536"),
    (api(port=True), "services.api.port", "must be an integer, got true"),
    (api(port="80"), "services.api.port", "must be an integer"),
    # ready
    (api(ready="http"), "services.api.ready", "must be an object"),
    (api(ready={}), "services.api.ready.type", "required"),
    (api(ready={"type": "grpc"}), "services.api.ready.type", 'must be "http", "tcp", "exec", "log" or "none", got "grpc"'),
    (api(ready={"type": "http"}), "services.api.ready.url", 'required when type is "http"'),
    (api(ready={"type": "http", "url": "ftp://h/"}), "services.api.ready.url", "http:// or https://"),
    (api(ready={"type": "http", "url": "http://"}), "services.api.ready.url", "with a host"),
    (api(ready={"type": "http", "url": 80}), "services.api.ready.url", "must be a string"),
    (api(ready={"type": "tcp"}), "services.api.ready.port", 'required when type is "tcp" and the service has no port'),
    (api(ready={"type": "tcp", "port": -5}), "services.api.ready.port", "must be between 0 and 65535"),
    (api(ready={"type": "tcp", "port": 1, "url": "http://h/"}), "services.api.ready.url",
     'not allowed when type is "tcp"'),
    (api(ready={"type": "http", "url": "http://h/", "port": 1}), "services.api.ready.port",
     'not allowed when type is "http"'),
    (api(ready={"type": "none", "port": 1}), "services.api.ready.port", 'not allowed when type is "none"'),
    (api(ready={"type": "none", "uri": 1}), "services.api.ready.uri", 'unknown key "uri" (did you mean "url"?)'),
    # dependsOn
    (api(dependsOn="db"), "services.api.dependsOn", "must be an array of service names"),
    (api(dependsOn=[1]), "services.api.dependsOn[0]", "must be a string"),
    (api(dependsOn=[""]), "services.api.dependsOn[0]", "must not be empty"),
    (api(dependsOn=["api"]), "services.api.dependsOn[0]", "cannot depend on itself"),
    (api(dependsOn=["apj"]), "services.api.dependsOn[0]", 'unknown service "apj"'),
    # env
    (api(env=["A=1"]), "services.api.env", "must be an object"),
    (api(env={"PORT": 3000}), "services.api.env.PORT", "must be a string, got 3000"),
    (api(env={"A": None}), "services.api.env.A", "must be a string, got null"),
    (api(env={"A=B": "1"}), "services.api.env.A=B", "invalid variable name"),
    (api(env={"": "1"}), 'services.api.env.""', "invalid variable name"),
    # service logView and cwd
    (api(logView={"maxEntries": 0}), "services.api.logView.maxEntries", "must be > 0"),
    (api(logView={"all": {}}), "services.api.logView.all", 'unknown key "all"'),
    (api(cwd="missing-dir"), "services.api.cwd", "not a directory"),
    (api(cwd=""), "services.api.cwd", "must not be empty"),
    (api(cwd=1), "services.api.cwd", "must be a string"),
    # SPEC 6.1: envFile, stopSignal, stopTimeout
    (api(envFile=""), "services.api.envFile", "must not be empty"),
    (api(envFile=[1]), "services.api.envFile[0]", "must be a string, got 1"),
    (api(envFile=3), "services.api.envFile", "must be a path or an array of paths, got 3"),
    (api(envFile="missing.env"), "services.api.envFile", "cannot read "),
    (api(envFile=["missing.env"]), "services.api.envFile[0]", "no such file or directory"),
    (api(envfile=".env"), "services.api.envfile", 'unknown key "envfile" (did you mean "envFile"?)'),
    (api(stopSignal="TERMINATE"), "services.api.stopSignal",
     'must be "TERM", "INT", "QUIT", "HUP", "USR1", "USR2" or "KILL" (a SIG prefix is accepted), got "TERMINATE"'),
    (api(stopSignal="term"), "services.api.stopSignal", 'got "term" (did you mean "TERM"?)'),
    (api(stopSignal=15), "services.api.stopSignal", "got 15"),
    (api(stopSignl="INT"), "services.api.stopSignl", '(did you mean "stopSignal"?)'),
    (api(stopTimeout=0), "services.api.stopTimeout", "must be > 0 and at most 1e+06 seconds, got 0"),
    (api(stopTimeout=-1.5), "services.api.stopTimeout", "must be > 0"),
    (api(stopTimeout=1e7), "services.api.stopTimeout", "at most 1e+06 seconds"),
    (api(stopTimeout="5"), "services.api.stopTimeout", 'must be a number of seconds, got "5"'),
    (api(stopTimeout=True), "services.api.stopTimeout", "must be a number of seconds, got true"),
    # SPEC 6.2: ready.timeout, exec and log probes
    (api(ready={"type": "http", "url": "http://h/", "timeout": 0}), "services.api.ready.timeout", "must be > 0"),
    (api(ready={"type": "tcp", "port": 1, "timeout": "1"}), "services.api.ready.timeout", "must be a number"),
    (api(ready={"type": "none", "timeout": 1}), "services.api.ready.timeout", 'not allowed when type is "none"'),
    (api(ready={"type": "http", "url": "http://h/", "timout": 1}), "services.api.ready.timout",
     'unknown key "timout" (did you mean "timeout"?)'),
    (api(ready={"type": "exec"}), "services.api.ready.cmd", 'required when type is "exec"'),
    (api(ready={"type": "exec", "cmd": []}), "services.api.ready.cmd", "must not be an empty array"),
    (api(ready={"type": "exec", "cmd": " "}), "services.api.ready.cmd", "must name a program"),
    (api(ready={"type": "exec", "cmd": ["x", 2]}), "services.api.ready.cmd[1]", "must be a string"),
    (api(ready={"type": "exec", "cmd": "x", "interval": -1}), "services.api.ready.interval", "must be > 0"),
    (api(ready={"type": "exec", "cmd": "x", "interval": "1"}), "services.api.ready.interval", "must be a number"),
    (api(ready={"type": "exec", "cmd": "x", "pattern": "y"}), "services.api.ready.pattern",
     'not allowed when type is "exec"'),
    (api(ready={"type": "log"}), "services.api.ready.pattern", 'required when type is "log"'),
    (api(ready={"type": "log", "pattern": 1}), "services.api.ready.pattern", "must be a string, got 1"),
    (api(ready={"type": "log", "pattern": "(ready"}), "services.api.ready.pattern",
     "invalid regular expression: missing ), unterminated subpattern at position 0"),
    (api(ready={"type": "log", "pattern": "x", "stream": "both"}), "services.api.ready.stream",
     'must be "stdout", "stderr" or "any", got "both"'),
    (api(ready={"type": "log", "pattern": "x", "cmd": "y"}), "services.api.ready.cmd", 'not allowed when type is "log"'),
    (api(ready={"type": "tcp", "port": 1, "interval": 1}), "services.api.ready.interval",
     'not allowed when type is "tcp"'),
]


def test_minimal_config_is_valid(tmp_path):
    """The base every rule below changes in one place."""
    assert load(write_config(tmp_path, MINIMAL)).services["api"].cmd == ("python3", "-c", "pass")


@pytest.mark.parametrize("change, path, message", RULES, ids=[f"{p}: {m}" for _, p, m in RULES])
def test_rule(tmp_path, change, path, message):
    error = expect_error(tmp_path, with_change(change))
    match = re.fullmatch(r"(.+):(\d+):(\d+): (.+)", error, re.S)
    assert match, error
    assert match.group(1) == os.path.join(str(tmp_path), "flowlayer.jsonc")
    assert match.group(4).startswith(f"{path}: "), error
    assert message in match.group(4), error


def test_extension_fields_and_their_defaults(tmp_path):
    (tmp_path / "a.env").write_text("A=1\nB=file a\n")
    (tmp_path / "b.env").write_text("export B='file b'\nC=\"x\\ny\"\n")
    data = {"services": {
        "api": {"cmd": "x", "envFile": ["a.env", "b.env"], "stopSignal": "SIGINT", "stopTimeout": 1,
                "ready": {"type": "exec", "cmd": "pg_isready -q", "interval": 0.1, "timeout": 30}},
        "web": {"cmd": "x", "envFile": "a.env", "stopSignal": "USR2",
                "ready": {"type": "log", "pattern": "^ready", "stream": "stderr"}},
        "db": {"cmd": "x", "port": 5, "ready": {"type": "tcp", "timeout": 2.5}},
        "plain": {"cmd": "x", "ready": {"type": "log", "pattern": ""}},
    }}
    services = load(write_config(tmp_path, data)).services
    api, web = services["api"], services["web"]
    assert api.env_files == (str(tmp_path / "a.env"), str(tmp_path / "b.env"))
    assert dict(api.file_env) == {"A": "1", "B": "file b", "C": "x\ny"}  # the later file wins
    assert (api.stop_signal, api.stop_timeout) == ("INT", 1.0)
    assert api.ready == ReadySpec("exec", None, 0, 30.0, cmd=("pg_isready", "-q"), interval=0.1)
    assert web.env_files == (str(tmp_path / "a.env"),) and dict(web.file_env) == {"A": "1", "B": "file a"}
    assert (web.stop_signal, web.stop_timeout) == ("USR2", 5.0)
    assert web.ready == ReadySpec("log", None, 0, pattern="^ready", stream="stderr")
    assert services["db"].ready == ReadySpec("tcp", None, 5, 2.5)
    assert services["plain"].ready.stream == "any" and services["plain"].ready.timeout is None
    assert (services["plain"].env_files, dict(services["plain"].file_env)) == ((), {})
    assert services["plain"].stop_signal == "TERM"


@pytest.mark.parametrize("text, line, reason", [
    ("A=1\noops\n", 2, 'expected KEY=VALUE, got "oops"'),
    ("# c\n\n1A=x\n", 3, 'invalid key "1A" (letters, digits and _, not starting with a digit)'),
    ("A='open\n", 1, "unterminated single quote"),
])
def test_bad_env_file_line_names_the_file_line_and_the_service(tmp_path, text, line, reason):
    (tmp_path / "dev.env").write_text(text)
    error = expect_error(tmp_path, {"services": {"api": {"cmd": "x", "envFile": ["dev.env"]}}})
    assert error == f"{tmp_path}/dev.env:{line}: services.api.envFile[0]: {reason}"


def test_bad_env_file_exits_2_with_its_line(tmp_path):
    (tmp_path / ".env").write_text("GOOD=1\nBAD LINE\n")
    path = write_config(tmp_path, {"services": {"api": {"cmd": "x", "envFile": ".env"}}})
    result = subprocess.run([PY, os.path.join(ROOT, "flowlayer.py"), "--check", "-c", path],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr == f'Error: {tmp_path}/.env:2: services.api.envFile: expected KEY=VALUE, got "BAD LINE"\n'


def test_missing_env_file_points_at_the_key(tmp_path):
    error = expect_error(tmp_path, {"services": {"api": {"cmd": "x", "envFile": "nope.env"}}})
    assert error.endswith(f":5:18: services.api.envFile: cannot read {tmp_path}/nope.env: no such file or directory")


def test_shell_syntax_warnings_are_part_of_the_config(tmp_path):
    data = {"services": {"api": {"cmd": "a && b", "stopCmd": "PORT=1 stop"}, "plain": {"cmd": "python3 -m x"},
                         "array": {"cmd": ["sh", "-c", "a && b"]}}}
    services = load(write_config(tmp_path, data)).services
    assert [w.split(":")[0] for w in services["api"].warnings] == ['service "api"', 'service "api"']
    assert "cmd is split" in services["api"].warnings[0] and "stopCmd is split" in services["api"].warnings[1]
    assert services["plain"].warnings == services["array"].warnings == ()


def test_cwd_that_is_a_file_is_rejected(tmp_path):
    (tmp_path / "file").write_text("")
    assert "services.api.cwd: not a directory" in expect_error(tmp_path, with_change(api(cwd="file")))


def test_dependency_on_another_service_name_is_suggested(tmp_path):
    data = {"services": {"api": {"cmd": "x", "dependsOn": ["databse"]}, "database": {"cmd": "x"}}}
    assert 'unknown service "databse" (did you mean "database"?)' in expect_error(tmp_path, data)


def test_unknown_key_without_close_match_lists_valid_keys(tmp_path):
    error = expect_error(tmp_path, with_change(api(zzzzz=1)))
    assert 'unknown key "zzzzz" (valid keys: cmd, stopCmd, kind, port, ready, dependsOn, env, envFile, logView, cwd, stopSignal, stopTimeout)' in error


def test_did_you_mean_ignores_case(tmp_path):
    assert '(did you mean "dependsOn"?)' in expect_error(tmp_path, with_change(api(DependsON=[])))


# Positions ---------------------------------------------------------------------------------------

COMMENTED = """// header comment: "services": { } and /* not a block
/* a block comment
   spanning lines, with "quotes" and // slashes */
{
  "session": { "bind": ":6999" }, // trailing comment
  "services": {
    /* first service */
    "db": { "cmd": "db", "port": 5432, },
    "api": {
      "cmd": ["python3", "-c", "print('// not a comment')"],
      "env": {
        "URL": "http://x/* not a comment */", // comment
        "DEPTH": %s,
      },
    },
  },
}
"""


def test_position_of_a_value_deep_inside_a_commented_file(tmp_path):
    text = COMMENTED % "   42"
    error = expect_error(tmp_path, text)
    line, column = position(text, "42")
    assert error == f"{tmp_path}/flowlayer.jsonc:{line}:{column}: services.api.env.DEPTH: must be a string, got 42"
    assert (line, column) == (13, 21)  # the helper itself, checked by hand


def test_position_of_an_unknown_key(tmp_path):
    text = COMMENTED.replace('"port": 5432', '"prot": 5432') % '"1"'
    error = expect_error(tmp_path, text)
    line, column = position(text, '"prot"')
    assert error.startswith(f"{tmp_path}/flowlayer.jsonc:{line}:{column}: services.db.prot: unknown key")


def test_position_of_a_missing_key_is_its_object(tmp_path):
    text = '{\n  "services": {\n    "api": { "port": 1 }\n  }\n}\n'
    line, column = position(text, '{ "port"')
    assert expect_error(tmp_path, text).endswith(f":{line}:{column}: services.api.cmd: required")


def test_position_of_an_invalid_service_name_is_its_key(tmp_path):
    text = '{"services": {\n  "ok": {"cmd": "x"},\n\t"bad name": {"cmd": "x"}}}'
    expected = ':3:2: services.bad name: invalid service name: use letters, digits, ".", "_" and "-"'
    assert expect_error(tmp_path, text).endswith(expected)


def test_position_in_a_json5_file_uses_the_fallback(tmp_path):
    text = "{\n  services: {\n    'api': { cmd: 'x', port: 0x10, kind: 'batch' },\n  },\n}"
    line, column = position(text, "'batch'")
    expected = f':{line}:{column}: services.api.kind: must be "daemon" or "oneshot", got "batch"'
    assert expect_error(tmp_path, text).endswith(expected)


def test_position_after_non_ascii_text_counts_characters(tmp_path):
    text = '{"services": {"api": {"cmd": "x", "env": {"É": "ünïcode"}, "kind": 3}}}'
    line, column = position(text, "3}")
    expected = f':{line}:{column}: services.api.kind: must be "daemon" or "oneshot", got 3'
    assert expect_error(tmp_path, text).endswith(expected)


# Duplicate keys -------------------------------------------------------------------------------


def test_duplicate_key_reports_the_second_occurrence(tmp_path):
    text = COMMENTED.replace('"port": 5432,', '"port": 5432, /* again: */ "port": 5433,') % '"1"'
    first = position(text, '"port"', 1)
    line, column = position(text, '"port"', 2)
    assert expect_error(tmp_path, text) == (
        f"{tmp_path}/flowlayer.jsonc:{line}:{column}: services.db.port: duplicate key "
        f"(first defined at line {first[0]}, column {first[1]})")


def test_duplicate_service_names(tmp_path):
    text = '{"services": {\n "a": {"cmd": "x"},\n "a": {"cmd": "y"}\n}}'
    assert expect_error(tmp_path, text).endswith(":3:2: services.a: duplicate key (first defined at line 2, column 2)")


def test_duplicate_top_level_key(tmp_path):
    text = '{"services": {"a": {"cmd": "x"}},\n"services": {}}'
    assert expect_error(tmp_path, text).endswith(":2:1: services: duplicate key (first defined at line 1, column 2)")


def test_duplicate_key_written_differently_in_json5(tmp_path):
    text = "{services: {a: {cmd: 'x', \"cmd\": 'y'}}}"
    line, column = position(text, '"cmd"')
    expected = f":{line}:{column}: services.a.cmd: duplicate key (first defined at line 1, column 17)"
    assert expect_error(tmp_path, text).endswith(expected)


def test_duplicate_key_with_escapes_is_the_same_key(tmp_path):
    text = '{"services": {"a": {"cmd": "x", "\\u0063md": "y"}}}'
    assert "services.a.cmd: duplicate key" in expect_error(tmp_path, text)


def test_duplicate_keys_in_an_array_of_objects(tmp_path):
    assert "duplicate key" in expect_error(tmp_path, '{"services": {"a": {"cmd": [{"x": 1, "x": 2}]}}}')


# Parsing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("number", ["1e999", "-1e999", "Infinity", "-Infinity", "NaN"])
def test_non_finite_numbers_are_rejected(tmp_path, number):
    text = '{"services": {"api": {"cmd": "x",\n  "port": %s}}}' % number
    assert expect_error(tmp_path, text).endswith(f":2:11: services.api.port: must be a finite number, got {number}")


def test_non_finite_numbers_are_rejected_in_json5_files(tmp_path):
    text = "{services: {api: {cmd: 'x', port: +Infinity}}}"
    assert "services.api.port: must be a finite number, got +Infinity" in expect_error(tmp_path, text)


def test_comments_inside_strings_are_kept(tmp_path):
    text = r"""{
  "services": {
    "api": {
      "cmd": ["sh", "-c", "echo // one /* two */ \" // three"],  // a comment
      "env": { "A": "/*", "B": "*/", "C": "\\", "D": "//" },
    },
  },
}"""
    service = load(write_config(tmp_path, text)).services["api"]
    assert service.cmd == ("sh", "-c", 'echo // one /* two */ " // three')
    assert dict(service.env) == {"A": "/*", "B": "*/", "C": "\\", "D": "//"}


def test_syntax_error_is_reported_by_json5_with_its_position(tmp_path):
    text = '{\n  // comment\n  "services": {\n    "api": { "cmd": "x" "port": 1 }\n  }\n}'
    line, column = position(text, '"port"')
    assert expect_error(tmp_path, text) == f'{tmp_path}/flowlayer.jsonc:{line}:{column}: syntax error: unexpected "\\""'


def test_syntax_error_at_end_of_file(tmp_path):
    assert expect_error(tmp_path, '{"services": {').endswith(":1:15: syntax error: unexpected end of input")


@pytest.mark.parametrize("text", ["", "   \n", "// only a comment\n/* and another */"])
def test_empty_file(tmp_path, text):
    assert expect_error(tmp_path, text) == f"{tmp_path}/flowlayer.jsonc:1:1: empty config: expected a JSON object"


@pytest.mark.parametrize("text, shown", [("[]", "an array"), ('"x"', '"x"'), ("null", "null"), ("1", "1")])
def test_top_level_must_be_an_object(tmp_path, text, shown):
    assert expect_error(tmp_path, text) == f"{tmp_path}/flowlayer.jsonc:1:1: top level: must be an object, got {shown}"


def test_not_utf8(tmp_path):
    path = tmp_path / "flowlayer.jsonc"
    path.write_bytes(b'{\n  "services": {"\xc3\xa9\xff": 1}}')
    with pytest.raises(ConfigError, match=r"flowlayer.jsonc:2:18: not valid UTF-8 \(byte 0xff\)$"):
        load(path)


def test_byte_order_mark_is_ignored(tmp_path):
    path = tmp_path / "flowlayer.jsonc"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(MINIMAL).encode())
    assert list(load(path).services) == ["api"]
    path.write_bytes(b'\xef\xbb\xbf{"services": 1}')  # columns as an editor shows them
    with pytest.raises(ConfigError, match=r"flowlayer.jsonc:1:14: services: must be an object, got 1$"):
        load(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"/nope.jsonc: file not found$"):
        load(tmp_path / "nope.jsonc")


def test_directory(tmp_path):
    with pytest.raises(ConfigError, match=r": is a directory, not a config file$"):
        load(tmp_path)


def test_unreadable_file(tmp_path):
    path = write_config(tmp_path, MINIMAL)
    os.chmod(path, 0)
    if os.access(path, os.R_OK):
        pytest.skip("running as root: permissions are not enforced")
    with pytest.raises(ConfigError, match=r": cannot read: Permission denied$"):
        load(path)


def test_deep_nesting_is_a_config_error(tmp_path):
    text = '{"services": ' + "[" * 100_000 + "]" * 100_000 + "}"
    innermost = text.rindex("[") + 1
    assert expect_error(tmp_path, text) == f"{tmp_path}/flowlayer.jsonc:1:{innermost}: nested too deeply (100001 levels)"


def test_dependency_cycle_names_file_and_cycle(tmp_path):
    data = {"services": {
        "gateway": {"cmd": "x", "dependsOn": ["api"]},
        "db": {"cmd": "x", "dependsOn": ["gateway"]},
        "api": {"cmd": "x", "dependsOn": ["db"]},
        "web": {"cmd": "x"},
    }}
    path = write_config(tmp_path, data)
    with pytest.raises(ConfigError) as caught:
        load(path)
    text = open(path).read()
    before = text[:text.index("[", text.index('"api": {'))]  # up to api's dependsOn value
    line, column = position(text, "[", before.count("[") + 1)
    assert str(caught.value) == (f"{path}:{line}:{column}: services.api.dependsOn: "
                                 "dependency cycle: api -> db -> gateway -> api")


def test_load_is_deterministic(tmp_path):
    names = ["zeta", "alpha", "mid", "beta"]
    data = {"services": {name: {"cmd": "x", "dependsOn": [n for n in names if n < name][::-1]} for name in names}}
    first = load(write_config(tmp_path, data, name="a.jsonc"))
    data["services"] = dict(reversed(list(data["services"].items())))
    second = load(write_config(tmp_path, data, name="b.jsonc"))
    assert first.services == second.services
    assert first.waves == second.waves == (("alpha",), ("beta",), ("mid",), ("zeta",))
    assert list(first.services) == sorted(names)


# read_jsonc --------------------------------------------------------------------------------------


def test_read_jsonc_parses_without_validating(tmp_path):
    path = write_config(tmp_path, '// client config\n{"session": {"addr": "h:1", "other": [1,]},}')
    assert read_jsonc(path) == {"session": {"addr": "h:1", "other": [1]}}


def test_read_jsonc_rejects_duplicates_and_non_objects(tmp_path):
    with pytest.raises(ConfigError, match=r":1:25: session.addr: duplicate key"):
        read_jsonc(write_config(tmp_path, '{"session": {"addr": 1, "addr": 2}}'))
    with pytest.raises(ConfigError, match=r":1:1: top level: must be an object, got an array$"):
        read_jsonc(write_config(tmp_path, "[1]"))
    with pytest.raises(ConfigError, match="file not found"):
        read_jsonc(tmp_path / "missing.jsonc")


# parse_bind and log_limit ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        (6999, ("127.0.0.1", 6999)),
        ("6999", ("127.0.0.1", 6999)),
        (":6999", ("0.0.0.0", 6999)),
        ("0.0.0.0:1", ("0.0.0.0", 1)),
        ("localhost:65535", ("localhost", 65535)),
        ("[::1]:6999", ("::1", 6999)),
        ("[::]:80", ("::", 80)),
    ],
)
def test_parse_bind(value, expected):
    assert parse_bind(value) == expected


@pytest.mark.parametrize(
    "value, message",
    [
        (0, "port must be between 1 and 65535, got 0"),
        (70000, "port must be between 1 and 65535, got 70000"),
        ("h:0", "got 0"),
        ("", "expected host:port"),
        ("host", "expected host:port"),
        ("host:", "the port must be a number"),
        ("host:x", "the port must be a number"),
        ("host:-1", "the port must be a number"),
        ("::1:6999", "brackets"),
        ("[::1]", "expected host:port"),
        ("[]:1", "expected host:port"),
        (True, "expected host:port or a port"),
        (None, "expected host:port or a port"),
        ("٣", "expected host:port"),  # a digit, but not an ASCII one
    ],
)
def test_parse_bind_errors(value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_bind(value)


@pytest.mark.parametrize(
    "top_view, service_view, expected",
    [
        ({}, {}, {"api": 300, "db": 300, None: 300}),
        ({"maxEntries": 50}, {}, {"api": 50, "db": 50, None: 50}),
        ({"maxEntries": 50, "all": {"maxEntries": 70}}, {}, {"api": 50, "db": 50, None: 70}),
        ({"all": {"maxEntries": 70}}, {"maxEntries": 9}, {"api": 9, "db": 300, None: 70}),
        ({"maxEntries": 50}, {"maxEntries": 9}, {"api": 9, "db": 50, None: 50, "flowlayer": 50}),
    ],
)
def test_log_limit(tmp_path, top_view, service_view, expected):
    data = {"logs": {"bufferSize": 300}, "logView": top_view,
            "services": {"api": {"cmd": "x", "logView": service_view}, "db": {"cmd": "x"}}}
    cfg = load(write_config(tmp_path, data))
    assert {name: cfg.log_limit(name) for name in expected} == expected


# Fast path and fallback agree -------------------------------------------------------------------

TRICKY = st.text(alphabet=st.sampled_from(list("ab/*\"'\\ ,:{}[]\t\né\u2028") + ["\U0001f600"]), max_size=12)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | TRICKY | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TRICKY, children, max_size=4),
    max_leaves=15,
)
COMMENT_TEXT = TRICKY.map(lambda s: s.replace("\n", " ").replace("\u2028", " ").replace("*/", "* /"))


def gap(draw):
    """Whitespace and comments that may sit between any two tokens."""
    pieces = draw(st.lists(st.one_of(
        st.sampled_from(["", " ", "\n", "\t", "\r\n"]),
        COMMENT_TEXT.map(lambda s: f"//{s}\n"),
        COMMENT_TEXT.map(lambda s: f"/*{s}*/"),
    ), max_size=2))
    return "".join(pieces)


def string(draw, value, json5_syntax, key=False):
    if json5_syntax and key and re.fullmatch(r"[a-z_]\w*", value, re.A) and value not in ("true", "false", "null"):
        return value
    quoted = json.dumps(value, ensure_ascii=draw(st.booleans()))
    if json5_syntax and draw(st.booleans()):
        return "'" + quoted[1:-1].replace("'", "\\'") + "'"
    return quoted


def to_jsonc(draw, value, json5_syntax=False):
    """Serialize with comments, odd whitespace and trailing commas (and JSON5 syntax if asked)."""
    if isinstance(value, str):
        return string(draw, value, json5_syntax)
    if isinstance(value, list):
        items = [gap(draw) + to_jsonc(draw, item, json5_syntax) + gap(draw) for item in value]
        return "[" + ",".join(items) + ("," + gap(draw) if items and draw(st.booleans()) else "") + "]"
    if isinstance(value, dict):
        items = [gap(draw) + string(draw, key, json5_syntax, key=True) + gap(draw) + ":" + gap(draw)
                 + to_jsonc(draw, item, json5_syntax) + gap(draw) for key, item in value.items()]
        return "{" + gap(draw) + ",".join(items) + ("," + gap(draw) if items and draw(st.booleans()) else "") + "}"
    if json5_syntax and isinstance(value, int) and not isinstance(value, bool) and value >= 0 and draw(st.booleans()):
        return hex(value)
    return json.dumps(value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON_VALUES, st.data())
def test_fast_path_matches_json5(value, data):
    text = gap(data.draw) + to_jsonc(data.draw, value) + gap(data.draw)
    blanked = jsonc._blank(text)
    assert len(blanked) == len(text)
    assert [i for i, c in enumerate(blanked) if c == "\n"] == [i for i, c in enumerate(text) if c == "\n"]
    assert json.loads(blanked) == value  # the fast path alone parses it
    assert jsonc._parse(text, "f")[0] == jsonc._json5_loads(text) == value


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON_VALUES, st.data())
def test_json5_syntax_falls_back_to_json5(value, data):
    text = to_jsonc(data.draw, value, json5_syntax=True)
    assert jsonc._parse(text, "f")[0] == value


@pytest.mark.parametrize(
    "text",
    [
        "{// line comment ended by CR\r\"a\": 1\n}",
        "{// ended by a line separator\u2028\"a\": 1\n}",
        "[1, /* c */ , ]",
        "{,}",
        "[,]",
        "{\"a\": [1,,]}",
        "{\"a\": 1,,}",
        "[1 /* unterminated",
        "[\"a\\\nb\"]",
        "[\"tab\tinside\"]",
        "{'a': \"it's // here\", \"b\": 'say \"/*\"'}",
    ],
)
def test_edge_cases_match_json5(text):
    try:
        expected = json5.loads(text)
    except ValueError:
        with pytest.raises(jsonc.JsoncError, match="syntax error"):
            jsonc._parse(text, "f")
    else:
        assert jsonc._parse(text, "f")[0] == expected


def test_json5_fallback_joins_escaped_surrogate_pairs():
    """json5 alone returns two lone surrogates here; json.loads (the fast path) one character."""
    assert jsonc._parse("{a: ['\\ud83d\\ude00']}", "f")[0] == {"a": ["\U0001f600"]}
    with pytest.raises(jsonc.JsoncError, match="f:1:27: \U0001f600: duplicate key"):
        jsonc._parse("{a: 1, '\\ud83d\\ude00': 2, '\U0001f600': 3}", "f")



# Hostile files and limits (issue 14 items 8 and 9) -------------------------------------------


def finishes(function, timeout=20):
    """`function()` run on a thread; fails the test if it has not returned in `timeout` s."""
    outcome = {}

    def target():
        try:
            outcome["value"] = function()
        except BaseException as error:  # handed to the test thread
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still running after {timeout} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_schema_key_is_accepted_and_ignored(tmp_path):
    plain = load(write_config(tmp_path, MINIMAL))
    schema = "https://example.com/flowlayer.schema.json"
    assert load(write_config(tmp_path, with_change(top(**{"$schema": schema})))) == plain
    assert "$schema: must be a string, got 1" in expect_error(tmp_path, with_change(top(**{"$schema": 1})))


def test_service_name_length_is_limited(tmp_path):
    assert config.MAX_SERVICE_NAME == 200
    assert list(load(write_config(tmp_path, {"services": {"a" * 200: {"cmd": "x"}}})).services) == ["a" * 200]
    text = json.dumps({"services": {"a" * 250: {"cmd": "x"}}})
    line, column = position(text, '"aaa')
    assert expect_error(tmp_path, text) == (f"{tmp_path}/flowlayer.jsonc:{line}:{column}: services.{'a' * 250}: "
                                            "service name is 250 characters long; the limit is 200")


def test_fifo_config_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = str(tmp_path / "flowlayer.jsonc")
    os.mkfifo(fifo)
    try:
        with pytest.raises(ConfigError) as caught:
            finishes(lambda: load(fifo))
    finally:  # on a failure, free the reader blocked in open()
        descriptor = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
        os.close(descriptor)
    assert str(caught.value) == f"{fifo}: not a regular file"
    with pytest.raises(ConfigError, match=": not a regular file$"):
        finishes(lambda: read_jsonc(fifo))


def test_dev_zero_config_exits_2_at_once():
    """Run as a process: the old code read /dev/zero until memory ran out."""
    out = subprocess.run([PY, os.path.join(ROOT, "flowlayer.py"), "-c", "/dev/zero"], capture_output=True,
                         text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert (out.returncode, out.stderr) == (2, "Error: /dev/zero: not a regular file\n")


def test_config_size_is_limited(tmp_path):
    body = json.dumps(MINIMAL)
    path = write_config(tmp_path, body + " " * (jsonc.MAX_BYTES - len(body)))
    assert load(path).services.keys() == {"api"}  # exactly at the limit
    with open(path, "a") as f:
        f.write(" ")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value) == f"{path}: larger than 16 MiB, the limit for a config file"


@pytest.mark.parametrize("json5_syntax", [False, True])
def test_integer_with_too_many_digits_has_a_position_and_key_path(tmp_path, json5_syntax):
    digits = "1" * 5000
    text = ('{services: {api: {cmd: "x", port: %s}}}' if json5_syntax
            else '{"services": {"api": {"cmd": "x", "port": %s}}}') % digits
    line, column = position(text, digits)
    assert expect_error(tmp_path, text) == (f"{tmp_path}/flowlayer.jsonc:{line}:{column}: services.api.port: "
                                            f"integer has 5000 digits; the limit is {sys.get_int_max_str_digits()}")


def test_integers_up_to_the_digit_limit_are_read(tmp_path):
    digits = "9" * sys.get_int_max_str_digits()
    assert read_jsonc(write_config(tmp_path, '{"n": %s, "h": 0x%s}' % (digits, "f" * 5000))) == {
        "n": int(digits), "h": int("f" * 5000, 16)}


def test_jsonc_reader_imports_nothing_from_lib():
    tree = ast.parse(open(os.path.join(ROOT, "lib", "jsonc.py"), encoding="utf-8").read())
    imports = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert imports and not [node for node in imports if isinstance(node, ast.ImportFrom) and node.level]
    assert not [alias.name for node in imports for alias in node.names if alias.name.split(".")[0] in ("lib", "flowlayer")]
