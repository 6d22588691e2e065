"""One contract, two backends: every test here runs against the backend LVSD_TEST_BACKEND names.

``memory`` (default, host): a fresh MemoryBackend per test.
``netlink`` (in the VM, as root): the kernel's table through open_backend("netlink"), one socket
for the session, emptied before and after each test (flush, stop the sync daemons, default
timeouts). Run it with:

    LVSD_TEST_BACKEND=netlink tests/kernel/vm.sh python -m pytest tests/contract -p no:cacheprovider

Every netlink test is bounded by an alarm so a kernel that never answers fails the test instead
of hanging the VM.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator

import pytest

from lvsd.ipvs.backend import Backend, IPVSError, open_backend
from lvsd.ipvs.model import Timeouts

BACKEND = os.environ.get("LVSD_TEST_BACKEND", "memory")
DEFAULT_TIMEOUTS = Timeouts(900, 120, 300)
#: Upper bound for one netlink test (the VM is slow; the netlink backend's own timeout is 30 s).
TEST_ALARM_S = 150


def pytest_report_header(config: pytest.Config) -> str:
    return f"contract backend: {BACKEND}"


def clean(b: Backend) -> None:
    """Bring a backend back to a fresh kernel's state: no daemons, no services, default timeouts."""
    for d in b.daemons():
        try:
            b.stop_daemon(d.state)
        except IPVSError:
            pass
    b.flush()
    b.set_timeouts(DEFAULT_TIMEOUTS)


@pytest.fixture(scope="session")
def _session_backend() -> Iterator[Backend | None]:
    if BACKEND == "memory":
        yield None
        return
    if BACKEND != "netlink":
        raise pytest.UsageError(f"LVSD_TEST_BACKEND must be memory or netlink, got {BACKEND!r}")
    b = open_backend("netlink")
    try:
        yield b
    finally:
        clean(b)
        b.close()


@pytest.fixture(autouse=True)
def _bounded() -> Iterator[None]:
    """On netlink, fail (rather than hang) a test the kernel stops answering."""
    if BACKEND != "netlink":
        yield
        return

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"contract test still running after {TEST_ALARM_S} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(TEST_ALARM_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture
def fresh(_session_backend: Backend | None) -> Iterator[Callable[[], Backend]]:
    """A factory of empty backends (for property tests: one per example)."""
    made: list[Backend] = []

    def make() -> Backend:
        if _session_backend is None:
            from lvsd.ipvs.memory import MemoryBackend

            b: Backend = MemoryBackend()
            made.append(b)
            return b
        clean(_session_backend)
        return _session_backend

    yield make
    for b in made:
        b.close()
    if _session_backend is not None:
        clean(_session_backend)


@pytest.fixture
def backend(fresh: Callable[[], Backend]) -> Backend:
    """An empty backend: no services, no daemons, default timeouts."""
    return fresh()
