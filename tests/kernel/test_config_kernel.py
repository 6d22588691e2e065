"""The config's kernel values, applied to the real kernel, dump back exactly as configured.

Every example in conf/ plus a file that reaches the remaining attributes (IPv6 and fwmark
services, SCTP, port-0 persistence, every tunnel type and checksum mode, thresholds, weight 0,
every scheduler flag). A difference here would make the daemon's diff rewrite the table forever.
"""

from __future__ import annotations

import glob
import os

import pytest

from lvsd.config import load_config, parse_config
from lvsd.config.model import Config
from lvsd.ipvs.backend import Op

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

EXTRA = """
[ipvs]
timeouts = { tcp = "15m", tcpfin = "2m", udp = "5m" }

[[service]]
name = "gre6"
vip = "[2001:db8::20]:8080"
forward = "tun"
tunnel = { type = "gre", csum = "csum" }
scheduler = "wrr"
  [[service.server]]
  address = "2001:db8::31"
  weight = 0
  thresholds = { upper = 10, lower = 5 }
  [[service.server]]
  address = "2001:db8::32"
  tunnel = { type = "gue", port = 7777, csum = "none" }
  [[service.server]]
  address = "2001:db8::33"
  tunnel = { type = "gue", port = 7778, csum = "csum" }
  [[service.server]]
  address = "192.0.2.34"
  tunnel = { type = "ipip" }

[[service]]
name = "f6"
fwmark = 77
family = "inet6"
scheduler = "mh"
sched_flags = ["mh-fallback"]
persistence = { timeout = 3600, netmask = 48 }
  [[service.server]]
  address = "2001:db8::40"

[[service]]
name = "sctp"
vip = "192.0.2.50:3868"
protocol = "sctp"
scheduler = "sed"
  [[service.server]]
  address = "192.0.2.51"
  forward = "nat"
  port = 3869

[[service]]
name = "allports"
vip = "192.0.2.60:0"
persistence = { timeout = 60, netmask = 24 }
scheduler = "lblcr"
sched_flags = ["flag-1", "flag-2", "flag-3"]
  [[service.server]]
  address = "192.0.2.61"
"""


def _configs() -> list[tuple[str, Config]]:
    out = [
        (os.path.basename(p), load_config(p, check_files=False))
        for p in sorted(glob.glob(f"{ROOT}/conf/*.toml"))
    ]
    out.append(("extra", parse_config(EXTRA, check_files=False)))
    return out


def test_config_values_round_trip_through_the_kernel(ipvs):
    saved = ipvs.timeouts()
    try:
        checked = 0
        for name, cfg in _configs():
            ops = []
            want = {}
            for s in cfg.services:
                dests = {srv.key: srv.dest for srv in s.servers}
                if s.sorry_server is not None:
                    dests[s.sorry_server.key] = s.sorry_server
                want[s.key] = (s.service, dests)
                ops.append(Op.add_service(s.service))
                ops.extend(Op.add_dest(s.key, d) for d in dests.values())
            before = ipvs.timeouts()
            if cfg.ipvs.timeouts is not None:
                ops.append(Op.set_timeouts(cfg.ipvs.timeouts))
            ipvs.apply(ops)
            got = ipvs.dump()
            assert set(got) == set(want), name
            for key, (svc, dests) in want.items():
                assert got[key].service == svc, f"{name}: {key}"
                assert got[key].dests == dests, f"{name}: {key}"
                checked += 1 + len(dests)
            if cfg.ipvs.timeouts is not None:
                t = cfg.ipvs.timeouts  # a 0 keeps the kernel's value, as ipvsadm --set does
                kept = type(t)(t.tcp or before.tcp, t.tcp_fin or before.tcp_fin, t.udp or before.udp)
                assert ipvs.timeouts() == kept, name
            ipvs.flush()
        assert checked >= 40  # services + destinations compared; guards against an empty loop
    finally:
        ipvs.set_timeouts(saved)


@pytest.mark.parametrize("mode", ["master", "backup"])
def test_sync_daemon_values_are_accepted(ipvs, mode):
    cfg = parse_config(
        f'[sync]\ninterface = "lo"\nsyncid = 7\nmaxlen = 1200\nport = 8849\nttl = 2\n[ha]\nrole = "{mode}"'
    )
    (daemon,) = cfg.sync.daemons_for(mode)
    ipvs.apply([Op.start_daemon(daemon)])
    try:
        (running,) = ipvs.daemons()
        assert (running.state, running.mcast_ifn, running.syncid, running.mcast_port, running.mcast_ttl) == (
            daemon.state,
            "lo",
            7,
            8849,
            2,
        )
    finally:
        ipvs.apply([Op.stop_daemon(daemon.state)])


# --- the config's numeric ranges are the kernel's: the highest accepted value is kept unchanged ----

