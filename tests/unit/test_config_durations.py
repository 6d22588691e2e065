"""Durations: every accepted form, every rejected one, and round trips (hypothesis)."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lvsd.config.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    "text,seconds",
    [
        ("500ms", 0.5),
        ("2s", 2.0),
        ("1m", 60.0),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("250us", 0.00025),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("1h 2m 3s", 3723.0),
        (" 10ms ", 0.01),
        (0, 0.0),
        (3, 3.0),
        (0.25, 0.25),
    ],
)
def test_accepted(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value,fragment",
    [
        ("5x", "must be a duration"),
        ("3", "needs a unit"),
        ("", "must be a duration"),
        ("s", "must be a duration"),
        ("-1s", "must be a duration"),
        ("1ms2", "must be a duration"),
        ("1 s s", "must be a duration"),
        (-1, "non-negative"),
        (float("nan"), "non-negative"),
        (float("inf"), "non-negative"),
        (True, "must be a duration"),
        (None, "must be a duration"),
        ([1], "must be a duration"),
    ],
)
def test_rejected(value, fragment):
    with pytest.raises(ValueError) as e:
        parse_duration(value)
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


@given(st.integers(min_value=0, max_value=10**7))
def test_milliseconds_roundtrip(ms):
    assert parse_duration(f"{ms}ms") == pytest.approx(ms / 1000)
    assert parse_duration(format_duration(ms / 1000)) == pytest.approx(ms / 1000)


@given(st.integers(0, 100), st.integers(0, 59), st.integers(0, 59), st.integers(0, 999))
def test_compound(h, m, s, ms):
    text = f"{h}h{m}m{s}s{ms}ms"
    assert parse_duration(text) == pytest.approx(h * 3600 + m * 60 + s + ms / 1000)


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False))
def test_numbers_are_seconds(x):
    assert parse_duration(x) == x


@given(st.text(max_size=12))
def test_never_anything_but_valueerror(text):
    try:
        v = parse_duration(text)
    except ValueError:
        return
    assert v >= 0 and math.isfinite(v)
