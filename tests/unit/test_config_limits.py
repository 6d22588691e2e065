"""The loader's limits: every path out of it is a ``ConfigError`` of ``path: what is wrong`` lines
(hostile values in every key of the key table, deep nesting, huge files, FIFOs and devices), and
every numeric key's range is the kernel's (tests generated from the key table)."""

from __future__ import annotations

import copy
import os
import re
import threading

import pytest

from lvsd.checks.registry import CHECK_TYPES, check_class
from lvsd.config import ConfigError, parse_config
from lvsd.config.keys import Key
from lvsd.config.layers import (
    PERSISTENCE_ROWS,
    SERVER_ROWS,
    SERVER_WIDE_ROWS,
    SERVICE_WIDE_ROWS,
    SORRY_ROWS,
    THRESHOLD_ROWS,
    TUNNEL_ROWS,
)
from lvsd.config.load import MAX_CONFIG_BYTES, MAX_DEPTH, build_config, load_config, read_config_file
from lvsd.config.sections import API_ROWS, DAEMON_ROWS, HA_ROWS, METRICS_ROWS, SYNC_ROWS, TIMEOUT_ROWS

#: a line of a ConfigError: a path (or file name), a colon, what is wrong; never a traceback
LINE = re.compile(r"[^\s:][^\n]*?: \S[^\n]*")


def resolver(host, af):
    return ["192.0.2.77"]


def base() -> dict:
    """A valid document with every table a key can sit in."""
    return {
        "daemon": {},
        "ipvs": {"timeouts": {"tcp": 900}},
        "sync": {"interface": "eth0"},
        "api": {},
        "metrics": {},
        "ha": {"mode": "vrrp", "interface": "eth0", "vrid": 51, "vips": ["192.0.2.100/24"]},
        "service": [
            {
                "name": "web",
                "vip": "192.0.2.1:80",
                "persistence": {"timeout": 300},
                "sorry_server": {"address": "192.0.2.9"},
                "server": [{"address": "192.0.2.2", "thresholds": {"upper": 10, "lower": 5}}],
            },
            {
                "name": "tun",
                "vip": "192.0.2.1:81",
                "server": [{"address": "192.0.2.3", "forward": "tun", "tunnel": {"type": "gue", "port": 6080}}],
            },
        ],
    }


def places() -> list[tuple[str, tuple, Key]]:
    """(label, where in ``base()``, row) for every row of the key table and of every check type."""
    out: list[tuple[str, tuple, Key]] = []

    def add(where: tuple, rows) -> None:
        for k in rows:
            out.append((".".join(map(str, where + (k.name,))), where, k))

    add(("daemon",), DAEMON_ROWS)
    add(("ipvs", "timeouts"), TIMEOUT_ROWS)
    add(("sync",), SYNC_ROWS)
    add(("api",), API_ROWS)
    add(("metrics",), METRICS_ROWS)
    add(("ha",), HA_ROWS)
    add(("service", 0), SERVICE_WIDE_ROWS)
    add(("service", 0, "persistence"), PERSISTENCE_ROWS)
    add(("service", 0, "sorry_server"), SORRY_ROWS)
    add(("service", 0, "server", 0), SERVER_ROWS + SERVER_WIDE_ROWS)
    add(("service", 0, "server", 0, "thresholds"), THRESHOLD_ROWS)
    add(("service", 1, "server", 0, "tunnel"), TUNNEL_ROWS)
    for t in CHECK_TYPES:
        add(("service", 0, "server", 0, "check", t), check_class(t).rows(t))
    return out


def place(doc: dict, where: tuple, key: str, value: object) -> dict:
    """``doc`` with ``value`` at ``where``.``key`` (a check type in ``where`` makes a check table)."""
    doc = copy.deepcopy(doc)
    t = doc
    for i, w in enumerate(where):
        if where[i - 1:i] == ("check",):
            continue
        if w == "check":
            ctype = where[i + 1]
            extra = {"dns": {"name": "example.org"}, "script": {"argv": ["/bin/true"]}}.get(ctype, {})
            t["check"] = {"type": ctype, **extra}
            t = t["check"]
            continue
        t = t[w]
    t[key] = value
    return doc


