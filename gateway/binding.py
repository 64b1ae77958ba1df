"""Builds a request message from an HTTP request: body, then query parameters, then path variables.

As in grpc-gateway: `body: "*"` maps the whole JSON body and leaves nothing to the query string;
`body: "<field>"` maps the body to that top-level field; every field neither in the path nor in the
body may come as a query parameter, named by its dotted path (proto or JSON names), repeated fields by
repeating the parameter, enums by name (or number). An unknown or doubly-bound parameter is refused.

Also as grpc-gateway: a PATCH whose body is a field (the resource) and whose request has an `update_mask`
the query left empty gets the mask of the fields the body names, so `PATCH {"max_assignments_per_user": 0}`
sets that field to 0 instead of being read as "nothing set" (AIP-134's implied mask, which a JSON body
can state and a proto3 message cannot).
"""

import json
import re

from google.api import field_behavior_pb2
from google.protobuf import descriptor, json_format
from google.protobuf.message import Message
from google.rpc import code_pb2
from multidict import MultiMapping

from gateway.errors import GatewayError

FieldPath = tuple[str, ...]

# Well-known message types whose JSON form is a plain string or number: usable as one query value.
SCALAR_LIKE = {
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    "google.protobuf.FieldMask",
    "google.protobuf.DoubleValue",
    "google.protobuf.FloatValue",
    "google.protobuf.Int64Value",
    "google.protobuf.UInt64Value",
    "google.protobuf.Int32Value",
    "google.protobuf.UInt32Value",
    "google.protobuf.BoolValue",
    "google.protobuf.StringValue",
    "google.protobuf.BytesValue",
}
_TRUE, _FALSE = ("true", "1"), ("false", "0")
# Deeper bodies are refused: decoding and json_format recurse, and no request message needs more.
MAX_JSON_DEPTH = 64
# \uD800-\uDFFF: a pair of these escapes is one character, one alone is none (and upb fails on it).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_KIND = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    type(None): "null",
}
# The JSON a body bound to a field of these types must be (None: any; a message type not listed: an object).
_FORM_OF_TYPE = {**dict.fromkeys(SCALAR_LIKE), "google.protobuf.Value": None, "google.protobuf.ListValue": list}


_NOT_UPDATED = {field_behavior_pb2.OUTPUT_ONLY, field_behavior_pb2.IDENTIFIER}


def _mask_paths(message: descriptor.Descriptor, document: dict, prefix: str = "") -> list[str]:
    """The field mask paths a JSON object names (proto names), into nested messages but not into
    well-known types or maps, whose values replace the whole field (grpc-gateway's FieldMaskFromRequestBody).
    Output-only and identifier fields are left out (AIP-203), so a resource sent back as it was read, with
    its id and times, updates what it may."""
    paths = []
    for key, value in document.items():
        field = _field_named(message, key)
        if field is None:  # json_format accepted the body, so this is an ignored key such as "@type"
            continue
        if _NOT_UPDATED.intersection(field.GetOptions().Extensions[field_behavior_pb2.field_behavior]):  # type: ignore[index]
            continue
        nested = field.message_type
        if (
            nested is not None
            and isinstance(value, dict)
            and value
            and nested.full_name not in _FORM_OF_TYPE
            and not nested.GetOptions().map_entry
            and not field.is_repeated
        ):
            paths += _mask_paths(nested, value, f"{prefix}{field.name}.")
        else:
            paths.append(prefix + field.name)
    return paths


def _field_named(message: descriptor.Descriptor, name: str) -> descriptor.FieldDescriptor | None:
    field = message.fields_by_name.get(name)
    if field is None:
        field = next((f for f in message.fields if f.json_name == name), None)
    return field


def descriptor_of(message_class: type[Message]) -> descriptor.Descriptor:
    """A message class's descriptor: protobuf's stubs type it as descriptor.Descriptor or upb's own, and
    upb's is an instance of descriptor.Descriptor at run time."""
    found = message_class.DESCRIPTOR
    if not isinstance(found, descriptor.Descriptor):
        raise TypeError(f"{message_class.__name__}.DESCRIPTOR is not a message descriptor")
    return found


def resolve_field_path(message: descriptor.Descriptor, names: list[str] | tuple[str, ...]) -> list:
    """The fields along a dotted path (proto or JSON names); raises KeyError naming the bad part."""
    fields = []
    current: descriptor.Descriptor | None = message
    for position, name in enumerate(names):
        if current is None:
            raise KeyError(".".join(names[:position]) + " is not a message")
        field = _field_named(current, name)
        if field is None:
            raise KeyError(".".join(names[: position + 1]))
        fields.append(field)
        current = field.message_type
    return fields


