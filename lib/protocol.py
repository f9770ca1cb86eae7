"""FlowLayer protocol V1: envelopes, validation of client messages, error codes.

Pure functions shared by the server and the client; no sockets here. Every message is
one JSON object `{"type", "id", "name", "payload"}` whose keys that do not apply are
left out. JSON is always written with ASCII escapes, so a text never fails to encode
(lone surrogates included) and its length in characters is its length in bytes.
"""
import json
from collections import namedtuple
from json.encoder import encode_basestring_ascii as quote

from .entry import SERVER, entries_json

PROTOCOL_VERSION = 1
SERVER_NAME = "flowlayer"
COMMANDS = ("get_snapshot", "get_logs", "start_service", "stop_service", "restart_service",
            "start_all", "stop_all")
SERVICE_COMMANDS = ("start_service", "stop_service", "restart_service")
SERVER_LOG_SCOPE = SERVER   # get_logs scope of the server's own lines

# Envelope errors of SPEC 5.2, answered with an `error` message.
INVALID_JSON = "invalid_json"
MISSING_TYPE = "missing_type"
MISSING_ID = "missing_id"
MISSING_NAME = "missing_name"
INVALID_PAYLOAD = "invalid_payload"
UNSUPPORTED_MESSAGE_TYPE = "unsupported_message_type"
UNKNOWN_TYPE = "unknown_type"
# Command rejections of SPEC 5.3, answered with `ack {"accepted": false}` (the runtime
# refuses its own commands with unknown_service and service_busy).
UNKNOWN_COMMAND = "unknown_command"
UNKNOWN_SERVICE = "unknown_service"
# Result errors.
START_FAILED = "start_failed"
INTERNAL_ERROR = "internal_error"

MESSAGE_TYPES = ("command", "ack", "result", "event", "error")