#: values no key accepts or every key must survive: huge and tiny numbers, NaN, inf, NUL, digits
#: int() refuses, deep nesting, wrong types
HOSTILE = [
    10**400,
    10**5000,
    -(10**400),
    2**31,
    2**32,
    2**63,
    -1,
    float("nan"),
    float("inf"),
    -float("inf"),
    1e308,
    5e-324,
    "9" * 400 + "s",
    "9" * 400 + "ms",
    "9" * 400,
    "\u00b2",
    "a\0b",
    "/a\0b",
    "\0",
    "\x1b[31m\n",
    ["a\0"],
    ["/bin/true", "\0"],
    [[[[[]]]]],
    {"a": {"b": {"c": {}}}},
    True,
    "",
    [],
    {},
]


def outcome(doc: dict) -> str:
    """"ok", or the ConfigError's text; anything else fails the test (with the offending doc)."""
    try:
        build_config(doc, resolver=resolver, check_files=False)
        return "ok"
    except ConfigError as e:
        assert e.errors, doc
        for line in e.errors:
            assert LINE.fullmatch(line), (line, doc)
            assert "internal error" not in line and "Traceback" not in line, (line, doc)
        return str(e)


@pytest.mark.parametrize("label,where,row", places(), ids=[p[0] for p in places()])
def test_loader_raises_only_config_error_for_any_key(label, where, row):
    """Every key of the key table, every hostile value: a Config or one-line ConfigErrors."""
    assert outcome(base()) == "ok"
    for v in HOSTILE:
        outcome(place(base(), where, row.name, v))


def test_nul_is_refused_in_every_string_key_that_reaches_the_os():
    """NUL in a string key is an error naming the key (user, group, paths, argv, names)."""
    for label, where, row in places():
        if label.endswith(("check.udp.send", "check.udp.expect", "check.tcp.send", "check.tcp.expect", "check.dns.expect")):
            continue  # wire payloads and values compared with a reply: NUL is a byte like any other
        msg = outcome(place(base(), where, row.name, "x\0y"))
        assert msg != "ok", label


def test_nul_in_a_script_user_and_argv_names_the_key():
    d = place(base(), ("service", 0, "server", 0, "check", "script"), "user", "roo\0t")
    assert "service[web].server[0].check.user: must not contain NUL" in outcome(d)
    d = place(base(), ("service", 0, "server", 0, "check", "script"), "argv", ["/bin/tr\0ue"])
    assert "service[web].server[0].check.argv[0]: must not contain NUL" in outcome(d)


def test_huge_integers_and_duration_strings_are_range_errors():
    text = '[[service]]\nvip = "192.0.2.1:80"\n[[service.server]]\naddress = "192.0.2.2"\ncheck = { type = "tcp", interval = %s }\n'
    for v in ("9" * 400, '"' + "9" * 400 + 's"', '"' + "9" * 400 + 'ms"', "1e308"):
        with pytest.raises(ConfigError) as e:
            parse_config(text % v)
        assert str(e.value).startswith("service[0].server[0].check.interval: must be at most 86400s, got "), e.value
    with pytest.raises(ConfigError, match=r"ipvs.timeouts.tcp: must be at most \d+s"):
        parse_config('[ipvs.timeouts]\ntcp = "%ss"\n' % ("9" * 400))
    with pytest.raises(ConfigError, match="an integer of about 401 digits"):
        parse_config("[[service]]\nvip = \"192.0.2.1:80\"\nquorum = %s\n" % ("9" * 400))


@pytest.mark.parametrize("depth", [MAX_DEPTH + 2, 399, 401, 1000, 5000])
def test_nesting_at_any_depth_is_a_config_error(depth):
    """Inline nesting (the parser's recursion), dotted headers and nesting inside a check."""
    for text in (
        "a = " + "[" * depth + "]" * depth,
        "a = " + "{b = " * depth + "1" + "}" * depth,
        "[" + ".".join(["a"] * depth) + "]",
        '[[service]]\nvip = "192.0.2.1:80"\n[[service.server]]\naddress = "192.0.2.2"\n'
        + "[service.server.check]\ntype = 'tcp'\n["
        + "service.server.check."
        + ".".join(["x"] * min(depth, 990))
        + "]\n",
    ):
        with pytest.raises(ConfigError) as e:
            parse_config(text)
        assert all(LINE.fullmatch(line) for line in e.value.errors), e.value


