"""Service output as the terminal client shows it: styled runs, removed escapes, CR and
tabs, colours mapped to the terminal's, and the colour pairs curses gets."""
import unicodedata

import pytest
from hypothesis import given, strategies as st

from lib.ansi import (BOLD, DIM, PLAIN, REVERSE, UNDERLINE, Line, Palette, Style, Terminal,
                      is_blank, nearest, parse, pieces, plain, rgb_of)

E = "\x1b"


def styled(message):
    """[(text, style)] of each run, the easiest form to compare."""
    line = parse(message)
    return [(line.text[start:end], style) for start, end, style in line.runs]


# ---- SGR --------------------------------------------------------------------------------------

@pytest.mark.parametrize("codes, style", [
    ("1", Style(flags=BOLD)), ("2", Style(flags=DIM)), ("4", Style(flags=UNDERLINE)),
    ("7", Style(flags=REVERSE)), ("1;4;7", Style(flags=BOLD | UNDERLINE | REVERSE)),
    ("31", Style(fg=1)), ("37", Style(fg=7)), ("91", Style(fg=9)), ("97", Style(fg=15)),
    ("42", Style(bg=2)), ("107", Style(bg=15)), ("1;33;44", Style(3, 4, BOLD)),
    ("38;5;208", Style(fg=208)), ("48;5;17", Style(bg=17)),
    ("38;2;10;20;30", Style(fg=(10, 20, 30))), ("48;2;255;0;128", Style(bg=(255, 0, 128))),
    ("38:5:208", Style(fg=208)), ("38:2::10:20:30", Style(fg=(10, 20, 30))),
    ("38:2:10:20:30", Style(fg=(10, 20, 30))), ("48:5:3;1", Style(bg=3, flags=BOLD)),
    ("4:3", Style(flags=UNDERLINE)),
    ("38;5;300;1", Style(flags=BOLD)),        # an index out of range is ignored
    ("38;2;1;2", Style()),                    # cut short
    ("38;9;31", Style(fg=1)),                 # unknown colour kind: `9` is taken, no more
    ("3;5;9;53", Style()),                    # italic, blink, strike, overline: not drawn
    ("99999999999999999999;1", Style(flags=BOLD)),
])
def test_sgr_codes_set_the_style(codes, style):
    assert styled(f"{E}[{codes}mx") == [("x", style)]


@pytest.mark.parametrize("codes, style", [
    ("0", PLAIN), ("", PLAIN), (";", PLAIN), ("22", Style(1, 2, UNDERLINE | REVERSE)),
    ("24", Style(1, 2, BOLD | DIM | REVERSE)), ("27", Style(1, 2, BOLD | DIM | UNDERLINE)),
    ("4:0", Style(1, 2, BOLD | DIM | REVERSE)), ("39", Style(None, 2, 15)),
    ("49", Style(1, None, 15)), ("39;49", Style(flags=15)),
])
def test_sgr_codes_turn_the_style_off(codes, style):
    message = f"{E}[1;2;4;7;31;42ma{E}[{codes}mb"
    assert styled(message)[-1] == ("b", style)


def test_a_typical_coloured_line_keeps_its_text_and_colours():
    message = f"{E}[32mPASSED{E}[0m tests/test_x.py::test_y {E}[1m[ 10%]{E}[0m"
    assert styled(message) == [("PASSED", Style(fg=2)), (" tests/test_x.py::test_y ", PLAIN),
                               ("[ 10%]", Style(flags=BOLD))]
    assert plain(message) == "PASSED tests/test_x.py::test_y [ 10%]"


def test_runs_are_merged_when_the_style_does_not_change():
    assert parse(f"{E}[31ma{E}[31mb{E}[1;22mc").runs == ((0, 3, Style(fg=1)),)


# ---- everything else is removed ------------------------------------------------------------

