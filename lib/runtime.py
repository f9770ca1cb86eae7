"""The supervisor: service states, dependency waves, start/stop/restart, shutdown.

One lock guards every service's state; a Condition on it wakes whoever waits for a
change. Slow work (spawning, probing, signalling and waiting) happens outside the lock.
Status changes are announced to subscribers under the lock, so every subscriber sees
them in one global order.
"""
import functools
import os
import signal
import threading
import time
from collections import namedtuple

from . import probes
from .logstore import format_timestamp
from .process import Process, SpawnError

STOP_CMD_TIMEOUT = 10.0
STOP_GRACE = 5.0
PORT_RELEASE_TIMEOUT = 2.0

StatusEvent = namedtuple("StatusEvent", "service status timestamp")
Outcome = namedtuple("Outcome", "ok failed_services message")
OK = Outcome(True, [], "")

SERVICE_COMMANDS = ("start_service", "stop_service", "restart_service")
ALL_COMMANDS = ("start_all", "stop_all")


class Rejected(Exception):
    """A command refused before it starts: its ack carries `code` and `message`."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def exit_reason(code):
    """`exit code 3` or `signal SIGTERM` for a Popen return code."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def describe_exit(code):
    """The lifecycle line of an exit: `exited (code 3)`, `exited (signal SIGTERM)`."""
    return f"exited ({exit_reason(code).replace('exit code', 'code')})"


class _Operation:
    """A boot, start_all or start_service run; a stop_all or shutdown cancels it."""

    def __init__(self):
        self.cancelled = False


class _Service:
    """Mutable state of one service; only touched under the runtime lock."""

    def __init__(self, cfg, env):
        self.cfg = cfg
        self.env = env
        self.status = "unknown"
        self.process = None
        self.exit_code = None
        self.exit_ok = False          # a oneshot's last run exited 0
        self.stop_cmd_due = False     # a oneshot's stopCmd has not run since it started
        self.starting = False         # a start attempt is in flight, not yet resolved
        self.spawning = False         # between the decision to spawn and the spawn's end
        self.claims = 0               # commands accepted for it and not finished
        self.stop_claimed = False
        self.cancel = threading.Event()

    @property
    def satisfied(self):
        """Whether dependents may start: ready, running without probe, or done."""
        if self.starting:
            return False
        if self.cfg.kind == "oneshot":
            return self.status == "stopped" and self.exit_ok
        if self.status == "ready":
            return True
        return self.status == "running" and self.cfg.ready is None

    @property
    def alive(self):
        return self.starting or (self.process is not None and self.exit_code is None)


