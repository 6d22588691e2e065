"""VRRPv3 codec, checksum, receiver checks and the state machine (lvsd.core.vrrp), on the host."""

from __future__ import annotations

import heapq
import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsd.core import vrrp as v

# --- codec ---------------------------------------------------------------------------------------

# An advert for VRID 51, priority 100, 1 s (100 cs), one address 10.1.0.100, sent from 10.1.0.11 to
# 224.0.0.18, assembled by hand from RFC 5798 5.1/5.2 (version 3, type 1) with the checksum summed
# by hand over the IPv4 pseudo-header (src, dst, 0, 112, length 12) and the message:
#   0a01+000b+e000+0012+0070+000c+3133+6401+0064+0000+0a01+0064 = 0x18a97 -> 0x8a98 -> ~ = 0x7567
GOLDEN4 = bytes.fromhex("31 33 64 01 00 64 75 67 0a 01 00 64")


def test_encode_matches_hand_built_ipv4_advert() -> None:
    adv = v.Advert(vrid=51, priority=100, max_adver_int=100, addrs=("10.1.0.100",))
    assert v.encode(adv, "10.1.0.11", "224.0.0.18") == GOLDEN4


def test_decode_golden_ipv4() -> None:
    adv = v.decode(GOLDEN4, "10.1.0.11", "224.0.0.18")
    assert adv == v.Advert(51, 100, 100, ("10.1.0.100",))
    assert adv.checksum == 0x7567
    assert adv.interval == 1.0


def test_checksum_covers_the_pseudo_header() -> None:
    # The same bytes from another source must fail: keepalived 2.2.7 includes the pseudo-header.
    with pytest.raises(v.MalformedAdvert, match="checksum"):
        v.decode(GOLDEN4, "10.1.0.12", "224.0.0.18")
    # and a checksum over the VRRP message alone (RFC 3768 style) is rejected
    msg = bytearray(GOLDEN4)
    msg[6:8] = b"\0\0"
    msg[6:8] = struct.pack("!H", v.inet_checksum(bytes(msg)))
    with pytest.raises(v.MalformedAdvert, match="checksum"):
        v.decode(bytes(msg), "10.1.0.11", "224.0.0.18")


def test_ipv6_advert_by_hand() -> None:
    src, dst = "fe80::1", "ff02::12"
    adv = v.Advert(vrid=7, priority=200, max_adver_int=10, addrs=("2001:db8::100", "2001:db8::101"))
    data = v.encode(adv, src, dst)
    assert len(data) == 8 + 32
    assert data[:6] == bytes([0x31, 7, 200, 2, 0x00, 0x0A])
    assert data[8:24] == ipaddress.ip_address("2001:db8::100").packed
    # IPv6 pseudo-header: src, dst, 32-bit upper-layer length, 3 zero bytes, next header 112
    pseudo = (
        ipaddress.ip_address(src).packed
        + ipaddress.ip_address(dst).packed
        + struct.pack("!I", 40)
        + b"\0\0\0\x70"
    )
    assert v.inet_checksum(pseudo + data) == 0
    assert v.decode(data, src, dst) == adv


def test_inet_checksum_rfc1071_example() -> None:
    # RFC 1071 section 3: words 0001 f203 f4f5 f6f7 sum to ddf2 (one's complement) -> checksum 220d
    assert v.inet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
    assert v.inet_checksum(b"\x01") == ~0x0100 & 0xFFFF  # odd length padded with a zero byte


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x31\x33\x64", "too short"),
        (bytes.fromhex("41 33 64 01 00 64 00 00 0a 01 00 64"), "version 4"),
        (bytes.fromhex("32 33 64 01 00 64 00 00 0a 01 00 64"), "type 2"),
        (bytes.fromhex("31 33 64 00 00 64 00 00"), "no addresses"),
        (bytes.fromhex("31 33 64 02 00 64 00 00 0a 01 00 64"), "2 addresses announced"),
        (GOLDEN4[:6] + b"\x75\x68" + GOLDEN4[8:], "bad checksum"),
    ],
)
def test_decode_rejects_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(v.MalformedAdvert, match=reason):
        v.decode(data, "10.1.0.11", "224.0.0.18")


