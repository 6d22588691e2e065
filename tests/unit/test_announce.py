"""bgp mode's announce rule and announcer: the pure decision (quorum, shared VIPs, withdraw delay,
drain, a restart's pending verdicts), the announcer on MemoryLinks (the dummy link, exactly the
announced VIPs, outside edits repaired, the load-time refusals, the drain file, stop keep/remove,
the sysctls), and the daemon on the memory backend (a server's death withdraws the VIP after the
delay, recovery announces it again, drain-director through the control API and lvsctl)."""

from __future__ import annotations

import asyncio
import functools
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeChecks

from lvsd.cli import lvsctl
from lvsd.config import ConfigError, load_config, parse_config
from lvsd.config.ha_bgp import bgp_of
from lvsd.core import announce as core
from lvsd.core.announce import ServiceInput
from lvsd.core.health import Health, ServerHealth
from lvsd.daemon.announce import AnnounceError, Announcer, parse_bird_protocols, read_drain
from lvsd.daemon.daemon import Daemon, StartError
from lvsd.daemon.ha import HAManager
from lvsd.daemon.links import MemoryLinks
from lvsd.daemon.metrics import render
from lvsd.daemon.notify import Notifier
from lvsd.ipvs.backend import OpKind
from lvsd.ipvs.memory import MemoryBackend
from lvsd.ipvs.model import SVC_F_MH_PORT, DestKey
from tests.conftest import run_coroutine

VIP = "10.0.0.1"


def aio(f: Any) -> Any:
    """Run an async test in a fresh event loop, bounded in time (no asyncio plugin here)."""

    @functools.wraps(f)
    def run(*a: Any, **kw: Any) -> Any:
        return run_coroutine(f(*a, **kw), 60)

    return run


VIP2 = "10.0.0.2"


# --- the pure rule --------------------------------------------------------------------------------


def svc(name: str, below: bool | None, vip: str = VIP, live: int = 1, quorum: int = 1) -> ServiceInput:
    return ServiceInput(name, vip, below, live, quorum)


def test_healthy_service_announces_and_below_quorum_withdraws_only_after_the_delay() -> None:
    s = core.decide([svc("web", False)], {}, 100.0, withdraw_delay=2.0)
    assert s[VIP].announced and s[VIP].reason == core.QUORUM
    s = core.decide([svc("web", True, live=0)], s, 101.0, withdraw_delay=2.0)
    assert s[VIP].announced and s[VIP].reason == core.DELAY and s[VIP].withdraw_at == 103.0
    assert core.next_change(s) == 103.0
    s = core.decide([svc("web", True, live=0)], s, 102.9, withdraw_delay=2.0)
    assert s[VIP].announced and s[VIP].below_since == 101.0  # the delay counts from the first verdict
    s = core.decide([svc("web", True, live=0)], s, 103.0, withdraw_delay=2.0)
    assert not s[VIP].announced and s[VIP].reason == core.BELOW
    assert core.next_change(s) is None


def test_a_flap_shorter_than_the_delay_never_withdraws_and_restarts_the_delay() -> None:
    s = core.decide([svc("web", False)], {}, 0.0, withdraw_delay=2.0)
    s = core.decide([svc("web", True)], s, 1.0, withdraw_delay=2.0)
    s = core.decide([svc("web", False)], s, 1.5, withdraw_delay=2.0)
    assert s[VIP].reason == core.QUORUM and s[VIP].below_since is None
    s = core.decide([svc("web", True)], s, 2.5, withdraw_delay=2.0)
    assert s[VIP].announced and s[VIP].withdraw_at == 4.5


def test_a_shared_vip_is_announced_while_any_of_its_services_is_healthy() -> None:
    inputs = [svc("web", True, live=0), svc("tls", False), svc("dns", True, VIP2, live=0)]
    s = core.decide(inputs, {}, 0.0, withdraw_delay=0.0)
    assert s[VIP].announced and s[VIP].services == ("web", "tls")
    assert not s[VIP2].announced
    assert core.announced(s) == frozenset({VIP})


