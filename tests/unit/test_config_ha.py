"""[ha] and [sync]: roles, VRRP parameters, sync daemons by role, sync sysctls."""

from __future__ import annotations

import textwrap

import pytest

from lvsd.config import ConfigError, parse_config
from lvsd.config.model import HAConfig, SyncConfig, VipConfig
from lvsd.ipvs.model import AF_INET, AF_INET6, DaemonState, SyncDaemon


def P(text):
    return parse_config(textwrap.dedent(text))


def E(text) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(textwrap.dedent(text))
    return e.value.errors


def assert_err(errs, path, fragment=""):
    assert any(e.startswith(path + ": ") and fragment in e for e in errs), "\n".join(errs)


def test_static_and_external_roles():
    assert P("").ha == HAConfig(mode="static", role="master")
    assert P('[ha]\nrole = "backup"').ha.role == "backup"
    assert P('[ha]\nmode = "external"').ha.role == "backup"  # safe until told otherwise
    assert P('[ha]\nmode = "external"\nrole = "fault"').ha.role == "fault"
    assert_err(E('[ha]\nrole = "fault"'), "ha.role", 'must be "master" or "backup"')
    assert_err(E('[ha]\nmode = "keepalived"'), "ha.mode", 'must be "static", "external", "vrrp" or "bgp"')


def test_vrrp_every_key():
    ha = P(
        """
        [ha]
        mode = "vrrp"
        interface = "eth0"
        vrid = 51
        priority = 200
        advert_interval = "100ms"
        vips = ["192.0.2.10/24", "192.0.2.11", "192.0.2.12/32"]
        preempt = false
        preempt_delay = "30s"
        version = 3
        notify_master = ["/bin/true", "master"]
        notify_backup = ["/bin/true", "backup"]
        notify_fault = ["/bin/true", "fault"]
        """
    ).ha
    assert ha == HAConfig(
        mode="vrrp",
        role="backup",
        interface="eth0",
        vrid=51,
        priority=200,
        advert_interval=0.1,
        vips=(
            VipConfig(AF_INET, "192.0.2.10", 24),
            VipConfig(AF_INET, "192.0.2.11", 32),
            VipConfig(AF_INET, "192.0.2.12", 32),
        ),
        preempt=False,
        preempt_delay=30.0,
        version=3,
        notify_master=("/bin/true", "master"),
        notify_backup=("/bin/true", "backup"),
        notify_fault=("/bin/true", "fault"),
    )
    assert str(ha.vips[0]) == "192.0.2.10/24"
    ha6 = P('[ha]\nmode = "vrrp"\ninterface = "eth0"\nvrid = 1\nvips = ["2001:db8::10/64", "fe80::1"]').ha
    assert [(v.af, v.address, v.prefixlen) for v in ha6.vips] == [
        (AF_INET6, "2001:db8::10", 64),
        (AF_INET6, "fe80::1", 128),
    ]
    assert ha6.priority == 100 and ha6.advert_interval == 1.0 and ha6.preempt and ha6.version == 3


def test_vrrp_errors():
    errs = E(
        """
        [ha]
        mode = "vrrp"
        role = "master"
        vrid = 256
        priority = 255
        advert_interval = "15ms"
        vips = ["192.0.2.10/24", "2001:db8::1", "bogus", "192.0.2.10/16", 5]
        version = 4
        interface = "a-very-long-interface-name"
        """
    )
    assert_err(errs, "ha.role", "VRRP elects the role")
    assert_err(errs, "ha.vrid", "must be 1..255")
    assert_err(errs, "ha.priority", "must be 1..254")
    assert_err(errs, "ha.advert_interval", "multiple of 10ms")
    assert_err(errs, "ha.vips[2]", '"address/prefix"')
    assert_err(errs, "ha.vips[3]", "duplicate address 192.0.2.10")
    assert_err(errs, "ha.vips[4]", "got integer")
    assert_err(errs, "ha.vips", "mixes IPv4 and IPv6")
    assert_err(errs, "ha.version", "must be 2..3")
    assert_err(errs, "ha.interface", "at most 15 bytes")
    errs = E('[ha]\nmode = "vrrp"')
    for k in ("interface", "vrid", "vips"):
        assert_err(errs, f"ha.{k}", 'required with mode = "vrrp"')
    assert_err(
        E('[ha]\nmode = "vrrp"\ninterface = "eth0"\nvrid = 1\nvips = []'), "ha.vips", "at least one address"
    )
    many = ", ".join(f'"10.0.{i // 250}.{i % 250}"' for i in range(256))
    assert_err(
        E(f'[ha]\nmode = "vrrp"\ninterface = "eth0"\nvrid = 1\nvips = [{many}]'), "ha.vips", "at most 255"
    )
    errs = E(
        '[ha]\nmode = "vrrp"\ninterface = "eth0"\nvrid = 1\nvips = ["2001:db8::1"]\nversion = 2\nadvert_interval = "1500ms"'
    )
    assert_err(errs, "ha.version", "VRRPv2 is IPv4 only")
    assert_err(errs, "ha.advert_interval", "VRRPv2 counts whole seconds")
    errs = E(
        '[ha]\nmode = "vrrp"\ninterface = "eth0"\nvrid = 1\nvips = ["192.0.2.1"]\nadvert_interval = "41s"'
    )
    assert_err(errs, "ha.advert_interval", "at most 40.95s")


