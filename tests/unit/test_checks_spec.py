"""Config check tables -> CheckSpec: every key reaches the checker under the right name."""

from __future__ import annotations

import sys

from lvsd.checks.base import spec_from_config
from lvsd.checks.http import build_request
from lvsd.config.load import parse_config


def checks_of(check: str):
    cfg = parse_config(
        f'[[service]]\nname = "web"\nvip = "10.0.0.1:80"\nforward = "nat"\ncheck = {check}\n'
        '  [[service.server]]\n  address = "10.0.0.5"\n  port = 8080\n',
        check_files=False,
    )
    return cfg.services[0].servers[0].checks


def test_tcp_keys() -> None:
    (c,) = checks_of('{ type = "tcp", connect = "10.9.9.9:9000", bind = "10.0.0.1", send = "PING\\r\\n", '
                     'expect = "+PONG", interval = "250ms", timeout = "100ms", rise = 4, fall = 5, retry_delay = "50ms" }')
    s = spec_from_config(c)
    assert (s.type, s.connect_addr, s.connect_port, s.bind) == ("tcp", "10.9.9.9", 9000, "10.0.0.1")
    assert (s.send, s.expect) == (b"PING\r\n", b"+PONG")
    assert (s.interval, s.timeout, s.rise, s.fall, s.retry) == (0.25, 0.1, 4, 5, 0.05)


def test_port_only_connect_keeps_address() -> None:
    (c,) = checks_of('{ type = "tcp", connect = ":9000" }')
    s = spec_from_config(c)
    assert (s.connect_addr, s.connect_port) == (None, 9000)


def test_http_keys_and_request() -> None:
    (c,) = checks_of('{ type = "https", method = "head", path = "/h?x=1", host = "www.example.org", '
                     'status = ["200-299", 304], body = "ok", headers = { "X-A" = "1" }, verify = false, '
                     'max_body = 4096 }')
    s = spec_from_config(c)
    assert (s.type, s.method, s.path, s.host, s.sni) == ("https", "HEAD", "/h?x=1", "www.example.org", "www.example.org")
    assert s.status == ((200, 299), (304, 304)) and s.body == "ok" and s.body_limit == 4096
    assert s.headers == (("X-A", "1"),) and s.verify is False
    req = build_request(s, "10.0.0.5", 8080, tls=True)
    assert req.startswith(b"HEAD /h?x=1 HTTP/1.0\r\nHost: www.example.org\r\n") and b"X-A: 1\r\n" in req


def test_digest_keys() -> None:
    (c,) = checks_of('{ type = "http", digest = "' + "A" * 64 + '", digest_algorithm = "sha256" }')
    s = spec_from_config(c)
    assert s.digest == "a" * 64 and s.digest_algorithm == "sha256"


def test_script_udp_dns_keys() -> None:
    (c,) = checks_of(f'{{ type = "script", argv = ["{sys.executable}", "-c", "pass"], dynamic_weight = true }}')
    s = spec_from_config(c)
    assert s.argv == (sys.executable, "-c", "pass") and s.dynamic_weight
    (c,) = checks_of('{ type = "udp", send = "hi", expect = "yo" }')
    s = spec_from_config(c)
    assert (s.send, s.expect) == (b"hi", b"yo")
    (c,) = checks_of('{ type = "dns", name = "www.example.org", qtype = "aaaa", rcode = "nxdomain", expect = ["2001:db8::1"] }')
    s = spec_from_config(c)
    assert (s.query, s.qtype, s.rcode, s.dns_expect) == ("www.example.org", "AAAA", "NXDOMAIN", ("2001:db8::1",))


def test_list_of_checks() -> None:
    cs = checks_of('[{ type = "tcp" }, { type = "http", path = "/x" }]')
    assert [spec_from_config(c).type for c in cs] == ["tcp", "http"]
