"""VRRP where directors really run, on the real kernel (issue 13): a unicast pair on a network
that drops multicast (nftables drops 224.0.0.18 in both directors), lvsd against keepalived's
``unicast_peer`` with VRRPv2 ``auth_type PASS`` both ways, interface tracking that hands over,
and adverts that must be dropped and counted (unlisted source, TTL 254, wrong VRID, bad
checksum) without the state changing. Same topology as test_ha.py (tests/kernel/vm.sh)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
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
        try:
            send_raw("had1", adv, core.VRRP_GROUP4)
        except PermissionError:  # the output hook's drop, as the sender sees it
            pass
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


# --- two instances with opposite masters (active-active), then one director dies ----------------------

VIP2 = "10.1.0.101"

MULTI_CONF = """
[daemon]
on_stop = "remove"

[[service]]
name = "web"
vip = "10.1.0.100:80"
forward = "nat"
scheduler = "rr"

  [[service.server]]
  address = "10.2.0.11"

  [[service.server]]
  address = "10.2.0.12"

[ha]
mode = "vrrp"

[[ha.instance]]
name = "front"
interface = "eth0"
vrid = 51
priority = {p1}
advert_interval = "1s"
vips = ["10.1.0.100/24", "10.2.0.1/24"]

[[ha.instance]]
name = "side"
interface = "eth0"
vrid = 52
priority = {p2}
advert_interval = "1s"
vips = ["10.1.0.101/24"]

[sync]
interface = "eth0"
syncid = 51
backup_always = true
"""


def vip_conns(ns: str, vip: str) -> int:
    """Connections to ``vip`` in a director's IPVS connection table."""
    hexvip = socket.inet_aton(vip).hex().upper()
    with in_netns(ns):
        with open("/proc/thread-self/net/ip_vs_conn") as f:
            return sum(1 for line in f.read().splitlines()[1:] if line.split()[3:4] == [hexvip])


def mac_of(ns: str) -> str:
    return json.loads(sh("ip", "-n", ns, "-j", "link", "show", "eth0"))[0]["address"]


def neighbour_mac(ip: str) -> str:
    out = json.loads(sh("ip", "-n", "hacl", "-j", "neigh", "show", ip) or "[]")
    return out[0].get("lladdr", "") if out else ""


async def active_active() -> dict:
    from test_ha import conn_client_ports, connect, request, set_link, start_echo_servers

    loop = asyncio.get_running_loop()
    servers = await start_echo_servers()
    d1 = Director("had1", MULTI_CONF.format(p1=150, p2=100))
    d2 = Director("had2", MULTI_CONF.format(p1=100, p2=150))
    cut = False
    try:
        await d1.ha.start()
        await d2.ha.start()

        def split() -> bool:
            s1, s2 = d1.ha.vrrp_states, d2.ha.vrrp_states
            return (
                s1.get("front") is core.State.MASTER
                and s2.get("side") is core.State.MASTER
                and (s1.get("side") is core.State.BACKUP and s2.get("front") is core.State.BACKUP)
            )

        await wait_for(split, 20, "had1 master of front, had2 master of side")
        assert d1.role == d2.role == "master"  # each is master of one instance
        assert {VIP, GW} <= addresses("had1") and VIP2 in addresses("had2")
        assert VIP2 not in addresses("had1") and not {VIP, GW} & addresses("had2")
        # both carry traffic: the client's packets for each VIP reach the IPVS of the director holding it
        assert (await request("one")).startswith("rs")  # VIP: through had1
        with in_netns("hacl"):
            s = socket.socket()
        s.setblocking(False)
        with contextlib.suppress(
            OSError, asyncio.TimeoutError
        ):  # the SYN is what counts (NAT replies go via had1)
            await asyncio.wait_for(loop.sock_connect(s, (VIP2, 80)), 1)
        s.close()
        await wait_for(
            lambda: vip_conns("had2", VIP2) > 0, 5, "a connection to the second VIP in had2's table"
        )
        assert vip_conns("had1", VIP2) == 0
        assert neighbour_mac(VIP) == mac_of("had1") and neighbour_mac(VIP2) == mac_of("had2")
        # both run the master sync daemon (master of an instance) and the backup one
        for d in (d1, d2):
            assert sorted(x["state"] for x in d.ha.status()["sync"]["running"]) == ["backup", "master"]
        # a connection through had1, synced to had2
        r, w, port = await connect()
        w.write(b"before\n")
        assert (await asyncio.wait_for(r.readline(), 5)).endswith(b"before\n")
        await wait_for(lambda: port in conn_client_ports("had2"), 30, "the connection synced to had2", 0.2)
        # had1 dies (its link cut on the bridge): had2 holds every VIP, the connection survives
        t0 = loop.time()
        set_link("hasw", "vhad1", False)
        cut = True
        await wait_for(lambda: d2.ha.vrrp_states.get("front") is core.State.MASTER, 15, "had2 to take front")
        took = loop.time() - t0
        assert {VIP, GW, VIP2} <= addresses("had2")
        w.write(b"after\n")
        assert (await asyncio.wait_for(r.readline(), 10)).endswith(b"after\n")
        w.close()
        return {"takeover_of_the_second_instance_s": round(took, 3)}
    finally:
        if cut:
            set_link("hasw", "vhad1", True)
        await d1.stop()
        await d2.stop()
        for s in servers:
            s.close()


