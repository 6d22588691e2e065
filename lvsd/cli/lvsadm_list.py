"""ipvsadm 1.31 listings for lvsadm: -L in every format, -S rules, -c, --timeout, --daemon, and
the --json addition. Output is built as a list of lines, byte-for-byte what ipvsadm prints,
including its quirks: glibc's merge sort with ipvsadm's wrapping comparators, the 33/28-column
truncation of names, signed printing of fwmarks and weights, (null) never reached.
"""

from .lvsadm_parse import (
    AF_INET,
    AF_INET6,
    FMT_EXACT,
    FMT_NOSORT,
    FMT_NUMERIC,
    FMT_PERSISTENTCONN,
    FMT_RATE,
    FMT_RULE,
    FMT_STATS,
    FMT_THRESHOLDS,
    FMT_TUN_INFO,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    SVC_F_ONEPACKET,
    SVC_F_PERSISTENT,
    SVC_F_SCHED1,
    SVC_F_SCHED2,
    SVC_F_SCHED3,
    SVC_F_SCHED_MASK,
    TUNNAMES,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (lvsadm's start-up)
if TYPE_CHECKING:  # the annotations naming these are quoted: nothing here is imported at run time
    from collections.abc import Callable, Sequence
    from typing import Any, TypeVar

    from lvsd.ipvs.backend import Backend
    from lvsd.ipvs.model import Destination, Service, ServiceKey

    from .lvsadm_fastlist import _Svc
    from .lvsadm_parse import Command

    _T = TypeVar("_T")

PROTO_NAME = {IPPROTO_TCP: "TCP", IPPROTO_UDP: "UDP", IPPROTO_SCTP: "SCTP"}
PROTO_OPT = {IPPROTO_TCP: "-t", IPPROTO_UDP: "-u", IPPROTO_SCTP: "--sctp-service"}
PROTO_SERV = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_SCTP: "sctp"}
FWD_NAME = {0: "Masq", 1: "Local", 2: "Tunnel", 3: "Route"}
FWD_SWITCH = {0: "-m", 2: "-i", 1: "-g", 3: "-g"}
TUNFLAGS = ("-c", "+c", "r+c")
TUN_FLAG_OPTS = ("--tun-nocsum", "--tun-csum", "--tun-remcsum")


def signed32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


# --- ordering: ipvsadm's comparators under glibc 2.36's qsort (a top-down merge sort) ------------


def _wrap(x: int) -> int:
    return ((x + 0x80000000) & 0xFFFFFFFF) - 0x80000000


def _words(af: int, addr: str) -> tuple[int, int, int, int]:
    """The address as the four big-endian 32-bit words of a union nf_inet_addr."""
    if not addr:
        return (0, 0, 0, 0)
    if af == AF_INET6:
        import socket

        raw = socket.inet_pton(socket.AF_INET6, addr)
        v = int.from_bytes(raw, "big")
        return (v >> 96, (v >> 64) & 0xFFFFFFFF, (v >> 32) & 0xFFFFFFFF, v & 0xFFFFFFFF)
    return (_v4(addr), 0, 0, 0)


def msort(items: "list[_T]", cmp: "Callable[[_T, _T], int]") -> "list[_T]":
    """glibc msort_with_tmp: stable top-down merge sort; taking from the left run when cmp <= 0."""
    n = len(items)
    if n <= 1:
        return list(items)
    n1 = n // 2
    b1 = msort(items[:n1], cmp)
    b2 = msort(items[n1:], cmp)
    out: list[_T] = []
    i = j = 0
    while i < len(b1) and j < len(b2):
        if cmp(b1[i], b2[j]) <= 0:
            out.append(b1[i])
            i += 1
        else:
            out.append(b2[j])
            j += 1
    out.extend(b1[i:])
    out.extend(b2[j:])
    return out


def _spans_ok(keys: "Sequence[tuple[int, ...]]", positions: range) -> bool:
    for p in positions:
        vals = [k[p] for k in keys]
        if max(vals) - min(vals) >= 0x80000000:
            return False
    return True


def sort_services(services: "list[Service]") -> "list[Service]":
    """Services in ipvsadm's order (ipvs_cmp_services)."""
    if len(services) < 2:
        return list(services)
    keys = []
    for s in services:
        k = s.key
        keys.append((k.fwmark, k.af, k.protocol) + _words(k.af, k.addr) + (k.port,))
    return [services[i] for i in service_order(keys)]


def service_order(keys: "Sequence[tuple[int, ...]]") -> list[int]:
    """Indices of ``keys`` = (fwmark, af, protocol, w0, w1, w2, w3, port) (the address as the
    four big-endian words of its union) in ipvsadm's service order."""
    if _spans_ok(keys, range(0, 1)) and _spans_ok(keys, range(3, 7)):
        return sorted(range(len(keys)), key=keys.__getitem__)

    def cmp(i: int, j: int) -> int:
        a, b = keys[i], keys[j]
        r = _wrap(a[0] - b[0])
        if r:
            return r
        r = a[1] - b[1]
        if r:
            return r
        r = a[2] - b[2]
        if r:
            return r
        if a[1] == AF_INET6:
            for p in range(3, 7):
                r = _wrap(a[p] - b[p])
                if r:
                    break
        else:
            r = _wrap(a[3] - b[3])
        if r:
            return r
        return a[7] - b[7]

    return msort(list(range(len(keys))), cmp)


_V4: dict[str, int] = {}


def _v4(addr: str) -> int:
    v = _V4.get(addr)
    if v is None:
        a, b, c, d = addr.split(".")
        v = _V4[addr] = (int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d)
    return v


def sort_dests(dests: "list[Destination]") -> "list[Destination]":
    """Destinations in ipvsadm's order (ipvs_cmp_dests)."""
    if len(dests) < 2:
        return list(dests)
    if all(d.key.af == AF_INET for d in dests):
        vals = [_v4(d.key.addr) for d in dests]
        if max(vals) - min(vals) < 0x80000000:
            order = sorted(range(len(dests)), key=lambda i: (vals[i], dests[i].key.port))
            return [dests[i] for i in order]
    keys = [(d.key.af,) + _words(d.key.af, d.key.addr) + (d.key.port,) for d in dests]
    return [dests[i] for i in dest_order(keys)]


def dest_order(keys: "Sequence[tuple[int, ...]]") -> list[int]:
    """Indices of ``keys`` = (af, w0, w1, w2, w3, port) in ipvsadm's destination order."""
    if len({k[0] for k in keys}) == 1 and _spans_ok(keys, range(1, 5)):
        return sorted(range(len(keys)), key=lambda i: keys[i][1:])

    def cmp(i: int, j: int) -> int:
        a, b = keys[i], keys[j]
        r = 0
        if a[0] == AF_INET6:
            for p in range(1, 5):
                r = _wrap(a[p] - b[p])
                if r:
                    break
        else:
            r = _wrap(a[1] - b[1])
        if r:
            return r
        return a[5] - b[5]

    return msort(list(range(len(keys))), cmp)


# --- names ------------------------------------------------------------------------------------


class Namer:
    """addrport_to_anyname(): numeric text, or host and service names (resolver, /etc/services)."""

    def __init__(self, numeric: bool) -> None:
        self.numeric = numeric
        self._hosts: dict[tuple[int, str], str] = {}
        self._ports: dict[tuple[int, int], str] = {}
        self._ntop6: dict[str, str] = {}

    def ntop(self, af: int, addr: str) -> str:
        """inet_ntop() text (glibc prints v4-mapped/compatible IPv6 with a dotted tail)."""
        if af != AF_INET6:
            return addr or "0.0.0.0"
        t = self._ntop6.get(addr)
        if t is None:
            import socket

            t = socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, addr or "::"))
            self._ntop6[addr] = t
        return t

    def host(self, af: int, addr: str) -> str:
        k = (af, addr)
        name = self._hosts.get(k)
        if name is None:
            import socket

            try:
                name = socket.gethostbyaddr(addr or ("::" if af == AF_INET6 else "0.0.0.0"))[0]
            except (OSError, UnicodeError, ValueError):
                name = self.ntop(af, addr)
            self._hosts[k] = name
        return name

    def port(self, port: int, proto: int) -> str:
        k = (port, proto)
        name = self._ports.get(k)
        if name is None:
            pname = PROTO_SERV.get(proto)
            name = str(port)
            if pname is not None:
                import socket

                try:
                    name = socket.getservbyport(port, pname)
                except (OSError, OverflowError):
                    pass
            self._ports[k] = name
        return name

    def addrport(self, af: int, addr: str, port: int, proto: int) -> str:
        if self.numeric:
            if af == AF_INET:
                return f"{addr}:{port}"
            return f"[{self.ntop(af, addr)}]:{port}"
        if af == AF_INET:
            return f"{self.host(af, addr)}:{self.port(port, proto)}"
        return f"[{self.host(af, addr)}]:{self.port(port, proto)}"


