"""VRRPv3 (RFC 5798): the advertisement codec and the router state machine, both pure.

The codec turns an advertisement into the bytes that follow the IP header and back, with the
checksum over the IPv4 or IPv6 pseudo-header (as RFC 5798 section 5.2.8 and keepalived 2.2.7 do).

The state machine is a frozen value stepped by ``step(params, state, now, event)``, which returns
the next state and the actions the I/O layer must perform (send an advert, take or release the
virtual addresses). Time is a float in seconds from any monotonic clock; the caller wakes up at
``state.deadline`` and steps with ``Tick``. Nothing here touches a socket or a clock.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

VRRP_PROTO = 112
VRRP_VERSION = 3
VRRP_TYPE_ADVERT = 1
VRRP_GROUP4 = "224.0.0.18"
VRRP_GROUP6 = "ff02::12"
VRRP_TTL = 255
HEADER_LEN = 8
MAX_ADVER_INT_CS = 4095  # 12 bits of centiseconds
AUTH_NONE, AUTH_PASS, AUTH_AH = 0, 1, 2  # VRRPv2 authentication types (RFC 2338; 3768 keeps 0 only)
AUTH_LEN = 8

AF_INET = 2
AF_INET6 = 10


class MalformedAdvert(ValueError):
    """A received VRRP message cannot be an advertisement; ``reason`` says why in a few words."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class Advert:
    """One VRRPv3 advertisement: router id, priority, interval (centiseconds) and the addresses."""

    vrid: int
    priority: int
    max_adver_int: int  # centiseconds, 1..4095
    addrs: tuple[str, ...]  # canonical text, all of one family
    version: int = VRRP_VERSION
    type: int = VRRP_TYPE_ADVERT
    checksum: int = field(default=0, compare=False)
    auth: bytes = b""  # VRRPv2 auth_type PASS: the password (b"" = auth type 0)

    @property
    def interval(self) -> float:
        """The advertised interval in seconds."""
        return self.max_adver_int / 100.0


# --- checksum ------------------------------------------------------------------------------------


