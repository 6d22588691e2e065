"""lvsadm on the host, against the memory backend: every listing format, -S/-Sn and the
error messages and exit codes compared byte for byte with the verbatim ipvsadm 1.31 outputs in
tests/data/ipvsadm-1.31-reference.txt (zero counters); popt/ipvsadm parsing corner cases;
-S/-R round trip; -R's parse-first and --atomic; --json; ipvsadm's wrapping sort order.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsd.cli import lvsadm
from lvsd.cli import lvsadm_list as L
from lvsd.cli import lvsadm_parse as P

# verbatim ipvsadm 1.31 session on Linux 6.1 (listings, -S, errors, exit codes), kept with the tests
REFERENCE = Path(os.environ.get("LVSADM_REFERENCE", Path(__file__).parent.parent / "data" / "ipvsadm-1.31-reference.txt"))


class Run:
    def __init__(self, state: Path) -> None:
        self.state = state

    def __call__(self, cmdline: str | list[str], stdin: bytes = b"") -> tuple[str, str, int]:
        args = shlex.split(cmdline) if isinstance(cmdline, str) else cmdline
        so, se = io.BytesIO(), io.BytesIO()
        old = sys.stdout, sys.stderr, sys.stdin
        sys.stdout = io.TextIOWrapper(so, encoding="utf-8")
        sys.stderr = io.TextIOWrapper(se, encoding="utf-8")
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
        try:
            code = lvsadm.main(["--backend", "memory", "--state", str(self.state), *args], prog="ipvsadm")
        finally:
            for w in (sys.stdout, sys.stderr, sys.stdin):
                if w is not sys.stdin:
                    w.flush()
                w.detach()
            sys.stdout, sys.stderr, sys.stdin = old
        return so.getvalue().decode(), se.getvalue().decode(), code

    def text(self, cmdline: str, stdin: bytes = b"") -> str:
        """stdout+stderr then '[exit N]', as the reference file shows a command."""
        out, err, code = self(cmdline, stdin)
        return f"{out}{err}[exit {code}]\n"


@pytest.fixture
def run(tmp_path: Path) -> Run:
    return Run(tmp_path / "state.json")


def reference_blocks() -> list[tuple[str, str]]:
    """(command line, expected output up to and including '[exit N]') for part 1 of the reference."""
    if not REFERENCE.exists():
        pytest.skip(f"{REFERENCE} not present")
    part1 = REFERENCE.read_text().split("################################################################ part 2")[0]
    blocks: list[list[str]] = []
    cur: list[str] | None = None
    for line in part1.splitlines(keepends=True):
        if cur is None:
            if line.startswith("$ "):
                cur = [line[2:].rstrip("\n"), ""]
            continue
        cur[1] += line
        if line.startswith("[exit "):
            blocks.append(cur)
            cur = None
    return [(c, e) for c, e in blocks]


def build_reference_table(run: Run) -> None:
    """The '######## build the table' section of the reference session."""
    started = False
    for cmd, _ in reference_blocks():
        if cmd.startswith("ipvsadm -A -t 10.0.0.1:80 -s wrr"):
            started = True
        if started and cmd == "ipvsadm -Ln":
            return
        if started:
            assert run(cmd[len("ipvsadm ") :])[2] == 0, cmd


def test_reference_session_byte_for_byte(run: Run) -> None:
    """Replay ipvsadm-reference.sh's part 1 (building the table, every listing, every error)."""
    checked = 0
    for cmd, expected in reference_blocks():
        if cmd.startswith("printf") and "| ipvsadm -R; ipvsadm -Ln -t 10.9.9.9:80" in cmd:
            script = b"-A -t 10.9.9.9:80 -s rr\n-a -t 10.9.9.9:80 -r 10.9.9.10:80 -m -w 2\n"
            assert run("-R", script) == ("", "", 0)
            assert run.text("-Ln -t 10.9.9.9:80") == expected
            continue
        if cmd.startswith("echo ") and cmd.endswith("| ipvsadm -R"):
            line = cmd[len('echo "') : cmd.index('" |')]
            got = run.text("-R", (line + "\n").encode())
            if line.startswith("-X"):  # lvsadm names the bad line (and applies nothing)
                expected = "line 1: " + expected
            assert got == expected, cmd
            continue
        if cmd.startswith("ipvsadm -Sn | grep "):
            needle = cmd.split("grep ")[1].split()[0]
            got = "".join(x + "\n" for x in run("-Sn")[0].splitlines() if needle in x)
            assert got + "[exit 0]\n" == expected
            continue
        if not cmd.startswith("ipvsadm ") or any(c in cmd for c in "|;<>#"):
            continue
        args = cmd[len("ipvsadm ") :]
        if "--nosort" in args:
            continue  # service order then follows the kernel's hash table: see the kernel test
        if args in ("-L", "-S") or args.startswith("-L --"):
            continue  # names: test_names_like_ipvsadm
        assert run.text(args) == expected, cmd
        checked += 1
    assert checked > 80


