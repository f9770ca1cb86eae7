"""No orphans, ever: whatever ends the server, no process of its services survives.

Each case runs once by default; FLOWLAYER_STRESS=1 repeats each 10 times to catch races.
"""
import os
import signal
import subprocess
import time
import uuid

import pytest

from conftest import ROOT, ServerProcess, alive, pids_with_marker, py_cmd, wait_until, write_config

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


# ---- the guardian signals only what is ours (issue 14: 1, 5, 6) ----------------------------

GUARDIAN = os.path.join(ROOT, "lib", "guardian.py")


def run_guardian(run_id, lines):
    """Run the guardian alone under a stand-in server (a parent with no other child), feed
    it `lines`, close its pipe; return once it exited."""
    parent = ("import os,subprocess,sys;"
              f"sys.exit(subprocess.Popen([sys.executable,{GUARDIAN!r},{run_id!r},str(os.getpid())],"
              "start_new_session=True).wait())")
    stand_in = subprocess.Popen(py_cmd(parent), stdin=subprocess.PIPE)
    stand_in.communicate("".join(lines).encode(), timeout=30)
    assert stand_in.returncode == 0


def test_guardian_spares_a_listed_group_that_is_not_ours():
    """A group id left on the list (a quick exit's `-` before its `+`, a group that outlived
    its service) and reused since by an unrelated `setsid sleep` is never signalled."""
    stranger = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        run_guardian(uuid.uuid4().hex, [f"+{stranger.pid}\n"])
        assert alive(stranger.pid)
    finally:
        stranger.kill()
        stranger.wait()


ADOPTER = """
import ctypes, os, subprocess, sys
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
stranger = subprocess.Popen(["sleep", "600"], start_new_session=True)
print(stranger.pid, flush=True)
# A server that dies at once: its guardian is adopted by this process, the stranger's parent.
server = ("import os,subprocess,sys;"
          "subprocess.Popen([sys.executable,sys.argv[1],'run',str(os.getpid())],"
          "stdin=subprocess.PIPE,start_new_session=True)")
subprocess.run([sys.executable, "-c", server, sys.argv[1]], check=True)
while True:  # reap the adopted guardian when it is done
    pid, _ = os.wait()
    if pid != stranger.pid:
        break
print("guardian done", flush=True)
sys.stdin.read()
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="subreapers are a Linux feature")
def test_a_guardian_whose_server_died_first_spares_its_adopters_children():
    """The guardian learns the server's pid from the server, not from getppid(): a server
    that died before its guardian looked would otherwise make whoever adopted the guardian
    (init, a subreaper) "the server", and every child of it "ours"."""
    adopter = subprocess.Popen(py_cmd(ADOPTER) + [GUARDIAN], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        stranger = int(adopter.stdout.readline())
        assert adopter.stdout.readline() == "guardian done\n"
        assert alive(stranger)
    finally:
        adopter.kill()
        adopter.wait()
        try:
            os.kill(stranger, signal.SIGKILL)
        except (ProcessLookupError, UnboundLocalError):
            pass


def test_guardian_ends_the_groups_of_marked_processes():
    """A process of this run, and its group's members even without the marker, are ended;
    the same program with another run's marker is not."""
    run_id = uuid.uuid4().hex
    # The marked leader starts a child with an empty environment, in its own group.
    leader = ("import subprocess,sys,time;subprocess.Popen(['sleep','600'],env={});"
              "print('up',flush=True);time.sleep(600)")
    ours = subprocess.Popen(py_cmd(leader), start_new_session=True, stdout=subprocess.PIPE,
                            env={**os.environ, "FLOWLAYER_RUN": run_id})
    other = subprocess.Popen(["sleep", "600"], start_new_session=True,
                             env={**os.environ, "FLOWLAYER_RUN": uuid.uuid4().hex})
    try:
        assert ours.stdout.readline() == b"up\n"
        members = [p for p in group_members(ours.pid)]
        assert len(members) == 2
        run_guardian(run_id, [])  # nothing listed: the marker alone says what is ours
        assert ours.wait(10) == -signal.SIGTERM
        wait_until(lambda: not any(alive(pid) for pid in members), message="the whole group ended")
        assert alive(other.pid)
    finally:
        for proc in (ours, other):
            proc.kill()
            proc.wait()


def group_members(pgid):
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(") ", 1)[-1].split()[2]) == pgid:
                        members.append(int(entry))
            except OSError:
                pass
    return members