def test_vrrp_keys_only_in_vrrp_mode():
    errs = E('[ha]\nmode = "static"\nvrid = 5\npriority = 100\nvips = []')
    for k in ("vrid", "priority", "vips"):
        assert_err(errs, f"ha.{k}", 'only with mode = "vrrp" (mode is "static")')
    # hooks are fine in every mode
    assert P('[ha]\nmode = "external"\nnotify_master = ["/bin/true"]').ha.notify_master == ("/bin/true",)


def test_sync_every_key_and_daemons():
    s = P(
        """
        [sync]
        interface = "eth1"
        syncid = 9
        maxlen = 1400
        group = "239.1.2.3"
        port = 8849
        ttl = 2
        backup_always = true
        on_fault = "none"
        manage_sysctls = true
        sync_threshold = [2, 10]
        sync_refresh_period = "1m"
        sync_retries = 3
        sync_persist_mode = 1
        sync_version = 0
        sync_ports = 4
        sync_qlen_max = 1000
        sync_sock_size = 65536
        """
    ).sync
    assert s == SyncConfig(
        "eth1", 9, 1400, "239.1.2.3", 8849, 2, True, "none", True, (2, 10), 60, 3, 1, 0, 4, 1000, 65536
    )
    m = SyncDaemon(DaemonState.MASTER, "eth1", 9, 1400, "239.1.2.3", 8849, 2)
    b = SyncDaemon(DaemonState.BACKUP, "eth1", 9, 1400, "239.1.2.3", 8849, 2)
    assert s.daemons_for("master") == (m, b)  # backup_always
    assert s.daemons_for("backup") == (b,)
    assert s.daemons_for("fault") == ()
    for d in s.daemons_for("master"):
        d.validate()
    assert s.sysctls() == {
        "sync_threshold": "2 10",
        "sync_refresh_period": "60",
        "sync_retries": "3",
        "sync_persist_mode": "1",
        "sync_version": "0",
        "sync_ports": "4",
        "sync_qlen_max": "1000",
        "sync_sock_size": "65536",
    }


def test_sync_defaults_sync_every_connection():
    s = P('[sync]\ninterface = "eth1"').sync
    assert (s.syncid, s.maxlen, s.group, s.port, s.ttl, s.backup_always, s.on_fault) == (
        0,
        0,
        "",
        0,
        0,
        False,
        "backup",
    )
    assert s.sysctls() == {
        "sync_threshold": "3 0",
        "sync_refresh_period": "10",
        "sync_retries": "0",
        "sync_persist_mode": "0",
        "sync_version": "1",
    }
    assert s.daemons_for("master") == (SyncDaemon(DaemonState.MASTER, "eth1"),)
    assert s.daemons_for("fault") == (SyncDaemon(DaemonState.BACKUP, "eth1"),)
    assert P('[sync]\ninterface = "eth1"\nmanage_sysctls = false').sync.sysctls() == {}
    assert P("").sync is None


