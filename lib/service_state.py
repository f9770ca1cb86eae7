"""One service's state and its start attempts (SPEC 3.2-3.4) as named transitions.

Every method runs under the runtime's lock. Each transition asserts what must hold before
it and is the only writer of the fields it changes, so the legal combinations are the ones
written here. A start attempt is a `Run`: an event about a run that is no longer the
service's current one (`run is not svc.run`), or that a stop has abandoned (`run.cancel`
set), changes nothing.
"""
import signal
import threading

from .readiness import WakingEvent


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


def ready_target(ready):
    """What the `ready <type>: ...` line names: the url, the port, the command, the pattern."""
    return {"http": ready.url, "tcp": ready.port, "exec": " ".join(ready.cmd or ()),
            "log": f"/{ready.pattern}/"}[ready.type]


class Run:
    """One start attempt: its process, its cancel event, its exit code, its outcome.

    `outcome` is None while the start is unresolved, then True (up, or done) or False
    (failed, or abandoned by a stop). `cancel` is set once the run's fate is no longer
    the start's to decide (a stop took over, or the process exited): it ends the probe.
    """

    def __init__(self):
        self.process = None        # set once spawned
        self.spawning = False      # the process is being started, outside the lock
        self.exit_code = None
        self.outcome = None
        self.cancel = WakingEvent()        # wakes the readiness wait at once
        self.watched = threading.Event()   # the guardian was told of its group

    @property
    def exited(self):
        return self.exit_code is not None


