"""Kernel-visible IPVS values: services, destinations, timeouts, sync daemons, connections.

These mirror what the kernel's IPVS generic-netlink family carries (include/uapi/linux/ip_vs.h).
Equality and hashing cover the fields the kernel lets you *set*; counters, rates and connection
counts are carried along but never make two values different (compare=False), so a keyed diff
of desired against actual never sees traffic as a change.

Addresses are kept as normalized text (``ipaddress`` compressed form) so they compare, hash and
print cheaply; ``validate()`` methods check ranges before anything is sent to a kernel.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from enum import IntEnum

AF_INET = 2
AF_INET6 = 10

# --- protocols ---------------------------------------------------------------------------------


class Protocol(IntEnum):
    """IP protocol of a virtual service (0 for fwmark services)."""

    NONE = 0
    TCP = 6
    UDP = 17
    SCTP = 132


# --- service flags (struct ip_vs_flags.flags) --------------------------------------------------

SVC_F_PERSISTENT = 0x0001
SVC_F_HASHED = 0x0002  # read-only: set by the kernel on every listed service
SVC_F_ONEPACKET = 0x0004
SVC_F_SCHED1 = 0x0008
SVC_F_SCHED2 = 0x0010
SVC_F_SCHED3 = 0x0020
SVC_F_SH_FALLBACK = SVC_F_SCHED1
SVC_F_SH_PORT = SVC_F_SCHED2
SVC_F_MH_FALLBACK = SVC_F_SCHED1
SVC_F_MH_PORT = SVC_F_SCHED2
#: Flags a user may set; HASHED is the kernel's own and never compared.
SVC_F_SETTABLE = SVC_F_PERSISTENT | SVC_F_ONEPACKET | SVC_F_SCHED1 | SVC_F_SCHED2 | SVC_F_SCHED3

IP_VS_SCHEDNAME_MAXLEN = 16  # including the terminating NUL
IP_VS_PENAME_MAXLEN = 16
IP_VS_IFNAME_MAXLEN = 16

SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos")
PERSISTENCE_ENGINES = ("sip",)
DEFAULT_SCHEDULER = "wlc"
DEFAULT_PERSISTENT_TIMEOUT = 300


class Forward(IntEnum):
    """Packet-forwarding method of a destination (IP_VS_CONN_F_FWD_MASK values)."""

    MASQ = 0
    LOCAL = 1  # read-only: the kernel's local node
    TUNNEL = 2
    ROUTE = 3  # direct routing, ipvsadm's "gatewaying" and its default
    BYPASS = 4  # read-only


#: Forwarding methods a user may set.
SETTABLE_FORWARDS = (Forward.MASQ, Forward.TUNNEL, Forward.ROUTE)


class TunType(IntEnum):
    """Tunnel encapsulation used with Forward.TUNNEL."""

    IPIP = 0
    GUE = 1
    GRE = 2


TUN_F_NOCSUM = 0
TUN_F_CSUM = 1 << 0
TUN_F_REMCSUM = 1 << 1


class DaemonState(IntEnum):
    """Connection-sync daemon role (IP_VS_STATE_*)."""

    NONE = 0
    MASTER = 1
    BACKUP = 2


# --- errors raised before anything reaches the kernel -----------------------------------------


class ValueInvalid(ValueError):
    """A value is out of range; raised before anything is sent. ``field`` names what is wrong."""

    def __init__(self, field: str, value: object, why: str) -> None:
        self.field = field
        self.value = value
        self.why = why
        super().__init__(f"{field}: {why}, got {value!r}")


# --- helpers -----------------------------------------------------------------------------------


def normalize_addr(addr: str, af: int | None = None, field_name: str = "addr") -> tuple[int, str]:
    """Parse an IP address into (family, canonical text); raise ValueInvalid on garbage."""
    try:
        ip = ipaddress.ip_address(addr.strip("[]") if isinstance(addr, str) else addr)
    except ValueError:
        raise ValueInvalid(field_name, addr, "not an IP address") from None
    fam = AF_INET6 if ip.version == 6 else AF_INET
    if af is not None and af != fam:
        raise ValueInvalid(field_name, addr, f"address family mismatch (expected {family_name(af)})")
    return fam, str(ip)


def family_name(af: int) -> str:
    """'inet' or 'inet6'."""
    return {AF_INET: "inet", AF_INET6: "inet6"}.get(af, str(af))


def _check_range(field_name: str, value: int, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueInvalid(field_name, value, f"must be {lo}..{hi}")


def netmask_to_int(mask: str) -> int:
    """Dotted IPv4 netmask -> host-order integer (as IPVS_SVC_ATTR_NETMASK carries it, once byte-swapped)."""
    try:
        return int(ipaddress.IPv4Address(mask))
    except ValueError:
        raise ValueInvalid("netmask", mask, "not an IPv4 netmask") from None


def int_to_netmask(value: int) -> str:
    """Host-order integer -> dotted IPv4 netmask."""
    return str(ipaddress.IPv4Address(value & 0xFFFFFFFF))


# --- values ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stats:
    """64-bit counters and rates (IPVS_STATS_ATTR_*). Never part of equality."""

    conns: int = 0
    inpkts: int = 0
    outpkts: int = 0
    inbytes: int = 0
    outbytes: int = 0
    cps: int = 0
    inpps: int = 0
    outpps: int = 0
    inbps: int = 0
    outbps: int = 0


ZERO_STATS = Stats()


@dataclass(frozen=True, slots=True, order=True)
class ServiceKey:
    """What identifies a virtual service in the kernel: (af, protocol, addr, port) or (af, fwmark)."""

    af: int
    protocol: int  # Protocol; 0 for fwmark services
    addr: str  # canonical text; "" for fwmark services
    port: int  # 0 for fwmark services
    fwmark: int = 0

    @classmethod
    def inet(cls, protocol: int | str, addr: str, port: int) -> ServiceKey:
        """Key of an address/port service; validates the address, port and protocol."""
        if isinstance(protocol, str):
            try:
                protocol = Protocol[protocol.upper()]
            except KeyError:
                raise ValueInvalid("protocol", protocol, "must be tcp, udp or sctp") from None
        if protocol not in (Protocol.TCP, Protocol.UDP, Protocol.SCTP):
            raise ValueInvalid("protocol", protocol, "must be tcp, udp or sctp")
        af, text = normalize_addr(addr)
        _check_range("port", port, 0, 65535)
        return cls(af, int(protocol), text, port, 0)

    @classmethod
    def fwmark_key(cls, fwmark: int, af: int = AF_INET) -> ServiceKey:
        """Key of a firewall-mark service."""
        _check_range("fwmark", fwmark, 1, 0xFFFFFFFF)
        if af not in (AF_INET, AF_INET6):
            raise ValueInvalid("af", af, "must be AF_INET or AF_INET6")
        return cls(af, 0, "", 0, fwmark)

    @property
    def is_fwmark(self) -> bool:
        return self.fwmark != 0

    def validate(self) -> None:
        """Raise ValueInvalid if any field is out of range."""
        if self.af not in (AF_INET, AF_INET6):
            raise ValueInvalid("af", self.af, "must be AF_INET or AF_INET6")
        if self.fwmark:
            _check_range("fwmark", self.fwmark, 1, 0xFFFFFFFF)
            if self.addr or self.port or self.protocol:
                raise ValueInvalid("fwmark", self.fwmark, "a fwmark service has no address, port or protocol")
            return
        if self.protocol not in (Protocol.TCP, Protocol.UDP, Protocol.SCTP):
            raise ValueInvalid("protocol", self.protocol, "must be tcp, udp or sctp")
        normalize_addr(self.addr, self.af)
        _check_range("port", self.port, 0, 65535)

    def __str__(self) -> str:
        if self.fwmark:
            return f"fwmark {self.fwmark}" + (" inet6" if self.af == AF_INET6 else "")
        host = f"[{self.addr}]" if self.af == AF_INET6 else self.addr
        return f"{Protocol(self.protocol).name.lower()} {host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Service:
    """A virtual service as the kernel holds it. Stats never take part in equality."""

    key: ServiceKey
    scheduler: str = DEFAULT_SCHEDULER
    flags: int = 0  # SVC_F_* without HASHED
    timeout: int = 0  # persistence timeout in seconds (meaningful with SVC_F_PERSISTENT)
    netmask: int = -1  # IPv4: mask as host-order int; IPv6: prefix length. -1 = family default
    pe_name: str = ""
    stats: Stats = field(default=ZERO_STATS, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Normalize: HASHED is the kernel's, netmask -1 means "the family's all-ones".
        if self.flags & SVC_F_HASHED:
            object.__setattr__(self, "flags", self.flags & ~SVC_F_HASHED)
        if self.netmask == -1:
            object.__setattr__(self, "netmask", 128 if self.key.af == AF_INET6 else 0xFFFFFFFF)

    @property
    def persistent(self) -> bool:
        return bool(self.flags & SVC_F_PERSISTENT)

    def with_stats(self, stats: Stats) -> Service:
        return replace(self, stats=stats)

    def validate(self) -> None:
        """Raise ValueInvalid naming the first field out of range."""
        self.key.validate()
        if not self.scheduler or len(self.scheduler.encode()) >= IP_VS_SCHEDNAME_MAXLEN:
            raise ValueInvalid("scheduler", self.scheduler, f"must be 1..{IP_VS_SCHEDNAME_MAXLEN - 1} bytes")
        if len(self.pe_name.encode()) >= IP_VS_PENAME_MAXLEN:
            raise ValueInvalid("pe_name", self.pe_name, f"must be at most {IP_VS_PENAME_MAXLEN - 1} bytes")
        _check_range("flags", self.flags, 0, 0xFFFFFFFF)
        _check_range("timeout", self.timeout, 0, 0xFFFFFFFF)
        if self.key.af == AF_INET6:
            _check_range("netmask", self.netmask, 1, 128)
        else:
            _check_range("netmask", self.netmask, 0, 0xFFFFFFFF)

    def netmask_text(self) -> str:
        """The netmask as ipvsadm prints it: dotted quad for IPv4, prefix length for IPv6."""
        return str(self.netmask) if self.key.af == AF_INET6 else int_to_netmask(self.netmask)


@dataclass(frozen=True, slots=True, order=True)
class DestKey:
    """What identifies a destination within a service: its family, address and port."""

    af: int
    addr: str
    port: int

    @classmethod
    def of(cls, addr: str, port: int) -> DestKey:
        af, text = normalize_addr(addr)
        _check_range("port", port, 0, 65535)
        return cls(af, text, port)

    def __str__(self) -> str:
        host = f"[{self.addr}]" if self.af == AF_INET6 else self.addr
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Destination:
    """A real server within a service. Connection counts and stats never take part in equality."""

    key: DestKey
    forward: int = Forward.ROUTE  # ipvsadm's default is -g (direct routing)
    weight: int = 1
    u_threshold: int = 0
    l_threshold: int = 0
    tun_type: int = TunType.IPIP
    tun_port: int = 0  # host order
    tun_flags: int = TUN_F_NOCSUM
    active_conns: int = field(default=0, compare=False)
    inact_conns: int = field(default=0, compare=False)
    persist_conns: int = field(default=0, compare=False)
    stats: Stats = field(default=ZERO_STATS, compare=False, repr=False)

    def validate(self, service_af: int | None = None) -> None:
        """Raise ValueInvalid naming the first field out of range or inconsistent with the service."""
        if self.key.af not in (AF_INET, AF_INET6):
            raise ValueInvalid("dest.af", self.key.af, "must be AF_INET or AF_INET6")
        normalize_addr(self.key.addr, self.key.af, "dest.addr")
        _check_range("dest.port", self.key.port, 0, 65535)
        _check_range("forward", self.forward, 0, 4)
        _check_range("weight", self.weight, 0, 0x7FFFFFFF)
        # u32 on the wire, but the kernel refuses an upper threshold above INT_MAX (EINVAL), and
        # ipvsadm refuses it too; a lower one above the upper is the kernel's ERANGE.
        _check_range("u_threshold", self.u_threshold, 0, 0x7FFFFFFF)
        _check_range("l_threshold", self.l_threshold, 0, 0xFFFFFFFF)
        _check_range("tun_type", self.tun_type, 0, 2)
        _check_range("tun_port", self.tun_port, 0, 65535)
        _check_range("tun_flags", self.tun_flags, 0, 0xFFFF)
        if service_af is not None and service_af != self.key.af and self.forward != Forward.TUNNEL:
            raise ValueInvalid(
                "dest.addr", self.key.addr, "address family differs from the service's (allowed only for tunnels)"
            )


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Connection timeouts in seconds (ipvsadm --set); 0 in a *set* means leave unchanged."""

    tcp: int = 0
    tcp_fin: int = 0
    udp: int = 0

    def validate(self) -> None:
        for name in ("tcp", "tcp_fin", "udp"):
            _check_range(f"timeout.{name}", getattr(self, name), 0, 0x7FFFFFFF)


