"""VRRP where directors really run, on the real kernel (issue 13): a unicast pair on a network
that drops multicast (nftables drops 224.0.0.18 in both directors), lvsd against keepalived's
``unicast_peer`` with VRRPv2 ``auth_type PASS`` both ways, interface tracking that hands over,
and adverts that must be dropped and counted (unlisted source, TTL 254, wrong VRID, bad
checksum) without the state changing. Same topology as test_ha.py (tests/kernel/vm.sh)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from test_ha import (
    GW,
    REQUIRED,
    VIP,
    Director,
    addresses,
    record,
    sh,
    stop_keepalived,
    topology,  # noqa: F401  (a fixture)
    vrrp_conf,
    wait_for,
)

from lvsd.core import vrrp as core
from lvsd.daemon.vrrp import in_netns

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(
        not REQUIRED and (shutil.which("nft") is None or shutil.which("ip") is None),
        reason="needs nft and the VM",
    ),
]

PEER = {"had1": "10.1.0.12", "had2": "10.1.0.11"}
SRC = {"had1": "10.1.0.11", "had2": "10.1.0.12"}

NO_MULTICAST = """
table inet novrrpmc {
  chain out { type filter hook output priority 0; ip daddr 224.0.0.18 counter drop; ip6 daddr ff02::12 counter drop; }
  chain in { type filter hook input priority 0; ip daddr 224.0.0.18 counter drop; ip6 daddr ff02::12 counter drop; }
}
"""


def drop_multicast(on: bool) -> None:
    for ns in ("had1", "had2"):
        subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "novrrpmc"], capture_output=True
        )
        if on:
            subprocess.run(
                ["ip", "netns", "exec", ns, "nft", "-f", "-"], input=NO_MULTICAST, text=True, check=True
            )


def dropped_multicast(ns: str) -> int:
    """Packets the nftables rules dropped in ``ns`` (both chains, both families)."""
    out = sh("ip", "netns", "exec", ns, "nft", "list", "table", "inet", "novrrpmc")
    return sum(int(part.split()[0]) for part in out.split("counter packets ")[1:])


def unicast_conf(ns: str, priority: int, extra: str = "", advert: str = "1s") -> str:
    conf = vrrp_conf(priority, advert)
    return conf.replace(
        "preempt = true",
        f'preempt = true\nunicast_peers = ["{PEER[ns]}"]\nunicast_src = "{SRC[ns]}"\n{extra}',
    )


def send_raw(ns: str, payload: bytes, dst: str, ttl: int = 255) -> None:
    """One VRRP packet (``payload`` after the IP header) from namespace ``ns`` to ``dst``."""
    with in_netns(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, core.VRRP_PROTO)
    try:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        if dst == core.VRRP_GROUP4:  # out of eth0 (the namespace has no multicast route)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(SRC[ns]))
        s.sendto(payload, (dst, 0))
    finally:
        s.close()


# --- a unicast pair where multicast is dropped ---------------------------------------------------------


async def unicast_pair() -> dict:
    loop = asyncio.get_running_loop()
    drop_multicast(True)
    sh("ip", "-n", "had1", "link", "add", "eth1", "type", "dummy")
    sh("ip", "-n", "had1", "link", "set", "eth1", "up")
    track = 'track_interfaces = [{ name = "eth1", weight = -60 }]\ngarp_refresh = "2s"'
    d1 = Director("had1", unicast_conf("had1", 150, track))
    d2 = Director("had2", unicast_conf("had2", 100))
    try:
        await d1.ha.start()
        await d2.ha.start()
        await wait_for(lambda: d1.role == "master" and d2.role == "backup", 15, "had1 master, had2 backup")
        await wait_for(
            lambda: d2.ha.status()["vrrp"]["counters"].get("received", 0) >= 2, 10, "unicast adverts"
        )
        assert {VIP, GW} <= addresses("had1") and not {VIP, GW} & addresses("had2")

        # the network really drops multicast: an advert to the group never reaches had2
        before = dict(d2.ha.status()["vrrp"]["counters"])
        n0 = dropped_multicast("had1")
        adv = core.encode(core.Advert(51, 254, 100, (VIP, GW)), "10.1.0.11", core.VRRP_GROUP4)
        send_raw("had1", adv, core.VRRP_GROUP4)
        await wait_for(lambda: dropped_multicast("had1") > n0, 5, "nftables to drop the multicast advert")

        # (5) adverts that must be dropped and counted; each claims priority 254, so the state would show it
        bad_ck = bytearray(core.encode(core.Advert(51, 254, 100, (VIP, GW)), "10.1.0.11", "10.1.0.12"))
        bad_ck[-1] ^= 0xFF
        send_raw(
            "hacl", core.encode(core.Advert(51, 254, 100, (VIP, GW)), "10.1.0.2", "10.1.0.12"), "10.1.0.12"
        )
        send_raw(
            "had1",
            core.encode(core.Advert(51, 254, 100, (VIP, GW)), "10.1.0.11", "10.1.0.12"),
            "10.1.0.12",
            ttl=254,
        )
        send_raw(
            "had1", core.encode(core.Advert(52, 254, 100, (VIP, GW)), "10.1.0.11", "10.1.0.12"), "10.1.0.12"
        )
        send_raw("had1", bytes(bad_ck), "10.1.0.12")

        def counted() -> bool:
            c = d2.ha.status()["vrrp"]["counters"]
            return all(
                c.get(k, 0) > before.get(k, 0)
                for k in ("dropped_unicast_source", "dropped_ttl", "other_vrid", "malformed")
            )

        await wait_for(counted, 10, "each bad advert to be dropped and counted")
        await asyncio.sleep(1.5)  # more adverts from had1: the state never moved
        assert d1.role == "master" and d2.role == "backup"
        assert [r for _, r in d2.roles] == ["backup"]

        # tracking: had1's back-end link goes; 150 - 60 < 100: had2 takes over
        await wait_for(
            lambda: d1.ha.status()["vrrp"]["counters"].get("garp_refreshes", 0) >= 1, 10, "ARP refresh"
        )
        t0 = loop.time()
        sh("ip", "-n", "had1", "link", "set", "eth1", "down")
        await wait_for(lambda: d2.role == "master" and d1.role == "backup", 15, "had2 to take over")
        took = next(t for t, r in d2.roles if r == "master" and t >= t0) - t0
        assert d1.ha.status()["vrrp"]["priority"] == 90
        mdi = d2.ha.vrrp.params.master_down_interval(100)  # type: ignore[union-attr]
        assert {VIP, GW} <= addresses("had2") and not {VIP, GW} & addresses("had1")
        # the link back: 150 again, had1 preempts at its next advert
        t1 = loop.time()
        sh("ip", "-n", "had1", "link", "set", "eth1", "up")
        await wait_for(lambda: d1.role == "master" and d2.role == "backup", 15, "had1 to take back")
        back = next(t for t, r in d1.roles if r == "master" and t >= t1) - t1
        return {
            "tracking_handover_s": round(took, 3),
            "master_down_interval_s": round(mdi, 3),
            "takeback_s": round(back, 3),
            "multicast_dropped": dropped_multicast("had1") + dropped_multicast("had2"),
        }
    finally:
        await d2.stop()
        await d1.stop()
        subprocess.run(["ip", "-n", "had1", "link", "del", "eth1"], capture_output=True)
        drop_multicast(False)


def test_unicast_pair_without_multicast_tracking_and_bad_adverts(topology) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    r = asyncio.run(asyncio.wait_for(unicast_pair(), 150))
    record("unicast_tracking", r)


# --- against keepalived: unicast_peer, VRRPv2 auth_type PASS -------------------------------------------

KA_UNICAST = """global_defs {{
    router_id ka-had1
    vrrp_version 2
}}
vrrp_instance VI_1 {{
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority {priority}
    advert_int 1
    unicast_src_ip 10.1.0.11
    unicast_peer {{
        10.1.0.12
    }}
    authentication {{
        auth_type PASS
        auth_pass secret
    }}
    virtual_ipaddress {{
        10.1.0.100/24
        10.2.0.1/24
    }}
}}
"""


async def start_ka(priority: int, tag: str) -> tuple[asyncio.subprocess.Process, Path]:
    conf = Path(f"/tmp/ka-u-{tag}.conf")
    conf.write_text(KA_UNICAST.format(priority=priority))
    logf = Path(f"/tmp/ka-u-{tag}.log")
    out = open(logf, "w")  # noqa: SIM115 - handed to the child
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", "had1", "keepalived", "-n", "-l", "-D", "-P", "-f", str(conf),
        "-p", f"/run/ka-u-{tag}.pid", "-r", f"/run/ka-u-{tag}-vrrp.pid",
        stdout=out, stderr=subprocess.STDOUT,
    )  # fmt: skip
    out.close()
    return proc, logf


async def against_keepalived_unicast() -> dict:
    loop = asyncio.get_running_loop()
    drop_multicast(True)
    d2 = Director("had2", unicast_conf("had2", 100, 'version = 2\nauth_pass = "secret"'))
    ka, log1 = await start_ka(150, "hi")
    ka2 = None
    try:
        await d2.ha.start()
        await wait_for(lambda: {VIP, GW} <= addresses("had1"), 20, "keepalived to take the VIPs")
        await wait_for(
            lambda: d2.ha.status()["vrrp"]["counters"].get("received", 0) >= 3, 10, "its unicast adverts"
        )
        assert d2.role == "backup" and not {VIP, GW} & addresses("had2")
        c = d2.ha.status()["vrrp"]["counters"]
        assert not {
            "malformed",
            "dropped_ttl",
            "dropped",
            "dropped_unicast_source",
            "address_mismatch",
        } & set(c), c
        t0 = loop.time()
        await stop_keepalived(ka)  # resigns with priority 0, by unicast
        await wait_for(lambda: d2.role == "master", 10, "lvsd to take over from keepalived")
        took = next(t for t, r in d2.roles if r == "master" and t >= t0) - t0
        # keepalived (50) against lvsd (100): it accepts lvsd's PASS adverts by unicast and stays backup
        ka2, log2 = await start_ka(50, "lo")
        await asyncio.sleep(6)
        text2 = log2.read_text()
        assert ka2.returncode is None, text2
        assert d2.role == "master" and not {VIP, GW} & addresses("had1")
        assert "Entering BACKUP STATE" in text2 and "Entering MASTER STATE" not in text2, text2
        assert "Entering MASTER STATE" in log1.read_text()
        return {"lvsd_takeover_after_keepalived_resigns_s": round(took, 3)}
    finally:
        await stop_keepalived(ka)
        if ka2 is not None:
            await stop_keepalived(ka2)
        await d2.stop()
        drop_multicast(False)


@pytest.mark.skipif(not REQUIRED and shutil.which("keepalived") is None, reason="keepalived not installed")
def test_against_keepalived_unicast_pass(topology) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    r = asyncio.run(asyncio.wait_for(against_keepalived_unicast(), 150))
    record("keepalived_unicast_pass", r)
