#!/usr/bin/env python3
"""Scale benchmark, the side by side in the VM (issue 16): keepalived, then lvsd, on the real kernel.

    VM_MEM=3G VM_TIMEOUT=5400 PYTHON=.venv/bin/python \\
        tests/kernel/vm.sh .venv/bin/python tests/bench/scale_vm.py --sizes 10000,50000

For each size, the same table of N/10 services x 10 NAT servers with TCP checks (30 s interval,
1 s timeout), as tests/bench/scale.py writes it without its mix: first keepalived (-C, checkers
only), then lvsd, each in a network namespace of its own whose real servers are local addresses
(172.16.0.0/12 routed to lo) served by scale.py's listener. Measured by reading the namespace's
/proc/net/ip_vs (the same reader for both): time to put the services in, time to fill the table,
RSS with the table full, and a reload (SIGHUP) changing 1% of the weights, until the kernel shows
them; lvsd also READY=1. Then, in the VM's own namespace, lvsd's cold start (its first reconcile:
dump + plan + diff + apply of the whole table, in this process, as daemon_bench.py measures it)
against `ipvsadm -R` of the same table (target <= 0.25x). Prints a table and the ratios
lvsd/keepalived. Emulated (TCG): only the ratios count. Must run as root with IPVS.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import Lvsd, proc_tree, rss_mb  # noqa: E402
from scale import TCP_PORT, Layout, Listener, ipvsadm_rules, loadavg, make_layout, server_addr, vip_addr  # noqa: E402

REAL = """    real_server {addr} {port} {{
        weight {w}
        TCP_CHECK {{
            connect_timeout 1
        }}
    }}