def test_integer_too_long_for_python_is_a_syntax_error():
    with pytest.raises(ConfigError, match=r"^<string>: TOML syntax error: Exceeds the limit"):
        parse_config("[daemon]\nresync = " + "9" * 5000)


# --- the file itself: a regular file of bounded size, read without blocking -------------------------


def test_config_file_larger_than_the_limit_is_refused(tmp_path):
    p = tmp_path / "big.toml"
    p.write_bytes(b"# " + b"x" * 1000 + b"\n")
    assert read_config_file(str(p), limit=2000)
    p.write_bytes(b"#" * 2001)
    with pytest.raises(ConfigError, match=r"big.toml: larger than 0 MiB"):
        read_config_file(str(p), limit=2000)
    with pytest.raises(ConfigError) as e:
        read_config_file(str(p), limit=2001)  # exactly the limit is fine
        raise ConfigError(["fine"])
    assert str(e.value) == "fine"
    assert MAX_CONFIG_BYTES == 16 * 1024 * 1024


@pytest.mark.parametrize("path", ["/dev/zero", "/dev/null", "/"])
def test_devices_and_directories_are_refused_at_once(path):
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.errors == [f"{path}: not a regular file ({'a directory' if path == '/' else 'a device or socket'})"]


def test_fifo_is_refused_without_blocking(tmp_path):
    """A FIFO with no writer would block open() and read() forever: refused at once."""
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    out: list[object] = []

    def run() -> None:
        try:
            load_config(fifo)
        except ConfigError as e:
            out.append(e.errors)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(30)  # generous: the call returns at once or hangs forever
    assert out == [[f"{fifo}: not a regular file (a FIFO)"]]


# --- numeric ranges are the kernel's ---------------------------------------------------------------

#: (where, key, highest value the kernel keeps as given, the message for one above); the kernel
#: side of each bound is proven in tests/kernel/test_config_kernel.py
KERNEL_BOUNDS = [
    (("service", 0, "server", 0, "thresholds"), "upper", 2**31 - 1, "must be 0..2147483647"),
    (("service", 0, "server", 0, "thresholds"), "lower", 10, "must be 0..2147483647"),
    (("service", 0, "server", 0), "weight", 2**31 - 1, "must be 0..2147483647"),
    (("service", 0, "sorry_server"), "weight", 2**31 - 1, "must be 1..2147483647"),
    (("service", 0, "persistence"), "timeout", 4294967, "must be at most 4294967s"),
    (("ipvs", "timeouts"), "tcp", 2147483, "must be at most 2147483s"),
    (("ipvs", "timeouts"), "tcpfin", 2147483, "must be at most 2147483s"),
    (("ipvs", "timeouts"), "udp", 2147483, "must be at most 2147483s"),
    (("sync",), "sync_refresh_period", 2147483, "must be at most 2147483s"),
    (("sync",), "maxlen", 65487, "must be 0 or 1024..65487 (the kernel changes other values)"),
    (("sync",), "syncid", 255, "must be 0..255"),
    (("sync",), "port", 65535, "must be 0..65535"),
    (("sync",), "ttl", 255, "must be 0..255"),
    (("sync",), "sync_qlen_max", 2**31 - 1, "must be 1..2147483647"),
    (("sync",), "sync_sock_size", 2**31 - 1, "must be 0..2147483647"),
    (("sync",), "sync_retries", 3, "must be 0..3"),
    (("service", 1, "server", 0, "tunnel"), "port", 65535, "must be 1..65535"),
]
#: how an error names each place of KERNEL_BOUNDS
SHOWN = {
    ("service", 0, "server", 0, "thresholds"): "service[web].server[0].thresholds",
    ("service", 0, "server", 0): "service[web].server[0]",
    ("service", 0, "sorry_server"): "service[web].sorry_server",
    ("service", 0, "persistence"): "service[web].persistence",
    ("ipvs", "timeouts"): "ipvs.timeouts",
    ("sync",): "sync",
    ("service", 1, "server", 0, "tunnel"): "service[tun].server[0].tunnel",
}