def inet_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): one's complement of the one's complement sum of 16-bit words."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def pseudo_header(src: str, dst: str, length: int) -> bytes:
    """The pseudo-header the VRRPv3 checksum covers: IPv4 (RFC 768 style) or IPv6 (RFC 8200 8.1)."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version != d.version:
        raise ValueError(f"source {src} and destination {dst} are of different families")
    if s.version == 4:
        return s.packed + d.packed + struct.pack("!BBH", 0, VRRP_PROTO, length)
    return s.packed + d.packed + struct.pack("!I3xB", length, VRRP_PROTO)


# --- codec ---------------------------------------------------------------------------------------


def encode(adv: Advert, src: str, dst: str) -> bytes:
    """The VRRP message (after the IP header) for ``adv`` sent from ``src`` to ``dst``.

    Version 3 (RFC 5798): 12-bit interval in centiseconds, checksum over the pseudo-header.
    Version 2 (RFC 3768, IPv4 only): auth type 0 (or 1, PASS, with ``adv.auth``: the password
    padded to 8 bytes, as keepalived's ``auth_pass``), 8-bit interval in seconds, 8 bytes of
    authentication data, checksum over the VRRP message alone."""
    if adv.version not in (2, 3):
        raise ValueError(f"VRRP version must be 2 or 3, got {adv.version}")
    if not 1 <= adv.vrid <= 255:
        raise ValueError(f"vrid must be 1..255, got {adv.vrid}")
    if not 0 <= adv.priority <= 255:
        raise ValueError(f"priority must be 0..255, got {adv.priority}")
    if not 1 <= adv.max_adver_int <= MAX_ADVER_INT_CS:
        raise ValueError(
            f"advert interval must be 1..{MAX_ADVER_INT_CS} centiseconds, got {adv.max_adver_int}"
        )
    if adv.version == 2 and (adv.max_adver_int % 100 or adv.max_adver_int > 25500):
        raise ValueError(f"VRRPv2 counts whole seconds 1..255, got {adv.max_adver_int / 100:g} s")
    if len(adv.auth) > AUTH_LEN or (adv.auth and adv.version != 2):
        raise ValueError("a password is VRRPv2 only and at most 8 bytes")
    if not 1 <= len(adv.addrs) <= 255:
        raise ValueError(f"an advert carries 1..255 addresses, got {len(adv.addrs)}")
    version = ipaddress.ip_address(src).version
    if adv.version == 2 and version != 4:
        raise ValueError("VRRPv2 is IPv4 only")
    body = bytearray()
    for a in adv.addrs:
        ip = ipaddress.ip_address(a)
        if ip.version != version:
            raise ValueError(f"address {a} is not of the family of the source {src}")
        body += ip.packed
    if adv.version == 2:
        head = struct.pack(
            "!BBBBBBH",
            0x20 | adv.type,
            adv.vrid,
            adv.priority,
            len(adv.addrs),
            AUTH_PASS if adv.auth else AUTH_NONE,
            adv.max_adver_int // 100,
            0,
        )
        msg = head + bytes(body) + adv.auth.ljust(AUTH_LEN, b"\0")
        csum = inet_checksum(msg)
    else:
        head = struct.pack(
            "!BBBBHH",
            (adv.version << 4) | adv.type,
            adv.vrid,
            adv.priority,
            len(adv.addrs),
            adv.max_adver_int & 0x0FFF,
            0,
        )
        msg = head + bytes(body)
        csum = inet_checksum(pseudo_header(src, dst, len(msg)) + msg)
    return msg[:6] + struct.pack("!H", csum) + msg[8:]


def decode(data: bytes, src: str, dst: str) -> Advert:
    """Parse a VRRP message received from ``src`` for ``dst`` (``data`` = the IP payload); raise
    MalformedAdvert unless it is a well-formed VRRPv3 (or v2) advertisement with a correct checksum.
    A v2 interval is returned in centiseconds like a v3 one."""
    if len(data) < HEADER_LEN:
        raise MalformedAdvert(f"too short ({len(data)} bytes)")
    vt, vrid, prio, count, rsvd_int, csum = struct.unpack_from("!BBBBHH", data)
    version, typ = vt >> 4, vt & 0x0F
    if version not in (2, 3):
        raise MalformedAdvert(f"version {version}, not 3")
    if typ != VRRP_TYPE_ADVERT:
        raise MalformedAdvert(f"type {typ}, not advertisement")
    try:
        v = ipaddress.ip_address(src).version
    except ValueError:
        raise MalformedAdvert(f"bad source address {src!r}") from None
    if version == 2 and v != 4:
        raise MalformedAdvert("version 2 over IPv6")
    auth = b""
    alen = 4 if v == 4 else 16
    if count == 0:
        raise MalformedAdvert("no addresses")
    need = HEADER_LEN + count * alen
    if len(data) < need:
        raise MalformedAdvert(f"{count} addresses announced but {len(data)} bytes")
    if version == 2:
        msg = bytes(data)  # the checksum covers the whole message, authentication data included
        if inet_checksum(msg) != 0:
            raise MalformedAdvert("bad checksum")
        atype = rsvd_int >> 8
        if atype == AUTH_AH:
            raise MalformedAdvert("authentication type 2 (AH: not supported)")
        if atype not in (AUTH_NONE, AUTH_PASS):
            raise MalformedAdvert(f"authentication type {atype} (only 0 and 1, PASS, are supported)")
        if atype == AUTH_PASS:
            if len(data) < need + AUTH_LEN:
                raise MalformedAdvert("authentication type 1 (PASS) without its 8 bytes")
            auth = bytes(data[need : need + AUTH_LEN]).rstrip(b"\0") or b"\0"
        interval = (rsvd_int & 0xFF) * 100
    else:
        msg = bytes(data[:need])
        try:
            pseudo = pseudo_header(src, dst, need)
        except ValueError:  # a destination of another family than the source, or no address
            raise MalformedAdvert(f"bad destination address {dst!r} for source {src!r}") from None
        if inet_checksum(pseudo + msg) != 0:
            raise MalformedAdvert("bad checksum")
        interval = rsvd_int & 0x0FFF
    if interval == 0:
        raise MalformedAdvert("advert interval 0")
    addrs = tuple(
        str(ipaddress.ip_address(msg[HEADER_LEN + i * alen : HEADER_LEN + (i + 1) * alen]))
        for i in range(count)
    )
    return Advert(vrid, prio, interval, addrs, version, typ, csum, auth)


# --- the state machine ---------------------------------------------------------------------------


class State(enum.Enum):
    """RFC 5798 states, plus FAULT (interface down: like Initialize, but for a reason)."""

    INITIALIZE = "initialize"
    BACKUP = "backup"
    MASTER = "master"
    FAULT = "fault"


@dataclass(frozen=True, slots=True)
class Params:
    """What a VRRP router is configured with. ``primary`` is the address adverts are sent from."""

    vrid: int
    priority: int  # 1..255 (255 = address owner)
    advert_int: int  # centiseconds
    primary: str
    vips: tuple[str, ...]
    preempt: bool = True
    preempt_delay: float = 0.0  # seconds a lower-priority master is tolerated before preempting
    version: int = VRRP_VERSION  # 3, or 2 (RFC 3768) for old peers
    auth: bytes = b""  # VRRPv2 PASS password sent and required (b"" = none)

    def skew(self, master_adver_int: int) -> float:
        """Skew_Time in seconds: ((256 - priority) * Master_Adver_Interval) / 256 (v3);
        (256 - priority) / 256 (v2)."""
        if self.version == 2:
            return (256 - self.priority) / 256.0
        return ((256 - self.priority) * master_adver_int) / 256.0 / 100.0

    def master_down_interval(self, master_adver_int: int) -> float:
        """Master_Down_Interval in seconds: 3 * Master_Adver_Interval + Skew_Time."""
        return 3 * master_adver_int / 100.0 + self.skew(master_adver_int)


@dataclass(frozen=True, slots=True)
class VRRPState:
    """Where a router is: its state, the timer deadline (adver or master-down), what it learned."""

    state: State = State.INITIALIZE
    deadline: float | None = None
    master_adver_int: int = 0  # centiseconds, learned from the master's adverts
    master_addr: str = ""  # who we last accepted as master
    lower_since: float | None = None  # when we first saw a lower-priority master (preempt_delay)
    #: the Master_Down_Timer fired but the sync group held us back (``may_master`` False)
    wants_master: bool = False


# events
@dataclass(frozen=True, slots=True)
class Startup:
    """The instance starts (or its interface comes back)."""


@dataclass(frozen=True, slots=True)
class Shutdown:
    """The instance stops: a master says goodbye with priority 0."""


@dataclass(frozen=True, slots=True)
class InterfaceDown:
    """The interface lost its link or went away: go to FAULT, release the addresses."""


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed; fire the timer if ``now`` reached the deadline."""


@dataclass(frozen=True, slots=True)
class Received:
    """A valid advert for our VRID arrived from ``src``."""

    advert: Advert
    src: str


@dataclass(frozen=True, slots=True)
class GroupMaster:
    """A member of our sync group became master: a backup follows it at once."""


@dataclass(frozen=True, slots=True)
class GroupBackup:
    """A member of our sync group left master for backup: a master follows, resigning (priority
    0) so that the peer's member takes over after its skew time, as the whole group moves."""


Event = Startup | Shutdown | InterfaceDown | Tick | Received | GroupMaster | GroupBackup


# actions
@dataclass(frozen=True, slots=True)
class SendAdvert:
    """Send an advert with this priority (0 = resigning)."""

    priority: int


@dataclass(frozen=True, slots=True)
class TakeOver:
    """Become master: add the virtual addresses and announce them (gratuitous ARP / NA)."""


@dataclass(frozen=True, slots=True)
class Release:
    """Stop being master: remove the virtual addresses."""


@dataclass(frozen=True, slots=True)
class Announce:
    """Announce the virtual addresses again (gratuitous ARP / NA) without re-adding them: another
    router also believes it is master and may have announced them after us."""


Action = SendAdvert | TakeOver | Release | Announce


def _addr_key(a: str) -> tuple[int, int]:
    ip = ipaddress.ip_address(a)
    return ip.version, int(ip)


def _as_backup(
    p: Params, now: float, interval: int, master: str, lower_since: float | None = None
) -> VRRPState:
    return VRRPState(State.BACKUP, now + p.master_down_interval(interval), interval, master, lower_since)


def _as_master(p: Params, now: float) -> VRRPState:
    return VRRPState(State.MASTER, now + p.advert_int / 100.0, p.advert_int, p.primary, None)


def step(
    p: Params, st: VRRPState, now: float, ev: Event, *, may_master: bool = True
) -> tuple[VRRPState, list[Action]]:
    """One transition of RFC 5798 section 6.4 (with keepalived's preempt_delay); pure.
    ``may_master`` False (a sync group not ready, ``group_may_master``) keeps a backup whose
    Master_Down_Timer fires in backup, wanting master, with the timer armed again."""
    s = st.state
    if isinstance(ev, GroupMaster):
        if s is not State.BACKUP:
            return st, []
        return _as_master(p, now), [SendAdvert(p.priority), TakeOver()]
    if isinstance(ev, GroupBackup):
        if s is not State.MASTER:
            return st, []
        return _as_backup(p, now, p.advert_int, ""), [SendAdvert(0), Release()]
    if isinstance(ev, Startup):
        if s not in (State.INITIALIZE, State.FAULT):
            return st, []
        if p.priority == 255:
            return _as_master(p, now), [SendAdvert(p.priority), TakeOver()]
        return _as_backup(p, now, p.advert_int, ""), []

    if isinstance(ev, (Shutdown, InterfaceDown)):
        target = State.INITIALIZE if isinstance(ev, Shutdown) else State.FAULT
        acts: list[Action] = []
        if s is State.MASTER:
            if isinstance(ev, Shutdown):
                acts.append(SendAdvert(0))
            acts.append(Release())
        return VRRPState(target), acts

    if isinstance(ev, Tick):
        if st.deadline is None or now < st.deadline:
            return st, []
        if s is State.BACKUP:  # Master_Down_Timer fired
            if not may_master:  # the sync group is not ready: wait another interval, wanting master
                interval = st.master_adver_int or p.advert_int
                return replace(st, deadline=now + p.master_down_interval(interval), wants_master=True), []
            return _as_master(p, now), [SendAdvert(p.priority), TakeOver()]
        if s is State.MASTER:  # Adver_Timer fired
            return replace(st, deadline=now + p.advert_int / 100.0), [SendAdvert(p.priority)]
        return st, []

    if isinstance(ev, Received):
        adv = ev.advert
        if s is State.BACKUP:
            if adv.priority == 0:  # the master resigned: take over after Skew_Time only
                return replace(st, deadline=now + p.skew(st.master_adver_int)), []
            lower = adv.priority < p.priority
            if not p.preempt or not lower:
                return _as_backup(p, now, adv.max_adver_int, ev.src), []
            # a lower-priority master and we preempt: tolerate it for preempt_delay, then discard
            since = st.lower_since if st.lower_since is not None else now
            if now - since < p.preempt_delay:
                return _as_backup(p, now, adv.max_adver_int, ev.src, since), []
            return replace(st, lower_since=since), []
        if s is State.MASTER:
            if adv.priority == 0:  # another master resigned: assert ourselves at once
                return replace(st, deadline=now + p.advert_int / 100.0), [SendAdvert(p.priority)]
            if adv.priority > p.priority or (
                adv.priority == p.priority and _addr_key(ev.src) > _addr_key(p.primary)
            ):
                return _as_backup(p, now, adv.max_adver_int, ev.src), [Release()]
            # a lower-priority master (a healed partition, a simultaneous start): answer at once so
            # it yields now, and announce again, since its own announcements may have come after ours
            return st, [SendAdvert(p.priority), Announce()]
        return st, []

    raise TypeError(f"not a VRRP event: {ev!r}")


# --- checks of a received advert against the configuration ---------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with a received packet: ``accept``; ``reason`` if dropped, ``warning`` if odd."""

    accept: bool
    reason: str = ""
    warning: str = ""


def check_received(p: Params, adv: Advert, ttl: int) -> Verdict:
    """RFC 5798 7.1 receiver checks past decoding: TTL/hop limit 255, our VRID, the address list.
    A different address list (or an owner's priority on a non-owner) is accepted but reported."""
    if ttl != VRRP_TTL:
        return Verdict(False, f"ttl/hop-limit {ttl}, not 255")
    if adv.vrid != p.vrid:
        return Verdict(False, f"vrid {adv.vrid}, not {p.vrid}")
    if adv.version != p.version:
        return Verdict(False, f"version {adv.version}, not {p.version}")
    if adv.auth != p.auth:  # keepalived: a type or password mismatch is dropped
        if not p.auth:
            return Verdict(False, "authentication PASS, we have none")
        return Verdict(False, "no authentication, we have PASS" if not adv.auth else "wrong password")
    warning = ""
    if set(adv.addrs) != {str(ipaddress.ip_address(v)) for v in p.vips}:
        warning = f"address list {list(adv.addrs)} differs from ours {list(p.vips)}"
    elif adv.priority == 255 and p.priority == 255:
        warning = "both routers claim to own the addresses (priority 255)"
    return Verdict(True, warning=warning)


def advert_for(p: Params, priority: int | None = None) -> Advert:
    """The advert this router sends (all its virtual addresses, its interval)."""
    return Advert(
        p.vrid,
        p.priority if priority is None else priority,
        p.advert_int,
        tuple(p.vips),
        p.version,
        auth=p.auth,
    )


def family_of(addrs: Sequence[str]) -> int:
    """AF_INET or AF_INET6 for a non-empty list of addresses of one family; ValueError otherwise."""
    fams = {ipaddress.ip_address(a).version for a in addrs}
    if len(fams) != 1:
        raise ValueError("virtual addresses must be all IPv4 or all IPv6")
    return AF_INET if fams == {4} else AF_INET6


def tracked_priority(base: int, tracked: Sequence[tuple[int, bool | None]]) -> int | None:
    """The priority after tracking, keepalived's semantics: for each tracked (weight, ok), a
    positive weight adds while ok, a negative one subtracts while failing, weight 0 means FAULT
    (None) while failing; no verdict yet (None) counts for nothing. The result stays within
    1..254; an address owner (255) keeps 255 unless in fault."""
    prio = base
    for weight, ok in tracked:
        if ok is None:
            continue
        if weight == 0 and not ok:
            return None
        if (weight > 0 and ok) or (weight < 0 and not ok):
            prio += weight
    if base == 255:
        return 255
    return max(1, min(254, prio))


# --- sync groups (keepalived's vrrp_sync_group): members change role together -----------------------


def group_may_master(others: Sequence[VRRPState]) -> bool:
    """May a member whose Master_Down_Timer fired become master, given the other members' states?
    Yes if one of them is master already (the group is), or if every one wants master too (its
    own timer fired); otherwise it waits in backup: keepalived prefers backup, so a member that
    still hears its peer's master keeps the whole group from thrashing."""
    if any(o.state is State.MASTER for o in others):
        return True
    return all(o.state is State.BACKUP and o.wants_master for o in others)


def group_orders(
    before: State, after: State, others: dict[str, State]
) -> dict[str, GroupMaster | GroupBackup]:
    """What the other members of a sync group must do when one goes from ``before`` to ``after``:
    to master, the backups follow (``GroupMaster``); from master to backup, the masters follow
    (``GroupBackup``). Fault is followed through tracking (a weight-0 object per member)."""
    if after is State.MASTER:
        return {k: GroupMaster() for k, s in others.items() if s is State.BACKUP}
    if before is State.MASTER and after is State.BACKUP:
        return {k: GroupBackup() for k, s in others.items() if s is State.MASTER}
    return {}


def vmac_address(vrid: int, af: int = AF_INET) -> bytes:
    """The virtual router MAC address of RFC 5798 7.3: 00-00-5E-00-01-{VRID} for IPv4,
    00-00-5E-00-02-{VRID} for IPv6."""
    if not 1 <= vrid <= 255:
        raise ValueError(f"vrid must be 1..255, got {vrid}")
    return bytes([0, 0, 0x5E, 0, 2 if af == AF_INET6 else 1, vrid])
