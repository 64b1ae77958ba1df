"""AIP-158 pagination: page_size bounds and opaque page tokens (a keyset cursor, base64 JSON)."""

import base64
import datetime as dt
import json
from collections.abc import Callable
from typing import TypeVar

from kernel.errors import InvalidArgument
from kernel.validation import is_uuid

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
# A counted list's page tokens carry its total_size under this key (an int32 in the responses).
TOTAL_KEY = "n"
MAX_TOTAL = 2**31 - 1

_Item = TypeVar("_Item")


def page_size(value: int, field: str = "page_size") -> int:
    if value < 0:
        raise InvalidArgument.field(field, "must not be negative", reason="INVALID_PAGE_SIZE")
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(cursor: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(cursor, separators=(",", ":")).encode()).decode()


def _foreign_token(field: str) -> InvalidArgument:
    return InvalidArgument.field(field, "is not a token from a previous page of this list", reason="INVALID_PAGE_TOKEN")


def decode_token(token: str, field: str = "page_token") -> dict | None:
    if not token:
        return None
    try:
        cursor = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, UnicodeDecodeError):
        cursor = None
    if not isinstance(cursor, dict):
        raise _foreign_token(field)
    return cursor


def decode_cursor(token: str, keys: dict[str, type], field: str = "page_token") -> dict | None:
    """The keyset cursor of a token, its keys exactly `keys` and of their types; None for the first page."""
    cursor = decode_token(token, field)
    if cursor is None:
        return None
    if set(cursor) != set(keys) or not all(type(cursor[key]) is kind for key, kind in keys.items()):
        raise _foreign_token(field)
    return {key: cursor[key] for key in keys}


def decode_counted_cursor(
    token: str, keys: dict[str, type], field: str = "page_token"
) -> tuple[dict | None, int | None]:
    """decode_cursor of a list whose tokens carry the total counted with its first page: (position, total),
    (None, None) for the first page. A total no count can be is a foreign token, not an INTERNAL later."""
    cursor = decode_cursor(token, {**keys, TOTAL_KEY: int}, field)
    if cursor is None:
        return None, None
    total = cursor.pop(TOTAL_KEY)
    if not 0 <= total <= MAX_TOTAL:
        raise _foreign_token(field)
    return cursor, total


def decode_time_id(token: str, field: str = "page_token") -> tuple[dt.datetime, str] | None:
    """The (creation time, id) cursor of lists ordered by creation; None for the first page."""
    cursor = decode_cursor(token, {"t": str, "id": str}, field)
    if cursor is None:
        return None
    try:
        created = dt.datetime.fromisoformat(cursor["t"])
    except ValueError:
        raise _foreign_token(field) from None
    if not is_uuid(cursor["id"]):
        raise _foreign_token(field)
    return created, cursor["id"]


def time_id(created: dt.datetime, item_id: str) -> dict:
    return {"t": created.isoformat(), "id": item_id}


def next_page(items: list[_Item], size: int, cursor_of: Callable[[_Item], dict]) -> tuple[list[_Item], str]:
    """The page and the token of the next one; items holds up to size + 1 rows (one to look ahead)."""
    if len(items) <= size:
        return items, ""
    items = items[:size]
    return items, encode_token(cursor_of(items[-1]))


def next_counted_page(
    items: list[_Item], size: int, cursor_of: Callable[[_Item], dict], total: int
) -> tuple[list[_Item], str]:
    """next_page whose token carries `total` on, so later pages report it without counting again."""
    return next_page(items, size, lambda item: {**cursor_of(item), TOTAL_KEY: total})


def next_page_by_creation(items: list[_Item], size: int) -> tuple[list[_Item], str]:
    """next_page of a list ordered by (created_at, id), the order of most lists."""
    return next_page(items, size, lambda item: time_id(item.created_at, item.id))  # type: ignore[attr-defined]
