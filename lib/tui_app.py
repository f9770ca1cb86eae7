"""The terminal client's screen and keys, drawn from a client.Client model.

The network thread only updates the model; each frame draws from one `Client.view()`, an
immutable snapshot, so drawing never holds the client's lock. The loop wakes about 30
times a second and redraws when the model's version changed, at most once per frame, and
at once after a key.
"""
import curses
import locale
import time
from bisect import bisect_left
from functools import lru_cache

from . import ansi
from .ansi import char_width, text_width
from .entry import SERVER, clock_time
from .log_feed import ALL
from .transport import (CONNECTED, CONNECTING, FORBIDDEN, INCOMPATIBLE, RECONNECTING,
                        UNAUTHORIZED, UNREACHABLE)

PROGRAM = "flowlayer-client-tui"
FRAME = 1 / 30
ESC = "\x1b"
MIN_WIDTH, MIN_HEIGHT = 40, 8
SERVICES, LOGS = "services", "logs"

# ---- layout, in terminal cells ----------------------------------------------------------------
HEADER_ROWS = FOOTER_ROWS = 1
BORDER = 1                     # a box's frame, on each side
SERVICES_PANE_MIN = 24         # the services pane is at least this wide ...
SERVICES_PANE_SHARE = 3        # ... and otherwise at most 1/3 of the screen
SELECT_MARK = 2                # "> " before the selected service
STATUS_COLUMN = 8              # "stopping", the longest status
BUSY_MARK = 2                  # " *" after a busy service
SERVICE_ROW_CHROME = 2 * BORDER + SELECT_MARK + 1 + STATUS_COLUMN + BUSY_MARK  # all but the name
TIME_COLUMN = len("00:00:00.000 ")
SERVICE_COLUMN_MAX = 16        # the service column of the all-logs view
STREAM_MARK = 2                # "| ", "! " or "* " before the message
MESSAGE_MIN = 20               # narrower than this, continuation rows use the full width
NARROW_INDENT = 2              # ... indented this much
BOX_TITLE_INSET = 2            # a box title starts this far into the top border
FOOTER_GAPS = 7                # cells around and between the footer's three parts
FILTER_HINT_ROOM = 36          # cells from the right edge where the filter prompt's hint starts
MODAL_MIN_WIDTH = 40
MODAL_MARGIN = 2               # cells kept between the modal and the screen's edges
MODAL_PADDING = 2              # cells between the modal's border and its text
MODAL_LABEL = 10               # width of the modal's label column
MODAL_CHROME = 2 * MODAL_PADDING + MODAL_LABEL + 2  # a space after the label, one spare
MODAL_EXTRA_ROWS = 4           # borders, a blank row, the closing hint
HELP, DETAILS = "help", "details"  # the overlays


def body_rows(height):
    """Rows between the header and the footer."""
    return height - HEADER_ROWS - FOOTER_ROWS