@pytest.mark.parametrize("message, text", [
    (f"a{E}[2Kb{E}[1;1Hc{E}[?25ld{E}[>4;2me", "abcde"),  # other CSI, private `m`
    (f"{E}]0;title{E}\\x", "x"), (f"{E}]0;title\x07x", "x"),          # OSC to ST or BEL
    (f"{E}]8;;https://e.org{E}\\link{E}]8;;{E}\\ done", "link done"),  # a hyperlink
    (f"{E}Pq#0;2{E}\\x", "x"), (f"{E}_apc\x07x", "x"),                 # DCS, APC
    (f"{E}(Bx{E}7y{E}8{E}=z{E}c", "xyz"),                             # single-character
    (f"x{E}", "x"), (f"x{E}\x01y", "xy"), (f"x{E}[31", "x"),         # lone ESC, cut short
    (f"x{E}]unterminated", "x"), (f"a{E}]0;t\rt\x07b", "ab"),        # a CR inside: no CR
    ("a\x00b\x07c\x08d\x0be\x7ff\x85g\x9bh\ni", "abcdefghi"),          # other controls
])
def test_other_sequences_and_controls_are_removed(message, text):
    assert plain(message) == text


# ---- terminal-like text ----------------------------------------------------------------------

@pytest.mark.parametrize("message, text", [
    ("old\rnew", "new"), ("10%\r20%\r30%", "30%"), ("\rx", "x"),
    ("done\r", "done"), ("done\r\r", "done"), (f"done\r{E}[K", "done"),  # nothing after it
    ("long line\rab", "ab"), ("50%\r   ", ""),
])
def test_a_lone_cr_keeps_the_text_after_the_last_one(message, text):
    assert plain(message) == text


def test_the_style_at_the_cr_carries_over_and_earlier_runs_go():
    message = f"{E}[32mok {E}[1mbold\r{E}[4mnew\t|"
    assert styled(message) == [("new     |", Style(fg=2, flags=BOLD | UNDERLINE))]
    assert styled(f"{E}[31mred\rplain{E}[0m!") == [("plain", Style(fg=1)), ("!", PLAIN)]


@pytest.mark.parametrize("message, text", [
    ("\tx", "        x"), ("a\tb", "a       b"), ("1234567\tx", "1234567 x"),
    ("12345678\tx", "12345678        x"), ("a\t\tb", "a               b"),
    ("日本\tx", "日本    x"),             # wide characters take two columns
    ("12345\rab\tx", "ab      x"),       # columns count from the CR
])
def test_tabs_expand_to_8_column_stops(message, text):
    assert plain(message) == text


def test_a_tab_takes_the_style_in_effect():
    assert styled(f"a{E}[41m\tb") == [("a", PLAIN), ("       b", Style(bg=1))]


@pytest.mark.parametrize("message, blank", [
    ("", True), ("   ", True), ("\t", True), (f"{E}[0m", True), (f" {E}[31m \t{E}[0m", True),
    ("x\r  ", True), ("\x07", True), ("\x07  ", True),
    (" x ", False), (f"{E}[31mx", False), ("x\r", False),
])
def test_whitespace_only_lines_are_blank(message, blank):
    assert is_blank(message) is blank


def test_trailing_blanks_are_dropped_with_their_runs():
    assert parse(f"x{E}[41m   ") == Line("x", ((0, 1, PLAIN),))
    assert parse("x   ") == Line("x", ((0, 1, PLAIN),))


def test_pieces_split_a_wrapped_row_where_the_style_changes():
    line = parse(f"ab{E}[31mcdef{E}[0mgh")
    assert pieces(line, 0, 3) == [("ab", PLAIN), ("c", Style(fg=1))]
    assert pieces(line, 3, 8) == [("def", Style(fg=1)), ("gh", PLAIN)]
    assert pieces(line, 8, 8) == []


# ---- properties ------------------------------------------------------------------------------

_GARBAGE = st.lists(st.sampled_from(
    [E, "[", "]", "m", ";", ":", "0", "1", "2", "3", "5", "8", "9", "38", "48", "\x07", "\\",
     "\r", "\t", "\n", " ", "x", "日", "\x9b", "\x00", "?", ">", "K", "P", "(", "\u3000"]),
    max_size=60).map("".join) | st.text(max_size=60)


def check_line(line):
    text, runs = line
    assert not any(unicodedata.category(c) == "Cc" for c in text)
    assert text == text.rstrip()
    if not text:
        assert runs == ()
        return
    assert runs[0][0] == 0 and runs[-1][1] == len(text)
    for (start, end, style), following in zip(runs, runs[1:] + ((len(text), None, None),)):
        assert start < end == following[0]
        assert style != following[2]
        assert isinstance(style, Style)