def _is_message(field: descriptor.FieldDescriptor) -> bool:
    return field.type == descriptor.FieldDescriptor.TYPE_MESSAGE


def _is_bool(field: descriptor.FieldDescriptor) -> bool:
    return field.type == descriptor.FieldDescriptor.TYPE_BOOL or (
        _is_message(field)
        and field.message_type is not None
        and field.message_type.full_name == "google.protobuf.BoolValue"
    )


def _json_value(field: descriptor.FieldDescriptor, text: str):
    """A query or path string as the JSON value json_format expects for this field."""
    if _is_bool(field):
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(f"{text!r} is not a boolean (true or false)")
    return text  # json_format accepts numbers, enum names and well-known types as strings


def _nest(tree: dict, path: FieldPath, value) -> None:
    for name in path[:-1]:
        tree = tree.setdefault(name, {})
    tree[path[-1]] = value


def _bad_request(reason: str, violations: dict[str, str], message: str = "") -> GatewayError:
    summary = message or "; ".join(f"{name}: {text}" for name, text in violations.items())
    return GatewayError(code_pb2.INVALID_ARGUMENT, summary, reason, violations=violations)


def _json_form(field: descriptor.FieldDescriptor) -> type | None:
    """What a body bound to this field must be: dict (messages, maps), list (repeated), None (anything)."""
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        return dict
    if field.is_repeated:
        return list
    return None if field.message_type is None else _FORM_OF_TYPE.get(field.message_type.full_name, dict)


def _deeper_than(document, limit: int) -> bool:
    """Whether objects and arrays nest more than `limit` levels; walked level by level, not recursively."""
    level = [document] if isinstance(document, (dict, list)) else []
    for _ in range(limit):
        if not level:
            return False
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, (dict, list))
        ]
    return bool(level)


def _too_deep() -> GatewayError:
    return _bad_request("JSON_TOO_DEEP", {"body": f"nests objects and arrays deeper than {MAX_JSON_DEPTH} levels"})


def _decode(body: bytes):
    """The body's JSON: UTF-8 (RFC 8259), valid Unicode, at most MAX_JSON_DEPTH levels deep."""
    try:
        text = body.decode("utf-8-sig")
        document = json.loads(text)
        if _SURROGATE_ESCAPE.search(text):
            json.dumps(document, ensure_ascii=False).encode()  # fails on an unpaired surrogate
    except UnicodeEncodeError:
        raise _bad_request("MALFORMED_JSON", {"body": "has an unpaired surrogate escape (\\uD800-\\uDFFF)"}) from None
    except RecursionError:
        raise _too_deep() from None
    except ValueError as error:
        raise _bad_request(
            "MALFORMED_JSON", {"body": f"not valid JSON: {error}"}, f"The body is not valid JSON: {error}"
        ) from error
    if _deeper_than(document, MAX_JSON_DEPTH):
        raise _too_deep()
    return document


