"""The rules of accounts and sessions, in plain Python over the repository."""

import datetime as dt
import hashlib
import hmac
import ipaddress
import re
import secrets
import uuid
from dataclasses import dataclass

from kernel import paging
from kernel.context import ADMIN, USER, Principal, client_address
from kernel.errors import (
    AlreadyExists,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)
from kernel.tokens import TokenIssuer
from kernel.validation import is_uuid
from services.auth.passwords import PasswordHasher
from services.auth.passwords import violations as password_violations
from services.auth.repository import AuthRepository, RevocationRow, UserExists, UserRow

EMAIL = re.compile(r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s.\x00-\x1f\x7f]+$")
MAX_EMAIL_LENGTH = 254
MAX_NAME_LENGTH = 200
MAX_BATCH = 1000
MAX_PASSWORD_INPUT = 1024  # what a sign-in accepts to check (bcrypt reads 72 bytes); new ones: passwords.py
MAX_REFRESH_TOKEN_LENGTH = 256
ROLES = (USER, ADMIN)


@dataclass(frozen=True)
class Session:
    access_token: str
    expires_in: int
    refresh_token: str
    user: UserRow


@dataclass(frozen=True)
class LookupResult:
    query: str
    user: UserRow | None
    error_reason: str


def _email_violations(email: str, field: str = "email") -> list[FieldViolation]:
    if not email:
        return [FieldViolation(field, "is required")]
    if len(email) > MAX_EMAIL_LENGTH or not EMAIL.match(email):
        return [FieldViolation(field, "must be an email address like name@example.com")]
    return []


def _email_key(email: str) -> str:
    """A sign-in counter's key names its kind, so no email typed at Login can reach a client's counter."""
    return f"email:{email.strip().lower()}"


