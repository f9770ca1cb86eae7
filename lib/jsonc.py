"""Read a JSONC file (JSON with comments and trailing commas; JSON5 accepted) and say where
in it a key path is, for error messages. Knows nothing of what the keys mean.

Parsing takes a fast path: comments and trailing commas are blanked out with spaces (so
offsets, lines and columns still point into the original file) and the rest goes to
`json.loads`. Only when that fails does the slow `json5` parser run, for JSON5-only syntax
or for its error message. Duplicate keys, non-finite numbers and integers too long for
Python are refused by hooks that both parsers call. Positions are computed by a small scan
of the text that runs only when there is an error to report.
"""
import json
import math
import os
import re
import stat
import sys


MAX_BYTES = 16 << 20  # a config is a few KiB; this bounds what a wrong path can cost


class JsoncError(ValueError):
    """A file that cannot be read or parsed; str() is the whole message, with the file."""


class Document:
    """A parsed file: its value, and the means to point at any key path in its text."""

    def __init__(self, file, value, blanked):
        self.file = file
        self.value = value
        self._blanked = blanked

    def error(self, path, message, at="value"):
        """`file:line:col: key.path: message`, pointing at the key (at="key") or its value;
        a path that is not in the text points at its nearest parent."""
        return _located(self.file, self._blanked, path, message, _Layout(self._blanked).offset(path, at))


def read(path):
    """Read and parse the JSONC file at `path`; raise JsoncError on any mistake."""
    file = os.fspath(path)
    text = _read_text(file)
    return Document(file, *_parse(text, file))


# Reading ---------------------------------------------------------------------------------


