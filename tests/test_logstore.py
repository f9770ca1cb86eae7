"""LogStore: seqs, rings, queries (memory and disk), JSONL projection, subscribers,
timestamps (SPEC 4.1-4.3)."""
import datetime
import json
import os
import random
import shutil
import threading
import time
from unittest import mock

import pytest
from hypothesis import given, settings, strategies as st

from conftest import wait_until
from lib import logstore
from lib.logstore import LogEntry, LogStore, format_timestamp

FAR = 1 << 62  # a before_seq above every seq


@pytest.fixture
def store_factory():
    """Make stores that are closed at the end of the test."""
    stores = []

    def make(*args, **kwargs):
        stores.append(LogStore(*args, **kwargs))
        return stores[-1]

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def set_tz():
    """Switch the process's local time zone for one test."""
    saved = os.environ.get("TZ")

    def set_zone(zone):
        os.environ["TZ"] = zone
        time.tzset()

    yield set_zone
    if saved is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = saved
    time.tzset()


def seqs(entries):
    return [e.seq for e in entries]


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def run_appends(store, plan):
    """Append per `plan`; return the new entries as a subscriber saw them."""
    seen = []
    token = store.subscribe(seen.extend)
    for i, (service, count) in enumerate(plan):
        store.append(service, "stdout", [f"{i}.{n}" for n in range(count)], "running")
    store.unsubscribe(token)
    return seen


# --- timestamps and entries ---------------------------------------------------------------

def test_timestamp_utc_uses_plus_zero_offset(set_tz):
    set_tz("UTC")
    assert format_timestamp(1795689000.1234) == "2026-11-26T10:30:00.123+00:00"
    assert format_timestamp(1795689001.0) == "2026-11-26T10:30:01.000+00:00"


@pytest.mark.parametrize("zone, epoch, expected", [
    ("Europe/Paris", 1795689000.5004, "2026-11-26T11:30:00.500+01:00"),  # winter
    ("Europe/Paris", 1782464400.0504, "2026-06-26T11:00:00.050+02:00"),  # summer
    ("America/New_York", 1795689000.9994, "2026-11-26T05:30:00.999-05:00"),
    ("Asia/Kolkata", 1795689002.0014, "2026-11-26T16:00:02.001+05:30"),
])
def test_timestamp_local_offset(set_tz, zone, epoch, expected):
    set_tz(zone)
    assert format_timestamp(epoch) == expected


def test_timestamp_follows_a_dst_change_second_by_second(set_tz):
    set_tz("Europe/Paris")
    change = 1792890000  # 2026-10-25 01:00 UTC: Paris goes from +02:00 to +01:00
    assert format_timestamp(change - 0.5) == "2026-10-25T02:59:59.500+02:00"
    assert format_timestamp(change) == "2026-10-25T02:00:00.000+01:00"


def test_timestamp_matches_datetime(set_tz):
    set_tz("Europe/Paris")
    rng = random.Random(7)
    for _ in range(300):
        epoch = rng.randrange(0, 2**32) + rng.randrange(1000) / 1000 + 0.0004
        expected = datetime.datetime.fromtimestamp(epoch).astimezone().isoformat(
            timespec="milliseconds")
        assert format_timestamp(epoch) == expected


def test_entry_dict_has_the_wire_keys_in_order():
    entry = LogEntry(1, "api", "running", "stdout", "hi", "2026-01-01T00:00:00.000+00:00")
    assert list(entry.as_dict().items()) == [
        ("seq", 1), ("service", "api"), ("phase", "running"), ("stream", "stdout"),
        ("message", "hi"), ("timestamp", "2026-01-01T00:00:00.000+00:00")]


# --- seqs -------------------------------------------------------------------------------