def test_decode_rejects_zero_interval() -> None:
    adv = v.Advert(51, 100, 1, ("10.1.0.100",))
    data = bytearray(v.encode(adv, "10.1.0.11", "224.0.0.18"))
    data[5] = 0  # interval 0; fix the checksum so only the interval is wrong
    data[6:8] = b"\0\0"
    data[6:8] = struct.pack(
        "!H", v.inet_checksum(v.pseudo_header("10.1.0.11", "224.0.0.18", 12) + bytes(data))
    )
    with pytest.raises(v.MalformedAdvert, match="interval 0"):
        v.decode(bytes(data), "10.1.0.11", "224.0.0.18")


# VRRPv2 (RFC 3768) as keepalived sends it by default: VRID 51, priority 100, auth type 0,
# interval 1 s, one address 10.1.0.100, 8 zero bytes of authentication data; checksum over the
# message alone: 2133+6401+0001+0000+0a01+0064 = 0x8f9a -> ~ = 0x7065
GOLDEN2 = bytes.fromhex("21 33 64 01 00 01 70 65 0a 01 00 64 00 00 00 00 00 00 00 00")


def test_vrrpv2_by_hand() -> None:
    adv = v.Advert(vrid=51, priority=100, max_adver_int=100, addrs=("10.1.0.100",), version=2)
    assert v.encode(adv, "10.1.0.11", "224.0.0.18") == GOLDEN2
    # v2 has no pseudo-header: any source decodes
    assert v.decode(GOLDEN2, "10.9.9.9", "224.0.0.18") == adv
    with pytest.raises(v.MalformedAdvert, match="checksum"):
        v.decode(GOLDEN2[:-1] + b"\x01", "10.1.0.11", "224.0.0.18")
    auth = bytearray(GOLDEN2)
    auth[4] = 3  # a type no RFC defines (1, PASS, is taken since issue 12); checksum fixed up
    auth[6:8] = b"\0\0"
    auth[6:8] = struct.pack("!H", v.inet_checksum(bytes(auth)))
    with pytest.raises(v.MalformedAdvert, match="authentication type 3"):
        v.decode(bytes(auth), "10.1.0.11", "224.0.0.18")
    with pytest.raises(ValueError, match="whole seconds"):
        v.encode(v.Advert(51, 100, 50, ("10.1.0.100",), version=2), "10.1.0.11", v.VRRP_GROUP4)
    p2 = v.Params(51, 100, 200, "10.1.0.11", ("10.1.0.100",), version=2)
    assert p2.skew(200) == pytest.approx(156 / 256)  # v2: (256 - priority) / 256 s, whatever the interval
    assert p2.master_down_interval(200) == pytest.approx(6 + 156 / 256)
    assert not v.check_received(P, adv, 255).accept  # a v3 router drops v2 adverts
    assert "version 2, not 3" in v.check_received(P, adv, 255).reason
    assert v.check_received(p2, adv, 255).accept
    assert v.advert_for(p2).version == 2


def test_encode_refuses_bad_values() -> None:
    with pytest.raises(ValueError, match="vrid"):
        v.encode(v.Advert(0, 100, 100, ("10.0.0.1",)), "10.0.0.2", v.VRRP_GROUP4)
    with pytest.raises(ValueError, match="interval"):
        v.encode(v.Advert(1, 100, 4096, ("10.0.0.1",)), "10.0.0.2", v.VRRP_GROUP4)
    with pytest.raises(ValueError, match="family"):
        v.encode(v.Advert(1, 100, 100, ("2001:db8::1",)), "10.0.0.2", v.VRRP_GROUP4)