def test_sync_errors():
    errs = E(
        """
        [sync]
        syncid = 256
        maxlen = -1
        group = "192.0.2.1"
        port = 70000
        ttl = 256
        on_fault = "master"
        sync_threshold = [50, 3]
        sync_refresh_period = "1.5s"
        sync_retries = 4
        sync_persist_mode = 2
        sync_version = 2
        sync_ports = 0
        """
    )
    assert_err(errs, "sync.interface", "missing")
    assert_err(errs, "sync.syncid", "must be 0..255")
    assert_err(errs, "sync.maxlen", "must be 0..65535")
    assert_err(errs, "sync.group", "must be a multicast address")
    assert_err(errs, "sync.port", "must be 0..65535")
    assert_err(errs, "sync.ttl", "must be 0..255")
    assert_err(errs, "sync.on_fault", 'must be "backup" or "none"')
    assert_err(errs, "sync.sync_threshold", "threshold must be below period")
    assert_err(errs, "sync.sync_refresh_period", "whole number of seconds")
    assert_err(errs, "sync.sync_retries", "must be 0..3")
    assert_err(errs, "sync.sync_persist_mode", "must be 0..1")
    assert_err(errs, "sync.sync_version", "must be 0..1")
    assert_err(errs, "sync.sync_ports", "must be 1..1024")
    assert_err(
        E('[sync]\ninterface = "e"\nsync_threshold = "3 50"'), "sync.sync_threshold", "[threshold, period]"
    )
    assert_err(E('[sync]\ninterface = "e"\nsync_threshold = [3, -1]'), "sync.sync_threshold", "non-negative")
    assert P('[sync]\ninterface = "e"\ngroup = "ff02::81"').sync.group == "ff02::81"


VRRP_HEAD = """
[ha]
mode = "vrrp"
interface = "eth0"
vrid = 51
vips = ["192.0.2.10/24"]
"""


def test_vrrp_unicast_tracking_notify_keys():
    from lvsd.config.ha import TrackInterface, TrackScript, TrackService

    ha = P(
        VRRP_HEAD
        + """
version = 2
auth_pass = "secret"
unicast_peers = ["10.0.0.2", "10.0.0.3"]
unicast_src = "10.0.0.1"
track_interfaces = [{ name = "eth1", weight = -60 }, { name = "eth2" }]
track_services = [{ service = "web", weight = -100 }]
track_scripts = [{ argv = ["/bin/true"], interval = "1s", timeout = "2s", rise = 2, fall = 3, weight = 10 }]
garp_refresh = "60s"
garp_repeat = 2
notify = ["/bin/logger"]
notify_stop = ["/bin/true"]
notify_fifo = "/run/lvsd/vrrp.fifo"
"""
    ).ha
    assert ha.auth_pass == "secret" and ha.version == 2
    assert ha.unicast_peers == ("10.0.0.2", "10.0.0.3") and ha.unicast_src == "10.0.0.1"
    assert ha.track_interfaces == (TrackInterface("eth1", -60), TrackInterface("eth2", 0))
    assert ha.track_services == (TrackService("web", -100),)
    assert ha.track_scripts == (TrackScript(("/bin/true",), 1.0, 2.0, 2, 3, 10),)
    assert (ha.garp_refresh, ha.garp_repeat) == (60.0, 2)
    assert ha.notify == ("/bin/logger",) and ha.notify_stop == ("/bin/true",)
    assert ha.notify_fifo == "/run/lvsd/vrrp.fifo"
    d = P(VRRP_HEAD).ha
    assert (d.unicast_peers, d.auth_pass, d.track_interfaces, d.garp_refresh, d.garp_repeat) == (
        (),
        "",
        (),
        0.0,
        4,
    )


