"""Bounded JSON (store/bounds.py) and the edit parser that shares its bounds (blocks/text.py)."""

from __future__ import annotations

import json

import pytest

from blocks.text import parse_number
from store import bounds

ACCEPTED = [
    ('{"a": 1}', {"a": 1}),
    ('{"n": 1000000000000000, "m": -1e15, "f": 0.1}', {"n": 10**15, "m": -1e15, "f": 0.1}),
    ('{"s": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', {"s": "[" * 42}),  # brackets in text
    ("[" * 32 + "]" * 32, None),
]

REFUSED = [
    ("[" * 33 + "]" * 33, "nested more than 32 levels"),
    ('{"a": ' + "[" * 5000 + "]" * 5000 + "}", "nested more than 32 levels"),
    ("[" * 100_000 + "]" * 100_000, "nested more than 32 levels"),
    ('{"n": 1000000000000001}', "1000000000000001 is out of range"),
    ('{"n": ' + "9" * 5000 + "}", "has 5000 digits"),
    ('{"n": NaN}', "NaN is not a number JSON allows"),
    ('{"n": -Infinity}', "-Infinity is not a number JSON allows"),
    ('{"n": 1e400}', "inf is not a finite number"),
    ('{"n": -1e16}', "-1e+16 is out of range"),
    ('{"n": 1' + "0" * 400 + '.5}', "inf is not a finite number"),
]


@pytest.mark.parametrize(("text", "expected"), ACCEPTED)
def test_values_within_bounds_parse_as_json_does(text: str, expected: object) -> None:
    assert bounds.loads(text) == (json.loads(text) if expected is None else expected)


@pytest.mark.parametrize(("text", "error"), REFUSED, ids=[r[1] + str(i) for i, r in enumerate(REFUSED)])
def test_values_out_of_bounds_are_refused_in_words(text: str, error: str) -> None:
    with pytest.raises(bounds.OutOfBounds) as e:
        bounds.loads(text)
    assert error in str(e.value)


@pytest.mark.parametrize("typed", ["1" * 400 + ".5", "9" * 5000, "1" + "0" * 30, "1000000000000000.5",
                                   "-2,000,000,000,000,000", "Infinity", "NaN", "1e5"])
@pytest.mark.parametrize("whole", [True, False])
def test_edited_numbers_are_held_to_the_request_bounds(typed: str, whole: bool) -> None:
    with pytest.raises(ValueError) as e:
        parse_number(typed, whole=whole)
    assert str(e.value).startswith("Enter a")


def test_the_largest_edited_numbers_are_exact() -> None:
    assert parse_number("1,000,000,000,000,000", whole=True) == 10**15
    assert parse_number("-1000000000000000", whole=True) == -(10**15)
    assert parse_number("999999999999999.5", whole=False) == 999999999999999.5