@given(_GARBAGE)
def test_any_input_gives_clean_text_and_exact_runs(message):
    line = parse(message)
    check_line(line)
    assert plain(message) == line.text
    assert is_blank(message) is (line.text == "")


@given(_GARBAGE, st.lists(st.integers(0, 70), max_size=5))
def test_rows_cut_anywhere_draw_the_text_in_its_styles(message, cuts):
    line = parse(message)
    bounds = sorted({0, len(line.text), *(min(c, len(line.text)) for c in cuts)})
    drawn = [piece for start, end in zip(bounds, bounds[1:]) for piece in pieces(line, start, end)]
    assert "".join(text for text, _ in drawn) == line.text
    by_char = [style for start, end, style in line.runs for _ in range(start, end)]
    assert [style for text, style in drawn for _ in text] == by_char


@given(st.text(max_size=60))
def test_printable_text_takes_the_fast_path_to_the_same_result(message):
    assert parse(message) == parse(message + f"{E}[0m")  # the suffix forces the full parser


@given(st.lists(st.tuples(st.text(st.characters(codec="ascii", categories=["L", "N", "P", "S"]),
                                  max_size=8),
                          st.sampled_from(["0", "1", "31", "1;4", "38;5;9", "48;2;1;2;3",
                                           "38:5:200", "22", "7"])), max_size=8))
def test_filters_see_the_text_without_its_escapes(parts):
    message = "".join(f"{E}[{codes}m{text}" for text, codes in parts)
    assert plain(message) == "".join(text for text, _ in parts).rstrip()


# ---- colours ---------------------------------------------------------------------------------

@pytest.mark.parametrize("colour, colours, index", [
    (5, 8, 5), (13, 8, 5), (13, 16, 13), (200, 256, 200),
    ((255, 0, 0), 256, 196), ((255, 0, 0), 16, 9), ((255, 0, 0), 8, 1),
    ((128, 128, 128), 256, 244), ((0, 0, 0), 256, 16), ((250, 250, 250), 8, 7),
    (196, 16, 9), (196, 8, 1), (232, 16, 0), (21, 8, 4), ((10, 10, 200), 88, 4),
])
def test_nearest_maps_a_colour_to_what_the_terminal_has(colour, colours, index):
    assert nearest(colour, colours) == index


@pytest.mark.parametrize("colours", [8, 16, 256])
def test_nearest_keeps_every_colour_the_terminal_has(colours):
    first = 16 if colours == 256 else 0
    kept = range(first, colours)
    assert [nearest(rgb_of(i), colours) for i in kept] == list(kept)


_RGB = st.tuples(*[st.integers(0, 255)] * 3)


@given(st.integers(0, 255) | _RGB, st.sampled_from([8, 16, 88, 256]))
def test_nearest_is_always_a_colour_of_the_terminal(colour, colours):
    assert 0 <= nearest(colour, colours) < min(colours, 256)


class FakeTerminal:
    """The curses side of a Palette, recorded."""

    def __init__(self, colors=256, pairs=256, first_pair=6, accept=True, default=(-1, -1)):
        self.calls = []
        self.accept = accept
        self.terminal = Terminal(colors, pairs, first_pair, self.init_pair, lambda n: n << 8,
                                 bold=1, dim=2, underline=4, reverse=8,
                                 default_fg=default[0], default_bg=default[1])

    def init_pair(self, number, fg, bg):
        self.calls.append((number, fg, bg))
        return self.accept


def test_pairs_are_allocated_on_first_use_and_shared_by_colours_that_map_alike():
    fake = FakeTerminal(colors=16)
    palette = Palette(fake.terminal)
    assert fake.calls == []
    assert palette.attr(Style(fg=1)) == 6 << 8
    assert palette.attr(Style(fg=(205, 0, 0), flags=BOLD)) == 6 << 8 | 1  # red again
    assert palette.attr(Style(fg=2, bg=(0, 0, 238))) == 7 << 8
    assert palette.attr(Style(bg=4, flags=UNDERLINE | REVERSE)) == 8 << 8 | 4 | 8
    assert fake.calls == [(6, 1, -1), (7, 2, 4), (8, -1, 4)]


