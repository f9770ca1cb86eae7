"""FlowLayer protocol V1: envelopes, validation of client envelopes (SPEC 5.2), error codes.

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
SERVER_LOG_SCOPE = SERVER   # get_logs scope of the server's own lines

# Envelope errors of SPEC 5.2, answered with an `error` message.
INVALID_JSON = "invalid_json"
MISSING_TYPE = "missing_type"
MISSING_ID = "missing_id"
MISSING_NAME = "missing_name"
INVALID_PAYLOAD = "invalid_payload"
UNSUPPORTED_MESSAGE_TYPE = "unsupported_message_type"
UNKNOWN_TYPE = "unknown_type"
# Command rejections of SPEC 5.3, answered with `ack {"accepted": false}`.
UNKNOWN_COMMAND = "unknown_command"
UNKNOWN_SERVICE = "unknown_service"
SERVICE_BUSY = "service_busy"
# Result errors.
START_FAILED = "start_failed"
INVALID_CONFIG = "invalid_config"
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


def hello(capabilities):
    """The first event of a session; `capabilities` are the server's command names."""
    return event("hello", {"protocol_version": PROTOCOL_VERSION, "server": SERVER_NAME,
                           "capabilities": list(capabilities)})


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
