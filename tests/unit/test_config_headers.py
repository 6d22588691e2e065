"""An http check always sends one Host header (the `host` key, else the target); a `Host` in
`headers` would make it send two, which RFC 9112 servers answer with 400."""

from __future__ import annotations

import pytest

from lvsd.config.load import ConfigError, parse_config

SVC = '[[service]]\nvip = "192.0.2.1:80"\ncheck = {{ type = "http", headers = {{ {h} = "x" }} }}\n'


@pytest.mark.parametrize("name", ['"Host"', '"host"', '"HOST"'])
def test_host_in_headers_is_refused_with_a_pointer_to_the_host_key(name: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(SVC.format(h=name), check_files=False)
    assert e.value.errors == [
        f'service[0].check.headers.{name.strip(chr(34))}: set the Host header with the check\'s "host" key'
    ]


def test_other_headers_are_kept() -> None:
    c = parse_config(SVC.format(h='"X-Probe"'), check_files=False)
    assert c.services[0].checks[0].headers == (("X-Probe", "x"),)
