"""Rise/fall state machine (lvsd.core.health): property tests with hypothesis, plus the combine
rule and keepalived's misc_dynamic weight mapping."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsd.core.health import (
    MAX_DYNAMIC_WEIGHT,
    CheckState,
    Health,
    ServerHealth,
    combine,
    dynamic_weight,
)

results = st.lists(st.booleans(), max_size=200)
counts = st.integers(min_value=1, max_value=6)


def run(rise: int, fall: int, seq: list[bool]) -> tuple[CheckState, list[tuple[int, Health, bool]]]:
    """Feed seq; return the machine and (index, state after, record's return) per step."""
    m = CheckState(rise, fall)
    trace = []
    for i, ok in enumerate(seq):
        before = m.state
        changed = m.record(ok, "ok" if ok else "fail")
        assert changed == (m.state is not before), (i, before, m.state)
        trace.append((i, m.state, changed))
    return m, trace


@settings(max_examples=400)
@given(counts, counts, results)
def test_tail_decides(rise: int, fall: int, seq: list[bool]) -> None:
    """fall failures in a row always end DOWN; rise successes in a row always end UP."""
    m, _ = run(rise, fall, seq)
    if len(seq) >= fall and not any(seq[-fall:]):
        assert m.state is Health.DOWN
    if len(seq) >= rise and all(seq[-rise:]):
        assert m.state is Health.UP


@settings(max_examples=400)
@given(counts, counts, results)
def test_transitions_only_after_full_runs(rise: int, fall: int, seq: list[bool]) -> None:
    """No flapping: DOWN only after `fall` consecutive failures; UP from DOWN only after `rise`
    consecutive successes; UP from UNKNOWN at the first success; never back to UNKNOWN."""
    m = CheckState(rise, fall)
    decided = False
    for i, ok in enumerate(seq):
        before = m.state
        m.record(ok)
        after = m.state
        if decided:
            assert after is not Health.UNKNOWN
        if after is not Health.UNKNOWN:
            decided = True
        if after is before:
            continue
        if after is Health.DOWN:
            assert not ok and i + 1 >= fall and not any(seq[i + 1 - fall:i + 1])
        elif before is Health.DOWN:
            assert ok and i + 1 >= rise and all(seq[i + 1 - rise:i + 1])
        else:
            assert before is Health.UNKNOWN and after is Health.UP and ok


@settings(max_examples=200)
@given(counts, counts, results)
def test_unknown_until_first_success_or_fall_failures(rise: int, fall: int, seq: list[bool]) -> None:
    m = CheckState(rise, fall)
    first_ok = seq.index(True) if True in seq else len(seq)
    for i, ok in enumerate(seq):
        m.record(ok)
        if i < first_ok and i + 1 < fall:
            assert m.state is Health.UNKNOWN  # no traffic decision yet
        if i == first_ok and first_ok < fall:
            assert m.state is Health.UP  # the first pass brings a new server in at once


@settings(max_examples=200)
@given(st.integers(2, 6), st.integers(2, 6), st.integers(1, 100), st.booleans())
def test_alternating_never_flaps(rise: int, fall: int, n: int, up: bool) -> None:
    m = CheckState(rise, fall)
    for _ in range(max(rise, fall)):
        m.record(up)
    state = m.state
    for i in range(n):
        assert not m.record(i % 2 == 0)
        assert m.state is state


def test_reason_text() -> None:
    m = CheckState(rise=2, fall=3)
    assert m.record(True, "http status 200")
    assert m.state is Health.UP and m.reason == "http status 200 (1/1 passed)"
    assert not m.record(False, "http status 503")
    assert not m.record(False, "http status 503")
    assert m.record(False, "http status 503")
    assert m.health() == ServerHealth(Health.DOWN, None, "http status 503 (3/3 failed)")
    assert not m.record(True, "http status 200")
    assert m.record(True, "http status 200")
    assert m.reason == "http status 200 (2/2 passed)"


def test_weight_change_is_a_transition() -> None:
    m = CheckState(rise=1, fall=1)
    assert m.record(True, "", 10)
    assert m.health().weight == 10
    assert not m.record(True, "", 10)
    assert m.record(True, "", 20) and m.health().weight == 20
    assert m.record(True, "", None) and m.health().weight is None
    assert m.record(False) and m.health().weight is None


def test_rejects_bad_counts() -> None:
    with pytest.raises(ValueError):
        CheckState(0, 1)
    with pytest.raises(ValueError):
        CheckState(1, 0)


@pytest.mark.parametrize(
    "status,expected",
    [(0, (True, None)), (1, (False, None)), (2, (True, 0)), (3, (True, 1)), (100, (True, 98)),
     (255, (True, 253)), (256, (True, MAX_DYNAMIC_WEIGHT)), (-9, (False, None))],
)
def test_dynamic_weight(status: int, expected: tuple[bool, int | None]) -> None:
    assert dynamic_weight(status) == expected


def test_combine() -> None:
    up = ServerHealth(Health.UP, None, "a")
    upw = ServerHealth(Health.UP, 5, "b")
    upw2 = ServerHealth(Health.UP, 3, "c")
    down = ServerHealth(Health.DOWN, None, "tcp connect: connection refused (3/3 failed)")
    unk = ServerHealth(Health.UNKNOWN)
    assert combine([up, upw, upw2]) == ServerHealth(Health.UP, 3, "a")
    assert combine([up, unk]).state is Health.UNKNOWN
    assert combine([up, unk, down]) == ServerHealth(Health.DOWN, None, down.reason)
    assert combine([up]) == up
