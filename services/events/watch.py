"""The rules of a watch: what a request may ask for, and where its stream starts."""

from dataclasses import dataclass

from coupons.events.v1 import events_pb2
from kernel.errors import InvalidArgument
from kernel.event_feed import decode_feed_cursor, event_of, feed_cursor
from kernel.validation import is_uuid
from services.events.repository import WatchFilter

MAX_TYPES = 32
MAX_TYPE_LENGTH = 100


@dataclass(frozen=True)
class Position:
    txid: str
    seq: int

    def order(self) -> tuple[int, int]:
        return int(self.txid), self.seq


def cursor_of(txid: str, seq: int) -> str:
    return feed_cursor(txid, seq)  # the same opaque (txid, number) cursor as the owners' feeds


def stored_event(row) -> events_pb2.Event:
    """An events.events row (repository.event_columns) as the watch, a webhook and its delivery show it."""
    return event_of(row, row.source, row.source_id, cursor_of(row.txid_text, row.seq))


def position_of(token: str) -> Position | None:
    if not token:
        return None
    return Position(*decode_feed_cursor(token))


def check_event_types(types: list[str], field: str) -> None:
    """A list of event types a watch or a webhook endpoint asks for."""
    if len(types) > MAX_TYPES:
        raise InvalidArgument.field(field, f"must list at most {MAX_TYPES} types", reason="TOO_MANY_TYPES")
    for index, name in enumerate(types):
        if not name or len(name) > MAX_TYPE_LENGTH or not name.replace(".", "").replace("_", "").isalnum():
            raise InvalidArgument.field(
                f"{field}[{index}]", "must be an event type such as coupon.redeemed", reason="INVALID_EVENT_TYPE"
            )


def watch_filter(types: list[str], book_id: str) -> WatchFilter:
    check_event_types(types, "types")
    if book_id and not is_uuid(book_id):
        raise InvalidArgument.field("book_id", "must be a UUID", reason="INVALID_BOOK_ID")
    return WatchFilter(tuple(types), book_id)
