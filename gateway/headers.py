"""HTTP headers -> gRPC call metadata and deadline."""

import base64
import re
import uuid
from collections.abc import Mapping

from google.rpc import code_pb2

from gateway.errors import GatewayError

METADATA_PREFIX = "grpc-metadata-"
REQUEST_ID = "x-request-id"
FORWARDED_FOR = "x-forwarded-for"
_TIMEOUT = re.compile(r"^(\d{1,8})([HMSmun])$")
_UNIT_SECONDS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_METADATA_KEY = re.compile(r"^[0-9a-z_.-]+$")
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")  # all gRPC allows in a text metadata value
_REQUEST_ID_FORM = re.compile(r"[A-Za-z0-9._:/=+-]{1,128}")
_OWN_KEYS = (REQUEST_ID, FORWARDED_FOR, "authorization")  # set by the gateway, never by a Grpc-Metadata- header


def _header_error(name: str, rule: str, reason: str = "INVALID_HEADER") -> GatewayError:
    return GatewayError(code_pb2.INVALID_ARGUMENT, f"{name}: {rule}", reason, violations={name: rule})


def request_id(headers: Mapping[str, str]) -> str:
    """The caller's X-Request-Id when it is a plain id (1-128 of A-Z a-z 0-9 . _ : / = + -), else a new one:
    it goes into every log line and to every backend, so nothing else is passed on."""
    given = headers.get("X-Request-Id", "").strip()
    return given if _REQUEST_ID_FORM.fullmatch(given) else uuid.uuid4().hex


def _text(name: str, value: str) -> str:
    """A header value as text metadata. gRPC refuses anything but printable ASCII, which would end in a 500."""
    if not _PRINTABLE_ASCII.fullmatch(value):
        raise _header_error(name, "must be printable ASCII (no control characters, no non-ASCII bytes)")
    return value


def call_metadata(
    headers: Mapping[str, str], request_id_value: str, client_address: str | None
) -> list[tuple[str, str | bytes]]:
    """The request id, the client's address, Authorization, and every Grpc-Metadata-<name> header as <name>.

    The address is the TCP peer only: an X-Forwarded-For the client sent is not passed on, as the backends
    believe x-forwarded-for from the gateway.
    """
    _text("X-Request-Id", headers.get("X-Request-Id", ""))  # replaced when not a plain id, refused when not text
    metadata: list[tuple[str, str | bytes]] = [(REQUEST_ID, request_id_value)]
    if client_address:  # None on a Unix socket
        metadata.append((FORWARDED_FOR, client_address))
    authorization = headers.get("Authorization")
    if authorization:
        metadata.append(("authorization", _text("Authorization", authorization)))
    for name, value in headers.items():
        lowered = name.lower()
        if not lowered.startswith(METADATA_PREFIX):
            continue
        key = lowered[len(METADATA_PREFIX) :]
        if not _METADATA_KEY.match(key) or key.startswith("grpc-"):
            raise _header_error(name, "not a usable metadata name (0-9 a-z _ . -, not grpc-*)")
        if key in _OWN_KEYS:
            raise _header_error(name, f"{key} is set by the gateway itself")
        if key.endswith("-bin"):  # binary metadata travels base64-encoded in HTTP
            try:
                metadata.append((key, base64.b64decode(value, validate=True)))
            except ValueError:  # binascii.Error, or a value that is not even ASCII
                raise _header_error(name, "must be base64") from None
        else:
            metadata.append((key, _text(name, value)))
    return metadata


def timeout_seconds(headers: Mapping[str, str], default: float, maximum: float) -> float:
    """Grpc-Timeout (e.g. `5S`, `100m`) when given, else the default; never above the maximum."""
    raw = headers.get("Grpc-Timeout")
    if raw is None:
        return default
    match = _TIMEOUT.match(raw.strip())
    if not match:
        raise _header_error("Grpc-Timeout", "must be <digits><H|M|S|m|u|n>, at most 8 digits", "INVALID_TIMEOUT")
    return min(int(match.group(1)) * _UNIT_SECONDS[match.group(2)], maximum)


def response_headers(initial, trailing) -> dict[str, str]:
    """A backend's metadata as grpc-gateway returns it: Grpc-Metadata-<key> for headers and
    Grpc-Trailer-<key> for trailers; binary (-bin) values and gRPC's own keys stay inside."""
    out: dict[str, str] = {}
    for prefix, items in (("Grpc-Metadata-", initial), ("Grpc-Trailer-", trailing)):
        for key, value in items or ():
            if key.endswith("-bin") or key.startswith("grpc-") or not isinstance(value, str):
                continue
            out[f"{prefix}{key}"] = value
    return out
