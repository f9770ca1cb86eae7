"""Config fuzzing: any document either loads or fails with a ConfigError, never anything else."""
import json
import os
import subprocess

from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import PY, ROOT
from lib.config import ConfigError, load, read_jsonc

VALID = """{
  // a valid config to mutate
  "session": {"bind": "127.0.0.1:6999", "token": "t"},
  "logs": {"dir": "logs", "bufferSize": 100},
  "logView": {"maxEntries": 10, "all": {"maxEntries": 20}},
  "services": {
    "db": {"cmd": ["postgres"], "port": 5432, "ready": {"type": "tcp"}},
    "api": {"cmd": "node api.js", "dependsOn": ["db"], "env": {"A": "b"},
            "ready": {"type": "http", "url": "http://127.0.0.1:3000/h"}, "logView": {"maxEntries": 5}},
    "seed": {"kind": "oneshot", "cmd": "seed", "stopCmd": ["x", "y"], "dependsOn": ["api"],},
  },
}
"""

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def load_text(tmp_path, text):
    path = tmp_path / "fuzz.jsonc"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    try:
        load(str(path))
    except ConfigError as exc:
        assert str(exc).startswith(str(path)), str(exc)


def test_valid_base_config_loads(tmp_path):
    (tmp_path / "fuzz.jsonc").write_text(VALID)
    load(str(tmp_path / "fuzz.jsonc"))


@SETTINGS
@given(value=json_values)
def test_random_json_documents(tmp_path, value):
    load_text(tmp_path, json.dumps(value))


@SETTINGS
@given(value=json_values, key=st.sampled_from(["session", "logs", "logView", "services", "services.db",
                                                "services.api.ready", "services.api.env", "services.seed.cmd",
                                                "services.db.port", "services.api.dependsOn", "logs.bufferSize"]))
def test_any_value_in_any_place(tmp_path, value, key):
    base = tmp_path / "base.jsonc"
    base.write_text(VALID)
    data = read_jsonc(str(base))
    *parents, last = key.split(".")
    node = data
    for part in parents:
        node = node[part]
    node[last] = value
    load_text(tmp_path, json.dumps(data))


@SETTINGS
@given(cut=st.integers(0, len(VALID)), insert=st.text(max_size=6), drop=st.integers(0, 5))
def test_mutated_text(tmp_path, cut, insert, drop):
    load_text(tmp_path, VALID[:cut] + insert + VALID[cut + drop:])


@SETTINGS
@given(data=st.binary(max_size=200))
def test_random_bytes(tmp_path, data):
    load_text(tmp_path, data)


def test_cli_never_prints_a_traceback(tmp_path):
    for text in ['{"services": {"a": {"cmd": "x"}}', "\ufeff{}", "[1,2]", '{"services": {"a": {"cmd": 1e999}}}',
                 b"\xff\xfe{}", '{"services": {"a": {"cmd": "x", "port": true}}}', "/* open comment"]:
        path = tmp_path / "c.jsonc"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        out = subprocess.run([PY, os.path.join(ROOT, "flowlayer.py"), "-c", str(path)],
                             capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert out.returncode == 2, (text, out.stderr)
        assert out.stderr.startswith("Error: ") and "Traceback" not in out.stderr
