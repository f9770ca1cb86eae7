"""lib.probes: http and tcp readiness checks, port checks, the retry loop (SPEC 3.3)."""
import http.server
import socket
import threading
import time

import pytest

from conftest import free_port
from lib import probes
from lib.probes import check_http, check_tcp, port_in_use, wait_port_free, wait_until_ready

STATUS_BY_PATH = {"/ok": 200, "/redirect": 302, "/missing": 404, "/error": 500}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        status = STATUS_BY_PATH.get(self.path.split("?")[0], 404)
        self.send_response(status)
        if status == 302:
            self.send_header("Location", "/missing")  # must not be followed
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def http_port():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.fixture
def listener():
    """A listening socket that never accepts nor answers; the kernel completes connects."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock
    sock.close()


@pytest.mark.parametrize("path, ready", [
    ("/ok", True), ("/redirect", True), ("/ok?x=1", True), ("/missing", False), ("/error", False),
])
def test_check_http_status_ranges(http_port, path, ready):
    assert check_http(f"http://127.0.0.1:{http_port}{path}") is ready


def test_check_http_ignores_proxy_variables(http_port, monkeypatch):
    dead = f"http://127.0.0.1:{free_port()}"
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, dead)
    assert check_http(f"http://127.0.0.1:{http_port}/ok")


def test_check_http_refused_and_bad_urls_are_not_ready():
    assert not check_http(f"http://127.0.0.1:{free_port()}/")
    assert not check_http("not a url")
    assert not check_http("http://127.0.0.1:notaport/")


def test_check_http_on_a_silent_server_gives_up_after_the_attempt_timeout(listener):
    began = time.monotonic()
    assert not check_http(f"http://127.0.0.1:{listener.getsockname()[1]}/")
    assert time.monotonic() - began < 5  # bounded by the 200 ms timeout, not hanging


def test_check_tcp_and_port_in_use(listener):
    port = listener.getsockname()[1]
    assert check_tcp(port)
    assert port_in_use(port)
    closed = free_port()
    assert not check_tcp(closed)
    assert not port_in_use(closed)


class RecordingEvent(threading.Event):
    """An Event that records the delays it is asked to wait, without waiting."""

    def __init__(self):
        super().__init__()
        self.delays = []

    def wait(self, timeout=None):
        self.delays.append(timeout)
        return self.is_set()


def test_wait_until_ready_spacing_doubles_up_to_the_maximum():
    attempts = []

    def check():
        attempts.append(1)
        return len(attempts) == 8

    cancelled = RecordingEvent()
    assert wait_until_ready(check, cancelled)
    assert len(attempts) == 8
    assert cancelled.delays == pytest.approx([0.01, 0.02, 0.04, 0.08, 0.16, 0.2, 0.2])


def test_wait_until_ready_returns_at_once_when_ready():
    cancelled = RecordingEvent()
    assert wait_until_ready(lambda: True, cancelled)
    assert cancelled.delays == []


def test_wait_until_ready_stops_promptly_when_cancelled(monkeypatch):
    monkeypatch.setattr(probes, "FIRST_DELAY", 60.0)  # a cancel must not wait this out
    attempted = threading.Event()
    cancelled = threading.Event()
    result = []

    def check():
        attempted.set()
        return False

    thread = threading.Thread(target=lambda: result.append(wait_until_ready(check, cancelled)))
    thread.start()
    assert attempted.wait(10)
    cancelled.set()
    thread.join(10)
    assert not thread.is_alive()
    assert result == [False]


def test_wait_until_ready_already_cancelled_does_not_check():
    cancelled = threading.Event()
    cancelled.set()
    assert not wait_until_ready(lambda: pytest.fail("checked"), cancelled)


def test_wait_port_free(listener):
    port = listener.getsockname()[1]
    assert not wait_port_free(port, timeout=0.1)
    assert wait_port_free(free_port(), timeout=0.1)
    closer = threading.Timer(0.2, listener.close)
    closer.start()
    assert wait_port_free(port, timeout=30)
    closer.join()


@pytest.fixture
def trickler():
    """An HTTP server (outside any service) that answers 200 one byte every 20 ms."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=trickle, args=(conn,), daemon=True).start()

    def trickle(conn):
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":
                if stop.wait(0.02):
                    return
                try:
                    conn.send(bytes([byte]))
                except OSError:
                    return

    threading.Thread(target=serve, daemon=True).start()
    yield sock.getsockname()[1]
    stop.set()
    sock.close()


def test_check_http_bounds_the_whole_attempt_not_each_read(trickler):
    """SPEC 3.3: 200 ms per attempt. One byte every 20 ms keeps each read under 200 ms; the
    status line alone (15 bytes) takes 300 ms, so the attempt must fail (with a timeout per
    read it got the whole 200 answer)."""
    assert not check_http(f"http://127.0.0.1:{trickler}/")


def test_check_http_over_tls_with_a_self_signed_certificate(tmp_path):
    ssl = pytest.importorskip("ssl")
    import shutil
    import subprocess
    if not shutil.which("openssl"):
        pytest.skip("needs openssl to make a certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        assert wait_until_ready(lambda: check_http(f"https://127.0.0.1:{port}/ok"), threading.Event())
        assert not check_http(f"https://127.0.0.1:{port}/missing")
    finally:
        server.shutdown()
        server.server_close()


def test_check_http_by_host_name(http_port):
    assert check_http(f"http://localhost:{http_port}/ok")


def test_wait_until_ready_on_a_trickling_server_ends_soon_after_a_cancel(trickler):
    """The loop gives up within one attempt (200 ms) of the cancel, however slow the server."""
    cancelled = threading.Event()
    result = []
    url = f"http://127.0.0.1:{trickler}/"
    thread = threading.Thread(target=lambda: result.append(
        wait_until_ready(lambda: check_http(url), cancelled)))
    thread.start()
    cancelled.set()
    thread.join(10)
    assert not thread.is_alive() and result == [False]


def test_check_http_on_an_endless_status_line_is_not_ready():
    """A server that streams bytes without a line end: refused by the size bound or time."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)

    def flood():
        conn, _ = sock.accept()
        with conn:
            try:
                while True:
                    conn.sendall(b"H" * 65536)
            except OSError:
                pass

    threading.Thread(target=flood, daemon=True).start()
    try:
        assert not check_http(f"http://127.0.0.1:{sock.getsockname()[1]}/")
    finally:
        sock.close()
