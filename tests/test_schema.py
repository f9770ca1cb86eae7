"""schema/flowlayer.schema.json agrees with lib.config: what the loader accepts the schema
accepts, and what the loader rejects the schema rejects too, except for the rules a JSON
Schema cannot express, which are listed here and checked against the loader only."""
import glob
import json
import os

import jsonschema
import pytest

from conftest import ROOT, write_config
from lib.config import ConfigError, load, read_jsonc
from test_config import COMMENTED, MINIMAL, RULES, with_change  # RULES: one config per rule

with open(os.path.join(ROOT, "schema", "flowlayer.schema.json"), encoding="utf-8") as f:
    SCHEMA = json.load(f)
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def schema_errors(data):
    return [f"{'.'.join(map(str, e.absolute_path)) or 'top'}: {e.message}" for e in VALIDATOR.iter_errors(data)]


def test_schema_is_a_valid_draft_2020_12_schema():
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def described_properties(node, path=""):
    """(key path, property schema) of every `properties` entry in the schema, recursively."""
    if isinstance(node, dict):
        for key, value in node.get("properties", {}).items():
            yield f"{path}.{key}", value
        for key, value in node.items():
            yield from described_properties(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from described_properties(value, f"{path}[{index}]")


def test_every_property_has_a_description_for_editors():
    # Properties restated inside if/then, only to narrow them, need none of their own.
    undescribed = [path for path, schema in described_properties(SCHEMA)
                   if "description" not in schema and "/if" not in path and "/then" not in path]
    assert undescribed == []


def test_defaults_shown_by_editors_are_the_loaders(tmp_path):
    cfg = load(write_config(tmp_path, MINIMAL))
    service = SCHEMA["$defs"]["service"]["properties"]
    assert SCHEMA["properties"]["logs"]["properties"]["bufferSize"]["default"] == cfg.buffer_size
    assert service["kind"]["default"] == cfg.services["api"].kind
    assert service["port"]["default"] == cfg.services["api"].port


# Configs the loader accepts ------------------------------------------------------------------

EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "examples", "**", "*.jsonc"), recursive=True))

EVERY_FIELD = {
    "session": {"bind": "127.0.0.1:7000", "token": "secret", "addr": ""},
    "logs": {"dir": "logs", "bufferSize": 100},
    "logView": {"maxEntries": 50, "all": {"maxEntries": 80}},
    "services": {
        "web.1_a-b": {
            "cmd": ["python3", "-m", "http.server", ""],
            "stopCmd": "echo   bye",
            "kind": "daemon",
            "port": 8000,
            "ready": {"type": "http", "url": "https://user@[::1]:8000/health?x=1#y"},
            "dependsOn": ["db", "cache", "db"],
            "env": {"MODE": "dev", "EMPTY": "", "É": "ü"},
            "logView": {"maxEntries": 20},
            "cwd": ".",
        },
        "db": {"cmd": "db", "port": 5432, "ready": {"type": "tcp", "port": 0}},
        "cache": {"cmd": ["cache"], "ready": {"type": "tcp", "port": 6379}, "logView": {}},
        "migrate": {"cmd": "migrate", "kind": "oneshot", "dependsOn": [], "ready": {"type": "none"}},
        "http": {"cmd": "x", "ready": {"type": "http", "url": "HTTP://h:/"}, "env": {}},
    },
}

# SPEC 6.1-6.2 fields, one service each (the env files are written beside the config).
EXTENSIONS = [
    {"envFile": ".env"},
    {"envFile": [".env", "local.env"]},
    {"stopSignal": "INT"},
    {"stopSignal": "SIGUSR2", "stopTimeout": 0.5},
    {"stopSignal": "KILL", "stopTimeout": 1000000},
    {"ready": {"type": "http", "url": "http://127.0.0.1:1/", "timeout": 30}},
    {"port": 1, "ready": {"type": "tcp", "timeout": 1.5}},
    {"ready": {"type": "exec", "cmd": "pg_isready", "interval": 0.1, "timeout": 10}},
    {"ready": {"type": "exec", "cmd": ["sh", "-c", "test -e /tmp/up"]}},
    {"ready": {"type": "log", "pattern": "listening on", "stream": "stderr"}},
    {"ready": {"type": "log", "pattern": "^ready$"}},
    {"ready": {"type": "log", "pattern": "", "stream": "any", "timeout": 0.01}},
]
ENV_FILES = {".env": "A=1\n", "local.env": "export B='2'\n"}

BINDS = [1, 65535, "6999", "006999", ":6999", "0.0.0.0:6999", "[::1]:6999", "[::]:80", "localhost:1", "h:065535"]

ACCEPTED = {
    "minimal": MINIMAL,
    "every field": EVERY_FIELD,
    "commented test config": COMMENTED % '"1"',
    **{f"extension {json.dumps(fields)}": {"services": {"api": {"cmd": "x", **fields}}} for fields in EXTENSIONS},
    **{f"bind {bind!r}": {"session": {"bind": bind}, **MINIMAL} for bind in BINDS},
}


def test_the_examples_are_found():
    assert os.path.join(ROOT, "examples", "stack", "flowlayer.jsonc") in EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: os.path.relpath(path, ROOT))
