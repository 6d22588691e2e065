"""Fixtures shared by every test directory (tests/unit, tests/contract, tests/kernel).

One home for helpers that test files used to copy between them:

- ``free_port``: a loopback port nothing is bound to, chosen outside the kernel's ephemeral
  range, so no outgoing connection (of this run or of anything else on the machine) takes it
  between the choice and its use. ``free_port()`` for TCP, ``free_port(socket.SOCK_DGRAM)`` UDP.
- ``run_async``: runs a coroutine to completion in a fresh event loop, with a timeout (30 s by
  default) so that a hang fails the test with TimeoutError instead of stalling the suite.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

#: the default timeout of run_async: generous (a loaded machine is slow), finite (a hang fails)
ASYNC_TIMEOUT = 30.0


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's ephemeral port range (net.ipv4.ip_local_port_range); Linux's default if unreadable."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def pick_free_port(kind: int = socket.SOCK_STREAM, rng: random.Random | None = None) -> int:
    """A port of 127.0.0.1 that nothing is bound to now and that the kernel never hands out on its
    own (it lies outside the ephemeral range): unlike a port of bind(0), it cannot be taken by an
    outgoing connection before the test uses it."""
    rng = rng or random.Random()
    lo, hi = _ephemeral_range()
    candidates = [p for p in range(10000, 65536) if not lo <= p <= hi]
    for _ in range(200):
        port = rng.choice(candidates)
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        return port
    raise RuntimeError("no free loopback port outside the ephemeral range after 200 tries")


@pytest.fixture
def free_port() -> Callable[..., int]:
    """``free_port(kind=socket.SOCK_STREAM)``: see pick_free_port()."""
    return pick_free_port


def run_coroutine(coro: Awaitable[T], timeout: float = ASYNC_TIMEOUT) -> T:
    """``asyncio.run(coro)`` bounded by ``timeout`` seconds (TimeoutError past it)."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


@pytest.fixture
def run_async() -> Callable[..., Any]:
    """``run_async(coro, timeout=30)``: see run_coroutine()."""
    return run_coroutine
