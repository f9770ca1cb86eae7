"""Protocol V1 client model: services, busy targets, the notice and the log feed.

No curses here: the terminal client draws from `Client.view()`, an immutable snapshot, and
scripts and tests can drive the client directly. The connection is a transport.Transport;
this model is its listener, so everything here runs under the transport's lock.
"""
from dataclasses import dataclass
from types import MappingProxyType

from .log_feed import ALL, LOGS_TIMEOUT, LogFeed, LogLines
from .transport import COMMAND_TIMEOUT, Reply, Transport, backoff_delay


@dataclass(frozen=True)
class Notice:
    """The last outcome worth telling the user (action results, errors)."""
    text: str
    error: bool = False


@dataclass(frozen=True)
class View:
    """Everything a UI shows, at one moment; `version` tells whether it is still current."""
    version: int
    state: str
    detail: str
    retry_at: float | None      # monotonic time of the next attempt, None while one runs
    connected_at: float | None  # epoch seconds
    server: MappingProxyType    # the hello payload
    services: MappingProxyType  # name -> status, sorted by name
    busy: MappingProxyType      # target -> command; target ALL is the all-services row
    scope: str | None           # a service name, or ALL
    logs: LogLines
    loading_older: bool
    notice: Notice | None
    details: MappingProxyType | None = None  # name -> get_services entry; None: not known
    details_supported: bool = False          # the server lists get_services in its hello


