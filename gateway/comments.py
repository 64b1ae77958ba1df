"""The .proto comments, keyed by full name (`pkg.Message`, `pkg.Message.field`, `pkg.Service.Method`).

Reflection strips source info, so the comments come from a descriptor set built with
`--include_source_info` when one is present; files from reflection that do carry it are read too.
"""

import logging
from pathlib import Path

from google.protobuf import descriptor_pb2

log = logging.getLogger("gateway.comments")

# Field numbers in descriptor.proto that lead from a file to its named elements.
_FILE_MESSAGES, _FILE_ENUMS, _FILE_SERVICES = 4, 5, 6
_MESSAGE_FIELDS, _MESSAGE_NESTED, _MESSAGE_ENUMS = 2, 3, 4
_ENUM_VALUES, _SERVICE_METHODS = 2, 2


def _names_of_message(message, prefix: str, path: tuple, names: dict) -> None:
    full = f"{prefix}.{message.name}" if prefix else message.name
    names[path] = full
    for i, field in enumerate(message.field):
        names[path + (_MESSAGE_FIELDS, i)] = f"{full}.{field.name}"
    for i, nested in enumerate(message.nested_type):
        _names_of_message(nested, full, path + (_MESSAGE_NESTED, i), names)
    for i, enum in enumerate(message.enum_type):
        _names_of_enum(enum, full, path + (_MESSAGE_ENUMS, i), names)


def _names_of_enum(enum, prefix: str, path: tuple, names: dict) -> None:
    full = f"{prefix}.{enum.name}" if prefix else enum.name
    names[path] = full
    for i, value in enumerate(enum.value):
        names[path + (_ENUM_VALUES, i)] = f"{full}.{value.name}"


def comments_of(file: descriptor_pb2.FileDescriptorProto) -> dict[str, str]:
    names: dict[tuple, str] = {}
    for i, message in enumerate(file.message_type):
        _names_of_message(message, file.package, (_FILE_MESSAGES, i), names)
    for i, enum in enumerate(file.enum_type):
        _names_of_enum(enum, file.package, (_FILE_ENUMS, i), names)
    for i, service in enumerate(file.service):
        full = f"{file.package}.{service.name}" if file.package else service.name
        names[(_FILE_SERVICES, i)] = full
        for j, method in enumerate(service.method):
            names[(_FILE_SERVICES, i, _SERVICE_METHODS, j)] = f"{full}.{method.name}"
    comments = {}
    for location in file.source_code_info.location:
        name = names.get(tuple(location.path))
        text = (location.leading_comments or location.trailing_comments).strip()
        if name and text:
            comments[name] = "\n".join(line.strip() for line in text.splitlines())
    return comments


def load_descriptor_set(path: str) -> dict[str, str]:
    """Comments from a descriptor set file; empty (and a log line) when it is missing."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        log.info("no descriptor set; the OpenAPI document has no comments", extra={"fields": {"path": path}})
        return {}
    comments: dict[str, str] = {}
    for file in descriptor_pb2.FileDescriptorSet.FromString(data).file:
        comments.update(comments_of(file))
    return comments
