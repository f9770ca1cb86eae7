"""The log entry of SPEC 4.1: its type, the server's own service name, its timestamp and its
two JSON forms (compact on the wire, `json.dumps` spacing in the JSONL files).

A leaf: imports nothing from lib, so the server's store and the client share it.
The entries of one captured read share service, phase, stream and timestamp and have
consecutive seqs: a `Chunk` holds them as that and its list of messages, so capture costs
nothing per line; its LogEntry objects are made only when someone asks for them.
The encoders build the JSON by hand, the shared fields encoded once per run of entries.
JSON is written with ASCII escapes, so its length in characters is its length in bytes.
"""
import datetime
import re
import time
from collections import namedtuple
from collections.abc import Sequence
from functools import lru_cache
from itertools import chain, groupby, repeat
from json.encoder import encode_basestring_ascii as quote
from operator import itemgetter

SERVER = "flowlayer"  # service name of server-level lines (stream "system"); reserved


class LogEntry(namedtuple("LogEntry", "seq service phase stream message timestamp")):
    """One captured line (SPEC 4.1). A collections.namedtuple: typing costs the boot 6 ms."""
    __slots__ = ()

    def as_dict(self):
        """The wire and file form, keys in field order."""
        return dict(zip(self._fields, self))


_new_entry = tuple.__new__  # builds a LogEntry from a tuple without a Python-level call


class Chunk(Sequence):
    """Entries with consecutive seqs from `first` that share service, phase, stream and
    timestamp: a read-only sequence of LogEntry, made on access. A slice is a Chunk."""
    __slots__ = ("first", "service", "phase", "stream", "messages", "timestamp", "_size")

    def __init__(self, first, service, phase, stream, messages, timestamp):
        self.first = first
        self.service = service
        self.phase = phase
        self.stream = stream
        self.messages = messages
        self.timestamp = timestamp
        self._size = None

    def __len__(self):
        return len(self.messages)

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self.messages))
            if step != 1:
                return self.entries()[index]
            return Chunk(self.first + start, self.service, self.phase, self.stream,
                         self.messages[start:stop], self.timestamp)
        message = self.messages[index]
        index = index + len(self.messages) if index < 0 else index
        return LogEntry(self.first + index, self.service, self.phase, self.stream, message,
                        self.timestamp)

    def __iter__(self):
        return iter(self.entries())

    def __reversed__(self):
        return reversed(self.entries())

    def __repr__(self):
        return f"Chunk({self.entries()!r})"

    def message_bytes(self):
        """The total length of the messages (computed once: every queue asks for it)."""
        if self._size is None:
            self._size = sum(map(len, self.messages))
        return self._size

    def entries(self):
        """The LogEntry objects, built by C-level maps: no Python frame per entry."""
        return list(map(_new_entry, repeat(LogEntry), zip(
            range(self.first, self.first + len(self.messages)), repeat(self.service),
            repeat(self.phase), repeat(self.stream), self.messages, repeat(self.timestamp))))

    def json_lines(self, form):
        """"".join(text + "\\n" for text in self.json(form)), in a few C-level calls: the
        messages are quoted at once when none needs an escape, and a seq is its shared
        leading digits and the last four from a table, not a str() per entry."""
        head, middle, tail = _pieces(form, self.service, self.phase, self.stream,
                                     self.timestamp)
        tail += "\n"
        texts = self.messages
        joined = "".join(texts)
        if len(quote(joined)) == len(joined) + 2:  # nothing to escape: quotes around
            middle, tail = middle + '"', '"' + tail
        else:
            texts = map(quote, texts)
        if self.first < _LOW:
            return "".join(chain.from_iterable(zip(
                repeat(head), map(str, range(self.first, self.first + len(self))),
                repeat(middle), texts, repeat(tail))))
        texts, runs, seq, end = iter(texts), [], self.first, self.first + len(self)
        while seq < end:
            high, low = divmod(seq, _LOW)
            take = min(end - seq, _LOW - low)
            runs.append(zip(repeat(f"{head}{high}"), _low_digits()[low:low + take],
                            repeat(middle), texts, repeat(tail)))
            seq += take
        return "".join(chain.from_iterable(chain.from_iterable(runs)))

    def json(self, form):
        """entries_json(self, form), without making the entries."""
        template = _template(form, self.service, self.phase, self.stream, self.timestamp)
        return list(map(template.__mod__, zip(
            range(self.first, self.first + len(self.messages)), map(quote, self.messages))))


