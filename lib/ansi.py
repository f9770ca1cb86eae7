"""Service output as a terminal shows it: SGR colours kept as styled runs, every other
escape sequence and control character removed, a lone CR and tabs treated as a terminal
treats them, colours mapped to what the terminal has.

No curses here at import time: `Palette` reaches the terminal through a `Terminal`
(`curses_terminal()` builds the real one), so all of it runs without a screen.
"""
import re
import unicodedata
from functools import lru_cache
from typing import Callable, NamedTuple

BOLD, DIM, UNDERLINE, REVERSE = 1, 2, 4, 8
TAB_STOP = 8


class Style(NamedTuple):
    """`fg`, `bg`: None (the terminal's default), a palette index 0-255 (0-15 are the 16
    basic colours) or an (r, g, b) tuple; `flags`: BOLD | DIM | UNDERLINE | REVERSE."""
    fg: object = None
    bg: object = None
    flags: int = 0


PLAIN = Style()


class Line(NamedTuple):
    """`text`: what the screen shows (no escapes, no controls, tabs expanded, no trailing
    blanks); `runs`: ((start, end, Style), ...) covering `text` in order, adjacent runs
    differing in style; empty when `text` is."""
    text: str
    runs: tuple


# ---- widths (cells on the screen) ------------------------------------------------------------

def char_width(char):
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in "WF" else 1


def text_width(text):
    return len(text) if text.isascii() else sum(map(char_width, text))


# ---- parsing ---------------------------------------------------------------------------------

_OTHER = (
    r"\x1b\[[0-?]*[ -/]*(?:[@-~]|\Z)"             # CSI; cut short at the end: dropped
    r"|\x1b[\]PX^_][^\x07\x1b]*(?:\x07|\x1b\\)?"   # OSC, DCS, SOS, PM, APC to BEL or ST
    r"|\x1b[ -/]*[0-~]?"                           # other escapes, a lone ESC
    r"|[\x00-\x1f\x7f-\x9f]")                      # controls (tab and CR kept apart)
_SPECIAL = re.compile(rf"(\x1b\[([0-9;:]*)m|{_OTHER})")  # SGR parameters are group 2
# Nothing but sequences and blanks, to the first character that shows (no groups: re
# mishandles groups under a possessive repeat).
_BLANK = re.compile(rf"(?:{_OTHER}|\s)*+")


def parse(message):
    """The `Line` a log message shows as. Printable text (no ESC, CR, tab or other
    control) takes one `str.isprintable` call and comes back as it is, less trailing
    blanks.

    A CR that has text after it starts the line again: only the text written after the
    last such CR is kept (the terminal's overwrite, simplified), in the style in effect
    at that point; a CR with nothing visible after it is ignored. Tabs become spaces up
    to the next multiple of 8 cells, counted from where the kept text starts, in the
    style in effect at the tab."""
    if message.isprintable():
        text = message.rstrip()
        return Line(text, ((0, len(text), PLAIN),) if text else ())
    return _parse_special(message)


def plain(message):
    """`parse(message).text`, what filters match against; without CR and tab, removing
    the sequences is all there is to do."""
    if message.isprintable():
        return message.rstrip()
    if "\r" in message or "\t" in message:
        return _parse_special(message).text
    return _SPECIAL.sub("", message).rstrip()


def is_blank(message):
    """Whether the message shows as nothing but blanks (such a line gets no row). Without
    a CR the answer is known at the first character that shows, a few characters in."""
    if "\r" in message:
        return not _parse_special(message).text
    return _BLANK.fullmatch(message) is not None


def _parse_special(message):
    parts = _SPECIAL.split(message)  # text, (token, SGR parameters or None, text) * n
    tabs = "\t" in message
    texts, runs = [], []
    length = column = 0
    style = PLAIN
    restart = False  # a CR came after some text: the next text starts the line again
    index, last = 0, len(parts) - 1
    while True:
        text = parts[index]
        if text:
            if restart:
                texts.clear()
                runs.clear()
                length = column = 0
                restart = False
            texts.append(text)
            start, length = length, length + len(text)
            if tabs:
                column += text_width(text)
            if runs and runs[-1][2] == style:
                runs[-1][1] = length
            else:
                runs.append([start, length, style])
        if index == last:
            break
        token, params = parts[index + 1], parts[index + 2]
        index += 3
        if params is not None:
            style = _sgr(params, style)
        elif token == "\t":  # spaces to the stop, in front of the text that follows
            parts[index] = " " * (TAB_STOP - (0 if restart else column) % TAB_STOP) + parts[index]
        elif token == "\r":
            restart = length > 0
    text = "".join(texts).rstrip()
    while runs and runs[-1][0] >= len(text):
        runs.pop()
    if runs:
        runs[-1][1] = len(text)
    return Line(text, tuple(map(tuple, runs)))