# --- numbers ------------------------------------------------------------------------------------


def largenum(i: int, fmt: int) -> str:
    """print_largenum()."""
    if fmt & FMT_EXACT:
        s = str(i)
        return s.rjust(9 if len(s) <= 8 else len(s) + 1)
    if i < 100000000:
        return f"{i:9d}"
    if i < 1000000000:
        return f"{i // 1000:8d}K"
    if i < 100000000000:
        return f"{i // 1000000:8d}M"
    if i < 100000000000000:
        return f"{i // 1000000000:8d}G"
    return f"{i // 1000000000000:8d}T"


def sched_flags_text(sched: str, flags: int) -> str:
    out = []
    if sched == "sh":
        if flags & SVC_F_SCHED1:
            out.append("sh-fallback")
        if flags & SVC_F_SCHED2:
            out.append("sh-port")
    elif sched == "mh":
        if flags & SVC_F_SCHED1:
            out.append("mh-fallback")
        if flags & SVC_F_SCHED2:
            out.append("mh-port")
    else:
        if flags & SVC_F_SCHED1:
            out.append("flag-1")
        if flags & SVC_F_SCHED2:
            out.append("flag-2")
        if flags & SVC_F_SCHED3:
            out.append("flag-3")
    return ",".join(out)


def _mask_text(netmask: int) -> str:
    v = netmask & 0xFFFFFFFF
    return f"{v >> 24}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}"