@pytest.mark.parametrize("where,key,top,msg", KERNEL_BOUNDS, ids=[f"{SHOWN[w]}.{k}" for w, k, *_ in KERNEL_BOUNDS])
def test_numeric_key_range_is_the_kernels(where, key, top, msg):
    """The highest value the kernel keeps is accepted; one above is a config error in today's format."""
    assert outcome(place(base(), where, key, top)) == "ok"
    above = 2**31 if key == "lower" else top + 1
    want = f"{SHOWN[where]}.{key}: {msg}, got {above}"
    assert want in outcome(place(base(), where, key, above)).split("\n")


def test_fwmark_range_is_the_kernels():
    doc = base()
    doc["service"][0] = {"name": "fw", "fwmark": 2**32 - 1, "server": [{"address": "192.0.2.2"}]}
    assert outcome(doc) == "ok"
    doc["service"][0]["fwmark"] = 2**32
    assert "service[fw].fwmark: must be 1..4294967295, got 4294967296" in outcome(doc).split("\n")


def test_sync_ports_must_be_a_power_of_two():
    for n in (1, 2, 4, 512, 1024):
        assert outcome(place(base(), ("sync",), "sync_ports", n)) == "ok"
    for n in (3, 6, 1000, 1023):
        assert outcome(place(base(), ("sync",), "sync_ports", n)) == (
            f"sync.sync_ports: must be a power of two (the kernel refuses others), got {n}"
        )


def test_sync_maxlen_low_values_the_backup_would_raise_are_refused():
    assert outcome(place(base(), ("sync",), "maxlen", 0)) == "ok"
    assert outcome(place(base(), ("sync",), "maxlen", 1024)) == "ok"
    assert outcome(place(base(), ("sync",), "maxlen", 1023)).endswith("must be 0 or 1024..65487 (the kernel changes other values), got 1023")


def test_boundary_values_read_back_unchanged_from_the_memory_backend():
    """The memory backend models the kernel's wraps and refusals (HZ=250, INT_MAX checks): the
    highest accepted values apply and dump back as configured."""
    from lvsd.ipvs.backend import Op
    from lvsd.ipvs.memory import MemoryBackend

    doc = base()
    doc["service"][0]["persistence"]["timeout"] = 4294967
    doc["service"][0]["server"][0]["thresholds"] = {"upper": 2**31 - 1, "lower": 2**31 - 1}
    doc["service"][0]["server"][0]["weight"] = 2**31 - 1
    doc["ipvs"]["timeouts"] = {"tcp": 2147483, "tcpfin": 2147483, "udp": 2147483}
    cfg = build_config(doc, resolver=resolver, check_files=False)
    b = MemoryBackend()
    ops = []
    for s in cfg.services:
        ops.append(Op.add_service(s.service))
        ops.extend(Op.add_dest(s.key, srv.dest) for srv in s.servers)
    assert cfg.ipvs.timeouts is not None
    ops.append(Op.set_timeouts(cfg.ipvs.timeouts))
    b.apply(ops)
    got = b.dump()
    for s in cfg.services:
        assert got[s.key].service == s.service
        assert got[s.key].dests == {srv.key: srv.dest for srv in s.servers}
    assert b.timeouts() == cfg.ipvs.timeouts


# --- [api] mode: a world-writable control socket is refused unless said -----------------------------


@pytest.mark.parametrize("mode", range(0o1000))
def test_api_mode_letting_every_local_user_connect_needs_allow_world(mode):
    """Every mode: the others' write bit (what connect() needs) is refused without allow_world."""
    text = f"{mode:04o}"
    got = outcome(place(base(), ("api",), "mode", text))
    if mode & 0o002:
        assert got == (
            f'api.mode: "{text}" lets every local user control lvsd (reload, role, drain): '
            'use "0660" and a group, or set allow_world = true'
        )
        doc = place(base(), ("api",), "mode", text)
        doc["api"]["allow_world"] = True
        assert outcome(doc) == "ok"
    else:
        assert got == "ok"


def test_bgp_rules_survive_an_unnamed_or_misnamed_service():
    """Found by the fuzzer: with mode = "bgp" a service whose name is a list reached a dict key."""
    import tomli

    with open(os.path.join(os.path.dirname(__file__), "..", "..", "conf", "bgp-director.toml"), "rb") as f:
        doc = tomli.load(f)
    doc["service"][0]["name"] = []
    doc["service"][0]["vip"] = 0
    got = outcome(doc)
    assert got.startswith("service[0].name: must be a string, got array"), got