@given(
    vrid=st.integers(1, 255),
    prio=st.integers(0, 255),
    interval=st.integers(1, 4095),
    addrs=st.lists(st.ip_addresses(v=4).map(str), min_size=1, max_size=20),
    src=st.ip_addresses(v=4).map(str),
)
def test_roundtrip_and_any_bit_flip_is_caught(
    vrid: int, prio: int, interval: int, addrs: list, src: str
) -> None:
    adv = v.Advert(vrid, prio, interval, tuple(addrs))
    data = v.encode(adv, src, v.VRRP_GROUP4)
    assert v.decode(data, src, v.VRRP_GROUP4) == adv
    for i in (0, 2, 6, len(data) - 1):
        bad = bytearray(data)
        bad[i] ^= 0x10
        with pytest.raises(v.MalformedAdvert):
            v.decode(bytes(bad), src, v.VRRP_GROUP4)


# --- receiver checks -----------------------------------------------------------------------------

P = v.Params(vrid=51, priority=100, advert_int=100, primary="10.1.0.11", vips=("10.1.0.100",))


def test_check_received() -> None:
    good = v.Advert(51, 150, 100, ("10.1.0.100",))
    assert v.check_received(P, good, 255) == v.Verdict(True)
    assert not v.check_received(P, good, 254).accept
    assert "ttl" in v.check_received(P, good, 64).reason
    assert "vrid 52" in v.check_received(P, v.Advert(52, 150, 100, ("10.1.0.100",)), 255).reason
    odd = v.check_received(P, v.Advert(51, 150, 100, ("10.1.0.100", "10.1.0.101")), 255)
    assert odd.accept and "address list" in odd.warning


# --- state machine -------------------------------------------------------------------------------


def adv(prio: int, interval: int = 100) -> v.Advert:
    return v.Advert(51, prio, interval, ("10.1.0.100",))


def test_timers() -> None:
    assert P.skew(100) == pytest.approx(156 / 256)
    assert P.master_down_interval(100) == pytest.approx(3 + 156 / 256)
    p = v.Params(51, 254, 10, "10.1.0.11", ("10.1.0.100",))
    assert p.master_down_interval(10) == pytest.approx(0.3 + (256 - 254) * 10 / 256 / 100)


def test_startup_backup_then_master_after_master_down_interval() -> None:
    s, acts = v.step(P, v.VRRPState(), 10.0, v.Startup())
    assert s.state is v.State.BACKUP and acts == []
    assert s.deadline == pytest.approx(10.0 + P.master_down_interval(100))
    s2, acts = v.step(P, s, s.deadline - 0.001, v.Tick())
    assert s2 == s and acts == []
    s3, acts = v.step(P, s, s.deadline, v.Tick())
    assert s3.state is v.State.MASTER and acts == [v.SendAdvert(100), v.TakeOver()]
    assert s3.deadline == pytest.approx(s.deadline + 1.0)
    s4, acts = v.step(P, s3, s3.deadline, v.Tick())
    assert acts == [v.SendAdvert(100)] and s4.deadline == pytest.approx(s3.deadline + 1.0)


def test_owner_starts_as_master() -> None:
    p = v.Params(51, 255, 100, "10.1.0.11", ("10.1.0.100",))
    s, acts = v.step(p, v.VRRPState(), 0.0, v.Startup())
    assert s.state is v.State.MASTER and acts == [v.SendAdvert(255), v.TakeOver()]


def test_backup_learns_master_interval_and_resets_timer() -> None:
    s, _ = v.step(P, v.VRRPState(), 0.0, v.Startup())
    s, acts = v.step(P, s, 2.0, v.Received(adv(150, 10), "10.1.0.12"))
    assert acts == [] and s.master_adver_int == 10 and s.master_addr == "10.1.0.12"
    assert s.deadline == pytest.approx(2.0 + 0.3 + 156 * 10 / 256 / 100)