def test_an_example_is_valid(path):
    load(path)
    assert schema_errors(read_jsonc(path)) == []


@pytest.mark.parametrize("name", ACCEPTED)
def test_a_config_the_loader_accepts_is_valid(tmp_path, name):
    for file, text in ENV_FILES.items():
        (tmp_path / file).write_text(text)
    path = write_config(tmp_path, ACCEPTED[name])
    load(path)
    assert schema_errors(read_jsonc(path)) == []


def test_top_level_schema_key_is_valid():
    assert schema_errors({"$schema": "./schema/flowlayer.schema.json", **MINIMAL}) == []


def test_top_level_schema_key_is_accepted_by_the_loader(tmp_path):
    load(write_config(tmp_path, {"$schema": "./schema/flowlayer.schema.json", **MINIMAL}))


# Configs the loader rejects --------------------------------------------------------------------

# Rules of test_config.RULES a JSON Schema cannot express: there the schema accepts what the
# loader rejects. The test below checks that the schema does accept these (so the list stays
# exact) and that the loader rejects them.
BEYOND_A_SCHEMA = {
    "logs.bufferSize: must be an integer, got 10.0": "JSON Schema counts 10.0 as an integer",
    "services.api.env.A: unpaired surrogate": "a pattern cannot tell a lone surrogate from a pair "
                                              "(editors match UTF-16 code units)",
    "services.api.dependsOn[0]: cannot depend on itself": "a service's schema does not know its name",
    'services.api.dependsOn[0]: unknown service "apj"': "a schema cannot compare values with the "
                                                         "keys of services",
    "services.api.cwd: not a directory": "a schema cannot look at the file system",
    "services.api.envFile: cannot read ": "a schema cannot look at the file system",
    "services.api.envFile[0]: no such file or directory": "a schema cannot look at the file system",
    "services.api.ready.pattern: invalid regular expression: missing ), unterminated subpattern at position 0":
        'validators do not assert "format": "regex" by default, and a JSON Schema regex is not Python\'s',
}
RULE_IDS = [f"{path}: {message}" for _, path, message in RULES]


def test_every_listed_rule_is_a_rule():
    assert set(BEYOND_A_SCHEMA) <= set(RULE_IDS)


@pytest.mark.parametrize("change", [change for change, _, _ in RULES], ids=RULE_IDS)
def test_a_config_the_loader_rejects_is_invalid(tmp_path, change, request):
    rule = request.node.callspec.id
    data = with_change(change)
    with pytest.raises(ConfigError):
        load(write_config(tmp_path, data))
    if rule in BEYOND_A_SCHEMA:
        assert schema_errors(data) == [], "the schema expresses this rule now: drop it from BEYOND_A_SCHEMA"
    else:
        assert schema_errors(data) != [], "the loader rejects this config, the schema accepts it"


# The patterns of session.bind and ready.url follow parse_bind and the loader's URL check.
BIND_VALUES = [*BINDS, 0, 65536, "0", "65536", "h:0", "h:00", "", "host", "host:", "host:x", "host:-1", "::1:6999",
               "[::1]", "[]:1", "[a]:b]:80", "[::1]:0", ":", "\u0663", " 80", "h:80 "]
URLS = ["http://h", "https://h:1/x", "http://h:/", "http://u:p@h/", "http://[::1]/", "http://", "http:///x",
        "http://u@/", "http://:80/", "http://h:0/", "http://h:65536/", "http://h:x/", "ftp://h/", "h:80", "//h/"]


@pytest.mark.parametrize("value", BIND_VALUES, ids=repr)
def test_bind_pattern_agrees_with_the_loader(tmp_path, value):
    agree_on(tmp_path, {"session": {"bind": value}, **MINIMAL})


@pytest.mark.parametrize("url", URLS)
def test_url_pattern_agrees_with_the_loader(tmp_path, url):
    agree_on(tmp_path, {"services": {"api": {"cmd": "x", "ready": {"type": "http", "url": url}}}})


def agree_on(tmp_path, data):
    try:
        load(write_config(tmp_path, data))
        loads = True
    except ConfigError:
        loads = False
    assert (schema_errors(data) == []) == loads


# Mistakes only the loader sees, beyond RULES: the schema validates the parsed data, where a
# repeated key has already replaced the first one and a cycle is just names.
LOADER_ONLY = {
    "dependency cycle": ({"services": {"a": {"cmd": "x", "dependsOn": ["b"]}, "b": {"cmd": "x", "dependsOn": ["a"]}}},
                         "dependency cycle: a -> b -> a"),
    "duplicate key": ('{"services": {"a": {"cmd": "x", "cmd": "y"}}}', "services.a.cmd: duplicate key"),
    "duplicate service": ('{"services": {"a": {"cmd": "x"}, "a": {"cmd": "y"}}}', "services.a: duplicate key"),
}


@pytest.mark.parametrize("name", LOADER_ONLY)
def test_mistakes_only_the_loader_sees(tmp_path, name):
    config, message = LOADER_ONLY[name]
    path = write_config(tmp_path, config)
    with pytest.raises(ConfigError, match=message):
        load(path)
    assert schema_errors(config if isinstance(config, dict) else json.loads(config)) == []
