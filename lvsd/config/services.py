"""Services, servers and the sorry server: the keys whose rules span several keys (vip, fwmark,
address, port, name, ...) and the cross-field rules. The inheritable keys are rows in ``layers``.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from lvsd.ipvs.model import (
    AF_INET,
    AF_INET6,
    SVC_F_ONEPACKET,
    SVC_F_PERSISTENT,
    TUN_F_NOCSUM,
    Destination,
    DestKey,
    Protocol,
    Service,
    ServiceKey,
    TunType,
)

from .keys import row
from .layers import (
    BUILTIN_SERVER,
    BUILTIN_SERVICE,
    FAMILIES,
    FORWARDS,
    SCHED_FLAGS,
    SERVER_KEYS,
    SERVER_ROWS,
    SERVICE_INHERITED,
    SERVICE_KEYS,
    SERVICE_ONLY,
    SORRY_KEYS,
    SORRY_ROWS,
    server_layer,
    service_layer,
    tunnel,
)
from .model import ServerConfig, ServiceConfig
from .reader import (
    _IPV4_RE,
    UINT32_MAX,
    Reader,
    Table,
    _not_unicast,
    _p,
    _parse_port,
    _show,
    _split_hostport,
    _tname,
    system_resolver,
)

_FWD_INT = {k: int(v) for k, v in FORWARDS.items()}
_SERVER_KEYSET = frozenset(SERVER_KEYS)
_SORRY_WEIGHT = row(SORRY_ROWS, "weight")
_ENABLED = row(SERVER_ROWS, "enabled")
_SERVICE_KEYS_ELSEWHERE = {k: "a service key" for k in SERVICE_ONLY + SERVICE_INHERITED}
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@/+-]{0,63}")
_HOST_RE = re.compile(r"(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


# --- services -----------------------------------------------------------------------------------


class _Builder:
    """Builds services and servers from layers; holds cross-service state (names, keys)."""

    def __init__(self, ctx: Reader, defaults_service: dict[str, Any], defaults_server: dict[str, Any]) -> None:
        self.ctx = ctx
        self.dsvc = {**BUILTIN_SERVICE, **defaults_service}
        self.dsrv = {**BUILTIN_SERVER, **defaults_server}
        self.names: dict[str, str] = {}
        self.keys: dict[ServiceKey, str] = {}
        self._addr_cache: dict[tuple[str, int], tuple[int, str]] = {}

    def address(self, value: object, parent: str, af: int) -> tuple[int, str] | None:
        """``parent``.address: an IP literal, or a hostname resolved now: first address of the
        service's family, else (for tunnels) of the other family. Cached per (text, family)."""
        hit = self._addr_cache.get((value, af)) if isinstance(value, str) else None
        if hit is not None:
            return hit
        ctx = self.ctx
        path = _p(parent, "address")
        if not isinstance(value, str) or not value:
            ctx.err(path, f"must be an IP address or hostname string, got {_tname(value)} {_show(value)}")
            return None
        if _IPV4_RE.fullmatch(value) and 0 < int(value[: value.index(".")]) < 224:
            out = (AF_INET, value)  # a canonical unicast dotted quad: the common case, no ipaddress needed
            self._addr_cache[(value, af)] = out
            return out
        text = value[1:-1] if value.startswith("[") and value.endswith("]") else value
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            pass
        else:
            why = _not_unicast(ip)
            if why:
                ctx.err(path, f"{_show(value)} is {why}")
                return None
            out = ((AF_INET6 if ip.version == 6 else AF_INET), str(ip))
            self._addr_cache[(value, af)] = out
            return out
        if not _HOST_RE.fullmatch(value) or value.replace(".", "").isdigit():
            ctx.err(path, f"not an IP address or hostname: {_show(value)}")
            return None
        resolver = ctx.resolver or system_resolver
        addrs = list(resolver(value, af)) or list(resolver(value, None))
        if not addrs:
            ctx.err(path, f"hostname {_show(value)} does not resolve")
            return None
        a = ipaddress.ip_address(addrs[0])
        out = ((AF_INET6 if a.version == 6 else AF_INET), str(a))
        self._addr_cache[(value, af)] = out
        return out

    def service(self, tbl: object, index: int) -> ServiceConfig | None:
        ctx = self.ctx
        if not isinstance(tbl, dict):
            ctx.err(f"service[{index}]", f"must be a table ([[service]]), got {_tname(tbl)}")
            return None
        name: Any = tbl.get("name")  # a str once it is named or made up below
        named = isinstance(name, str) and bool(_NAME_RE.fullmatch(name))
        path = f"service[{name}]" if named else f"service[{index}]"
        if name is not None and not named:
            if not isinstance(name, str):
                ctx.err(_p(path, "name"), f"must be a string, got {_tname(name)} {_show(name)}")
            else:
                ctx.err(
                    _p(path, "name"),
                    f"must be 1..64 characters: letters, digits and _ . : @ / + - (starting with a letter or digit), got {_show(name)}",
                )
        ctx.keys(
            tbl,
            path,
            SERVICE_KEYS,
            {
                "address": "a server key: put it in [[service.server]]",
                "port": "a server key; the service's port goes in vip",
            },
        )
        svc_layer = service_layer(ctx, tbl, path)
        srv_layer = server_layer(ctx, tbl, path)
        s = {**self.dsvc, **svc_layer}
        sl = {**self.dsrv, **srv_layer}

        # the key: vip or fwmark
        key: ServiceKey | None = None
        vip_text = ""
        has_vip, has_mark = "vip" in tbl, "fwmark" in tbl
        if has_vip and has_mark:
            ctx.err(_p(path, "fwmark"), "use vip or fwmark, not both")
        elif not has_vip and not has_mark:
            ctx.err(path, 'missing vip ("address:port") or fwmark')
        elif has_vip:
            vip_text = tbl["vip"]
            if "family" in svc_layer:
                ctx.err(_p(path, "family"), "only with fwmark (a vip's family is its address's)")
            key = self._vip(vip_text, _p(path, "vip"), s["protocol"])
        else:
            mark = ctx.get_int(tbl, "fwmark", path, 1, UINT32_MAX)
            if "protocol" in svc_layer:
                ctx.err(_p(path, "protocol"), "a fwmark service matches by mark: it has no protocol")
            if mark is not None:
                key = ServiceKey.fwmark_key(mark, FAMILIES[s["family"]])
                vip_text = f"fwmark {mark}"
        af = key.af if key else AF_INET

        if not named:
            name = (
                f"fwmark/{key.fwmark}" + ("/inet6" if key.af == AF_INET6 else "")
                if key and key.fwmark
                else (
                    f"{Protocol(key.protocol).name.lower()}/{key.addr if key.af == AF_INET else '[' + key.addr + ']'}:{key.port}"
                    if key
                    else f"#{index}"
                )
            )
        if named or key is not None:
            other = self.names.get(name)
            if other is not None:
                ctx.err(
                    _p(path, "name") if named else path,
                    f"duplicate service name {_show(name)} (also service[{other}])",
                )
            else:
                self.names[name] = str(index)
        if key is not None:
            other = self.keys.get(key)
            if other is not None:
                ctx.err(
                    _p(path, "fwmark" if key.fwmark else "vip"),
                    f"duplicate virtual service {key} (also {other})",
                )
            else:
                self.keys[key] = path

        # kernel service
        proto_bad = "protocol" in tbl and "protocol" not in svc_layer
        flags = 0
        timeout = 0
        netmask = -1
        pe = ""
        pers = s["persistence"]
        if pers is not None:
            flags |= SVC_F_PERSISTENT
            timeout, nm, pe = pers
            # an inherited value is judged per service: the error names the service and the origin
            ppath = _p(path, "persistence")
            origin = "" if "persistence" in svc_layer else " (from [defaults])"
            if nm is not None:
                netmask = self._netmask(nm, _p(ppath, "netmask"), af, origin)
            if pe and key is not None and not key.fwmark and key.protocol != Protocol.UDP and not proto_bad:
                ctx.err(
                    _p(ppath, "engine"),
                    f'"{pe}"{origin} works only for UDP services (protocol is {s["protocol"]})',
                )
        elif key is not None and not key.fwmark and key.port == 0:
            ctx.err(_p(path, "vip"), "port 0 (all ports) needs persistence")
        sched = s["scheduler"]
        sched_bad = "scheduler" in tbl and "scheduler" not in svc_layer
        for f in s["sched_flags"]:
            bit, needs = SCHED_FLAGS[f]
            if needs is not None and sched != needs and not sched_bad:
                origin = "" if "sched_flags" in svc_layer else " (from [defaults])"
                ctx.err(
                    _p(path, "sched_flags"),
                    f'"{f}"{origin} needs scheduler = "{needs}" (scheduler is "{sched}")',
                )
            flags |= bit
        if s["one_packet"]:
            if key is not None and not key.fwmark and key.protocol != Protocol.UDP and not proto_bad:
                origin = "" if "one_packet" in svc_layer else " (one_packet from [defaults])"
                ctx.err(
                    _p(path, "one_packet"),
                    f"only for UDP (or fwmark) services (protocol is {s['protocol']}){origin}",
                )
            flags |= SVC_F_ONEPACKET
        fwd_bad = "forward" in tbl and "forward" not in srv_layer
        if "tunnel" in srv_layer and sl["forward"] != "tun" and not fwd_bad:
            ctx.err(_p(path, "tunnel"), f'only with forward = "tun" (forward is "{sl["forward"]}")')

        # servers
        servers: list[ServerConfig] = []
        seen: dict[DestKey, int] = {}
        raw = tbl.get("server", [])
        if not isinstance(raw, list):
            ctx.err(_p(path, "server"), f"must be an array of tables ([[service.server]]), got {_tname(raw)}")
            raw = []
        for i, st in enumerate(raw):
            srv = self.server(st, f"{path}.server[{i}]", name, key, sl, seen, i)
            if srv is not None:
                servers.append(srv)

        # sorry server
        sorry = None
        if "sorry_server" in tbl:
            sorry = self.sorry(tbl, path, key, sl, seen)
        if s["hysteresis"] and not s["quorum"]:
            ctx.err(_p(path, "hysteresis"), "only meaningful with quorum > 0")

        if key is None:
            return None
        svc = Service(key, scheduler=sched, flags=flags, timeout=timeout, netmask=netmask, pe_name=pe)
        return ServiceConfig(
            name=name,
            key=key,
            service=svc,
            servers=tuple(servers),
            vip=vip_text if isinstance(vip_text, str) else "",
            quorum=s["quorum"],
            hysteresis=s["hysteresis"],
            sorry_server=sorry,
            on_failure=sl["on_failure"],
            notify_up=sl["notify_up"],
            notify_down=sl["notify_down"],
            quorum_up=s["quorum_up"],
            quorum_down=s["quorum_down"],
            checks=sl["check"],
            sorry_mode=s["sorry_mode"],
            sorry_inhibit=s["sorry_inhibit"],
            drain_on_remove=s["drain_on_remove"],
        )

    def _vip(self, vip: object, path: str, protocol: str) -> ServiceKey | None:
        ctx = self.ctx
        if not isinstance(vip, str):
            ctx.err(path, f'must be a string "address:port", got {_tname(vip)} {_show(vip)}')
            return None
        hp = _split_hostport(vip)
        if hp is None or hp[1] is None:
            ctx.err(path, f'must be "address:port" (IPv6: "[address]:port"), got {_show(vip)}')
            return None
        a = ctx.ip(hp[0], path)
        port = _parse_port(hp[1])
        if port is None:
            ctx.err(path, f"port must be 0..65535, got {_show(hp[1])}")
        if a is None or port is None:
            return None
        return ServiceKey(a[0], int(Protocol[protocol.upper()]), a[1], port, 0)

    def _netmask(self, nm: int | str, path: str, af: int, origin: str = "") -> int:
        ctx = self.ctx
        if af == AF_INET6:
            if isinstance(nm, int) and 1 <= nm <= 128:
                return nm
            ctx.err(path, f"must be an IPv6 prefix length 1..128, got {_show(nm)}{origin}")
            return -1
        if isinstance(nm, int):
            if 0 <= nm <= 32:
                return (UINT32_MAX << (32 - nm)) & UINT32_MAX
            ctx.err(path, f"must be a dotted IPv4 mask or a prefix length 0..32, got {_show(nm)}{origin}")
            return -1
        try:
            return int(ipaddress.IPv4Address(nm))
        except ValueError:
            ctx.err(path, f'must be a dotted IPv4 mask such as "255.255.255.0", got {_show(nm)}{origin}')
            return -1

    def _dest(
        self, dk: DestKey, fwd: str, weight: int, thr: tuple[int, int], tun: tuple[int, int, int] | None
    ) -> Destination:
        if fwd != "tun" or tun is None:
            tun = (TunType.IPIP, 0, TUN_F_NOCSUM)
        return Destination(dk, _FWD_INT[fwd], weight, thr[0], thr[1], int(tun[0]), tun[1], tun[2])

    def server(
        self,
        st: object,
        path: str,
        svc_name: str,
        skey: ServiceKey | None,
        inherited: dict[str, Any],
        seen: dict[DestKey, int],
        index: int,
    ) -> ServerConfig | None:
        ctx = self.ctx
        if not isinstance(st, dict):
            ctx.err(path, f"must be a table ([[service.server]]), got {_tname(st)}")
            return None
        if not _SERVER_KEYSET.issuperset(st):
            ctx.keys(st, path, SERVER_KEYS, _SERVICE_KEYS_ELSEWHERE)
        layer = server_layer(ctx, st, path)
        m = {**inherited, **layer} if layer else inherited
        enabled = st.get("enabled")
        if enabled is None:
            enabled = _ENABLED.default
        elif enabled is not True:
            enabled = _ENABLED.kind(ctx, st, "enabled", path, _ENABLED.default, {})
        if "address" not in st:
            ctx.err(_p(path, "address"), "missing")
            addr = None
        else:
            addr = self.address(st["address"], path, skey.af if skey else AF_INET)
        vport = skey.port if skey else 0
        port = ctx.get_int(st, "port", path, 0, 65535, vport) if "port" in st else vport
        fwd = m["forward"]
        # a bad forward is already reported: judge nothing else by a method we do not know
        fwd_ok = not ("forward" in st and "forward" not in layer)
        if fwd_ok and skey is not None and not skey.fwmark and fwd in ("dr", "tun") and port != vport:
            ctx.err(
                _p(path, "port"), f'must equal the VIP\'s port ({vport}) with forward = "{fwd}", got {port}'
            )
        if fwd_ok and "tunnel" in layer and fwd != "tun":
            ctx.err(_p(path, "tunnel"), f'only with forward = "tun" (forward is "{fwd}")')
        if addr is None or skey is None:
            return None
        af, text = addr
        if fwd_ok and af != skey.af and fwd != "tun":
            ctx.err(
                _p(path, "address"),
                f"an {'IPv6' if af == AF_INET6 else 'IPv4'} server behind an {'IPv6' if skey.af == AF_INET6 else 'IPv4'} "
                f'service needs forward = "tun" (forward is "{fwd}")',
            )
        dk = DestKey(af, text, port)
        if dk in seen:
            ctx.err(path, f"duplicate server {dk} (also server[{seen[dk]}])")
            return None
        seen[dk] = index
        checks = m["check"]
        if port == 0 and checks:
            for j, c in enumerate(checks):
                if getattr(c, "connect_port", 0) is None:
                    if "check" in layer:
                        cp = _p(path, "check")
                        cp = _p(cp, j) if isinstance(st["check"], list) else cp
                        what = f"{c.type} check"
                    else:
                        cp, what = path, f"inherited {c.type} check"
                    ctx.err(cp, f'{what} of a server with port 0 needs connect = "address:port" or ":port"')
        if not enabled or not fwd_ok:
            return None
        tun = m["tunnel"]
        dest = self._dest(dk, fwd, m["weight"], m["thresholds"], tun)
        return ServerConfig(
            service=svc_name,
            key=dk,
            dest=dest,
            address=st["address"],
            checks=checks,
            on_failure=m["on_failure"],
            notify_up=m["notify_up"],
            notify_down=m["notify_down"],
        )

    def sorry(
        self, tbl: Table, path: str, skey: ServiceKey | None, inherited: dict[str, Any], seen: dict[DestKey, int]
    ) -> Destination | None:
        ctx = self.ctx
        p = _p(path, "sorry_server")
        t = ctx.table(tbl, "sorry_server", path)
        if t is None:
            return None
        ctx.keys(t, p, SORRY_KEYS)
        if "address" not in t:
            ctx.err(_p(p, "address"), "missing")
            return None
        addr = self.address(t["address"], p, skey.af if skey else AF_INET)
        vport = skey.port if skey else 0
        port = ctx.get_int(t, "port", p, 0, 65535, vport)
        fwd = ctx.choice(t, "forward", p, tuple(FORWARDS), inherited["forward"])
        w = _SORRY_WEIGHT
        weight = w.kind(ctx, t, w.name, p, w.default, {})
        tun = tunnel(ctx, t, "tunnel", p, None, {}) if "tunnel" in t else None
        if tun is not None and fwd != "tun":
            ctx.err(_p(p, "tunnel"), f'only with forward = "tun" (forward is "{fwd}")')
        if addr is None or skey is None:
            return None
        if not skey.fwmark and fwd in ("dr", "tun") and port != vport:
            ctx.err(_p(p, "port"), f'must equal the VIP\'s port ({vport}) with forward = "{fwd}", got {port}')
        if addr[0] != skey.af and fwd != "tun":
            ctx.err(_p(p, "address"), 'address family differs from the service\'s: needs forward = "tun"')
        dk = DestKey(addr[0], addr[1], port)
        if dk in seen:
            ctx.err(p, f"the sorry server {dk} is also server[{seen[dk]}]")
        if tun is None and fwd == "tun":
            tun = (TunType.IPIP, 0, TUN_F_NOCSUM)
        return self._dest(dk, fwd, weight, (0, 0), tun)