def test_names_like_ipvsadm(run: Run) -> None:
    """Without -n: /etc/services names for ports; addresses without a reverse name stay numeric."""
    blocks = dict(reference_blocks())
    build_reference_table(run)
    for cmd in ("ipvsadm -L", "ipvsadm -S"):
        assert run.text(cmd[len("ipvsadm ") :]) == blocks[cmd]


def test_names_accepted_on_input(run: Run) -> None:
    assert run("-A -t localhost:http -s rr") == ("", "", 0)
    assert run("-a -t 127.0.0.1:80 -r localhost:https -m") == ("", "", 0)
    assert run("-Sn")[0] == "-A -t 127.0.0.1:80 -s rr\n-a -t 127.0.0.1:80 -r 127.0.0.1:443 -m -w 1\n"
    assert run("-L -t localhost:www")[0].splitlines()[2:] == [
        "TCP  localhost:http rr",
        f"  -> {'localhost:https':<28} Masq    1      0          0         ",
    ]


def test_help_version_and_program_name(run: Run) -> None:
    blocks = dict(reference_blocks())
    assert run.text("-h") == blocks["ipvsadm -h"]
    assert run("-v") == (P.VERSION_LINE + "\n", "", 0)
    assert run("--bogus") == ("", "Try `ipvsadm -h' or 'ipvsadm --help' for more information.\n", 255)


@pytest.mark.parametrize(
    "cmdline, err, code",
    [
        ("-nL", "Try `ipvsadm -h' or 'ipvsadm --help' for more information.", 255),  # first option must be a command
        ("-Lq", "-Lq: unknown option", 255),
        ("-L --stats=1", "--stats=1: option does not take an argument", 255),
        ("-A -t", "-t: missing argument", 255),
        ("-L -L", "invalid option `-L'", 2),
        ("-A -t 10.0.0.1:80 --start-daemon master", "invalid option `master'", 2),
        ("-L extra", "unexpected argument extra", 2),
        ("-A -6 -f 1", "-6 used before -f\n", 2),
        ("-A -t 10.0.0.1:80 -p 0", "invalid timeout value `0' specified", 2),
        ("-A -t 10.0.0.1:0", "Zero port specified for non-persistent service", 2),
        ("-A -t 10.0.0.1:80 -o", "One-Packet Scheduling is only for UDP virtual services", 2),
        ("-L -c -t 10.0.0.1:80", "The option 'service-address' conflicts with the 'connection' option in the 'list' command", 2),
        ("-L --timeout --stats", "options conflicts in the list command", 2),
        ("-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gue", "You need to supply the 'tun-port' option for the 'gue' tunnel type", 2),
        ("-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gre --tun-remcsum", "Illegal 'tun-remcsum' option with the 'gre' tunnel type", 2),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gue --tun-port 1 --tun-csum --tun-remcsum",
            "The option 'tun-remcsum' conflicts with the 'tun-csum' option in the 'gue' tunnel type",
            2,
        ),
        ("-A -t [2001:db8::1]:80 -p -M 129", "illegal ipv6 netmask specified", 2),
        ("-A -t 10.0.0.1:80 -p -M nosuch.invalid.", "illegal virtual server persistent mask specified", 2),
        ("--start-daemon master --mcast-group 10.0.0.1", "invalid IPv4 mcast-group `10.0.0.1'", 2),
        ("--stop-daemon x", "illegal start_daemon specified", 2),
        ("--set 1 2 x", "invalid timeout value `x' specified", 2),
        ("-A -t 10.0.0.1:80 -s sh -b ,", "invalid scheduler flag `,'", 2),
        ("-L --json -t 10.0.0.9:80", "No such service", 1),
        ("-A -t 10.0.0.1:80 --json", "Illegal 'json' option with the 'add-service' command", 2),
        ("-L --atomic", "Illegal 'atomic' option with the 'list' command", 2),
    ],
)
def test_parse_errors(run: Run, cmdline: str, err: str, code: int) -> None:
    assert run(cmdline) == ("", err + "\n", code)


