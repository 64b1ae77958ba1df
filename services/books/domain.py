"""The rules of coupon books, in plain Python over the repository and the ledger (the redemption service).

Rules reach the ledger inside the change's own transaction. Create, update and archive write the book
with a new rules version (from a sequence, so never reused), push the rules with PutBookRules while the
row is still locked, and commit only when the push succeeded. When the ledger does not answer, the
transaction rolls back and the caller gets UNAVAILABLE (reason LEDGER_UNAVAILABLE) saying nothing was
changed, so a plain retry converges. The one gap left is a commit failing after a successful push: the
ledger then holds rules books does not; the retry pushes them again under a higher version, which
replaces them. A request_id is released by the rollback too, so a retry with the same id does the work.

Code generation (generation.py) and upload store codes batch by batch (a million codes cannot be one ledger call); what
was stored is always reported: progress messages during generation, per-code answers for uploads, and
the count of stored codes in the message of any error that interrupts either.
"""

import dataclasses
import datetime as dt
import decimal
import hashlib
import json
import re
from collections.abc import AsyncIterable
from dataclasses import dataclass

from kernel import money, paging
from kernel.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound, Unavailable
from kernel.validation import is_uuid
from services.books import codes
from services.books.ledger_client import ADD_CODES_BATCH, BookCounts, LedgerClient
from services.books.repository import BookRow, BooksRepository

ACTIVE, ARCHIVED = "ACTIVE", "ARCHIVED"
MAX_NAME_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 2000
DEFAULT_LOCK_TTL_SECONDS = 300
MIN_LOCK_TTL_SECONDS, MAX_LOCK_TTL_SECONDS = 1, 3600
# A multi-redemption book without a stated limit: the smallest limit that still allows a second
# redemption. A leaked code of such a book is worth little; larger allowances must be stated.
DEFAULT_MULTI_REDEMPTIONS = 2
DEFAULT_ROLLBACK_WINDOW_SECONDS, MAX_ROLLBACK_WINDOW_SECONDS = 7 * 24 * 3600, 90 * 24 * 3600
PERCENTAGE, FIXED_AMOUNT = "PERCENTAGE", "FIXED_AMOUNT"
DISCOUNT_TYPES = ("", PERCENTAGE, FIXED_AMOUNT)
PERCENT = re.compile(r"^\d{1,3}(\.\d{1,2})?$")


@dataclass(frozen=True)
class BookSettings:
    """What an admin configures; zero values mean the defaults (see `validated`)."""

    name: str = ""
    description: str = ""
    code_pattern: str = ""
    code_length: int = 0
    code_alphabet: str = ""
    allow_multi_redemption: bool = False
    max_redemptions_per_user: int = 0
    max_assignments_per_user: int = 0
    lock_ttl_seconds: int = 0
    valid_from: dt.datetime | None = None
    valid_until: dt.datetime | None = None
    allow_self_claim: bool = False
    shared: bool = False  # the book's kind, fixed at creation: codes without a holder
    max_redemptions_total: int = 0  # a shared book: each code's global cap
    # What a code gives: "" (nothing), PERCENTAGE (percent_off) or FIXED_AMOUNT (amount_off), amounts as
    # decimal text in currency ("" for none)
    discount_type: str = ""
    percent_off: str = ""
    amount_off: str = ""
    max_discount: str = ""
    min_order_amount: str = ""
    currency: str = ""
    rollback_window_seconds: int = 0  # how long a redemption may be rolled back; 0: 7 days


MUTABLE_FIELDS = tuple(f.name for f in dataclasses.fields(BookSettings))
OUTPUT_ONLY_FIELDS = ("id", "status", "code_count", "create_time", "update_time")
CODE_SHAPE_FIELDS = ("code_pattern", "code_length", "code_alphabet")


@dataclass(frozen=True)
class UploadReport:
    received: int
    accepted: int
    rejected: list[codes.RejectedCode]

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "received": self.received,
                "accepted": self.accepted,
                "rejected": [dataclasses.astuple(r) for r in self.rejected],
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "UploadReport":
        stored = json.loads(data)
        return cls(stored["received"], stored["accepted"], [codes.RejectedCode(*r) for r in stored["rejected"]])


