"""The daemon-wide sections: ``[daemon]``, ``[ipvs]``, ``[ha]``, ``[sync]``, ``[api]``, ``[metrics]``."""

from __future__ import annotations

import ipaddress
import re

from lvsd.ipvs.model import AF_INET, AF_INET6, IP_VS_IFNAME_MAXLEN, Timeouts

from .model import (
    HA_MODES,
    LOG_LEVELS,
    ON_START,
    ON_STOP,
    SYNC_ON_FAULT,
    APIConfig,
    DaemonConfig,
    HAConfig,
    IPVSConfig,
    MetricsConfig,
    SyncConfig,
    VipConfig,
)
from .reader import INT32_MAX, Reader, Table, _not_unicast, _p, _parse_port, _show, _split_hostport, _tname

TOP_KEYS = ("daemon", "ipvs", "defaults", "service", "ha", "sync", "api", "metrics")
DAEMON_KEYS = ("on_start", "on_stop", "resync", "log_level", "hook_timeout", "state_file")
IPVS_KEYS = ("timeouts",)
TIMEOUT_KEYS = ("tcp", "tcpfin", "udp")
#: [ha] keys that only mode = "vrrp" takes
VRRP_KEYS = (
    "interface",
    "vrid",
    "priority",
    "advert_interval",
    "vips",
    "preempt",
    "preempt_delay",
    "version",
)
HA_KEYS = ("mode", "role") + VRRP_KEYS + ("notify_master", "notify_backup", "notify_fault")
SYNC_KEYS = (
    "interface",
    "syncid",
    "maxlen",
    "group",
    "port",
    "ttl",
    "backup_always",
    "on_fault",
    "manage_sysctls",
    "sync_threshold",
    "sync_refresh_period",
    "sync_retries",
    "sync_persist_mode",
    "sync_version",
    "sync_ports",
    "sync_qlen_max",
    "sync_sock_size",
)
API_KEYS = ("socket", "mode")
METRICS_KEYS = ("listen",)


def _daemon(ctx: Reader, t: Table) -> DaemonConfig:
    ctx.keys(t, "daemon", DAEMON_KEYS)
    return DaemonConfig(
        on_start=ctx.choice(t, "on_start", "daemon", ON_START, "adopt"),
        on_stop=ctx.choice(t, "on_stop", "daemon", ON_STOP, "keep"),
        resync=ctx.duration(t, "resync", "daemon", 30.0, hi=86400),
        log_level=ctx.choice(t, "log_level", "daemon", LOG_LEVELS, "info"),
        hook_timeout=ctx.duration(t, "hook_timeout", "daemon", 10.0, lo=0.01, hi=3600),
        state_file=_state_file(ctx, t),
    )


def _state_file(ctx: Reader, t: Table) -> str:
    path = ctx.get_str(t, "state_file", "daemon", "")
    if path and (not path.startswith("/") or path.endswith("/") or "\0" in path):
        ctx.err("daemon.state_file", f'must be an absolute file path, or "" for none, got {_show(path)}')
        return ""
    return path


def _ipvs(ctx: Reader, t: Table) -> IPVSConfig:
    ctx.keys(t, "ipvs", IPVS_KEYS)
    tt = ctx.table(t, "timeouts", "ipvs")
    if tt is None:
        return IPVSConfig()
    p = "ipvs.timeouts"
    ctx.keys(tt, p, TIMEOUT_KEYS)
    vals = [ctx.duration(tt, k, p, 0, whole=True, hi=INT32_MAX) for k in TIMEOUT_KEYS]
    if not tt:
        return IPVSConfig()
    return IPVSConfig(Timeouts(*vals))


