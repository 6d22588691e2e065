"""``lvsd import keepalived``: the tokenizer (comments, quotes, braces, includes, conditionals,
parameters), the translation of each construct with keepalived's defaults and traps, the refusal
of invalid input with its line, and the output passing the loader."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tomli as tomllib  # a dependency (Python 3.10 has no tomllib)
from import_helpers import validate

from lvsd.migrate.emit import render
from lvsd.migrate.kconf import parse, split_words
from lvsd.migrate.keepalived import import_keepalived
from lvsd.migrate.model import MigrateError, Where

DATA = Path(__file__).resolve().parents[1] / "data" / "keepalived"
W = Where("t.conf", 1)


def conf(tmp_path: Path, text: str, name: str = "keepalived.conf") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def imported(tmp_path: Path, text: str, config_id: str = "a") -> tuple[dict[str, Any], list[str]]:
    m = import_keepalived(conf(tmp_path, text), config_id)
    return tomllib.loads(render(m, "lvsd import keepalived")), m.notes.render()


# --- tokenizer and parser -------------------------------------------------------------------------

def test_words_comments_quotes_and_braces() -> None:
    assert split_words('real_server 10.0.0.1 80{ # comment', W) == ["real_server", "10.0.0.1", "80", "{"]
    assert split_words("misc_path \"/bin/check -x\" ! other comment", W) == ["misc_path", "/bin/check -x"]
    assert split_words("""a ab" c "d 'e # f' """, W) == ["a", "ab c d", "e # f"]
    assert split_words("url { path / }", W) == ["url", "{", "path", "/", "}"]
    with pytest.raises(MigrateError, match="t.conf:1: unterminated quoted string"):
        split_words('misc_path "/bin/x', W)


def test_blocks_open_on_the_same_line_the_next_line_or_inline(tmp_path: Path) -> None:
    tree, _ = parse(conf(tmp_path, "virtual_server 10.0.0.1 80\n{\n  real_server 10.0.0.2 80 { weight 2 }\n"
                                   "  lvs_sched rr\n}\n"), "a")
    (vs,) = tree
    assert vs.words == ["virtual_server", "10.0.0.1", "80"] and vs.block is not None
    rs, sched = vs.block
    assert rs.block is not None and rs.block[0].words == ["weight", "2"]
    assert sched.words == ["lvs_sched", "rr"] and sched.where.line == 4


def test_conditional_lines_follow_the_config_id(tmp_path: Path) -> None:
    text = "@a global_defs {\n@^a router_id x\n}\n"
    tree, rd = parse(conf(tmp_path, text), "a")
    assert [s.key for s in tree] == ["global_defs"] and tree[0].block == [] and rd.skipped_conditional == 1
    with pytest.raises(MigrateError, match=r":3: '}' closes no block"):
        parse(conf(tmp_path, text), "b")  # the block's opening line was for "a" only


def test_parameters_expand_recursively_and_over_several_lines(tmp_path: Path) -> None:
    text = ("$BASE=10.0.${SUB}\n$SUB=7\n$RS=\\\n  real_server ${BASE}.2 80 { \\\n  weight 4 \\\n  }\n"
            "virtual_server ${BASE}.1 80 {\n  $RS\n}\n")
    (vs,), _ = parse(conf(tmp_path, text), "a")
    assert vs.args == ["10.0.7.1", "80"] and vs.block is not None
    assert vs.block[0].words == ["real_server", "10.0.7.2", "80"] and vs.block[0].block[0].words == ["weight", "4"]


def test_include_is_relative_to_the_including_file_sorted_and_lines_name_their_file(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b.conf").write_text("virtual_server 10.0.0.2 80 {\n}\n")
    (tmp_path / "d" / "a.conf").write_text("include ../last.conf\nvirtual_server 10.0.0.1 80 {\n}\n")
    (tmp_path / "last.conf").write_text("\n\nvirtual_server 10.0.0.3 80 {\n}\n")
    tree, rd = parse(conf(tmp_path, "include d/*.conf\ninclude none/*.conf\n"), "a")
    assert [(s.args[0], Path(s.where.file).name, s.where.line) for s in tree] == [
        ("10.0.0.3", "last.conf", 3), ("10.0.0.1", "a.conf", 2), ("10.0.0.2", "b.conf", 1)]
    assert len(rd.missing_includes) == 1 and "none/*.conf: no such file" in rd.missing_includes[0]
    with pytest.raises(MigrateError, match=r":1: includea none/\*: no such file"):
        parse(conf(tmp_path, "includea none/*\n", "x.conf"), "a")


def test_an_include_loop_stops_with_the_line(tmp_path: Path) -> None:
    with pytest.raises(MigrateError, match="nested deeper than 8"):
        parse(conf(tmp_path, "include keepalived.conf\n"), "a")


def test_seq_is_refused_with_its_line(tmp_path: Path) -> None:
    with pytest.raises(MigrateError, match=r"keepalived.conf:2: ~SEQ"):
        parse(conf(tmp_path, "global_defs {\n~SEQ(i, 1, 1, 3) router_id r$i\n}\n"), "a")


def test_non_utf8_is_fine_in_comments_and_refused_with_its_line_elsewhere(tmp_path: Path) -> None:
    p = tmp_path / "k.conf"
    p.write_bytes(b"# \x93\xfa\x96\x7b\x8c\xea\nglobal_defs {\n router_id \x93\xfa\n}\n")
    with pytest.raises(MigrateError, match=r"k.conf:3: not UTF-8"):
        parse(str(p), "a")
    p.write_bytes(b"# \x93\xfa\x96\x7b\x8c\xea\nglobal_defs {\n}\n")
    assert parse(str(p), "a")[0][0].key == "global_defs"


# --- translation ------------------------------------------------------------------------------------

BASIC = """
virtual_server 192.0.2.10 80 {
    real_server 192.0.2.11 80 {
        TCP_CHECK {
        }
    }
}
"""


def test_keepalived_defaults_are_written_out(tmp_path: Path) -> None:
    out, notes = imported(tmp_path, BASIC)
    (svc,) = out["service"]
    assert svc["forward"] == "nat" and svc["scheduler"] == "wlc" and svc["protocol"] == "tcp"
    assert (svc["quorum"], svc["hysteresis"]) == (1, 0)
    (srv,) = svc["server"]
    assert srv["weight"] == 1
    assert srv["check"] == [{"type": "tcp", "interval": "1m", "timeout": "5s", "rise": 1, "fall": 2,
                             "retry_delay": "1s"}]
    assert any("alpha" in n for n in notes)


def test_retry_is_fall_minus_one_and_timers_inherit_from_virtual_to_real_to_checker(tmp_path: Path) -> None:
    out, _ = imported(tmp_path, """
