"""lib.listening: the table of listening TCP ports (netlink sock_diag, /proc)."""
import socket
import sys

import pytest

from lib.listening import ListenTable, proc_listeners

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux tables")


@pytest.fixture
def table():
    table = ListenTable()
    yield table
    table.close()


@pytest.fixture(params=[True, False], ids=["netlink", "proc"])
def any_table(request):
    table = ListenTable(netlink=request.param)
    yield table
    table.close()


def test_a_listening_socket_is_seen_and_a_bound_one_is_not(any_table):
    table = any_table
    assert table.source in ("netlink", "proc")
    with socket.socket() as listening, socket.socket() as bound:
        listening.bind(("127.0.0.1", 0))
        bound.bind(("127.0.0.1", 0))
        before = table.ports()
        assert listening.getsockname()[1] not in before
        port = listening.getsockname()[1]
        listening.listen()
        ports = table.ports()
        assert port in ports
        assert bound.getsockname()[1] not in ports
    assert port not in table.ports()


def test_ipv6_listener(table):
    try:
        sock = socket.socket(socket.AF_INET6)
        sock.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    with sock:
        sock.listen()
        assert sock.getsockname()[1] in table.ports()


def test_proc_form_gives_ports_and_inodes():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        entries = dict(proc_listeners())
        assert entries[sock.getsockname()[1]].isdigit()


def test_proc_fallback_and_no_table(tmp_path):
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "tcp").write_text(
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1\n"
        "   1: 0100007F:0BB9 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 4243 1\n")
    assert list(proc_listeners(str(tmp_path))) == [(3000, "4242")]
    table = ListenTable(proc=str(tmp_path), netlink=False)  # as where netlink is refused
    assert (table.source, table.ports()) == ("proc", {3000})
    empty = ListenTable(proc=str(tmp_path / "nothing"), netlink=False)
    assert empty.source is None
    with pytest.raises(OSError):
        empty.ports()