def _ha(ctx: Reader, t: Table) -> HAConfig:
    p = "ha"
    ctx.keys(t, p, HA_KEYS)
    mode = ctx.choice(t, "mode", p, HA_MODES, "static")
    role_default = {"static": "master", "external": "backup", "vrrp": "backup"}[mode]
    role = role_default
    if "role" in t:
        if mode == "vrrp":
            ctx.err(_p(p, "role"), 'not with mode = "vrrp" (VRRP elects the role)')
        else:
            choices = ("master", "backup") if mode == "static" else ("master", "backup", "fault")
            role = ctx.choice(t, "role", p, choices, role_default)
    version = ctx.get_int(t, "version", p, 2, 3, 3)
    if mode != "vrrp":
        for k in VRRP_KEYS:
            if k in t:
                ctx.err(_p(p, k), f'only with mode = "vrrp" (mode is "{mode}")')
    interface = ctx.get_str(t, "interface", p, "")
    if interface and len(interface.encode()) >= IP_VS_IFNAME_MAXLEN:
        ctx.err(
            _p(p, "interface"), f"must be at most {IP_VS_IFNAME_MAXLEN - 1} bytes, got {_show(interface)}"
        )
    vrid = ctx.get_int(t, "vrid", p, 1, 255, 0)
    priority = ctx.get_int(t, "priority", p, 1, 254, 100)
    adv = ctx.duration(t, "advert_interval", p, 1.0, lo=0.01, hi=40.95)
    if version == 2 and adv != int(adv):
        ctx.err(_p(p, "advert_interval"), "VRRPv2 counts whole seconds (use version = 3 for less)")
    elif abs(adv * 100 - round(adv * 100)) > 1e-6:
        ctx.err(_p(p, "advert_interval"), "VRRPv3 counts centiseconds: must be a multiple of 10ms")
    vips: list[VipConfig] = []
    raw = t.get("vips", [])
    if not isinstance(raw, list):
        ctx.err(_p(p, "vips"), f'must be a list of "address/prefix" strings, got {_tname(raw)}')
        raw = []
    for i, v in enumerate(raw):
        vp = _p(_p(p, "vips"), i)
        if not isinstance(v, str):
            ctx.err(vp, f'must be "address" or "address/prefix", got {_tname(v)}')
            continue
        try:
            iface = ipaddress.ip_interface(v)
        except ValueError:
            ctx.err(vp, f'must be "address" or "address/prefix", got {_show(v)}')
            continue
        why = _not_unicast(iface.ip)
        if why:
            ctx.err(vp, f"{_show(v)} is {why}")
            continue
        vip = VipConfig(AF_INET6 if iface.version == 6 else AF_INET, str(iface.ip), iface.network.prefixlen)
        if any(x.address == vip.address for x in vips):
            ctx.err(vp, f"duplicate address {vip.address}")
            continue
        vips.append(vip)
    if vips and len({v.af for v in vips}) > 1:
        ctx.err(_p(p, "vips"), "mixes IPv4 and IPv6: a VRRP instance is one family")
    if vips and version == 2 and vips[0].af == AF_INET6:
        ctx.err(_p(p, "version"), "VRRPv2 is IPv4 only")
    if mode == "vrrp":
        for k in ("interface", "vrid"):
            if k not in t:
                ctx.err(_p(p, k), 'missing (required with mode = "vrrp")')
        if "vips" not in t:
            ctx.err(_p(p, "vips"), 'missing (required with mode = "vrrp")')
        elif not raw:
            ctx.err(_p(p, "vips"), 'must list at least one address with mode = "vrrp"')
    if len(vips) > 255:
        ctx.err(_p(p, "vips"), f"at most 255 addresses fit in a VRRP advertisement, got {len(vips)}")
    return HAConfig(
        mode=mode,
        role=role,
        interface=interface,
        vrid=vrid,
        priority=priority,
        advert_interval=adv,
        vips=tuple(vips),
        preempt=ctx.get_bool(t, "preempt", p, True),
        preempt_delay=ctx.duration(t, "preempt_delay", p, 0.0, hi=3600),
        version=version,
        notify_master=ctx.argv(t, "notify_master", p, ()),
        notify_backup=ctx.argv(t, "notify_backup", p, ()),
        notify_fault=ctx.argv(t, "notify_fault", p, ()),
    )