def test_popt_forms_and_defaults(run: Run) -> None:
    for cmd in (
        "-A --tcp-service=10.0.0.1:90 --scheduler=rr --persistent=30",
        "-A --tcp-service 10.0.0.1:91 --persistent -s rr",  # optional argument absent: 360 (ipvsadm's default)
        "-A -t10.0.0.1:92 -srr -p77",
        "-At 10.0.0.1:93 -s rr",
        "-A -t 10.1:94 -s rr -p",  # inet_aton: 10.1 is 10.0.0.1
        "-A -t 0x0a000001:95 -s rr",
        "-A -t [10.0.0.1]:96 -p",  # ipvsadm ignores a port after a bracketed IPv4 address: port 0
    ):
        assert run(cmd) == ("", "", 0), cmd
    assert run("-Sn")[0] == (
        "-A -t 10.0.0.1:0 -s wlc -p 360\n"
        "-A -t 10.0.0.1:90 -s rr -p 30\n"
        "-A -t 10.0.0.1:91 -s rr -p 360\n"
        "-A -t 10.0.0.1:92 -s rr -p 77\n"
        "-A -t 10.0.0.1:93 -s rr\n"
        "-A -t 10.0.0.1:94 -s rr -p 360\n"
        "-A -t 10.0.0.1:95 -s rr\n"
    )


def test_c_parsers() -> None:
    assert P.inet_aton("10.1") == 0x0A000001
    assert P.inet_aton("1.2.3") == 0x01020003
    assert P.inet_aton("0x7f.1") == 0x7F000001
    assert P.inet_aton("010.0.0.1") == 0x08000001
    assert P.inet_aton("1.2.3.4 junk") == 0x01020304
    for bad in ("1.2.3.256", "08.1.1.1", "1..2", "1.2.3.4.", "", "a.b.c.d", "4294967296", "1.2.3.4x"):
        assert P.inet_aton(bad) is None, bad
    assert P.strtol10(" +42") == 42 and P.strtol10("-0") == 0
    assert P.strtol10("42 ") is None and P.strtol10("") is None and P.strtol10("0x10") is None
    assert P.atoi("64abc") == 64 and P.atoi("x") == 0 and P.atoi(" -3") == -3
    assert P.parse_service("[2001:db8::1]:80", 6) == (3, 10, "2001:db8::1", 80)
    assert P.parse_service("2001:db8::1", 6) == (1, 10, "2001:db8::1", -1)
    assert P.parse_service("10.0.0.1:http", 6) == (3, 2, "10.0.0.1", 80)
    assert P.parse_service("10.0.0.1:http", 0)[0] == 0  # no protocol yet: no service names
    assert P.parse_service("1234", 6)[0] == 0


def test_save_restore_round_trip(run: Run, tmp_path: Path) -> None:
    build_reference_table(run)
    saved = run("-Sn")[0]
    assert saved.count("\n") == 33
    other = Run(tmp_path / "other.json")
    assert other("-R", saved.encode()) == ("", "", 0)
    assert other("-Sn")[0] == saved
    assert other("-S")[0] == run("-S")[0]