def test_master_resigning_means_takeover_after_skew() -> None:
    s, _ = v.step(P, v.VRRPState(), 0.0, v.Startup())
    s, _ = v.step(P, s, 1.0, v.Received(adv(150), "10.1.0.12"))
    s, acts = v.step(P, s, 2.0, v.Received(adv(0), "10.1.0.12"))
    assert acts == [] and s.deadline == pytest.approx(2.0 + P.skew(100))


def test_shutdown_of_master_sends_priority_zero_and_releases() -> None:
    s, _ = v.step(P, v.VRRPState(), 0.0, v.Startup())
    s, _ = v.step(P, s, s.deadline, v.Tick())
    s2, acts = v.step(P, s, 5.0, v.Shutdown())
    assert s2.state is v.State.INITIALIZE and acts == [v.SendAdvert(0), v.Release()]
    s3, acts = v.step(P, s, 5.0, v.InterfaceDown())
    assert s3.state is v.State.FAULT and acts == [v.Release()]
    s4, _ = v.step(P, s3, 6.0, v.Startup())
    assert s4.state is v.State.BACKUP


def master_state(p: v.Params) -> v.VRRPState:
    s, _ = v.step(p, v.VRRPState(), 0.0, v.Startup())
    s, _ = v.step(p, s, s.deadline, v.Tick())
    assert s.state is v.State.MASTER
    return s


def test_master_yields_to_higher_priority_and_to_higher_address_on_tie() -> None:
    s = master_state(P)
    s2, acts = v.step(P, s, 9.0, v.Received(adv(101), "10.1.0.5"))
    assert s2.state is v.State.BACKUP and acts == [v.Release()]
    s3, acts = v.step(P, s, 9.0, v.Received(adv(100), "10.1.0.12"))
    assert s3.state is v.State.BACKUP
    s4, acts = v.step(P, s, 9.0, v.Received(adv(100), "10.1.0.10"))
    assert s4 == s and acts == [v.SendAdvert(100), v.Announce()]
    s5, acts = v.step(P, s, 9.0, v.Received(adv(99), "10.1.0.200"))
    assert s5 == s and acts == [v.SendAdvert(100), v.Announce()]


def test_preempt_rules() -> None:
    s, _ = v.step(P, v.VRRPState(), 0.0, v.Startup())
    # preempt: a lower-priority master's adverts are discarded, so our timer runs out
    s2, _ = v.step(P, s, 1.0, v.Received(adv(50), "10.1.0.12"))
    assert s2.deadline == s.deadline
    # no preempt: a lower-priority master is accepted
    np = v.Params(51, 100, 100, "10.1.0.11", ("10.1.0.100",), preempt=False)
    s, _ = v.step(np, v.VRRPState(), 0.0, v.Startup())
    s3, _ = v.step(np, s, 1.0, v.Received(adv(50), "10.1.0.12"))
    assert s3.deadline == pytest.approx(1.0 + np.master_down_interval(100))


def test_preempt_delay() -> None:
    p = v.Params(51, 100, 100, "10.1.0.11", ("10.1.0.100",), preempt_delay=5.0)
    s, _ = v.step(p, v.VRRPState(), 0.0, v.Startup())
    t = 0.0
    while t < 5.0:  # tolerated for 5 s: every advert resets the timer
        t += 1.0
        s, acts = v.step(p, s, t, v.Received(adv(50), "10.1.0.12"))
        assert s.state is v.State.BACKUP
        s, acts = v.step(p, s, t, v.Tick())
        assert acts == []
    assert s.lower_since == 0.0 or s.lower_since == 1.0
    last = s.deadline
    s, _ = v.step(p, s, t + 1.0, v.Received(adv(50), "10.1.0.12"))  # now discarded
    assert s.deadline == last
    s, acts = v.step(p, s, last, v.Tick())
    assert s.state is v.State.MASTER
    # a higher-priority advert forgets the lower master
    s, _ = v.step(p, v.VRRPState(), 0.0, v.Startup())
    s, _ = v.step(p, s, 1.0, v.Received(adv(50), "10.1.0.12"))
    s, _ = v.step(p, s, 2.0, v.Received(adv(150), "10.1.0.13"))
    assert s.lower_since is None


