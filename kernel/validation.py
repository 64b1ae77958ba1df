"""Input checks every service shares: ids, enum numbers, text that PostgreSQL can store."""

import re

from kernel.errors import InvalidArgument

# Only the canonical form: PostgreSQL's uuid input accepts fewer spellings than Python's uuid.UUID.
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def is_uuid(value: object) -> bool:
    return isinstance(value, str) and bool(_UUID.match(value))


def has_control_characters(text: str) -> bool:
    """NUL cannot be stored in a PostgreSQL text column; the other control characters have no business in ours."""
    return bool(_CONTROL.search(text))


def enum_name(enum_type, value: int, field: str) -> str:
    """The name of a protobuf enum number; proto3 lets any number through, so unknown ones are refused here."""
    if value not in enum_type.values():
        allowed = ", ".join(name for name in enum_type.keys() if not name.endswith("_UNSPECIFIED"))
        raise InvalidArgument.field(field, f"must be one of {allowed}", reason="INVALID_ENUM_VALUE")
    return enum_type.Name(value)