def test_restore_reports_a_bad_line_and_applies_nothing(run: Run) -> None:
    run("-A -t 10.0.0.1:80 -s rr")
    before = run("-Sn")
    bad = b"-A -t 10.0.0.2:80 -s rr\n\n# comment\n-a -t 10.0.0.2:80 -r 10.0.0.3 -w -1\n"
    out, err, code = run("-R", bad)
    assert (out, code) == ("", 255)  # '# comment' is not a comment for ipvsadm either
    assert err == "line 3: Try `ipvsadm -h' or 'ipvsadm --help' for more information.\n"
    assert run("-R", bad.replace(b"# comment\n", b""))[1:] == ("line 3: illegal weight specified\n", 2)
    assert run("-Sn") == before


def test_restore_kernel_refusals_go_on_like_ipvsadm(run: Run) -> None:
    script = b"ipvsadm -A -t 10.0.0.1:80 -s rr\n-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.0.2 -m\n"
    assert run("-R", script) == ("", "Service already exists\n", 0)  # status of the last line
    assert run("-R", b"-A -t 10.0.0.1:80 -s rr\n") == ("", "Service already exists\n", 255)
    assert run("-R", b"-Ln -t 10.0.0.1:80\n")[0].startswith("Prot LocalAddress:Port")
    assert run("-Sn")[0] == "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.0.2:80 -m -w 1\n"


def test_atomic_restore_puts_the_previous_table_back(run: Run) -> None:
    run("-A -t 10.0.0.1:80 -s rr")
    run("-a -t 10.0.0.1:80 -r 10.0.0.2 -m -w 4")
    run("--set 100 20 30")
    before = run("-Sn")[0], run("-L --timeout")[0]
    script = b"-C\n--set 1 2 3\n-A -t 10.0.0.5:80 -s rr\n-A -t 10.0.0.5:80 -s wrr\n-A -t 10.0.0.6:80 -s rr\n"
    out, err, code = run("-R --atomic", script)
    assert code == 255
    assert err.splitlines() == [
        "Service already exists",
        "line 4: the kernel refused add-service tcp 10.0.0.5:80; the previous table was restored",
    ]
    assert (run("-Sn")[0], run("-L --timeout")[0]) == before


def test_json(run: Run) -> None:
    run("-A -t 10.0.0.1:443 -s sh -b sh-port -p 300 -M 255.255.255.0")
    run("-a -t 10.0.0.1:443 -r 10.0.0.7 -i --tun-type gue --tun-port 6080 --tun-csum -w 2")
    run("-A -f 2 -6 -s nq -p 120 -M 64")
    doc = json.loads(run("-L --json --stats --rate")[0])
    assert doc["version"] == "1.2.1" and len(doc["services"]) == 2
    s = doc["services"][0]
    assert s["protocol"] == "tcp" and s["address"] == "10.0.0.1" and s["port"] == 443
    assert s["sched_flags"] == ["sh-port"] and s["persistent"] and s["timeout"] == 300
    assert s["netmask"] == "255.255.255.0" and s["stats"]["conns"] == 0 and s["rate"]["cps"] == 0
    (srv,) = s["servers"]
    assert srv["forward"] == "tunnel" and srv["weight"] == 2
    assert srv["tunnel"] == {"type": "gue", "port": 6080, "checksum": "csum"}
    f = doc["services"][1]
    assert f["fwmark"] == 2 and f["family"] == "inet6" and f["netmask"] == 64 and f["protocol"] is None
    one = json.loads(run("-L --json -f 2 -6")[0])
    assert one["services"][0]["fwmark"] == 2 and "stats" not in one["services"][0]
    assert json.loads(run("-L --json --timeout")[0]) == {"timeout": {"tcp": 900, "tcp_fin": 120, "udp": 300}}
    assert json.loads(run("-L --json -c")[0]) == {"connections": []}


