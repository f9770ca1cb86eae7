"""Readiness checks (http, tcp), the port-in-use check and the retry loop around them
(SPEC 3.3). Every attempt is bounded by ATTEMPT_TIMEOUT so a hanging service cannot stall
the caller."""
import http.client
import socket
import ssl
import time
import urllib.parse

ATTEMPT_TIMEOUT = 0.2  # seconds per connect / HTTP exchange
FIRST_DELAY = 0.01  # spacing of the first attempts: a quick service is seen quickly
MAX_DELAY = 0.2
PORT_FREE_POLL = 0.02


def check_tcp(port):
    """True when something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=ATTEMPT_TIMEOUT):
            return True
    except OSError:
        return False


def port_in_use(port):
    """True when a service may not start on `port` because something already listens there."""
    return check_tcp(port)


def check_http(url):
    """True when a GET on `url` answers with a status 200..399. Connects directly: proxy
    variables are ignored, as the service runs on this machine."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "https":
            context = ssl.create_default_context()
            context.check_hostname = False  # local services often use self-signed certificates
            context.verify_mode = ssl.CERT_NONE
            connection = http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=ATTEMPT_TIMEOUT, context=context
            )
        else:
            connection = http.client.HTTPConnection(
                parts.hostname, parts.port, timeout=ATTEMPT_TIMEOUT
            )
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request("GET", target)
            return 200 <= connection.getresponse().status <= 399
        finally:
            connection.close()
    except Exception:  # any failure (refused, timeout, bad answer, bad url) means "not ready"
        return False


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