def test_drain_and_announce_false_withdraw_at_once_whatever_the_health() -> None:
    up = core.decide([svc("web", False)], {}, 0.0, withdraw_delay=60.0)
    s = core.decide([svc("web", False)], up, 1.0, withdraw_delay=60.0, drained=True)
    assert not s[VIP].announced and s[VIP].reason == core.DRAIN
    s = core.decide([svc("web", False)], up, 1.0, withdraw_delay=60.0, enabled=False)
    assert not s[VIP].announced and s[VIP].reason == core.DISABLED


def test_no_verdict_yet_keeps_what_a_restart_left_and_announces_nothing_new() -> None:
    s = core.decide([svc("web", None)], {}, 0.0, withdraw_delay=2.0, present=frozenset({VIP}))
    assert s[VIP].announced and s[VIP].reason == core.PENDING
    s = core.decide([svc("web", None)], {}, 0.0, withdraw_delay=2.0)
    assert not s[VIP].announced and s[VIP].reason == core.PENDING


# --- config -----------------------------------------------------------------------------------------

BGP_CONFIG = """
[ha]
mode = "bgp"
withdraw_delay = "{delay}"
withdraw_grace = "0s"
drain_file = "{drain}"

[api]
socket = "{sock}"

[[service]]
name = "web"
vip = "10.0.0.1:80"
scheduler = "mh"
[[service.server]]
address = "192.168.0.1"
check = {{ type = "tcp" }}
[[service.server]]
address = "192.168.0.2"
check = {{ type = "tcp" }}

[[service]]
name = "dns"
vip = "10.0.0.2:53"
protocol = "udp"
scheduler = "mh"
sched_flags = []
[[service.server]]
address = "192.168.0.1"
"""


def bgp_text(tmp_path: Path, delay: str = "2s") -> str:
    return BGP_CONFIG.format(delay=delay, drain=tmp_path / "drain", sock=tmp_path / "lvsd.sock")


def test_mh_gets_mh_port_in_bgp_mode_unless_sched_flags_are_set(tmp_path: Path) -> None:
    cfg = parse_config(bgp_text(tmp_path))
    web, dns = cfg.services
    assert web.service.flags & SVC_F_MH_PORT
    assert not dns.service.flags & SVC_F_MH_PORT
    plain = parse_config('[[service]]\nvip = "10.0.0.1:80"\nscheduler = "mh"\n')
    assert not plain.services[0].service.flags & SVC_F_MH_PORT


def test_servers_default_to_inhibit_in_bgp_mode_so_the_mh_list_keeps_its_order(tmp_path: Path) -> None:
    cfg = parse_config(bgp_text(tmp_path))
    assert {srv.on_failure for s in cfg.services for srv in s.servers} == {"inhibit"}
    own = parse_config(bgp_text(tmp_path).replace('name = "dns"', 'name = "dns"\non_failure = "remove"'))
    assert [srv.on_failure for srv in own.services[1].servers] == ["remove"]
    assert parse_config('[[service]]\nvip = "10.0.0.1:80"\n[[service.server]]\naddress = "10.1.0.1"\n').services[0].servers[0].on_failure == "remove"


def test_bgp_and_vrrp_keys_together_are_refused_and_bgp_keys_need_bgp_mode() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config('[ha]\nmode = "bgp"\ninterface = "eth0"\nvrid = 5\n')
    assert 'ha.interface: only with mode = "vrrp" (mode is "bgp")' in e.value.errors
    with pytest.raises(ConfigError) as e:
        parse_config('[ha]\nmode = "vrrp"\ninterface = "eth0"\nvrid = 5\nvips = ["10.0.0.9"]\nwithdraw_delay = "1s"\n')
    assert 'ha.withdraw_delay: only with mode = "bgp" (mode is "vrrp")' in e.value.errors
    with pytest.raises(ConfigError) as e:
        parse_config('[ha]\nmode = "bgp"\nrole = "backup"\n')
    assert e.value.errors == ['ha.role: not with mode = "bgp" (every director is active)']


# --- the announcer on MemoryLinks -----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(tmp_path: Path, links: MemoryLinks | None = None, text: str | None = None, **kw: Any) -> tuple[Announcer, MemoryLinks, Clock]:
    links = links or MemoryLinks()
    clock = Clock()
    (tmp_path / "vs").mkdir(exist_ok=True)
    cfg = parse_config(text or bgp_text(tmp_path))
    an = Announcer(links, cfg, sysctl_dir=str(tmp_path / "vs"), clock=clock, net_admin=lambda: True, **kw)
    return an, links, clock