def services_pane_width(names, width):
    """Wide enough for the longest name, within a third of the screen (at least the minimum)."""
    longest = max(map(len, names), default=0)
    return min(max(SERVICES_PANE_MIN, longest + SERVICE_ROW_CHROME),
               max(SERVICES_PANE_MIN, width // SERVICES_PANE_SHARE))


def log_prefix_width(service_width):
    """Cells before a log message: time, the service column (0 hides it), stream mark."""
    return TIME_COLUMN + (service_width + 1 if service_width else 0) + STREAM_MARK


STATE_LABELS = {CONNECTING: "Connecting", CONNECTED: "Connected", RECONNECTING: "Reconnecting",
                UNAUTHORIZED: "Unauthorized (401)", FORBIDDEN: "Forbidden (403)",
                UNREACHABLE: "Unreachable", INCOMPATIBLE: "Incompatible server"}
STREAM_MARKS = {"stderr": "!", "system": "*"}

UP = {curses.KEY_UP, "k"}
DOWN = {curses.KEY_DOWN, "j"}
PAGE_UP = {curses.KEY_PPAGE, "b"}
PAGE_DOWN = {curses.KEY_NPAGE, "f", " "}
TOP = {curses.KEY_HOME, "g"}
BOTTOM = {curses.KEY_END, "G"}
BACKSPACE = {curses.KEY_BACKSPACE, "\x7f", "\b"}
ENTER = {curses.KEY_ENTER, "\n", "\r"}


# ---- text ----------------------------------------------------------------------------------

def wrap(text, width):
    """Rows of at most `width` cells, broken after a space in the second half of a row
    when there is one, else exactly at the width (wide characters count twice)."""
    width = max(1, width)
    rows = []
    while True:
        cut = _fit(text, width)
        if cut >= len(text):
            rows.append(text)
            return rows
        space = text.rfind(" ", 0, cut)
        if space >= cut // 2:
            cut = space + 1
        rows.append(text[:cut])
        text = text[cut:]


def _fit(text, width):
    """How many leading characters of `text` fit in `width` cells (at least one)."""
    if text.isascii():
        return min(len(text), width)
    used = 0
    for index, char in enumerate(text):
        used += char_width(char)
        if used > width:
            return max(1, index)
    return len(text)


def clip(text, width):
    return wrap(text, width)[0] if width > 0 else ""


@lru_cache(maxsize=4096)
# ---- what the keys mean ---------------------------------------------------------------------

def service_actions(status):
    """{key: command} that `s` and `x` send for a service in `status` (SPEC 3.3, 3.4)."""
    if status in ("running", "ready"):
        return {"s": "restart_service", "x": "stop_service"}
    if status in ("stopped", "failed", "unknown"):
        return {"s": "start_service"}
    if status == "starting":
        return {"x": "stop_service"}  # abandons the start
    if status == "stopping":
        return {}
    return {"s": "start_service", "x": "stop_service"}  # a status we do not know


ALL_ACTIONS = {"s": "start_all", "x": "stop_all"}
CONFIRMED = {"stop_all": "Stop all services?"}  # actions that wait for `y`: the question
ACTION_WORDS = {"start_service": "start", "restart_service": "restart", "stop_service": "stop",
                "start_all": "start all", "stop_all": "stop all"}


HELP_KEYS = (
    ("up down  k j", "move the selection, or scroll the logs a row"),
    ("PgUp PgDn  b f space", "a page up or down"),
    ("u d", "half a page up or down"),
    ("Home g", "the top (older logs are fetched)"),
    ("End G", "the bottom, following new lines"),
    ("tab", "switch between the services and the logs"),
    ("/", "filter the focused panel (enter keeps, esc clears)"),
    ("esc", "clear the focused panel's filter"),
    ("s", "start, or restart, the selected service; on all logs: start all"),
    ("x", "stop the selected service; on all logs: stop all (y confirms)"),
    ("i", "details of the selected service, and the connection"),
    ("R", "reload the server's config file (the footer shows the outcome)"),
    ("z", "zoom: the logs at full width"),
    ("? h F1", "this help"),
    ("q ctrl-c", "quit"),
)
HELP_OPEN = {"?", "h", curses.KEY_F1}

# Header hints, most useful first: narrower screens drop them from the end.
HINT_PRIORITY = ("? help", "q quit", "i info", "/ filter", "z zoom", "tab panel")
HINT_ORDER = ("i info", "/ filter", "z zoom", "tab panel", "? help", "q quit")
ESSENTIAL_HINTS = 3            # worth the full title giving way to
SHORT_TITLE = " flowlayer "


def pick_hints(actions, room):
    """The action hints, then as many others as fit in `room` cells (dropping the least
    useful first), in screen order; "" when not even the actions fit."""
    chosen = list(actions)
    for hint in HINT_PRIORITY:
        if len("  ".join(chosen + [hint])) > room:
            break
        chosen.append(hint)
    shown = list(actions) + [hint for hint in HINT_ORDER if hint in chosen]
    text = "  ".join(shown)
    return text if len(text) <= room else ""


def details_lines(name, status, info, supported):
    """(label, value) rows of the details box of service `name`: the failure reason first
    when there is one; what the client knows when the server reports nothing more."""
    if not supported:
        return [("Name", name), ("Status", status),
                ("", "the server does not report details (no get_services)")]
    if info is None:
        return [("Name", name), ("Status", status), ("", "loading details...")]
    reason = info.get("reason")
    since = info.get("since")
    cmd = info.get("cmd")
    rows = [("Reason", str(reason))] if reason else []
    rows += [
        ("Name", name),
        ("Status", status),  # the live one: the details may be a moment older
        ("Kind", _shown_value(info.get("kind"))),
        ("Probe", _shown_value(info.get("probe"))),
        ("Port", _shown_value(info.get("port"))),
        ("Depends on", ", ".join(map(str, info.get("dependsOn") or [])) or "-"),
        ("Satisfied", {True: "yes", False: "no"}.get(info.get("satisfied"), "-")),
        ("PID", _shown_value(info.get("pid"))),
        ("Exit code", _shown_value(info.get("exit_code"))),
        ("Since", clock_time(since) if isinstance(since, str) else "-"),
        ("Command", " ".join(map(str, cmd)) if isinstance(cmd, list) else _shown_value(cmd)),
    ]
    return rows


def _shown_value(value):
    return "-" if value is None or value == "" else str(value)


def step_of(key, page):
    """How far a navigation key moves (rows or list items); None for other keys."""
    page = max(1, page)
    half = max(1, page // 2)
    for keys, step in ((UP, -1), (DOWN, 1), (PAGE_UP, -page), (PAGE_DOWN, page),
                       ({"u"}, -half), ({"d"}, half)):
        if key in keys:
            return step
    return None


def matches_service(needle, name, status):
    return not needle or needle in name.lower() or needle in status.lower()


def matches_entry(needle, entry):
    return (needle in ansi.plain(entry.message).lower() or needle in entry.service.lower()
            or needle in entry.stream)


# ---- styles -------------------------------------------------------------------------------

def _start_colors():
    """Whether the terminal has the 8 colours the roles need (TERM=dumb has none)."""
    if not curses.has_colors():
        return False
    curses.start_color()
    return curses.COLORS >= 8


class Styles:
    """Attributes for each role: colours, or bold/reverse/dim only under NO_COLOR or on a
    terminal without colours."""

    def __init__(self, color):
        if color and _start_colors():
            try:
                curses.use_default_colors()
                background = -1
            except curses.error:
                background = curses.COLOR_BLACK
            pairs = {}
            for number, (name, fg) in enumerate((("green", curses.COLOR_GREEN),
                                                 ("blue", curses.COLOR_BLUE),
                                                 ("red", curses.COLOR_RED),
                                                 ("yellow", curses.COLOR_YELLOW),
                                                 ("cyan", curses.COLOR_CYAN)), start=1):
                curses.init_pair(number, fg, background)
                pairs[name] = curses.color_pair(number)
            self.ready, self.running, self.failed = pairs["green"], pairs["blue"], pairs["red"]
            self.good, self.bad, self.warn = pairs["green"], pairs["red"] | curses.A_BOLD, pairs["yellow"]
            self.stderr, self.system = pairs["red"], pairs["cyan"]
            # The services' own colours, in the pairs after those of the roles.
            self.palette = ansi.Palette(ansi.curses_terminal(6, default_colors=background == -1))
        else:
            self.ready, self.running, self.failed = curses.A_BOLD, curses.A_NORMAL, curses.A_REVERSE
            self.good, self.bad, self.warn = curses.A_BOLD, curses.A_REVERSE, curses.A_BOLD
            self.stderr, self.system = curses.A_BOLD, curses.A_DIM
            self.palette = ansi.Palette(ansi.curses_terminal(6, color=False))
        self.dim = curses.A_DIM
        self.header = curses.A_REVERSE
        self.selected = curses.A_REVERSE
        self.focused = curses.A_BOLD
        # Box characters drawn as text: ACS line drawing shows as letters on terminals
        # that ignore charset switches in UTF-8 mode.
        utf8 = locale.getpreferredencoding(False).lower().replace("-", "") == "utf8"
        self.lines = "─│┌┐└┘" if utf8 else "-|++++"

    def status(self, status):
        return {"ready": self.ready, "running": self.running,
                "failed": self.failed}.get(status, self.dim)

    def stream(self, stream):
        return {"stderr": self.stderr, "system": self.system}.get(stream, curses.A_NORMAL)


# ---- the logs panel -------------------------------------------------------------------------

class LogView:
    """The filtered entries of the scope, their wrapped rows, and the scroll position.

    The view is anchored to an entry (`top` = (seq, row within that entry)), so lines that
    arrive, older pages put in front and trimming never move what the user reads. In
    follow mode the newest row sits at the bottom.
    """

    def __init__(self):
        self.items = []
        self.first_visible = 0
        self.follow = True
        self.top = None
        self._epoch = None
        self._needle = None
        self._synced = -1          # the newest buffer seq already looked at
        self._layout = None
        self._row_counts = {}

    def reset(self):
        self.follow, self.top = True, None

    def sync(self, lines, needle):
        """Catch up with a log_feed.LogLines; cheap when entries were only appended."""
        entries = lines.entries
        if lines.epoch != self._epoch or needle != self._needle:
            self._epoch, self._needle = lines.epoch, needle
            self.items = [e for e in entries if _shown(needle, e)]
            self._synced = entries[-1].seq if entries else -1
            self._row_counts.clear()
            return
        items = self.items
        if items and (not entries or items[0].seq < entries[0].seq):
            del items[:bisect_left(items, entries[0].seq, key=_seq) if entries else len(items)]
        if entries and entries[-1].seq > self._synced:
            new = entries[bisect_left(entries, self._synced + 1, key=_seq):]
            items.extend([e for e in new if _shown(needle, e)])
            self._synced = entries[-1].seq
        if len(self._row_counts) > 2 * len(items) + 1000:
            self._row_counts.clear()

    # -- layout of one entry --

    def set_layout(self, width, service_width):
        """Width of the panel and of the service column (0 hides it)."""
        layout = (width, service_width)
        if layout != self._layout:
            self._layout = layout
            self._row_counts.clear()

    def _message_rows(self, entry):
        """The message's rows (consecutive slices of `line.text`), the indent of its
        continuation rows, and the parsed `ansi.Line`."""
        width, service_width = self._layout
        prefix = log_prefix_width(service_width)
        line = ansi.parse(entry.message)
        text = line.text
        first = wrap(text, max(1, width - prefix))
        if width - prefix >= MESSAGE_MIN or len(first) == 1:
            return first, prefix, line
        rest = wrap(text[len(first[0]):], max(1, width - NARROW_INDENT))
        return [first[0]] + rest, NARROW_INDENT, line

    def row_count(self, index):
        entry = self.items[index]
        count = self._row_counts.get(entry.seq)
        if count is None:
            count = self._row_counts[entry.seq] = len(self._message_rows(entry)[0])
        return count

    def render_entry(self, entry, styles):
        """[(segments)] for each row of `entry`; a segment is (text, attribute)."""
        width, service_width = self._layout
        rows, indent, line = self._message_rows(entry)
        mark = STREAM_MARKS.get(entry.stream, "|")
        text_attr = styles.stream(entry.stream)
        attr = styles.palette.attr
        head = [(clock_time(entry.timestamp) + " ", styles.dim)]
        if service_width:
            head.append((clip(entry.service, service_width).ljust(service_width) + " ", 0))
        head.append((mark + " ", text_attr | (curses.A_BOLD if entry.stream != "stdout" else 0)))
        out, offset = [], 0
        for number, row in enumerate(rows):
            start = head if number == 0 else [(" " * indent, 0)]
            out.append(start + [(piece, attr(style, text_attr))
                                for piece, style in ansi.pieces(line, offset, offset + len(row))])
            offset += len(row)
        return out

    # -- scrolling --

    def _bottom_top(self, height):
        """(index, row) of the first visible row when the last row sits at the bottom."""
        index = len(self.items) - 1
        if index < 0:
            return 0, 0
        need = height
        while index >= 0:
            count = self.row_count(index)
            if count >= need:
                return index, count - need
            need -= count
            index -= 1
        return 0, 0

    def _rows_from(self, index, row, limit):
        """Rows from (index, row) to the end, counting no further than `limit`."""
        total = -row
        while index < len(self.items) and total <= limit:
            total += self.row_count(index)
            index += 1
        return total

    def position(self, height):
        """(index, row) of the first visible row."""
        if self.follow or self.top is None or not self.items:
            return self._bottom_top(height)
        seq, row = self.top
        index = bisect_left(self.items, seq, key=_seq)
        if index >= len(self.items):
            return self._bottom_top(height)
        row = min(row, self.row_count(index) - 1) if self.items[index].seq == seq else 0
        if self._rows_from(index, row, height) < height:
            return self._bottom_top(height)
        return index, row

    def scroll(self, delta, height):
        """Move by `delta` rows; returns the index of the new first visible entry."""
        if not self.items:
            return 0
        index, row = self.position(height)
        row += delta
        while row < 0 and index > 0:
            index -= 1
            row += self.row_count(index)
        row = max(row, 0)
        while index < len(self.items) - 1 and row >= self.row_count(index):
            row -= self.row_count(index)
            index += 1
        row = min(row, self.row_count(index) - 1)
        self.top = (self.items[index].seq, row)
        self.follow = delta > 0 and self._rows_from(index, row, height) <= height
        return index

    def go_top(self):
        if self.items:
            self.top, self.follow = (self.items[0].seq, 0), False

    def visible(self, height, styles):
        """Rows to draw (lists of segments) and the index of the last entry shown (the
        first one shown is kept in `first_visible`)."""
        index, row = self.position(height)
        self.first_visible = index
        rows, last = [], index
        while index < len(self.items) and len(rows) < height:
            entry_rows = self.render_entry(self.items[index], styles)
            rows.extend(entry_rows[row:row + height - len(rows)])
            last, index, row = index, index + 1, 0
        return rows, last


def scroll_position(first, last, count, follow, compact=False):
    """The footer's `lines 120-150 of 5000 (3%) follow`: entries shown, and how far down;
    `compact`: `120-150/5000 3% follow`."""
    mode = "follow" if follow else "paused"
    if not count:
        return f"no lines {mode}"
    percent = (last + 1) * 100 // count
    if compact:
        return f"{first + 1}-{last + 1}/{count} {percent}% {mode}"
    return f"lines {first + 1}-{last + 1} of {count} ({percent}%) {mode}"


def _seq(entry):
    return entry.seq


def _shown(needle, entry):
    """Whether the logs panel lists `entry`: it shows something and matches the filter."""
    return not ansi.is_blank(entry.message) and (not needle or matches_entry(needle, entry))


# ---- the application --------------------------------------------------------------------------

class App:
    """Screen state (focus, selection, filters, overlay, confirmation, zoom) and the main
    loop."""

    def __init__(self, client, token, color=True):
        self.client = client
        self.token = token
        self.color = color
        self.focus = SERVICES
        self.selected = ALL
        self.service_top = 0
        self.filters = {SERVICES: "", LOGS: ""}
        self.editing = None
        self.modal = None          # None, HELP or DETAILS
        self.confirm = None        # an action of CONFIRMED waiting for `y`
        self.zoom = False
        self.quit = False
        self.logs = LogView()
        self.screen = None
        self.styles = None
        self._log_height = 10
        self._last_visible = 0
        self._drawn_version = -1
        self._last_draw = 0.0

    # -- loop --

    def run(self, screen):
        self.screen = screen
        self.styles = Styles(self.color)
        try:
            curses.curs_set(0)
        except curses.error:
            pass
        screen.keypad(True)
        self.draw()
        while not self.quit:
            now = time.monotonic()
            dirty = self.client.version != self._drawn_version
            wait = FRAME - (now - self._last_draw) if dirty else FRAME
            screen.timeout(max(1, int(wait * 1000)))
            key = self._key()
            if key is not None:
                while key is not None and not self.quit:
                    self.handle(key)
                    screen.timeout(0)
                    key = self._key()
                self.draw()
            elif (self.client.version != self._drawn_version
                  or time.monotonic() - self._last_draw > 0.5):
                self.draw()  # model changes, and countdowns that tick without them

    def _key(self):
        try:
            return self.screen.get_wch()
        except curses.error:
            return None

    # -- keys --

    def handle(self, key):
        if key == curses.KEY_RESIZE:
            curses.update_lines_cols()
            self.screen.clear()
            return
        if self.editing and self._edit(key):
            return
        if key == "\x03":
            self.quit = True
        elif self.confirm:
            action, self.confirm = self.confirm, None
            if key == "y":
                self.client.run_action(action)
            else:
                self.client.notify(f"{ACTION_WORDS[action]}: cancelled")
        elif self.modal == HELP:
            self.modal = None  # any key
        elif self.modal == DETAILS:
            if key in (ESC, "i", "\n", "\r", curses.KEY_ENTER):
                self._close_modal()
            elif key == "q":
                self.quit = True
        else:
            self._handle_screen(key)

    def _close_modal(self):
        if self.modal == DETAILS:
            self.client.watch_details(False)
        self.modal = None

    def _handle_screen(self, key):
        if key in ("q", "\x03"):
            self.quit = True
        elif key == "\t":
            if not self.zoom:
                self.focus = LOGS if self.focus == SERVICES else SERVICES
        elif key == "/":
            self.editing = self.focus
        elif key == ESC:
            self._set_filter(self.focus, "")
        elif key == "i":
            self.modal = DETAILS
            self.client.watch_details(self.selected is not ALL)
        elif key in HELP_OPEN:
            self.modal = HELP
        elif key == "z":
            self.zoom = not self.zoom
            self.focus = LOGS if self.zoom else self.focus
        elif key in ("s", "x"):
            self._act(key)
        elif key == "R":      # the server reads its config file again; the footer says how it went
            self.client.run_action("reload_config", None)
        elif self.focus == SERVICES:
            self._move_selection(key)
        else:
            self._scroll_logs(key)

    def _edit(self, key):
        """Keys while typing a filter; False lets navigation keys through."""
        text = self.filters[self.editing]
        if key == ESC:
            self._set_filter(self.editing, "")
            self.editing = None
        elif key in ENTER:
            self.editing = None
        elif key == "\t":
            self.editing = None
            return False  # and switch panels
        elif key in BACKSPACE:
            self._set_filter(self.editing, text[:-1])
        elif key == "\x15":
            self._set_filter(self.editing, "")
        elif isinstance(key, str) and key.isprintable():
            self._set_filter(self.editing, text + key)
        else:
            return not isinstance(key, int)  # other characters are swallowed, keys move
        return True

    def _set_filter(self, panel, text):
        self.filters[panel] = text
        if panel == SERVICES:
            # Typing a name jumps to the first service it matches.
            names = [name for name, _ in self._service_rows()[1:]]
            if text and names and self.selected not in names:
                self._select(names[0])
            elif self.selected is not ALL and self.selected not in names:
                self._select(ALL)

    def _act(self, key):
        if self.selected is ALL:
            action = ALL_ACTIONS[key]
            if action in CONFIRMED:
                self.confirm = action
            else:
                self.client.run_action(action)
            return
        status = self.client.view().services.get(self.selected, "unknown")
        name = service_actions(status).get(key)
        if name is None:
            self.client.notify(f"{self.selected} is {status}: nothing for {key} to do", error=True)
            return
        self.client.run_action(name, self.selected)

    def _move_selection(self, key):
        rows = [name for name, _ in self._service_rows()]
        index = rows.index(self.selected) if self.selected in rows else 0
        step = step_of(key, self._log_height)
        if key in TOP:
            index = 0
        elif key in BOTTOM:
            index = len(rows) - 1
        elif step is not None:
            index = min(max(index + step, 0), len(rows) - 1)
        else:
            return
        self._select(rows[index])

    def _select(self, scope):
        if scope != self.selected:
            self.selected = scope
            self.logs.reset()
            self.client.select(scope)

    def _scroll_logs(self, key):
        height = self._log_height
        if key in BOTTOM:
            self.logs.reset()
            self.client.set_following(True)
            return
        if key in TOP:
            self.logs.go_top()
            first = 0
        else:
            step = step_of(key, height)
            if step is None:
                return
            first = self.logs.scroll(step, height)
        self.client.set_following(self.logs.follow)
        if not self.logs.follow and first < height and not self.client.load_older():
            view = self.client.view()
            if (first == 0 and view.state == CONNECTED and not view.loading_older
                    and not view.logs.has_older):
                self.client.notify("no older logs available")

    # -- drawing --

    def _service_rows(self, services=None):
        """[(scope, status)] of the services panel: `all logs`, then the matching services."""
        if services is None:
            services = self.client.view().services
        needle = self.filters[SERVICES].lower()
        return [(ALL, "")] + [(name, status) for name, status in services.items()
                              if matches_service(needle, name, status)]

    def draw(self):
        screen = self.screen
        height, width = screen.getmaxyx()
        view = self.client.view()
        self._drawn_version = view.version
        self.logs.sync(view.logs, self.filters[LOGS].lower())
        self._last_draw = time.monotonic()
        screen.erase()
        if width < MIN_WIDTH or height < MIN_HEIGHT:
            self._put(0, 0, f"Terminal too small ({width}x{height})", 0, width)
            screen.noutrefresh()
            curses.doupdate()
            return
        self._draw_header(width, view)
        body_top, body_height = HEADER_ROWS, body_rows(height)
        if self.zoom:
            self._draw_logs(body_top, 0, body_height, width, view, boxed=False)
        else:
            left = services_pane_width(view.services, width)
            self._draw_services(body_top, 0, body_height, left, view)
            self._draw_logs(body_top, left, body_height, width - left, view, boxed=True)
        self._draw_footer(height - FOOTER_ROWS, width, view)
        if self.modal:
            self._draw_modal(height, width, view)
        screen.noutrefresh()
        curses.doupdate()

    def _put(self, y, x, text, attr, width):
        """Draw `text` clipped to `width` cells; the last screen cell is not an error."""
        if width <= 0:
            return
        try:
            self.screen.addstr(y, x, clip(text, width), attr)
        except curses.error:
            pass

    def _draw_header(self, width, view):
        styles = self.styles
        self._put(0, 0, " " * width, styles.header, width)
        label, attr = self._state_text(view)
        actions = self._action_hints(view.services, view.busy)
        # The short title when the full one leaves out one of the essential keys.
        title = f" {PROGRAM} "
        hints = pick_hints(actions, width - len(title) - len(label) - 4)
        if not all(hint in hints for hint in HINT_PRIORITY[:ESSENTIAL_HINTS]):
            title = SHORT_TITLE
            hints = pick_hints(actions, width - len(title) - len(label) - 4)
        self._put(0, 0, title, styles.header | curses.A_BOLD, width)
        self._put(0, len(title) + 1, label, attr | curses.A_BOLD, width - len(title) - 1)
        self._put(0, width - len(hints) - 1, hints, styles.header, len(hints))

    def _state_text(self, view):
        styles = self.styles
        state = view.state
        label = STATE_LABELS.get(state, state)
        if state == CONNECTED:
            return label, styles.good
        if view.retry_at is not None:
            left = max(0.0, view.retry_at - time.monotonic())
            label += f", retry in {left:.0f}s" if left >= 1 else f", retry in {left:.1f}s"
        elif state != CONNECTING:
            label += ", retrying"
        if view.detail and state in (RECONNECTING, UNREACHABLE, INCOMPATIBLE):
            label += f" ({view.detail})"
        return label, styles.warn if state in (CONNECTING, RECONNECTING) else styles.bad

    def _action_hints(self, services, busy):
        """The keys the selected item allows (or what it is busy with)."""
        if self.selected in busy:
            return [f"busy: {ACTION_WORDS.get(busy[self.selected], busy[self.selected])}"]
        actions = (ALL_ACTIONS if self.selected is ALL
                   else service_actions(services.get(self.selected, "unknown")))
        return [f"{key} {ACTION_WORDS[name]}" for key, name in actions.items()]

    def _box(self, y, x, height, width, title, focused):
        attr = self.styles.focused if focused else self.styles.dim
        horizontal, vertical, top_left, top_right, bottom_left, bottom_right = self.styles.lines
        inner = width - 2 * BORDER
        self._put(y, x, top_left + horizontal * inner + top_right, attr, width)
        for row in range(y + BORDER, y + height - BORDER):
            self._put(row, x, vertical, attr, BORDER)
            self._put(row, x + width - BORDER, vertical, attr, BORDER)
        self._put(y + height - BORDER, x, bottom_left + horizontal * inner + bottom_right,
                  attr, width)
        self._put(y, x + BOX_TITLE_INSET, f" {title} ", attr | (curses.A_REVERSE if focused else 0),
                  width - 2 * BOX_TITLE_INSET)

    def _draw_services(self, y, x, height, width, view):
        styles = self.styles
        connected = view.state == CONNECTED
        needle = self.filters[SERVICES]
        title = "Services" + (f" /{needle}" if needle else "")
        self._box(y, x, height, width, title, self.focus == SERVICES)
        rows = self._service_rows(view.services)
        inner = height - 2 * BORDER
        index = next((i for i, (name, _) in enumerate(rows) if name == self.selected), 0)
        self.service_top = min(max(self.service_top, index - inner + 1), index)
        name_width = width - SERVICE_ROW_CHROME
        status_x = x + BORDER + SELECT_MARK + name_width + 1
        busy_x = x + width - BORDER - BUSY_MARK
        for line, (name, status) in enumerate(rows[self.service_top:self.service_top + inner]):
            row_y = y + BORDER + line
            chosen = name == self.selected
            attr = (styles.selected if self.focus == SERVICES else curses.A_BOLD) if chosen else 0
            label = "all logs" if name is ALL else name
            self._put(row_y, x + BORDER, (">" if chosen else " ") + " "
                      + clip(label, name_width).ljust(name_width), attr, width - 2 * BORDER)
            if name is not ALL:
                attr = styles.status(status) if connected else styles.dim  # last known only
                self._put(row_y, status_x, status, attr, STATUS_COLUMN)
            if name in view.busy:
                self._put(row_y, busy_x, "*", styles.warn | curses.A_BOLD, 1)

    def _draw_logs(self, y, x, height, width, view, boxed):
        needle = self.filters[LOGS]
        if boxed:
            scope = "all" if self.selected is ALL else self.selected
            title = f"Logs: {scope}" + (f" /{needle}" if needle else "")
            title += " (loading older)" if view.loading_older else ""
            self._box(y, x, height, width, title, self.focus == LOGS)
            y, x = y + BORDER, x + BORDER
            height, width = height - 2 * BORDER, width - 2 * BORDER
        self._log_height = max(1, height)
        service_width = 0
        if self.selected is ALL:
            names = list(view.services) + [SERVER]
            service_width = min(SERVICE_COLUMN_MAX, max(map(len, names)))
        self.logs.set_layout(width, service_width)
        rows, self._last_visible = self.logs.visible(height, self.styles)
        for line, segments in enumerate(rows):
            column = x
            for text, attr in segments:
                self._put(y + line, column, text, attr, x + width - column)
                column += text_width(text)
        if not rows:
            held = view.logs.entries
            message = f'no line matches "{needle}"' if needle and held else "no log lines yet"
            self._put(y, x + 1, message, self.styles.dim, width - 1)

    def _draw_footer(self, y, width, view):
        styles = self.styles
        if self.editing:
            prompt = f"Filter {self.editing}: {self.filters[self.editing]}"
            self._put(y, 0, prompt + "_", curses.A_BOLD, width)
            self._put(y, max(len(prompt) + 3, width - FILTER_HINT_ROOM), "enter keep  esc clear",
                      styles.dim, width - len(prompt) - 3)
            return
        if self.confirm:
            self._put(y, 1, f"{CONFIRMED[self.confirm]} y confirms, any other key cancels",
                      styles.warn | curses.A_BOLD, width - 2)
            return
        truncated = "history truncated" if view.logs.has_older else ""
        notice = view.notice.text if view.notice is not None else ""
        place = (self.logs.first_visible, self._last_visible, len(self.logs.items),
                 self.logs.follow)
        position = scroll_position(*place)
        if notice and len(notice) + len(truncated) + len(position) + FOOTER_GAPS > width:
            position = scroll_position(*place, compact=True)  # room for the notice
        right = width - len(position) - 1
        if truncated:
            right -= len(truncated) + 2
            self._put(y, right, truncated, styles.warn, len(truncated))
        self._put(y, width - len(position) - 1, position, styles.dim, len(position))
        if notice:
            self._put(y, 1, notice, styles.bad if view.notice.error else styles.good, right - 3)

    def _draw_modal(self, height, width, view):
        if self.modal == HELP:
            self._draw_box_lines("Keys", list(HELP_KEYS), height, width,
                                 "any key closes", label_width=max(len(k) for k, _ in HELP_KEYS))
            return
        lines = []
        title = "Connection"
        if self.selected is not ALL:
            title = f"Details: {self.selected}"
            status = view.services.get(self.selected, "unknown")
            info = view.details.get(self.selected) if view.details is not None else None
            lines = details_lines(self.selected, status, info, view.details_supported)
            lines += [("", ""), ("Connection", None)]
        lines += self._connection_lines(view)
        self._draw_box_lines(title, lines, height, width, "esc to close")

    def _connection_lines(self, view):
        server = view.server
        since = (time.strftime("%H:%M:%S", time.localtime(view.connected_at))
                 if view.connected_at else "-")
        label, _ = self._state_text(view)
        lines = [
            ("Address", self.client.url),
            ("Token", self.token or "(none)"),
            ("State", label),
            ("Detail", view.detail or "-"),
            ("Server", str(server.get("server", "-"))),
            ("Protocol", str(server.get("protocol_version", "-"))),
            ("Commands", ", ".join(map(str, server.get("capabilities") or [])) or "-"),
            ("Connected", since),
        ]
        return lines

    def _draw_box_lines(self, title, lines, height, width, hint, label_width=MODAL_LABEL):
        """A box in the middle of the screen with (label, value) rows, long values wrapped
        under their label; a value None makes the label a section heading. Rows that do
        not fit are cut."""
        longest = max(text_width(value) for _, value in lines if value is not None)
        chrome = MODAL_CHROME - MODAL_LABEL + label_width
        box_width = min(width - 2 * MODAL_MARGIN, max(MODAL_MIN_WIDTH, longest + chrome))
        inner = box_width - 2 * MODAL_PADDING
        value_width = max(1, inner - label_width - 1)
        rows = []
        for label, value in lines:
            if value is None:
                rows.append((label, curses.A_BOLD))
                continue
            for number, part in enumerate(wrap(value, value_width)):
                rows.append((f"{label if number == 0 else '':<{label_width}} {part}",
                             self.styles.bad if label == "Reason" else 0))
        rows = rows[:max(0, height - HEADER_ROWS - FOOTER_ROWS - MODAL_EXTRA_ROWS)]
        box_height = len(rows) + MODAL_EXTRA_ROWS
        top, left = max(HEADER_ROWS, (height - box_height) // 2), (width - box_width) // 2
        for row in range(box_height):
            self._put(top + row, left, " " * box_width, 0, box_width)
        self._box(top, left, box_height, box_width, title, True)
        for row, (text, attr) in enumerate(rows):
            self._put(top + BORDER + row, left + MODAL_PADDING, text, attr, inner)
        self._put(top + box_height - BORDER - 1, left + MODAL_PADDING, hint,
                  self.styles.dim, inner)
