"""The import differential: keepalived with a real keepalived.conf and lvsd with its import, side by
side in two namespaces against the same real servers, must build identical IPVS tables (``ipvsadm
-Sn``) once their checks settle; and again after a third of the real servers stop.

The keepalived.conf files are the shared corpus's (test input only, read from beside the
checkout; skipped when it is absent). The timers are shortened in the file both daemons read
(``delay_loop``, ``delay_before_retry``, ``connect_timeout`` to 1 s, a ``delay_loop 1`` in every
virtual server), so a run takes seconds, not keepalived's 60 s default loop; everything else is the
file as found. keepalived runs its checker only (``-C``); the lvsd side drops ``[ha]``/``[sync]``
(the VRRP part is tested against keepalived in test_ha.py). Every real server address lives on the
``lo`` of one namespace reached from both directors through their own veth (default route via
that namespace), with one HTTP listener (which also serves TCP checks) per address and port a check probes.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from netns import Lab, sh

from lvsd.migrate.emit import render
from lvsd.migrate.keepalived import import_keepalived

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "keepalived"
#: v4 files whose checks need only TCP/HTTP listeners (no script, no DNS, no sorry server yet)
#: (09's 65 services and 14's mixed-family tunnels starve a one-CPU emulated VM past the time budget;
#: their translation is checked by tests/unit/test_import_corpus.py)
FILES = ["01-network-lab-nat-ipv4-ipv6-groups.conf", "04-topecongiro-nat-port-mapping.conf",
         "05-linux-doc-dr-port-mismatch.conf", "06-k8s-apiserver-dr-tcp-check.conf",
         "11-issue1431-fwmark-dr.conf", "15-issue1354-ipv6-dr.conf"]
REQUIRED = bool(os.environ.get("LVSD_KERNEL_REQUIRED"))
SETTLE = 90.0  # seconds for both tables to agree (checks at 1 s; Python is slow under emulation)

pytestmark = [
    pytest.mark.skipif(not CORPUS.is_dir(), reason=f"no keepalived corpus at {CORPUS} (shared/ is absent)"),
    pytest.mark.skipif(not REQUIRED and shutil.which("keepalived") is None, reason="keepalived not installed"),
]


def fast_timers(text: str) -> str:
    """The file with 1 s check timers (both daemons read this same text)."""
    text = re.sub(r"(?m)^(\s*)(delay_loop|delay_before_retry|connect_timeout)\s+[0-9.]+", r"\1\2 1", text)
    return re.sub(r"(?m)^(\s*virtual_server\s+(?!group\b)\S+.*\{.*)$", r"\1\n    delay_loop 1", text)


def table(ns: str) -> list[str]:
    """The namespace's IPVS table as ``ipvsadm -Sn`` prints it, sorted."""
    return sorted(sh("ip", "netns", "exec", ns, "ipvsadm", "-Sn").splitlines())


def listeners(m: Any) -> list[tuple[str, int]]:
    """Every (address, port) a real server is probed on (the server's, or its check's connect)."""
    out = set()
    for svc in m.services:
        vport = int(svc["vip"].rsplit(":", 1)[1]) if "vip" in svc else 0
        for srv in svc["server"]:
            port = srv.get("port", vport)
            for ck in srv["check"]:
                p = int(ck["connect"].rsplit(":", 1)[1]) if "connect" in ck else port
                out.add((srv["address"], p))
    return sorted(out)


def wait_same(a: str, b: str, what: str, want_dests: int) -> list[str]:
    """Both tables equal with ``want_dests`` real servers; the last pair in the failure message."""
    deadline = time.monotonic() + SETTLE
    ta = tb = []
    while time.monotonic() < deadline:
        ta, tb = table(a), table(b)
        if ta == tb and sum(line.startswith("-a") for line in ta) == want_dests:
            return ta
        time.sleep(1)
    raise AssertionError(f"{what}: tables differ after {SETTLE}s\nkeepalived:\n  " + "\n  ".join(ta)
                         + "\nlvsd:\n  " + "\n  ".join(tb))