_LOW = 10_000  # a seq's last four digits come from a table
_low_digits_table = []


def _low_digits():
    """["0000", ..., "9999"], made on first use."""
    if not _low_digits_table:
        _low_digits_table.extend(f"{n:04d}" for n in range(_LOW))
    return _low_digits_table


_stamp_cache = (None, "", "")  # (epoch second, local date-time text, UTC offset text)


def format_timestamp(epoch_seconds):
    """RFC 3339 local time with milliseconds and the UTC offset, e.g.
    `2026-11-25T10:30:00.123+01:00`. The text of the whole second is cached, and redone on
    each new second, so a change of offset (DST) shows from the second it happens."""
    global _stamp_cache
    second, millis = divmod(int(epoch_seconds * 1000), 1000)
    cached_second, head, offset = _stamp_cache
    if second != cached_second:
        local = time.localtime(second)
        head = time.strftime("%Y-%m-%dT%H:%M:%S", local)
        minutes = abs(local.tm_gmtoff) // 60
        sign = "-" if local.tm_gmtoff < 0 else "+"
        offset = f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
        _stamp_cache = (second, head, offset)
    return f"{head}.{millis:03d}{offset}"


@lru_cache(maxsize=4096)
def clock_time(timestamp):
    """`HH:MM:SS.mmm` in local time of an RFC 3339 timestamp; dashes when it is not one."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", timestamp.strip().replace("z", "Z"))
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        return "--:--:--.---"
    if moment.tzinfo is not None:
        moment = moment.astimezone()
    return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


# Separators of the two forms: (after a key, between members).
WIRE = (":", ",")      # compact, as the protocol sends it
FILE = (": ", ", ")    # json.dumps' default, as the JSONL files hold it
_SHARED_FIELDS = itemgetter(1, 2, 3, 5)  # service, phase, stream, timestamp
_SEQ = itemgetter(0)
_MESSAGE = itemgetter(4)


def entries_json(entries, form=WIRE):
    """JSON object texts of `entries`, in order (equal to `json.dumps(entry.as_dict(),
    separators=...)` for each). Each run of shared fields is one `%` template mapped over
    the run's (seq, quoted message) pairs: no Python-level frame per entry."""
    if isinstance(entries, Chunk):
        return entries.json(form)
    texts = []
    for fields, run in groupby(entries, _SHARED_FIELDS):
        template = _template(form, *fields)
        run = list(run)
        texts += map(template.__mod__, zip(map(_SEQ, run), map(quote, map(_MESSAGE, run))))
    return texts


def _pieces(form, service, phase, stream, timestamp):
    """An entry's JSON with these shared fields around its seq and its quoted message:
    (before the seq, between the two, after the message)."""
    colon, comma = form
    return (f'{{"seq"{colon}',
            f'{comma}"service"{colon}{quote(service)}{comma}"phase"{colon}{quote(phase)}'
            f'{comma}"stream"{colon}{quote(stream)}{comma}"message"{colon}',
            f'{comma}"timestamp"{colon}{quote(timestamp)}}}')


def _template(*fields):
    """The `%` template of _pieces(*fields): %d for the seq, %s for the quoted message."""
    head, middle, tail = (piece.replace("%", "%%") for piece in _pieces(*fields))
    return f"{head}%d{middle}%s{tail}"


def entry_from_dict(data):
    """The LogEntry of a decoded entry (a `log` payload or a get_logs item);
    None when it is not an object with an int seq. Missing text fields read as empty."""
    try:
        seq = data["seq"]
        if type(seq) is not int:
            return None
        return LogEntry(seq, str(data.get("service") or ""), str(data.get("phase") or ""),
                        str(data.get("stream") or "stdout"), str(data.get("message") or ""),
                        str(data.get("timestamp") or ""))
    except (TypeError, KeyError, AttributeError):
        return None