def _sync(ctx: Reader, t: Table) -> SyncConfig | None:
    p = "sync"
    ctx.keys(t, p, SYNC_KEYS)
    interface = ctx.get_str(t, "interface", p)
    if interface is None and "interface" not in t:
        ctx.err(_p(p, "interface"), "missing: the interface the sync daemon sends and listens on")
    if interface and len(interface.encode()) >= IP_VS_IFNAME_MAXLEN:
        ctx.err(
            _p(p, "interface"), f"must be at most {IP_VS_IFNAME_MAXLEN - 1} bytes, got {_show(interface)}"
        )
    group = ""
    if "group" in t:
        a = ctx.ip(t["group"], _p(p, "group"), unicast=False)
        if a is not None:
            if not ipaddress.ip_address(a[1]).is_multicast:
                ctx.err(_p(p, "group"), f"must be a multicast address, got {_show(t['group'])}")
            group = a[1]
    thr = t.get("sync_threshold", [3, 0])
    if (
        not isinstance(thr, list)
        or len(thr) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= INT32_MAX for x in thr)
    ):
        ctx.err(
            _p(p, "sync_threshold"),
            f"must be [threshold, period] (two non-negative integers), got {_show(thr)}",
        )
        thr = [3, 0]
    elif thr[1] and thr[0] >= thr[1]:
        ctx.err(
            _p(p, "sync_threshold"),
            f"threshold must be below period unless period is 0 (the kernel refuses it), got {thr}",
        )
        thr = [3, 0]
    return SyncConfig(
        interface=interface or "",
        syncid=ctx.get_int(t, "syncid", p, 0, 255, 0),
        maxlen=ctx.get_int(t, "maxlen", p, 0, 65535, 0),
        group=group,
        port=ctx.get_int(t, "port", p, 0, 65535, 0),
        ttl=ctx.get_int(t, "ttl", p, 0, 255, 0),
        backup_always=ctx.get_bool(t, "backup_always", p, False),
        on_fault=ctx.choice(t, "on_fault", p, SYNC_ON_FAULT, "backup"),
        manage_sysctls=ctx.get_bool(t, "manage_sysctls", p, True),
        sync_threshold=(thr[0], thr[1]),
        sync_refresh_period=ctx.duration(t, "sync_refresh_period", p, 10, whole=True, hi=INT32_MAX // 1000),
        sync_retries=ctx.get_int(t, "sync_retries", p, 0, 3, 0),
        sync_persist_mode=ctx.get_int(t, "sync_persist_mode", p, 0, 1, 0),
        sync_version=ctx.get_int(t, "sync_version", p, 0, 1, 1),
        sync_ports=ctx.get_int(t, "sync_ports", p, 1, 1024, None),
        sync_qlen_max=ctx.get_int(t, "sync_qlen_max", p, 1, INT32_MAX, None),
        sync_sock_size=ctx.get_int(t, "sync_sock_size", p, 0, INT32_MAX, None),
    )


def _api(ctx: Reader, t: Table) -> APIConfig:
    ctx.keys(t, "api", API_KEYS)
    sock = ctx.get_str(t, "socket", "api", "/run/lvsd/lvsd.sock")
    if not sock.startswith("/") or len(sock.encode()) > 107:
        ctx.err("api.socket", f"must be an absolute path of at most 107 bytes, got {_show(sock)}")
    mode = t.get("mode", "0660")
    if isinstance(mode, str) and re.fullmatch(r"0?[0-7]{3}", mode):
        mode = int(mode, 8)
    else:
        ctx.err("api.mode", f'must be an octal permission string such as "0660", got {_show(mode)}')
        mode = 0o660
    return APIConfig(sock, mode)


def _metrics(ctx: Reader, t: Table) -> MetricsConfig:
    ctx.keys(t, "metrics", METRICS_KEYS)
    listen = ctx.get_str(t, "listen", "metrics")
    if listen is None:
        return MetricsConfig()
    hp = _split_hostport(listen)
    port = _parse_port(hp[1]) if hp and hp[1] is not None else None
    if hp is None or port is None or port == 0:
        ctx.err("metrics.listen", f'must be "address:port" (IPv6: "[address]:port"), got {_show(listen)}')
        return MetricsConfig()
    host = hp[0]
    if host:
        a = ctx.ip(host, "metrics.listen", unicast=False)  # "0.0.0.0" / "::" = every address
        if a is None:
            return MetricsConfig()
        host = a[1]
    else:
        host = "0.0.0.0"
    return MetricsConfig(listen, host, port)