class RequestBinder:
    """Per-route, precomputed: which fields the path and the body own, and how query names resolve."""

    def __init__(
        self, request_class: type[Message], path_fields: list[FieldPath], body: str, infer_update_mask: bool = False
    ):
        self.request_class = request_class
        self.message = descriptor_of(request_class)
        self.body = body  # "", "*" or a top-level field name
        self._path_setters = {path: self._path_setter(path) for path in path_fields}
        self._bound = [tuple(path) for path in path_fields] + ([(body,)] if body and body != "*" else [])
        self._query_fields: dict[str, tuple[FieldPath, descriptor.FieldDescriptor]] = {}
        field = resolve_field_path(self.message, [body])[0] if body and body != "*" else None
        self._body_key = field.name if field else None  # None: the body is the whole request
        self._body_form = _json_form(field) if field else dict
        self._body_is = f"the request's {field.name} field" if field else "the request message"
        mask = self.message.fields_by_name.get("update_mask")
        mask_type = mask.message_type.full_name if mask is not None and mask.message_type else ""
        # The resource whose fields a PATCH body names, when the mask is inferred from them.
        self._masked: descriptor.Descriptor | None = (
            field.message_type
            if infer_update_mask and field is not None and mask_type == "google.protobuf.FieldMask"
            else None
        )
        # Fields of the resource the URL path sets (its id): not the body's to change.
        self._path_set = {".".join(path[1:]) for path in path_fields if path[0] == body}

    def _path_setter(self, path: FieldPath):
        fields = resolve_field_path(self.message, path)  # raises KeyError: the route is refused at build
        leaf = fields[-1]
        if leaf.is_repeated or (_is_message(leaf) and leaf.message_type.full_name not in SCALAR_LIKE):
            raise KeyError(f"{'.'.join(path)} cannot be set from one path segment")
        if leaf.type == descriptor.FieldDescriptor.TYPE_STRING:
            names = [f.name for f in fields]

            def set_string(message: Message, value: str) -> None:  # the common case, without json_format
                for name in names[:-1]:
                    message = getattr(message, name)
                setattr(message, names[-1], value)

            return set_string
        proto_path = tuple(f.name for f in fields)

        def set_by_json(message: Message, value: str) -> None:
            tree: dict = {}
            _nest(tree, proto_path, _json_value(leaf, value))
            json_format.ParseDict(tree, message)

        return set_by_json

    def bind(self, body: bytes, query: MultiMapping[str], path_values: dict[FieldPath, str]) -> Message:
        message = self.request_class()
        document = self._bind_body(message, body) if self.body and body.strip() else None
        if query:
            self._bind_query(message, query)
        if self._masked is not None and isinstance(document, dict):
            mask = message.update_mask  # type: ignore[attr-defined]  # a FieldMask, checked at build
            if not mask.paths:
                mask.paths.extend(p for p in _mask_paths(self._masked, document) if p not in self._path_set)
        for path, value in path_values.items():
            try:
                self._path_setters[path](message, value)
            except (ValueError, json_format.ParseError) as error:
                raise _bad_request("INVALID_PATH_PARAMETER", {".".join(path): str(error)}) from error
        return message

    def _bind_body(self, message: Message, body: bytes) -> object:
        """Binds the body; returns its JSON document."""
        document = _decode(body)
        if self._body_form is not None and not isinstance(document, self._body_form):
            raise _bad_request(
                "INVALID_BODY",
                {"body": f"must be {_KIND[self._body_form]} ({self._body_is}), got {_KIND[type(document)]}"},
            )
        try:
            json_format.ParseDict(document if self._body_key is None else {self._body_key: document}, message)
        except (json_format.ParseError, OverflowError) as error:  # OverflowError: json_format on 1e999 for an enum
            raise _bad_request(
                "INVALID_BODY", {"body": str(error)}, f"The body does not fit {self.message.full_name}: {error}"
            ) from error
        return document

    def _bind_query(self, message: Message, query: MultiMapping[str]) -> None:
        tree: dict = {}
        for name in set(query.keys()):
            path, leaf = self._query_field(name)
            values = query.getall(name)
            try:
                if leaf.is_repeated:
                    _nest(tree, path, [_json_value(leaf, v) for v in values])
                elif len(values) > 1:
                    raise ValueError("given more than once for a field that is not repeated")
                else:
                    _nest(tree, path, _json_value(leaf, values[0]))
            except ValueError as error:
                raise _bad_request("INVALID_QUERY_PARAMETER", {name: str(error)}) from error
        try:
            json_format.ParseDict(tree, message)
        except json_format.ParseError as error:
            raise _bad_request("INVALID_QUERY_PARAMETER", {"query": str(error)}) from error

    def _query_field(self, name: str) -> tuple[FieldPath, descriptor.FieldDescriptor]:
        cached = self._query_fields.get(name)
        if cached is not None:
            return cached
        if self.body == "*":
            raise _bad_request("UNKNOWN_QUERY_PARAMETER", {name: "this method takes its whole request from the body"})
        try:
            fields = resolve_field_path(self.message, name.split("."))
        except KeyError:
            raise _bad_request("UNKNOWN_QUERY_PARAMETER", {name: f"not a field of {self.message.full_name}"}) from None
        path = tuple(f.name for f in fields)
        leaf = fields[-1]
        if any(path[: len(bound)] == bound or bound[: len(path)] == path for bound in self._bound):
            raise _bad_request("UNKNOWN_QUERY_PARAMETER", {name: "this field is set by the path or the body"})
        if leaf.message_type is not None and leaf.message_type.full_name not in SCALAR_LIKE:
            raise _bad_request("UNKNOWN_QUERY_PARAMETER", {name: "names a message or map; give its fields instead"})
        self._query_fields[name] = (path, leaf)  # only valid names are cached, so the cache stays bounded
        return path, leaf
