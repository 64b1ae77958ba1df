"""Code generation: secure random codes from a book's pattern, stored in the ledger batch by batch.

Batches of ADD_CODES_BATCH codes, GENERATION_CONCURRENCY at a time; codes that already exist are
replaced. With a request_id the progress is recorded after every batch under a lease, so a retry after
an interruption generates only what is missing and a retry while the first call runs is refused.
"""

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from kernel.errors import Aborted, FailedPrecondition, InvalidArgument, Unavailable
from kernel.idempotency import fingerprint
from services.books import codes
from services.books.domain import BooksDomain, check_book_id, pattern_of, require_active
from services.books.ledger_client import ADD_CODES_BATCH, LedgerClient
from services.books.repository import BooksRepository

MAX_GENERATE = 5_000_000
# Rounds of replacing generated codes that already exist; below MAX_FILL_PERCENT each round keeps at
# most a quarter of the codes, so twenty rounds only run out when the space is fuller than books knows.
MAX_REPLACEMENT_ROUNDS = 20
# Batches stored at once: the ledger's inserts dominate the time, and concurrent ones use more database
# cores (1,000,000 codes: 23 s one at a time, 13.5 s four at a time on a 2-core test machine).
GENERATION_CONCURRENCY = 4
# A running generation renews its lease after every batch (about a second); a dead one's lapses.
GENERATION_LEASE_SECONDS = 60


@dataclass(frozen=True)
class GenerationProgress:
    generated: int
    requested: int
    done: bool
    code_space: int


