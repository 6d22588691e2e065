"""Health-check configuration: every key of every type, defaults, and every rule."""

from __future__ import annotations

import textwrap

import pytest

from lvsd.config import ConfigError, parse_config
from lvsd.config.model import DNSCheck, HTTPCheck, ScriptCheck, TCPCheck, UDPCheck
from lvsd.ipvs.model import DestKey


def checks_of(check_toml: str, **kw):
    """The checks of one server configured with ``check = <check_toml>``."""
    text = f'[[service]]\nname = "s"\nvip = "192.0.2.10:80"\n[[service.server]]\naddress = "192.0.2.21"\ncheck = {check_toml}\n'
    return parse_config(text, **kw).services[0].servers[0].checks


def errors_of(check_toml: str, **kw) -> list[str]:
    text = f'[[service]]\nname = "s"\nvip = "192.0.2.10:80"\n[[service.server]]\naddress = "192.0.2.21"\ncheck = {check_toml}\n'
    with pytest.raises(ConfigError) as e:
        parse_config(text, **kw)
    return e.value.errors


P = "service[s].server[0].check"


def assert_err(errs, path, fragment=""):
    assert any(e.startswith(path + ": ") and fragment in e for e in errs), "\n".join(errs)


def test_common_defaults_and_keys():
    (c,) = checks_of('{ type = "tcp" }')
    assert c == TCPCheck(type="tcp", interval=2.0, timeout=1.0, rise=2, fall=3, retry_delay=2.0)
    (c,) = checks_of(
        '{ type = "tcp", interval = "500ms", timeout = 0.2, rise = 1, fall = 5, retry_delay = "100ms" }'
    )
    assert (c.interval, c.timeout, c.rise, c.fall, c.retry_delay) == (0.5, 0.2, 1, 5, 0.1)
    (c,) = checks_of('{ type = "tcp", interval = "10s" }')
    assert c.retry_delay == 10.0  # defaults to the interval


def test_common_errors():
    errs = errors_of(
        '{ type = "tcp", interval = "0s", timeout = "fast", rise = 0, fall = "3", retry_delay = -1 }'
    )
    assert_err(errs, f"{P}.interval", "at least")
    assert_err(errs, f"{P}.timeout", "must be a duration")
    assert_err(errs, f"{P}.rise", "must be 1..1000, got 0")
    assert_err(errs, f"{P}.fall", 'must be an integer, got string "3"')
    assert_err(errs, f"{P}.retry_delay", "non-negative")
    assert len(errs) == 5


def test_type_required_and_known():
    assert_err(errors_of('{ interval = "2s" }'), f"{P}.type", 'missing: one of "tcp", "http"')
    assert_err(errors_of('{ type = "htp" }'), f"{P}.type", 'did you mean "http"')
    assert_err(errors_of('"tcp"'), P, "must be a table or a list of tables")
    assert_err(errors_of('[{ type = "tcp" }, "http"]'), f"{P}[1]", "must be a table")


def test_list_of_checks_paths():
    cs = checks_of('[{ type = "tcp" }, { type = "http", path = "/h" }]')
    assert [c.type for c in cs] == ["tcp", "http"]
    errs = errors_of('[{ type = "tcp", rise = 0 }, { type = "http", path = "h" }]')
    assert_err(errs, f"{P}[0].rise")
    assert_err(errs, f"{P}[1].path")
    assert checks_of("[]") == ()


def test_tcp():
    (c,) = checks_of(
        '{ type = "tcp", connect = "192.0.2.50:8080", bind = "192.0.2.1", send = "PING\\r\\n", expect = "PONG" }'
    )
    assert c == TCPCheck(
        connect_address="192.0.2.50", connect_port=8080, bind="192.0.2.1", send=b"PING\r\n", expect=b"PONG"
    )
    assert c.target(DestKey(2, "192.0.2.21", 80)) == ("192.0.2.50", 8080)
    (c,) = checks_of('{ type = "tcp", connect = ":8080" }')
    assert c.connect_address is None and c.target(DestKey(2, "192.0.2.21", 80)) == ("192.0.2.21", 8080)
    (c,) = checks_of('{ type = "tcp", connect = "[2001:db8::1]:22" }')
    assert (c.connect_address, c.connect_port) == ("2001:db8::1", 22)
    (c,) = checks_of('{ type = "tcp" }')
    assert c.target(DestKey(2, "192.0.2.21", 80)) == ("192.0.2.21", 80)
    errs = errors_of('{ type = "tcp", connect = "192.0.2.50", bind = "me", expect = "", path = "/" }')
    assert_err(errs, f"{P}.connect", '"address:port"')
    assert_err(errs, f"{P}.bind", "not an IP address")
    assert_err(errs, f"{P}.expect", "must not be empty")
    assert_err(errs, f"{P}.path", 'not allowed here (only for type "http", "https" or "file")')
    errs = errors_of('{ type = "tcp", connect = "host:0" }')
    assert_err(errs, f"{P}.connect", "port must be 1..65535")


