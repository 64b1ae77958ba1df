"""Codes in plain Python: a book's code pattern, the size of its code space, secure generation, upload syntax.

A generated code is prefix + random part + suffix, e.g. SUMMER-7KQ2M9XH-2026 from SUMMER-{}-2026.
Codes are upper-case: uploaded codes are normalized (surrounding whitespace removed, letters upper-cased)
so a code typed in any letter case names the same coupon, and patterns and alphabets must already be
upper-case so what an admin configures is exactly what gets printed.
"""

import secrets
import string
from dataclasses import dataclass

from kernel.errors import FailedPrecondition, FieldViolation

RANDOM_PART = "{}"
DEFAULT_PATTERN = RANDOM_PART
DEFAULT_LENGTH = 8
MIN_LENGTH, MAX_LENGTH = 4, 32
# Upper-case letters and digits without the look-alikes 0/O and 1/I/L: 31 characters.
DEFAULT_ALPHABET = "".join(c for c in string.ascii_uppercase + string.digits if c not in "0O1IL")
ALPHABET_CHARACTERS = frozenset(string.ascii_uppercase + string.digits)
# Characters of a code: those of any alphabet, and the separators a prefix or suffix may use.
CODE_CHARACTERS = ALPHABET_CHARACTERS | {"-", "_"}
MAX_FIXED_LENGTH = 32
MIN_CODE_LENGTH, MAX_CODE_LENGTH = 4, MAX_FIXED_LENGTH + MAX_LENGTH
# At most this share of a code space may hold codes: random draws then collide at most one time in four
# (so replacements converge fast), and a guessed code is still most likely not a real one.
MAX_FILL_PERCENT = 25


@dataclass(frozen=True)
class CodePattern:
    prefix: str
    suffix: str
    length: int
    alphabet: str

    @property
    def text(self) -> str:
        return f"{self.prefix}{RANDOM_PART}{self.suffix}"

    @property
    def space(self) -> int:
        """How many different codes the pattern can make."""
        return len(self.alphabet) ** self.length

    def describe_space(self) -> str:
        return f"{len(self.alphabet)}^{self.length} = {self.space:,}"


def pattern_violations(pattern: str, field: str = "code_pattern") -> list[FieldViolation]:
    if pattern.count(RANDOM_PART) != 1:
        return [
            FieldViolation(
                field,
                f"must contain {RANDOM_PART} exactly once, where the random part goes, e.g. SUMMER-{RANDOM_PART}-2026",
            )
        ]
    fixed = pattern.replace(RANDOM_PART, "")
    wrong = sorted(set(fixed) - CODE_CHARACTERS)
    if wrong:
        return [
            FieldViolation(
                field,
                "may contain only upper-case letters A-Z, digits, '-' and '_' around "
                f"{RANDOM_PART}; found {''.join(wrong)!r}",
            )
        ]
    if len(fixed) > MAX_FIXED_LENGTH:
        return [
            FieldViolation(
                field, f"may have at most {MAX_FIXED_LENGTH} characters around {RANDOM_PART}, has {len(fixed)}"
            )
        ]
    return []


def length_violations(length: int, field: str = "code_length") -> list[FieldViolation]:
    if not MIN_LENGTH <= length <= MAX_LENGTH:
        return [
            FieldViolation(
                field, f"must be between {MIN_LENGTH} and {MAX_LENGTH} (0 means {DEFAULT_LENGTH}), got {length}"
            )
        ]
    return []


def alphabet_violations(alphabet: str, field: str = "code_alphabet") -> list[FieldViolation]:
    wrong = sorted(set(alphabet) - ALPHABET_CHARACTERS)
    if wrong:
        return [FieldViolation(field, f"may contain only upper-case letters A-Z and digits; found {''.join(wrong)!r}")]
    repeated = sorted({c for c in alphabet if alphabet.count(c) > 1})
    if repeated:
        # A repeated character would be drawn more often than the others.
        return [FieldViolation(field, f"must list each character once; repeated: {''.join(repeated)!r}")]
    if len(alphabet) < 2:
        return [FieldViolation(field, "must have at least 2 different characters")]
    return []


def parse_pattern(pattern: str, length: int, alphabet: str) -> CodePattern:
    """A validated pattern (see the *_violations functions) split around its random part."""
    prefix, suffix = pattern.split(RANDOM_PART)
    return CodePattern(prefix, suffix, length, alphabet)


