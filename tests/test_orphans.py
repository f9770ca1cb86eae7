"""No orphans, ever: whatever ends the server, no process of its services survives.

Each case runs once by default; FLOWLAYER_STRESS=1 repeats each 10 times to catch races.
"""
import os
import signal
import uuid

import pytest

from conftest import ServerProcess, pids_with_marker, py_cmd, wait_until, write_config

REPEAT = 10 if os.environ.get("FLOWLAYER_STRESS") else 1

# A service with a child and a grandchild; `stubborn` ignores SIGTERM in all three.
FAMILY = """
import os, signal, subprocess, sys, time
depth = int(sys.argv[1]); stubborn = sys.argv[2] == "1"
if stubborn:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if depth < 2:
    subprocess.Popen([sys.executable, "-c", sys.argv[3], str(depth + 1), sys.argv[2], sys.argv[3]])
print("level", depth, "up", flush=True)
time.sleep(600)
"""


def family(stubborn):
    return py_cmd(FAMILY) + ["0", "1" if stubborn else "0", FAMILY]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
@pytest.mark.parametrize("round_", range(REPEAT))
def test_no_process_survives_the_server(tmp_path, sig, round_):
    marker = f"FLOWLAYER_TEST_{uuid.uuid4().hex}"
    env = {"MARK": marker}
    path = write_config(tmp_path, {"services": {
        "db": {"cmd": family(stubborn=False), "env": env},
        "stubborn": {"cmd": family(stubborn=True), "env": env, "dependsOn": ["db"]},
        "job": {"kind": "oneshot", "cmd": py_cmd("print('done')"), "env": env},
    }})
    server = ServerProcess("-c", path)
    try:
        server.wait_line("startup ok")
        wait_until(lambda: len(pids_with_marker(marker)) == 6, message="3 generations of 2 services")
        server.stop(sig)
        if sig != signal.SIGKILL:
            assert server.proc.returncode == 0
        # The stubborn family needs the SIGKILL that follows the 5 s grace.
        wait_until(lambda: pids_with_marker(marker) == [], timeout=30, message="no survivors")
    finally:
        if server.proc.poll() is None:
            server.proc.kill()


def test_guardian_exits_with_the_server(tmp_path):
    marker = f"FLOWLAYER_TEST_{uuid.uuid4().hex}"
    path = write_config(tmp_path, {"services": {"a": {"cmd": py_cmd("import time;time.sleep(600)")}}})
    server = ServerProcess("-c", path, env={**os.environ, "MARK": marker})
    server.wait_line("startup ok")
    # The server and its guardian inherit the marker; the service too.
    wait_until(lambda: len(pids_with_marker(marker)) == 3, message="server, guardian, service")
    assert server.stop() == 0
    wait_until(lambda: pids_with_marker(marker) == [], message="guardian gone too")