# --- listing ------------------------------------------------------------------------------------


def title(fmt: int) -> str | None:
    """print_title()."""
    if fmt & FMT_STATS:
        return (
            "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n"
            "  -> RemoteAddress:Port"
        )
    if fmt & FMT_RATE:
        return (
            "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n"
            "  -> RemoteAddress:Port"
        )
    if fmt & FMT_THRESHOLDS:
        return (
            "Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn \n"
            "  -> RemoteAddress:Port"
        )
    if fmt & FMT_PERSISTENTCONN:
        return (
            "Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn \n"
            "  -> RemoteAddress:Port"
        )
    if fmt & FMT_TUN_INFO:
        return (
            "Prot LocalAddress:Port Scheduler Flags\n"
            "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn"
        )
    if not fmt & FMT_RULE:
        return (
            "Prot LocalAddress:Port Scheduler Flags\n"
            "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"
        )
    return None


def _tun_info(d: "Destination") -> str:
    if d.forward != 2:
        return "n/a"
    t = d.tun_type
    if t == 0:
        return "ipip"
    if t == 1:
        return f"gue:{d.tun_port}:{TUNFLAGS[d.tun_flags]}"[:15]
    if t == 2:
        return f"gre:{TUNFLAGS[d.tun_flags]}"[:15]
    return "n/a"


_TAILS: dict[tuple[int, int, int, int], str] = {}  # the columns after the address, shared by identical servers


