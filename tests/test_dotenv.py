"""lib.dotenv: envFile syntax and the layering of a service's environment (SPEC 6.1)."""
import pytest

from lib.dotenv import DotenvError, layer, load, parse


@pytest.mark.parametrize("line, expected", [
    ("A=1", {"A": "1"}),
    ("export A=1", {"A": "1"}),
    ("export\tA=1", {"A": "1"}),
    ("  A  =  spaced value  ", {"A": "spaced value"}),
    ("A=", {"A": ""}),
    ("A=''", {"A": ""}),
    ('A=""', {"A": ""}),
    ("A=b #comment", {"A": "b"}),
    ("A=b\t#comment", {"A": "b"}),
    ("A=b#c", {"A": "b#c"}),
    ("A=#c", {"A": "#c"}),
    ("A=x=y", {"A": "x=y"}),
    ("A=it's", {"A": "it's"}),
    ("A=$HOME/x", {"A": "$HOME/x"}),
    ("A='lit \\n $X \"q\"'", {"A": 'lit \\n $X "q"'}),
    ("A='a # b' # c", {"A": "a # b"}),
    ('A="line1\\nline2"', {"A": "line1\nline2"}),
    ('A="say \\"hi\\""', {"A": 'say "hi"'}),
    ('A="back\\\\slash"', {"A": "back\\slash"}),
    ('A="C:\\temp\\x"', {"A": "C:\\temp\\x"}),
    ('A="a # b" # c', {"A": "a # b"}),
    ('A="  padded  "', {"A": "  padded  "}),
    ("_A9=ok", {"_A9": "ok"}),
    ("export=1", {"export": "1"}),
    ("A=caf\u00e9", {"A": "caf\u00e9"}),
])
def test_values(line, expected):
    assert parse(line) == expected


def test_comments_blank_lines_crlf_bom_and_later_wins():
    text = "\ufeff# header\r\n\r\n   \nA=1\r\n  # indented comment\nB='x'\nA=2\n"
    assert parse(text) == {"A": "2", "B": "x"}


def test_file_order_is_kept():
    assert list(parse("Z=1\nA=2\nM=3")) == ["Z", "A", "M"]


@pytest.mark.parametrize("text, line, reason", [
    ("A=1\nnot an assignment", 2, 'expected KEY=VALUE, got "not an assignment"'),
    ("1A=x", 1, 'invalid key "1A"'),
    ("A-B=x", 1, 'invalid key "A-B"'),
    ("=x", 1, 'invalid key ""'),
    ("export =x", 1, 'invalid key ""'),
    ("A B=x", 1, 'invalid key "A B"'),
    ("\n\nA='open", 3, "unterminated single quote"),
    ('A="open', 1, "unterminated double quote"),
    ('A="ends with backslash\\"', 1, "unterminated double quote"),
    ("A='x' y", 1, 'unexpected text after the closing quote: "y"'),
    ('A="x"y', 1, 'unexpected text after the closing quote: "y"'),
    ("A=\0", 1, "A: NUL character in value"),
])
def test_bad_lines_name_file_line_and_reason(text, line, reason):
    with pytest.raises(DotenvError) as info:
        parse(text, "conf/.env")
    assert info.value.path == "conf/.env"
    assert info.value.line == line
    assert info.value.reason.startswith(reason)
    assert str(info.value).startswith(f"conf/.env:{line}: {reason}")


def test_load_reads_a_file(tmp_path):
    path = tmp_path / ".env"
    path.write_text("export DB_URL=postgres://localhost/app # local\nTOKEN='s3cr#t'\n")
    assert load(str(path)) == {"DB_URL": "postgres://localhost/app", "TOKEN": "s3cr#t"}


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.env")
    with pytest.raises(DotenvError) as info:
        load(path)
    assert info.value.line is None
    assert str(info.value) == f"{path}: no such file or directory"


def test_non_utf8_names_the_line(tmp_path):
    path = tmp_path / "bad.env"
    path.write_bytes(b"A=1\nB=\xff\n")
    with pytest.raises(DotenvError, match=r"bad\.env:2: not UTF-8 text"):
        load(str(path))


def test_layering_later_wins():
    server = {"PATH": "/bin", "A": "server", "B": "server", "C": "server"}
    files = [{"A": "file1", "B": "file1"}, {"B": "file2"}]
    result = layer(server, files, {"C": "env"})
    assert result == {"PATH": "/bin", "A": "file1", "B": "file2", "C": "env"}
    assert server["A"] == "server"  # inputs are not changed


def test_layering_env_over_files():
    assert layer({}, [{"A": "file"}], {"A": "env"}) == {"A": "env"}
