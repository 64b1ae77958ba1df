"""Idempotent mutations (AIP-155): a request_id is claimed inside the mutation's own transaction.

The first call stores its answer beside its changes, atomically; a retry with the same id gets that
answer back and changes nothing; the same id with different arguments is refused. Ids are kept for
a day (RETENTION), after which the same id counts as a new request and the key is purged in the
background (kernel/purge.py). A concurrent retry
waits on the unique key until the first transaction ends. Each schema has its own table (see
`create_table`), so services stay independent.
"""

import hashlib
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from kernel.errors import InvalidArgument


def fingerprint(*parts: bytes | str) -> bytes:
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.digest()


def create_table(schema: str) -> None:
    """For a service's first migration."""
    from alembic import op

    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.Text, primary_key=True),
        sa.Column("request_id", sa.Text, primary_key=True),
        sa.Column("request_hash", sa.LargeBinary, nullable=False),
        sa.Column("response", sa.LargeBinary),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        schema=schema,
    )


AGE_INDEX = "idempotency_keys_created_at"


def create_age_index(schema: str) -> None:
    """For a service's migration: the retention purge (kernel/purge.py) finds old keys by this index."""
    from alembic import op

    op.create_index(AGE_INDEX, "idempotency_keys", ["created_at"], schema=schema)


def drop_age_index(schema: str) -> None:
    from alembic import op

    op.drop_index(AGE_INDEX, table_name="idempotency_keys", schema=schema)


T = TypeVar("T")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
RETENTION = "1 day"  # a request_id older than this is a new request again


def check_request_id(request_id: str) -> None:
    if not REQUEST_ID.match(request_id):
        raise InvalidArgument.field(
            "request_id",
            "must be 1 to 128 letters, digits, '.', '_', ':' or '-' (a UUID is a good choice)",
            reason="INVALID_REQUEST_ID",
        )


def request_id_reused() -> InvalidArgument:
    return InvalidArgument.field(
        "request_id", "was already used for a request with different arguments", reason="REQUEST_ID_REUSED"
    )


def request_hash(parts: tuple) -> bytes:
    """The fingerprint of a request's arguments: the same request_id with other arguments is refused."""
    return fingerprint(*(p if isinstance(p, (bytes, str)) else str(p) for p in parts))


class IdempotencyStore:
    def __init__(self, schema: str):
        self._claim = sa.text(
            f"INSERT INTO {schema}.idempotency_keys AS k (scope, request_id, request_hash) "
            "VALUES (:scope, :request_id, :request_hash) ON CONFLICT (scope, request_id) DO UPDATE "
            "SET request_hash = EXCLUDED.request_hash, response = NULL, created_at = now() "
            f"WHERE k.created_at < now() - interval '{RETENTION}' RETURNING 1"
        )
        self._read = sa.text(
            f"SELECT request_hash, response FROM {schema}.idempotency_keys "
            "WHERE scope = :scope AND request_id = :request_id"
        )
        self._record = sa.text(
            f"UPDATE {schema}.idempotency_keys SET response = :response "
            "WHERE scope = :scope AND request_id = :request_id"
        )

    async def claim(self, conn: AsyncConnection, scope: str, request_id: str, request_hash: bytes) -> bytes | None:
        """Claims the id; returns the stored answer when this same request was already answered."""
        check_request_id(request_id)
        key = {"scope": scope, "request_id": request_id}
        if (await conn.execute(self._claim, {**key, "request_hash": request_hash})).first():
            return None
        stored = (await conn.execute(self._read, key)).one()
        if stored.request_hash != request_hash:
            raise request_id_reused()
        return stored.response

    async def record(self, conn: AsyncConnection, scope: str, request_id: str, response: bytes) -> None:
        await conn.execute(self._record, {"scope": scope, "request_id": request_id, "response": response})

    async def once(
        self,
        conn: AsyncConnection,
        scope: str,
        request_id: str,
        parts: tuple,
        run: Callable[[], Awaitable[T]],
        encode: Callable[[T], bytes],
        replay: Callable[[bytes], Awaitable[T]],
    ) -> T:
        """run() once per (scope, request_id) inside the caller's transaction; a retry gets replay(first answer).

        parts are the request's arguments: the same id with other parts is refused. Without a request_id
        run() simply runs.
        """
        if not request_id:
            return await run()
        stored = await self.claim(conn, scope, request_id, request_hash(parts))
        if stored is not None:
            return await replay(stored)
        answer = await run()
        await self.record(conn, scope, request_id, encode(answer))
        return answer
