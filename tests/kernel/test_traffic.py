"""Real NAT traffic through a service configured by lvsd's NetlinkBackend (run in the VM).

Topology, all inside the VM (10.77.0.0/16, the project's test range):

    ns ltcl 10.77.1.2 --veth-- director (root ns) 10.77.1.1, VIP 10.77.1.100 on the same link
    ns ltr1 10.77.2.11 --veth--+
                                bridge ltbr 10.77.2.1 (root ns)
    ns ltr2 10.77.2.12 --veth--+

The real servers route back through the director (NAT needs the replies). One test walks a
service through its life, checking each step against what the traffic itself says: who
answered, from which client port, and what the kernel reports through the Backend.
"""

from __future__ import annotations

import os

import pytest
from netns import HttpClient, Lab, client_loop, http_get, sh, tally, wait_until

from lvsd.ipvs.backend import Backend, IPVSError, Op
from lvsd.ipvs.model import Destination, DestKey, Forward, Service, ServiceKey

pytestmark = pytest.mark.kernel

VIP = "10.77.1.100"
CLIENT = "10.77.1.2"
RS = {"ltr1": "10.77.2.11", "ltr2": "10.77.2.12"}
STATS_WAIT = 15.0  # the kernel refreshes IPVS counters every 2 s (timers run late under a loaded TCG)


def build(lab: Lab) -> None:
    """The topology above, with one HTTP server per real-server namespace."""
    lab.sysctl("net.ipv4.ip_forward", "1")
    cl = lab.netns("ltcl")
    lab.veth("dltcl", None, "eth0", cl)
    lab.addr("dltcl", "10.77.1.1/24")
    lab.addr("dltcl", f"{VIP}/32")
    lab.addr("eth0", f"{CLIENT}/24", cl)
    lab.bridge("ltbr")
    lab.addr("ltbr", "10.77.2.1/24")
    for name, ip in RS.items():
        ns = lab.netns(name)
        lab.veth(f"d{name}", None, "eth0", ns, master="ltbr")
        lab.addr("eth0", f"{ip}/24", ns)
        lab.route("default", "10.77.2.1", ns)
        lab.http_server(ns, ip, 80)


def dest_by_addr(backend: Backend, key: ServiceKey) -> dict[str, Destination]:
    return {d.key.addr: d for d in backend.dests(key)}


