"""gRPC status -> HTTP status (the grpc-gateway / Envoy table) and google.rpc.Status as the JSON error body."""

import base64

import grpc
from google.protobuf import descriptor_pool, json_format
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

# Importing error_details_pb2 puts ErrorInfo, BadRequest, ... in the default pool, so their Any details print.
_DEFAULT_POOL = descriptor_pool.Default()
_DEFAULT_POOL.FindMessageTypeByName(error_details_pb2.ErrorInfo.DESCRIPTOR.full_name)  # KeyError if not

DOMAIN = "gateway"
STATUS_DETAILS_KEY = "grpc-status-details-bin"

HTTP_STATUS: dict[int, int] = {
    code_pb2.OK: 200,
    code_pb2.INVALID_ARGUMENT: 400,
    code_pb2.FAILED_PRECONDITION: 400,
    code_pb2.OUT_OF_RANGE: 400,
    code_pb2.UNAUTHENTICATED: 401,
    code_pb2.PERMISSION_DENIED: 403,
    code_pb2.NOT_FOUND: 404,
    code_pb2.ALREADY_EXISTS: 409,
    code_pb2.ABORTED: 409,
    code_pb2.RESOURCE_EXHAUSTED: 429,
    code_pb2.CANCELLED: 499,
    code_pb2.UNIMPLEMENTED: 501,
    code_pb2.UNAVAILABLE: 503,
    code_pb2.DEADLINE_EXCEEDED: 504,
}


def http_status(code: grpc.StatusCode | int) -> int:
    """The HTTP status for a gRPC code; UNKNOWN, INTERNAL, DATA_LOSS and anything else are 500."""
    number = code.value[0] if isinstance(code, grpc.StatusCode) else code
    return HTTP_STATUS.get(number, 500)


class GatewayError(Exception):
    """A failure found by the gateway itself, before or instead of a backend call."""

    def __init__(
        self, code: int, message: str, reason: str, *, http: int | None = None, violations: dict[str, str] | None = None
    ):
        super().__init__(message)
        self.http = http or http_status(code)
        details: list[Message] = [error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN)]
        if violations:
            details.append(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=name, description=text)
                        for name, text in violations.items()
                    ]
                )
            )
        self.status = status_pb2.Status(code=code, message=message)
        for detail in details:
            self.status.details.add().Pack(detail)


def internal_status(request_id: str) -> status_pb2.Status:
    """All a client learns of a fault in the gateway: that it happened, and the request id the log has it under."""
    status = GatewayError(code_pb2.INTERNAL, f"Internal error (request id {request_id}).", "INTERNAL").status
    status.details.add().Pack(error_details_pb2.RequestInfo(request_id=request_id))
    return status


def status_of(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The rich status a backend put in the trailers, or a plain one from the code and message."""
    for key, value in error.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):  # a -bin key's value is always bytes
            status = status_pb2.Status.FromString(value)
            if status.code == error.code().value[0]:
                return status
    return status_pb2.Status(code=error.code().value[0], message=error.details() or "")


def status_json(status: status_pb2.Status, backend_pool: descriptor_pool.DescriptorPool | None = None) -> dict:
    """Status as canonical JSON; each Any detail printed from whichever pool knows its type."""
    details = [_detail_json(detail, backend_pool) for detail in status.details]
    return {"code": status.code, "message": status.message, "details": details}


def _detail_json(detail, backend_pool) -> dict:
    for pool in (_DEFAULT_POOL, backend_pool):
        if pool is None:
            continue
        try:
            return json_format.MessageToDict(detail, preserving_proto_field_name=True, descriptor_pool=pool)
        except (TypeError, KeyError, json_format.Error):
            continue
    # A type no pool knows: still show what it is, with the raw bytes.
    return {"@type": detail.type_url, "value": base64.b64encode(detail.value).decode()}
