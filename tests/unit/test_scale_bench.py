"""The scale benchmark's own parts (tests/bench/scale.py): the config it generates is the mix it
claims and loads, its listener refuses a killed port, and --check catches what it should."""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
import scale  # noqa: E402

from lvsd.config import parse_config  # noqa: E402


def test_layout_loads_with_the_mix_it_claims() -> None:
    lay = scale.make_layout(1000, interval=5, timeout=1, sock="/tmp/x.sock", victims=10)
    cfg = parse_config(lay.text())
    assert len(cfg.services) == 100
    assert sum(len(s.servers) for s in cfg.services) == lay.n_servers == 1000
    assert sum(1 for s in cfg.services if s.key.fwmark) == lay.kinds["fwmark"] > 0
    assert sum(1 for s in cfg.services if s.key.af == socket.AF_INET6) == lay.kinds["v6"] > 0
    http = [s for s in cfg.services if s.servers[0].checks[0].type == "http"]
    assert len(http) == lay.kinds["http"] > 0
    # shared targets: the same (address, port) in two services
    targets = [str(srv.key) for s in cfg.services for srv in s.servers]
    assert len(set(targets)) < len(targets)
    assert all(srv.checks[0].interval == 5 for s in cfg.services for srv in s.servers)
    # each victim is a server on a port of its own
    assert len({p for _s, _a, p in lay.victims}) == len(lay.victims) == 10


def test_bumped_text_changes_exactly_those_weights() -> None:
    lay = scale.make_layout(1000, interval=30, timeout=1, sock="/tmp/x.sock")
    bump = set(lay.weighted[::100])
    old = parse_config(lay.text())
    new = parse_config(lay.text(bump))
    changed = [
        (i, j)
        for i, (a, b) in enumerate(zip(old.services, new.services, strict=True))
        for j, (x, y) in enumerate(zip(a.servers, b.servers, strict=True))
        if x.dest.weight != y.dest.weight
    ]
    assert set(changed) == bump and len(bump) == 10


def test_listener_serves_then_refuses_a_closed_port() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with scale.Listener({"tcp": [], "http": [], "v6": [], "victims": [port]}) as lst:
        socket.create_connection(("127.0.0.2", port), 5).close()
        lst.close(port)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.2", port), 5)
        assert lst.count() == 1


def _result(**kw: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"reload_noop_writes": 0, "full": 1.0, "full_5s": 1.0, "reload_1pct_writes": 10,
                         "reload_1pct_wanted": 10, "kills": 10, "kills_seen": 10, "detect_max": 14.0,
                         "detect_bound": 16.05, "rss_start": 50.0}
    r.update(kw)
    return r


def test_check_passes_linear_growth_and_flags_what_it_bounds() -> None:
    ok = {1000: _result(reload_noop_cpu=0.1), 10000: _result(reload_noop_cpu=1.0, rss_start=70.0)}
    assert scale.check(ok) == []
    worse = {1000: _result(reload_noop_cpu=0.1), 10000: _result(reload_noop_cpu=2.0, rss_start=70.0)}
    assert any("reload_noop_cpu" in b and "20.0x" in b for b in scale.check(worse))
    # below the floor, noise does not count
    tiny = {1000: _result(reload_noop_cpu=0.001), 10000: _result(reload_noop_cpu=0.04, rss_start=70.0)}
    assert scale.check(tiny) == []
    fat = {1000: _result(), 10000: _result(rss_start=150.0)}
    assert any("RSS per added server" in b for b in scale.check(fat))
    assert scale.check({1000: _result(reload_noop_writes=3)})
    assert scale.check({1000: _result(kills_seen=9)})
    assert scale.check({1000: _result(detect_max=40.0)})
    assert scale.check({1000: _result(full=None)})