@dataclass(frozen=True, slots=True)
class SyncDaemon:
    """A kernel connection-sync daemon (IPVS_DAEMON_ATTR_*)."""

    state: int  # DaemonState.MASTER or BACKUP
    mcast_ifn: str
    syncid: int = 0
    sync_maxlen: int = 0  # 0 = kernel default
    mcast_group: str = ""  # "" = kernel default (224.0.0.81)
    mcast_port: int = 0  # 0 = kernel default (8848)
    mcast_ttl: int = 0  # 0 = kernel default (1)

    def validate(self) -> None:
        if self.state not in (DaemonState.MASTER, DaemonState.BACKUP):
            raise ValueInvalid("state", self.state, "must be master or backup")
        if not self.mcast_ifn or len(self.mcast_ifn.encode()) >= IP_VS_IFNAME_MAXLEN:
            raise ValueInvalid("mcast_ifn", self.mcast_ifn, f"must be 1..{IP_VS_IFNAME_MAXLEN - 1} bytes")
        _check_range("syncid", self.syncid, 0, 255)
        _check_range("sync_maxlen", self.sync_maxlen, 0, 65535)
        _check_range("mcast_port", self.mcast_port, 0, 65535)
        _check_range("mcast_ttl", self.mcast_ttl, 0, 255)
        if self.mcast_group:
            normalize_addr(self.mcast_group, None, "mcast_group")


@dataclass(frozen=True, slots=True)
class Info:
    """IPVS version (packed as major<<16 | minor<<8 | patch) and connection-table size."""

    version: int
    conn_tab_size: int

    @property
    def version_text(self) -> str:
        v = self.version
        return f"{v >> 16}.{(v >> 8) & 0xFF}.{v & 0xFF}"


@dataclass(frozen=True, slots=True)
class Connection:
    """One entry of the kernel's connection table (/proc/net/ip_vs_conn)."""

    protocol: str  # "TCP", "UDP", "SCTP", ... as the kernel prints it
    client_addr: str
    client_port: int
    virtual_addr: str
    virtual_port: int
    dest_addr: str
    dest_port: int
    state: str
    expires: int  # seconds
    pe_name: str = ""
    pe_data: str = ""


# --- a whole table -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    """A service with its destinations keyed by DestKey (insertion order = kernel list order)."""

    service: Service
    dests: dict[DestKey, Destination] = field(default_factory=dict)


#: A table snapshot keyed by ServiceKey, as ``Backend.dump()`` returns it.
Table = dict  # dict[ServiceKey, ServiceEntry]