def check_capacity(pattern: CodePattern, used: int, requested: int) -> None:
    """Refuses a request that would fill more than MAX_FILL_PERCENT of the pattern's code space."""
    space = pattern.space
    if (used + requested) * 100 <= space * MAX_FILL_PERCENT:
        return
    fill = (used + requested) / space
    raise FailedPrecondition(
        f"Pattern {pattern.text} has {pattern.describe_space()} possible codes, {used:,} already used; "
        f"{requested:,} more would fill {fill:.0%} of them, and at most {MAX_FILL_PERCENT}% of the space is "
        "allowed: use a longer random part or a larger alphabet.",
        reason="CODE_SPACE_TOO_SMALL",
        metadata={
            "code_pattern": pattern.text,
            "code_space": space,
            "used": used,
            "requested": requested,
            "fill_percent": round(fill * 100, 2),
            "max_fill_percent": MAX_FILL_PERCENT,
        },
    )


class CodeGenerator:
    """Draws codes of a pattern from the operating system's secure random source, without bias.

    Random bytes map to alphabet characters by a translation table; bytes at or above the largest
    multiple of the alphabet size are dropped (rejection sampling), so every character is equally likely.
    """

    def __init__(self, pattern: CodePattern):
        self.pattern = pattern
        size = len(pattern.alphabet)
        usable = 256 - 256 % size
        self._table = bytes.maketrans(
            bytes(range(usable)), bytes(ord(pattern.alphabet[b % size]) for b in range(usable))
        )
        self._rejected = bytes(range(usable, 256))
        self._overdraw = 256 / usable

    def _random_characters(self, count: int) -> str:
        drawn = bytearray()
        while len(drawn) < count:
            missing = count - len(drawn)
            raw = secrets.token_bytes(int(missing * self._overdraw * 1.02) + 16)
            drawn += raw.translate(self._table, self._rejected)
        return drawn[:count].decode("ascii")

    def unique_codes(self, count: int) -> list[str]:
        """`count` distinct codes (distinct among themselves; the ledger decides about the rest)."""
        prefix, suffix, length = self.pattern.prefix, self.pattern.suffix, self.pattern.length
        codes: set[str] = set()
        while len(codes) < count:
            missing = count - len(codes)
            characters = self._random_characters(missing * length)
            codes.update(prefix + characters[i : i + length] + suffix for i in range(0, missing * length, length))
        return list(codes)


@dataclass(frozen=True)
class RejectedCode:
    index: int
    code: str
    reason: str
    message: str


def normalize(code: str) -> str:
    return code.strip().upper()


def syntax_rejection(index: int, code: str) -> RejectedCode | None:
    """Why a normalized uploaded code cannot be a code at all; None when it can."""
    if not MIN_CODE_LENGTH <= len(code) <= MAX_CODE_LENGTH:
        return RejectedCode(
            index,
            code,
            "INVALID_LENGTH",
            f"A code has {MIN_CODE_LENGTH} to {MAX_CODE_LENGTH} characters; this one has {len(code)}.",
        )
    wrong = sorted(set(code) - CODE_CHARACTERS)
    if wrong:
        return RejectedCode(
            index,
            code,
            "INVALID_CHARACTERS",
            f"A code may contain only letters A-Z, digits, '-' and '_'; found {''.join(wrong)!r}.",
        )
    return None


class UploadScreen:
    """Checks uploaded codes one by one, in upload order: syntax, then duplicates earlier in the upload."""

    def __init__(self):
        self._first_index: dict[str, int] = {}

    def check(self, index: int, raw: str) -> tuple[str, RejectedCode | None]:
        code = normalize(raw)
        rejection = syntax_rejection(index, code)
        if rejection is None and code in self._first_index:
            rejection = RejectedCode(
                index,
                code,
                "DUPLICATE_IN_UPLOAD",
                f"The same code is already at index {self._first_index[code]} of this upload.",
            )
        if rejection is None:
            self._first_index[code] = index
        return code, rejection


def already_exists(index: int, code: str) -> RejectedCode:
    return RejectedCode(
        index, code, "ALREADY_EXISTS", "This code already exists in the ledger (codes are unique across all books)."
    )