virtual_server 192.0.2.10 80 {
    delay_loop 10
    retry 3
    real_server 192.0.2.11 80 {
        connect_timeout 2
        TCP_CHECK { delay_before_retry 0.5 }
        HTTP_GET {
            url { path /a }
            url {
                path b
                status_code 200
            }
            nb_get_retry 0
        }
        MISC_CHECK { misc_path /bin/true }
        DNS_CHECK { retry 0 }
    }
}
""")
    tcp, http_a, http_b, misc, dns = out["service"][0]["server"][0]["check"]
    assert tcp == {"type": "tcp", "interval": "10s", "timeout": "2s", "rise": 1, "fall": 4, "retry_delay": "500ms"}
    assert http_a["path"] == "/a" and http_b["path"] == "/b" and http_b["status"] == 200
    assert http_a["fall"] == 1 and http_a["retry_delay"] == "3s" and http_a["status"] == "200-299"
    assert misc["argv"] == ["/bin/true"] and misc["timeout"] == "10s" and misc["fall"] == 4  # VS retry 3
    assert dns["name"] == "." and dns["qtype"] == "SOA" and dns["fall"] == 1 and dns["retry_delay"] == "10s"


def test_checker_defaults_of_misc_and_dns(tmp_path: Path) -> None:
    out, _ = imported(tmp_path, """
virtual_server 192.0.2.10 53 {
    protocol UDP
    real_server 192.0.2.11 53 {
        MISC_CHECK { misc_path "/bin/check a" }
        DNS_CHECK { name example.org }
    }
}
""")
    misc, dns = out["service"][0]["server"][0]["check"]
    assert misc["fall"] == 1 and misc["timeout"] == "1m"  # retry 0, misc_timeout = delay_loop
    assert dns["fall"] == 4 and dns["retry_delay"] == "1m"  # retry 3, delay_before_retry = delay_loop


def test_ssl_get_does_not_verify_and_says_so(tmp_path: Path) -> None:
    out, notes = imported(tmp_path, """
virtual_server 192.0.2.10 443 {
    real_server 192.0.2.11 443 {
        SSL_GET { url { path / } }
    }
}
""")
    (ck,) = out["service"][0]["server"][0]["check"]
    assert ck["type"] == "https" and ck["verify"] is False
    assert any("SSL_GET does not verify certificates" in n for n in notes)


def test_sorry_server_is_replace_mode_and_dr_ports_follow_the_vip(tmp_path: Path) -> None:
    out, notes = imported(tmp_path, """