def _client_key(address: str) -> str:
    """ "" when unknown; an IPv6 client is counted per /64, the block one subscriber is usually given."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return ""
    ip = getattr(ip, "ipv4_mapped", None) or ip
    return f"client:{ipaddress.ip_network((ip, 64), strict=False) if ip.version == 6 else ip}"


def _bounded(field: str, value: str, limit: int) -> list[FieldViolation]:
    """Required and at most `limit` characters: checked before the value reaches the database or a log."""
    if not value:
        return [FieldViolation(field, "is required")]
    if len(value) > limit:
        return [FieldViolation(field, f"must be at most {limit} characters")]
    return []


def _name_violations(name: str) -> list[FieldViolation]:
    if len(name) > MAX_NAME_LENGTH:
        return [FieldViolation("name", f"must be at most {MAX_NAME_LENGTH} characters")]
    return []


def _check(violations: list[FieldViolation]) -> None:
    if violations:
        raise InvalidArgument(violations)


def _hash_refresh_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class AuthDomain:
    def __init__(
        self,
        repository: AuthRepository,
        hasher: PasswordHasher,
        issuer: TokenIssuer,
        refresh_ttl_seconds: int,
        max_failures: int,
        lockout_seconds: int,
        max_failures_per_client: int = 50,
        refused_emails: frozenset[str] = frozenset(),
        reuse_grace_seconds: int = 0,
    ):
        self.repo = repository
        self.hasher = hasher
        self.issuer = issuer
        self.refresh_ttl = dt.timedelta(seconds=refresh_ttl_seconds)
        self.max_failures = max_failures
        self.max_failures_per_client = max_failures_per_client
        self.lockout_seconds = lockout_seconds
        self.refused_emails = refused_emails  # the demo accounts, in production
        self.reuse_grace = dt.timedelta(seconds=reuse_grace_seconds)
        self._pepper = hashlib.sha256(b"idempotency-fingerprint:" + issuer.key.to_pem()).digest()

    def _secret_digest(self, password: str) -> bytes:
        """Keyed with the signing key, so a stolen database alone cannot test password guesses against it."""
        return hmac.new(self._pepper, password.encode(), hashlib.sha256).digest()

    async def _new_session(self, conn, user: UserRow, family_id: str | None = None) -> Session:
        refresh_token = secrets.token_urlsafe(32)
        await self.repo.insert_refresh_token(
            conn,
            _hash_refresh_token(refresh_token),
            user.id,
            family_id or str(uuid.uuid4()),
            dt.datetime.now(dt.UTC) + self.refresh_ttl,
        )
        return Session(self.issuer.issue(user.id, user.role), self.issuer.ttl_seconds, refresh_token, user)

    async def _create(self, conn, email: str, password: str, name: str, role: str) -> UserRow:
        password_hash = await self.hasher.hash(password)
        try:
            return await self.repo.insert_user(conn, email.strip(), name.strip(), role, password_hash)
        except UserExists:
            raise AlreadyExists(
                "user",
                email,
                reason="EMAIL_TAKEN",
                field="email",
                message=f"An account with email {email} already exists.",
            ) from None

    async def _idempotent_user(self, conn, scope: str, request_id: str, parts: tuple, make) -> UserRow:
        """Runs make(conn) once per request_id; a retry returns the same user."""
        return await self.repo.idempotency.once(
            conn,
            scope,
            request_id,
            parts,
            lambda: make(conn),
            lambda user: user.id.encode(),
            lambda stored: self.repo.user_by_id(conn, stored.decode()),
        )

    # public

    async def register(self, email: str, password: str, name: str, request_id: str = "") -> Session:
        _check(_email_violations(email) + password_violations(password, "password") + _name_violations(name))
        created: list[UserRow] = []

        async def create(c) -> UserRow:
            created.append(await self._create(c, email, password, name, USER))
            return created[0]

        async with self.repo.transaction() as conn:
            user = await self._idempotent_user(
                conn, "Register", request_id, (email.lower(), self._secret_digest(password), name), create
            )
            if not created:  # a replay: it may mint a session only where Login would
                await self._check_replayed_sign_in(conn, user, password)
            return await self._new_session(conn, user)

    async def _check_replayed_sign_in(self, conn, user: UserRow, password: str) -> None:
        row = await self.repo.lock_throttle(conn, _email_key(user.email))
        if row.locked_until is not None and row.locked_until > row.now:
            raise self._throttled(row.locked_until)
        if not await self.hasher.check(password, user.password_hash):  # changed since the registration
            raise Unauthenticated("The email or password is wrong.", reason="INVALID_CREDENTIALS")
        self._check_may_sign_in(user)

    def _check_may_sign_in(self, user: UserRow | None) -> UserRow:
        """The user, when they may sign in; a deactivated or vanished account is refused."""
        if user is None or not user.active:
            raise PermissionDenied("This account is deactivated; contact an administrator.", reason="ACCOUNT_DISABLED")
        if user.email.lower() in self.refused_emails:
            raise PermissionDenied(
                "Demo accounts cannot sign in when ENVIRONMENT=production.", reason="DEMO_ACCOUNT_DISABLED"
            )
        return user

    async def login(self, email: str, password: str) -> Session:
        _check(_bounded("email", email, MAX_EMAIL_LENGTH) + _bounded("password", password, MAX_PASSWORD_INPUT))
        email_key, client = _email_key(email), _client_key(client_address())
        # Per client too, so spraying one password over many accounts from one address is slowed.
        client_last_chance = await self._reserve_attempt(client, self.max_failures_per_client) if client else None
        last_chance_until = await self._reserve_attempt(email_key, self.max_failures) or client_last_chance
        async with self.repo.transaction() as conn:
            user = await self.repo.user_by_email(conn, email.strip())
        # The same work and the same answer whether the email is unknown or the password wrong.
        valid = await self.hasher.check(password, user.password_hash if user else None)
        if not valid:
            if last_chance_until is not None:
                raise self._throttled(last_chance_until)
            raise Unauthenticated("The email or password is wrong.", reason="INVALID_CREDENTIALS")
        async with self.repo.transaction() as conn:
            # The email's count is cleared; the client's only forgets this attempt, so a sprayer who knows
            # one password cannot reset it.
            await self.repo.clear_failures(conn, email_key)
            if client:
                await self.repo.forgive_attempt(conn, client)
            return await self._new_session(conn, self._check_may_sign_in(user))

    async def _reserve_attempt(self, key: str, max_failures: int) -> dt.datetime | None:
        """Counts the attempt before the password is checked, so a burst of parallel guesses cannot outrun the
        limit; a correct password clears the count. Returns the pause's end when this is the last allowed try."""
        pause_until: dt.datetime | None = None
        async with self.repo.transaction() as conn:
            row = await self.repo.lock_throttle(conn, key)
            if row.locked_until is not None and row.locked_until > row.now:
                locked_until = row.locked_until
            else:
                locked_until = None
                window = dt.timedelta(seconds=self.lockout_seconds)
                fresh = row.window_started_at < row.now - window
                failures = (0 if fresh else row.failures) + 1
                started = row.now if fresh else row.window_started_at
                pause_until = row.now + window if failures >= max_failures else None
                await self.repo.save_throttle(conn, key, 0 if pause_until else failures, started, pause_until)
        if locked_until is not None:
            raise self._throttled(locked_until)
        return pause_until

    def _throttled(self, locked_until: dt.datetime) -> ResourceExhausted:
        wait = max(1.0, (locked_until - dt.datetime.now(dt.UTC)).total_seconds())
        return ResourceExhausted(
            f"Too many failed sign-ins; try again in {int(wait)} seconds.",
            reason="LOGIN_RATE_LIMITED",
            retry_after_seconds=wait,
            metadata={"retry_after_seconds": int(wait)},
        )

    async def refresh(self, refresh_token: str) -> Session:
        """Rotates the refresh token: the presented one is spent, a new one of the same family is returned.

        A spent token presented again means someone holds a copy: the whole family is revoked. Except within
        the grace window right after its use (REFRESH_REUSE_GRACE_SECONDS), when it is a double submit (two
        tabs, a retried request whose answer was lost): that call gets a fresh session of the same family.
        """
        _check(_bounded("refresh_token", refresh_token, MAX_REFRESH_TOKEN_LENGTH))
        token_hash = _hash_refresh_token(refresh_token)
        async with self.repo.transaction() as conn:
            row = await self.repo.lock_refresh_token(conn, token_hash)
            if row is None:
                raise Unauthenticated("The refresh token is not valid; sign in again.", reason="INVALID_REFRESH_TOKEN")
            # The window runs from the first use and does not move: a revoked family never gets one.
            # (Two concurrent calls may see now() before the other's used_at: that is a double submit too.)
            double_submit = (
                self.reuse_grace > dt.timedelta(0)
                and row.revoked_at is None
                and row.used_at is not None
                and row.now - row.used_at <= self.reuse_grace
            )
            if (row.used_at is None or double_submit) and row.revoked_at is None:
                if row.expires_at <= row.now:
                    raise Unauthenticated(
                        "The refresh token has expired; sign in again.", reason="REFRESH_TOKEN_EXPIRED"
                    )
                user = self._check_may_sign_in(await self.repo.user_by_id(conn, row.user_id))
                if not double_submit:
                    await self.repo.mark_refresh_token_used(conn, token_hash)
                return await self._new_session(conn, user, row.family_id)
            # Deactivation revokes every token: say so rather than calling it a reuse.
            self._check_may_sign_in(await self.repo.user_by_id(conn, row.user_id))
            # A spent token came back: someone holds a copy. Revoke the whole family, then refuse.
            await self.repo.revoke_family(conn, row.family_id)
        # Refused once the transaction is over, so the family's revocation is committed.
        raise Unauthenticated(
            "This refresh token was already used; every session from it is revoked. Sign in again.",
            reason="REFRESH_TOKEN_REUSED",
        )

    async def me(self, caller: Principal) -> UserRow:
        async with self.repo.transaction() as conn:
            user = await self.repo.user_by_id(conn, caller.user_id)
        if user is None:
            raise NotFound("user", caller.user_id)
        return user

    async def change_password(self, caller: Principal, current: str, new: str, request_id: str = "") -> None:
        _check(_bounded("current_password", current, MAX_PASSWORD_INPUT) + password_violations(new, "new_password"))
        user = await self.me(caller)
        # Guesses of the current password count against the same limit as sign-ins.
        email_key = _email_key(user.email)
        last_chance_until = await self._reserve_attempt(email_key, self.max_failures)
        if not await self.hasher.check(current, user.password_hash):
            if last_chance_until is not None:
                raise self._throttled(last_chance_until)
            raise InvalidArgument.field(
                "current_password", "does not match the account's password", reason="WRONG_PASSWORD"
            )
        new_hash = await self.hasher.hash(new)
        async with self.repo.transaction() as conn:
            await self._idempotent_user(
                conn,
                f"ChangePassword:{caller.user_id}",
                request_id,
                (self._secret_digest(new),),
                lambda c: self.repo.update_user(c, user.id, password_hash=new_hash),
            )
            await self.repo.revoke_user_tokens(conn, user.id)
            await self.repo.clear_failures(conn, email_key)

    # admin

    async def create_user(self, email: str, password: str, name: str, role: str, request_id: str = "") -> UserRow:
        role = role or USER
        _check(
            _email_violations(email)
            + password_violations(password, "password")
            + _name_violations(name)
            + ([] if role in ROLES else [FieldViolation("role", "must be USER or ADMIN")])
        )
        async with self.repo.transaction() as conn:
            return await self._idempotent_user(
                conn,
                "CreateUser",
                request_id,
                (email.lower(), self._secret_digest(password), name, role),
                lambda c: self._create(c, email, password, name, role),
            )

    async def list_users(self, page_size: int, page_token: str, email_contains: str) -> tuple[list[UserRow], str, int]:
        size = paging.page_size(page_size)
        after = paging.decode_time_id(page_token)
        async with self.repo.transaction() as conn:
            rows, total = await self.repo.list_users(conn, size + 1, after, email_contains)
        rows, next_token = paging.next_page_by_creation(rows, size)
        return rows, next_token, total

    async def get_user(self, user_id: str) -> UserRow:
        _check_uuid(user_id, "id")
        async with self.repo.transaction() as conn:
            user = await self.repo.user_by_id(conn, user_id)
        if user is None:
            raise NotFound("user", user_id)
        return user

    async def update_user(
        self,
        caller: Principal,
        user_id: str,
        name: str | None,
        role: str | None,
        active: bool | None,
        request_id: str = "",
    ) -> UserRow:
        _check_uuid(user_id, "id")
        violations = _name_violations(name or "")
        if role is not None and role not in ROLES:
            violations.append(FieldViolation("role", "must be USER or ADMIN"))
        _check(violations)
        if user_id.lower() == caller.user_id and (role == USER or active is False):
            raise InvalidArgument.field(
                "role" if role == USER else "active",
                "an administrator cannot demote or deactivate their own account",
                reason="SELF_LOCKOUT",
            )
        changes = {k: v for k, v in (("name", name), ("role", role), ("active", active)) if v is not None}
        async with self.repo.transaction() as conn:

            async def apply(c):
                updated = (
                    await self.repo.update_user(c, user_id, **changes)
                    if changes
                    else await self.repo.user_by_id(c, user_id)
                )
                if updated is None:
                    raise NotFound("user", user_id)
                if active is False:
                    await self.repo.revoke_user_tokens(c, user_id)
                if active is not None:  # every service learns it within REVOCATION_POLL_SECONDS
                    await self.repo.set_revocation(c, user_id, disabled=not active)
                return updated

            return await self._idempotent_user(
                conn, f"UpdateUser:{caller.user_id}", request_id, (user_id, repr(sorted(changes.items()))), apply
            )

    async def revocations(self) -> list[RevocationRow]:
        """The revocations a live access token may still be subject to (a minute's margin for clock skew)."""
        async with self.repo.transaction() as conn:
            return await self.repo.recent_revocations(conn, self.issuer.ttl_seconds + 60)

    async def lookup_by_email(self, email: str) -> UserRow:
        _check(_email_violations(email))
        async with self.repo.transaction() as conn:
            user = await self.repo.user_by_email(conn, email.strip())
        if user is None:
            raise NotFound("user", email, reason="USER_NOT_FOUND", message=f"No user has the email {email}.")
        return user

    async def batch_lookup(self, emails: list[str], user_ids: list[str]) -> list[LookupResult]:
        if len(emails) + len(user_ids) > MAX_BATCH:
            raise InvalidArgument.field(
                "emails", f"at most {MAX_BATCH} entries in all per call", reason="BATCH_TOO_LARGE"
            )
        valid_ids = [i for i in user_ids if is_uuid(i)]
        async with self.repo.transaction() as conn:
            by_email = await self.repo.users_by_emails(
                conn, [e.strip() for e in emails if not _email_violations(e.strip())]
            )
            by_id = await self.repo.users_by_ids(conn, valid_ids) if valid_ids else {}
        results, seen = [], set()
        for query, key, found, valid in [
            (e, e.strip().lower(), by_email.get(e.strip().lower()), not _email_violations(e.strip())) for e in emails
        ] + [(i, i.lower(), by_id.get(i.lower()), is_uuid(i)) for i in user_ids]:
            if not valid:
                results.append(LookupResult(query, None, "INVALID"))
            elif key in seen:
                results.append(LookupResult(query, None, "DUPLICATE"))
            elif found is None:
                results.append(LookupResult(query, None, "NOT_FOUND"))
            else:
                results.append(LookupResult(query, found, ""))
            seen.add(key)
        return results


def _check_uuid(value: str, field: str) -> None:
    if not value:
        raise InvalidArgument.field(field, "is required")
    if not is_uuid(value):
        raise InvalidArgument.field(field, "must be a user id (a UUID)", reason="INVALID_USER_ID")
