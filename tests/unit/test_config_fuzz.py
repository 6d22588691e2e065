"""Property tests: any document gives a Config or a ConfigError (never another exception), and
addresses come out normalized whatever way they are written."""

from __future__ import annotations

import ipaddress
import os
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lvsd.config import ConfigError, parse_config
from lvsd.config.load import (
    ALL_CHECK_KEYS,
    DAEMON_KEYS,
    HA_KEYS,
    SERVER_KEYS,
    SERVICE_KEYS,
    SYNC_KEYS,
    TOP_KEYS,
    build_config,
)
from lvsd.ipvs.model import AF_INET, AF_INET6

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

scalars = st.one_of(
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [
            "",
            "tcp",
            "udp",
            "http",
            "https",
            "script",
            "dns",
            "nat",
            "tun",
            "dr",
            "gue",
            "gre",
            "2s",
            "500ms",
            "vrrp",
            "192.0.2.1",
            "192.0.2.1:80",
            "[2001:db8::1]:80",
            "2001:db8::1",
            "sh",
            "mh",
            "sh-port",
            "sip",
            "/bin/true",
            "255.255.255.0",
            "eth0",
            "(",
            "200-299",
            "inhibit",
        ]
    ),
    st.text(max_size=8),
)
keys = st.sampled_from(
    sorted(set(TOP_KEYS + DAEMON_KEYS + SERVICE_KEYS + SERVER_KEYS + HA_KEYS + SYNC_KEYS + ALL_CHECK_KEYS))
    + ["upper", "lower", "timeouts", "tcp", "tcpfin", "udp", "netmask", "engine", "csum", "listen", "zzz"]
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=6)),
    max_leaves=25,
)


def resolver(host, af):
    return ["192.0.2.77"] if af != AF_INET6 else []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(keys, values, max_size=8))
def test_any_document_gives_config_or_config_error(doc):
    try:
        build_config(doc, resolver=resolver, check_files=False)
    except ConfigError as e:
        assert e.errors and all(isinstance(x, str) and "\n" not in x and ": " in x for x in e.errors)


#: cheaper values for the many optional keys of services and servers (generation dominates the run time)
small = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=2), st.dictionaries(keys, children, max_size=3)),
    max_leaves=6,
)

service_docs = st.fixed_dictionaries(
    {"vip": st.sampled_from(["192.0.2.10:80", "[2001:db8::10]:80"])},
    optional={k: small for k in SERVICE_KEYS if k not in ("vip", "server")},
).flatmap(
    lambda svc: st.lists(
        st.fixed_dictionaries(
            {"address": st.sampled_from(["192.0.2.21", "2001:db8::21", "web.example"])},
            optional={k: small for k in SERVER_KEYS if k != "address"},
        ),
        max_size=3,
    ).map(lambda servers: {**svc, "server": servers})
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(service_docs, max_size=3), st.dictionaries(keys, small, max_size=4))
def test_any_service_gives_config_or_config_error(services, defaults):
    try:
        c = build_config({"service": services, "defaults": defaults}, resolver=resolver, check_files=False)
    except ConfigError as e:
        assert e.errors and all("\n" not in x for x in e.errors)
        return
    for s in c.services:  # whatever validates must also pass the kernel model's own checks
        s.service.validate()
        for srv in s.servers:
            srv.dest.validate(s.key.af)
        if s.sorry_server is not None:
            s.sorry_server.validate(s.key.af)


def unicast(a) -> bool:
    return not (a.is_unspecified or a.is_multicast or a == ipaddress.IPv4Address("255.255.255.255"))


@settings(deadline=None)  # timing on a shared CI machine is not what these test
@given(st.ip_addresses(v=4).filter(unicast), st.ip_addresses(v=4).filter(unicast), st.integers(1, 65535))
def test_ipv4_addresses(vip, rip, port):
    c = parse_config(f'[[service]]\nvip = "{vip}:{port}"\n[[service.server]]\naddress = "{rip}"')
    (s,) = c.services
    assert (s.key.af, s.key.addr, s.key.port) == (AF_INET, str(vip), port)
    assert (s.servers[0].key.af, s.servers[0].key.addr, s.servers[0].key.port) == (AF_INET, str(rip), port)


@settings(deadline=None)  # timing on a shared CI machine is not what these test
@given(
    st.ip_addresses(v=6).filter(unicast),
    st.ip_addresses(v=6).filter(unicast),
    st.integers(1, 65535),
    st.booleans(),
)
def test_ipv6_addresses_any_spelling(vip, rip, port, exploded):
    spell = (lambda a: a.exploded.upper()) if exploded else str
    c = parse_config(
        f'[[service]]\nvip = "[{spell(vip)}]:{port}"\n[[service.server]]\naddress = "{spell(rip)}"'
    )
    (s,) = c.services
    assert (s.key.af, s.key.addr) == (AF_INET6, str(vip))
    assert s.servers[0].key.addr == str(ipaddress.ip_address(rip))


NON_UNICAST = st.one_of(
    st.ip_addresses(network="224.0.0.0/4"),
    st.ip_addresses(network="ff00::/8"),
    st.sampled_from([ipaddress.ip_address(a) for a in ("0.0.0.0", "255.255.255.255", "::")]),
)  # generated directly: filtering all addresses for these starves hypothesis's health check


@settings(deadline=None)  # timing on a shared CI machine is not what these test
@given(NON_UNICAST)
def test_non_unicast_addresses_are_refused(addr):
    assert not unicast(addr)
    host = f"[{addr}]" if addr.version == 6 else str(addr)
    try:
        parse_config(f'[[service]]\nvip = "{host}:80"')
    except ConfigError as e:
        assert e.errors[0].startswith("service[0].vip: ")
    else:
        raise AssertionError(f"{addr} accepted as a VIP")


def test_toml_blocks_in_the_documentation_parse():
    text = open(os.path.join(ROOT, "docs", "configuration.md")).read()
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert blocks
    for b in blocks:
        parse_config(b, check_files=False)