"""


def keepalived_conf(lay: Layout, bump: set[tuple[int, int]]) -> str:
    """The same table as keepalived virtual_servers (delay_loop 30, TCP_CHECK)."""
    out = ["global_defs {\n    router_id bench\n}\n"]
    for i in range(lay.n_services):
        reals = "".join(
            REAL.format(addr=server_addr(i * 10 + j, "172"), port=TCP_PORT, w=j + 1 + ((i, j) in bump))
            for j in range(10)
        )
        out.append(f"virtual_server {vip_addr(i)} 80 {{\n    delay_loop 30\n    lb_algo wrr\n"
                   f"    lb_kind NAT\n    protocol TCP\n{reals}}}\n")
    return "".join(out)


def say(msg: str) -> None:
    """Progress on stderr (a step under emulation can take minutes)."""
    print(f"#   {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def table(pid: int) -> tuple[int, int, int]:
    """(services, servers, sum of weights) of the IPVS table in the namespace of process ``pid``."""
    svcs = dests = weights = 0
    with open(f"/proc/{pid}/net/ip_vs") as f:
        for line in f:
            if line.startswith(("TCP", "UDP", "FWM", "SCTP")):
                svcs += 1
            elif line.startswith("  ->") and "RemoteAddress" not in line:
                dests += 1
                weights += int(line.split()[3])  # "  -> ADDR:PORT Masq WEIGHT ..."
    return svcs, dests, weights


def wait_for(pid: int, pred: Any, t0: float, limit: float, poll: float = 0.5) -> float | None:
    """Seconds after ``t0`` when ``pred(table)`` first holds, or None after ``limit`` seconds."""
    while time.perf_counter() < t0 + limit:
        try:
            if pred(table(pid)):
                return time.perf_counter() - t0
        except (OSError, ValueError, IndexError):
            pass
        time.sleep(poll)
    return None


def netns(name: str) -> None:
    """A fresh namespace whose 172.16.0.0/12 is local (the real servers' addresses)."""
    subprocess.run(["ip", "netns", "del", name], stderr=subprocess.DEVNULL)
    subprocess.run(["ip", "netns", "add", name], check=True)
    for cmd in (["ip", "link", "set", "lo", "up"], ["ip", "route", "add", "local", "172.16.0.0/12", "dev", "lo"]):
        subprocess.run(["ip", "netns", "exec", name, *cmd], check=True)


def run_keepalived(lay: Layout, d: str, limit: float, verbose: bool = False) -> dict[str, Any]:
    """keepalived in namespace "ka": services in, table full, RSS, a 1% weight reload, stop."""
    r: dict[str, Any] = {}
    netns("ka")
    bump = set(lay.weighted[::100])
    conf = os.path.join(d, "keepalived.conf")
    with open(conf, "w") as f:
        f.write(keepalived_conf(lay, set()))
    n_svc, n = lay.n_services, lay.n_servers
    say("listener")
    with Listener({"tcp": [TCP_PORT], "http": [], "v6": [], "victims": []}, netns="ka") as lst:
        ns_pid = lst.p.pid
        t0 = time.perf_counter()
        p = subprocess.Popen(["ip", "netns", "exec", "ka", "keepalived", "-n", "-C", "-f", conf, "-p",
                              f"{d}/k.pid", "-c", f"{d}/c.pid", "--no-syslog", *(["-l"] if verbose else [])],
                             stdout=None if verbose else subprocess.DEVNULL, stderr=None if verbose else subprocess.DEVNULL)
        try:
            say("keepalived started")
            r["services_in"] = wait_for(ns_pid, lambda t: t[0] >= n_svc, t0, limit)
            say(f"services in: {r['services_in']}")
            r["full"] = wait_for(ns_pid, lambda t: t[1] >= n, t0, limit)
            say(f"table full: {r['full']}")
            time.sleep(2)
            r["rss"] = rss_mb(proc_tree(p.pid))
            w0 = table(ns_pid)[2]
            with open(conf, "w") as f:
                f.write(keepalived_conf(lay, bump))
            t1 = time.perf_counter()
            os.kill(p.pid, signal.SIGHUP)
            r["reload_1pct"] = wait_for(ns_pid, lambda t: t[2] >= w0 + len(bump), t1, min(limit, 300))
        finally:
            t2 = time.perf_counter()
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(60)
                r["stop"] = time.perf_counter() - t2
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                r["stop"] = None  # force-killed
            for pid in proc_tree(os.getpid())[1:]:
                try:
                    with open(f"/proc/{pid}/comm") as f:
                        if f.read().strip() == "keepalived":
                            os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
    subprocess.run(["ip", "netns", "del", "ka"])
    return r


def run_lvsd(lay: Layout, d: str, limit: float) -> dict[str, Any]:
    """lvsd in namespace "lv": READY, services in, table full, RSS, a 1% weight reload (SIGHUP)."""
    r: dict[str, Any] = {}
    netns("lv")
    bump = set(lay.weighted[::100])
    path = os.path.join(d, "lvsd.toml")
    with open(path, "w") as f:
        f.write(lay.text())
    n_svc, n = lay.n_services, lay.n_servers
    with Listener({"tcp": [TCP_PORT], "http": [], "v6": [], "victims": []}, netns="lv") as lst:
        ns_pid = lst.p.pid
        with Lvsd(path, d, kernel=True, netns="lv") as p:
            t0 = p.t0
            ready = threading.Thread(target=p.wait_ready, args=(limit,), daemon=True)  # timed on arrival
            ready.start()
            r["services_in"] = wait_for(ns_pid, lambda t: t[0] >= n_svc, t0, limit)
            say(f"services in: {r['services_in']}")
            ready.join(limit)
            r["ready"] = p.ready
            say(f"READY: {r['ready']}")
            r["full"] = wait_for(ns_pid, lambda t: t[1] >= n, t0, limit)
            say(f"table full: {r['full']}")
            time.sleep(2)
            r["rss"] = p.rss_mb()
            w0 = table(ns_pid)[2]
            with open(path, "w") as f:
                f.write(lay.text(bump))
            t1 = time.perf_counter()
            os.kill(p.pid, signal.SIGHUP)
            r["reload_1pct"] = wait_for(ns_pid, lambda t: t[2] >= w0 + len(bump), t1, limit)
            t2 = time.perf_counter()
            p.stop()
            r["stop"] = time.perf_counter() - t2
    subprocess.run(["ip", "netns", "del", "lv"])
    return r


def cold_vs_restore(n: int, d: str) -> dict[str, Any]:
    """lvsd's first reconcile of the whole table (no checks: every server goes in) against
    `ipvsadm -R` of the same table, in the VM's own namespace; the tables must be equal."""
    from lvsd.config.load import load_config
    from lvsd.daemon.daemon import Daemon
    from lvsd.daemon.notify import Notifier
    from lvsd.ipvs.netlink import NetlinkBackend

    lay = make_layout(n, interval=30, timeout=1, sock=os.path.join(d, "cold.sock"), mix=False, net="172",
                      checks=False)
    path = os.path.join(d, "cold.toml")
    with open(path, "w") as f:
        f.write(lay.text())
    rules = ipvsadm_rules(lay)

    def dump() -> list[str]:
        out = subprocess.run(["ipvsadm", "-Sn"], capture_output=True, text=True, check=True).stdout
        return sorted(out.splitlines())

    subprocess.run(["ipvsadm", "-C"], check=True)
    t0 = time.perf_counter()
    subprocess.run(["ipvsadm", "-R"], input=rules, text=True, check=True)
    t_ipv = time.perf_counter() - t0
    ref = dump()
    subprocess.run(["ipvsadm", "-C"], check=True)
    cfg = load_config(path)
    gc.freeze()  # as the daemon's start does before its first full pass: the config is long-lived
    backend = NetlinkBackend()
    daemon = Daemon(cfg, backend, config_path=path, notifier=Notifier(""), api=False, install_signals=False)

    async def cold() -> float:
        t = time.perf_counter()
        daemon._reconcile(full=True, cause="start")
        return time.perf_counter() - t

    t_lvsd = asyncio.run(cold())
    same = dump() == ref
    subprocess.run(["ipvsadm", "-C"], check=True)
    return {"ipvsadm_restore": t_ipv, "lvsd_cold": t_lvsd, "cold_ratio": t_lvsd / t_ipv, "tables_equal": same}


def fmt(v: Any) -> str:
    """Seconds or MB for the table."""
    return "-" if v is None else f"{v:.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,50000")
    ap.add_argument("--limit", type=float, default=900.0, help="seconds to wait for each step")
    ap.add_argument("--skip-keepalived", action="store_true")
    ap.add_argument("--verbose", action="store_true", help="keepalived's log on stderr")
    args = ap.parse_args()
    if os.geteuid() != 0 or not os.path.exists("/proc/net/ip_vs"):
        print("scale_vm.py: needs root and IPVS: run it through tests/kernel/vm.sh", file=sys.stderr)
        return 2
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    res: dict[int, dict[str, Any]] = {}
    for n in [int(x) for x in args.sizes.split(",") if x]:
        with tempfile.TemporaryDirectory(prefix="lvsd-scale-vm-") as d:
            lay = make_layout(n, interval=30, timeout=1, sock=os.path.join(d, "lvsd.sock"), mix=False, net="172")
            r: dict[str, Any] = {"load": loadavg()}
            print(f"# {n} servers: keepalived", file=sys.stderr, flush=True)
            r["ka"] = {} if args.skip_keepalived else run_keepalived(lay, d, args.limit, args.verbose)
            print(f"# {n}: {r['ka']}; lvsd", file=sys.stderr, flush=True)
            r["lv"] = run_lvsd(lay, d, args.limit)
            print(f"# {n}: {r['lv']}; cold start vs ipvsadm -R", file=sys.stderr, flush=True)
            r["cold"] = cold_vs_restore(n, d)
            print(f"# {n}: {r['cold']}", file=sys.stderr, flush=True)
            res[n] = r
    print("| servers | keepalived: services in / table full / RSS MB / 1% reload / stop "
          "| lvsd: services in / READY / table full / RSS MB / 1% reload / stop "
          "| ratios lvsd/keepalived: READY / full / reload | cold start: lvsd / ipvsadm -R / ratio |")
    print("| --- | --- | --- | --- | --- |")
    for n, r in res.items():
        ka, lv, c = r["ka"], r["lv"], r["cold"]

        def ratio(a: Any, b: Any) -> str:
            return "-" if a is None or b is None or not b else f"{a / b:.2f}x"

        print(f"| {n:,} | {fmt(ka.get('services_in'))} / {fmt(ka.get('full'))} / {fmt(ka.get('rss'))} / "
              f"{fmt(ka.get('reload_1pct'))} / {fmt(ka.get('stop'))} "
              f"| {fmt(lv.get('services_in'))} / {fmt(lv.get('ready'))} / {fmt(lv.get('full'))} / "
              f"{fmt(lv.get('rss'))} / {fmt(lv.get('reload_1pct'))} / {fmt(lv.get('stop'))} "
              f"| {ratio(lv.get('ready'), ka.get('services_in'))} / {ratio(lv.get('full'), ka.get('full'))} / "
              f"{ratio(lv.get('reload_1pct'), ka.get('reload_1pct'))} "
              f"| {c['lvsd_cold']:.2f} / {c['ipvsadm_restore']:.2f} / {c['cold_ratio']:.3f}x"
              f"{'' if c['tables_equal'] else ' (TABLES DIFFER)'} |")
    print(f"# load at the end {loadavg()}; a missing figure (-) = not reached within --limit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