# --- two routers on one link: never two masters once they hear each other ----------------------


def simulate(
    pa: v.Params, pb: v.Params, start_b: float, delay: float, cut: tuple[float, float] | None, until: float
):
    """Discrete-event run of two routers exchanging adverts with a fixed one-way delay; a cut
    (from, to) loses every advert sent in that window. Returns the (time, states) trace."""
    routers = {"a": pa, "b": pb}
    states = {"a": v.VRRPState(), "b": v.VRRPState()}
    q: list = []
    seq = 0

    def push(t: float, kind: str, who: str, payload: object = None) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(q, (t, seq, kind, who, payload))

    push(0.0, "start", "a")
    push(start_b, "start", "b")
    trace = []

    def run(who: str, now: float, ev: v.Event) -> None:
        p = routers[who]
        states[who], acts = v.step(p, states[who], now, ev)
        other = "b" if who == "a" else "a"
        for a in acts:
            if isinstance(a, v.SendAdvert) and not (cut and cut[0] <= now < cut[1]):
                push(now + delay, "recv", other, (v.advert_for(p, a.priority), p.primary))
        if states[who].deadline is not None:
            push(states[who].deadline, "tick", who)

    while q:
        t, _, kind, who, payload = heapq.heappop(q)
        if t > until:
            break
        if kind == "start":
            run(who, t, v.Startup())
        elif kind == "tick":
            run(who, t, v.Tick())
        else:
            a, src = payload
            run(who, t, v.Received(a, src))
        trace.append((t, states["a"].state, states["b"].state))
    return trace


@settings(max_examples=150, deadline=None)
@given(
    prio_a=st.integers(1, 254),
    prio_b=st.integers(1, 254),
    interval=st.sampled_from([10, 100]),
    start_b=st.floats(0, 5),
    delay=st.floats(0, 0.004),
    preempt=st.booleans(),
    cut=st.one_of(st.none(), st.tuples(st.floats(1, 20), st.floats(0.1, 10))),
)
def test_never_two_masters_once_they_hear_each_other(
    prio_a, prio_b, interval, start_b, delay, preempt, cut
) -> None:
    pa = v.Params(51, prio_a, interval, "10.1.0.11", ("10.1.0.100",), preempt=preempt)
    pb = v.Params(51, prio_b, interval, "10.1.0.12", ("10.1.0.100",), preempt=preempt)
    window = (cut[0], cut[0] + cut[1]) if cut else None
    adv_s = interval / 100
    # Once both run and hear each other, two masters can only coexist until the newer master's
    # first advert arrives (one delay). A partition (cut) legitimately makes two masters; after it
    # heals they meet again within one advert interval.
    healed = window[1] + adv_s + delay if window else 0.0
    until = max(start_b, healed) + 20 * adv_s + 5
    trace = simulate(pa, pb, start_b, delay, window, until)
    both_since = None
    for t, sa, sb in trace:
        both = sa is v.State.MASTER and sb is v.State.MASTER
        if both and both_since is None:
            both_since = t
        elif not both:
            both_since = None
        if both_since is not None and not (window and window[0] <= t <= healed):
            assert (
                t - max(both_since, healed if window and both_since < healed else both_since) <= delay + 1e-9
            ), (
                both_since,
                t,
            )
    # and there is exactly one master at the end
    _, sa, sb = trace[-1]
    assert (sa is v.State.MASTER) != (sb is v.State.MASTER)
    if preempt and prio_a != prio_b:  # the higher priority wins (a tie keeps the sitting master)
        assert (sa is v.State.MASTER) == (prio_a > prio_b)