def test_nat_service_balances_drains_and_counts(lab: Lab, ipvs: Backend) -> None:
    build(lab)
    key = ServiceKey.inet("tcp", VIP, 80)
    dests = [Destination(DestKey.of(ip, 80), forward=Forward.MASQ, weight=1) for ip in RS.values()]
    ipvs.apply([Op.add_service(Service(key, scheduler="rr")), *(Op.add_dest(key, d) for d in dests)])

    # What the kernel holds is what was asked for.
    table = ipvs.dump()
    assert list(table) == [key]
    assert table[key].service == Service(key, scheduler="rr")
    assert set(table[key].dests.values()) == set(dests)
    with pytest.raises(IPVSError):  # and it refuses a duplicate, untouched
        ipvs.add_dest(key, dests[0])

    # 1. rr: 20 new connections alternate strictly over the two servers.
    first = client_loop("ltcl", VIP, 80, 20)
    assert tally(first) == {"ltr1": 10, "ltr2": 10}, tally(first)
    for srv in lab.servers:  # NAT keeps the client's own address
        assert {p[0] for p in srv.peers} == {CLIENT}, (srv.name, srv.peers)

    # 2. Two held keep-alive connections, one per server (rr), then weight 0 on ltr2.
    held = [HttpClient("ltcl", VIP, 80) for _ in range(2)]
    try:
        owner = {c.get(): c for c in held}
        assert set(owner) == {"ltr1", "ltr2"}, list(owner)
        d2 = dest_by_addr(ipvs, key)[RS["ltr2"]]
        assert d2.active_conns >= 1, d2
        ipvs.edit_dest(key, Destination(DestKey.of(RS["ltr2"], 80), forward=Forward.MASQ, weight=0))
        assert dest_by_addr(ipvs, key)[RS["ltr2"]].weight == 0

        # New connections all go to ltr1 ...
        drained = client_loop("ltcl", VIP, 80, 10)
        assert tally(drained) == {"ltr1": 10}, tally(drained)
        # ... while the established one to ltr2 keeps being served by ltr2 (drain, not cut).
        assert owner["ltr2"].get() == "ltr2"
        assert owner["ltr1"].get() == "ltr1"

        # 3. The connection table shows every connection with the server that answered it.
        conns = {
            c.client_port: c
            for c in ipvs.connections()
            if c.protocol == "TCP" and c.client_addr == CLIENT and c.virtual_addr == VIP
        }
        for reply in first + drained:
            c = conns.get(reply.local_port)
            assert c is not None, f"client port {reply.local_port} missing from the connection table"
            assert (c.virtual_port, c.dest_addr, c.dest_port) == (80, RS[reply.body], 80), c
        for name, client in owner.items():
            c = conns[client.local_port]
            assert c.dest_addr == RS[name] and c.state == "ESTABLISHED", c
    finally:
        for c in held:
            c.close()

    # 4. Counters (refreshed by the kernel every 2 s): 21 connections to ltr1, 11 to ltr2.
    want = {RS["ltr1"]: 21, RS["ltr2"]: 11}

    def counted() -> dict[str, Destination] | None:
        ds = dest_by_addr(ipvs, key)
        return ds if {a: d.stats.conns for a, d in ds.items()} == want else None

    ds = wait_until(counted, STATS_WAIT, f"dest conns counters to reach {want}")
    for d in ds.values():  # type: ignore[union-attr]
        s = d.stats
        assert s.inpkts > 0 and s.outpkts > 0 and s.inbytes > s.inpkts * 40 and s.outbytes > 0, s
    svc = ipvs.service(key)
    assert svc.stats.conns == 32, svc.stats
    assert svc.stats.inpkts == sum(d.stats.inpkts for d in ds.values()), svc.stats  # type: ignore[union-attr]

    # 5. Deleting the service stops the traffic: the VIP is just a local address with nothing on :80.
    ipvs.del_service(key)
    assert ipvs.services() == []
    with pytest.raises(ConnectionRefusedError):
        client_loop("ltcl", VIP, 80, 1, timeout=5)


def test_lab_undoes_everything_even_after_a_failure() -> None:
    """The helpers every kernel test relies on leave nothing behind, also when a test fails."""
    before_links = sh("ip", "-br", "link")
    before_addrs = sh("ip", "-br", "addr")
    forward = sh("sysctl", "-n", "net.ipv4.ip_forward")
    with pytest.raises(RuntimeError, match="boom"), Lab() as lab:
        lab.sysctl("net.ipv4.ip_forward", "0" if forward.strip() == "1" else "1")
        a = lab.netns("ltxa")
        lab.bridge("ltxbr")
        lab.addr("ltxbr", "10.77.9.1/24")
        lab.veth("ltxv", None, "eth0", a, master="ltxbr")
        lab.addr("eth0", "10.77.9.2/24", a)
        lab.route("default", "10.77.9.1", a)
        srv = lab.http_server(None, "10.77.9.1", 8080, name="root")
        assert http_get(a.name, "10.77.9.1", 8080).body == "root"
        assert srv.peers[0][0] == "10.77.9.2"
        raise RuntimeError("boom")
    assert not os.path.exists("/run/netns/ltxa")
    assert sh("ip", "-br", "link") == before_links
    assert sh("ip", "-br", "addr") == before_addrs
    assert sh("sysctl", "-n", "net.ipv4.ip_forward") == forward
    with pytest.raises(ConnectionRefusedError):  # the server is gone with its socket
        http_get(None, "127.0.0.1", 8080)