def held(links: MemoryLinks, name: str = "lvsd0") -> set[str]:
    link = [lk for lk in links._links.values() if lk.name == name]
    if not link:
        return set()
    return {a.address for a in links.addresses_now(link[0].index) if a.scope == 0}


@aio
async def test_start_creates_the_dummy_link_up_and_writes_the_sloppy_sysctls(tmp_path: Path) -> None:
    an, links, _ = make(tmp_path)
    await an.start()
    lk = await links.link("lvsd0")
    assert lk.kind == "dummy" and lk.up
    assert (tmp_path / "vs" / "sloppy_tcp").read_text() == "1\n"
    assert (tmp_path / "vs" / "sloppy_sctp").read_text() == "1\n"
    assert an.status()["sysctls"] == {"sloppy_tcp": "1", "sloppy_sctp": "1"}


@aio
async def test_the_link_holds_exactly_the_announced_vips_and_outside_edits_are_repaired(tmp_path: Path) -> None:
    an, links, clock = make(tmp_path)
    await an.start()
    await an.update([svc("web", False), svc("dns", True, VIP2, live=0)])
    assert held(links) == {VIP}
    idx = (await links.link("lvsd0")).index
    await links.delete_address(idx, VIP, 32)  # removed by hand
    await links.add_address(idx, "10.9.9.9", 32)  # added by hand
    await an.update(an.inputs)  # the next resync
    assert held(links) == {VIP}
    assert an.repairs == 2
    await links.delete_link(idx)  # the whole link deleted by hand
    await an.update(an.inputs)
    assert held(links) == {VIP} and (await links.link("lvsd0")).up


@aio
async def test_below_quorum_withdraws_after_withdraw_delay_through_its_own_timer(tmp_path: Path) -> None:
    an, links, clock = make(tmp_path, text=bgp_text(tmp_path, delay="50ms"))
    clock_real = asyncio.get_running_loop().time
    an.clock = clock_real
    await an.start()
    await an.update([svc("web", False)])
    assert held(links) == {VIP}
    await an.update([svc("web", True, live=0)])
    assert held(links) == {VIP} and an.statuses[VIP].reason == core.DELAY
    for _ in range(100):
        await asyncio.sleep(0.02)
        if not held(links):
            break
    assert held(links) == set() and an.statuses[VIP].reason == core.BELOW
    await an.update([svc("web", False)])  # back at quorum + hysteresis: announced again
    assert held(links) == {VIP}
    await an.stop("keep")


@aio
async def test_refusals_at_start_are_one_line_each(tmp_path: Path) -> None:
    links = MemoryLinks()
    links.add_nic("lvsd0")
    an, _, _ = make(tmp_path, links)
    with pytest.raises(AnnounceError, match=r"^ha.announce_interface: 'lvsd0' exists and is a physical link, not a dummy"):
        await an.start()
    links = MemoryLinks()
    eth = links.add_nic("eth0")
    await links.add_address(eth.index, VIP, 24)
    an, _, _ = make(tmp_path, links)
    with pytest.raises(AnnounceError, match=r"^service\[web\].vip: 10.0.0.1 is also on eth0"):
        await an.start()
    an, _, _ = make(tmp_path)
    an.net_admin = lambda: False
    with pytest.raises(AnnounceError, match=r'^ha.mode: "bgp" needs CAP_NET_ADMIN'):
        await an.start()


@aio
async def test_drain_is_kept_in_its_file_and_a_corrupt_file_is_reported_and_ignored(tmp_path: Path) -> None:
    an, links, _ = make(tmp_path)
    await an.start()
    await an.update([svc("web", False)])
    await an.set_drained(True)
    assert held(links) == set() and an.statuses[VIP].reason == core.DRAIN
    assert json.loads((tmp_path / "drain").read_text())["drained"] is True
    an2, _, _ = make(tmp_path, links)  # a restart
    await an2.start()
    await an2.update([svc("web", False)])
    assert an2.drained and held(links) == set()
    await an2.set_drained(False)
    assert held(links) == {VIP}
    (tmp_path / "drain").write_text("{torn")
    drained, err = read_drain(str(tmp_path / "drain"))
    assert not drained and err.startswith(f"{tmp_path / 'drain'}: ignored, unreadable")
    an3, _, _ = make(tmp_path, links)
    await an3.start()
    assert not an3.drained and an3.status()["drain_error"]