def test_two_instances_active_active_and_a_director_dies(topology) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    for ns in ("had1", "had2"):  # the second VIP's service (the topology has the first)
        sh("ip", "netns", "exec", ns, "ipvsadm", "-A", "-t", f"{VIP2}:80", "-s", "rr")
        sh("ip", "netns", "exec", ns, "ipvsadm", "-a", "-t", f"{VIP2}:80", "-r", "10.2.0.11:80", "-m")
    try:
        r = asyncio.run(asyncio.wait_for(active_active(), 150))
        record("active_active", r)
    finally:
        for ns in ("had1", "had2"):
            subprocess.run(
                ["ip", "netns", "exec", ns, "ipvsadm", "-D", "-t", f"{VIP2}:80"], capture_output=True
            )


# --- track_services: the real daemon, checks failing on the master only ---------------------------------

TRACK_DAEMON_CONF = """
[daemon]
on_stop = "keep"

[api]
socket = "{sock}"

[defaults]
check = {{ type = "tcp", interval = "500ms", timeout = "300ms", rise = 1, fall = 1 }}

[[service]]
name = "web"
vip = "10.1.0.100:80"
forward = "nat"
scheduler = "rr"
quorum = 1

  [[service.server]]
  address = "10.2.0.11"

  [[service.server]]
  address = "10.2.0.12"

[ha]
mode = "vrrp"
interface = "eth0"
vrid = 91
priority = {priority}
advert_interval = "1s"
vips = ["10.1.0.100/24", "10.2.0.1/24"]
track_services = [{{ service = "web", weight = -100 }}]
"""

REJECT_CHECKS = """
table inet nochecks {
  chain out { type filter hook output priority 0; ip daddr 10.2.0.0/24 tcp dport 80 reject with tcp reset; }
}
"""