class ProtocolError(Exception):
    """A client message refused with `code` and `message`; `id` is echoed when known."""

    def __init__(self, code, message, id=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.id = id


Command = namedtuple("Command", "id name payload")
Command.__doc__ = "A routable command: non-blank string id and name, payload as sent."


# ---- building messages ---------------------------------------------------------------

def envelope(type, id=None, name=None, payload=None):
    """A message dict in key order type, id, name, payload; None values are left out."""
    message = {"type": type}
    if id is not None:
        message["id"] = id
    if name is not None:
        message["name"] = name
    if payload is not None:
        message["payload"] = payload
    return message


def encode(message):
    """Compact JSON text of a message (ASCII only)."""
    return json.dumps(message, separators=(",", ":"))


def command(id, name, payload=None):
    return envelope("command", id, name, payload)


def event(name, payload):
    return envelope("event", name=name, payload=payload)


def hello():
    return event("hello", {"protocol_version": PROTOCOL_VERSION, "server": SERVER_NAME,
                           "capabilities": list(COMMANDS)})


def snapshot_event(services):
    return event("snapshot", {"services": services})


def status_event(service, status, timestamp):
    return event("service_status", {"service": service, "status": status,
                                    "timestamp": timestamp})


def error(code, message, id=None):
    return envelope("error", id, payload={"code": code, "message": message})


def ack(id, code=None, message=None):
    """`accepted: true`, or `accepted: false` with the error when `code` is given."""
    if code is None:
        return envelope("ack", id, payload={"accepted": True})
    return envelope("ack", id, payload={"accepted": False,
                                        "error": {"code": code, "message": message}})


def result_ok(id, data=None):
    payload = {"ok": True}
    if data is not None:
        payload["data"] = data
    return envelope("result", id, payload=payload)


def result_error(id, code, message, failed_services=None):
    payload = {"ok": False, "error": {"code": code, "message": message}}
    if failed_services is not None:
        payload["failed_services"] = list(failed_services)
    return envelope("result", id, payload=payload)


def log_events_json(entries):
    """JSON texts of the `log` events of entries (the same as `encode(event("log", ...))`)."""
    return ['{"type":"event","name":"log","payload":' + text + "}"
            for text in entries_json(entries)]


def logs_result_json(id, entries, truncated, effective_limit):
    """JSON text of a successful get_logs result, without a dict per entry."""
    return ('{"type":"result","id":%s,"payload":{"ok":true,"data":{"entries":[%s],'
            '"truncated":%s,"effective_limit":%d}}}') % (
        quote(id), ",".join(entries_json(entries)),
        "true" if truncated else "false", effective_limit)


# ---- reading client messages -----------------------------------------------------------

def _text(value):
    """`value` when it is a non-blank string, else None."""
    return value if isinstance(value, str) and value.strip() else None


def decode(text):
    """The JSON object of a message (str, or UTF-8 bytes), or None when it is not one."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        message = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return message if isinstance(message, dict) else None


def parse_message(text, binary=False):
    """Check a client message in the order of SPEC 5.2 and return its Command.

    Raises ProtocolError for anything that is not a routable command; its `id` is the
    message's id when that is a non-blank string. A binary frame is never a message.
    """
    message = None if binary else decode(text)
    if message is None:
        raise ProtocolError(INVALID_JSON, "invalid json message")
    id = _text(message.get("id"))
    type = _text(message.get("type"))
    if type is None:
        raise ProtocolError(MISSING_TYPE, "type is required", id)
    if type not in MESSAGE_TYPES:
        raise ProtocolError(UNKNOWN_TYPE, "unknown message type", id)
    if type in ("command", "ack", "result") and id is None:
        raise ProtocolError(MISSING_ID, f"{type}.id is required", id)
    name = _text(message.get("name"))
    if type in ("command", "event") and name is None:
        raise ProtocolError(MISSING_NAME, f"{type}.name is required", id)
    payload = message.get("payload")
    if type == "command":
        return Command(id, name, payload)
    if not _payload_well_formed(type, payload):
        raise ProtocolError(INVALID_PAYLOAD, f"{type}.payload is malformed", id)
    raise ProtocolError(UNSUPPORTED_MESSAGE_TYPE, "only command messages can be routed", id)


def _payload_well_formed(type, payload):
    """What a server would send: ack/result/error need their key field, events an object."""
    if type == "event":
        return payload is None or isinstance(payload, dict)
    if not isinstance(payload, dict):
        return False
    key, kind = {"ack": ("accepted", bool), "result": ("ok", bool),
                 "error": ("code", str)}[type]
    return isinstance(payload.get(key), kind)


def _is_int(value, minimum):
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def check_command(cmd, log_scopes):
    """Validate a command's name and payload (SPEC 5.3); return its arguments as a dict.

    `log_scopes` holds the names get_logs accepts as `service`. Raises ProtocolError
    (unknown_command, invalid_payload, unknown_service) answered by a refusing ack. The
    existence of a service for the runtime commands is the runtime's to check.
    """
    if cmd.name not in COMMANDS:
        raise ProtocolError(UNKNOWN_COMMAND, f'unknown command "{cmd.name}"', cmd.id)
    payload = {} if cmd.payload is None else cmd.payload
    if not isinstance(payload, dict):
        raise ProtocolError(INVALID_PAYLOAD, "payload must be an object", cmd.id)
    if cmd.name in SERVICE_COMMANDS:
        service = payload.get("service")
        if service is None:
            raise ProtocolError(INVALID_PAYLOAD, "payload.service is required", cmd.id)
        if not isinstance(service, str):
            raise ProtocolError(INVALID_PAYLOAD, "payload.service must be a string", cmd.id)
        return {"service": service}
    if cmd.name == "get_logs":
        return _check_get_logs(cmd.id, payload, log_scopes)
    return {}


def _check_get_logs(id, payload, log_scopes):
    args = {key: payload.get(key) for key in ("service", "limit", "after_seq", "before_seq")}
    service = args["service"]
    if service is not None and not isinstance(service, str):
        raise ProtocolError(INVALID_PAYLOAD, "payload.service must be a string", id)
    for key, minimum in (("limit", 1), ("after_seq", 0), ("before_seq", 1)):
        if args[key] is not None and not _is_int(args[key], minimum):
            relation = "> 0" if minimum else ">= 0"
            raise ProtocolError(INVALID_PAYLOAD, f"payload.{key} must be an integer {relation}",
                                id)
    if args["after_seq"] is not None and args["before_seq"] is not None:
        raise ProtocolError(INVALID_PAYLOAD, "after_seq and before_seq cannot be combined", id)
    if service is not None and service not in log_scopes:
        raise ProtocolError(UNKNOWN_SERVICE, f'service "{service}" is not defined', id)
    return args
