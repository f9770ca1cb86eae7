"""Run `tui.py` in a real pseudo-terminal and read its screen with pyte."""
import fcntl
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import threading
import urllib.request

import pyte

from conftest import ROOT, wait_until
from lib.client import Client
from lib.transport import CONNECTED

TUI = os.path.join(ROOT, "tui.py")
SERVER = os.path.join(ROOT, "flowlayer.py")


class Screen(pyte.Screen):
    """pyte.Screen plus SU and SD (`CSI n S`, `CSI n T`), which ncurses uses to scroll
    a region on xterm and pyte does not know."""

    def scroll_up(self, count=1, *_):
        self._shift(count or 1, up=True)

    def scroll_down(self, count=1, *_):
        self._shift(count or 1, up=False)

    def _shift(self, count, up):
        top, bottom = self.margins or (0, self.lines - 1)
        rows = list(range(top, bottom + 1))
        if not up:
            rows.reverse()
        for y, source in zip(rows, rows[count:]):
            self.buffer[y] = self.buffer[source]
        for y in rows[max(0, len(rows) - count):]:
            self.buffer.pop(y, None)
        self.dirty.update(rows)


class Stream(pyte.ByteStream):
    csi = {**pyte.ByteStream.csi, "S": "scroll_up", "T": "scroll_down"}


class Tui:
    """`python program args` (the client) in a pty of `cols` x `rows`; `text()` is what
    the screen shows now."""

    def __init__(self, args, cols=100, rows=30, env=None, on_output=None, program=TUI):
        environment = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
        environment.update(TERM="xterm-256color", LANG="C.UTF-8", LC_ALL="C.UTF-8")
        environment.update(env or {})
        self.cols, self.rows = cols, rows
        self.screen = Screen(cols, rows)
        self.stream = Stream(self.screen)
        self.raw = bytearray()
        self.returncode = None
        self.on_output = on_output  # called with the screen's lines after each read
        self._lock = threading.Lock()
        pid, fd = pty.fork()
        if pid == 0:  # the child: the pty is its controlling terminal
            try:
                os.execve(sys.executable, [sys.executable, program, *args], environment)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self._set_size(cols, rows)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _set_size(self, cols, rows):
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def _read(self):
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError:
                return
            if not data:
                return
            with self._lock:
                self.raw += data
                self.stream.feed(data)
                if self.on_output is not None:
                    self.on_output(self.screen.display)

    # -- reading the screen --

    def text(self):
        with self._lock:
            return "\n".join(self.screen.display)

    def line(self, y):
        with self._lock:
            return self.screen.display[y]

    def find(self, needle):
        """(y, x) of the first occurrence of `needle` on the screen, or None."""
        with self._lock:
            for y, line in enumerate(self.screen.display):
                x = line.find(needle)
                if x >= 0:
                    return y, x
        return None

    def cell(self, y, x):
        with self._lock:
            return self.screen.buffer[y][x]

    def wait_for(self, needle, timeout=15):
        """Wait until `needle` (text, or a predicate of the screen text) shows."""
        check = needle if callable(needle) else (lambda text: needle in text)
        wait_until(lambda: check(self.text()), timeout,
                   message=f"{needle!r} on screen; screen was:\n{self.text()}")

    # -- driving it --

    def send(self, keys):
        os.write(self.fd, keys.encode() if isinstance(keys, str) else keys)

    def resize(self, cols, rows):
        with self._lock:
            self.screen.resize(rows, cols)
        self._set_size(cols, rows)
        os.kill(self.pid, signal.SIGWINCH)

    def echoes(self):
        """True when the terminal is in its normal mode (echo and line editing on)."""
        flags = termios.tcgetattr(self.fd)[3]
        return bool(flags & termios.ECHO and flags & termios.ICANON)

    def exited(self):
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode is not None

    def wait_exit(self, timeout=10):
        wait_until(self.exited, timeout, message="the client to exit")
        self._reader.join(timeout=5)
        return self.returncode

    def close(self):
        """Kill the client if a test left it running, and release the pty."""
        if not self.exited():
            os.kill(self.pid, signal.SIGKILL)
            self.wait_exit()
        try:
            os.close(self.fd)
        except OSError:
            pass


def stack_config(port, token, logs_dir, web_port):
    """A small stack: a ticker with stderr lines, an idle daemon, a web service that gets
    ready, a oneshot, a burst of 100 lines kept 40 at a time, and a counter of 5 lines."""
    py = sys.executable
    ticker = ("import sys, time\n"
              "for i in range(100000):\n"
              "    print(f'tick {i}', flush=True)\n"
              "    if i % 5 == 0: print(f'warn {i}', file=sys.stderr, flush=True)\n"
              "    time.sleep(0.2)\n")
    sleep = "import time; time.sleep(3600)"
    services = {
        "ticker": {"cmd": [py, "-u", "-c", ticker]},
        "idle": {"cmd": [py, "-u", "-c", f"print('idle up'); {sleep}"]},
        "web": {"cmd": [py, "-m", "http.server", "--bind", "127.0.0.1", str(web_port)],
                "port": web_port,
                "ready": {"type": "http", "url": f"http://127.0.0.1:{web_port}/"}},
        "job": {"cmd": [py, "-c", "print('job done')"], "kind": "oneshot"},
        "burst": {"cmd": [py, "-u", "-c", f"[print(f'burst {{i:03}}') for i in range(100)]; {sleep}"],
                  "logView": {"maxEntries": 40}},
        "counter": {"cmd": [py, "-u", "-c",
                            f"import os; [print(os.getpid(), 'count', i) for i in range(5)]; {sleep}"]},
    }
    return {"session": {"bind": f"127.0.0.1:{port}", "token": token},
            "logs": {"dir": str(logs_dir)}, "services": services}


class Server:
    """`python flowlayer.py -c CONFIG` as a child process, restartable on the same config."""

    def __init__(self, config_path, addr, token):
        self.config_path, self.addr, self.token = config_path, addr, token
        self.log_path = config_path + ".out"
        self.process = None

    def start(self):
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen([sys.executable, SERVER, "-c", self.config_path],
                                            stdout=out, stderr=subprocess.STDOUT)
        wait_until(self._healthy, 20, message=f"the server on {self.addr}")
        return self

    def _healthy(self):
        assert self.process.poll() is None, open(self.log_path).read()
        request = urllib.request.Request(f"http://{self.addr}/health",
                                         headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(20)

    def statuses(self):
        """name -> status, asked over a separate session (the server's own truth)."""
        client = Client(f"ws://{self.addr}/ws", self.token).start()
        try:
            assert client.wait_for(lambda: client.view().state == CONNECTED, 10)
            reply = client.request("get_snapshot").wait(10)
            return {s["name"]: s["status"] for s in reply.data["services"]}
        finally:
            client.close()