def test_one_append_gets_consecutive_seqs_and_one_timestamp(store_factory):
    before_us = time.time_ns() // 1000
    store = store_factory()
    store.append("api", "stderr", ["a", "b", "c"], "starting")
    entries, _ = store.query()
    assert [e.message for e in entries] == ["a", "b", "c"]
    assert seqs(entries) == [entries[0].seq + i for i in range(3)]
    assert entries[0].seq >= before_us  # the first seq of a run is the time in microseconds
    assert {(e.service, e.phase, e.stream, e.timestamp) for e in entries} == {
        ("api", "starting", "stderr", entries[0].timestamp)}
    store.append("api", "stdout", [], "running")  # nothing captured, nothing stored
    assert store.query()[0] == entries


def test_seqs_are_unique_and_ordered_across_threads(store_factory):
    store = store_factory(buffer_size=100_000)
    seen = []
    store.subscribe(seen.extend)
    start = threading.Barrier(4)

    def writer(name):
        start.wait()
        for i in range(200):
            store.append(name, "stdout", [f"{i}.{n}" for n in range(25)], "running")

    threads = [threading.Thread(target=writer, args=(f"s{t}",)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    all_seqs = seqs(seen)
    assert len(all_seqs) == 4 * 200 * 25
    assert all_seqs == list(range(all_seqs[0], all_seqs[0] + len(all_seqs)))  # in order, no gap
    for name in ("s0", "s1", "s2", "s3"):  # each thread's lines kept their order
        mine = [e.message for e in seen if e.service == name]
        assert mine == [f"{i}.{n}" for i in range(200) for n in range(25)]
    assert store.query(limit=10**6)[0] == seen


def test_seq_continues_after_restart(store_factory, tmp_path):
    first = store_factory(logs_dir=str(tmp_path))
    first.append("api", "stdout", ["one"], "running")
    first.close()
    (tmp_path / "all.jsonl").write_text(
        (tmp_path / "all.jsonl").read_text() +
        json.dumps(LogEntry(10**17, "api", "running", "stdout", "future", "x").as_dict()) + "\n")
    second = store_factory(logs_dir=str(tmp_path))
    second.append("api", "stdout", ["two"], "running")
    assert seqs(second.query()[0]) == [10**17 + 1]


def test_seq_uses_time_when_larger_than_the_files(store_factory, tmp_path):
    (tmp_path / "all.jsonl").write_text(json.dumps(
        LogEntry(1000, "api", "running", "stdout", "old", "x").as_dict()) + "\n")
    before_us = time.time_ns() // 1000
    store = store_factory(logs_dir=str(tmp_path))
    store.append("api", "stdout", ["new"], "running")
    assert store.query()[0][0].seq >= before_us


def test_restart_tolerates_garbage_and_a_torn_last_line(store_factory, tmp_path):
    good = json.dumps(LogEntry(10**17, "api", "running", "stdout", "ok", "x").as_dict())
    torn = json.dumps(LogEntry(10**17 + 5, "api", "running", "stdout", "cut", "x").as_dict())
    (tmp_path / "all.jsonl").write_text(good + "\nnot json\n[1, 2]\n{\"seq\": \"7\"}\n"
                                        + torn[:30])
    store = store_factory(logs_dir=str(tmp_path))
    store.append("api", "stdout", ["next"], "running")
    store.close()
    lines = (tmp_path / "all.jsonl").read_text().split("\n")
    assert lines[-3] == torn[:30]  # the torn line is left alone, on a line of its own
    assert json.loads(lines[-2])["seq"] == 10**17 + 1
    assert json.loads(lines[-2])["message"] == "next"


# --- rings and queries ------------------------------------------------------------------

def test_ring_keeps_the_newest_entries_per_service(store_factory):
    store = store_factory(buffer_size=3)
    run_appends(store, [(name, 1) for name in ["a", "b", "a", "a", "a", "b", "a"]])
    everything = store.query(limit=100)[0]
    assert [e.message for e in store.query("a")[0]] == ["3.0", "4.0", "6.0"]
    assert [e.message for e in store.query("b")[0]] == ["1.0", "5.0"]
    assert [e.message for e in everything] == [
        "1.0", "3.0", "4.0", "5.0", "6.0"]


def test_query_forms_and_truncated_flags(store_factory):
    store = store_factory(buffer_size=100)
    store.append("flowlayer", "system", ["boot"], "running")
    run_appends(store, [(name, 1) for name in ["api", "db", "api", "db", "api"]])
    store.append("flowlayer", "system", ["ready"], "running")
    every = store.query()[0]
    s = seqs(every)
    by = {name: [e for e in every if e.service == name] for name in ("api", "db", "flowlayer")}

    # no cursor: the newest `limit`
    assert store.query() == (every, False)
    assert store.query(limit=3) == (every[-3:], True)
    assert store.query(limit=len(every)) == (every, False)
    assert store.query("api", limit=2) == (by["api"][-2:], True)
    assert store.query("api", limit=3) == (by["api"], False)
    assert store.query("flowlayer") == (by["flowlayer"], False)
    assert store.query("nobody") == ([], False)
    # after_seq: among the newer entries, the newest `limit`
    assert store.query(after_seq=s[2]) == (every[3:], False)
    assert store.query(after_seq=s[2], limit=2) == (every[-2:], True)
    assert store.query(after_seq=s[-1]) == ([], False)
    assert store.query(after_seq=0, limit=len(every)) == (every, False)
    assert store.query("db", after_seq=s[0]) == (by["db"], False)
    assert store.query("db", after_seq=by["db"][0].seq, limit=1) == (by["db"][1:], False)
    assert store.query("flowlayer", after_seq=s[0]) == (by["flowlayer"][1:], False)
    # before_seq: among the older entries, the newest `limit`
    assert store.query(before_seq=s[4]) == (every[:4], False)
    assert store.query(before_seq=s[4], limit=2) == (every[2:4], True)
    assert store.query(before_seq=s[0]) == ([], False)
    assert store.query("api", before_seq=by["api"][2].seq, limit=1) == (by["api"][1:2], True)
    assert store.query("api", before_seq=by["api"][2].seq) == (by["api"][:2], False)
    assert store.query("flowlayer", before_seq=FAR, limit=1) == (by["flowlayer"][1:], True)
    with pytest.raises(ValueError):
        store.query(after_seq=1, before_seq=2)


def reference(memory, history, buffer_size, on_disk, service, limit, after_seq, before_seq):
    """What a query must answer, the slow way: `memory` is every entry appended in this run,
    `history` every entry ever appended (in the files when `on_disk`)."""
    if on_disk and before_seq is not None:
        held = history
    else:  # the newest `buffer_size` of each service
        held = [e for i, e in enumerate(memory)
                if sum(1 for x in memory[i + 1:] if x.service == e.service) < buffer_size]
    match = [e for e in held if (service is None or e.service == service)
             and (after_seq is None or e.seq > after_seq)
             and (before_seq is None or e.seq < before_seq)]
    return match[-limit:], len(match) > limit


SERVICES = ["a", "b", "flowlayer", "all"]
appends = st.lists(st.tuples(st.sampled_from(SERVICES), st.integers(1, 4)), max_size=20)
queries = st.lists(st.tuples(
    st.sampled_from([None] + SERVICES),
    st.integers(1, 12),  # limit
    st.sampled_from(["none", "after", "before"]),
    st.integers(0, 200),  # which entry the cursor is next to
    st.integers(-1, 1),  # and how far from its seq
), min_size=1, max_size=8)


def check_queries(store, memory, history, buffer_size, on_disk, cases):
    for service, limit, form, index, delta in cases:
        cursor = max(history[index % len(history)].seq + delta if history else 1, 1)
        after_seq = cursor if form == "after" else None
        before_seq = cursor if form == "before" else None
        got = store.query(service, limit, after_seq=after_seq, before_seq=before_seq)
        assert got == reference(memory, history, buffer_size, on_disk, service, limit,
                                after_seq, before_seq), (service, limit, form, cursor)


@settings(max_examples=60, deadline=None)
@given(plan=appends, buffer_size=st.integers(1, 6), cases=queries)
def test_queries_match_a_model_in_memory(plan, buffer_size, cases):
    store = LogStore(buffer_size=buffer_size)
    memory = run_appends(store, plan)
    check_queries(store, memory, memory, buffer_size, False, cases)


@settings(max_examples=40, deadline=None)
@given(runs=st.lists(appends, min_size=1, max_size=3), buffer_size=st.integers(1, 6),
       cases=queries)
def test_queries_match_a_model_with_the_files(tmp_path_factory, runs, buffer_size, cases):
    directory = str(tmp_path_factory.mktemp("logs"))
    history = []
    with mock.patch.object(logstore, "_BLOCK", 128):  # many blocks and bisection steps
        for plan in runs:  # each run is a server restart on the same logs dir
            store = LogStore(buffer_size=buffer_size, logs_dir=directory)
            memory = run_appends(store, plan)
            history += memory
            check_queries(store, memory, history, buffer_size, True, cases)
            store.close()


def test_before_seq_beyond_memory_reads_the_files_across_a_restart(store_factory, tmp_path):
    first = store_factory(buffer_size=2, logs_dir=str(tmp_path))
    old = run_appends(first, [("api", 1), ("db", 1), ("flowlayer", 1)] * 4)
    first.close()
    assert first.query(limit=100, before_seq=FAR) == (old, False)  # still served after close
    second = store_factory(buffer_size=2, logs_dir=str(tmp_path))
    new = run_appends(second, [("api", 3)])
    everything = old + new
    api = [e for e in everything if e.service == "api"]
    assert second.query("api") == (api[-2:], False)  # without a cursor only memory counts

    assert second.query("api", limit=100, before_seq=FAR) == (api, False)
    assert second.query("api", limit=3, before_seq=api[-1].seq) == (api[-4:-1], True)
    assert second.query("api", limit=4, before_seq=api[4].seq) == (api[:4], False)
    assert second.query("flowlayer", limit=100, before_seq=FAR) == (
        [e for e in old if e.service == "flowlayer"], False)
    assert second.query("db", limit=3, before_seq=FAR) == (
        [e for e in old if e.service == "db"][-3:], True)
    assert second.query(limit=100, before_seq=FAR) == (everything, False)
    assert second.query(limit=5, before_seq=everything[3].seq) == (everything[:3], False)
    assert second.query(limit=2, before_seq=everything[3].seq) == (everything[1:3], True)
    assert second.query(limit=3, before_seq=new[1].seq) == (everything[-5:-2], True)


def test_disk_queries_are_exact_while_the_writer_is_behind(store_factory, tmp_path):
    store = store_factory(buffer_size=10, logs_dir=str(tmp_path))
    for i in range(50):
        store.append("api", "stdout", [f"{i}.{n}" for n in range(1000)], "running")
    newest = store.query("api", limit=1)[0][0].seq
    # asked at once: most of these entries left memory but were maybe not written yet
    entries, truncated = store.query("api", limit=3000, before_seq=newest - 5)
    assert seqs(entries) == list(range(newest - 3005, newest - 5)) and truncated
    entries, _ = store.query(limit=3000, before_seq=newest - 20_000)
    assert seqs(entries) == list(range(newest - 23_000, newest - 20_000))


# --- JSONL projection -------------------------------------------------------------------

def test_jsonl_files_hold_every_entry(store_factory, tmp_path):
    directory = tmp_path / "logs" / "nested"  # created when missing
    store = store_factory(buffer_size=2, logs_dir=str(directory))
    store.append("flowlayer", "system", ["boot"], "running")
    store.append("api", "stdout", ["plain", 'quote " back \\ tab \t é \u2603 \x00'], "ready")
    store.append("db", "stderr", ["x"] * 5000, "running")
    store.append("all", "stdout", ["a service called all"], "running")
    entries = store.query(limit=10**6, before_seq=FAR)[0]
    store.close()
    assert sorted(os.listdir(directory)) == ["all.jsonl", "api.jsonl", "db.jsonl"]
    assert read_jsonl(directory / "all.jsonl") == [e.as_dict() for e in entries]
    assert len(entries) == 5004
    for name in ("api", "db"):
        assert read_jsonl(directory / f"{name}.jsonl") == [
            e.as_dict() for e in entries if e.service == name]
    with open(directory / "api.jsonl", encoding="utf-8") as f:  # json.dumps' own layout
        assert [line.rstrip("\n") for line in f] == [
            json.dumps(e.as_dict()) for e in entries if e.service == "api"]


def test_jsonl_is_flushed_without_close(store_factory, tmp_path):
    store = store_factory(logs_dir=str(tmp_path))
    store.append("api", "stdout", ["soon on disk"], "running")
    path = tmp_path / "api.jsonl"
    wait_until(lambda: path.exists() and "soon on disk" in path.read_text(),
               timeout=5, message="the flush of api.jsonl")
    assert "soon on disk" in (tmp_path / "all.jsonl").read_text()


def test_writer_loses_nothing_under_load(store_factory, tmp_path):
    store = store_factory(buffer_size=5, logs_dir=str(tmp_path))
    for i in range(200):
        store.append(f"s{i % 3}", "stdout", [f"{i}.{n}" for n in range(1000)], "running")
    store.close()
    with open(tmp_path / "all.jsonl", "rb") as f:
        assert sum(1 for _ in f) == 200_000
    with open(tmp_path / "s1.jsonl", "rb") as f:
        assert sum(1 for _ in f) == 67_000


def test_logs_dir_that_cannot_be_created_raises(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError):
        LogStore(logs_dir=str(tmp_path / "file"))
    with pytest.raises(OSError):
        LogStore(logs_dir=str(tmp_path / "file" / "logs"))


def test_deleted_logs_dir_is_reported_once(store_factory, tmp_path):
    warnings = []
    directory = tmp_path / "logs"
    store = store_factory(logs_dir=str(directory), on_warning=warnings.append)
    store.append("api", "stdout", ["before"], "running")
    wait_until(lambda: (directory / "api.jsonl").exists(), message="the first flush")
    shutil.rmtree(directory)
    for i in range(5):
        store.append("api", "stdout", [f"after {i}"], "running")
        store.query(before_seq=FAR)  # waits for the writer
    store.close()
    assert len(warnings) == 1
    assert str(directory) in warnings[0] and "No such file or directory" in warnings[0]
    assert [e.message for e in store.query()[0]] == ["before"] + [f"after {i}" for i in range(5)]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_full_disk_is_reported_once(store_factory, tmp_path):
    warnings = []
    os.symlink("/dev/full", tmp_path / "api.jsonl")
    store = store_factory(logs_dir=str(tmp_path), on_warning=warnings.append)
    store.append("api", "stdout", ["x" * 100_000], "running")
    store.append("api", "stdout", ["y"], "running")
    store.close()
    assert len(warnings) == 1
    assert str(tmp_path / "api.jsonl") in warnings[0]
    assert "No space left on device" in warnings[0]


# --- subscribers ------------------------------------------------------------------------

def test_subscribers_see_every_entry_in_order(store_factory):
    store = store_factory()
    first, second = [], []
    token = store.subscribe(first.append)
    store.subscribe(second.append)
    store.append("api", "stdout", ["a", "b"], "running")
    store.unsubscribe(token)
    store.append("db", "stdout", ["c"], "running")
    assert [[e.message for e in batch] for batch in first] == [["a", "b"]]
    assert [[e.message for e in batch] for batch in second] == [["a", "b"], ["c"]]
    assert [e for batch in second for e in batch] == store.query()[0]


def test_a_raising_subscriber_does_not_break_capture(store_factory):
    warnings = []
    store = store_factory(on_warning=lambda message: (
        warnings.append(message), store.append("flowlayer", "system", [message], "running")))
    received = []

    def broken(entries):
        raise RuntimeError("boom")

    store.subscribe(broken)
    store.subscribe(received.extend)
    for i in range(3):
        store.append("api", "stdout", [str(i)], "running")
    assert len(warnings) == 1 and "boom" in warnings[0]
    assert [e.message for e in received if e.service == "api"] == ["0", "1", "2"]
    assert seqs(received) == seqs(store.query()[0])


# --- the writer's bound and per-file failures ---------------------------------------------

def test_a_full_writer_queue_blocks_the_appending_thread_and_loses_nothing(
        store_factory, tmp_path, monkeypatch):
    """A stalled disk: the capture thread waits once more than the bound is queued; queries
    are still answered from memory meanwhile; every line reaches the files in seq order."""
    gate, stalled = threading.Event(), threading.Event()
    format_lines = logstore._format_lines

    def stalling_format(entries):
        stalled.set()
        gate.wait()
        return format_lines(entries)

    monkeypatch.setattr(logstore, "_format_lines", stalling_format)
    monkeypatch.setattr(logstore, "WRITER_QUEUE_BYTES", 0)   # one queued chunk is too many
    store = store_factory(logs_dir=str(tmp_path))
    returned = []

    def capture():
        for i in range(5):
            store.append("api", "stdout", [f"{i}.{j}" for j in range(100)], "running")
            returned.append(i)

    thread = threading.Thread(target=capture)
    thread.start()
    try:
        wait_until(lambda: len(store.query()[0]) == 200, message="two chunks in memory")
        assert stalled.is_set()
        assert returned == [0], "the second append must wait for the stalled writer"
        assert thread.is_alive()
    finally:
        gate.set()
    thread.join(60)
    assert returned == [0, 1, 2, 3, 4]
    store.close()
    lines = read_jsonl(tmp_path / "all.jsonl")
    assert [line["message"] for line in lines] == [f"{i}.{j}" for i in range(5) for j in range(100)]
    assert [line["seq"] for line in lines] == seqs(store.query()[0])
    assert read_jsonl(tmp_path / "api.jsonl") == lines


def test_close_releases_a_thread_waiting_for_room(store_factory, tmp_path, monkeypatch):
    gate = threading.Event()
    format_lines = logstore._format_lines
    monkeypatch.setattr(logstore, "_format_lines",
                        lambda entries: (gate.wait(), format_lines(entries))[1])
    monkeypatch.setattr(logstore, "WRITER_QUEUE_BYTES", 0)
    store = store_factory(logs_dir=str(tmp_path))
    store.append("api", "stdout", ["a"], "running")
    waiting = threading.Thread(target=store.append, args=("api", "stdout", ["b"], "running"))
    waiting.start()
    closing = threading.Thread(target=store.close)
    closing.start()
    gate.set()
    closing.join(60)
    waiting.join(60)
    assert not closing.is_alive() and not waiting.is_alive()
    assert [line["message"] for line in read_jsonl(tmp_path / "all.jsonl")] == ["a", "b"]


def test_one_failing_file_does_not_stop_the_others(store_factory, tmp_path):
    """A name too long for the filesystem: that file is reported once, all.jsonl and the
    other services' files get every line."""
    warnings = []
    long_name = "n" * 300
    store = store_factory(logs_dir=str(tmp_path), on_warning=warnings.append)
    for i in range(3):
        store.append(long_name, "stdout", [f"long {i}"], "running")
        store.append("api", "stdout", [f"api {i}"], "running")
        store.query(before_seq=FAR)   # one writer round per step
    store.close()
    assert len(warnings) == 1, warnings
    assert long_name in warnings[0] and "File name too long" in warnings[0]
    assert [line["message"] for line in read_jsonl(tmp_path / "all.jsonl")] == [
        f"{who} {i}" for i in range(3) for who in ("long", "api")]
    assert [line["message"] for line in read_jsonl(tmp_path / "api.jsonl")] == [
        f"api {i}" for i in range(3)]


def test_first_within_takes_the_part_of_a_chunk_that_fits():
    store = LogStore()
    store.append("api", "stdout", ["x" * 100] * 10, "running")
    chunk = store.query("api")[0]
    assert logstore.first_within(chunk, logstore.chunk_bytes(chunk), empty=False) == (
        chunk, logstore.chunk_bytes(chunk))
    part, size = logstore.first_within(chunk, logstore.chunk_bytes(chunk[:3]), empty=False)
    assert part == chunk[:3] and size == logstore.chunk_bytes(chunk[:3])
    assert logstore.first_within(chunk, 5, empty=False) == ([], 0)
    assert logstore.first_within(chunk, 5, empty=True)[0] == chunk[:1]
