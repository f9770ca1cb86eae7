"""dotenv files for `envFile` (SPEC 6.1), and the layering of a service's environment.

Syntax, one assignment per line:
- `KEY=VALUE`, optionally prefixed by `export `; whitespace around the key, after `=` and
  at the end of the line is ignored. Keys: `[A-Za-z_][A-Za-z0-9_]*`.
- Blank lines and lines starting with `#` are skipped; in an unquoted value, a `#` after
  whitespace starts a comment (`A=b #note` is `b`, `A=b#c` is `b#c`).
- `'single quotes'`: taken literally. `"double quotes"`: `\\n` is a newline, `\\"` a quote,
  `\\\\` a backslash; any other backslash is kept as written (`"C:\\temp"` stays `C:\\temp`).
  A quoted value ends on its line; only whitespace or a `#` comment may follow it.
- No variable expansion: `$HOME` stays `$HOME`. A key given twice: the later line wins.
A bad line raises DotenvError, whose text is `<file>:<line>: <reason>`."""
import re

KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
ESCAPES = {"n": "\n", '"': '"', "\\": "\\"}


class DotenvError(ValueError):
    """A dotenv file that cannot be read or has a bad line; `line` is None for the former."""

    def __init__(self, path, line, reason):
        self.path, self.line, self.reason = path, line, reason
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {reason}")


def load(path):
    """The variables of the dotenv file at `path`, in file order."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise DotenvError(path, None, (error.strerror or str(error)).lower()) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise DotenvError(path, line, "not UTF-8 text") from None
    return parse(text, path)


def parse(text, path="<string>"):
    """The variables of dotenv `text`; `path` only names the file in errors."""
    variables = {}
    for number, line in enumerate(text.removeprefix("\ufeff").split("\n"), 1):
        try:
            assignment = _parse_line(line.removesuffix("\r"))
        except ValueError as error:
            raise DotenvError(path, number, str(error)) from None
        if assignment:
            variables[assignment[0]] = assignment[1]
    return variables


def _parse_line(line):
    """(key, value) of one line, or None for a blank or comment line."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    if re.match(r"export\s", stripped):
        stripped = stripped[len("export"):].lstrip()
    key, equals, rest = stripped.partition("=")
    key = key.strip()
    if not equals:
        raise ValueError(f'expected KEY=VALUE, got "{_short(stripped)}"')
    if not KEY.match(key):
        raise ValueError(f'invalid key "{_short(key)}" (letters, digits and _, not starting with a digit)')
    value = _parse_value(rest.lstrip())
    if "\0" in value:
        raise ValueError(f"{key}: NUL character in value")
    return key, value


def _parse_value(text):
    if text[:1] == "'":
        end = text.find("'", 1)
        if end < 0:
            raise ValueError("unterminated single quote")
        value, after = text[1:end], text[end + 1:]
    elif text[:1] == '"':
        value, after = _double_quoted(text)
    else:
        comment = re.search(r"\s#", text)
        return (text[:comment.start()] if comment else text).rstrip()
    after = after.strip()
    if after and not after.startswith("#"):
        raise ValueError(f'unexpected text after the closing quote: "{_short(after)}"')
    return value


def _double_quoted(text):
    """(value, text after the closing quote) of `text`, which starts with a double quote."""
    chars = []
    index = 1
    while index < len(text):
        char = text[index]
        if char == '"':
            return "".join(chars), text[index + 1:]
        if char == "\\" and index + 1 < len(text) and text[index + 1] in ESCAPES:
            chars.append(ESCAPES[text[index + 1]])
            index += 2
            continue
        chars.append(char)
        index += 1
    raise ValueError("unterminated double quote")


def _short(text, limit=40):
    return text if len(text) <= limit else text[:limit] + "..."


def layer(server_env, file_variables, env):
    """The environment a service runs with: the server's, then each envFile's variables in
    order, then `env`; a later layer wins."""
    merged = dict(server_env)
    for variables in file_variables:
        merged.update(variables)
    merged.update(env)
    return merged