def pids_with_argument(marker):
    """Live processes with `marker` as an argument."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if marker.encode() in f.read().split(b"\0") and alive(int(entry)):
                        found.append(int(entry))
            except OSError:
                pass
    return found


# The service double-forks a grandchild into a new session (outside its group) that ignores
# SIGTERM; with `wipe` the grandchild also starts with an empty environment.
ESCAPE = """
import os, signal, sys, time
marker, wipe = sys.argv[1], sys.argv[2] == "1"
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        code = "import signal,time;signal.signal(signal.SIGTERM,signal.SIG_IGN);time.sleep(600)"
        os.execve(sys.executable, [sys.executable, "-c", code, "hidden-" + marker],
                  {} if wipe else os.environ)
    os._exit(0)
os.wait()
print("escaped", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("sig, wipe", [(signal.SIGTERM, False), (signal.SIGTERM, True),
                                       (signal.SIGKILL, False)])
def test_a_grandchild_that_left_its_group_does_not_survive(tmp_path, sig, wipe):
    marker = f"FLOWLAYER_TEST_{uuid.uuid4().hex}"
    path = write_config(tmp_path, {"services": {"app": {
        "cmd": py_cmd(ESCAPE) + [marker, "1" if wipe else "0"]}}})
    server = ServerProcess("-c", path)
    try:
        server.wait_line("app | escaped")
        [hidden] = wait_until(lambda: pids_with_argument("hidden-" + marker),
                              message="the escaped grandchild")
        code = server.stop(sig)
        assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 0), server.lines[-5:]
        wait_until(lambda: not alive(hidden), timeout=20, message="the escaped grandchild ended")
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
        for pid in pids_with_argument("hidden-" + marker):
            os.kill(pid, signal.SIGKILL)


# ---- in a fresh PID namespace (root): a container's PID 1 (issue 14: 6, 7) -------------------

def namespace_prefix(pid1_code=None):
    """argv running what follows in a new PID namespace, as PID 1 or under `pid1_code`."""
    if os.geteuid() != 0 or subprocess.run(["unshare", "-pf", "--mount-proc", "true"]).returncode:
        pytest.skip("needs root and unshare for a private PID namespace")
    return ["unshare", "-pf", "--mount-proc"] + (py_cmd(pid1_code) if pid1_code else [])


def server_pid(marker):
    """Host pid of the flowlayer.py process carrying `marker` in its environment."""
    for pid in pids_with_marker(marker):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if len(argv) > 1 and argv[1].endswith(b"flowlayer.py"):
            return pid
    return None


def zombie_children(parent):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(") ", 1)[-1].split()
            except OSError:
                continue
            if fields[0] == "Z" and int(fields[1]) == parent:
                found.append(int(entry))
    return found


# PID 1 of the namespace runs the server and never reaps an orphan (Popen waits on its own
# child only), as a careless container init would; it stays so that the namespace does.
CARELESS_INIT = """
import subprocess, sys, time
print("server exited", subprocess.call(sys.argv[1:]), flush=True)
time.sleep(600)
"""


def test_guardian_leaves_at_once_after_a_forced_exit(tmp_path):
    """Exit 130 SIGKILLs every group; the killed services stay zombies under an init that does
    not reap: the guardian must not wait its 5 s grace on them."""
    marker = f"FLOWLAYER_TEST_{uuid.uuid4().hex}"
    stubborn = ("import signal,time;signal.signal(signal.SIGTERM,signal.SIG_IGN);"
                "print('up',flush=True);time.sleep(600)")
    path = write_config(tmp_path, {"services": {
        f"s{i}": {"cmd": py_cmd(stubborn)} for i in range(3)}})
    wrapper = ServerProcess("-c", path, env={**os.environ, "MARK": marker},
                            prefix=namespace_prefix(CARELESS_INIT))
    try:
        for i in range(3):
            wrapper.wait_line(f"s{i} | up")
        server = server_pid(marker)
        os.kill(server, signal.SIGINT)
        wrapper.wait_line("shutdown: SIGINT")
        time.sleep(0.3)  # past the one-keypress window
        os.kill(server, signal.SIGINT)
        wrapper.wait_line("server exited 130")
        # Left with the marker: unshare, the careless init, and the guardian until it exits.
        wait_until(lambda: len(pids_with_marker(marker)) == 2, timeout=2.5,
                   message="the guardian gone well before its 5 s grace")
    finally:
        wrapper.proc.kill()
        wrapper.proc.wait()


