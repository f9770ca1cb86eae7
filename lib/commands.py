"""The server's command table (SPEC 5.3): for each name, the check of its payload, its
action, and whether the action's work runs inline or on a worker.

`hello.capabilities`, the session's dispatcher and the payload checks all read `TABLE`;
adding a command is one row plus its action. An action runs on the connection's reader
before the ack, so it can claim what it needs and be refused (the runtime's exceptions
become the wire codes here); it returns the work that produces the result's JSON text.
"""
from collections import namedtuple

from . import protocol
from .protocol import ProtocolError
from .runtime import ServiceBusy, UnknownService

Row = namedtuple("Row", "check action inline")
Row.__doc__ = ("check(id, payload, log_scopes) -> args; action(server, id, args) -> work; "
               "inline: work runs on the reader rather than on a worker thread.")

WIRE_CODES = {UnknownService: protocol.UNKNOWN_SERVICE, ServiceBusy: protocol.SERVICE_BUSY}


# ---- payload checks ----------------------------------------------------------------------

def _no_args(id, payload, log_scopes):
    return {}


def _service_arg(id, payload, log_scopes):
    """`{"service": name}`; whether the service exists is the runtime's to say."""
    service = payload.get("service")
    if service is None:
        raise ProtocolError(protocol.INVALID_PAYLOAD, "payload.service is required", id)
    if not isinstance(service, str):
        raise ProtocolError(protocol.INVALID_PAYLOAD, "payload.service must be a string", id)
    return {"service": service}


def _is_int(value, minimum):
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _get_logs_args(id, payload, log_scopes):
    """The query of SPEC 4.3: shapes first, then whether the scope exists."""
    args = {key: payload.get(key) for key in ("service", "limit", "after_seq", "before_seq")}
    service = args["service"]
    if service is not None and not isinstance(service, str):
        raise ProtocolError(protocol.INVALID_PAYLOAD, "payload.service must be a string", id)
    for key, minimum in (("limit", 1), ("after_seq", 0), ("before_seq", 1)):
        if args[key] is not None and not _is_int(args[key], minimum):
            relation = "> 0" if minimum else ">= 0"
            raise ProtocolError(protocol.INVALID_PAYLOAD,
                                f"payload.{key} must be an integer {relation}", id)
    if args["after_seq"] is not None and args["before_seq"] is not None:
        raise ProtocolError(protocol.INVALID_PAYLOAD,
                            "after_seq and before_seq cannot be combined", id)
    if service is not None and service not in log_scopes:
        raise ProtocolError(protocol.UNKNOWN_SERVICE, f'service "{service}" is not defined', id)
    return args


# ---- actions -------------------------------------------------------------------------------

def _get_snapshot(server, id, args):
    return lambda: protocol.encode(protocol.result_ok(id, {"services": server.runtime.snapshot()}))


def _get_services(server, id, args):
    return lambda: protocol.encode(protocol.result_ok(id, server.runtime.describe()))


def _get_logs(server, id, args):
    def work():
        limit = args["limit"] or server.config.log_limit(args["service"])
        entries, truncated = server.store.query(
            service=args["service"], limit=limit, after_seq=args["after_seq"],
            before_seq=args["before_seq"])
        return protocol.logs_result_json(id, entries, truncated, limit)
    return work


def _runtime(claim):
    """The action of a runtime command: `claim(runtime, **args)` claims at once (or
    raises), and the work waits for the runtime's Outcome."""
    def action(server, id, args):
        run = claim(server.runtime, **args)
        return lambda: _outcome_json(id, run())
    return action


def _outcome_json(id, outcome):
    if outcome.ok:
        return protocol.encode(protocol.result_ok(id))
    return protocol.encode(protocol.result_error(
        id, protocol.START_FAILED, outcome.message, outcome.failed_services))


def _reload_config(server, id, args):
    """Claim at once (service_busy), then read the file: its diff, or invalid_config with
    the error as the CLI prints it."""
    run = server.runtime.claim_reload()

    def work():
        outcome = run()
        if outcome.ok:
            return protocol.encode(protocol.result_ok(id, outcome.data))
        return protocol.encode(protocol.result_error(id, protocol.INVALID_CONFIG, outcome.message))
    return work


TABLE = {   # the seven V1 commands first, in their order (SPEC 5.4 hello)
    "get_snapshot": Row(_no_args, _get_snapshot, inline=True),
    "get_logs": Row(_get_logs_args, _get_logs, inline=False),
    "start_service": Row(_service_arg, _runtime(lambda rt, service: rt.claim_start(service)),
                         inline=False),
    "stop_service": Row(_service_arg, _runtime(lambda rt, service: rt.claim_stop(service)),
                        inline=False),
    "restart_service": Row(_service_arg,
                           _runtime(lambda rt, service: rt.claim_restart(service)),
                           inline=False),
    "start_all": Row(_no_args, _runtime(lambda rt: rt.claim_start_all()), inline=False),
    "stop_all": Row(_no_args, _runtime(lambda rt: rt.claim_stop_all()), inline=False),
    # Ext (SPEC 6.4), after the V1 names
    "get_services": Row(_no_args, _get_services, inline=True),
    "reload_config": Row(_no_args, _reload_config, inline=False),
}
NAMES = tuple(TABLE)


# ---- reading a command ---------------------------------------------------------------------

def check(cmd, log_scopes):
    """(row, args) of a routable Command, or ProtocolError (unknown_command,
    invalid_payload, unknown_service) for a refusing ack. `log_scopes` holds the names
    get_logs accepts as `service`."""
    row = TABLE.get(cmd.name)
    if row is None:
        raise ProtocolError(protocol.UNKNOWN_COMMAND, f'unknown command "{cmd.name}"', cmd.id)
    payload = {} if cmd.payload is None else cmd.payload
    if not isinstance(payload, dict):
        raise ProtocolError(protocol.INVALID_PAYLOAD, "payload must be an object", cmd.id)
    return row, row.check(cmd.id, payload, log_scopes)


def prepare(server, cmd):
    """Check a command and run its action: (work, inline), or ProtocolError for the ack.
    `server` gives the action its `runtime`, `store`, `config` and `log_scopes`."""
    row, args = check(cmd, server.log_scopes)
    try:
        return row.action(server, cmd.id, args), row.inline
    except (UnknownService, ServiceBusy) as exc:
        raise ProtocolError(WIRE_CODES[type(exc)], str(exc), cmd.id) from None