class CodeGeneration:
    def __init__(self, books: BooksDomain, repository: BooksRepository, ledger: LedgerClient):
        self.books = books
        self.repo = repository
        self.ledger = ledger

    async def generate_codes(self, book_id: str, count: int, request_id: str = "") -> AsyncIterator[GenerationProgress]:
        """Generates `count` new codes in batches, yielding the progress after each batch.

        With a request_id the progress is recorded after every batch: a retry with the same id after an
        interruption generates only the codes still missing, and after completion changes nothing.
        """
        check_book_id(book_id, "book_id")
        if not 1 <= count <= MAX_GENERATE:
            raise InvalidArgument.field(
                "count", f"must be between 1 and {MAX_GENERATE:,}, got {count:,}", reason="INVALID_COUNT"
            )
        async with self.repo.transaction() as conn:
            book = await self.books.book(conn, book_id)
            require_active(book)
            pattern = pattern_of(book)
            generated = await self._claim_generation(conn, book_id, count, request_id)
            if generated < count:
                used = await self.repo.codes_in_space(conn, book.code_pattern, book.code_length, book.code_alphabet)
                codes.check_capacity(pattern, used, count - generated)
        if generated >= count:
            yield GenerationProgress(generated, count, True, pattern.space)
            return
        sizes = [min(ADD_CODES_BATCH, count - start) for start in range(generated, count, ADD_CODES_BATCH)]
        async with contextlib.aclosing(self._stored_batches(book_id, codes.CodeGenerator(pattern), sizes)) as batches:
            async for progress in self._record_batches(book_id, pattern, count, generated, request_id, batches):
                yield progress

    async def _record_batches(
        self,
        book_id: str,
        pattern: codes.CodePattern,
        count: int,
        generated: int,
        request_id: str,
        batches: AsyncIterator[tuple[int, bool]],
    ) -> AsyncIterator[GenerationProgress]:
        """Counts each stored batch in the book (and the request's progress) and reports the progress."""
        try:
            async for progress in self._count_batches(book_id, pattern, count, generated, request_id, batches):
                generated = progress.generated
                yield progress
        finally:
            if request_id and generated < count:  # stopped early: release the lease so a retry may continue
                with contextlib.suppress(Exception):
                    async with self.repo.transaction() as conn:
                        await self._record_progress(conn, request_id, generated, running=False)

    async def _count_batches(
        self,
        book_id: str,
        pattern: codes.CodePattern,
        count: int,
        generated: int,
        request_id: str,
        batches: AsyncIterator[tuple[int, bool]],
    ) -> AsyncIterator[GenerationProgress]:
        while generated < count:
            try:
                inserted, complete = await anext(batches)
            except Unavailable as error:
                raise Unavailable(
                    f"{error.message} {generated:,} of {count:,} codes were generated and stored "
                    "before that; retry with the same request_id to generate only the rest.",
                    reason=error.reason,
                    metadata={**error.metadata, "generated": generated},
                ) from error
            generated += inserted
            async with self.repo.transaction() as conn:
                await self.repo.add_code_count(conn, book_id, inserted)
                if request_id:
                    await self._record_progress(conn, request_id, generated, running=generated < count)
            # Yielded first, so the caller's count includes this batch even when the space is crowded.
            yield GenerationProgress(generated, count, generated >= count, pattern.space)
            if not complete:
                raise FailedPrecondition(
                    f"Only {generated:,} of {count:,} codes were generated and stored: new random codes of pattern "
                    f"{pattern.text} keep colliding with existing codes (other books or uploads use the same space).",
                    reason="CODE_SPACE_CROWDED",
                    metadata={"generated": generated, "requested": count},
                )

    async def _claim_generation(self, conn, book_id: str, count: int, request_id: str) -> int:
        """How many codes this request already generated (0 for a new request); takes the request's lease.

        A retry while the first call still runs (its lease is fresh) is refused, so the two cannot both
        generate the rest; a retry after the first call died finds the lease expired and continues.
        """
        if not request_id:
            return 0
        stored = await self.repo.idempotency.claim(conn, "GenerateCodes", request_id, fingerprint(book_id, str(count)))
        progress = json.loads(stored) if stored is not None else {"generated": 0}
        if progress.get("lease_until", 0) > time.time() and progress["generated"] < count:
            raise Aborted(
                f"A generation with request_id {request_id} is still running; retry once it stops.",
                reason="GENERATION_IN_PROGRESS",
                metadata={"generated": progress["generated"]},
            )
        # Recorded in the claiming transaction, so a retry always finds a progress record.
        await self._record_progress(conn, request_id, progress["generated"], running=progress["generated"] < count)
        return progress["generated"]

    async def _record_progress(self, conn, request_id: str, generated: int, running: bool) -> None:
        lease_until = time.time() + GENERATION_LEASE_SECONDS if running else 0
        await self.repo.idempotency.record(
            conn, "GenerateCodes", request_id, json.dumps({"generated": generated, "lease_until": lease_until}).encode()
        )

    async def _stored_batches(
        self, book_id: str, generator: codes.CodeGenerator, sizes: list[int]
    ) -> AsyncGenerator[tuple[int, bool], None]:
        """Stores batches of the given sizes, GENERATION_CONCURRENCY at a time; yields each one's result
        as it finishes. Concurrent batches may draw the same code: the ledger keeps one, the other is replaced.

        After a failure no batch starts, but those running finish and are yielded before the failure is
        raised, so every stored code is counted.
        """
        waiting = iter(sizes)
        running: set[asyncio.Task] = set()
        failure: BaseException | None = None
        try:
            while True:
                if failure is None:
                    running.update(
                        asyncio.create_task(self._generate_batch(book_id, generator, size))
                        for size in itertools.islice(waiting, GENERATION_CONCURRENCY - len(running))
                    )
                if not running:
                    break
                finished, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    if task.exception() is None:
                        yield task.result()
                    else:
                        failure = failure or task.exception()
            if failure is not None:
                raise failure
        finally:
            for task in running:  # the caller went away
                task.cancel()

    async def _generate_batch(self, book_id: str, generator: codes.CodeGenerator, size: int) -> tuple[int, bool]:
        """Stores `size` new codes, replacing those that already exist; returns (stored, all stored)."""
        pending = generator.unique_codes(size)
        stored = 0
        for _ in range(MAX_REPLACEMENT_ROUNDS):
            added = await self.ledger.add_codes(book_id, pending)
            stored += added.inserted
            if not added.existing:
                return stored, True
            pending = generator.unique_codes(len(added.existing))
        return stored, False
