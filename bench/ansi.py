"""The colour parser of the terminal client: lines per second, and what that costs the
client at 20,000 lines/s.

    python3 bench/ansi.py [--rate 20000] [--baseline 9]

For each kind of line (plain; a few SGR codes, as a test runner or logger writes them;
256 and true colours from a theme; true colours new on every line, the worst case for the
caches; CR progress and tabs) it times, in CPU time (the best of 5 passes):
  - `is_blank`: what the client does for every line that arrives (blank lines get no row);
  - `plain`: what it does for every line that arrives while a filter is set;
  - `parse` + `pieces` + `Palette.attr`: what drawing a line costs; only the lines on
    screen are drawn (about 30 rows, 30 frames a second: 900 lines/s at most).
The estimates add that to `--baseline`, the client's share of a core at 20,000 lines/s
without colours (`bench/tui.py` measures it: about 9 %). Target: <= 30 % of a core.
"""
import argparse
import os
import random
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from lib.ansi import Palette, Terminal, is_blank, parse, pieces, plain  # noqa: E402

E = "\x1b"
LINES = 5000
DRAWN_PER_SECOND = 900  # 30 rows x 30 frames


def kinds():
    """{kind: [lines]}, each list LINES long and of one kind."""
    rng = random.Random(1)
    pad = "x" * 40

    def rgb():
        return ";".join(str(rng.randrange(256)) for _ in range(3))

    theme = [rgb() for _ in range(8)]
    return {
        "plain": [f"L {i} request handled path=/api/items/{i} {pad}" for i in range(LINES)],
        "few SGR codes": [
            f"{E}[2m16:00:00.{i % 1000:03d}{E}[0m {E}[32mINFO{E}[0m {E}[1mweb{E}[0m "
            f"request {i} handled in {i % 97} ms path=/api/items" for i in range(LINES)],
        "256 / true colour": [
            f"{E}[38;5;{208 + i % 4}mWARN{E}[0m {E}[38;2;{theme[i % 8]}mservice {i}{E}[0m slow "
            f"{E}[48;2;40;40;40;38;2;{theme[i % 3]}m detail {E}[0m {pad}" for i in range(LINES)],
        "new RGB each line": [
            f"{E}[38;5;{i % 256}mWARN{E}[0m {E}[38;2;{rgb()}mservice {i}{E}[0m slow "
            f"{E}[48;2;{rgb()};38;2;{rgb()}m detail {E}[0m {pad}" for i in range(LINES)],
        "CR progress, tabs": [f"{i % 10}0%\r{i % 10 + 1}0%\r{i}\tdone\t{pad}"
                              for i in range(LINES)],
    }


def per_line(work, lines, repeat=5):
    """CPU seconds per line of `work(line)`, the best of `repeat` passes."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for line in lines:
            work(line)
        best = min(best, (time.process_time() - start) / len(lines))
    return best


def draw_work(palette):
    def draw(message):
        line = parse(message)
        for _, style in pieces(line, 0, len(line.text)):
            palette.attr(style, 0)
    return draw


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=20000, help="lines per second arriving")
    parser.add_argument("--baseline", type=float, default=9.0,
                        help="the client's %% of a core at --rate without colours")
    args = parser.parse_args()
    terminal = Terminal(256, 256, 6, lambda *_: True, lambda n: n << 8, 1, 2, 4, 8)
    drawn = min(args.rate, DRAWN_PER_SECOND)
    print(f"{'line kind':<18} {'parse lines/s':>13} {'blank us':>8} {'plain us':>8} "
          f"{'draw us':>8} {'client CPU':>10} {'filtering':>9}")
    for kind, lines in kinds().items():
        parsing = per_line(parse, lines)
        blank = per_line(is_blank, lines)
        filtering = per_line(plain, lines)
        draw = per_line(draw_work(Palette(terminal)), lines)
        cpu = args.baseline + (args.rate * blank + drawn * draw) * 100
        print(f"{kind:<18} {1 / parsing:>13,.0f} {blank * 1e6:>8.2f} {filtering * 1e6:>8.2f} "
              f"{draw * 1e6:>8.2f} {cpu:>9.1f}% {cpu + args.rate * filtering * 100:>8.1f}%")
    print(f"client CPU at {args.rate:,} lines/s of one kind = {args.baseline:g} % (bench/tui.py, "
          f"no colours) + is_blank per line + {drawn} lines/s drawn; filtering: + plain() "
          "per line; target <= 30 %")


if __name__ == "__main__":
    main()