def service_head(svc: "Service | _Svc", fmt: int, namer: Namer) -> tuple[str, str]:
    """print_service_entry()'s first part: (the service's name as its servers' -S lines repeat
    it, the service line)."""
    k = svc.key
    af = k.af
    rule = fmt & FMT_RULE
    if k.fwmark:
        fw = signed32(k.fwmark)
        if rule:
            name = f"-f {fw} -6" if af == AF_INET6 else f"-f {fw}"
        else:
            name = f"FWM  {fw} IPv6" if af == AF_INET6 else f"FWM  {fw}"
    else:
        vname = namer.addrport(af, k.addr, k.port, k.protocol)
        if rule:
            name = f"{PROTO_OPT.get(k.protocol, '--xxx-service')} {vname}"
        else:
            name = f"{PROTO_NAME.get(k.protocol, '?'):<4} {vname}"
            if af != AF_INET6:
                name = name[:33]
    flags = svc.flags
    if rule:
        line = f"-A {name} -s {svc.scheduler}"
        if flags & SVC_F_PERSISTENT:
            line += f" -p {svc.timeout}"
            if af == AF_INET:
                if svc.netmask & 0xFFFFFFFF != 0xFFFFFFFF:
                    line += f" -M {_mask_text(svc.netmask)}"
            elif af == AF_INET6 and svc.netmask != 128:
                line += f" -M {signed32(svc.netmask)}"
        if svc.pe_name:
            line += f" --pe {svc.pe_name}"
        if flags & SVC_F_ONEPACKET:
            line += " -o"
        if flags & SVC_F_SCHED_MASK:
            line += " -b " + sched_flags_text(svc.scheduler, flags)
    elif fmt & (FMT_STATS | FMT_RATE):
        st = svc.stats
        if fmt & FMT_STATS:
            vals = (st.conns, st.inpkts, st.outpkts, st.inbytes, st.outbytes)
        else:
            vals = (st.cps, st.inpps, st.outpps, st.inbps, st.outbps)
        line = f"{name:<33}" + "".join(largenum(v, fmt) for v in vals)
    else:
        line = f"{name} {svc.scheduler}"
        if flags & SVC_F_SCHED_MASK:
            line += f" ({sched_flags_text(svc.scheduler, flags)})"
        if flags & SVC_F_PERSISTENT:
            line += f" persistent {svc.timeout}"
            if af == AF_INET:
                if svc.netmask & 0xFFFFFFFF != 0xFFFFFFFF:
                    line += f" mask {_mask_text(svc.netmask)}"
            elif af == AF_INET6 and svc.netmask != 128:
                line += f" mask {signed32(svc.netmask)}"
            if svc.pe_name:
                line += f" pe {svc.pe_name}"
        if flags & SVC_F_ONEPACKET:
            line += " ops"
    return name, line


