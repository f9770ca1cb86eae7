"""The service scripts the tests run (as `py_cmd(SCRIPT) + [args]`), one copy of each.

Each prints one line once it is up, so a test waits on that line instead of sleeping.
"""

# Prints `up`, then sleeps: a daemon that does nothing.
SLEEPER = "import time\nprint('up', flush=True)\ntime.sleep(600)\n"

# The same, deaf to SIGTERM: only the stop grace's SIGKILL ends it.
STUBBORN = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('up', flush=True)\ntime.sleep(600)\n")

_LISTEN = ("import socket, sys, time\n"
           "server = socket.create_server(('127.0.0.1', int(sys.argv[1])))\n"
           "print('listening', flush=True)\n")

# Listens on TCP port argv[1] (a tcp readiness check passes), prints `listening`.
TCP_LISTENER = _LISTEN + "time.sleep(600)\n"

# Answers every request on port argv[1] with 200 (an http readiness check passes).
HTTP_SERVER = _LISTEN + (
    "while True:\n"
    "    conn, _ = server.accept()\n"
    "    conn.recv(4096)\n"
    "    conn.sendall(b'HTTP/1.0 200 OK\\r\\nContent-Length: 0\\r\\n\\r\\n')\n"
    "    conn.close()\n")
