"""The supervisor: dependency waves, start/stop/restart, shutdown, status broadcast.

Each service's state is a `ServiceState` changed only by its named transitions; one lock
guards them all and a Condition on it wakes whoever waits for a change. Slow work
(spawning, probing, signalling and waiting) happens outside the lock, and no start or stop
ever waits on a probe attempt: probes run on their own threads and report back. Status
changes are announced to subscribers under the lock, so every subscriber sees them in one
global order. Lock order: runtime lock, then the store's lock, then subscriber queues.
"""
import contextlib
import os
import signal
import threading
import time
from collections import namedtuple

from . import probes, readiness, reload
from .dotenv import layer
from .groups import GroupList
from .entry import format_timestamp
from .port_holder import in_use_reason, port_holder
from .process import Process, SpawnError
from .service_state import ServiceState
from .summary import boot_summary

STOP_CMD_TIMEOUT = 10.0
PORT_RELEASE_TIMEOUT = 2.0

StatusEvent = namedtuple("StatusEvent", "service status timestamp")
Reconfigured = namedtuple("Reconfigured", "config services listed")
Reconfigured.__doc__ = ("A reload applied `config`; `services` is the snapshot after it, "
                        "`listed` whether the set of service names changed.")
Reloaded = namedtuple("Reloaded", "ok data message")
Reloaded.__doc__ = "A reload's end: the result data, or the config error as the CLI prints it."
Outcome = namedtuple("Outcome", "ok failed_services message")
OK = Outcome(True, [], "")
Startup = namedtuple("Startup", "state summary")
IDLE = Startup("idle", None)


class CommandRefused(Exception):
    """A command refused before it starts; the text says why."""


class UnknownService(CommandRefused):
    def __init__(self, service):
        super().__init__(f'service "{service}" is not defined')


class ServiceBusy(CommandRefused):
    """The busy rules of SPEC 5.3, or a shutdown in progress."""


class _Operation:
    """A boot, start_all or start_service run; a stop_all or shutdown cancels it."""

    def __init__(self):
        self.cancelled = False


