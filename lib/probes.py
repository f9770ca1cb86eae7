"""Readiness checks (http, tcp), the port-in-use check and the retry loop around them
(SPEC 3.3). Every attempt as a whole is bounded by ATTEMPT_TIMEOUT so a hanging or trickling
service cannot stall the caller."""
import select
import socket
import ssl
import time
import urllib.parse

ATTEMPT_TIMEOUT = 0.2  # seconds per attempt, all of it (connect, TLS, request, answer)
MAX_STATUS_LINE = 8192  # bytes
FIRST_DELAY = 0.01  # spacing of the first attempts: a quick service is seen quickly
MAX_DELAY = 0.2
PORT_FREE_POLL = 0.02


def check_tcp(port):
    """True when something accepts TCP connections on 127.0.0.1:port."""
    return tcp_attempt(port)[0]


def tcp_attempt(port):
    """(ok, what happened): `connected`, `connection refused`, `timed out`, ..."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=ATTEMPT_TIMEOUT):
            return True, "connected"
    except OSError as error:
        return False, failure_text(error)


def failure_text(error):
    """A failed attempt in a few words, for the `waiting for ready` lines (SPEC 6.2)."""
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error) or type(error).__name__


def port_in_use(port):
    """True when a service may not start on `port` because something already listens there."""
    return check_tcp(port)


def check_http(url):
    """True when a GET on `url` answers with a status 200..399 (a redirect is not followed)."""
    return http_attempt(url)[0]


def http_attempt(url):
    """(ok, what happened): `status 503`, `connection refused`, `timed out`, ... The whole attempt (connect, TLS, request, status line) shares one ATTEMPT_TIMEOUT, so a
    server that trickles its answer cannot hold the caller longer. Connects directly: proxy
    variables are ignored, as the service runs on this machine."""
    deadline = time.monotonic() + ATTEMPT_TIMEOUT
    try:
        parts = urllib.parse.urlsplit(url)
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.netloc.rpartition("@")[2]
        with _connect(parts.hostname, port, deadline) as raw:
            sock = _tls(raw, parts.hostname, deadline) if tls else raw
            _send_all(sock, f"GET {target} HTTP/1.1\r\nHost: {host}\r\n"
                            f"Connection: close\r\n\r\n".encode("latin-1"), deadline)
            status_line = _read_line(sock, deadline)
    except Exception as error:  # any failure (refused, timeout, bad answer, bad url) means "not ready"
        return False, failure_text(error)
    try:
        version, status = status_line.split(b" ", 2)[:2]
        code = int(status)
    except ValueError:
        return False, "not an HTTP answer"
    if not version.startswith(b"HTTP/1."):
        return False, "not an HTTP answer"
    return 200 <= code <= 399, f"status {code}"


def _left(deadline):
    """Seconds left before `deadline`; TimeoutError once it passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("probe attempt timed out")
    return left


def _connect(hostname, port, deadline):
    """A socket connected to the first address of `hostname` that answers in time."""
    error = OSError(f"no address for {hostname}")
    for family, kind, proto, _, address in socket.getaddrinfo(hostname, port, type=socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(_left(deadline))
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error


def _tls(sock, hostname, deadline):
    """The TLS handshake, step by step so that it too ends by `deadline`."""
    context = ssl.create_default_context()
    context.check_hostname = False  # local services often use self-signed certificates
    context.verify_mode = ssl.CERT_NONE
    sock = context.wrap_socket(sock, server_hostname=hostname, do_handshake_on_connect=False)
    sock.setblocking(False)
    while True:
        try:
            sock.do_handshake()
            return sock
        except ssl.SSLWantReadError:
            select.select([sock], [], [], _left(deadline))
        except ssl.SSLWantWriteError:
            select.select([], [sock], [], _left(deadline))


def _wait(sock, deadline, write=False):
    """Block until `sock` can be read (or written) or `deadline` passes."""
    ready = select.select([] if write else [sock], [sock] if write else [], [], _left(deadline))
    if not any(ready):
        raise TimeoutError("probe attempt timed out")


def _send_all(sock, data, deadline):
    sock.setblocking(False)
    while data:
        try:
            data = data[sock.send(data):]
        except (BlockingIOError, ssl.SSLWantWriteError):
            _wait(sock, deadline, write=True)
        except ssl.SSLWantReadError:
            _wait(sock, deadline)


def _read_line(sock, deadline):
    """The first line of the answer (at most MAX_STATUS_LINE bytes)."""
    data = b""
    while b"\n" not in data:
        if len(data) > MAX_STATUS_LINE:
            raise ValueError("status line too long")
        try:
            chunk = sock.recv(4096)
        except (BlockingIOError, ssl.SSLWantReadError):
            _wait(sock, deadline)
            continue
        except ssl.SSLWantWriteError:
            _wait(sock, deadline, write=True)
            continue
        if not chunk:
            raise ConnectionError("closed before a status line")
        data += chunk
    return data.split(b"\n", 1)[0]


def wait_until_ready(check, cancelled):
    """Run `check` until it succeeds (True) or `cancelled` is set (False). Attempts start at
    once, then are spaced FIRST_DELAY apart, doubling up to MAX_DELAY."""
    delay = FIRST_DELAY
    while not cancelled.is_set():
        if check():
            return True
        if cancelled.wait(delay):
            break
        delay = min(delay * 2, MAX_DELAY)
    return False


def wait_port_free(port, timeout=2.0):
    """True once nothing listens on `port`; False if it is still in use after `timeout`."""
    deadline = time.monotonic() + timeout
    while port_in_use(port):
        if time.monotonic() >= deadline:
            return False
        time.sleep(PORT_FREE_POLL)
    return True
