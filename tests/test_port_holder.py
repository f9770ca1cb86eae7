"""lib.port_holder: naming the process that listens on a port (SPEC 6.3)."""
import os
import socket
import subprocess
import sys

import pytest

from conftest import free_port
from lib.port_holder import in_use_reason, port_holder

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

HOLDER = """
import socket, sys
s = socket.socket(socket.{family})
s.bind(("{host}", 0))
s.listen()
print(s.getsockname()[1], flush=True)
sys.stdin.read()
"""


@pytest.fixture
def holder(tmp_path):
    """Start `python holder.py --tag` listening on a fresh port; the fixture gives a function
    returning (process, port, script path)."""
    children = []

    def start(family="AF_INET", host="127.0.0.1"):
        script = tmp_path / f"holder_{len(children)}.py"
        script.write_text(HOLDER.format(family=family, host=host))
        child = subprocess.Popen([sys.executable, str(script), "--tag"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        children.append(child)
        return child, int(child.stdout.readline()), script

    yield start
    for child in children:
        child.kill()
        child.wait()


def test_names_pid_and_command_line(holder):
    child, port, script = holder()
    assert port_holder(port) == f"pid {child.pid}: {sys.executable} {script} --tag"


def test_ipv6_listener(holder):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        child, port, _ = holder("AF_INET6", "::1")
    except ValueError:
        pytest.skip("cannot bind ::1")
    assert port_holder(port).startswith(f"pid {child.pid}: ")


def test_own_listener_is_this_process():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert port_holder(s.getsockname()[1]).startswith(f"pid {os.getpid()}: ")


def test_bound_but_not_listening_and_free_ports_have_no_holder():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # state CLOSE in the table, not LISTEN
        assert port_holder(s.getsockname()[1]) is None
    assert port_holder(free_port()) is None


def test_without_proc_the_answer_is_none(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert port_holder(s.getsockname()[1], proc=str(tmp_path)) is None


def test_in_use_reason():
    assert in_use_reason(3000, "pid 4242: node server.js") == \
        "port 3000 is already in use (pid 4242: node server.js)"
    assert in_use_reason(3000, None) == "port 3000 is already in use"