def test_vrrp_unicast_tracking_auth_errors():
    errs = E(
        VRRP_HEAD
        + """
auth_pass = "123456789"
auth_type = "AH"
unicast_peers = ["2001:db8::2", "224.0.0.18", "10.0.0.2", "10.0.0.2"]
track_interfaces = [{ weight = -10 }, { name = "eth1", weight = 300 }, "eth2", { name = "e3" }, { name = "e3" }]
track_services = [{ service = "web", wieght = 1 }]
track_scripts = [{ interval = "1s" }]
notify_fifo = "relative"
"""
    )
    assert_err(errs, "ha.auth_pass", "at most 8 bytes")
    assert_err(errs, "ha.auth_type", "AH (IPsec) is not supported")
    assert_err(errs, "ha.unicast_peers[1]", "multicast")
    assert_err(errs, "ha.unicast_peers[3]", "duplicate address 10.0.0.2")
    assert_err(errs, "ha.unicast_peers", "2001:db8::2 is not of the family of the vips")
    assert_err(errs, "ha.track_interfaces[0].name", "missing")
    assert_err(errs, "ha.track_interfaces[1].weight", "-253..253")
    assert_err(errs, "ha.track_interfaces[2]", "must be a table")
    assert_err(errs, "ha.track_interfaces", "'e3' is tracked twice")
    assert_err(errs, "ha.track_services[0].wieght", "unknown key")
    assert_err(errs, "ha.track_scripts[0].argv", "missing")
    assert_err(errs, "ha.notify_fifo", "absolute file path")
    assert_err(E(VRRP_HEAD + 'auth_pass = "x"\n'), "ha.auth_pass", "only with version = 2")
    assert_err(E(VRRP_HEAD + 'unicast_src = "10.0.0.1"\n'), "ha.unicast_src", "only with unicast_peers")
    assert_err(E('[ha]\nunicast_peers = ["10.0.0.2"]\n'), "ha.unicast_peers", 'only with mode = "vrrp"')


MULTI = """
[ha]
mode = "vrrp"
notify_fifo = "/run/lvsd/fifo"

[[ha.instance]]
name = "front"
interface = "eth0"
vrid = 51
priority = 150
vips = ["192.0.2.10/24"]
unicast_peers = ["192.0.2.2"]

[[ha.instance]]
name = "back"
interface = "eth1"
vrid = 52
vips = ["10.0.1.1/24"]
track_interfaces = [{ name = "eth0" }]

[[ha.group]]
name = "director"
instances = ["front", "back"]
"""


def test_several_instances_and_a_sync_group():
    ha = P(MULTI).ha
    front, back = ha.instances
    assert (front.name, front.interface, front.vrid, front.priority, front.unicast_peers) == (
        "front",
        "eth0",
        51,
        150,
        ("192.0.2.2",),
    )
    assert (back.name, back.vrid, back.priority, str(back.vips[0])) == ("back", 52, 100, "10.0.1.1/24")
    assert ha.vrrp_instances() == (front, back) and front.label == "front"
    assert ha.groups == (("director", ("front", "back")),)
    assert ha.notify_fifo == "/run/lvsd/fifo"
    short = P(VRRP_HEAD).ha
    assert short.vrrp_instances() == (short,) and short.label == "VI_51"  # the shorthand: one instance
    assert P("").ha.vrrp_instances() == ()


def test_several_instances_errors():
    errs = E(
        MULTI.replace('name = "back"', 'name = "front"').replace("vrid = 52", "vrid = 51\nprio = 1")
        + '\n[[ha.group]]\nname = "g2"\ninstances = ["front", "nosuch"]\n'
    )
    assert_err(errs, "ha.instance[1].prio", "unknown key")
    assert_err(errs, "ha.instance[1].name", "duplicate instance name 'front'")
    assert_err(errs, "ha.group[1].instances", "no [[ha.instance]] named 'nosuch'")
    assert_err(errs, "ha.group[1].instances", "'front' is already in group 'director'")
    errs = E(MULTI.replace('notify_fifo = "/run/lvsd/fifo"', 'vrid = 9\nnotify_fifo = "/run/lvsd/fifo"'))
    assert_err(errs, "ha.vrid", "not with [[ha.instance]]")
    errs = E(
        MULTI.replace(
            'name = "back"\ninterface = "eth1"\nvrid = 52', 'name = "back"\ninterface = "eth0"\nvrid = 51'
        )
    )
    assert_err(errs, "ha.instance[1].vrid", "vrid 51 is already used on eth0")
    errs = E(MULTI.replace('vips = ["10.0.1.1/24"]\n', ""))
    assert_err(errs, "ha.instance[1].vips", "missing")
    assert_err(E('[ha]\nmode = "vrrp"\ninstance = []\n'), "ha.instance", "one or more")
    assert_err(E('[ha]\n[[ha.instance]]\nname = "x"\n'), "ha.instance", 'only with mode = "vrrp"')