def dests_on(m: Any, up: set[tuple[str, int]]) -> int:
    """Real servers whose every check's listener is in ``up``."""
    n = 0
    for svc in m.services:
        vport = int(svc["vip"].rsplit(":", 1)[1]) if "vip" in svc else 0
        for srv in svc["server"]:
            port = srv.get("port", vport)
            probes = {(srv["address"], int(ck["connect"].rsplit(":", 1)[1]) if "connect" in ck else port)
                      for ck in srv["check"]}
            n += probes <= up
    return n


@pytest.mark.parametrize("name", FILES, ids=lambda n: n[:2])
def test_keepalived_and_lvsd_build_the_same_table(lab: Lab, tmp_path: Path, name: str) -> None:
    conf = tmp_path / "keepalived.conf"
    conf.write_bytes(fast_timers((CORPUS / name).read_bytes().decode("utf-8", "surrogateescape"))
                     .encode("utf-8", "surrogateescape"))
    m = import_keepalived(str(conf), "lvs")
    m.sections.pop("ha", None)
    m.sections.pop("sync", None)
    m.sections["api"] = {"socket": str(tmp_path / "lvsd.sock")}
    toml = tmp_path / "lvsd.toml"
    toml.write_text(render(m, "lvsd import keepalived"))

    rs = lab.netns("imprs")
    for i, d in enumerate(("impka", "implv")):
        ns = lab.netns(d)
        lab.veth(f"rs{i}", rs, "eth0", ns)
        lab.addr("eth0", f"10.77.{40 + i}.1/24", ns)
        lab.addr(f"rs{i}", f"10.77.{40 + i}.2/24", rs)
        lab.addr("eth0", f"fd77:{40 + i}::1/64", ns)
        lab.addr(f"rs{i}", f"fd77:{40 + i}::2/64", rs)
        ns.ip("route", "add", "default", "via", f"10.77.{40 + i}.2")
        ns.ip("-6", "route", "add", "default", "via", f"fd77:{40 + i}::2")
    probes = listeners(m)
    for addr in sorted({a for a, _ in probes}):
        lab.addr("lo", f"{addr}/128" if ":" in addr else f"{addr}/32", rs)
    # the body satisfies the corpus's HTTP_GET regex ("passing", a Consul health check)
    servers = {p: lab.http_server(rs, p[0], p[1], name=f"passing {p[0]}:{p[1]}") for p in probes}

    log_ka = open(tmp_path / "keepalived.log", "w")  # noqa: SIM115 - handed to the child
    lab.popen("keepalived", "-n", "-l", "-D", "-C", "-i", "lvs", "-f", str(conf), "-p", str(tmp_path / "ka.pid"),
              "-c", str(tmp_path / "ka-chk.pid"), ns="impka", stdout=log_ka, stderr=log_ka)
    log_lv = open(tmp_path / "lvsd.log", "w")  # noqa: SIM115 - handed to the child
    lab.popen(sys.executable, "-m", "lvsd.daemon.main", "-f", str(toml), ns="implv", stdout=log_lv, stderr=log_lv,
              cwd=str(Path(__file__).resolve().parents[2]))
    try:
        settled = wait_same("impka", "implv", f"{name}, every real server up", dests_on(m, set(probes)))
        assert settled and any(line.startswith("-A") for line in settled)
        # a third of the listeners stop: the checks of both daemons must take the same servers out
        stopped = set(probes[::3])
        for p in stopped:
            servers[p].stop()
        wait_same("impka", "implv", f"{name}, {len(stopped)} listeners stopped", dests_on(m, set(probes) - stopped))
    finally:
        log_ka.close()
        log_lv.close()
        for f in ("keepalived.log", "lvsd.log"):
            text = (tmp_path / f).read_text(errors="replace")
            print(f"--- {f} (last lines)\n" + "\n".join(text.splitlines()[-15:]))