def test_http_and_https():
    (c,) = checks_of(
        '{ type = "http", method = "head", path = "/health?x=1", host = "www.example.org", '
        'status = ["200-204", 301, "404"], body = "^ok", headers = { "X-Check" = "lvsd", Accept = "*/*" }, max_body = 4096 }'
    )
    assert c == HTTPCheck(
        type="http",
        method="HEAD",
        path="/health?x=1",
        host="www.example.org",
        status=((200, 204), (301, 301), (404, 404)),
        body="^ok",
        headers=(("X-Check", "lvsd"), ("Accept", "*/*")),
        max_body=4096,
    )
    assert not c.tls and c.status_ok(204) and c.status_ok(404) and not c.status_ok(205)
    (c,) = checks_of('{ type = "http" }')
    assert c.status == ((200, 299),) and c.method == "GET" and c.path == "/" and c.max_body == 1 << 20
    (c,) = checks_of('{ type = "http", status = 200, digest = "D41D8CD98F00B204E9800998ECF8427E" }')
    assert (
        c.status == ((200, 200),)
        and c.digest == "d41d8cd98f00b204e9800998ecf8427e"
        and c.digest_algorithm == "md5"
    )
    (c,) = checks_of('{ type = "http", digest = "' + "a" * 64 + '", digest_algorithm = "sha256" }')
    assert c.digest_algorithm == "sha256"
    (c,) = checks_of(
        '{ type = "https", host = "h.example", verify = false, ca = "/etc/hostname", cert = "/etc/hostname", key = "/etc/hostname" }',
        check_files=False,
    )
    assert c.tls and c.sni == "h.example" and not c.verify and c.ca == c.cert == c.key == "/etc/hostname"
    (c,) = checks_of('{ type = "https", host = "h.example", sni = "other.example" }')
    assert c.sni == "other.example" and c.verify


def test_http_errors():
    errs = errors_of(
        '{ type = "http", method = "FETCH", path = "health", host = "a b", status = ["2xx", 99, "300-200", true], '
        'body = "(", digest = "abc", headers = { "Bad Header" = "x", Ok = 5 }, max_body = 0, verify = false }'
    )
    assert_err(errs, f"{P}.method", "must be one of GET, HEAD")
    assert_err(errs, f"{P}.path", 'must start with "/"')
    assert_err(errs, f"{P}.host", "not a valid Host header")
    assert_err(errs, f"{P}.status[0]", 'a range like "200-299"')
    assert_err(errs, f"{P}.status[1]", "codes 100..599")
    assert_err(errs, f"{P}.status[2]", "low <= high")
    assert_err(errs, f"{P}.status[3]", "got boolean")
    assert_err(errs, f"{P}.body", "not a valid regular expression")
    assert_err(errs, f"{P}.digest", "32 hex digits (md5)")
    assert_err(errs, f"{P}.digest", "use body or digest, not both")
    assert_err(errs, f'{P}.headers."Bad Header"', "not a valid header name")
    assert_err(errs, f"{P}.headers.Ok", "must be a string")
    assert_err(errs, f"{P}.max_body", "must be 1..")
    assert_err(errs, f"{P}.verify", 'only for type "https"')
    errs = errors_of('{ type = "https", key = "/etc/hostname", ca = "/nonexistent/ca.pem" }')
    assert_err(errs, f"{P}.key", "needs cert")
    assert_err(errs, f"{P}.ca", '"/nonexistent/ca.pem": no such file')
    errs = errors_of('{ type = "http", digest = "' + "a" * 32 + '", digest_algorithm = "sha1" }')
    assert_err(errs, f"{P}.digest", "40 hex digits (sha1)")


def test_script_not_executable(tmp_path):
    f = tmp_path / "check.sh"
    f.write_text("#!/bin/sh\nexit 0\n")
    f.chmod(0o644)
    assert_err(errors_of(f'{{ type = "script", argv = ["{f}"] }}'), f"{P}.argv[0]", "not executable")
    f.chmod(0o755)
    assert checks_of(f'{{ type = "script", argv = ["{f}"] }}')[0].argv == (str(f),)


def test_script():
    (c,) = checks_of(
        '{ type = "script", argv = ["/bin/true", "--x"], user = "nobody", group = "nogroup", dynamic_weight = true, timeout = "5s" }'
    )
    assert c == ScriptCheck(
        argv=("/bin/true", "--x"), user="nobody", group="nogroup", dynamic_weight=True, timeout=5.0
    )
    # a relative argv[0] is looked up in PATH at run time; ids may be numbers or digit strings
    (c,) = checks_of('{ type = "script", argv = ["check-thing"], user = "0", group = 65534 }')
    assert c.argv == ("check-thing",) and c.dynamic_weight is False
    assert (c.user, c.group) == (0, 65534)
    assert_err(
        errors_of('{ type = "script", argv = ["/bin/true"], user = -1 }'), f"{P}.user", "id 0..4294967294"
    )
    errs = errors_of(
        '{ type = "script", argv = "/bin/true -x", user = "no-such-user-xyz", group = "no-such-group-xyz", connect = ":1" }'
    )
    assert_err(errs, f"{P}.argv", "list of strings (argv, no shell)")
    assert_err(errs, f"{P}.user", 'no such user "no-such-user-xyz"')
    assert_err(errs, f"{P}.group", 'no such group "no-such-group-xyz"')
    assert_err(errs, f"{P}.connect", "not allowed here")
    assert_err(errors_of('{ type = "script" }'), f"{P}.argv", "missing")
    assert_err(errors_of('{ type = "script", argv = ["/dev/null"] }'), f"{P}.argv[0]", "not a regular file")
    assert_err(
        errors_of('{ type = "tcp", dynamic_weight = true }'), f"{P}.dynamic_weight", 'only for type "script"'
    )
    # on another host: names and files are not looked up
    checks_of('{ type = "script", argv = ["/nonexistent"], user = "no-such-user-xyz" }', check_files=False)


