"""The shared fixtures of tests/conftest.py do what the tests relying on them assume."""

from __future__ import annotations

import asyncio
import random
import socket

import pytest


def test_free_port_is_unbound_and_outside_the_ephemeral_range(free_port) -> None:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        lo, hi = (int(x) for x in f.read().split())
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        port = free_port(kind)
        assert 10000 <= port <= 65535 and not lo <= port <= hi
        s = socket.socket(socket.AF_INET, kind)
        s.bind(("127.0.0.1", port))  # nothing holds it: the test can take it
        s.close()
    c = socket.socket()
    with pytest.raises(ConnectionRefusedError):
        c.connect(("127.0.0.1", free_port()))
    c.close()


def test_free_port_skips_a_port_in_use(free_port) -> None:
    taken = free_port(rng=random.Random(7))
    s = socket.socket()
    s.bind(("127.0.0.1", taken))
    try:
        assert free_port(rng=random.Random(7)) != taken  # same first choice: bound, so skipped
    finally:
        s.close()


def test_run_async_returns_the_result_and_bounds_a_hang(run_async) -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert run_async(answer()) == 42
    with pytest.raises(asyncio.TimeoutError):  # TimeoutError itself from Python 3.11
        run_async(asyncio.sleep(60), timeout=0.1)