def validated(settings: BookSettings) -> BookSettings:
    """The settings with defaults in place of zero values; INVALID_BOOK naming every wrong field otherwise."""
    multi = settings.allow_multi_redemption
    book = dataclasses.replace(
        settings,
        name=settings.name.strip(),
        code_pattern=settings.code_pattern or codes.DEFAULT_PATTERN,
        code_length=settings.code_length or codes.DEFAULT_LENGTH,
        code_alphabet=settings.code_alphabet or codes.DEFAULT_ALPHABET,
        lock_ttl_seconds=settings.lock_ttl_seconds or DEFAULT_LOCK_TTL_SECONDS,
        rollback_window_seconds=settings.rollback_window_seconds or DEFAULT_ROLLBACK_WINDOW_SECONDS,
        max_redemptions_per_user=settings.max_redemptions_per_user or (DEFAULT_MULTI_REDEMPTIONS if multi else 1),
    )
    violations: list[FieldViolation] = []
    if not book.name:
        violations.append(FieldViolation("name", "is required"))
    elif len(book.name) > MAX_NAME_LENGTH:
        violations.append(FieldViolation("name", f"must be at most {MAX_NAME_LENGTH} characters"))
    if len(book.description) > MAX_DESCRIPTION_LENGTH:
        violations.append(FieldViolation("description", f"must be at most {MAX_DESCRIPTION_LENGTH} characters"))
    violations += codes.pattern_violations(book.code_pattern)
    violations += codes.length_violations(book.code_length)
    violations += codes.alphabet_violations(book.code_alphabet)
    if not MIN_LOCK_TTL_SECONDS <= book.lock_ttl_seconds <= MAX_LOCK_TTL_SECONDS:
        violations.append(
            FieldViolation(
                "lock_ttl_seconds",
                f"must be between {MIN_LOCK_TTL_SECONDS} and {MAX_LOCK_TTL_SECONDS} "
                f"(0 means {DEFAULT_LOCK_TTL_SECONDS}), got {book.lock_ttl_seconds}",
            )
        )
    if book.max_redemptions_per_user < 1:
        violations.append(
            FieldViolation(
                "max_redemptions_per_user",
                f"must be at least 1 (0 means 1, or {DEFAULT_MULTI_REDEMPTIONS} for a "
                f"multi-redemption book), got {book.max_redemptions_per_user}",
            )
        )
    elif book.max_redemptions_per_user > 1 and not multi:
        violations.append(
            FieldViolation("max_redemptions_per_user", "may be above 1 only when allow_multi_redemption is true")
        )
    if book.max_assignments_per_user < 0:
        violations.append(FieldViolation("max_assignments_per_user", "must not be negative (0 means no limit)"))
    if book.shared:
        if book.max_redemptions_total < 1:
            violations.append(
                FieldViolation("max_redemptions_total", "must be at least 1: a shared code states its global cap")
            )
        if book.allow_self_claim:
            violations.append(FieldViolation("allow_self_claim", "must be off for a shared book (no holders)"))
    elif book.max_redemptions_total:
        violations.append(FieldViolation("max_redemptions_total", "may be set only for a shared book"))
    violations += _discount_violations(book)
    if not 1 <= book.rollback_window_seconds <= MAX_ROLLBACK_WINDOW_SECONDS:
        violations.append(
            FieldViolation(
                "rollback_window_seconds",
                f"must be between 1 and {MAX_ROLLBACK_WINDOW_SECONDS} (0 means {DEFAULT_ROLLBACK_WINDOW_SECONDS})",
            )
        )
    if book.valid_from and book.valid_until and book.valid_from >= book.valid_until:
        violations.append(FieldViolation("valid_until", "must be later than valid_from"))
    if violations:
        raise InvalidArgument(violations, reason="INVALID_BOOK")
    return book


def _discount_violations(book: BookSettings) -> list[FieldViolation]:
    """A discount names its kind's one value; every amount needs a known currency and fits its minor unit."""
    amounts = {
        name: getattr(book, name) for name in ("amount_off", "max_discount", "min_order_amount") if getattr(book, name)
    }
    violations: list[FieldViolation] = []
    if book.discount_type not in DISCOUNT_TYPES:
        return [FieldViolation("discount_type", "must be PERCENTAGE or FIXED_AMOUNT")]
    if book.discount_type == PERCENTAGE:
        if not PERCENT.match(book.percent_off) or not 0 < decimal.Decimal(book.percent_off) <= 100:
            violations.append(FieldViolation("percent_off", 'must be more than 0 and at most 100, e.g. "10" or "12.5"'))
        if "amount_off" in amounts:
            violations.append(FieldViolation("amount_off", "is for a FIXED_AMOUNT discount"))
    elif book.percent_off:
        violations.append(FieldViolation("percent_off", "is for a PERCENTAGE discount"))
    if book.discount_type == FIXED_AMOUNT and "amount_off" not in amounts:
        violations.append(FieldViolation("amount_off", "is required for a FIXED_AMOUNT discount"))
    if not book.discount_type and amounts:
        violations.append(FieldViolation(next(iter(amounts)), "needs a discount_type"))
    if book.discount_type or book.currency:
        if problem := money.currency_violation(book.currency, "currency"):
            return [*violations, problem]
        for name, text in amounts.items():
            if problem := money.amount_violation(text, book.currency, name):
                violations.append(problem)
            elif name == "amount_off" and decimal.Decimal(text) == 0:
                violations.append(FieldViolation(name, "must be more than 0"))
    return violations


