"""lib.shell_syntax: the warning for string commands that hold shell syntax (SPEC 6.1)."""
import json
import re

import pytest

from lib.shell_syntax import shell_warning


def suggested_array(warning, field="cmd"):
    """The JSON array the warning suggests for `field`."""
    return json.loads(re.search(rf'"{field}": (\[.*\])$', warning).group(1))


@pytest.mark.parametrize("cmd, syntax", [
    ("python3 watch.py && echo started", "&&"),
    ("make || true", "||"),
    ("cat log | grep x", "|"),
    ("cd web; npm start", ";"),
    ("server > out.log", ">"),
    ("server 2>&1", ">"),
    ("psql < init.sql", "<"),
    ("echo $HOME", "$"),
    ("echo `date`", "`"),
    ("python3 -c 'print(1)'", "'"),
    ('python3 -c "import app; app.run()"', '"'),
    ("PORT=1 api $X", "$"),  # shell syntax beyond the assignment: the shell form
])
def test_each_form_suggests_the_exact_sh_array(cmd, syntax):
    warning = shell_warning("api", "cmd", cmd)
    assert warning.startswith('service "api": cmd is split on whitespace and run without a shell')
    assert f"shell syntax ({syntax})" in warning
    assert suggested_array(warning) == ["sh", "-c", cmd]
    assert "\n" not in warning


def test_json_escaping_of_quotes_and_backslashes():
    cmd = 'python3 -c "print(\\"hi\\")"'
    warning = shell_warning("api", "stopCmd", cmd)
    assert '"stopCmd": ["sh", "-c", "python3 -c \\"print(\\\\\\"hi\\\\\\")\\""]' in warning
    assert suggested_array(warning, "stopCmd") == ["sh", "-c", cmd]


def test_leading_assignments_suggest_env_and_the_remaining_argv():
    warning = shell_warning("api", "cmd", "PORT=28000 MODE=dev python3 api.py --fast")
    assert "starts with PORT=28000 MODE=dev, which runs as a program" in warning
    assert warning.endswith('Write "env": {"PORT": "28000", "MODE": "dev"}, '
                            '"cmd": ["python3", "api.py", "--fast"]')


def test_assignment_with_an_empty_value():
    assert shell_warning("w", "cmd", "DEBUG= node x.js").endswith(
        '"env": {"DEBUG": ""}, "cmd": ["node", "x.js"]')


def test_only_assignments_suggests_a_shell():
    warning = shell_warning("w", "cmd", "A=1")
    assert "shell syntax (A=1)" in warning
    assert suggested_array(warning) == ["sh", "-c", "A=1"]


@pytest.mark.parametrize("cmd", [
    "python3 -m http.server 8000",
    "node server.js --port=3000",      # = in a later word is an argument
    "./run --flag=a=b",
    "npm run dev",
    "redis-server --save 60 1",
    "http://x?a=1&b=2 curl",            # a single & is not in the list
])
def test_plain_commands_give_no_warning(cmd):
    assert shell_warning("api", "cmd", cmd) is None


def test_arrays_give_no_warning():
    assert shell_warning("api", "cmd", ["sh", "-c", "a && b"]) is None