def service_lines(svc: "Service", dests: "list[Destination]", fmt: int, namer: Namer, out: list[str]) -> None:
    """print_service_entry(): the service line and its destinations, appended to ``out``."""
    name, line = service_head(svc, fmt, namer)
    k = svc.key
    rule = fmt & FMT_RULE
    out.append(line)

    if not fmt & FMT_NOSORT:
        dests = sort_dests(dests)
    proto = k.protocol
    append = out.append
    addrport = namer.addrport
    numeric = namer.numeric
    plain = not fmt & (FMT_STATS | FMT_RATE | FMT_THRESHOLDS | FMT_PERSISTENTCONN | FMT_TUN_INFO)
    tails = _TAILS
    stat_tails: dict[int, str] = {}
    for d in dests:
        dk = d.key
        if numeric and dk.af == AF_INET:
            dname = f"{dk.addr}:{dk.port}"
        else:
            dname = addrport(dk.af, dk.addr, dk.port, proto)
        if rule:
            sw = FWD_SWITCH.get(d.forward, "(null)")
            w = signed32(d.weight)
            if d.forward == 2:
                t = d.tun_type
                if t == 2:
                    append(f"-a {name} -r {dname} {sw} -w {w} --tun-type gre {TUN_FLAG_OPTS[d.tun_flags]}")
                elif t == 1:
                    append(
                        f"-a {name} -r {dname} {sw} -w {w} --tun-type gue --tun-port {d.tun_port} {TUN_FLAG_OPTS[d.tun_flags]}"
                    )
                elif t == 0:
                    append(f"-a {name} -r {dname} {sw} -w {w} --tun-type ipip")
                else:
                    append(f"-a {name} -r {dname} {sw} -w {w}")
            else:
                append(f"-a {name} -r {dname} {sw} -w {w}")
            continue
        if dk.af != AF_INET6:
            dname = dname[:28]
        if plain:
            tk = (d.forward, d.weight, d.active_conns, d.inact_conns)
            tail = tails.get(tk)
            if tail is None:
                w = d.weight
                tail = tails[tk] = (
                    f" {FWD_NAME.get(d.forward, '(null)'):<7} {w if w < 0x80000000 else w - 0x100000000:<6d} "
                    f"{d.active_conns:<10d} {d.inact_conns:<10d}"
                )
            append(f"  -> {dname:<28}{tail}")
        elif fmt & FMT_STATS:
            st = d.stats
            tail = stat_tails.get(id(st))  # the table holds every Stats alive during the listing
            if tail is None:
                tail = stat_tails[id(st)] = (
                    largenum(st.conns, fmt)
                    + largenum(st.inpkts, fmt)
                    + largenum(st.outpkts, fmt)
                    + largenum(st.inbytes, fmt)
                    + largenum(st.outbytes, fmt)
                )
            append(f"  -> {dname:<28}{tail}")
        elif fmt & FMT_RATE:
            st = d.stats
            append(
                f"  -> {dname:<28} {st.cps:8d} {st.inpps:8d} {st.outpps:8d}"
                + largenum(st.inbps, fmt)
                + largenum(st.outbps, fmt)
            )
        elif fmt & FMT_THRESHOLDS:
            append(f"  -> {dname:<28} {d.u_threshold:<10d} {d.l_threshold:<10d} {d.active_conns:<10d} {d.inact_conns:<10d}")
        elif fmt & FMT_PERSISTENTCONN:
            append(
                f"  -> {dname:<28} {d.weight & 0xFFFFFFFF:<9d} {d.persist_conns:<11d} {d.active_conns:<10d} {d.inact_conns:<10d}"
            )
        elif fmt & FMT_TUN_INFO:
            append(
                f"  -> {dname:<28} {FWD_NAME.get(d.forward, '(null)'):<7} {_tun_info(d):<13} "
                f"{signed32(d.weight):<6d} {d.active_conns:<10d} {d.inact_conns:<10d}"
            )
        else:
            append(
                f"  -> {dname:<28} {FWD_NAME.get(d.forward, '(null)'):<7} {signed32(d.weight):<6d} "
                f"{d.active_conns:<10d} {d.inact_conns:<10d}"
            )


def list_all(backend: "Backend", fmt: int, out: list[str]) -> None:
    """list_all(): header (not for -S), title, every service sorted (unless --nosort)."""
    if not fmt & FMT_RULE:
        info = backend.info()
        v = info.version
        out.append(f"IP Virtual Server version {v >> 16}.{(v >> 8) & 255}.{v & 255} (size={info.conn_tab_size})")
    table = backend.dump()
    entries = list(table.values())
    services = [e.service for e in entries]
    by_key = {e.service.key: e for e in entries}
    if not fmt & FMT_NOSORT:
        services = sort_services(services)
    t = title(fmt)
    if t is not None:
        out.append(t)
    namer = Namer(bool(fmt & FMT_NUMERIC))
    for svc in services:
        service_lines(svc, list(by_key[svc.key].dests.values()), fmt, namer, out)


def list_service(backend: "Backend", key: "ServiceKey", fmt: int, out: list[str]) -> None:
    """list_service(): one service (ESRCH propagates to the caller)."""
    svc = backend.service(key)
    dests = backend.dests(key)
    t = title(fmt)
    if t is not None:
        out.append(t)
    service_lines(svc, dests, fmt, Namer(bool(fmt & FMT_NUMERIC)), out)


def list_timeout(backend: "Backend", out: list[str]) -> None:
    t = backend.timeouts()
    out.append(f"Timeout (tcp tcpfin udp): {signed32(t.tcp)} {signed32(t.tcp_fin)} {signed32(t.udp)}")