def settings_of(book: BookRow) -> BookSettings:
    return BookSettings(**{name: getattr(book, name) for name in MUTABLE_FIELDS})


def pattern_of(book: BookRow) -> codes.CodePattern:
    return codes.parse_pattern(book.code_pattern, book.code_length, book.code_alphabet)


def _settings_key(settings: BookSettings, names=MUTABLE_FIELDS) -> str:
    return repr([(name, getattr(settings, name)) for name in names])


def check_book_id(book_id: str, field: str = "id") -> None:
    if not book_id:
        raise InvalidArgument.field(field, "is required")
    if not is_uuid(book_id):
        raise InvalidArgument.field(field, "must be a book id (a UUID)", reason="INVALID_BOOK_ID")


def _check_update_mask(paths: list[str]) -> None:
    violations = []
    for path in paths:
        if path in OUTPUT_ONLY_FIELDS:
            violations.append(FieldViolation("update_mask", f"names {path}, which is output only"))
        elif path not in MUTABLE_FIELDS:
            violations.append(FieldViolation("update_mask", f"names {path}, which is not a field of Book"))
    if violations:
        raise InvalidArgument(violations, reason="INVALID_UPDATE_MASK")


def require_active(book: BookRow) -> None:
    if book.status == ARCHIVED:
        raise FailedPrecondition(
            f"Book {book.name!r} is archived; an archived book cannot be changed.",
            reason="BOOK_ARCHIVED",
            metadata={"book_id": book.id},
        )


class _RequestDigest:
    """The fingerprint of a streamed request, built as it arrives (same encoding as kernel fingerprint)."""

    def __init__(self, *parts: str):
        self._hash = hashlib.sha256()
        for part in parts:
            self.add(part)

    def add(self, part: str) -> None:
        data = part.encode()
        self._hash.update(len(data).to_bytes(8, "big") + data)

    def digest(self) -> bytes:
        return self._hash.digest()


