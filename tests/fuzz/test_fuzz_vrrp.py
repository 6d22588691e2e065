"""Fuzzer of the VRRP packet parser (lvsd.core.vrrp ``decode`` and ``check_received``): any bytes
from any source to any destination are a ``MalformedAdvert`` or a valid ``Advert``, never another
exception, and a valid one always gets a verdict. Structure-aware: valid adverts of both versions
and families, then flipped, truncated, extended or re-addressed."""

from __future__ import annotations

import ipaddress

from budget import budget
from hypothesis import given
from hypothesis import strategies as st

from lvsd.core.vrrp import Advert, MalformedAdvert, Params, Verdict, check_received, decode, encode

V4 = st.ip_addresses(v=4).map(str)
V6 = st.ip_addresses(v=6).map(str)
ADDRESS = st.one_of(V4, V6, st.sampled_from(["", "224.0.0.18", "ff02::12", "::ffff:1.2.3.4", "1.2.3", "fe80::1%eth0"]),
                    st.text(max_size=20))
PARAMS = [
    Params(vrid=51, priority=100, advert_int=100, primary="192.0.2.1", vips=("192.0.2.100",)),
    Params(vrid=51, priority=255, advert_int=100, primary="192.0.2.1", vips=("192.0.2.100",), version=2),
    Params(vrid=7, priority=100, advert_int=100, primary="2001:db8::1", vips=("2001:db8::100",)),
]


@st.composite
def adverts(draw: st.DrawFn) -> tuple[bytes, str, str]:
    """A valid advert's bytes with its source and destination (v2 IPv4, v3 IPv4 or IPv6)."""
    version = draw(st.sampled_from([2, 3]))
    six = version == 3 and draw(st.booleans())
    fam = V6 if six else V4
    src, dst = draw(fam), ("ff02::12" if six else "224.0.0.18")
    interval = draw(st.integers(1, 40)) * 100 if version == 2 else draw(st.integers(1, 4095))
    addrs = tuple(draw(st.lists(fam, min_size=1, max_size=20)))
    adv = Advert(draw(st.integers(1, 255)), draw(st.integers(0, 255)), interval, addrs, version)
    return encode(adv, src, dst), src, dst


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, str, str]:
    data, src, dst = draw(adverts())
    b = bytearray(data)
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "extend", "src", "dst"]))
        if op == "flip" and b:
            i = draw(st.integers(0, len(b) - 1))
            b[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and b:
            b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 255))
        elif op == "truncate":
            del b[draw(st.integers(0, len(b))) :]
        elif op == "extend":
            b += draw(st.binary(max_size=64))
        elif op == "src":
            src = draw(ADDRESS)
        else:
            dst = draw(ADDRESS)
    return bytes(b), src, dst


PACKETS = st.one_of(mutated(), st.tuples(st.binary(max_size=200), ADDRESS, ADDRESS))


@budget(1000)
@given(packet=PACKETS, ttl=st.integers(-1, 300))
def test_vrrp_decode_is_malformed_or_a_valid_advert(packet: tuple[bytes, str, str], ttl: int) -> None:
    data, src, dst = packet
    try:
        adv = decode(data, src, dst)
    except MalformedAdvert as e:
        assert e.reason and "\n" not in e.reason
        return
    assert adv.version in (2, 3) and 1 <= adv.max_adver_int <= 25500 and adv.addrs
    assert len({ipaddress.ip_address(a).version for a in adv.addrs}) == 1
    for p in PARAMS:
        assert isinstance(check_received(p, adv, ttl), Verdict)


@budget(300)
@given(packet=adverts())
def test_vrrp_valid_adverts_decode_to_themselves(packet: tuple[bytes, str, str]) -> None:
    data, src, dst = packet
    adv = decode(data, src, dst)
    assert encode(adv, src, dst) == data