virtual_server 192.0.2.10 80 {
    lvs_method DR
    sorry_server 192.0.2.99 8080
    sorry_server_inhibit
    real_server 192.0.2.11 8080 {
        TCP_CHECK { }
    }
}
""")
    (svc,) = out["service"]
    assert svc["sorry_mode"] == "replace" and svc["sorry_inhibit"] is True
    assert svc["sorry_server"] == {"address": "192.0.2.99", "port": 80}
    (srv,) = svc["server"]
    assert "port" not in srv  # the VIP's: the kernel ignores a DR port
    assert srv["check"][0]["connect"] == ":8080"  # but the check still probes what keepalived probed
    assert sum("under DR" in n for n in notes) == 2


def test_group_is_expanded_with_ranges_and_fwmarks(tmp_path: Path) -> None:
    out, _ = imported(tmp_path, """
virtual_server_group G {
    192.0.2.1-3 80
    2001:db8::1 80
    198.51.100.8/31 8080
    fwmark 5
}
virtual_server group G {
    persistence_timeout
    real_server 192.0.2.50 80 { }
}
""")
    keys = [s.get("vip") or s.get("fwmark") for s in out["service"]]
    assert keys == ["192.0.2.1:80", "192.0.2.2:80", "192.0.2.3:80", "[2001:db8::1]:80", "198.51.100.8:8080",
                    "198.51.100.9:8080", 5]
    assert all(s["persistence"] == {"timeout": "6m"} for s in out["service"])


def test_vrrp_instance_becomes_ha_vrrp_with_version_2_and_auth_pass(tmp_path: Path) -> None:
    out, notes = imported(tmp_path, """
vrrp_instance A {
    state BACKUP
    interface eth0
    virtual_router_id 9
    priority 255
    advert_int 0.5
    nopreempt
    authentication { auth_type PASS
      auth_pass 123456789 }
    virtual_ipaddress {
        192.0.2.100
        192.0.2.101/24 dev eth0
    }
}
vrrp_instance B {
    interface eth1
    virtual_router_id 10
}
""")
    assert out["ha"] == {"mode": "vrrp", "priority": 254, "advert_interval": "500ms", "preempt": False,
                         "version": 2, "interface": "eth0", "vrid": 9, "auth_pass": "12345678",
                         "vips": ["192.0.2.100", "192.0.2.101/24"]}
    assert any("vrrp_instance B not translated" in n for n in notes)


def test_auth_ah_is_a_note_not_a_key(tmp_path: Path) -> None:
    out, notes = imported(tmp_path, "vrrp_instance A {\n interface e\n virtual_router_id 1\n"
                          " authentication {\n  auth_type AH\n  auth_pass x\n }\n}\n")
    assert "auth_pass" not in out["ha"] and any("AH is not supported" in n for n in notes)


def test_global_lvs_keys(tmp_path: Path) -> None:
    out, _ = imported(tmp_path, "global_defs {\n lvs_timeouts tcp 7200 udp 30\n lvs_flush\n lvs_flush_onstop\n"
                      " lvs_sync_daemon bond0 VI_1 id 3 ttl 2 group 239.1.2.3\n}\n")
    assert out["ipvs"] == {"timeouts": {"tcp": "2h", "udp": "30s"}}
    assert out["daemon"] == {"on_start": "flush", "on_stop": "remove"}
    assert out["sync"] == {"interface": "bond0", "syncid": 3, "ttl": 2, "group": "239.1.2.3"}


def test_misc_path_split_or_shell_and_script_user(tmp_path: Path) -> None:
    out, notes = imported(tmp_path, """
