"""``lvsd import ldirectord``: sections, ldirectord's defaults written out, checks by checktype
and service, fallback, maintenancedir as file checks, refusals with their line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tomli as tomllib  # a dependency (Python 3.10 has no tomllib)
from import_helpers import validate

from lvsd.migrate.emit import render
from lvsd.migrate.ldirectord import import_ldirectord
from lvsd.migrate.model import MigrateError

DATA = Path(__file__).resolve().parents[1] / "data" / "ldirectord"


def imported(tmp_path: Path, text: str) -> tuple[dict[str, Any], list[str]]:
    p = tmp_path / "ldirectord.cf"
    p.write_text(text)
    m = import_ldirectord(str(p))
    return tomllib.loads(render(m, "lvsd import ldirectord")), m.notes.render()


def test_defaults_are_ldirectords(tmp_path: Path) -> None:
    out, _ = imported(tmp_path, "virtual=192.0.2.10:8000\n\treal=192.0.2.11:8000\n")
    assert out["daemon"] == {"on_stop": "remove"}  # cleanstop yes
    (svc,) = out["service"]
    assert (svc["scheduler"], svc["on_failure"], svc["quorum"]) == ("wrr", "inhibit", 1)  # quiescent yes
    (srv,) = svc["server"]
    assert srv["weight"] == 1 and "forward" not in srv  # gate = lvsd's dr
    assert srv["check"] == [{"type": "tcp", "timeout": "5s", "interval": "10s", "rise": 1, "fall": 1,
                             "retry_delay": "10s"}]


def test_the_fixture_translates_and_passes_the_loader() -> None:
    m = import_ldirectord(str(DATA / "web.cf"))
    text = render(m, "lvsd import ldirectord")
    assert validate(text) == ([], [])
    out = tomllib.loads(text)
    web, dns, mark = out["service"]
    assert web["persistence"] == {"timeout": "10m", "netmask": "255.255.255.0"} and web["on_failure"] == "remove"
    assert web["sorry_server"] == {"address": "127.0.0.1", "forward": "dr", "port": 80}
    assert [s["address"] for s in web["server"]] == ["192.0.2.11", "192.0.2.12", "192.0.2.20", "192.0.2.21"]
    http, maint_port, maint = web["server"][1]["check"]
    assert (http["type"], http["path"], http["body"], http["host"], http["timeout"]) == (
        "http", "/health.html", "OK", "www.example.org", "3s")
    assert maint_port["path"] == "/var/lib/ldirectord/maint/192.0.2.12:80" and maint_port["mode"] == "presence"
    assert maint["path"] == "/var/lib/ldirectord/maint/192.0.2.12"
    assert dns["protocol"] == "udp" and dns["server"][1]["port"] == 5353 and dns["server"][1]["forward"] == "nat"
    assert dns["server"][0]["check"][0]["type"] == "dns" and dns["server"][0]["check"][0]["expect"] == "192.0.2.1"
    assert mark["fwmark"] == 100 and mark["server"][0]["check"][0]["connect"] == ":443"


def test_https_does_not_verify_and_external_gets_a_note(tmp_path: Path) -> None:
    out, notes = imported(tmp_path, "virtual=192.0.2.10:443\n\treal=192.0.2.11:443 masq 3\n\tservice=https\n"
                          "virtual=192.0.2.10:25\n\treal=192.0.2.11:25\n\tchecktype=external\n"
                          "\tcheckcommand=\"/usr/local/bin/smtp-check --fast\"\n")
    https = out["service"][0]["server"][0]
    assert https["weight"] == 3 and https["forward"] == "nat" and https["check"][0]["verify"] is False
    assert out["service"][1]["server"][0]["check"][0]["argv"] == ["/usr/local/bin/smtp-check", "--fast"]
    assert any("checkcommand" in n for n in notes)


@pytest.mark.parametrize(("text", "line", "what"), [
    ("virtual=192.0.2.10:80\n\treal=192.0.2.11:80\n\tcheckytpe=connect\n", 3, "unknown virtual server key"),
    ("scheduler=rr\n", 1, "virtual server keys must be indented"),
    ("virtual=192.0.2.10\n", 1, "needs a port"),
    ("virtual=192.0.2.10:80\n\treal=192.0.2.11:80 gate\n\tchecktype=sometimes\n", 3, "unknown checktype"),
    ("# c\nthis is not a setting\n", 2, "expected key=value"),
])
def test_invalid_input_is_refused_with_its_line(tmp_path: Path, text: str, line: int, what: str) -> None:
    p = tmp_path / "l.cf"
    p.write_text(text)
    with pytest.raises(MigrateError) as e:
        import_ldirectord(str(p))
    assert str(e.value).startswith(f"{p}:{line}: ") and what in str(e.value)
