"""datetime <-> google.protobuf.Timestamp, for every servicer and client."""

import datetime as dt

from google.protobuf import timestamp_pb2

from kernel.errors import InvalidArgument


def to_timestamp(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    """None stays None, so an unset field stays unset in the message."""
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def from_timestamp(message, field: str) -> dt.datetime | None:
    """The field as an aware UTC datetime, or None when the message does not set it."""
    if not message.HasField(field):
        return None
    try:
        return getattr(message, field).ToDatetime(tzinfo=dt.UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument.field(
            field, "must be a time between the years 0001 and 9999", reason="INVALID_TIMESTAMP"
        ) from None
