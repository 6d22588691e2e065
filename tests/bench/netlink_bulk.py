#!/usr/bin/env python3
"""Bulk benchmark of NetlinkBackend against ipvsadm (run by hand, as root, in the VM):

    tests/kernel/vm.sh python3 tests/bench/netlink_bulk.py [SERVICES [DESTS]] [--pyroute2]
    tests/kernel/vm.sh python3 tests/bench/netlink_bulk.py

Applies SERVICES x DESTS (default 1000 x 10) through NetlinkBackend.apply() and through
`ipvsadm -R` on the same input (flushing between), checks both tables are identical, then
lists them through `dump()` and `ipvsadm -Ln`. Prints both times and the ratios against the
targets (apply <= 0.25x ipvsadm -R, list <= 1.0x ipvsadm -Ln). Each timing is the best of
--repeat interleaved rounds (default 3). --pyroute2 adds pyroute2's import time and IPVS add rate.
Not collected by pytest (no test_ prefix); exits 1 if a table differs or a target is missed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from lvsd.ipvs.backend import Op  # noqa: E402
from lvsd.ipvs.model import Destination, DestKey, Forward, Service, ServiceKey  # noqa: E402
from lvsd.ipvs.netlink import NetlinkBackend  # noqa: E402


def vip(i: int) -> str:
    return f"10.{100 + i // 250}.{i % 250}.1"


def rip(i: int, j: int) -> str:
    return f"172.16.{i % 250}.{j + 10}"


def rules(s: int, r: int) -> str:
    """ipvsadm -R input: 1,000 wrr services x 10 masquerading real servers."""
    out = []
    for i in range(s):
        out.append(f"-A -t {vip(i)}:80 -s wrr")
        for j in range(r):
            out.append(f"-a -t {vip(i)}:80 -r {rip(i, j)}:8080 -m -w {j + 1}")
    return "\n".join(out) + "\n"


def ops(s: int, r: int) -> list[Op]:
    """The same table as Ops."""
    out = []
    for i in range(s):
        key = ServiceKey.inet("tcp", vip(i), 80)
        out.append(Op.add_service(Service(key, "wrr")))
        for j in range(r):
            out.append(Op.add_dest(key, Destination(DestKey.of(rip(i, j), 8080), Forward.MASQ, j + 1)))
    return out


def ipvsadm(*args: str, stdin: str | None = None) -> str:
    p = subprocess.run(["ipvsadm", *args], input=stdin, capture_output=True, text=True, check=True)
    return p.stdout


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def import_time(module: str) -> float:
    """Wall time of `python -c 'import module'` minus `python -c pass` (best of 3)."""
    def run(code: str) -> float:
        ts = []
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            ts.append(time.perf_counter() - t0)
        return min(ts)

    return run(f"import {module}") - run("pass")


def pyroute2_adds(n_services: int, r: int) -> tuple[float, int]:
    from pyroute2 import IPVS, IPVSDest, IPVSService  # type: ignore[import-not-found]

    ipvs = IPVS()
    t0 = time.perf_counter()
    count = 0
    for i in range(n_services):
        svc = IPVSService(addr=vip(i), port=80, protocol=6, sched_name="wrr")
        ipvs.service("add", service=svc)
        count += 1
        for j in range(r):
            ipvs.dest("add", service=svc, dest=IPVSDest(addr=rip(i, j), port=8080, weight=j + 1, fwd_method=0))
            count += 1
    dt = time.perf_counter() - t0
    ipvs.close()
    return dt, count


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("services", nargs="?", type=int, default=1000)
    ap.add_argument("dests", nargs="?", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pyroute2", action="store_true", help="also time pyroute2 (import, adds)")
    a = ap.parse_args()
    S, R = a.services, a.dests
    n = S * (R + 1)
    text = rules(S, R)
    subprocess.run(["modprobe", "ip_vs_wrr"], check=False)
    print(f"table: {S} services x {R} destinations = {n} objects; python {sys.version.split()[0]}")

    t0 = time.perf_counter()
    be = NetlinkBackend()
    t_open = time.perf_counter() - t0
    print(f"batch limits: {be.sock.batch_limits()} (msgs, bytes); rcvbuf {be.sock.rcvbuf} sndbuf {be.sock.sndbuf}")
    t0 = time.perf_counter()
    the_ops = ops(S, R)
    t_build = time.perf_counter() - t0

    # interleaved rounds (ipvsadm, then ours, each after a flush): a busy machine slows both alike;
    # the best round of each is kept
    ra, rl, oa, ol = [], [], [], []
    saved = ""
    table = {}
    ok = True
    for _ in range(a.repeat):
        be.flush()
        ra.append(timed(lambda: ipvsadm("-R", stdin=text)))
        saved = ipvsadm("-Sn")
        rl.append(timed(lambda: ipvsadm("-Ln")))
        be.flush()
        oa.append(timed(lambda: be.apply(the_ops)))
        t0 = time.perf_counter()
        table = be.dump()
        ol.append(time.perf_counter() - t0)
        ok = ok and sorted(ipvsadm("-Sn").splitlines()) == sorted(saved.splitlines()) == sorted(text.splitlines())
        ok = ok and len(table) == S and sum(len(e.dests) for e in table.values()) == S * R
    t_ipvsadm_r, t_ipvsadm_l, t_apply, t_dump = min(ra), min(rl), min(oa), min(ol)
    print("rounds (s): ipvsadm -R " + " ".join(f"{x:.2f}" for x in ra) + " | apply " + " ".join(f"{x:.2f}" for x in oa)
          + " | ipvsadm -Ln " + " ".join(f"{x:.2f}" for x in rl) + " | dump " + " ".join(f"{x:.2f}" for x in ol))

    r_apply = t_apply / t_ipvsadm_r
    r_list = t_dump / t_ipvsadm_l
    print(f"open NetlinkBackend (socket, family, GET_INFO): {t_open * 1000:.1f} ms")
    print(f"build {n} Ops (model objects):                  {t_build:.3f} s")
    print(f"apply: NetlinkBackend.apply {t_apply:.3f} s ({n / t_apply:,.0f}/s)  ipvsadm -R {t_ipvsadm_r:.3f} s"
          f"  ratio {r_apply:.3f} (target <= 0.25) {'OK' if r_apply <= 0.25 else 'MISSED'}")
    print(f"list:  NetlinkBackend.dump  {t_dump:.3f} s ({n / t_dump:,.0f}/s)  ipvsadm -Ln {t_ipvsadm_l:.3f} s"
          f"  ratio {r_list:.3f} (target <= 1.0) {'OK' if r_list <= 1.0 else 'MISSED'}")
    print(f"tables identical (ipvsadm -Sn after each path, dump() sizes): {'yes' if ok else 'NO'}")
    if a.pyroute2:
        print(f"import lvsd.ipvs.netlink: {import_time('lvsd.ipvs.netlink') * 1000:.0f} ms;"
              f" import pyroute2: {import_time('pyroute2') * 1000:.0f} ms (process start subtracted)")
        be.flush()
        k = max(1, min(S, 100))
        dt, count = pyroute2_adds(k, R)
        print(f"pyroute2 IPVS adds: {count} in {dt:.2f} s ({count / dt:,.0f}/s)")
    be.flush()
    be.close()
    return 0 if ok and r_apply <= 0.25 and r_list <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