def _numbers(code):
    """The parts of a colon-form parameter: empty means 0; absurdly long is unknown (-1)."""
    return [int(part or 0) if len(part) < 10 else -1 for part in code.split(":")]


@lru_cache(maxsize=1024)
def _sgr(params, style):
    """The style after `ESC [ params m`; unknown codes are ignored, as terminals do."""
    fg, bg, flags = style
    codes = [_numbers(code) if ":" in code else int(code or 0) if len(code) < 10 else -1
             for code in params.split(";")]
    index = 0
    while index < len(codes):
        code = codes[index]
        index += 1
        if isinstance(code, list):  # colon form: 38:5:n, 38:2:[space]:r:g:b, 4:n
            head, rest = code[0], code[1:]
            if head == 4:
                flags = flags | UNDERLINE if rest[0] else flags & ~UNDERLINE
            elif head in (38, 48):
                if rest[:1] == [2] and len(rest) >= 5:
                    rest = [2] + rest[2:5]  # drop the colour space id
                fg, bg = _set(head, _extended(rest)[0], fg, bg)
        elif code == 0:
            fg, bg, flags = None, None, 0
        elif code in _FLAG_ON:
            flags |= _FLAG_ON[code]
        elif code in _FLAG_OFF:
            flags &= ~_FLAG_OFF[code]
        elif 30 <= code <= 37 or 90 <= code <= 97:
            fg = code - 30 if code < 90 else code - 82
        elif 40 <= code <= 47 or 100 <= code <= 107:
            bg = code - 40 if code < 100 else code - 92
        elif code == 39:
            fg = None
        elif code == 49:
            bg = None
        elif code in (38, 48):
            colour, used = _extended(codes[index:index + 4])
            index += used
            fg, bg = _set(code, colour, fg, bg)
    return Style(fg, bg, flags)


_FLAG_ON = {1: BOLD, 2: DIM, 4: UNDERLINE, 7: REVERSE}
_FLAG_OFF = {22: BOLD | DIM, 24: UNDERLINE, 27: REVERSE}


def _set(code, colour, fg, bg):
    """(fg, bg) after an extended colour for 38 (fg) or 48 (bg); an invalid one changes
    nothing."""
    if colour is None:
        return fg, bg
    return (colour, bg) if code == 38 else (fg, colour)


def _byte(value):
    return type(value) is int and 0 <= value <= 255


def _extended(values):
    """(colour or None when invalid, how many values it took) for `5;n` or `2;r;g;b`."""
    kind = values[0] if values else None
    if kind == 5:
        index = values[1] if len(values) > 1 else None
        return (index if _byte(index) else None), 2
    if kind == 2:
        rgb = tuple(values[1:4])
        return (rgb if len(rgb) == 3 and all(map(_byte, rgb)) else None), 4
    return None, 1


def pieces(line, start, end):
    """[(text, style)] of `line.text[start:end]`, split where the style changes: what one
    wrapped row of the line draws."""
    text = line.text
    out = []
    for run_start, run_end, style in line.runs:
        if run_end <= start:
            continue
        if run_start >= end:
            break
        out.append((text[max(start, run_start):min(end, run_end)], style))
    return out


# ---- colours ---------------------------------------------------------------------------------

# xterm's defaults for the 16 basic colours, the reference for matching colours to them.
_BASIC = ((0, 0, 0), (205, 0, 0), (0, 205, 0), (205, 205, 0), (0, 0, 238), (205, 0, 205),
          (0, 205, 205), (229, 229, 229), (127, 127, 127), (255, 0, 0), (0, 255, 0),
          (255, 255, 0), (92, 92, 255), (255, 0, 255), (0, 255, 255), (255, 255, 255))
_LEVELS = (0, 95, 135, 175, 215, 255)  # the 6x6x6 cube of indexes 16-231