def list_daemon(backend: "Backend", out: list[str]) -> None:
    for d in sorted(backend.daemons(), key=lambda d: d.state):
        if d.state & 1:
            kind = "master"
        elif d.state & 2:
            kind = "backup"
        else:
            continue
        line = f"{kind} sync daemon (mcast={d.mcast_ifn}, syncid={d.syncid}"
        if d.sync_maxlen:
            line += f", maxlen={d.sync_maxlen}"
        if d.mcast_group:
            line += f", group={Namer(True).ntop(AF_INET6 if ':' in d.mcast_group else AF_INET, d.mcast_group)}"
        if d.mcast_port:
            line += f", port={d.mcast_port}"
        if d.mcast_ttl:
            line += f", ttl={d.mcast_ttl}"
        out.append(line + ")")


def _conn_af_addr(addr: str) -> tuple[int, str]:
    if ":" in addr:
        return AF_INET6, addr
    if "." not in addr and len(addr) == 8:  # raw /proc hex form
        v = int(addr, 16)
        return AF_INET, f"{v >> 24}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}"
    return AF_INET, addr


def list_conn(backend: "Backend", fmt: int, out: list[str]) -> None:
    """list_conn(): the connection table."""
    conns = backend.connections()
    out.append("IPVS connection entries")
    pc = fmt & FMT_PERSISTENTCONN
    if pc:
        out.append(f"pro expire {'state':<11} {'source':<18} {'virtual':<18} {'destination':<18} {'pe name':<16} pe_data")
    else:
        out.append(f"pro expire {'state':<11} {'source':<18} {'virtual':<18} destination")
    namer = Namer(bool(fmt & FMT_NUMERIC))
    protos = {"TCP": IPPROTO_TCP, "UDP": IPPROTO_UDP, "SCTP": IPPROTO_SCTP}
    for c in conns:
        proto = protos.get(c.protocol, 0)
        caf, caddr = _conn_af_addr(c.client_addr)
        _, vaddr = _conn_af_addr(c.virtual_addr)
        daf, daddr = _conn_af_addr(c.dest_addr)
        cname = namer.addrport(caf, caddr, c.client_port, proto)
        vname = namer.addrport(caf, vaddr, c.virtual_port, proto)
        dname = namer.addrport(daf, daddr, c.dest_port, proto)
        expires = c.expires & 0xFFFFFFFF
        exp = f"{expires // 60:02d}:{expires % 60:02d}"
        if pc and c.pe_name and c.pe_data:
            out.append(f"{c.protocol:<3} {exp:<6} {c.state:<11} {cname:<18} {vname:<18} {dname:<16} {c.pe_name:<18} {c.pe_data}")
        else:
            out.append(f"{c.protocol:<3} {exp:<6} {c.state:<11} {cname:<18} {vname:<18} {dname}")


# --- JSON (an lvsadm addition) ------------------------------------------------------------------

FWD_JSON = {0: "masq", 1: "local", 2: "tunnel", 3: "route", 4: "bypass"}
STATS_FIELDS = ("conns", "inpkts", "outpkts", "inbytes", "outbytes")
RATE_FIELDS = ("cps", "inpps", "outpps", "inbps", "outbps")


