"""HTTP headers -> gRPC call metadata and deadline."""

import base64
import binascii
import re
import uuid
from typing import Mapping

from google.rpc import code_pb2

from gateway.errors import GatewayError

METADATA_PREFIX = "grpc-metadata-"
REQUEST_ID = "x-request-id"
_TIMEOUT = re.compile(r"^(\d{1,8})([HMSmun])$")
_UNIT_SECONDS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_METADATA_KEY = re.compile(r"^[0-9a-z_.-]+$")


def request_id(headers: Mapping[str, str]) -> str:
    """The caller's X-Request-Id, or a new one."""
    return headers.get("X-Request-Id", "").strip()[:128] or uuid.uuid4().hex


def call_metadata(headers: Mapping[str, str], request_id_value: str) -> list[tuple[str, str | bytes]]:
    """Authorization, the request id, and every Grpc-Metadata-<name> header as <name>."""
    metadata: list[tuple[str, str | bytes]] = [(REQUEST_ID, request_id_value)]
    authorization = headers.get("Authorization")
    if authorization:
        metadata.append(("authorization", authorization))
    for name, value in headers.items():
        lowered = name.lower()
        if not lowered.startswith(METADATA_PREFIX):
            continue
        key = lowered[len(METADATA_PREFIX):]
        if not _METADATA_KEY.match(key) or key.startswith("grpc-"):
            raise GatewayError(code_pb2.INVALID_ARGUMENT, f"{name} is not a usable metadata name", "INVALID_HEADER")
        if key.endswith("-bin"):  # binary metadata travels base64-encoded in HTTP
            try:
                metadata.append((key, base64.b64decode(value, validate=True)))
            except binascii.Error:
                raise GatewayError(code_pb2.INVALID_ARGUMENT, f"{name} is not base64", "INVALID_HEADER") from None
        else:
            metadata.append((key, value))
    return metadata


def timeout_seconds(headers: Mapping[str, str], default: float, maximum: float) -> float:
    """Grpc-Timeout (e.g. `5S`, `100m`) when given, else the default; never above the maximum."""
    raw = headers.get("Grpc-Timeout")
    if raw is None:
        return default
    match = _TIMEOUT.match(raw.strip())
    if not match:
        raise GatewayError(code_pb2.INVALID_ARGUMENT, f"Grpc-Timeout {raw!r} is not <digits><H|M|S|m|u|n>",
                           "INVALID_TIMEOUT")
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
