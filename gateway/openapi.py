"""An OpenAPI 3.0 document of every bound route, generated from the descriptors the gateway discovered.

Schemas use the proto field names (what responses carry); descriptions are the .proto comments.
Multi-segment variables (`{name=books/*}`) appear as one `{name}` parameter: OpenAPI has no finer form.
"""

from typing import Any

from google.protobuf import descriptor
from google.rpc import code_pb2, status_pb2

from gateway import comments as proto_comments
from gateway.binding import SCALAR_LIKE, descriptor_of, resolve_field_path
from gateway.errors import HTTP_STATUS
from gateway.transcode import Route

OPENAPI_VERSION = "3.0.3"
_QUERY_DEPTH = 3  # how deep nested request messages are spelled out as dotted query parameters
_F = descriptor.FieldDescriptor
_SCALARS = {
    _F.TYPE_DOUBLE: {"type": "number", "format": "double"},
    _F.TYPE_FLOAT: {"type": "number", "format": "float"},
    _F.TYPE_INT32: {"type": "integer", "format": "int32"},
    _F.TYPE_SINT32: {"type": "integer", "format": "int32"},
    _F.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    _F.TYPE_UINT32: {"type": "integer", "format": "int64"},
    _F.TYPE_FIXED32: {"type": "integer", "format": "int64"},
    # 64-bit integers are JSON strings in the canonical mapping.
    _F.TYPE_INT64: {"type": "string", "format": "int64"},
    _F.TYPE_SINT64: {"type": "string", "format": "int64"},
    _F.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    _F.TYPE_UINT64: {"type": "string", "format": "uint64"},
    _F.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    _F.TYPE_BOOL: {"type": "boolean"},
    _F.TYPE_STRING: {"type": "string"},
    _F.TYPE_BYTES: {"type": "string", "format": "byte"},
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "example": "1.5s"},
    "google.protobuf.FieldMask": {"type": "string", "example": "name,description"},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "additionalProperties": True,
    },
    "google.protobuf.DoubleValue": {"type": "number"},
    "google.protobuf.FloatValue": {"type": "number"},
    "google.protobuf.Int64Value": {"type": "string", "format": "int64"},
    "google.protobuf.UInt64Value": {"type": "string", "format": "uint64"},
    "google.protobuf.Int32Value": {"type": "integer", "format": "int32"},
    "google.protobuf.UInt32Value": {"type": "integer", "format": "int64"},
    "google.protobuf.BoolValue": {"type": "boolean"},
    "google.protobuf.StringValue": {"type": "string"},
    "google.protobuf.BytesValue": {"type": "string", "format": "byte"},
}
# The error statuses every call can meet (gateway/errors.py maps gRPC codes to them), each a google.rpc.Status
# body; `default` covers the rest (405, 408, 413, 499, 501).
_ERROR_STATUSES = {
    400: "The request, or the state it meets, breaks a rule; BadRequest or PreconditionFailure name it.",
    401: "No valid bearer token: missing, malformed, expired or revoked, or wrong credentials.",
    403: "The caller may not do this: the method's access rule, or a disabled account.",
    404: "No such resource (ResourceInfo names it), or no route for the path.",
    409: "It exists already, or a concurrent operation on the same thing won (ABORTED: retry).",
    429: "A limit was reached (sign-in attempts, quotas); RetryInfo says when to try again.",
    500: "A fault in the gateway or a service; the message carries only the request id.",
    503: "A service did not answer; nothing was changed, retry.",
    504: "The call's deadline (Grpc-Timeout) passed.",
}
_UNMAPPED = ("UNKNOWN", "INTERNAL", "DATA_LOSS")  # and any code not in the table: 500


def _codes_of(http: int) -> list[str]:
    names = [code_pb2.Code.Name(code) for code, status in HTTP_STATUS.items() if status == http]
    return names + list(_UNMAPPED) if http == 500 else names


def _spelled(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _status_response(description: str) -> dict:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/google.rpc.Status"}}},
    }


_ERROR_RESPONSES = {
    f"Error{http}": _status_response(f"{_spelled(_codes_of(http))}. {text}") for http, text in _ERROR_STATUSES.items()
}
_ERROR_RESPONSES["Error"] = _status_response(
    "Any other error (405 method not allowed, 408 body timeout, 413 body too large, 499 cancelled, "
    "501 unimplemented): google.rpc.Status with its details."
)
_OPERATION_ERRORS = {
    **{str(http): {"$ref": f"#/components/responses/Error{http}"} for http in _ERROR_STATUSES},
    "default": {"$ref": "#/components/responses/Error"},
}


def _ref(message: descriptor.Descriptor) -> dict:
    return {"$ref": f"#/components/schemas/{message.full_name}"}