def test_udp():
    (c,) = checks_of('{ type = "udp", send = "ping", expect = "pong", connect = ":5353" }')
    assert c == UDPCheck(send=b"ping", expect=b"pong", connect_port=5353)
    (c,) = checks_of('{ type = "udp", send = "" }')
    assert c.send == b"" and c.expect is None
    assert_err(errors_of('{ type = "udp" }'), f"{P}.send", "missing")


def test_dns():
    (c,) = checks_of(
        '{ type = "dns", name = "example.org", qtype = "aaaa", rcode = "nxdomain", expect = ["2001:db8::1"] }'
    )
    assert c == DNSCheck(name="example.org", qtype="AAAA", rcode="NXDOMAIN", expect=("2001:db8::1",))
    (c,) = checks_of('{ type = "dns", name = "example.org.", expect = "192.0.2.1", qtype = "TYPE65" }')
    assert c.qtype == "TYPE65" and c.rcode == "NOERROR" and c.expect == ("192.0.2.1",)
    errs = errors_of(
        '{ type = "dns", name = "bad name!", qtype = "AXFR2", rcode = "WHATEVER", expect = [1] }'
    )
    assert_err(errs, f"{P}.name", "not a DNS name")
    assert_err(errs, f"{P}.qtype", "must be one of")
    assert_err(errs, f"{P}.rcode", "must be one of")
    assert_err(errs, f"{P}.expect", "list of non-empty strings")
    assert_err(errors_of('{ type = "dns" }'), f"{P}.name", "missing")


def test_port_zero_server_needs_a_connect_port():
    text = textwrap.dedent(
        """
        [[service]]
        name = "m"
        fwmark = 1
        check = [{ type = "tcp" }, { type = "script", argv = ["/bin/true"] }]
          [[service.server]]
          address = "192.0.2.21"
          [[service.server]]
          address = "192.0.2.22"
          check = { type = "http" }
          [[service.server]]
          address = "192.0.2.23"
          check = { type = "tcp", connect = ":22" }
          [[service.server]]
          address = "192.0.2.24"
          port = 80
        """
    )
    with pytest.raises(ConfigError) as e:
        parse_config(text)
    assert e.value.errors == [
        'service[m].server[0]: inherited tcp check of a server with port 0 needs connect = "address:port" or ":port"',
        'service[m].server[1].check: http check of a server with port 0 needs connect = "address:port" or ":port"',
    ]


def test_identical_checks_are_equal_values():
    text = textwrap.dedent(
        """
        [[service]]
        name = "a"
        vip = "192.0.2.10:80"
        check = { type = "http", path = "/h", headers = { A = "1" } }
          [[service.server]]
          address = "192.0.2.21"
        [[service]]
        name = "b"
        vip = "192.0.2.11:80"
        check = { type = "http", path = "/h", headers = { A = "1" } }
          [[service.server]]
          address = "192.0.2.21"
        """
    )
    c = parse_config(text)
    x, y = c.services[0].servers[0].checks[0], c.services[1].servers[0].checks[0]
    assert x == y and hash(x) == hash(y)
    assert len({x, y, HTTPCheck(type="https", path="/h", headers=(("A", "1"),))}) == 2


def test_same_check_table_on_many_servers_is_parsed_once_but_types_still_matter():
    servers = "".join(
        f'[[service.server]]\naddress = "192.0.2.{i}"\ncheck = {{ type = "tcp", rise = {rise} }}\n'
        for i, rise in ((21, "1"), (22, "1"), (23, "true"), (24, "1.0"), (25, "0"))
    )
    with pytest.raises(ConfigError) as e:
        parse_config(f'[[service]]\nname = "s"\nvip = "192.0.2.10:80"\n{servers}')
    assert e.value.errors == [
        "service[s].server[2].check.rise: must be an integer, got boolean true",
        "service[s].server[3].check.rise: must be an integer, got float 1.0",
        "service[s].server[4].check.rise: must be 1..1000, got 0",
    ]
    servers = "".join(
        f'[[service.server]]\naddress = "192.0.2.{i}"\ncheck = {{ type = "tcp", rise = 1 }}\n'
        for i in (21, 22)
    )
    c = parse_config(f'[[service]]\nname = "s"\nvip = "192.0.2.10:80"\n{servers}')
    a, b = c.services[0].servers
    assert a.checks[0] is b.checks[0] and a.checks[0].rise == 1
