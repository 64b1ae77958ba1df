"""AIP-158 pagination: page_size bounds and opaque page tokens (a keyset cursor, base64 JSON)."""

import base64
import json

from kernel.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def page_size(value: int, field: str = "page_size") -> int:
    if value < 0:
        raise InvalidArgument.field(field, "must not be negative", reason="INVALID_PAGE_SIZE")
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(cursor: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(cursor, separators=(",", ":")).encode()).decode()


def decode_token(token: str, field: str = "page_token") -> dict | None:
    if not token:
        return None
    try:
        cursor = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, UnicodeDecodeError):
        cursor = None
    if not isinstance(cursor, dict):
        raise InvalidArgument.field(field, "is not a token from a previous page of this list",
                                    reason="INVALID_PAGE_TOKEN")
    return cursor