def test_memory_backend_needs_a_state_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LVSADM_STATE", raising=False)
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    assert lvsadm.main(["--backend", "memory", "-Ln"], prog="lvsadm") == 2
    assert "--state FILE" in err.getvalue()


def test_a_state_file_without_the_memory_backend_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    # otherwise `lvsadm --state f -A ...` would quietly change the kernel's table
    monkeypatch.delenv("LVSADM_BACKEND", raising=False)
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    state = tmp_path / "s.json"
    assert lvsadm.main(["--state", str(state), "-A", "-t", "10.0.0.1:80"], prog="lvsadm") == 2
    assert err.getvalue() == "lvsadm: --state goes with --backend memory (or LVSADM_BACKEND=memory)\n"
    assert not state.exists()


# --- ipvsadm's order: glibc's merge sort with comparators that wrap at 2**31 -----------------


class _K:
    def __init__(self, af: int, addr: str, port: int, fwmark: int = 0, protocol: int = 6) -> None:
        self.af, self.addr, self.port, self.fwmark, self.protocol = af, addr, port, fwmark, protocol


class _S:
    def __init__(self, key: _K) -> None:
        self.key = key


def test_sort_wraps_like_ipvsadm() -> None:
    # 10.0.0.1 - 200.0.0.1 wraps to a positive int: ipvsadm lists 200.0.0.1 first
    svcs = [_S(_K(2, "10.0.0.1", 80)), _S(_K(2, "200.0.0.1", 80))]
    assert [s.key.addr for s in L.sort_services(svcs)] == ["200.0.0.1", "10.0.0.1"]
    # a fwmark >= 2**31 sorts before address services, as in ipvsadm
    svcs = [_S(_K(2, "10.0.0.1", 80)), _S(_K(2, "", 0, fwmark=0x80000001, protocol=0))]
    assert [s.key.fwmark for s in L.sort_services(svcs)] == [0x80000001, 0]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 65535)), min_size=2, max_size=12, unique=True))
def test_fast_path_agrees_with_the_merge_sort(pairs: list[tuple[int, int]]) -> None:
    svcs = [_S(_K(2, P.v4text(a), p)) for a, p in pairs]

    def cmp(x: _S, y: _S) -> int:
        a = L._words(2, x.key.addr)[0]
        b = L._words(2, y.key.addr)[0]
        return L._wrap(a - b) or x.key.port - y.key.port

    assert [id(s) for s in L.sort_services(svcs)] == [id(s) for s in L.msort(svcs, cmp)]


def test_largenum() -> None:
    assert L.largenum(99999999, 0) == " 99999999"
    assert L.largenum(100000000, 0) == "  100000K"
    assert L.largenum(123456789012, 0) == "     123G"
    assert L.largenum(123456789012, P.FMT_EXACT) == " 123456789012"
    assert L.largenum(5, P.FMT_EXACT) == "        5"


_octet = st.sampled_from(["0", "1", "10", "255", "256", "010", "1x", ""])
_addr = st.builds(lambda a, b, c, d: f"{a}.{b}.{c}.{d}", _octet, _octet, _octet, _octet) | st.sampled_from(
    ["10.1", "localhost", "10.0.0.1", "[10.0.0.1]"]
)
_port = st.sampled_from(["80", "0", "65535", "65536", "080", "+80", "http", "", "-1"])
_addrport = st.builds(lambda a, p: f"{a}:{p}" if p is not None else a, _addr, st.none() | _port)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.builds(
            lambda o, s, sched: ["-A", o, s, "-s", sched],
            st.sampled_from(["-t", "-u", "-f"]),
            _addrport,
            st.sampled_from(["rr", "wrr", "", "nosuch", "a_scheduler_name_longer_than_15"]),
        ),
        st.builds(
            lambda o, s, r, f, w: ["-a", o, s, "-r", r, f, "-w", w],
            st.sampled_from(["-t", "-u"]),
            _addrport,
            _addrport,
            st.sampled_from(["-m", "-g", "-i", "-x"]),
            st.sampled_from(["0", "1", "65536", "2147483647", "2147483648", "01", "-1", "x"]),
        ),
    )
)
def test_restore_fast_path_is_the_general_parser(toks: list[str]) -> None:
    from lvsd.cli import lvsadm_restore as R
    from lvsd.cli.lvsadm_restore import FastPath, LeanPath
    from lvsd.ipvs.netlink import encode_ops

    fast = FastPath().op(toks)
    lean = LeanPath().msg(toks)
    assert (lean is None) == (fast is None)  # the lean -R path takes exactly the fast path's lines
    if fast is None:
        return
    ce = P.parse_options(toks, "ipvsadm")  # must not fail where the fast path succeeded
    assert fast == lvsadm.make_op(ce)
    # ... and sends the very bytes the backend sends for that Op
    assert lean is not None and R.KIND[lean[0]] == fast.kind.value and [lean] == encode_ops([fast])


