"""`make pyz`: dist/flowlayer.pyz runs the server and the client with a bare Python, one that
has none of the runtime packages (`-I -S`: no site-packages, no PYTHONPATH, no user site)."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import uuid

import pytest

from conftest import ROOT, free_port, pids_with_marker, wait_until
from lib import __version__
from tui_helpers import Tui

BARE = [sys.executable, "-I", "-S"]
EXAMPLE = os.path.join(ROOT, "examples", "stack")
PACKAGES = ("json5", "websocket", "websocket_server")


@pytest.fixture(scope="module")
def pyz(tmp_path_factory):
    """The pyz, built from this checkout and the test interpreter's packages (no network)."""
    path = str(tmp_path_factory.mktemp("pyz") / "flowlayer.pyz")
    built = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "build_pyz.py"), path],
                           capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    return path


def bare(*args, **options):
    return subprocess.run([*BARE, *args], capture_output=True, text=True, timeout=60, **options)


def test_the_bare_python_has_none_of_the_packages():
    for package in PACKAGES:
        assert bare("-c", f"import {package}").returncode != 0, package


def test_the_packages_and_lib_import_from_inside_the_pyz(pyz):
    code = (f"import sys; sys.path.insert(0, {pyz!r}); import lib, {', '.join(PACKAGES)}; "
            f"print(lib.__version__); [print(m.__file__) for m in (lib, {', '.join(PACKAGES)})]")
    run = bare("-c", code)
    assert run.returncode == 0, run.stderr
    version, *files = run.stdout.splitlines()
    assert version == __version__
    assert len(files) == 4 and all(file.startswith(pyz + os.sep) for file in files), files


def test_version_and_help_of_both_programs(pyz):
    assert bare(pyz, "--version").stdout == f"flowlayer-server {__version__}\n"
    assert bare(pyz, "tui", "--version").stdout == f"flowlayer-client-tui {__version__}\n"
    server_help, client_help = bare(pyz, "--help"), bare(pyz, "tui", "-h")
    assert (server_help.returncode, client_help.returncode) == (0, 0)
    assert server_help.stdout.startswith("Usage: flowlayer-server ")
    assert "`python flowlayer.pyz tui [FLAGS]` runs the terminal client" in server_help.stdout
    assert client_help.stdout.startswith("Usage: flowlayer-client-tui ")


def test_errors_are_reported_as_by_the_scripts(pyz, tmp_path):
    missing = bare(pyz, "-c", str(tmp_path / "nope.jsonc"))
    assert (missing.returncode, missing.stderr) == (2, f"Error: {tmp_path}/nope.jsonc: file not found\n")
    usage = bare(pyz, "tui", "-bogus")
    assert usage.returncode == 2 and usage.stderr.startswith("Error: ") and "Traceback" not in usage.stderr


def example_on_free_ports(directory):
    """The example stack's config, written to `directory` with free ports and its cwd kept."""
    with open(os.path.join(EXAMPLE, "flowlayer.jsonc"), encoding="utf-8") as f:
        text = f.read()
    for port in sorted(set(re.findall(r'"port": (\d+)', text))):
        text = re.sub(rf"\b{port}\b", str(free_port()), text)
    text = text.replace('"cwd": "."', f'"cwd": {json.dumps(EXAMPLE)}')
    path = os.path.join(directory, "flowlayer.jsonc")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


class BareServer:
    """`python -I -S flowlayer.pyz ARGS`, its output collected line by line."""

    def __init__(self, pyz, *args, env):
        self.lines = []
        self.proc = subprocess.Popen([*BARE, pyz, *args], env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self._reader.start()

    def wait_line(self, text, timeout=60):
        return wait_until(lambda: next((line for line in self.lines if text in line), None), timeout,
                          message=f"{text!r} from the server; got {self.lines[-10:]}")

    def close(self):
        """Kill it if a test left it running; read its output to the end."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(10)
        self.proc.stdout.close()


def health(port, token):
    """A raw HTTP/1.1 GET /health: (status line, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
                  "Connection: close\r\n\r\n".encode())
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, body = answer.decode().partition("\r\n\r\n")
    return head.split("\r\n")[0], body


def argv(pid):
    """The command line of a process, or [] when it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace").split("\0")
    except OSError:
        return []


def test_the_example_stack_runs_from_the_pyz_and_leaves_nothing(pyz, tmp_path):
    marker = f"FLOWLAYER_PYZ_TEST={uuid.uuid4()}"
    env = {**os.environ, marker.split("=")[0]: marker.split("=")[1]}
    port = free_port()
    server = BareServer(pyz, "-c", example_on_free_ports(str(tmp_path)), "-s", f"127.0.0.1:{port}", env=env)
    client = None
    try:
        summary = server.wait_line("boot: startup ")
        assert "startup ok: 7 running, 1 done, 0 failed_start, 0 blocked" in summary, server.lines
        assert health(port, "dev-token") == ("HTTP/1.1 200 OK", '{"ok": true}')

        # The orphan guardian runs from inside the zip (lib/guardian.py's launcher).
        commands = [argv(pid) for pid in pids_with_marker(marker)]
        guardian = [args for args in commands if len(args) > 2 and args[1] == "-c"
                    and pyz in args[2] and "guardian import main" in args[2]]
        assert len(guardian) == 1, commands

        # The one-shot commands from the same file: status of the whole stack.
        status = bare(pyz, "tui", "status", "-addr", f"127.0.0.1:{port}", "-token", "dev-token")
        assert status.returncode == 0 and status.stderr == "", status.stderr
        rows = {line.split()[0]: line.split()[1] for line in status.stdout.splitlines()[1:-1]}
        assert rows == {"api": "ready", "broker": "ready", "cache": "ready", "db": "ready",
                        "gateway": "ready", "notifier": "stopped", "scheduler": "running",
                        "worker": "running"}, status.stdout
        assert status.stdout.splitlines()[-1].startswith("startup ok: 7 running, 1 done")

        # The client from the same file (program "-I", then "-S": the bare interpreter's flags).
        client = Tui(["-S", pyz, "tui", "-addr", f"127.0.0.1:{port}", "-token", "dev-token"], program="-I")
        client.wait_for("Connected")
        client.wait_for(lambda screen: re.search(r"gateway +ready", screen))
        client.send("q")
        assert client.wait_exit() == 0

        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(60) == 0, server.lines[-20:]
    finally:
        if client is not None:
            client.close()
        server.close()
    assert not any("Traceback" in line for line in server.lines), server.lines
    wait_until(lambda: pids_with_marker(marker) == [], timeout=20, message="every process of the stack gone")