BOUNDS = """
[ipvs]
timeouts = { tcp = 2147483, tcpfin = 2147483, udp = 2147483 }

[[service]]
name = "top"
vip = "192.0.2.70:80"
persistence = { timeout = 4294967 }
  [[service.server]]
  address = "192.0.2.71"
  weight = 2147483647
  thresholds = { upper = 2147483647, lower = 2147483647 }
  [[service.server]]
  address = "192.0.2.72"
  forward = "tun"
  tunnel = { type = "gue", port = 65535 }
  [service.sorry_server]
  address = "192.0.2.73"
  weight = 2147483647

[[service]]
name = "fwtop"
fwmark = 4294967295
persistence = { timeout = 4294967 }
  [[service.server]]
  address = "192.0.2.74"
"""


def test_highest_accepted_values_are_kept_by_the_kernel(ipvs):
    """Each kernel-bound key at the top of its range (ranges computed for HZ up to 1000) applies
    and dumps back exactly; one above is a config error (tests/unit/test_config_limits.py)."""
    cfg = parse_config(BOUNDS, check_files=False)
    saved = ipvs.timeouts()
    try:
        ops = []
        want = {}
        for s in cfg.services:
            dests = {srv.key: srv.dest for srv in s.servers}
            if s.sorry_server is not None:
                dests[s.sorry_server.key] = s.sorry_server
            want[s.key] = (s.service, dests)
            ops.append(Op.add_service(s.service))
            ops.extend(Op.add_dest(s.key, d) for d in dests.values())
        assert cfg.ipvs.timeouts is not None
        ops.append(Op.set_timeouts(cfg.ipvs.timeouts))
        ipvs.apply(ops)
        got = ipvs.dump()
        for key, (svc, dests) in want.items():
            assert got[key].service == svc, key
            assert got[key].service.timeout == 4294967
            assert got[key].dests == dests, key
        assert ipvs.timeouts() == cfg.ipvs.timeouts
    finally:
        ipvs.set_timeouts(saved)


SYSCTL = "/proc/sys/net/ipv4/vs"


def test_highest_sync_sysctls_are_kept_by_the_kernel():
    """sync_refresh_period (jiffies), sync_ports (a power of two), sync_qlen_max, sync_sock_size
    and sync_threshold at the top of the config's ranges: written and read back unchanged."""
    cfg = parse_config(
        '[sync]\ninterface = "lo"\nsync_refresh_period = 2147483\nsync_ports = 1024\n'
        "sync_qlen_max = 2147483647\nsync_sock_size = 2147483647\nsync_threshold = [2147483646, 2147483647]\n"
    )
    assert cfg.sync is not None
    wanted = cfg.sync.sysctls()
    saved = {k: open(f"{SYSCTL}/{k}").read() for k in wanted}
    try:
        for k, v in wanted.items():
            with open(f"{SYSCTL}/{k}", "w") as f:
                f.write(v)
        got = {k: " ".join(open(f"{SYSCTL}/{k}").read().split()) for k in wanted}
        assert got == wanted
    finally:
        for k, v in saved.items():
            with open(f"{SYSCTL}/{k}", "w") as f:
                f.write(v)


@pytest.mark.parametrize("mode", ["master", "backup"])
@pytest.mark.parametrize("maxlen", [1024, 65487])
def test_sync_maxlen_bounds_are_kept_by_the_kernel(ipvs, mode, maxlen):
    """Both ends of sync.maxlen's range read back unchanged in both roles (a backup raises less
    than 1024; both cap at 65535 minus the headers)."""
    cfg = parse_config(f'[sync]\ninterface = "lo"\nmaxlen = {maxlen}\n[ha]\nrole = "{mode}"')
    assert cfg.sync is not None
    (daemon,) = cfg.sync.daemons_for(mode)
    ipvs.apply([Op.start_daemon(daemon)])
    try:
        (running,) = ipvs.daemons()
        assert running.sync_maxlen == maxlen
    finally:
        ipvs.apply([Op.stop_daemon(daemon.state)])


def test_sync_maxlen_outside_the_range_is_changed_by_the_kernel(ipvs):
    """Why the range stops there: a backup's 1023 reads back as 1024, and 65488 over an IPv6
    group or anything above 65507 comes back capped (the config refuses both)."""
    from lvsd.ipvs.model import DaemonState, SyncDaemon

    for state, maxlen in ((DaemonState.BACKUP, 1023), (DaemonState.MASTER, 65535), (DaemonState.BACKUP, 65535)):
        d = SyncDaemon(state=int(state), mcast_ifn="lo", syncid=0, sync_maxlen=maxlen)
        ipvs.apply([Op.start_daemon(d)])
        try:
            (running,) = ipvs.daemons()
            assert running.sync_maxlen != maxlen, (state, running)
        finally:
            ipvs.apply([Op.stop_daemon(int(state))])