def test_styles_without_colour_keep_the_base_attribute():
    palette = Palette(FakeTerminal().terminal)
    red = 0x100
    assert palette.attr(PLAIN, red) == red
    assert palette.attr(Style(flags=BOLD | DIM), red) == red | 1 | 2
    assert palette.attr(Style(fg=4), red) == 6 << 8


def test_without_white_on_default_the_defaults_are_white_on_black():
    fake = FakeTerminal(default=(7, 0))
    Palette(fake.terminal).attr(Style(fg=1))
    assert fake.calls == [(6, 1, 0)]


def test_when_pairs_run_out_or_are_refused_only_the_attributes_remain():
    fake = FakeTerminal(pairs=8)
    palette = Palette(fake.terminal)
    assert [palette.attr(Style(fg=n, flags=BOLD), 0x10) for n in (1, 2, 3)] == [
        6 << 8 | 1, 7 << 8 | 1, 0x10 | 1]
    refused = FakeTerminal(accept=False)
    palette = Palette(refused.terminal)
    assert palette.attr(Style(fg=1), 0x10) == palette.attr(Style(fg=1), 0x10) == 0x10
    assert refused.calls == [(6, 1, -1)]  # asked once


def test_without_colours_no_pair_is_asked_for():
    fake = FakeTerminal(colors=0, pairs=0)
    assert Palette(fake.terminal).attr(Style(fg=(1, 2, 3), bg=4, flags=REVERSE)) == 8
    assert fake.calls == []


@given(st.lists(st.builds(Style, st.none() | st.integers(0, 255) | _RGB,
                          st.none() | st.integers(0, 255), st.integers(0, 15)), max_size=40),
       st.sampled_from([0, 8, 16, 256]))
def test_pair_numbers_stay_in_the_terminals_range(styles, colours):
    fake = FakeTerminal(colors=colours, pairs=min(64, colours * colours) if colours else 0)
    palette = Palette(fake.terminal)
    for style in styles:
        palette.attr(style)
    assert all(6 <= number < 64 and -1 <= fg < colours and -1 <= bg < colours
               for number, fg, bg in fake.calls)
    assert len({(fg, bg) for _, fg, bg in fake.calls}) == len(fake.calls)


# ---- on a real terminal ----------------------------------------------------------------------

DRAW = """\
import curses, sys
sys.path.insert(0, {root!r})
from lib.ansi import Palette, curses_terminal, parse, pieces

def draw(screen, y, palette):
    line = parse({message!r})
    x = 0
    for text, style in pieces(line, 0, len(line.text)):
        screen.addstr(y, x, text, palette.attr(style))
        x += len(text)

def main(screen):
    draw(screen, 1, Palette(curses_terminal(first_pair=6, color=False)))
    curses.start_color()
    curses.use_default_colors()
    draw(screen, 0, Palette(curses_terminal(first_pair=6)))
    screen.addstr(2, 0, "drawn")
    screen.refresh()
    screen.getch()

curses.wrapper(main)
"""


def test_colours_reach_a_real_terminal(tmp_path):
    from conftest import ROOT
    from tui_helpers import Tui
    message = (f"{E}[31mred{E}[0m {E}[1;4mbu{E}[0m {E}[38;5;208mor{E}[0m "
               f"{E}[38;2;0;0;255;7mrv{E}[0m{E}]0;t\x07")
    script = tmp_path / "draw.py"
    script.write_text(DRAW.format(root=ROOT, message=message))
    tui = Tui([], cols=40, rows=5, program=str(script))
    try:
        tui.wait_for("drawn")
        assert tui.line(0).rstrip() == "red bu or rv"
        red, bu, orange, rv = (tui.cell(0, x) for x in (0, 4, 7, 10))
        assert red.fg == "red" and not red.bold
        assert bu.bold and bu.underscore and bu.fg == "default"
        assert orange.fg == "ff8700"                     # 256-colour index 208
        assert rv.reverse and rv.fg == "0000ff"          # true colour -> index 21
        assert tui.line(1).rstrip() == "red bu or rv"     # without colour: attributes only
        red, bu, orange, rv = (tui.cell(1, x) for x in (0, 4, 7, 10))
        assert red.fg == orange.fg == rv.fg == "default"
        assert bu.bold and bu.underscore and rv.reverse
        tui.send("q")
        assert tui.wait_exit() == 0
    finally:
        tui.close()