def service_env(cfg):
    """What a service adds to the server's environment: its envFile variables, then its
    `env` (later wins, SPEC 6.1), and PYTHONUNBUFFERED=1 unless set, so Python services'
    lines arrive as printed."""
    env = layer({}, [cfg.file_env], cfg.env)
    if "PYTHONUNBUFFERED" not in os.environ:
        env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class Runtime:
    """Runs the services of one config and reports every change of state."""

    def __init__(self, config, store, guardian=None):
        self.config = config
        self.store = store
        self._groups = GroupList(guardian)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._services = {name: ServiceState(cfg, service_env(cfg), self._announce, self._log)
                          for name, cfg in config.services.items()}
        self._subscribers = {}
        self._broken = set()          # tokens of subscribers that raised (reported once)
        self._reports = []            # their reports, written once the lock is released
        self._next_token = 0
        self._last_time = 0.0
        self._all_op = None           # the running boot or start_all
        self._stop_all_running = False
        self._reload_op = None        # the running reload
        self._stop_all_ran = False    # a stop_all or shutdown was ever accepted
        self._last_start = None       # Startup of the last finished boot or start_all
        self._shutting_down = False
        self._helpers = set()         # stopCmd processes, for a forced kill
        self._readiness = readiness.ReadinessWatcher()

    @contextlib.contextmanager
    def _locked(self):
        """Hold the lock to change state: waiters are woken on the way out, and subscriber
        failures are reported after the lock is released."""
        with self._lock:
            yield
            self._changed.notify_all()
            reports, self._reports = self._reports, []
        for report in reports:
            self.store.append_server(f"warning: {report}")

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

    def describe(self):
        """The data of get_services (SPEC 6.4): every service's details, and the startup."""
        with self._lock:
            services = [_details(svc) for _, svc in sorted(self._services.items())]
            return {"services": services, "startup": self._startup_locked()._asdict()}

    def _startup_locked(self):
        """booting while a boot or start_all runs (cancelled once a stop cut it short),
        then how the last one ended; idle before any boot, start_all or stop_all."""
        op = self._all_op
        if op is not None:
            return Startup("cancelled" if op.cancelled else "booting", None)
        if self._last_start is not None:
            return self._last_start
        return Startup("done", None) if self._stop_all_ran else IDLE

    def subscribe(self, callback):
        """Register `callback(event)`, a StatusEvent or (after a reload) a Reconfigured;
        return (token, snapshot) taken atomically."""
        with self._lock:
            self._next_token += 1
            self._subscribers[self._next_token] = callback
            return self._next_token, self._snapshot_locked()

    def unsubscribe(self, token):
        with self._lock:
            self._subscribers.pop(token, None)

    def process_groups(self):
        """Process group ids of every live service and stopCmd process."""
        with self._lock:
            procs = [svc.run.process for svc in self._services.values() if svc.run]
            procs += self._helpers
        return [p.pid for p in procs if p is not None and p.alive]

    # ---- commands: each checks and claims atomically, then returns its action ------

    def claim_start(self, name):
        """start_service: the blocking action, or ServiceBusy / UnknownService."""
        return self._claim_start(name, restart=False)

    def claim_restart(self, name):
        return self._claim_start(name, restart=True)

    def claim_stop(self, name):
        with self._locked():
            svc = self._service(name)
            if svc.stop_busy or self._shutting_down or self._reload_op:
                raise ServiceBusy(f'service "{name}" is busy')
            svc.claim_stop()
        return lambda: self._stop_service(svc)

    def claim_start_all(self):
        op = self._claim_all()
        return lambda: self._outcome(self._run_all(op))

    def claim_stop_all(self):
        with self._locked():
            if self._reload_op is not None:
                raise ServiceBusy("a reload is running")
            if self._stop_all_running or self._shutting_down:
                raise ServiceBusy("stop_all is already running")
            self._stop_all_running = self._stop_all_ran = True
            if self._all_op is not None:
                self._all_op.cancelled = True
        return self._stop_all

    def claim_reload(self):
        """reload_config (SPEC 6.4): busy while a reload, boot, start_all, stop_all or any
        service command runs; while it runs, those are refused in turn. The action reads
        the config file again and returns a `Reloaded`."""
        with self._locked():
            if self._reload_op is not None:
                raise ServiceBusy("a reload is already running")
            if self._all_op is not None or self._stop_all_running or self._shutting_down:
                raise ServiceBusy("a boot, start_all or stop_all is running")
            busy = next((name for name, svc in self._services.items()
                         if svc.start_claims or svc.stop_claimed), None)
            if busy is not None:
                raise ServiceBusy(f'service "{busy}" is busy')
            op = self._reload_op = _Operation()
        return lambda: self._reload(op)

    def _service(self, name):
        svc = self._services.get(name) if isinstance(name, str) else None
        if svc is None:
            raise UnknownService(name)
        return svc

    def _claim_all(self):
        """Claim a start_all (the boot is one); returns its operation."""
        with self._locked():
            if self._reload_op is not None:
                raise ServiceBusy("a reload is running")
            if self._all_op is not None or self._stop_all_running or self._shutting_down:
                raise ServiceBusy("another start_all or stop_all is running")
            op = self._all_op = _Operation()
        return op

    def _claim_start(self, name, restart):
        with self._locked():
            svc = self._service(name)
            if svc.start_busy or self._shutting_down or self._reload_op:
                raise ServiceBusy(f'service "{name}" is busy')
            svc.claim_start()
        return lambda: self._start_service(svc, _Operation(), restart)

    def boot(self):
        """start_all as the boot, with the startup summary line of SPEC 1.3."""
        self._report_ports_in_use()
        try:
            op = self._claim_all()
        except ServiceBusy:       # a shutdown began before the boot did
            results = {}
            with self._lock:
                self._last_start = self._summarise(results, True, time.monotonic())
        else:
            results = self._run_all(op)
        self.store.append_server(f"boot: {self._last_start.summary}")
        return self._outcome(results)

    def _report_ports_in_use(self):
        """SPEC 6.3: one boot line naming every declared port already in use, before wave
        0; each of those services then fails at its wave."""
        busy = []
        for name, svc in self._services.items():
            port = svc.cfg.port
            if port > 0 and probes.port_in_use(port):
                holder = port_holder(port)
                busy.append(f"{port} ({name}" + (f"; {holder})" if holder else ")"))
        if busy:
            self.store.append_server("boot: ports already in use: " + ", ".join(busy))

    def shutdown(self):
        """Stop everything in reverse waves and refuse any further start."""
        with self._locked():
            self._shutting_down = True
            self._stop_all_running = self._stop_all_ran = True
            for op in (self._all_op, self._reload_op):
                if op is not None:
                    op.cancelled = True
        self._stop_waves()
        with self._lock:
            leftovers = [svc for svc in self._services.values() if svc.needs_stop]
        self._in_parallel(self._stop_one, leftovers)
        self._readiness.close()

    def kill_all(self):
        """Forced exit: SIGKILL every process group at once."""
        for pgid in self.process_groups():
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    # ---- command bodies ----------------------------------------------------------

    def _start_service(self, svc, op, restart):
        """start_service or restart_service of a claimed service; releases the claim."""
        try:
            if restart:
                self._stop_one(svc)
            return self._outcome(self._start_waves(self._closure(svc.name), op,
                                                   rerun={svc.name}))
        finally:
            with self._locked():
                svc.release_start()

    def _stop_service(self, svc):
        """stop_service of a claimed service; releases the claim."""
        try:
            self._stop_one(svc)
            return OK
        finally:
            with self._locked():
                svc.release_stop()

    def _run_all(self, op):
        """The waves of a start_all; returns {name: ok|failed|blocked}. How it ended is
        kept (with its summary line) for get_services."""
        started, results = time.monotonic(), {}
        try:
            results = self._start_waves(set(self._services), op)
            return results
        finally:
            with self._locked():
                self._all_op = None
                self._last_start = self._summarise(results, op.cancelled, started)

    def _summarise(self, results, cancelled, started):
        """The Startup of a finished boot or start_all (lock held)."""
        statuses = {name: svc.status for name, svc in self._services.items()}
        summary = boot_summary(results, statuses, cancelled, time.monotonic() - started)
        return Startup("cancelled" if cancelled else "done", summary)

    def _stop_all(self):
        try:
            self._stop_waves()
        finally:
            with self._locked():
                self._stop_all_running = False
        return OK

    def _reload(self, op):
        """The claimed reload: read the file; refuse it as a whole, or apply its diff."""
        try:
            new, error = reload.read(self.config.path)
            if error is not None:
                self.store.append_server(f"reload: refused, nothing changed: {error}")
                return Reloaded(False, None, error)
            return Reloaded(True, self._apply(new, op), "")
        finally:
            with self._locked():
                self._reload_op = None

    def _apply(self, new, op):
        """Stop what goes or changes (reverse old waves), swap the config and services in
        one step, then start what came or changed (new waves). The running dependents of
        a changed service restart with it: they were started against its old run."""
        old, running = self.config, self._services   # only a reload replaces them
        diff = reload.compare(old, new, lambda name, cfg: running[name].env != service_env(cfg))
        new = reload.effective(old, new)
        with self._lock:
            restarted = {name for name in reload.dependents(new, diff.changed)
                         if name in diff.unchanged and (self._services[name].alive
                                                        or self._services[name].satisfied)}
        for line in reload.describe(diff, restarted):
            self.store.append_server(line)
        self._stop_waves(set(diff.removed) | set(diff.changed) | restarted)
        with self._locked():
            services = {name: self._services.get(name) for name in new.services}
            for name in diff.changed:
                services[name].reconfigure(new.services[name], service_env(new.services[name]))
            for name in diff.added:
                cfg = new.services[name]
                services[name] = ServiceState(cfg, service_env(cfg), self._announce, self._log)
            self._services, self.config = services, new
            self._broadcast(Reconfigured(new, self._snapshot_locked(),
                                         listed=bool(diff.added or diff.removed)))
        rerun = set(diff.changed) | restarted
        results = self._start_waves(self._closure(*diff.added, *rerun), op, rerun=rerun)
        failed = self._outcome(results).failed_services
        if failed:
            self.store.append_server(f"reload: failed to start: {', '.join(failed)}")
        return reload.result_data(diff)

    @staticmethod
    def _outcome(results):
        failed = sorted(name for name, result in results.items() if result in ("failed", "blocked"))
        if not failed:
            return OK
        return Outcome(False, failed, "failed to start: " + ", ".join(failed))

    # ---- waves -------------------------------------------------------------------

    def _closure(self, *names):
        """`names` and everything they depend on, directly or not."""
        seen, todo = set(), list(names)
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo.extend(self._services[current].cfg.depends_on)
        return seen

    def _start_waves(self, names, op, rerun=()):
        """Start `names` wave by wave; return {name: ok|failed|blocked}.

        `rerun` holds the targets of a start_service or a reload: an exited oneshot
        among them runs again.
        """
        results = {}
        for wave in self.config.waves:
            if op.cancelled:
                break
            launch = []
            for name in wave:
                if name not in names:
                    continue
                deps = self._services[name].cfg.depends_on
                bad = next((d for d in deps if results.get(d) in ("failed", "blocked")), None)
                if bad is not None:
                    results[name] = "blocked"
                    with self._lock:
                        self._log(self._services[name], f"blocked: dependency {bad} failed")
                else:
                    launch.append(name)
            outcomes = self._in_parallel(
                lambda n: self._start_one(self._services[n], op, n in rerun), launch)
            results.update(zip(launch, outcomes))
        return {name: result for name, result in results.items() if result != "cancelled"}

    def _stop_waves(self, names=None):
        """Stop `names` (default: every service) in reverse waves."""
        with self._lock:
            waves, services = self.config.waves, self._services
        for wave in reversed(waves):
            self._in_parallel(self._stop_one, [services[n] for n in wave
                                               if names is None or n in names])

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
        """Start one service unless satisfied; wait on a start already in flight.
        Returns ok, failed or cancelled once the start is resolved (a stop resolves it
        too: nothing here waits on a probe attempt)."""
        with self._locked():
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
            run = svc.begin_start()
        self._launch(svc, run)
        with self._locked():
            self._changed.wait_for(lambda: run.outcome is not None)
            return "ok" if run.outcome else "failed"

    def _launch(self, svc, run):
        """Spawn the run's process and, for a daemon with a probe, start probing."""
        cfg = svc.cfg
        if cfg.port > 0 and probes.port_in_use(cfg.port):
            with self._locked():
                svc.failed_start(run, in_use_reason(cfg.port, port_holder(cfg.port)))
            return
        matcher = None
        if cfg.ready is not None and cfg.ready.type == "log":
            matcher = readiness.LogMatcher(readiness.compile_pattern(cfg.ready.pattern), cfg.ready.stream)
        proc = Process(list(cfg.cmd), svc.env, cfg.cwd,
                       on_lines=self._sink(svc, matcher),
                       on_exit=lambda code: self._on_exit(svc, run, proc, code))
        with self._locked():
            if run.cancel.is_set():
                return
            svc.begin_spawn(run)
        try:
            proc.start()
        except SpawnError as exc:
            with self._locked():
                svc.failed_start(run, str(exc))
            return
        try:
            self._groups.watch(proc)    # before any forget of this run can be sent
        finally:
            run.watched.set()
        with self._locked():
            probe = svc.spawned(run, proc)
        if probe:
            threading.Thread(target=self._probe, args=(svc, run, matcher), name=f"probe-{svc.name}",
                             daemon=True).start()

    def _probe(self, svc, run, matcher):
        """Probe until ready, the run is cancelled or ready.timeout passes (SPEC 6.2), with a
        `waiting for ready` line every 5 s; a late answer for a run that was abandoned
        meanwhile is ignored by the state."""
        ready = svc.cfg.ready
        probe = {"http": lambda: readiness.http_probe(ready.url),
                 "tcp": lambda: readiness.tcp_probe(ready.port),
                 "exec": lambda: readiness.exec_probe(ready.cmd, svc.env, svc.cfg.cwd, run.cancel,
                                                      ready.interval),
                 "log": lambda: readiness.log_probe(matcher)}[ready.type]()

        def waiting(line):
            with self._lock:
                if not run.cancel.is_set():
                    self._log(svc, line)

        waited = self._readiness.wait(probe, run.cancel, ready.timeout, waiting)
        if waited.state == "ready":
            with self._locked():
                svc.probe_passed(run)
        elif waited.state == "timeout":
            with self._locked():
                if not svc.give_up(run):
                    return
            proc = run.process
            if self._groups.holds(proc) or not run.exited:  # else its group id may be reused
                self._end_process(svc, run, proc)
            with self._locked():
                svc.not_ready(run, readiness.not_ready_reason(ready.timeout, probe.target, waited.last))

    def _on_exit(self, svc, run, proc, code):
        run.watched.wait()
        self._groups.leader_exited(proc)
        with self._locked():
            svc.exited(run, code)

    def _stop_one(self, svc):
        """Stop one service per SPEC 3.4; a service that is not running emits nothing."""
        with self._locked():
            while svc.status == "stopping":
                self._changed.wait()
            if not svc.needs_stop:
                return
            run_stop_cmd = svc.cfg.stop_cmd is not None
            run = svc.begin_stop()
            self._changed.wait_for(lambda: run is None or not run.spawning)
            proc = run.process if run is not None else None
            exited = proc is not None and run.exited
        if exited and not self._groups.holds(proc):
            proc = None   # its leader exited and its group is gone: the id may be reused
        if run_stop_cmd:
            self._run_stop_cmd(svc)
        if proc is not None:
            self._end_process(svc, run, proc)
        if svc.cfg.port > 0:
            probes.wait_port_free(svc.cfg.port, PORT_RELEASE_TIMEOUT)
        with self._locked():
            svc.stopped()

    def _end_process(self, svc, run, proc):
        """The stopSignal to the run's group, SIGKILL after stopTimeout (SPEC 6.1); returns
        once its exit is recorded."""
        proc.terminate(grace=svc.cfg.stop_timeout, sig=signal.Signals[f"SIG{svc.cfg.stop_signal}"])
        with self._locked():
            self._changed.wait_for(lambda: run.exited)
        self._groups.forget(proc)

    def _run_stop_cmd(self, svc):
        done = threading.Event()
        proc = Process(list(svc.cfg.stop_cmd), svc.env, svc.cfg.cwd,
                       on_lines=self._sink(svc), on_exit=lambda code: done.set())
        try:
            proc.start()
        except SpawnError as exc:
            with self._lock:
                self._log(svc, f"stopCmd failed: {exc}")
            return
        self._groups.watch(proc)
        with self._lock:
            self._helpers.add(proc)
        try:
            if not done.wait(STOP_CMD_TIMEOUT):
                with self._lock:
                    self._log(svc, f"stopCmd still running after {STOP_CMD_TIMEOUT:g}s: killed")
            proc.terminate(grace=0)
            done.wait()
        finally:
            self._groups.forget(proc)
            with self._lock:
                self._helpers.discard(proc)

    # ---- events and logs ---------------------------------------------------------

    def _sink(self, svc, matcher=None):
        """Where a process's lines go: the store, then a log probe's matcher (this run's)."""
        store, name = self.store, svc.name
        if matcher is None:
            return lambda stream, lines: store.append(name, stream, lines, svc.status)

        def sink(stream, lines):
            store.append(name, stream, lines, svc.status)
            matcher.feed(stream, lines)
        return sink

    def _log(self, svc, message):
        """A lifecycle line of `svc`, with the lock held so that it is in order with the
        status changes around it (the store's lock comes after ours)."""
        self.store.append(svc.name, "system", [message], svc.status)
        svc.noted(message)

    def _announce(self, svc):
        """Broadcast `svc`'s new status; called by its transitions, with the lock held.
        A subscriber that raises is reported once and never stops the others."""
        now = max(time.time(), self._last_time)
        self._last_time = now
        event = StatusEvent(svc.name, svc.status, format_timestamp(now))
        svc.since = event.timestamp
        self._broadcast(event)

    def _broadcast(self, event):
        """Hand one event to every subscriber, with the lock held."""
        for token, callback in list(self._subscribers.items()):
            try:
                callback(event)
            except Exception as exc:
                if token not in self._broken:
                    self._broken.add(token)
                    self._reports.append(f"status subscriber {callback!r} failed: {exc!r}")


def _details(svc):
    """One service of get_services (lock held). The probe type is read defensively, so a
    readiness type added to the config shows as it is named there."""
    cfg = svc.cfg
    return {"name": svc.name, "status": svc.status, "kind": cfg.kind,
            "probe": getattr(cfg.ready, "type", None) or "none", "port": cfg.port,
            "dependsOn": list(cfg.depends_on), "satisfied": svc.satisfied, "pid": svc.pid,
            "exit_code": svc.exit_code, "reason": svc.reason, "since": svc.since,
            "cmd": list(cfg.cmd)}