def _svc_json(svc: "Service", dests: "list[Destination]", fmt: int) -> "dict[str, Any]":
    k = svc.key
    flags = svc.flags
    d: dict[str, Any] = {
        "protocol": PROTO_SERV.get(k.protocol) if not k.fwmark else None,
        "family": "inet6" if k.af == AF_INET6 else "inet",
        "address": k.addr or None,
        "port": k.port if not k.fwmark else None,
        "fwmark": k.fwmark or None,
        "scheduler": svc.scheduler,
        "sched_flags": [f for f in sched_flags_text(svc.scheduler, flags).split(",") if f],
        "persistent": bool(flags & SVC_F_PERSISTENT),
        "timeout": svc.timeout if flags & SVC_F_PERSISTENT else None,
        "netmask": (svc.netmask if k.af == AF_INET6 else _mask_text(svc.netmask)),
        "pe": svc.pe_name or None,
        "one_packet": bool(flags & SVC_F_ONEPACKET),
    }
    if fmt & FMT_STATS:
        d["stats"] = {f: getattr(svc.stats, f) for f in STATS_FIELDS}
    if fmt & FMT_RATE:
        d["rate"] = {f: getattr(svc.stats, f) for f in RATE_FIELDS}
    servers = []
    for x in dests if fmt & FMT_NOSORT else sort_dests(dests):
        s: dict[str, Any] = {
            "family": "inet6" if x.key.af == AF_INET6 else "inet",
            "address": x.key.addr,
            "port": x.key.port,
            "forward": FWD_JSON.get(x.forward, str(x.forward)),
            "weight": x.weight,
            "u_threshold": x.u_threshold,
            "l_threshold": x.l_threshold,
            "active_conns": x.active_conns,
            "inact_conns": x.inact_conns,
            "persist_conns": x.persist_conns,
        }
        if x.forward == 2:
            s["tunnel"] = {
                "type": TUNNAMES[x.tun_type] if x.tun_type < 3 else x.tun_type,
                "port": x.tun_port or None,
                "checksum": ("none", "csum", "remcsum")[x.tun_flags] if x.tun_flags < 3 else x.tun_flags,
            }
        if fmt & FMT_STATS:
            s["stats"] = {f: getattr(x.stats, f) for f in STATS_FIELDS}
        if fmt & FMT_RATE:
            s["rate"] = {f: getattr(x.stats, f) for f in RATE_FIELDS}
        servers.append(s)
    d["servers"] = servers
    return d


def json_doc(backend: "Backend", ce: "Command", key: "ServiceKey | None") -> "dict[str, Any]":
    """The document printed by ``lvsadm -L --json`` (see docs/lvsadm.md)."""
    from .lvsadm_parse import OPTC_CONNECTION, OPTC_DAEMON, OPTC_SERVICE, OPTC_TIMEOUT

    fmt = ce.fmt
    if ce.has(OPTC_CONNECTION):
        return {
            "connections": [
                {
                    "protocol": c.protocol.lower(),
                    "expires": c.expires,
                    "state": c.state,
                    "client": {"address": _conn_af_addr(c.client_addr)[1], "port": c.client_port},
                    "virtual": {"address": _conn_af_addr(c.virtual_addr)[1], "port": c.virtual_port},
                    "destination": {"address": _conn_af_addr(c.dest_addr)[1], "port": c.dest_port},
                    "pe": c.pe_name or None,
                    "pe_data": c.pe_data or None,
                }
                for c in backend.connections()
            ]
        }
    if ce.has(OPTC_SERVICE):
        assert key is not None  # the caller passes the key of -t/-u/-f with OPTC_SERVICE
        return {"services": [_svc_json(backend.service(key), backend.dests(key), fmt)]}
    if ce.has(OPTC_TIMEOUT):
        t = backend.timeouts()
        return {"timeout": {"tcp": t.tcp, "tcp_fin": t.tcp_fin, "udp": t.udp}}
    if ce.has(OPTC_DAEMON):
        return {
            "daemons": [
                {
                    "state": "master" if d.state == 1 else "backup",
                    "mcast_interface": d.mcast_ifn,
                    "syncid": d.syncid,
                    "sync_maxlen": d.sync_maxlen,
                    "mcast_group": d.mcast_group or None,
                    "mcast_port": d.mcast_port,
                    "mcast_ttl": d.mcast_ttl,
                }
                for d in sorted(backend.daemons(), key=lambda d: d.state)
            ]
        }
    info = backend.info()
    v = info.version
    table = backend.dump()
    services = [e.service for e in table.values()]
    if not fmt & FMT_NOSORT:
        services = sort_services(services)
    return {
        "version": f"{v >> 16}.{(v >> 8) & 255}.{v & 255}",
        "conn_tab_size": info.conn_tab_size,
        "services": [_svc_json(s, list(table[s.key].dests.values()), fmt) for s in services],
    }