def test_track_services_hands_over_when_the_masters_checks_fail(topology, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """Every real server of the tracked service fails on the master only (its own checks are
    refused by an nftables rule there): its priority drops by 100 and the peer takes over."""
    import sys
    import time

    listeners = []
    for ns, addr in (("hars1", "10.2.0.11"), ("hars2", "10.2.0.12")):
        with in_netns(ns):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((addr, 80))
            s.listen(128)  # the kernel completes the checks' handshakes; nothing needs to accept
        listeners.append(s)
    procs = {}

    def status(ns: str) -> dict:
        out = sh(
            sys.executable, "-m", "lvsd.cli.lvsctl", "-s", str(tmp_path / f"{ns}.sock"), "--json", "status"
        )
        return json.loads(out)["ha"]

    def logs() -> str:
        return " | ".join((tmp_path / f"{ns}.log").read_text()[-1200:] for ns in procs)

    def until(cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
        end = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < end, f"{what}: {logs()}"
            time.sleep(0.3)

    try:
        for ns, prio in (("had1", 150), ("had2", 100)):
            conf = tmp_path / f"{ns}.toml"
            conf.write_text(TRACK_DAEMON_CONF.format(sock=tmp_path / f"{ns}.sock", priority=prio))
            log = open(tmp_path / f"{ns}.log", "w")  # noqa: SIM115 - handed to the child
            procs[ns] = subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-m", "lvsd.daemon.main", "-f", str(conf)],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            log.close()
        until(lambda: all((tmp_path / f"{ns}.sock").exists() for ns in procs), 240, "control sockets")
        until(
            lambda: (
                status("had1")["vrrp"]["state"] == "master" and status("had2")["vrrp"]["state"] == "backup"
            ),
            40,
            "had1 master",
        )
        until(
            lambda: status("had1")["vrrp"]["tracked"]["service:web"]["ok"] is True, 20, "web healthy on had1"
        )
        assert status("had1")["vrrp"]["priority"] == 150
        t0 = time.monotonic()
        subprocess.run(
            ["ip", "netns", "exec", "had1", "nft", "-f", "-"], input=REJECT_CHECKS, text=True, check=True
        )
        until(lambda: status("had2")["vrrp"]["state"] == "master", 30, "had2 to take over")
        took = time.monotonic() - t0
        st1 = status("had1")["vrrp"]
        assert st1["priority"] == 50 and st1["tracked"]["service:web"]["ok"] is False, st1
        assert status("had2")["vrrp"]["tracked"]["service:web"]["ok"] is True  # its own checks pass
        until(
            lambda: {VIP, GW} <= addresses("had2") and not {VIP, GW} & addresses("had1"),
            10,
            "the VIPs on had2",
        )
        record("track_services", {"handover_after_checks_fail_s": round(took, 3)})
    finally:
        subprocess.run(
            ["ip", "netns", "exec", "had1", "nft", "delete", "table", "inet", "nochecks"], capture_output=True
        )
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        for s in listeners:
            s.close()
        for ns in ("had1", "had2"):  # on_stop = "keep" leaves the VIPs: take them off
            for a in ("10.1.0.100/24", "10.2.0.1/24"):
                subprocess.run(["ip", "-n", ns, "addr", "del", a, "dev", "eth0"], capture_output=True)


# --- IPv6 unicast peers where ff02::12 is dropped ----------------------------------------------------

VIP6 = "2001:db8:1::100"
SRC6 = {"had1": "2001:db8:1::11", "had2": "2001:db8:1::12"}

CONF6_UNICAST = """
[ha]
mode = "vrrp"
interface = "eth0"
vrid = 62
priority = {priority}
advert_interval = "200ms"
vips = ["2001:db8:1::100/64"]
unicast_peers = ["{peer}"]
"""


async def ipv6_unicast() -> dict:
    from test_ha import addrs_of, set_link

    loop = asyncio.get_running_loop()
    drop_multicast(True)
    for ns, a in SRC6.items():
        sh("ip", "-n", ns, "addr", "add", f"{a}/64", "dev", "eth0", "nodad")
    d1 = Director("had1", CONF6_UNICAST.format(priority=150, peer=SRC6["had2"]))
    d2 = Director("had2", CONF6_UNICAST.format(priority=100, peer=SRC6["had1"]))
    cut = False
    try:
        await d1.ha.start()
        await d2.ha.start()
        await wait_for(lambda: d1.role == "master" and d2.role == "backup", 15, "IPv6 unicast election")
        await wait_for(
            lambda: d2.ha.status()["vrrp"]["counters"].get("received", 0) >= 3, 10, "IPv6 unicast adverts"
        )
        assert d1.ha.status()["vrrp"]["primary"] == SRC6["had1"]  # a global address, for a global peer
        c = d2.ha.status()["vrrp"]["counters"]
        assert not {"malformed", "dropped_ttl", "dropped", "dropped_unicast_source"} & set(c), c
        assert VIP6 in addrs_of("had1", "eth0", "inet6") and VIP6 not in addrs_of("had2", "eth0", "inet6")
        t0 = loop.time()
        set_link("hasw", "vhad1", False)
        cut = True
        await wait_for(lambda: d2.role == "master", 10, "had2 to take over (IPv6 unicast)")
        took = next(t for t, r in d2.roles if r == "master" and t >= t0) - t0
        assert VIP6 in addrs_of("had2", "eth0", "inet6")
        set_link("hasw", "vhad1", True)
        cut = False
        await wait_for(lambda: d1.role == "master" and d2.role == "backup", 15, "had1 to take back (IPv6)")
        return {"ipv6_unicast_takeover_s": round(took, 3)}
    finally:
        if cut:
            set_link("hasw", "vhad1", True)
        await d1.stop()
        await d2.stop()
        for ns, a in SRC6.items():
            subprocess.run(["ip", "-n", ns, "addr", "del", f"{a}/64", "dev", "eth0"], capture_output=True)
        drop_multicast(False)


def test_ipv6_unicast_peers_without_multicast(topology) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    r = asyncio.run(asyncio.wait_for(ipv6_unicast(), 120))
    record("ipv6_unicast", r)


# --- a sync group changes role together ---------------------------------------------------------------

GROUP_CONF = (
    MULTI_CONF.replace('vips = ["10.1.0.101/24"]', 'vips = ["10.1.0.101/24"]\n{track}').replace(
        'advert_interval = "1s"',
        'advert_interval = "300ms"',  # short waits; probes run in threads
    )
    + """
[[ha.group]]
name = "director"
instances = ["front", "side"]
"""
)


async def sync_group() -> dict:
    loop = asyncio.get_running_loop()
    sh("ip", "-n", "had1", "link", "add", "eth1", "type", "dummy")
    sh("ip", "-n", "had1", "link", "set", "eth1", "up")
    track = 'track_interfaces = [{ name = "eth1" }]'  # weight 0: side faults without its link
    d1 = Director("had1", GROUP_CONF.format(p1=150, p2=150, track=track))
    d2 = Director("had2", GROUP_CONF.format(p1=100, p2=100, track=""))
    both = {"front": core.State.MASTER, "side": core.State.MASTER}
    try:
        await d1.ha.start()
        await d2.ha.start()
        await wait_for(lambda: d1.ha.vrrp_states == both, 20, "had1 master of both")
        await wait_for(
            lambda: set(d2.ha.vrrp_states.values()) == {core.State.BACKUP}, 10, "had2 backup of both"
        )
        # side's link goes: side faults, front follows it into fault, had2 takes both together
        t0 = loop.time()
        await off(sh, "ip", "-n", "had1", "link", "set", "eth1", "down")
        await wait_for(lambda: d2.ha.vrrp_states == both, 15, "both instances to move to had2")
        took = loop.time() - t0
        assert set(d1.ha.vrrp_states.values()) == {core.State.FAULT} and d1.role == "fault"
        held: dict[str, set[str]] = {}

        async def vips_moved() -> bool:
            held.update(had2=await off(addresses, "had2"), had1=await off(addresses, "had1"))
            return {VIP, GW, VIP2} <= held["had2"] and not {VIP, GW, VIP2} & held["had1"]

        end = loop.time() + 5  # one loaded run read had2 without one VIP once (not seen again in 8)
        while not await vips_moved():
            assert loop.time() < end, (held, d2.ha.status()["instances"])
            await asyncio.sleep(0.2)
        assert d2.ha.vrrp_states == both, d2.ha.vrrp_states
        # the link back: both leave fault, hear had2's lower priority and preempt it together
        t1 = loop.time()
        await off(sh, "ip", "-n", "had1", "link", "set", "eth1", "up")
        await wait_for(lambda: d1.ha.vrrp_states == both, 20, "both instances back on had1")
        back = loop.time() - t1
        await wait_for(
            lambda: set(d2.ha.vrrp_states.values()) == {core.State.BACKUP}, 10, "had2 backup of both again"
        )
        # had2's front alone outranks had1's (200 > 150): it wants master, but its side still hears
        # had1's side, so the group prefers backup and holds (without a group, front would split off)
        await d2.ha.reload(parse_conf(GROUP_CONF.format(p1=200, p2=100, track="")))
        front2 = d2.ha.vrrps["front"]
        await wait_for(lambda: front2.state.wants_master, 15, "had2's front to want master")
        await asyncio.sleep(1.5)  # more than its master-down interval (0.97 s) again
        assert d1.ha.vrrp_states == both and set(d2.ha.vrrp_states.values()) == {core.State.BACKUP}
        # and had2's side too: every member wants master; both move, had1's follow to backup
        t2 = loop.time()
        await d2.ha.reload(parse_conf(GROUP_CONF.format(p1=200, p2=200, track="")))
        await wait_for(lambda: d2.ha.vrrp_states == both, 20, "both instances to move to had2 (preempt)")
        await wait_for(
            lambda: set(d1.ha.vrrp_states.values()) == {core.State.BACKUP}, 10, "had1 backup of both"
        )
        return {
            "group_handover_s": round(took, 3),
            "group_takeback_s": round(back, 3),
            "group_preempt_s": round(loop.time() - t2, 3),
        }
    finally:
        await d1.stop()
        await d2.stop()
        subprocess.run(["ip", "-n", "had1", "link", "del", "eth1"], capture_output=True)


def test_a_sync_group_moves_together(topology, caplog) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    caplog.set_level(logging.INFO, logger="lvsd")  # a failure shows each instance's transitions
    r = asyncio.run(asyncio.wait_for(sync_group(), 150))
    record("sync_group", r)


# --- virtual MAC: the client's ARP entry for the VIP never changes -----------------------------------

VMAC = "00:00:5e:00:01:33"  # vrid 51


async def vmac_takeover() -> dict:
    from test_ha import request, set_link, start_echo_servers

    loop = asyncio.get_running_loop()
    servers = await start_echo_servers()
    vmac = "preempt = true\nuse_vmac = true\ngarp_repeat = 2"
    d1 = Director("had1", vrrp_conf(150, "200ms").replace("preempt = true", vmac))
    d2 = Director("had2", vrrp_conf(100, "200ms").replace("preempt = true", vmac))
    results: list[tuple[float, bool]] = []
    stop = asyncio.Event()

    async def client() -> None:  # a new request every 100 ms, each given 1 s
        while not stop.is_set():
            t = loop.time()
            try:
                ok = (await request("v", timeout=1.0)).endswith(" v")
            except (OSError, asyncio.TimeoutError):
                ok = False
            results.append((t, ok))
            await asyncio.sleep(0.1)

    cut = False
    task = None
    try:
        await d1.ha.start()
        await d2.ha.start()
        await wait_for(lambda: d1.role == "master" and d2.role == "backup", 15, "had1 master (vmac)")
        for ns in ("had1", "had2"):  # the macvlan on both, up; the VIPs only on the master's
            link = json.loads(await off(sh, "ip", "-n", ns, "-j", "-d", "link", "show", "vrrp.51"))[0]
            assert link["address"] == VMAC and link["linkinfo"]["info_data"]["mode"] == "bridge", link
        assert {VIP, GW} <= await off(addrs, "had1", "vrrp.51") and not await off(addrs, "had2", "vrrp.51")
        assert not {VIP, GW} & await off(addresses, "had1")  # not on eth0
        assert (
            await off(sh, "ip", "netns", "exec", "had1", "sysctl", "-n", "net.ipv4.conf.eth0.arp_ignore")
        ).strip() == "1"
        await wait_for(
            lambda: d2.ha.status()["vrrp"]["counters"].get("received", 0) >= 3,
            10,
            "had1's adverts from its vmac",
        )
        assert d1.ha.status()["vrrp"]["vmac"]["adverts_via"] == "vrrp.51" and d2.role == "backup"
        task = loop.create_task(client())
        await wait_for(lambda: sum(ok for _, ok in results) >= 5, 20, "requests through had1")
        before = await off(neighbour_mac, VIP)
        assert before == VMAC, before
        t0 = loop.time()
        await off(set_link, "hasw", "vhad1", False)
        cut = True
        await wait_for(lambda: d2.role == "master", 10, "had2 to take over (vmac)")
        t_master = next(t for t, r in d2.roles if r == "master" and t >= t0)
        await wait_for(
            lambda: any(ok and t > t_master for t, ok in results[-3:]), 20, "requests through had2"
        )
        await asyncio.sleep(1.0)
        stop.set()
        await task
        after = await off(neighbour_mac, VIP)
        assert after == VMAC, after  # the client never learned another MAC for the VIP
        lost = [t - t0 for t, ok in results if not ok]
        # a request is lost only if it started within the takeover gap (cut .. master + its 1 s try)
        assert all(-1.0 <= x <= t_master - t0 + 1.0 for x in lost), (lost, t_master - t0)
        assert {VIP, GW} <= await off(addrs, "had2", "vrrp.51")
        # a reload that turns the virtual MAC off moves the VIPs to eth0 with no gap in mastership
        n_roles = len(d2.roles)
        await d2.ha.reload(
            parse_conf(vrrp_conf(100, "200ms").replace("preempt = true", "preempt = true\ngarp_repeat = 2"))
        )
        await d2.ha.vrrp.settle()  # type: ignore[union-attr]
        assert len(d2.roles) == n_roles and d2.role == "master"
        assert {VIP, GW} <= await off(addresses, "had2")
        assert "vrrp.51" not in await off(sh, "ip", "-n", "had2", "link", "show")
        assert (await request("w", timeout=5.0)).endswith(" w")
        return {
            "vmac_takeover_s": round(t_master - t0, 3),
            "requests": len(results),
            "lost": len(lost),
            "lost_window_s": [round(min(lost), 3), round(max(lost), 3)] if lost else [],
        }
    finally:
        stop.set()
        if task is not None:
            with contextlib.suppress(Exception):
                await task
        if cut:
            set_link("hasw", "vhad1", True)
        await d1.stop()
        await d2.stop()
        for s in servers:
            s.close()
        for ns in ("had1", "had2"):
            assert "vrrp.51" not in sh("ip", "-n", ns, "link", "show"), f"{ns}: the macvlan outlived stop"
        assert (
            sh("ip", "netns", "exec", "had1", "sysctl", "-n", "net.ipv4.conf.eth0.arp_ignore").strip() == "0"
        )


async def off(fn, *args):  # type: ignore[no-untyped-def]
    """A blocking probe (an ``ip`` command) in a thread: the directors' timers run meanwhile
    (under emulation one command can take longer than a 200 ms advert interval)."""
    return await asyncio.to_thread(fn, *args)


def addrs(ns: str, ifname: str) -> set[str]:
    from test_ha import addrs_of

    return addrs_of(ns, ifname) if ifname in sh("ip", "-n", ns, "link", "show") else set()


def parse_conf(text: str):  # type: ignore[no-untyped-def]
    from lvsd.config.load import parse_config

    return parse_config(text, "<reload>")


def test_vmac_takeover_keeps_the_clients_arp_entry(topology) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    for ns in ("had1", "had2"):  # the topology's service as set up (track_services' daemons keep theirs)
        subprocess.run(["ip", "netns", "exec", ns, "ipvsadm", "-D", "-t", f"{VIP}:80"], capture_output=True)
        sh("ip", "netns", "exec", ns, "ipvsadm", "-A", "-t", f"{VIP}:80", "-s", "rr")
        for rs in ("10.2.0.11", "10.2.0.12"):
            sh("ip", "netns", "exec", ns, "ipvsadm", "-a", "-t", f"{VIP}:80", "-r", f"{rs}:80", "-m")
    r = asyncio.run(asyncio.wait_for(vmac_takeover(), 150))
    record("vmac", r)