@aio
async def test_stop_keep_keeps_the_vips_and_remove_withdraws_and_deletes_the_link(tmp_path: Path) -> None:
    an, links, _ = make(tmp_path)
    await an.start()
    await an.update([svc("web", False)])
    await an.stop("keep")
    assert held(links) == {VIP}
    an2, _, _ = make(tmp_path, links)  # restart: the kept VIP stays until the checks say otherwise
    await an2.start()
    await an2.update([svc("web", None)])
    assert held(links) == {VIP} and an2.statuses[VIP].reason == core.PENDING
    await an2.stop("remove")
    with pytest.raises(OSError):
        await links.link("lvsd0")


def test_bird_protocols_output_is_read_for_bgp_sessions() -> None:
    text = textwrap.dedent("""\
        BIRD 2.0.12 ready.
        Name       Proto      Table      State  Since         Info
        device1    Device     ---        up     10:00:00.000
        direct1    Direct     ---        up     10:00:00.000
        router     BGP        ---        up     10:00:01.000  Established
        spare      BGP        ---        start  10:00:01.000  Active        Socket: Connection refused
        """)
    got = parse_bird_protocols(text)
    assert got["established"] == 1 and [s["name"] for s in got["sessions"]] == ["router", "spare"]
    none = parse_bird_protocols("Unable to connect to server control socket (/run/bird/bird.ctl): No such file or directory\n")
    assert none["established"] == 0 and "Unable to connect" in none["error"]


# --- the daemon -------------------------------------------------------------------------------------