class ServiceState:
    """Status, current run and claims of one service.

    `announce(state)` broadcasts `state.status` after every change; `log(state, message)`
    writes a lifecycle line of the service (both called under the runtime lock).
    """

    def __init__(self, cfg, env, announce, log):
        self.cfg = cfg
        self.env = env
        self._announce = announce
        self._log = log
        self.status = "unknown"
        self.run = None
        self.exit_ok = False          # a oneshot's last run exited 0
        self.stop_cmd_due = False     # a oneshot's stopCmd has not run since it started
        self.start_claims = 0         # start/restart commands accepted and not finished
        self.stop_claimed = False     # a stop_service accepted and not finished
        self.reason = None            # last failed_start/blocked line of the current run
        self.since = None             # timestamp of the last status change

    # ---- what holds now -----------------------------------------------------------

    @property
    def name(self):
        return self.cfg.name

    @property
    def starting(self):
        """A start attempt is in flight, not yet resolved."""
        return self.run is not None and self.run.outcome is None

    @property
    def alive(self):
        """A start is in flight or the current run's process has not exited."""
        run = self.run
        return self.starting or (run is not None and run.process is not None
                                 and not run.exited)

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
    def pid(self):
        """The pid of the current run's process while it has not exited, else None."""
        run = self.run
        if run is None or run.process is None or run.exited:
            return None
        return run.process.pid

    @property
    def exit_code(self):
        """The exit code of the current run (negative: killed by that signal), or None."""
        return None if self.run is None else self.run.exit_code

    @property
    def start_busy(self):
        """start_service/restart_service must be refused (SPEC 5.3 busy rules)."""
        return self.stop_busy or self.starting or self.start_claims > 0

    @property
    def stop_busy(self):
        return self.status == "stopping" or self.stop_claimed

    @property
    def needs_stop(self):
        """A stop has work: a process to end, or a stopCmd due."""
        return self.alive or (self.cfg.stop_cmd is not None and self.stop_cmd_due)

    # ---- claims -------------------------------------------------------------------

    def claim_start(self):
        assert not self.start_busy
        self.start_claims += 1

    def release_start(self):
        assert self.start_claims > 0
        self.start_claims -= 1

    def claim_stop(self):
        assert not self.stop_busy
        self.stop_claimed = True

    def release_stop(self):
        assert self.stop_claimed
        self.stop_claimed = False

    # ---- a start ------------------------------------------------------------------

    def begin_start(self):
        """`starting`, with a new run; returns it."""
        assert not self.alive and self.status != "stopping"
        self.run = Run()
        self.reason = None
        self.exit_ok = False
        self.stop_cmd_due = self.cfg.kind == "oneshot" and self.cfg.stop_cmd is not None
        self._to("starting")
        return self.run

    def begin_spawn(self, run):
        """The process of `run` is about to be started (outside the lock)."""
        assert run is self.run and not run.spawning and run.process is None
        assert not run.cancel.is_set()
        run.spawning = True

    def failed_start(self, run, reason):
        """The start failed before a process ran (port in use, spawn error): `failed`,
        unless a stop abandoned the run meanwhile."""
        run.spawning = False
        if run.cancel.is_set():        # abandoned: perhaps no longer the current run
            return
        assert run is self.run and run.outcome is None
        self._log(self, f"failed_start: {reason}")
        run.outcome = False
        self._to("failed")

    def spawned(self, run, process):
        """The process of `run` runs: `running`; an exit already reported resolves now.
        Returns whether the start now waits on a readiness probe."""
        assert run is self.run and run.spawning
        run.spawning = False
        run.process = process
        if run.cancel.is_set():        # a stop owns the service now
            return False
        self._to("running")
        if self.cfg.kind == "daemon" and self.cfg.ready is None:
            run.outcome = True
        if run.exited:
            self._resolve_exit(run)
        return run.outcome is None and self.cfg.kind == "daemon"

    def exited(self, run, code):
        """The process of `run` exited with `code`. Resolved at once when the run's spawn
        is recorded, else by `spawned`; an older run's exit changes nothing."""
        assert run.exit_code is None
        run.exit_code = code
        if run is not self.run:
            return
        self._log(self, describe_exit(code))
        if run.process is not None:
            self._resolve_exit(run)

    def probe_passed(self, run):
        """The readiness probe of `run` succeeded: `ready`. Ignored for a run that is
        abandoned or no longer current (a slow probe may answer after a stop)."""
        if run is not self.run or run.cancel.is_set():
            return
        assert self.status == "running" and run.outcome is None
        run.outcome = True
        self._to("ready")
        self._log(self, f"ready {self.cfg.ready.type}: {ready_target(self.cfg.ready)}")

    def give_up(self, run):
        """ready.timeout passed: the start abandons the run, whose process is then stopped
        (its exit changes nothing). False when the run is no longer the start's to decide."""
        if run is not self.run or run.cancel.is_set():
            return False
        run.cancel.set()
        return True

    def not_ready(self, run, reason):
        """The process of a run given up on is gone: `failed`, unless a stop took over."""
        if run is not self.run or run.outcome is not None:
            return
        self._log(self, f"failed_start: {reason}")
        run.outcome = False
        self._to("failed")

    def _resolve_exit(self, run):
        """Turn the recorded exit of the current run into a state, unless a stop owns it."""
        if run.cancel.is_set():
            return
        code = run.exit_code
        if self.cfg.kind == "oneshot":
            self.exit_ok = code == 0
            run.outcome = code == 0
        elif run.outcome is None:
            self._log(self, f"failed_start: process exited before ready ({exit_reason(code)})")
            run.outcome = False
            self._to("failed")
            run.cancel.set()
            return
        run.cancel.set()
        self._to("stopped" if code == 0 else "failed")

    # ---- a stop -------------------------------------------------------------------

    def begin_stop(self):
        """`stopping`: the current run is abandoned (an unresolved start fails, its probe's
        outcome is ignored). Returns the run, whose process the stop ends."""
        assert self.status != "stopping" and self.needs_stop
        run = self.run
        self.stop_cmd_due = False
        if run is not None:
            run.cancel.set()
            if run.outcome is None:
                run.outcome = False
        self._to("stopping")
        self._log(self, "stopping")
        return run

    def stopped(self):
        assert self.status == "stopping"
        self._to("stopped")

    def noted(self, message):
        """A lifecycle line of this service was written: a failure line is the reason its
        current run (or its wave) did not come up."""
        if message.startswith(("failed_start:", "blocked:")):
            self.reason = message

    # ---- a reload -----------------------------------------------------------------

    def reconfigure(self, cfg, env):
        """A reload changed the service's config; it applies from the next start."""
        assert cfg.name == self.name and not self.alive and self.status != "stopping"
        self.cfg = cfg
        self.env = env

    def _to(self, status):
        self.status = status
        self._announce(self)