ORPHANS = """
import os, time
for _ in range(50):
    child = os.fork()
    if child == 0:
        if os.fork() == 0:
            time.sleep(0.2)
            os._exit(0)
        os._exit(0)
    os.waitpid(child, 0)
print("orphaned", flush=True)
time.sleep(600)
"""


def test_as_pid_1_the_server_reaps_the_orphans_it_adopts(tmp_path):
    marker = f"FLOWLAYER_TEST_{uuid.uuid4().hex}"
    path = write_config(tmp_path, {"services": {"app": {"cmd": py_cmd(ORPHANS)}}})
    server = ServerProcess("-c", path, env={**os.environ, "MARK": marker},
                           prefix=namespace_prefix())
    try:
        server.wait_line("app | orphaned")
        pid1 = server_pid(marker)
        wait_until(lambda: len(pids_with_marker(marker)) == 4, message="only unshare, server, guardian, app")
        wait_until(lambda: zombie_children(pid1) == [], message="no zombies left")
        os.kill(pid1, signal.SIGTERM)
        assert server.stop(signal.SIGCONT) == 0
    finally:
        if server.proc.poll() is None:
            server.proc.kill()


# PID 1 of a fresh namespace: boot the server, then give every free pid below the last one
# handed out (the ids of services that are gone) to an unrelated `setsid sleep`, then stop
# the server cleanly and count the sleeps still alive.
PID_REUSE = """
import os, signal, subprocess, sys, time
server = subprocess.Popen([sys.executable, sys.argv[1], "-c", sys.argv[2]], stdout=subprocess.PIPE)
for line in server.stdout:
    if b"startup" in line:
        break
time.sleep(1.0)  # the oneshots' children (0.3 s) are gone
while os.waitpid(-1, os.WNOHANG)[0]:  # as their init, reap them: their group ids are free
    pass
strangers = []
with open("/proc/sys/kernel/ns_last_pid", "r+") as last:
    for pid in range(2, int(last.read()) + 1):
        if not os.path.exists(f"/proc/{pid}"):
            last.seek(0)
            last.write(str(pid - 1))
            last.flush()
            strangers.append(subprocess.Popen(["sleep", "600"], start_new_session=True))
server.send_signal(signal.SIGTERM)
server.stdout.read()
code = server.wait()
print("result", code, len(strangers), sum(p.poll() is None for p in strangers), flush=True)
"""


def test_a_clean_shutdown_never_kills_a_process_that_took_a_freed_group_id(tmp_path):
    """Issue 14, 1: oneshots whose child outlives them by 0.3 s; once all are gone their ids
    are taken by unrelated processes (forced with ns_last_pid); the shutdown spares them."""
    services = {f"job{i}": {"kind": "oneshot", "cmd": ["sh", "-c", "sleep 0.3 >/dev/null 2>&1 &"]} for i in range(10)}
    services["app"] = {"cmd": ["sleep", "600"]}
    path = write_config(tmp_path, {"services": services})
    out = subprocess.run(namespace_prefix(PID_REUSE) + [os.path.join(ROOT, "flowlayer.py"), path],
                         capture_output=True, text=True, timeout=60)
    _, code, strangers, alive = out.stdout.split()
    assert (code, int(alive)) == ("0", int(strangers)), out.stdout
    assert int(strangers) >= 10  # at least the ids of the oneshots were reused


def test_a_service_that_daemonizes_leaves_nothing_behind(tmp_path):
    """The classic daemon: fork a child that closes its output, exit 0 at once. The service
    is `stopped` before any stop, so the runtime signals nothing; the child must still end."""
    marker = f"FLOWLAYER_TEST_{uuid.uuid4().hex}"
    path = write_config(tmp_path, {"services": {
        "app": {"cmd": ["sh", "-c", "sleep 600 >/dev/null 2>&1 <&- & exit 0"], "env": {"MARK": marker}},
        "keep": {"cmd": ["sleep", "600"]}}})
    server = ServerProcess("-c", path)
    try:
        server.wait_line("| exited (code 0)")
        wait_until(lambda: len(pids_with_marker(marker)) == 1, message="the daemonized child")
        assert server.stop() == 0
        wait_until(lambda: pids_with_marker(marker) == [], message="the daemon ended")
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