async def wait_for(cond: Any, what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@aio
async def test_daemon_announces_withdraws_after_the_delay_and_drains_through_lvsctl(tmp_path: Path) -> None:
    path = tmp_path / "lvsd.toml"
    path.write_text(bgp_text(tmp_path, delay="100ms"))
    (tmp_path / "vs").mkdir()
    links = MemoryLinks()
    checks: list[FakeChecks] = []

    def make_checks(cb: Any) -> FakeChecks:
        checks.append(FakeChecks(cb))
        return checks[-1]

    def make_ha(cfg: Any, backend: Any, on_role: Any) -> HAManager:
        ha = HAManager(cfg, backend, on_role, links=links, sysctl_dir=str(tmp_path / "vs"))
        ha.announcer_options = {"net_admin": lambda: True, "sysctl_dir": str(tmp_path / "vs")}
        return ha

    d = Daemon(load_config(str(path)), MemoryBackend(), str(path), Notifier(""), checks_factory=make_checks,
               ha_factory=make_ha, install_signals=False)
    task = asyncio.create_task(d.run())
    await asyncio.wait_for(d.running.wait(), 10)
    try:
        assert d.role == "master"
        # the udp service has no checks: it is at quorum at once; web waits for its checks
        assert held(links) == {VIP2}
        a, b = DestKey.of("192.168.0.1", 80), DestKey.of("192.168.0.2", 80)
        checks[0].set(("web", a), ServerHealth(Health.UP))
        checks[0].set(("web", b), ServerHealth(Health.UP))
        await wait_for(lambda: held(links) == {VIP, VIP2}, "web announced")
        checks[0].set(("web", a), ServerHealth(Health.DOWN))
        await d.wait_reconciled()
        assert VIP in held(links)  # one server left: still at quorum
        checks[0].set(("web", b), ServerHealth(Health.DOWN))
        await wait_for(lambda: d.ha.announcer.statuses[VIP].reason == core.DELAY, "withdraw delay")
        await wait_for(lambda: held(links) == {VIP2}, "web withdrawn after the delay")
        metrics = render(d)
        assert 'lvsd_vip_announced{vip="10.0.0.1",reason="below-quorum"} 0' in metrics
        assert 'lvsd_vip_announced{vip="10.0.0.2",reason="quorum"} 1' in metrics
        checks[0].set(("web", b), ServerHealth(Health.UP))
        await wait_for(lambda: held(links) == {VIP, VIP2}, "web announced again")

        sock = str(tmp_path / "lvsd.sock")
        rc = await asyncio.to_thread(lvsctl.main, ["-s", sock, "drain-director"])
        assert rc == 0 and held(links) == set()
        out = await asyncio.to_thread(_status_text, sock)
        assert "DRAINED" in out and "withdrawn" in out and "drain" in out
        rc = await asyncio.to_thread(lvsctl.main, ["-s", sock, "undrain-director"])
        assert rc == 0 and held(links) == {VIP, VIP2}
        status = json.loads(await asyncio.to_thread(_status_json, sock))
        vips = {v["vip"]: (v["announced"], v["reason"]) for v in status["ha"]["announce"]["vips"]}
        assert vips == {VIP: (True, "quorum"), VIP2: (True, "quorum")}
    finally:
        d.request_stop()
        await asyncio.wait_for(task, 10)
    assert held(links) == {VIP, VIP2}  # on_stop = "keep": a restart moves no traffic


@aio
async def test_daemon_start_is_refused_when_a_vip_sits_on_another_interface(tmp_path: Path) -> None:
    path = tmp_path / "lvsd.toml"
    path.write_text(bgp_text(tmp_path))
    links = MemoryLinks()
    eth = links.add_nic("eth0")
    await links.add_address(eth.index, VIP2, 32)

    def make_ha(cfg: Any, backend: Any, on_role: Any) -> HAManager:
        ha = HAManager(cfg, backend, on_role, links=links, sysctl_dir=str(tmp_path))
        ha.announcer_options = {"net_admin": lambda: True, "sysctl_dir": str(tmp_path)}
        return ha

    d = Daemon(load_config(str(path)), MemoryBackend(), str(path), Notifier(""), ha_factory=make_ha,
               install_signals=False, api=False)
    with pytest.raises(StartError, match=r"^HA: service\[dns\].vip: 10.0.0.2 is also on eth0"):
        await d.run()


def _status_text(sock: str) -> str:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        lvsctl.main(["-s", sock, "status"])
    return buf.getvalue()


def _status_json(sock: str) -> str:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        lvsctl.main(["-s", sock, "--json", "status"])
    return buf.getvalue()


def test_bgp_of_is_none_outside_bgp_mode() -> None:
    assert bgp_of(parse_config("")) is None


@aio
async def test_reload_with_announce_false_withdraws_and_true_announces_again(tmp_path: Path) -> None:
    an, links, _ = make(tmp_path)
    await an.start()
    await an.update([svc("web", False)])
    off = parse_config(bgp_text(tmp_path).replace('mode = "bgp"', 'mode = "bgp"\nannounce = false'))
    await an.reload(off)
    assert held(links) == set() and an.statuses[VIP].reason == core.DISABLED
    await an.reload(parse_config(bgp_text(tmp_path)))
    assert held(links) == {VIP}


@aio
async def test_on_stop_remove_withdraws_before_the_services_go_and_removes_the_link(tmp_path: Path) -> None:
    path = tmp_path / "lvsd.toml"
    path.write_text(bgp_text(tmp_path).replace("[ha]", '[daemon]\non_stop = "remove"\n\n[ha]'))
    links = MemoryLinks()
    seen: list[set[str]] = []

    class Backend(MemoryBackend):
        def apply(self, ops):  # type: ignore[no-untyped-def,override]  # records the link at each write
            ops = list(ops)
            if any(op.kind is OpKind.DEL_SERVICE for op in ops):
                seen.append(held(links))
            return super().apply(ops)

    def make_ha(cfg: Any, backend: Any, on_role: Any) -> HAManager:
        ha = HAManager(cfg, backend, on_role, links=links, sysctl_dir=str(tmp_path))
        ha.announcer_options = {"net_admin": lambda: True, "sysctl_dir": str(tmp_path)}
        return ha

    d = Daemon(load_config(str(path)), Backend(), str(path), Notifier(""), ha_factory=make_ha,
               install_signals=False, api=False)
    task = asyncio.create_task(d.run())
    await asyncio.wait_for(d.running.wait(), 10)
    await wait_for(lambda: VIP2 in held(links), "dns announced")
    d.request_stop()
    await asyncio.wait_for(task, 10)
    assert seen and seen[0] == set(), "services were removed while a VIP was still announced"
    with pytest.raises(OSError):
        await links.link("lvsd0")