class Client:
    """A V1 session that reconnects forever and keeps one scope's logs continuous."""

    def __init__(self, url, token=None, *, command_timeout=COMMAND_TIMEOUT,
                 logs_timeout=LOGS_TIMEOUT, backoff=backoff_delay):
        self.url = url
        self.logs_timeout = logs_timeout
        self.transport = Transport(url, token, self, command_timeout=command_timeout,
                                   backoff=backoff)
        self._lock = self.transport.lock
        self.feed = LogFeed(self.transport, self.notify, logs_timeout)
        self._services = {}
        self._busy = {}
        self._notice = None
        self._details = None       # name -> the service's entry of the last get_services
        self._watching = False     # refresh the details on every status event
        self._details_asked = None  # None, "sent", or "again" (a change came meanwhile)

    # ---- lifecycle -------------------------------------------------------------------

    def start(self):
        self.transport.start()
        return self

    def close(self):
        """Stop reconnecting and drop the connection; safe to call twice."""
        self.transport.close()

    def wait_for(self, predicate, timeout):
        """Wait until `predicate()` (called under the lock) is true; return its value."""
        return self.transport.wait_for(predicate, timeout)

    @property
    def version(self):
        """Grows on every change: a UI takes a new view when it differs from the last."""
        return self.transport.version

    def view(self):
        with self._lock:
            transport, feed = self.transport, self.feed
            return View(version=transport.version, state=transport.state,
                        detail=transport.detail, retry_at=transport.retry_at,
                        connected_at=transport.connected_at,
                        server=MappingProxyType(dict(transport.server)),
                        services=MappingProxyType(dict(self._services)),
                        busy=MappingProxyType(dict(self._busy)), scope=feed.scope,
                        logs=feed.buffer.lines(), loading_older=feed.loading_older,
                        notice=self._notice,
                        details=(None if self._details is None
                                 else MappingProxyType(self._details)),
                        details_supported=self._supports("get_services"))

    # ---- commands --------------------------------------------------------------------

    def request(self, name, payload=None, timeout=None, on_done=None):
        """Send a command; the Pending ends with a Reply (also when not connected)."""
        if timeout is None and name == "get_logs":
            timeout = self.logs_timeout
        return self.transport.request(name, payload, timeout, on_done)

    def run_action(self, name, service=ALL):
        """Send a start/stop/restart command unless its target is busy; say how it ended.

        Returns False (with a notice) when nothing was sent.
        """
        label = f"{name} {service}" if service is not None else name
        with self._lock:
            if not self.transport.ready:
                self.notify(f"{label}: not connected", error=True)
                return False
            if service in self._busy:
                self.notify(f"{label}: busy with {self._busy[service]}", error=True)
                return False
            self._busy[service] = name

            def done(reply):
                self._busy.pop(service, None)
                self.notify(f"{label}: {reply.describe()}", error=not reply.ok)

            self.transport.enqueue(name, {"service": service} if service is not None else None,
                                   on_done=done)
            self.transport.bump()
        self.transport.flush()
        return True

    def watch_details(self, watching):
        """While `watching`, keep the `get_services` details current: fetched now, then
        again after every status event (one request in flight at a time)."""
        with self._lock:
            self._watching = watching
            if watching:
                self._ask_details()
        self.transport.flush()

    def _supports(self, command):
        capabilities = self.transport.server.get("capabilities")
        return isinstance(capabilities, list) and command in capabilities

    def _ask_details(self):
        """Request `get_services` (lock held) unless the server lacks it; a change while
        one is in flight asks again once it is answered."""
        if not (self._watching and self.transport.ready and self._supports("get_services")):
            return
        if self._details_asked is not None:
            self._details_asked = "again"
            return
        self._details_asked = "sent"

        def done(reply):
            again = self._details_asked == "again"
            self._details_asked = None
            services = reply.data.get("services") if isinstance(reply.data, dict) else None
            if reply.ok and isinstance(services, list):
                self._details = {item["name"]: item for item in services
                                 if isinstance(item, dict) and isinstance(item.get("name"), str)}
                self.transport.bump()
            if again:
                self._ask_details()

        self.transport.enqueue("get_services", on_done=done)

    def notify(self, text, error=False):
        """Set the notice the UI shows (action outcomes, errors)."""
        with self._lock:
            self._notice = Notice(text, error)
            self.transport.bump()

    # ---- logs ------------------------------------------------------------------------

    def select(self, scope):
        """Show `scope`'s logs (a service name, or ALL): start over and fetch them."""
        self._on_feed(self.feed.select, scope)

    def set_following(self, following):
        """Follow the newest entries, or hold the view still while the user reads back."""
        self._on_feed(self.feed.set_following, following)

    def load_older(self):
        """Ask for a page of entries before the oldest held; False when there is none."""
        return self._on_feed(self.feed.load_older)

    def _on_feed(self, change, *args):
        """Run a feed operation under the lock, then send what it asked for."""
        with self._lock:
            changed = change(*args)
            if changed:
                self.transport.bump()
        self.transport.flush()
        return changed

    # ---- what the session hears (transport listener, lock held) -------------------------

    def on_open(self, snapshot):
        self._on_snapshot(snapshot)
        self.feed.open()
        self._details = None
        self._ask_details()

    def on_events(self, events):
        live = []
        for name, payload in events:
            if name == "log":
                live.append(payload)
            elif name == "service_status":
                self._on_status(payload)
                self._ask_details()
            elif name == "snapshot":
                self._on_snapshot(payload)
                self._ask_details()
        if live:
            self.feed.on_live(live)

    def on_server_error(self, payload):
        self.notify(f"server error: {Reply.from_payload({'error': payload}).describe()}",
                    error=True)

    def on_close(self):
        self.feed.close()
        self._details_asked = None

    def _on_snapshot(self, payload):
        services = payload.get("services")
        self._services = dict(sorted(
            (item["name"], str(item.get("status") or "unknown")) for item in services
            if isinstance(item, dict) and isinstance(item.get("name"), str)
        )) if isinstance(services, list) else {}

    def _on_status(self, payload):
        name, status = payload.get("service"), payload.get("status")
        if not isinstance(name, str) or not isinstance(status, str):
            return
        if name not in self._services:
            self._services[name] = status
            self._services = dict(sorted(self._services.items()))
        self._services[name] = status