def _read_text(file):
    """The file's text. Only a regular file is read (a FIFO would block, /dev/zero never
    end) and only up to MAX_BYTES."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just after.
        descriptor = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise JsoncError(f"{file}: file not found") from None
    except OSError as error:
        raise JsoncError(f"{file}: cannot read: {error.strerror or error}") from None
    try:
        mode = os.fstat(descriptor).st_mode
        if stat.S_ISDIR(mode):
            raise JsoncError(f"{file}: is a directory, not a config file")
        if not stat.S_ISREG(mode):
            raise JsoncError(f"{file}: not a regular file")
        with open(descriptor, "rb", closefd=False) as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as error:
        raise JsoncError(f"{file}: cannot read: {error.strerror or error}") from None
    finally:
        os.close(descriptor)
    if len(data) > MAX_BYTES:
        raise JsoncError(f"{file}: larger than {MAX_BYTES >> 20} MiB, the limit for a config file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        line_start = data.rfind(b"\n", 0, error.start) + 1
        column = len(data[line_start:error.start].decode("utf-8")) + 1
        raise JsoncError(f"{file}:{line}:{column}: not valid UTF-8 (byte 0x{data[error.start]:02x})") from None
    return text.removeprefix("\ufeff")


# Parsing ---------------------------------------------------------------------------------

# Whitespace and comments. Possessive quantifiers: backtracking into a comment made the
# trailing-comma lookahead 200 times slower on a large file.
_SKIP = r"\s*+(?:(?://[^\n\r\u2028\u2029]*+|/\*.*?\*/)\s*+)*+"
_JSONC = re.compile(
    r"""(?P<keep>"[^"\\\n]*+(?:\\.[^"\\\n]*+)*+"|'[^'\\\n]*+(?:\\.[^'\\\n]*+)*+'"""  # strings
    rf"|[\[{{,]{_SKIP},{_SKIP}[\]}}])"  # a comma after nothing, as in {,}: invalid, kept
    r"|(?P<drop>//[^\n\r\u2028\u2029]*|/\*.*?\*/"  # comments
    rf"|,(?={_SKIP}[\]}}]))",  # trailing commas
    re.S,
)
_NOT_NEWLINE = re.compile(r"[^\n]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_JSON5_ERROR = re.compile(r"<string>:(\d+) Unexpected (.*) at column (\d+)", re.S)


def _blank_match(match):
    if match.lastgroup == "keep":
        return match.group()
    text = match.group()
    return _NOT_NEWLINE.sub(" ", text) if "\n" in text else " " * len(text)


def _blank(text):
    """`text` with comments and trailing commas replaced by spaces, newlines kept."""
    return _JSONC.sub(_blank_match, text)


class _DuplicateKey(Exception):
    """Raised by the object hook; not a ValueError, so both parsers let it through."""


class _BadNumber(Exception):
    """Raised for 1e999, Infinity and NaN (which would become floats) and for integers with
    more digits than Python converts."""


def _unique_object(pairs):
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _DuplicateKey
    return obj


def _finite_float(text):
    number = float(text)
    if not math.isfinite(number):
        raise _BadNumber
    return number


def _no_constant(text):
    raise _BadNumber


def _integer(text, base=10):
    try:
        return int(text, base)
    except ValueError:  # past sys.get_int_max_str_digits()
        raise _BadNumber from None


_HOOKS = {"object_pairs_hook": _unique_object, "parse_float": _finite_float,
          "parse_int": _integer, "parse_constant": _no_constant}


def _parse(text, file):
    """Parse JSONC `text`; return (value, blanked text for locating errors)."""
    blanked = _blank(text)
    if not blanked.strip():
        raise JsoncError(f"{file}:1:1: empty config: expected a JSON object")
    try:
        try:
            return json.loads(blanked, **_HOOKS), blanked
        except (ValueError, RecursionError):
            pass
        try:
            return _json5_loads(text), blanked
        except ValueError as error:
            raise JsoncError(_syntax_message(file, str(error))) from None
        except RecursionError:
            depth, offset = _deepest(blanked)
            raise JsoncError(_located(file, blanked, None, f"nested too deeply ({depth} levels)", offset)) from None
    except _DuplicateKey:
        layout = _Layout(blanked)
        if not layout.duplicates:
            raise JsoncError(f"{file}: duplicate key") from None
        path, offset = layout.duplicates[0]
        message = "duplicate key (first defined at line {}, column {})".format(*_line_col(blanked, layout.keys[path]))
        raise JsoncError(_located(file, blanked, path, message, offset)) from None
    except _BadNumber:
        layout = _Layout(blanked)
        if not layout.bad_numbers:
            raise JsoncError(f"{file}: numbers must be finite and at most {sys.get_int_max_str_digits()} digits long") from None
        path, offset, message = layout.bad_numbers[0]
        raise JsoncError(_located(file, blanked, path, message, offset)) from None


def _json5_loads(text):
    """The slow path: json5 with the same hooks, surrogate pairs joined as json.loads does.
    Imported here: most configs never need it, and the boot does not wait for its import."""
    import json5
    return _join_surrogates(json5.loads(text, **_HOOKS))


def _join_surrogates(value):
    """json5 keeps an escaped pair such as "\\ud83d\\ude00" as two characters: join them."""
    if isinstance(value, str):
        if not _SURROGATE.search(value):
            return value
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    if isinstance(value, list):
        return [_join_surrogates(item) for item in value]
    if isinstance(value, dict):
        joined = {_join_surrogates(key): _join_surrogates(item) for key, item in value.items()}
        if len(joined) != len(value):
            raise _DuplicateKey
        return joined
    return value


def _syntax_message(file, error):
    """json5's `<string>:L Unexpected X at column C` reshaped as `file:L:C: ...`."""
    match = _JSON5_ERROR.fullmatch(error)
    if not match:
        return f"{file}: {error}"
    line, thing, column = match.groups()
    if thing.startswith('"'):
        thing = json.dumps(thing[1:-1], ensure_ascii=False)
    return f"{file}:{line}:{column}: syntax error: unexpected {thing}"


# Locating --------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:([{}\[\]:,])"""  # 1: punctuation
    r"""|("[^"\\\n]*(?:\\.[^"\\\n]*)*"|'[^'\\\n]*(?:\\.[^'\\\n]*)*')"""  # 2: string
    r"""|([^\s{}\[\]:,"']+))""",  # 3: anything else (numbers, literals, JSON5 names)
    re.S,
)
_PUNCTUATION, _STRING, _WORD = 1, 2, 3


def _tokens(text):
    """(kind, token, offset) for each token of `text`."""
    position = 0
    while match := _TOKEN.match(text, position):
        yield match.lastindex, match.group(match.lastindex), match.start(match.lastindex)
        position = match.end()


def _deepest(text):
    """(depth, offset of the first bracket at that depth) of the most nested point."""
    depth = deepest = offset = 0
    for kind, token, start in _tokens(text):
        if token in "[{" and kind == _PUNCTUATION:
            depth += 1
            if depth > deepest:
                deepest, offset = depth, start
        elif token in "]}" and kind == _PUNCTUATION:
            depth -= 1
    return deepest, offset


def _key_text(kind, token):
    if kind != _STRING:
        return token
    try:
        return json.loads(token, strict=False)
    except ValueError:
        try:
            return _json5_loads(token)
        except ValueError:
            return token[1:-1]


def _number_problem(token):
    """Why a number token is refused (see _BadNumber), or None."""
    try:
        int(token)
        return None
    except ValueError as error:
        if "digits" in str(error):  # the only int() error that names digits
            return f"integer has {len(token.lstrip('+-'))} digits; the limit is {sys.get_int_max_str_digits()}"
    try:
        finite = math.isfinite(float(token))
    except ValueError:
        return None  # not a number
    return None if finite else f"must be a finite number, got {token}"


class _Layout:
    """Where the key and the value of each key path start in a blanked text (offsets)."""

    def __init__(self, text):
        self.keys = {}
        self.values = {}
        self.duplicates = []  # (path, offset) of keys repeated in their object, text order
        self.bad_numbers = []  # (path, offset, message)
        self._tokens = list(_tokens(text))
        try:
            self._value(0, ())
        except RecursionError:
            pass  # keep what was found before the nesting got too deep

    def _value(self, i, path):
        if i >= len(self._tokens):
            return i
        kind, token, offset = self._tokens[i]
        self.values.setdefault(path, offset)
        if token == "{":
            return self._object(i + 1, path)
        if token == "[":
            return self._array(i + 1, path)
        if kind == _WORD and (problem := _number_problem(token)):
            self.bad_numbers.append((path, offset, problem))
        return i + 1

    def _object(self, i, path):
        seen = set()
        while i < len(self._tokens):
            kind, token, offset = self._tokens[i]
            if token == ",":
                i += 1
                continue
            if kind == _PUNCTUATION:
                return i + 1  # "}" (or a stray mark, in text that did not parse)
            child = path + (_key_text(kind, token),)
            if child[-1] in seen:
                self.duplicates.append((child, offset))
            seen.add(child[-1])
            self.keys.setdefault(child, offset)
            i += 1
            if i < len(self._tokens) and self._tokens[i][1] == ":":
                i = self._value(i + 1, child)
        return i

    def _array(self, i, path):
        index = 0
        while i < len(self._tokens):
            token = self._tokens[i][1]
            if token == "]":
                return i + 1
            if token == ",":
                i += 1
                continue
            i = self._value(i, path + (index,))
            index += 1
        return i

    def offset(self, path, at):
        """The key's offset (at="key") or the value's; else where the nearest parent starts."""
        if at == "key" and path in self.keys:
            return self.keys[path]
        while path not in self.values and path:
            path = path[:-1]
        return self.values.get(path)


def _line_col(text, offset):
    return text.count("\n", 0, offset) + 1, offset - text.rfind("\n", 0, offset)


def render_path(path):
    """Key path as `services.api.cmd[0]`; empty or unprintable keys are quoted."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            shown = part if part and part.isprintable() else json.dumps(part, ensure_ascii=False)
            text += ("." if text else "") + shown
    return text or "top level"


def _located(file, blanked, path, message, offset):
    """`file:line:col: key.path: message`, without line and column when `offset` is None
    and without a key path when `path` is None."""
    where = file if offset is None else "{}:{}:{}".format(file, *_line_col(blanked, offset))
    return f"{where}: {message}" if path is None else f"{where}: {render_path(path)}: {message}"