@settings(max_examples=50, deadline=None)
@given(interval=st.sampled_from([10, 100]), cut_at=st.floats(5, 10), prio=st.integers(1, 254))
def test_takeover_within_master_down_interval(interval: int, cut_at: float, prio: int) -> None:
    # a is master (255-owner is not used: 254 beats anyone); a's adverts stop at cut_at
    pa = v.Params(51, 254, interval, "10.1.0.11", ("10.1.0.100",))
    pb = v.Params(51, min(prio, 253), interval, "10.1.0.12", ("10.1.0.100",))
    trace = simulate(pa, pb, 0.0, 0.001, (cut_at, 1e9), cut_at + 10)
    took = next(t for t, sa, sb in trace if t >= cut_at and sb is v.State.MASTER)
    assert took - cut_at <= pb.master_down_interval(interval) + 0.001 + 1e-9


# VRRPv2 with keepalived's "auth_type PASS, auth_pass secret": auth type 1, the password in the
# 8 authentication bytes, NUL-padded; checksum over the message:
# 2133+6401+0101+0000+0a01+0064+7365+6372+6574+0000 = 0x1_cce5 -> 0xcce6 -> ~ = 0x3319
GOLDEN2_PASS = bytes.fromhex("21 33 64 01 01 01 33 19 0a 01 00 64") + b"secret\0\0"


def test_vrrpv2_auth_pass() -> None:
    adv = v.Advert(51, 100, 100, ("10.1.0.100",), version=2, auth=b"secret")
    assert v.encode(adv, "10.1.0.11", "224.0.0.18") == GOLDEN2_PASS
    got = v.decode(GOLDEN2_PASS, "10.1.0.12", "224.0.0.18")
    assert got == adv and got.auth == b"secret"
    p = v.Params(51, 100, 100, "10.1.0.11", ("10.1.0.100",), version=2, auth=b"secret")
    assert v.check_received(p, got, 255).accept
    assert v.advert_for(p).auth == b"secret"
    wrong = v.Advert(51, 100, 100, ("10.1.0.100",), version=2, auth=b"other")
    assert v.check_received(p, wrong, 255).reason == "wrong password"
    none = v.decode(GOLDEN2, "10.1.0.12", "224.0.0.18")
    assert v.check_received(p, none, 255).reason == "no authentication, we have PASS"
    p0 = v.Params(51, 100, 100, "10.1.0.11", ("10.1.0.100",), version=2)
    assert v.check_received(p0, got, 255).reason == "authentication PASS, we have none"
    ah = bytearray(GOLDEN2)
    ah[4] = 2
    ah[6:8] = b"\0\0"
    ah[6:8] = struct.pack("!H", v.inet_checksum(bytes(ah)))
    with pytest.raises(v.MalformedAdvert, match="AH: not supported"):
        v.decode(bytes(ah), "10.1.0.11", "224.0.0.18")
    with pytest.raises(ValueError, match="VRRPv2 only"):
        v.encode(v.Advert(51, 100, 100, ("10.1.0.100",), auth=b"x"), "10.1.0.11", "224.0.0.18")


def test_tracked_priority_follows_keepalived() -> None:
    assert v.tracked_priority(100, []) == 100
    assert v.tracked_priority(100, [(-60, False), (-10, True), (20, True), (30, False)]) == 60
    assert v.tracked_priority(100, [(-60, None), (20, None)]) == 100  # no verdict yet: no effect
    assert v.tracked_priority(100, [(0, False)]) is None  # weight 0: fault while failing
    assert v.tracked_priority(100, [(0, True)]) == 100
    assert v.tracked_priority(100, [(-200, False)]) == 1
    assert v.tracked_priority(200, [(100, True)]) == 254
    assert v.tracked_priority(255, [(-100, False)]) == 255  # the address owner keeps 255