def _part(name: str) -> str:
    text = REFERENCE.read_text()
    return text[text.index(name) :]


def _block(text: str, cmd: str) -> list[str]:
    start = text.index(f"$ {cmd}\n") + len(cmd) + 3
    return text[start : text.index("\n\n", start)].splitlines()


def test_connection_listing_like_ipvsadm() -> None:
    """-Lnc and -Lc of the reference's traffic demo, rebuilt from its numeric listing."""
    if not REFERENCE.exists():
        pytest.skip("no reference")
    from lvsd.ipvs.model import Connection

    part2 = _part("######## held-open TCP conn")
    numeric = _block(part2, "ipvsadm -Lnc")
    named = _block(part2, "ipvsadm -Lc")

    def conns(rows: list[str], expires_from: list[str]) -> list:
        out = []
        for row, exp in zip(rows[2:], expires_from[2:], strict=True):
            proto, _, state, src, vip, dst = row.split()
            m, s = exp.split()[1].split(":")
            ca, cp = src.rsplit(":", 1)
            va, vp = vip.rsplit(":", 1)
            da, dp = dst.rsplit(":", 1)
            out.append(Connection(proto, ca, int(cp), va, int(vp), da, int(dp), state, int(m) * 60 + int(s)))
        return out

    class B:
        def __init__(self, c: list) -> None:
            self.c = c

        def connections(self) -> list:
            return self.c

    out: list[str] = []
    L.list_conn(B(conns(numeric, numeric)), P.FMT_NUMERIC, out)
    assert out == numeric
    out = []
    L.list_conn(B(conns(numeric, named)), 0, out)
    assert out == named


def test_fastlist_dest_layout_is_netlinks() -> None:
    """lvsadm -Ln's lean path and the backend decode GET_DEST replies with one layout
    (lvsd/ipvs/layout.py)."""
    from lvsd.cli import lvsadm_fastlist as F
    from lvsd.ipvs import netlink as N

    assert F.DEST_REPLY_SIZE == N.DEST_REPLY_SIZE
    assert F._DEST_HDR_CHECK.pack(*F.DEST_HEADERS)[20:] == N._DEST_HDR_BYTES
    assert F._DEST_MSG.size == 20 + N.DEST_REPLY_SIZE
    assert F._ROW_PLAIN.size == F._ROW_STATS.size == F._ROW_RATE.size == F._DEST_MSG.size


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.sampled_from(["-a", "-A", "-t", "10.0.0.1:80", "ipvsadm", "x\x0by", "é", " ", "  ", "\t", "\r", "\n", "\x0c", ""]),
        max_size=30,
    ).map("".join)
)
def test_split_words_is_split_lines_without_numbers(data: str) -> None:
    """-R's C-level splitter (lvsadm_restore.split_words) gives exactly split_lines()'s words,
    or declines (None) where str.split() would split otherwise than ipvsadm's reader."""
    from lvsd.cli.lvsadm_restore import split_lines, split_words

    words = split_words(data)
    if words is not None:
        assert words == [toks for _n, toks in split_lines(data)]
    if data.isascii() and "ipvsadm" not in data and "\x0b" not in data and "\x0c" not in data:
        assert words is not None
