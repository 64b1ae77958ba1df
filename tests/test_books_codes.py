"""Pure units of the books service: pattern parsing, code-space math, generation, upload syntax, book rules."""

import datetime as dt
import re
from collections import Counter

import pytest

from kernel.errors import FailedPrecondition, InvalidArgument
from services.books import codes
from services.books.domain import BookSettings, validated


def test_default_alphabet_leaves_out_look_alikes():
    assert codes.DEFAULT_ALPHABET == "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
    assert not set("0O1IL") & set(codes.DEFAULT_ALPHABET)


@pytest.mark.parametrize(
    "pattern, prefix, suffix",
    [("{}", "", ""), ("SUMMER-{}-2026", "SUMMER-", "-2026"), ("{}_X", "", "_X"), ("VIP{}", "VIP", "")],
)
def test_pattern_splits_around_the_random_part(pattern, prefix, suffix):
    assert codes.pattern_violations(pattern) == []
    parsed = codes.parse_pattern(pattern, 6, "AB")
    assert (parsed.prefix, parsed.suffix, parsed.text) == (prefix, suffix, pattern)


@pytest.mark.parametrize(
    "pattern, says",
    [
        ("SUMMER", "exactly once"),
        ("{}-{}", "exactly once"),
        ("", "exactly once"),
        ("summer-{}", "found 'emrsu'"),
        ("A B{}", "found ' '"),
        ("{{}}", "found '{}'"),
        ("X" * 33 + "{}", "at most 32 characters"),
    ],
)
def test_bad_patterns_are_explained(pattern, says):
    [violation] = codes.pattern_violations(pattern)
    assert violation.field == "code_pattern" and says in violation.description


@pytest.mark.parametrize(
    "alphabet, says", [("A", "at least 2"), ("AAB", "repeated: 'A'"), ("ab", "found 'ab'"), ("AB-", "found '-'")]
)
def test_bad_alphabets_are_explained(alphabet, says):
    [violation] = codes.alphabet_violations(alphabet)
    assert says in violation.description


def test_code_length_bounds():
    assert codes.length_violations(4) == codes.length_violations(32) == []
    assert codes.length_violations(3) and codes.length_violations(33)


def test_code_space_is_alphabet_size_to_the_length():
    pattern = codes.parse_pattern("X-{}", 4, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    assert pattern.space == 32**4 == 1_048_576
    assert pattern.describe_space() == "32^4 = 1,048,576"
    assert codes.parse_pattern("{}", 32, codes.DEFAULT_ALPHABET).space == 31**32


def test_capacity_allows_a_quarter_of_the_space():
    pattern = codes.parse_pattern("X-{}", 4, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    codes.check_capacity(pattern, used=0, requested=262_144)  # exactly 25%
    with pytest.raises(FailedPrecondition) as refused:
        codes.check_capacity(pattern, used=120_000, requested=500_000)
    error = refused.value
    assert error.reason == "CODE_SPACE_TOO_SMALL"
    assert (
        "32^4 = 1,048,576 possible codes, 120,000 already used; 500,000 more would fill 59%" in error.message
    ) and "at most 25%" in error.message
    assert error.metadata["code_space"] == "1048576" and error.metadata["used"] == "120000"


def test_generated_codes_match_the_pattern_and_are_distinct():
    pattern = codes.parse_pattern("SUMMER-{}-2026", 8, codes.DEFAULT_ALPHABET)
    generated = codes.CodeGenerator(pattern).unique_codes(20_000)
    assert len(generated) == len(set(generated)) == 20_000
    shape = re.compile(r"^SUMMER-[ABCDEFGHJKMNPQRSTUVWXYZ23456789]{8}-2026$")
    assert all(shape.match(code) for code in generated)


def test_generation_is_uniform_over_the_alphabet():
    # 3 characters: 256 % 3 != 0, so an unbiased draw must drop some bytes.
    pattern = codes.parse_pattern("{}", 10, "ABC")
    characters = Counter("".join(codes.CodeGenerator(pattern).unique_codes(30_000)))
    expected = 300_000 / 3
    assert set(characters) == {"A", "B", "C"}
    assert all(abs(n - expected) < expected * 0.02 for n in characters.values())


def test_generation_fills_a_small_space_without_duplicates():
    pattern = codes.parse_pattern("{}", 4, "AB")
    assert sorted(codes.CodeGenerator(pattern).unique_codes(16)) == sorted(
        f"{a}{b}{c}{d}" for a in "AB" for b in "AB" for c in "AB" for d in "AB"
    )


def test_uploaded_codes_are_normalized_and_screened():
    screen = codes.UploadScreen()
    results = [
        screen.check(i, raw)
        for i, raw in enumerate(["  abc-123 ", "ABC-123", "AB", "X" * 65, "BAD CODE", "ÄBCD", "good_1"])
    ]
    assert results[0] == ("ABC-123", None)
    assert [r.reason if r else None for _, r in results] == [
        None,
        "DUPLICATE_IN_UPLOAD",
        "INVALID_LENGTH",
        "INVALID_LENGTH",
        "INVALID_CHARACTERS",
        "INVALID_CHARACTERS",
        None,
    ]
    assert "index 0" in results[1][1].message and results[1][1].index == 1
    assert results[6][0] == "GOOD_1"


def test_book_defaults():
    book = validated(BookSettings(name="  Summer  "))
    assert (book.name, book.code_pattern, book.code_length, book.code_alphabet) == (
        "Summer",
        "{}",
        8,
        codes.DEFAULT_ALPHABET,
    )
    assert (book.lock_ttl_seconds, book.max_redemptions_per_user, book.max_assignments_per_user) == (300, 1, 0)
    assert validated(BookSettings(name="VIP", allow_multi_redemption=True)).max_redemptions_per_user == 2


@pytest.mark.parametrize(
    "settings, field",
    [
        (BookSettings(name=""), "name"),
        (BookSettings(name="x" * 201), "name"),
        (BookSettings(name="B", code_pattern="NOPE"), "code_pattern"),
        (BookSettings(name="B", code_length=3), "code_length"),
        (BookSettings(name="B", code_length=-1), "code_length"),
        (BookSettings(name="B", code_alphabet="A"), "code_alphabet"),
        (BookSettings(name="B", lock_ttl_seconds=3601), "lock_ttl_seconds"),
        (BookSettings(name="B", lock_ttl_seconds=-5), "lock_ttl_seconds"),
        (BookSettings(name="B", max_redemptions_per_user=3), "max_redemptions_per_user"),
        (BookSettings(name="B", allow_multi_redemption=True, max_redemptions_per_user=-1), "max_redemptions_per_user"),
        (BookSettings(name="B", max_assignments_per_user=-1), "max_assignments_per_user"),
        (
            BookSettings(
                name="B",
                valid_from=dt.datetime(2026, 2, 1, tzinfo=dt.UTC),
                valid_until=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            ),
            "valid_until",
        ),
    ],
)
def test_each_bad_field_is_named(settings, field):
    with pytest.raises(InvalidArgument) as refused:
        validated(settings)
    assert refused.value.reason == "INVALID_BOOK"
    assert [v.field for v in refused.value.violations] == [field]


def test_every_bad_field_is_reported_at_once():
    with pytest.raises(InvalidArgument) as refused:
        validated(BookSettings(name="", code_length=99, lock_ttl_seconds=99999))
    assert {v.field for v in refused.value.violations} == {"name", "code_length", "lock_ttl_seconds"}