def service_env(cfg):
    """What a service adds to the server's environment: its `env`, and
    PYTHONUNBUFFERED=1 unless set, so Python services' lines arrive as printed."""
    env = dict(cfg.env)
    if "PYTHONUNBUFFERED" not in os.environ:
        env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def group_exists(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class _NoGuardian:
    """Stands in for lib.guardian.Guardian where no orphan guard runs (tests)."""

    def watch(self, pgid):
        pass

    def forget(self, pgid):
        pass


class Runtime:
    """Runs the services of one config and reports every change of state."""

    def __init__(self, config, store, guardian=None):
        self.config = config
        self.store = store
        self._guardian = guardian or _NoGuardian()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._services = {name: _Service(cfg, service_env(cfg))
                          for name, cfg in config.services.items()}
        self._subscribers = {}
        self._next_token = 0
        self._last_time = 0.0
        self._all_op = None           # the running boot or start_all
        self._stop_all_running = False
        self._shutting_down = False
        self._helpers = set()         # stopCmd processes, for a forced kill

    # ---- observation -------------------------------------------------------------

    @property
    def service_names(self):
        return list(self._services)

    def snapshot(self):
        with self._lock:
            return self._snapshot_locked()

    def _snapshot_locked(self):
        return [{"name": name, "status": svc.status}
                for name, svc in sorted(self._services.items())]

    def status(self, name):
        return self._services[name].status

    def subscribe(self, callback):
        """Register `callback(StatusEvent)`; return (token, snapshot) taken atomically."""
        with self._lock:
            self._next_token += 1
            self._subscribers[self._next_token] = callback
            return self._next_token, self._snapshot_locked()

    def unsubscribe(self, token):
        with self._lock:
            self._subscribers.pop(token, None)

    def pids(self):
        """Process group ids of every live service and stopCmd process."""
        with self._lock:
            procs = [svc.process for svc in self._services.values()] + list(self._helpers)
        return [p.pid for p in procs if p is not None and p.pid is not None and p.alive]

    # ---- commands ----------------------------------------------------------------

    def prepare(self, command, service=None):
        """Check and claim a command atomically; return the blocking action to run.

        Raises Rejected for an unknown service or a busy one (SPEC 5.3 busy rules).
        """
        with self._lock:
            if command in SERVICE_COMMANDS:
                svc = self._services.get(service) if isinstance(service, str) else None
                if svc is None:
                    raise Rejected("unknown_service", f'service "{service}" is not defined')
                busy = svc.status == "stopping" or svc.stop_claimed
                if command != "stop_service":
                    busy = busy or svc.starting or svc.claims > 0
                if busy or self._shutting_down:
                    raise Rejected("service_busy", f'service "{service}" is busy')
                if command == "stop_service":
                    svc.stop_claimed = True
                    return lambda: self._stop_service(svc)
                svc.claims += 1
                return functools.partial(self._start_service, svc, _Operation(),
                                         restart=command == "restart_service")
            if command == "start_all":
                if self._all_op is not None or self._stop_all_running or self._shutting_down:
                    raise Rejected("service_busy", "another start_all or stop_all is running")
                op = self._all_op = _Operation()
                return functools.partial(self._run_all, op)
            if command == "stop_all":
                if self._stop_all_running or self._shutting_down:
                    raise Rejected("service_busy", "stop_all is already running")
                self._stop_all_running = True
                if self._all_op is not None:
                    self._all_op.cancelled = True
                return self._stop_all
            raise Rejected("unknown_command", f'unknown command "{command}"')

    def run(self, command, service=None):
        """prepare() and run at once: the plain-call form used by the CLI and tests."""
        return self.prepare(command, service)()

    def boot(self):
        """start_all as the boot, with the startup summary line of SPEC 1.3."""
        started = time.monotonic()
        try:
            outcome, tally, op = self.prepare("start_all")(with_tally=True)
            cancelled = op.cancelled
        except Rejected:          # a shutdown began before the boot did
            outcome, tally, cancelled = OK, {}, True
        counts = {"running": 0, "done": 0, "failed_start": 0, "blocked": 0}
        for name, result in tally.items():
            if result == "blocked":
                counts["blocked"] += 1
            elif result == "failed":
                counts["failed_start"] += 1
            elif result == "ok":
                status = self._services[name].status
                key = {"running": "running", "ready": "running", "stopped": "done"}.get(status)
                counts[key or "failed_start"] += 1
        if cancelled:
            word = "startup cancelled"
        elif counts["failed_start"] or counts["blocked"]:
            word = "startup incomplete"
        else:
            word = "startup ok"
        elapsed = time.monotonic() - started
        self.store.append_server(
            f"boot: {word}: {counts['running']} running, {counts['done']} done, "
            f"{counts['failed_start']} failed_start, {counts['blocked']} blocked ({elapsed:.2f}s)")
        return outcome

    def shutdown(self):
        """Stop everything in reverse waves and refuse any further start."""
        with self._lock:
            self._shutting_down = True
            self._stop_all_running = True
            if self._all_op is not None:
                self._all_op.cancelled = True
        self._stop_waves()
        leftovers = [svc for svc in self._services.values() if svc.alive]
        self._in_parallel(self._stop_one, leftovers)

    def kill_all(self):
        """Forced exit: SIGKILL every process group at once."""
        for pid in self.pids():
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    # ---- command bodies ----------------------------------------------------------

    def _start_service(self, svc, op, restart):
        """start_service or restart_service of a claimed service; releases the claim."""
        try:
            if restart:
                self._stop_one(svc)
            return self._outcome(self._start_waves(self._closure(svc.cfg.name), op, rerun=svc))
        finally:
            with self._lock:
                svc.claims -= 1

    def _stop_service(self, svc):
        """stop_service of a claimed service; releases the claim."""
        try:
            self._stop_one(svc)
            return OK
        finally:
            with self._lock:
                svc.stop_claimed = False

    def _run_all(self, op, with_tally=False):
        try:
            tally = self._start_waves(set(self._services), op)
        finally:
            with self._lock:
                self._all_op = None
        outcome = self._outcome(tally)
        return (outcome, tally, op) if with_tally else outcome

    def _stop_all(self):
        try:
            self._stop_waves()
        finally:
            with self._lock:
                self._stop_all_running = False
        return OK

    def _outcome(self, tally):
        failed = sorted(name for name, result in tally.items() if result in ("failed", "blocked"))
        if not failed:
            return OK
        return Outcome(False, failed, "failed to start: " + ", ".join(failed))

    # ---- waves -------------------------------------------------------------------

    def _closure(self, name):
        """`name` and everything it depends on, directly or not."""
        seen, todo = set(), [name]
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo.extend(self._services[current].cfg.depends_on)
        return seen

    def _start_waves(self, names, op, rerun=None):
        """Start `names` wave by wave; return {name: ok|failed|blocked|cancelled}.

        `rerun` is the target of a start_service: an exited oneshot runs again.
        """
        tally = {}
        for wave in self.config.waves:
            if op.cancelled:
                break
            launch = []
            for name in wave:
                if name not in names:
                    continue
                deps = self._services[name].cfg.depends_on
                bad = next((d for d in deps if tally.get(d) in ("failed", "blocked")), None)
                if bad is not None:
                    tally[name] = "blocked"
                    self._log(self._services[name], f"blocked: dependency {bad} failed")
                else:
                    launch.append(name)
            results = self._in_parallel(
                lambda n: self._start_one(self._services[n], op, self._services[n] is rerun), launch)
            tally.update(zip(launch, results))
        return {name: result for name, result in tally.items() if result != "cancelled"}

    def _stop_waves(self):
        for wave in reversed(self.config.waves):
            self._in_parallel(self._stop_one, [self._services[n] for n in wave])

    @staticmethod
    def _in_parallel(func, items):
        """Run func on every item in its own thread; return the results in order."""
        results = [None] * len(items)

        def run(i, item):
            results[i] = func(item)

        threads = [threading.Thread(target=run, args=(i, item), daemon=True)
                   for i, item in enumerate(items)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results

    # ---- one service -------------------------------------------------------------

    def _start_one(self, svc, op, rerun=False):
        """Start one service unless satisfied; wait on a start already in flight."""
        with self._lock:
            while True:
                if op.cancelled or self._shutting_down:
                    return "cancelled"
                if svc.starting or svc.status == "stopping":
                    self._changed.wait()
                    continue
                if svc.satisfied and not (rerun and svc.cfg.kind == "oneshot"):
                    return "ok"
                if svc.alive:          # e.g. a daemon that is up without being satisfied
                    return "failed"
                break
            svc.starting = True
            svc.cancel = threading.Event()
            svc.process = None
            svc.exit_code = None
            svc.exit_ok = False
            svc.stop_cmd_due = svc.cfg.kind == "oneshot" and svc.cfg.stop_cmd is not None
            self._set_status(svc, "starting")
        try:
            return "ok" if self._launch(svc) else "failed"
        finally:
            with self._lock:
                svc.starting = False
                self._changed.notify_all()

    def _launch(self, svc):
        cfg = svc.cfg
        if cfg.port > 0 and probes.port_in_use(cfg.port):
            return self._fail_start(svc, f"port {cfg.port} is already in use")
        proc = Process(list(cfg.cmd), svc.env, cfg.cwd,
                       on_lines=self._sink(svc),
                       on_exit=lambda code: self._on_exit(svc, proc, code))
        with self._lock:
            if svc.cancel.is_set():
                return False
            svc.spawning = True
            svc.process = proc
        try:
            proc.start()
        except SpawnError as exc:
            with self._lock:
                svc.spawning = False
                svc.process = None
                self._changed.notify_all()
            return self._fail_start(svc, str(exc))
        self._guardian.watch(proc.pid)
        with self._lock:
            svc.spawning = False
            self._changed.notify_all()
            if svc.cancel.is_set():
                return False
            self._set_status(svc, "running")
            if svc.exit_code is not None:
                self._resolve_exit(svc)
            if cfg.kind == "oneshot":
                self._changed.wait_for(lambda: svc.exit_code is not None or svc.cancel.is_set())
                return svc.exit_ok
            if cfg.ready is None:
                return True
        ready = probes.wait_until_ready(self._check(cfg.ready), svc.cancel)
        with self._lock:
            if not ready or svc.cancel.is_set() or svc.status != "running":
                return False
            self._set_status(svc, "ready")
            where = cfg.ready.url if cfg.ready.type == "http" else cfg.ready.port
            self._log(svc, f"ready {cfg.ready.type}: {where}")
            return True

    @staticmethod
    def _check(ready):
        if ready.type == "http":
            return lambda: probes.check_http(ready.url)
        return lambda: probes.check_tcp(ready.port)

    def _fail_start(self, svc, reason):
        with self._lock:
            if not svc.cancel.is_set():
                self._log(svc, f"failed_start: {reason}")
                self._set_status(svc, "failed")
        return False

    def _on_exit(self, svc, proc, code):
        if not group_exists(proc.pid):
            self._guardian.forget(proc.pid)
        with self._lock:
            if svc.process is not proc:
                return
            svc.exit_code = code
            self._log(svc, describe_exit(code))
            if not svc.spawning:
                self._resolve_exit(svc)
            self._changed.notify_all()

    def _resolve_exit(self, svc):
        """Turn a recorded exit into a state, unless a stop owns the service now."""
        code = svc.exit_code
        if svc.status in ("stopping", "stopped", "failed"):
            return
        if svc.cfg.kind == "oneshot":
            svc.exit_ok = code == 0
            self._set_status(svc, "stopped" if code == 0 else "failed")
        elif svc.starting and svc.cfg.ready is not None and svc.status != "ready":
            self._log(svc, f"failed_start: process exited before ready ({exit_reason(code)})")
            self._set_status(svc, "failed")
        else:
            self._set_status(svc, "stopped" if code == 0 else "failed")
        svc.cancel.set()

    def _stop_one(self, svc):
        """Stop one service per SPEC 3.4; a service that is not running emits nothing."""
        with self._lock:
            while svc.status == "stopping":
                self._changed.wait()
            run_stop_cmd = svc.cfg.stop_cmd is not None and (svc.alive or svc.stop_cmd_due)
            if not svc.alive and not run_stop_cmd:
                return
            svc.stop_cmd_due = False
            svc.cancel.set()
            self._set_status(svc, "stopping")
            self._log(svc, "stopping")
            self._changed.wait_for(lambda: not svc.spawning)
            proc = svc.process
        if run_stop_cmd:
            self._run_stop_cmd(svc)
        if proc is not None:
            proc.terminate(grace=STOP_GRACE)
            self._guardian.forget(proc.pid)
            with self._lock:
                self._changed.wait_for(lambda: svc.exit_code is not None)
        if svc.cfg.port > 0:
            probes.wait_port_free(svc.cfg.port, PORT_RELEASE_TIMEOUT)
        with self._lock:
            self._set_status(svc, "stopped")

    def _run_stop_cmd(self, svc):
        done = threading.Event()
        proc = Process(list(svc.cfg.stop_cmd), svc.env, svc.cfg.cwd,
                       on_lines=self._sink(svc), on_exit=lambda code: done.set())
        try:
            proc.start()
        except SpawnError as exc:
            self._log(svc, f"stopCmd failed: {exc}")
            return
        self._guardian.watch(proc.pid)
        with self._lock:
            self._helpers.add(proc)
        try:
            if not done.wait(STOP_CMD_TIMEOUT):
                self._log(svc, f"stopCmd still running after {STOP_CMD_TIMEOUT:g}s: killed")
            proc.terminate(grace=0)
            done.wait()
        finally:
            self._guardian.forget(proc.pid)
            with self._lock:
                self._helpers.discard(proc)

    # ---- events and logs ---------------------------------------------------------

    def _sink(self, svc):
        store, name = self.store, svc.cfg.name
        return lambda stream, lines: store.append(name, stream, lines, svc.status)

    def _log(self, svc, message):
        self.store.append(svc.cfg.name, "system", [message], svc.status)

    def _set_status(self, svc, status):
        """Record and broadcast a change; called with the lock held."""
        svc.status = status
        now = max(time.time(), self._last_time)
        self._last_time = now
        event = StatusEvent(svc.cfg.name, status, format_timestamp(now))
        for callback in list(self._subscribers.values()):
            callback(event)
        self._changed.notify_all()