def rgb_of(index):
    """The (r, g, b) of a 256-colour index (xterm's palette)."""
    if index < 16:
        return _BASIC[index]
    if index < 232:
        index -= 16
        return _LEVELS[index // 36], _LEVELS[index // 6 % 6], _LEVELS[index % 6]
    gray = 8 + 10 * (index - 232)
    return gray, gray, gray


def _distance(a, b):
    """Squared distance weighted for the eye ("redmean")."""
    mean = (a[0] + b[0]) / 2
    red, green, blue = a[0] - b[0], a[1] - b[1], a[2] - b[2]
    return (2 + mean / 256) * red * red + 4 * green * green + (2 + (255 - mean) / 256) * blue * blue


def _level(value):
    """The nearest of the cube's six levels (the midpoints are 47.5, 115, 155, ...)."""
    return 0 if value < 48 else 1 if value < 115 else (value - 35) // 40


@lru_cache(maxsize=4096)
def nearest(colour, colours):
    """The colour index, below `colours` (what the terminal has: 8, 16, 256; 88 counts as
    16), closest to `colour` (an index 0-255 or an (r, g, b) tuple). Indexes the terminal
    has are kept; a bright basic colour on 8 colours becomes its normal one; on 256
    colours an RGB goes to the cube or the gray ramp (16-255), never to the 16 basic
    colours, whose look each terminal themes."""
    limit = 256 if colours >= 256 else 16 if colours >= 16 else 8
    if isinstance(colour, int):
        if colour < limit:
            return colour
        if colour < 16:
            return colour - 8
        colour = rgb_of(colour)
    if limit < 256:
        return min(range(limit), key=lambda i: _distance(colour, _BASIC[i]))
    red, green, blue = colour
    cube = 16 + 36 * _level(red) + 6 * _level(green) + _level(blue)
    gray = 232 + min(23, max(0, round((sum(colour) / 3 - 8) / 10)))
    return min((cube, gray), key=lambda i: _distance(colour, rgb_of(i)))


class Terminal(NamedTuple):
    """What `Palette` needs from curses: `colors` (curses.COLORS; 0 for no colour),
    colour pairs `first_pair` up to `pairs` - 1 free for it, `init_pair(n, fg, bg) -> bool`
    (False when the terminal refused), `color_pair(n) -> attribute`, the attribute bits,
    and the colours that stand for the default foreground and background."""
    colors: int
    pairs: int
    first_pair: int
    init_pair: Callable
    color_pair: Callable
    bold: int
    dim: int
    underline: int
    reverse: int
    default_fg: int = -1
    default_bg: int = -1


def curses_terminal(first_pair, color=True, default_colors=True):
    """The `Terminal` of the running curses screen. With `color` (only after
    `start_color`), colours from `first_pair` up; -1 stands for the defaults when
    `use_default_colors` worked (`default_colors`), else white on black. Without `color`
    (NO_COLOR, a terminal without colours) only the attributes. Pairs stop at 255: an
    attribute holds no higher pair number."""
    import curses

    def init_pair(number, fg, bg):
        try:
            curses.init_pair(number, fg, bg)
        except curses.error:
            return False
        return True

    colors = curses.COLORS if color else 0
    defaults = (-1, -1) if default_colors else (curses.COLOR_WHITE, curses.COLOR_BLACK)
    return Terminal(colors, min(curses.COLOR_PAIRS, 256) if colors else 0, first_pair,
                    init_pair, curses.color_pair, curses.A_BOLD, curses.A_DIM,
                    curses.A_UNDERLINE, curses.A_REVERSE, *defaults)


class Palette:
    """Curses attributes for styles. A colour pair is set up the first time a (fg, bg)
    combination, mapped to the terminal's colours, is drawn; when the pairs run out (or
    the terminal has no colours) a style keeps its bold/dim/underline/reverse only."""

    MAX_CACHED = 4096

    def __init__(self, terminal):
        self.terminal = terminal
        self._next_pair = terminal.first_pair
        self._pairs = {}   # (fg index, bg index) -> attribute, or 0 when unavailable
        self._attrs = {}   # (Style, base) -> attribute
        self._flags = [sum(bit for flag, bit in ((BOLD, terminal.bold), (DIM, terminal.dim),
                                                 (UNDERLINE, terminal.underline),
                                                 (REVERSE, terminal.reverse)) if flags & flag)
                       for flags in range(16)]

    def attr(self, style, base=0):
        """The attribute to draw `style` with; `base` (say, the stream's attribute) is kept
        when the style sets no colour of its own, and used alone for PLAIN."""
        if style == PLAIN:
            return base
        key = (style, base)
        attr = self._attrs.get(key)
        if attr is None:
            if len(self._attrs) >= self.MAX_CACHED:
                self._attrs.clear()
            attr = self._attrs[key] = self._resolve(style, base)
        return attr

    def _resolve(self, style, base):
        flags = self._flags[style.flags]
        if style.fg is None and style.bg is None:
            return base | flags
        pair = self._pair(style.fg, style.bg)
        return (pair | flags) if pair else (base | flags)

    def _pair(self, fg, bg):
        terminal = self.terminal
        if terminal.colors < 8:
            return 0
        key = (terminal.default_fg if fg is None else nearest(fg, terminal.colors),
               terminal.default_bg if bg is None else nearest(bg, terminal.colors))
        if key not in self._pairs:
            number = self._next_pair
            if number < terminal.pairs and terminal.init_pair(number, *key):
                self._next_pair += 1
                self._pairs[key] = terminal.color_pair(number)
            else:
                self._pairs[key] = 0
        return self._pairs[key]