class BooksDomain:
    def __init__(self, repository: BooksRepository, ledger: LedgerClient):
        self.repo = repository
        self.ledger = ledger

    async def book(self, conn, book_id: str, *, for_update: bool = False) -> BookRow:
        """The book, or NOT_FOUND."""
        book = await self.repo.book(conn, book_id, for_update=for_update)
        if book is None:
            raise NotFound("book", book_id, reason="BOOK_NOT_FOUND")
        return book

    async def _idempotent_book(self, conn, scope: str, request_id: str, parts: tuple, make) -> BookRow:
        """Runs make(conn) once per request_id; a retry returns the same book as it is now."""
        return await self.repo.idempotency.once(
            conn,
            scope,
            request_id,
            parts,
            lambda: make(conn),
            lambda book: book.id.encode(),
            lambda stored: self.book(conn, stored.decode()),
        )

    async def _published(self, conn, book: BookRow, event_type: str) -> BookRow:
        """Records the change in the outbox and pushes the book's rules to the ledger; called inside the
        transaction that wrote them."""
        await self.repo.record_change(conn, event_type, book)
        await self.ledger.put_rules(book)
        return book

    # books

    async def create_book(self, settings: BookSettings, request_id: str = "") -> BookRow:
        book = validated(settings)

        async def insert(conn) -> BookRow:
            return await self._published(
                conn, await self.repo.insert_book(conn, **dataclasses.asdict(book)), "book.created"
            )

        async with self.repo.transaction() as conn:
            return await self._idempotent_book(conn, "CreateBook", request_id, (_settings_key(book),), insert)

    async def get_book(self, book_id: str) -> BookRow:
        check_book_id(book_id)
        async with self.repo.transaction() as conn:
            return await self.book(conn, book_id)

    async def list_books(
        self, page_size: int, page_token: str, status: str, name_contains: str
    ) -> tuple[list[BookRow], str, int]:
        size = paging.page_size(page_size)
        before = paging.decode_time_id(page_token)
        async with self.repo.transaction() as conn:
            books, total = await self.repo.list_books(conn, size + 1, before, status, name_contains.strip())
        books, next_token = paging.next_page_by_creation(books, size)
        return books, next_token, total

    async def update_book(
        self, book_id: str, proposed: BookSettings, paths: list[str], request_id: str = ""
    ) -> BookRow:
        """Changes the fields named in paths to their values in proposed (zero values mean the defaults)."""
        check_book_id(book_id, "book.id")
        _check_update_mask(paths)

        async def apply(conn) -> BookRow:
            book = await self.book(conn, book_id, for_update=True)
            require_active(book)
            current = settings_of(book)
            changed = validated(dataclasses.replace(current, **{path: getattr(proposed, path) for path in paths}))
            if changed.shared != current.shared:
                raise FailedPrecondition(
                    f"Book {book.name!r} is {'shared' if current.shared else 'personal'}: a book's kind is fixed "
                    "when it is created; create another book.",
                    reason="BOOK_KIND_FIXED",
                    metadata={"book_id": book.id},
                )
            if book.code_count and any(getattr(changed, f) != getattr(current, f) for f in CODE_SHAPE_FIELDS):
                raise FailedPrecondition(
                    f"Book {book.name!r} already has {book.code_count:,} codes; its code pattern, length and "
                    "alphabet can no longer change.",
                    reason="BOOK_HAS_CODES",
                    metadata={"book_id": book.id, "code_count": book.code_count},
                )
            changes = dataclasses.asdict(changed)
            return await self._published(conn, await self.repo.update_book(conn, book_id, **changes), "book.updated")

        async with self.repo.transaction() as conn:
            return await self._idempotent_book(
                conn, f"UpdateBook:{book_id}", request_id, (_settings_key(proposed, sorted(set(paths))),), apply
            )

    async def archive_book(self, book_id: str, request_id: str = "") -> BookRow:
        """Archives the book; archiving an archived book pushes its rules again and changes nothing else."""
        check_book_id(book_id)

        async def archive(conn) -> BookRow:
            await self.book(conn, book_id, for_update=True)
            archived = await self.repo.update_book(conn, book_id, status=ARCHIVED)
            return await self._published(conn, archived, "book.archived")

        async with self.repo.transaction() as conn:
            return await self._idempotent_book(conn, "ArchiveBook", request_id, (book_id,), archive)

    async def book_stats(self, book_id: str) -> BookCounts:
        await self.get_book(book_id)
        return await self.ledger.book_counts(book_id)

    # upload

    async def upload_codes(self, book_id: str, request_id: str, chunks: AsyncIterable[list[str]]) -> UploadReport:
        """Stores the valid codes of an upload and reports every refused one with its index and reason.

        Codes are normalized first (see codes.normalize). A request_id is claimed once the whole upload is
        read (its fingerprint covers every code); a retry of a finished upload reads the upload again, only
        to compare it, and returns the first answer.
        """
        check_book_id(book_id, "book_id")
        async with self.repo.transaction() as conn:
            require_active(await self.book(conn, book_id))
            stored = await self.repo.stored_answer(conn, "UploadCodes", request_id) if request_id else None
        digest = _RequestDigest(book_id)
        screen = codes.UploadScreen()
        rejected: list[codes.RejectedCode] = []
        pending: list[tuple[int, str]] = []
        received = accepted = 0
        async for chunk in chunks:
            for raw in chunk:
                digest.add(raw)
                received += 1
                if stored is not None:
                    continue  # a retry: the upload is only read to compare it with the first
                code, rejection = screen.check(received - 1, raw)
                if rejection is not None:
                    rejected.append(rejection)
                    continue
                pending.append((received - 1, code))
                if len(pending) == ADD_CODES_BATCH:
                    accepted += await self._store_uploaded(book_id, pending, rejected, accepted)
                    pending = []
        if pending:
            accepted += await self._store_uploaded(book_id, pending, rejected, accepted)
        report = UploadReport(received, accepted, sorted(rejected, key=lambda r: r.index))
        async with self.repo.transaction() as conn:
            if request_id:
                first = await self.repo.idempotency.claim(conn, "UploadCodes", request_id, digest.digest())
                if first is not None:
                    return UploadReport.from_json(first)
                await self.repo.idempotency.record(conn, "UploadCodes", request_id, report.to_json())
        return report

    async def _store_uploaded(
        self, book_id: str, pending: list[tuple[int, str]], rejected: list[codes.RejectedCode], accepted_before: int
    ) -> int:
        """Adds one batch of valid codes to the ledger; existing ones join `rejected`. Returns how many were stored."""
        try:
            added = await self.ledger.add_codes(book_id, [code for _, code in pending])
        except Unavailable as error:
            raise Unavailable(
                f"{error.message} Codes before index {pending[0][0]:,} of the upload were handled ({accepted_before:,} "
                "stored); the rest were not. Sending the same upload again is safe: codes stored before are then "
                "reported as ALREADY_EXISTS.",
                reason=error.reason,
                metadata={**error.metadata, "handled_before_index": pending[0][0], "stored": accepted_before},
            ) from error
        existing = set(added.existing)
        rejected.extend(codes.already_exists(index, code) for index, code in pending if code in existing)
        async with self.repo.transaction() as conn:
            await self.repo.add_code_count(conn, book_id, added.inserted)
        return added.inserted
