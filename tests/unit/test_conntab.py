"""/proc/net/ip_vs_conn parsing: lines as the 6.1 kernel prints them (ip_vs_conn_seq_show)."""

from __future__ import annotations

import pytest

from lvsd.ipvs import conntab
from lvsd.ipvs.model import Connection

HEADER = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n"


def v4line(proto, c, cp, v, vp, d, dp, state, exp, pe=""):
    def hx(a):
        return "".join(f"{int(x):02X}" for x in a.split("."))

    return f"{proto:<3} {hx(c)} {cp:04X} {hx(v)} {vp:04X} {hx(d)} {dp:04X} {state:<11} {exp:7d}{pe}\n"


def test_ipv4_entries_and_header():
    text = HEADER + v4line("TCP", "10.1.0.2", 51124, "10.1.0.100", 80, "10.2.0.11", 80, "TIME_WAIT", 116)
    text += v4line("UDP", "10.1.0.2", 40000, "10.1.0.100", 53, "10.3.0.12", 5353, "UDP", 299)
    got = list(conntab.parse(text.splitlines(True)))
    assert got == [
        Connection("TCP", "10.1.0.2", 51124, "10.1.0.100", 80, "10.2.0.11", 80, "TIME_WAIT", 116),
        Connection("UDP", "10.1.0.2", 40000, "10.1.0.100", 53, "10.3.0.12", 5353, "UDP", 299),
    ]


def test_persistence_template_and_sip_pe_data():
    # a fwmark/persistence template: protocol "IP", client port 0, state NONE
    tmpl = v4line("IP", "10.1.0.2", 0, "0.0.0.1", 0, "10.2.0.11", 0, "NONE", 359)
    sip = v4line("UDP", "10.1.0.2", 5060, "10.1.0.100", 5060, "10.2.0.11", 5060, "UDP", 120, " sip abc123@host")
    a, b = conntab.parse([tmpl, sip])
    assert (a.protocol, a.client_port, a.virtual_addr, a.state, a.pe_name) == ("IP", 0, "0.0.0.1", "NONE", "")
    assert (b.pe_name, b.pe_data) == ("sip", "abc123@host")


def test_ipv6_full_form_and_mixed_family_destination():
    c6 = "2001:0db8:0000:0000:0000:0000:0000:0002"
    v6 = "2001:0db8:0000:0000:0000:0000:0000:0001"
    d6 = "0000:0000:0000:0000:0000:ffff:c000:0201"
    line = f"TCP {c6} D431 {v6} 0050 0A000002 1F90 ESTABLISHED     899\n"
    line2 = f"UDP {c6} D431 {v6} 0035 {d6} 0035 UDP             12\n"
    (a, b) = conntab.parse([HEADER, line, line2])
    assert (a.client_addr, a.client_port, a.virtual_addr, a.virtual_port) == ("2001:db8::2", 0xD431, "2001:db8::1", 80)
    assert (a.dest_addr, a.dest_port, a.state, a.expires) == ("10.0.0.2", 8080, "ESTABLISHED", 899)
    assert b.dest_addr == "::ffff:c000:201"  # ipaddress' canonical text, as model.normalize_addr


def test_bad_line_names_file_and_line():
    with pytest.raises(conntab.ConnTableError) as ei:
        list(conntab.parse([HEADER, "TCP 0A01 zz\n"], "/proc/net/ip_vs_conn"))
    assert str(ei.value).startswith("/proc/net/ip_vs_conn:2: ")
    assert "\n" not in str(ei.value)


def test_read_connections_from_file_and_missing(tmp_path):
    p = tmp_path / "ip_vs_conn"
    p.write_text(HEADER + v4line("TCP", "1.2.3.4", 1, "5.6.7.8", 2, "9.10.11.12", 3, "CLOSE", 5))
    assert conntab.read_connections(str(p)) == [
        Connection("TCP", "1.2.3.4", 1, "5.6.7.8", 2, "9.10.11.12", 3, "CLOSE", 5)
    ]
    assert conntab.read_connections(str(tmp_path / "absent")) == []
