"""Password rules and bcrypt hashing (off the event loop: one hash at cost 12 takes ~0.25 s)."""

import asyncio

import bcrypt

from kernel.errors import FieldViolation

MIN_CHARACTERS = 8
MAX_BYTES = 72  # bcrypt's limit; longer passwords are refused, never silently truncated


def violations(password: str, field: str) -> list[FieldViolation]:
    if len(password) < MIN_CHARACTERS:
        return [FieldViolation(field, f"must have at least {MIN_CHARACTERS} characters")]
    if len(password.encode()) > MAX_BYTES:
        return [FieldViolation(field, f"must be at most {MAX_BYTES} bytes in UTF-8")]
    return []


class PasswordHasher:
    def __init__(self, rounds: int):
        self.rounds = rounds
        # Checked against when the email is unknown, so both answers take the same time.
        self._decoy = bcrypt.hashpw(b"decoy-password", bcrypt.gensalt(rounds))

    async def hash(self, password: str) -> str:
        hashed = await asyncio.to_thread(bcrypt.hashpw, password.encode(), bcrypt.gensalt(self.rounds))
        return hashed.decode()

    async def check(self, password: str, hashed: str | None) -> bool:
        candidate = password.encode()
        target = hashed.encode() if hashed else self._decoy
        # bcrypt reads 72 bytes: a longer password would match the one that is its prefix. None is stored
        # that long, so it never matches; the same work is done either way.
        matches = await asyncio.to_thread(bcrypt.checkpw, candidate[:MAX_BYTES], target)
        return matches and hashed is not None and len(candidate) <= MAX_BYTES