virtual_server 192.0.2.10 80 {
    real_server 192.0.2.11 80 {
        MISC_CHECK {
            misc_path "/usr/bin/check --port 80"
            user nobody nogroup
        }
        MISC_CHECK {
            misc_path "/usr/bin/check | grep ok"
            misc_dynamic
        }
    }
}
""")
    a, b = out["service"][0]["server"][0]["check"]
    assert a["argv"] == ["/usr/bin/check", "--port", "80"] and (a["user"], a["group"]) == ("nobody", "nogroup")
    assert b["argv"] == ["/bin/sh", "-c", "/usr/bin/check | grep ok"] and b["dynamic_weight"] is True
    assert any("/bin/sh -c" in n for n in notes)


@pytest.mark.parametrize(("text", "line", "what"), [
    ("bal_defs {\n}\n", 1, "unknown keyword 'bal_defs'"),
    ("virtual_server 192.0.2.10 80 {\n  real_server xxx.xxx.xxx.xxx 80 {\n  }\n}\n", 2, "is not an IP address"),
    ("virtual_server 192.0.2.10 80 {\n  lvs_sched rrr\n}\n", 2, "unknown scheduler"),
    ("virtual_server 192.0.2.10 80 {\n  lvs_method FOO\n}\n", 2, "NAT, DR or TUN"),
    ("virtual_server group NOPE {\n}\n", 1, "not defined"),
    ("virtual_server 192.0.2.10 80 {\n}\n}\n", 3, "closes no block"),
    ("vrrp_instance A {\n  virtual_router_id 0\n}\n", 2, "must be 1..255"),
    ("virtual_server 192.0.2.10 {\n}\n", 1, "without a port must be persistent"),
    ("virtual_server 192.0.2.10 80 {\n  real_server 192.0.2.1 80 {\n   FILE_CHECK { track_file t }\n }\n}\n",
     3, "track_file 't' is not defined"),
])
def test_invalid_input_is_refused_with_file_and_line(tmp_path: Path, text: str, line: int, what: str) -> None:
    with pytest.raises(MigrateError) as e:
        import_keepalived(conf(tmp_path, text), "a")
    assert str(e.value).startswith(f"{tmp_path}/keepalived.conf:{line}: ") and what in str(e.value)


def test_fixture_with_everything_passes_the_loader() -> None:
    m = import_keepalived(str(DATA / "main.conf"), "lvs_a")
    text = render(m, "lvsd import keepalived")
    assert validate(text) == ([], [])
    out = tomllib.loads(text)
    assert len(out["service"]) == 5 and out["ha"]["priority"] == 150 and out["sync"]["syncid"] == 7
    file_check = out["service"][0]["server"][1]["check"][1]
    assert file_check == {"type": "file", "path": "/run/lvs/web-weight", "mode": "status", "interval": "1s",
                          "rise": 1, "fall": 1}


def test_the_command_line(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "lvsd.daemon.main", "import", "keepalived", str(DATA / "main.conf"),
                        "--config-id", "lvs_a", "-o", str(tmp_path / "out.toml")], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == ""
    assert "note: " in r.stderr and "main.conf:26: auth_type PASS" in r.stderr
    assert tomllib.loads((tmp_path / "out.toml").read_text())["ha"]["vrid"] == 51
    r = subprocess.run([sys.executable, "-m", "lvsd.daemon.main", "import", "keepalived",
                        str(DATA / "typo.conf")], capture_output=True, text=True)
    assert r.returncode == 78 and r.stdout == ""
    assert r.stderr.strip().endswith("typo.conf:4: unknown real_server keyword 'wieght'")
    assert "Traceback" not in r.stderr


def test_every_import_option_is_in_the_lvsd_man_page(tmp_path: Path) -> None:
    from lvsd.migrate.cli import parser

    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, str(root / "docs" / "man" / "render.py"), "--out", str(tmp_path)], check=True)
    page = (tmp_path / "lvsd.8").read_text().replace("\\-", "-").replace("\\fB", "").replace("\\fR", "")
    opts = [o for a in parser()._actions for o in a.option_strings]
    assert "--config-id" in opts and "lvsd import keepalived" in page
    assert [o for o in opts if o not in page] == []


def test_unicast_peers_and_tracking(tmp_path: Path) -> None:
    out, _ = imported(tmp_path, """
vrrp_script chk_app {
    script "/usr/local/bin/chk --fast"
    interval 2
    fall 3
    weight -20
}
vrrp_instance A {
    interface eth0
    virtual_router_id 9
    unicast_src_ip 192.0.2.1
    unicast_peer {
        192.0.2.2
    }
    track_interface {
        eth1 weight -30
        eth2
    }
    track_script {
        chk_app
    }
    virtual_ipaddress {
        192.0.2.100
    }
}
""")
    ha = out["ha"]
    assert ha["unicast_src"] == "192.0.2.1" and ha["unicast_peers"] == ["192.0.2.2"]
    assert ha["track_interfaces"] == [{"name": "eth1", "weight": -30}, {"name": "eth2", "weight": 0}]
    assert ha["track_scripts"] == [{"argv": ["/usr/local/bin/chk", "--fast"], "interval": "2s", "timeout": "1s",
                                    "rise": 1, "fall": 3, "weight": -20}]
    assert validate(render(import_keepalived(str(tmp_path / "keepalived.conf"), "a"), "x")) == ([], [])