class _Document:
    """One generation of the document: the paths, and the schemas they reference."""

    def __init__(self, comments: dict[str, str]):
        self.comments = comments
        self.schemas: dict[str, dict] = {}
        self.paths: dict[str, dict] = {}
        self.operation_ids: set[str] = set()

    def _described(self, schema: dict, full_name: str) -> dict:
        text = self.comments.get(full_name)
        if not text:
            return schema
        if "$ref" in schema:  # OpenAPI 3.0 ignores siblings of $ref; allOf keeps the description
            return {"allOf": [schema], "description": text}
        return {**schema, "description": text}

    def message_schema(self, message: descriptor.Descriptor) -> dict:
        if message.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[message.full_name])
        if message.full_name not in self.schemas:
            self.schemas[message.full_name] = {}  # reserved first: recursive messages refer to themselves
            properties = {f.name: self._described(self.field_schema(f), f.full_name) for f in message.fields}
            self.schemas[message.full_name] = self._described(
                {"type": "object", "properties": properties}, message.full_name
            )
        return _ref(message)

    def field_schema(self, field: descriptor.FieldDescriptor, *, element: bool = False) -> dict:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            return {
                "type": "object",
                "additionalProperties": self.field_schema(field.message_type.fields_by_name["value"]),
            }
        if field.is_repeated and not element:
            return {"type": "array", "items": self.field_schema(field, element=True)}
        if field.message_type is not None:
            return self.message_schema(field.message_type)
        if field.enum_type is not None:
            return {"type": "string", "enum": [v.name for v in field.enum_type.values]}
        return dict(_SCALARS[field.type])

    def _query_parameters(
        self, message: descriptor.Descriptor, bound: list[tuple[str, ...]], prefix: tuple[str, ...] = ()
    ) -> list[dict]:
        parameters = []
        for field in message.fields:
            path = prefix + (field.name,)
            if any(path[: len(b)] == b for b in bound):
                continue
            kind = field.message_type
            if kind is None or kind.full_name in SCALAR_LIKE:
                parameter: dict[str, Any] = {"name": ".".join(path), "in": "query", "schema": self.field_schema(field)}
                if field.is_repeated:
                    parameter.update(style="form", explode=True)
                text = self.comments.get(field.full_name)
                parameters.append({**parameter, "description": text} if text else parameter)
            elif (
                not field.is_repeated
                and not kind.GetOptions().map_entry
                and len(path) < _QUERY_DEPTH
                and kind.full_name not in _WELL_KNOWN
            ):
                parameters += self._query_parameters(kind, bound, path)
        return parameters

    def add(self, route: Route) -> None:
        method = route.method
        request, response = method.input_type, method.output_type
        parameters = []
        for variable in route.template.variables:
            leaf = resolve_field_path(request, variable.field_path)[-1]
            parameter = {"name": variable.name, "in": "path", "required": True, "schema": self.field_schema(leaf)}
            text = self.comments.get(leaf.full_name)
            parameters.append({**parameter, "description": text} if text else parameter)
        body = route.binder.body
        if body != "*":
            bound = [v.field_path for v in route.template.variables] + ([(body,)] if body else [])
            parameters += self._query_parameters(request, bound)
        operation: dict[str, Any] = {
            "operationId": self._operation_id(method),
            "tags": [method.containing_service.full_name],
            "parameters": parameters,
        }
        if route.callers:
            operation["x-callers"] = list(route.callers)
        text = self.comments.get(method.full_name)
        if text:
            operation["summary"] = text.split("\n")[0]
            operation["description"] = text
        if body:
            schema = self.message_schema(request) if body == "*" else self.field_schema(request.fields_by_name[body])
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
        schema = (
            self.field_schema(response.fields_by_name[route.response_body])
            if route.response_body
            else self.message_schema(response)
        )
        media = "application/x-ndjson" if route.server_streaming else "application/json"
        note = "A stream of messages, one JSON object per line." if route.server_streaming else "Success."
        operation["responses"] = {
            "200": {"description": note, "content": {media: {"schema": schema}}},
            **_OPERATION_ERRORS,
        }
        self.paths.setdefault(route.template.openapi_path(), {})[route.http_method.lower()] = operation

    def _operation_id(self, method: descriptor.MethodDescriptor) -> str:
        base = f"{method.containing_service.name}_{method.name}"
        candidate, n = base, 1
        while candidate in self.operation_ids:  # additional bindings of one method
            n += 1
            candidate = f"{base}{n}"
        self.operation_ids.add(candidate)
        return candidate


class OpenApiBuilder:
    """Builds the document once per routing generation."""

    def __init__(self, descriptor_set: str):
        self.descriptor_set = descriptor_set
        self._comments: dict[str, str] | None = None
        self._cached: tuple[int, dict] | None = None

    def document(self, backends) -> dict:
        if self._cached and self._cached[0] == backends.generation:
            return self._cached[1]
        if self._comments is None:
            self._comments = proto_comments.load_descriptor_set(self.descriptor_set)
        comments = dict(self._comments)
        for schema in backends.schemas.values():
            for file in schema.files.values():
                comments.update(proto_comments.comments_of(file))
        built = _Document(comments)
        for route in backends.routes:
            built.add(route)
        built.message_schema(descriptor_of(status_pb2.Status))
        services = sorted({r.method.containing_service.full_name for r in backends.routes})
        document = {
            "openapi": OPENAPI_VERSION,
            "info": {
                "title": "HTTP/JSON gateway",
                "version": str(backends.generation),
                "description": "Transcoded from the gRPC services' google.api.http annotations.",
            },
            "tags": [{"name": s, "description": comments[s]} if s in comments else {"name": s} for s in services],
            "paths": built.paths,
            "components": {"schemas": built.schemas, "responses": _ERROR_RESPONSES},
        }
        self._cached = (backends.generation, document)
        return document
