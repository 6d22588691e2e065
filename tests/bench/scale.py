#!/usr/bin/env python3
"""Scale benchmark (issue 16, run by hand): lvsd with 1,000 / 10,000 / 50,000 real servers.

    python3 tests/bench/scale.py [--sizes 1000,10000,50000] [--quick] [--check] [--json FILE]

For each size it writes a config of N/10 services x 10 servers, a realistic mix: TCP checks on most
services, HTTP checks on 20%, every tenth service sharing its servers (same addresses, same check:
one probe) with the one before it, 2% fwmark and 2% IPv6 services; the servers are loopback
addresses (127.0.0.0/8, and [::1] on ten ports for IPv6) served by one listener process that accepts
TCP and answers HTTP. Then, on the host with the memory backend, it measures:

  - parse + validate + plan (every server up) + diff of the config, in this process (CPU, best of R)
  - cold start with a 30 s check interval: process start to READY=1 (sd_notify), and to every
    healthy server in the table (target: READY + timeout + 2 s at 10,000)
  - with a 5 s interval (N/5 checks a second): checks served per second and the daemon's CPU;
    a no-op reload (time, and zero backend writes), a reload changing 1% of the weights;
    `lvsctl services` and `lvsctl services --service NAME` (command time, output size; the
    second only once lvsctl has the option), GET /services and GET /metrics (time, size);
    failure detection: listener ports closed one at a time (100 kills, 10 with --quick) while
    every other check runs and /metrics is scraped every 15 s, timed from the close to lvsd's log
    line for the server's removal (target: interval x fall + timeout + 50 ms, p99);
    RSS after start, and after a soak (--soak seconds) extrapolated linearly to one hour
    (720 rounds of the 5 s interval): RSS(end) + slope x (3600 s - elapsed).

Prints one table: a row per figure, a column per size, and the growth factors 1k->10k and
10k->50k (target <= 5.5x for 10k->50k; 5x is linear). With --check it exits 1 if a generous bound
is missed: a complexity regression, not noise (growth 1k->10k <= 15x where 10x is linear, of the
CPU figures: the daemon's CPU during a request or up to READY, since wall time on a shared host is
mostly the other tenants' turn; with a floor for figures too small to time; RSS per added server 1k->10k <= 6 kB, twice the 3 kB target;
zero writes on a no-op reload; every healthy server in the table; every kill seen within 2x its
bound). `.ci/run` runs `--sizes 1000,10000 --quick --check`.

The side by side with keepalived and `ipvsadm -R` in the VM is tests/bench/scale_vm.py. Not
collected by pytest (no test_ prefix).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import resource
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import ROOT, Lvsd, api  # noqa: E402

TCP_PORT, HTTP_PORT, V6_PORT, VICTIM_PORT = 8080, 8081, 9000, 20000
HTTP_REPLY = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


# --- the config ---------------------------------------------------------------------------------


def server_addr(k: int, net: str = "127") -> str:
    """The k-th real server's IPv4 address: 127.a.b.c on the host, 172.(16+a).b.c in the VM."""
    a, b, c = k // 62500, (k // 250) % 250 + 1, k % 250 + 1
    return f"127.{a + 1}.{b}.{c}" if net == "127" else f"172.{16 + a}.{b}.{c}"


def vip_addr(i: int) -> str:
    """The i-th service's IPv4 VIP."""
    i += 1  # not 10.0.0.0
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


@dataclass
class Layout:
    """A generated config and what the benchmark needs to know about it."""

    n_services: int
    n_servers: int  # (service, server) pairs: the dests the table holds when all are up
    sections: list[str]  # one TOML text per service (the head is separate)
    head: str
    names: list[str]
    victims: list[tuple[str, str, int]] = field(default_factory=list)  # (service, address, port)
    weighted: list[tuple[int, int]] = field(default_factory=list)  # (service index, server index)
    kinds: dict[str, int] = field(default_factory=dict)

    def text(self, bump: set[tuple[int, int]] | None = None) -> str:
        """The config; ``bump`` = (service, server) pairs whose weight is one more."""
        if not bump:
            return self.head + "".join(self.sections)
        out = [self.head]
        for i, sec in enumerate(self.sections):
            mine = [j for (si, j) in bump if si == i]
            for j in mine:
                sec = sec.replace(f"weight = {j + 1} # s{j}\n", f"weight = {j + 2} # s{j}\n")
            out.append(sec)
        return "".join(out)

    def ports(self) -> dict[str, list[int]]:
        """What the listener serves: wildcard TCP and HTTP ports, [::1] ports, victim ports."""
        return {
            "tcp": [TCP_PORT],
            "http": [HTTP_PORT] if self.kinds.get("http") else [],
            "v6": [V6_PORT + j for j in range(10)] if self.kinds.get("v6") else [],
            "victims": [p for _s, _a, p in self.victims],
        }


def make_layout(n: int, *, interval: float, timeout: float, sock: str, victims: int = 0,
                mix: bool = True, net: str = "127", log_level: str = "info", checks: bool = True) -> Layout:
    """N/10 services x 10 NAT servers; ``mix`` adds HTTP checks, shared targets, fwmark and IPv6
    services (the VM side by side uses plain TCP services only, as keepalived's table does);
    without ``checks`` every server goes in at once (the cold start against `ipvsadm -R`)."""
    n_svc = max(1, n // 10)
    head = (
        f'[daemon]\nresync = "30s"\nlog_level = "{log_level}"\n[api]\nsocket = "{sock}"\n'
        f'[defaults]\nforward = "nat"\nscheduler = "wrr"\n'
    ) + (f'check = {{ type = "tcp", interval = "{interval:g}s", timeout = "{timeout:g}s" }}\n' if checks else "")
    kinds: dict[str, int] = {"tcp": 0, "http": 0, "shared": 0, "fwmark": 0, "v6": 0}

    def kind(i: int) -> str:
        if not mix:
            return "tcp"
        if i % 50 == 7:
            return "v6"
        if i % 50 == 13:
            return "fwmark"
        if i % 10 == 5:
            return "shared"  # the servers of service i-1 (i % 10 == 4: a tcp one)
        if i % 10 in (2, 8):
            return "http"
        return "tcp"

    # victims: the last server of evenly spread plain TCP services, each on a port of its own
    plain = [i for i in range(n_svc) if kind(i) == "tcp" and i % 10 != 4]
    step = max(1, len(plain) // max(1, victims)) if victims else 0
    victim_of = {plain[v * step]: v for v in range(min(victims, len(plain)))} if victims else {}
    sections, names, vict, weighted = [], [], [], []
    for i in range(n_svc):
        k = kind(i)
        kinds[k] += 1
        name = f"s{i}"
        names.append(name)
        lines = ["[[service]]", f'name = "{name}"']
        if k == "v6":
            lines.append(f'vip = "[fd00::{i:x}]:80"')
        elif k == "fwmark":
            lines.append(f"fwmark = {i + 1}")
        elif k == "shared":
            lines.append(f'vip = "{vip_addr(i - 1)}:443"')
        else:
            lines.append(f'vip = "{vip_addr(i)}:80"')
        if k == "http":
            lines.append(f'check = {{ type = "http", path = "/health", interval = "{interval:g}s", '
                         f'timeout = "{timeout:g}s" }}')
        for j in range(10):
            if k == "v6":
                addr, port = "::1", V6_PORT + j
            elif k == "shared":
                addr, port = server_addr((i - 1) * 10 + j, net), TCP_PORT
            else:
                addr, port = server_addr(i * 10 + j, net), HTTP_PORT if k == "http" else TCP_PORT
            if j == 9 and i in victim_of:
                port = VICTIM_PORT + victim_of[i]
                vict.append((name, addr, port))
            weighted.append((i, j))
            lines += ["  [[service.server]]", f'  address = "{addr}"', f"  port = {port}",
                      f"  weight = {j + 1} # s{j}"]
        sections.append("\n".join(lines) + "\n")
    return Layout(n_svc, n_svc * 10, sections, head, names, vict, weighted, kinds)


def ipvsadm_rules(lay: Layout, net: str = "172") -> str:
    """The same table as ``ipvsadm -R`` input (plain TCP layouts only: the VM side by side)."""
    out = []
    for i in range(lay.n_services):
        out.append(f"-A -t {vip_addr(i)}:80 -s wrr")
        for j in range(10):
            out.append(f"-a -t {vip_addr(i)}:80 -r {server_addr(i * 10 + j, net)}:{TCP_PORT} -m -w {j + 1}")
    return "\n".join(out) + "\n"


# --- the listener -------------------------------------------------------------------------------


def serve(spec: dict[str, list[int]]) -> None:
    """Listener process: accept TCP on the spec's ports (wildcard IPv4; [::1] for "v6"), answer
    HTTP on "http" ports, count connections; stdin takes "close PORT" and "count" (one line each,
    answered on stdout), EOF ends it."""
    os.setsid()  # a session of its own: not in the daemon's CPU share (real servers are elsewhere)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ep = select.epoll()
    listeners: dict[int, tuple[socket.socket, bool, int]] = {}  # fd -> (socket, http, port)
    by_port: dict[int, socket.socket] = {}

    def listen(port: int, http: bool, v6: bool) -> None:
        s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::1" if v6 else "0.0.0.0", port))
        s.listen(4096)
        s.setblocking(False)
        ep.register(s.fileno(), select.EPOLLIN)
        listeners[s.fileno()] = (s, http, port)
        by_port[port] = s

    for p in spec["tcp"] + spec["victims"]:
        listen(p, False, False)
    for p in spec["http"]:
        listen(p, True, False)
    for p in spec["v6"]:
        listen(p, False, True)
    ep.register(0, select.EPOLLIN)
    conns: dict[int, tuple[socket.socket, bytes]] = {}
    served = 0
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    stdin = b""
    while True:
        for fd, _ev in ep.poll(1.0):
            if fd == 0:
                data = os.read(0, 4096)
                if not data:
                    return
                stdin += data
                while b"\n" in stdin:
                    line, stdin = stdin.split(b"\n", 1)
                    cmd = line.decode().split()
                    if cmd and cmd[0] == "close":
                        s = by_port.pop(int(cmd[1]))
                        ep.unregister(s.fileno())
                        del listeners[s.fileno()]
                        s.close()
                        sys.stdout.write(f"closed {cmd[1]}\n")
                    elif cmd and cmd[0] == "count":
                        sys.stdout.write(f"{served}\n")
                    sys.stdout.flush()
                continue
            lst = listeners.get(fd)
            if lst is not None:
                ls, http, _port = lst
                for _ in range(256):
                    try:
                        c, _peer = ls.accept()
                    except (BlockingIOError, ConnectionAbortedError):
                        break
                    except OSError:
                        break
                    served += 1
                    if not http:
                        # a plain close: an RST (SO_LINGER 0) can reach the checker before it
                        # has seen its connect complete, and fails the check
                        c.close()
                        continue
                    c.setblocking(False)
                    conns[c.fileno()] = (c, b"")
                    ep.register(c.fileno(), select.EPOLLIN)
                continue
            if fd not in conns:  # a stale event of a listener closed in this batch
                continue
            c, buf = conns[fd]
            try:
                data = c.recv(4096)
            except BlockingIOError:  # a stale event of a closed listener whose fd was reused
                continue
            except OSError:
                data = b""
            buf += data
            if data and b"\r\n\r\n" not in buf:
                conns[fd] = (c, buf)
                continue
            if data:
                try:
                    c.send(HTTP_REPLY)
                except OSError:
                    pass
            ep.unregister(fd)
            del conns[fd]
            c.close()


class Listener:
    """The listener process (``scale.py --serve SPEC``), optionally in a network namespace."""

    def __init__(self, spec: dict[str, list[int]], netns: str | None = None) -> None:
        cmd = [sys.executable, os.path.abspath(__file__), "--serve", json.dumps(spec)]
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        assert self.p.stdout is not None and self.p.stdin is not None
        self.out, self.inp = self.p.stdout, self.p.stdin
        if self.out.readline().strip() != "ready":
            raise SystemExit("scale.py: the listener did not start")
        self.lock = threading.Lock()

    def _ask(self, line: str) -> str:
        with self.lock:
            self.inp.write(line + "\n")
            self.inp.flush()
            return self.out.readline().strip()

    def close(self, port: int) -> float:
        """Stop listening on ``port`` (new connections are refused); returns when it is closed."""
        self._ask(f"close {port}")
        return time.perf_counter()

    def count(self) -> int:
        """Connections accepted so far."""
        return int(self._ask("count"))

    def stop(self) -> None:
        """EOF on its stdin ends it."""
        try:
            self.inp.close()
        except OSError:
            pass
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- measuring ----------------------------------------------------------------------------------


def loadavg() -> str:
    """The 1-minute load average (as `uptime` shows it)."""
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def plan_cost(path: str, repeat: int) -> tuple[float, float, float]:
    """(CPU, wall) of parse + validate + plan with every server up + diff against an empty table,
    best of ``repeat``; and the CPU of the same against a table that already holds it."""
    from lvsd.config import load as _load
    from lvsd.config.load import load_config
    from lvsd.core.health import Health, ServerHealth
    from lvsd.core.plan import plan

    clear = getattr(_load, "clear_parse_cache", lambda: None)
    up = ServerHealth(Health.UP)

    def once(actual: dict[Any, Any]) -> Any:
        clear()
        cfg = load_config(path)
        health = {srv.id: up for s in cfg.services for srv in s.servers}
        return plan(cfg, health, actual, managed={s.key for s in cfg.services})

    cpu, wall, same = [], [], []
    full: dict[Any, Any] = {}
    for _ in range(repeat):
        gc.collect()
        c0, t0 = time.process_time(), time.perf_counter()
        p = once({})
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - t0)
        full = p.desired
    for _ in range(repeat):
        gc.collect()
        c0 = time.process_time()
        p = once(full)
        same.append(time.process_time() - c0)
        assert not [op for op in p.ops if op.kind.value != "set-timeouts"], "a second plan is not empty"
    return min(cpu), min(wall), min(same)


def status(sock: str) -> dict[str, Any]:
    """GET /status as JSON."""
    _t, _st, body = api(sock, "GET", "/status")
    return json.loads(body)


def ops_count(sock: str) -> dict[str, int]:
    """The daemon's applied-ops counters, by kind."""
    return dict(status(sock)["reconcile"]["ops"])


def wait_full(sock: str, want: int, deadline: float, poll: float) -> float | None:
    """perf_counter() when the daemon has added ``want`` servers (every one healthy, each added
    once at start), or None at ``deadline``."""
    while time.perf_counter() < deadline:
        try:
            if ops_count(sock).get("add-server", 0) >= want:
                return time.perf_counter()
        except Exception:
            pass
        time.sleep(poll)
    return None


class LogWatch:
    """Reads the daemon's stderr (so the pipe never fills) and timestamps the lines that remove a
    server ("delete-server ... -> ADDR:PORT", or an "edit-server" to weight 0 for inhibit)."""

    def __init__(self, stream: Any) -> None:
        self.seen: dict[str, float] = {}
        self.tail: list[str] = []
        self.lines = 0
        self.t = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self.t.start()

    def _run(self, stream: Any) -> None:
        pat = re.compile(r"delete-server .*-> (\S+)")
        for raw in stream:
            now = time.perf_counter()
            line = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
            self.lines += 1
            self.tail = (self.tail + [line.rstrip()])[-50:]
            m = pat.search(line)
            if m:
                self.seen.setdefault(m.group(1).rstrip(",;)"), now)


def dest_str(addr: str, port: int) -> str:
    """A server as the log writes it (IPv6 in brackets)."""
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def lvsctl(sock: str, *args: str) -> tuple[float, float, int, int]:
    """Run the lvsctl command: (seconds, its own CPU seconds, exit status, output bytes)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "lvsd.cli.lvsctl", "-s", sock, *args], capture_output=True,
                       env=dict(os.environ, PYTHONPATH=ROOT), timeout=600)
    t = time.perf_counter() - t0
    ru2 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return t, ru2.ru_utime + ru2.ru_stime - ru.ru_utime - ru.ru_stime, p.returncode, len(p.stdout)


def sized(sock: str, url: str) -> tuple[float, int]:
    """GET ``url``: (seconds, body bytes)."""
    t, _status, body = api(sock, "GET", url)
    return t, len(body)


def measure(n: int, args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    """Every figure for one size (see the module docstring)."""
    quick = args.quick
    r: dict[str, Any] = {"servers": n, "load_start": loadavg()}
    d = os.path.join(tmp, str(n))
    os.makedirs(d, exist_ok=True)
    sock = os.path.join(d, "lvsd.sock")
    path = os.path.join(d, "lvsd.toml")
    n_kills = args.kills if args.kills is not None else (10 if quick else 100)
    poll = 0.1 if n <= 10000 else 0.25
    say = lambda m: print(f"  [{n}] {m}", file=sys.stderr, flush=True)  # noqa: E731

    # 1. parse + validate + plan + diff (30 s interval config, the same text shape)
    lay = make_layout(n, interval=30, timeout=1, sock=sock, victims=n_kills)
    r["kinds"] = lay.kinds
    with open(path, "w") as f:
        f.write(lay.text())
    r["config_bytes"] = os.path.getsize(path)
    cpu, wall, same = plan_cost(path, 1 if quick or n > 10000 else 3)
    r["plan_cpu"], r["plan_wall"], r["plan_same_cpu"] = cpu, wall, same
    say(f"plan {cpu:.3f} s CPU")

    with Listener(lay.ports()) as lst:
        # 2. cold start, 30 s interval
        with Lvsd(path, d, stderr=subprocess.PIPE) as p:
            LogWatch(p.proc.stderr)
            r["ready"] = p.wait_ready()
            r["ready_cpu"] = p.cpu()
            r["rss_ready"] = p.rss_mb()
            t_full = wait_full(sock, lay.n_servers, p.t0 + r["ready"] + 2 * 30 + 15, poll)  # rise 2
            r["full"] = None if t_full is None else t_full - p.t0
            r["full_after_ready"] = None if t_full is None else t_full - p.t0 - r["ready"]
            r["full_cpu"] = p.cpu()
            r["rss_full_30s"] = p.rss_mb()
        say(f"cold start: ready {r['ready']:.2f} s, table full {r['full']} s")

        # 3. the 5 s interval daemon
        interval, timeout, fall = 5.0, 1.0, 3
        lay = make_layout(n, interval=interval, timeout=timeout, sock=sock, victims=n_kills)
        with open(path, "w") as f:
            f.write(lay.text())
        with Lvsd(path, d, stderr=subprocess.PIPE) as p:
            watch = LogWatch(p.proc.stderr)
            r["ready_5s"] = p.wait_ready()
            t_full = wait_full(sock, lay.n_servers, p.t0 + r["ready_5s"] + 2 * interval + 30, poll)
            r["full_5s"] = None if t_full is None else t_full - p.t0
            t_settled = time.perf_counter()
            r["rss_start"] = p.rss_mb()
            say(f"5 s interval: ready {r['ready_5s']:.2f} s, full {r['full_5s']} s, RSS {r['rss_start']:.0f} MB")

            # checks served per second and the daemon's CPU over two intervals
            time.sleep(1.0)
            c0, n0, t0 = p.cpu(), lst.count(), time.perf_counter()
            time.sleep(interval * (1 if quick else 2))
            c1, n1, t1 = p.cpu(), lst.count(), time.perf_counter()
            r["checks_per_s"] = (n1 - n0) / (t1 - t0)
            r["checks_expected"] = len({(a, pt) for a, pt in _targets(lay)}) / interval
            r["cpu_cores"] = (c1 - c0) / (t1 - t0)

            # reloads: wall time, and the daemon's CPU meanwhile (what --check bounds: on a
            # loaded host the wall time is mostly other tenants; the checks add ~N/50,000 cores)
            def reload() -> tuple[float, float]:
                c = p.cpu()
                t, st, body = api(sock, "POST", "/reload")
                assert st == 200, body
                return t, p.cpu() - c

            reps = 2 if quick else 3
            before = ops_count(sock)
            noop = [reload() for _ in range(reps)]
            r["reload_noop"], r["reload_noop_cpu"] = min(x[0] for x in noop), min(x[1] for x in noop)
            parse = []
            for k in range(reps):
                with open(path, "a") as f:
                    f.write(f"# comment {k}: a full parse of the same config\n")
                parse.append(reload())
            r["reload_noop_parse"], r["reload_noop_parse_cpu"] = min(x[0] for x in parse), min(x[1] for x in parse)
            r["reload_noop_writes"] = sum(ops_count(sock).values()) - sum(before.values())
            bump = set(lay.weighted[:: 100])
            one, wrote = [], []
            for k in range(reps):  # 1% up, then back down: each a 1% change
                with open(path, "w") as f:
                    f.write(lay.text(bump if k % 2 == 0 else None))
                before = ops_count(sock)
                one.append(reload())
                wrote.append(sum(ops_count(sock).values()) - sum(before.values()))
            r["reload_1pct"], r["reload_1pct_cpu"] = min(x[0] for x in one), min(x[1] for x in one)
            r["reload_1pct_writes"] = max(wrote, key=lambda w: abs(w - len(bump)))  # the worst
            r["reload_1pct_wanted"] = len(bump)
            say(f"reloads: no-op {r['reload_noop']:.3f} s ({r['reload_noop_writes']} writes), "
                f"1% {r['reload_1pct']:.3f} s ({r['reload_1pct_writes']} writes)")

            # lvsctl services, the API's /services and /metrics
            r["lvsctl_services"], r["lvsctl_services_own"], _rc, r["lvsctl_services_bytes"] = lvsctl(sock, "services")
            name = lay.names[len(lay.names) // 2]
            t, own, rc, size = lvsctl(sock, "services", "--service", name)
            r["lvsctl_service_one"] = t if rc == 0 else None
            r["lvsctl_service_one_own"] = own if rc == 0 else None
            r["lvsctl_service_one_bytes"] = size if rc == 0 else None
            for key, url in (("api_services", "/services"), ("api_service_one", f"/services?service={name}"),
                             ("metrics", "/metrics")):
                runs = []
                for _ in range(reps):
                    c = p.cpu()
                    t, size = sized(sock, url)
                    runs.append((t, p.cpu() - c, size))
                r[key], r[key + "_cpu"], r[key + "_bytes"] = min(x[0] for x in runs), min(x[1] for x in runs), runs[0][2]
            say(f"services {r['lvsctl_services']:.3f} s, metrics {r['metrics']:.3f} s")

            # failure detection, /metrics scraped every 15 s meanwhile
            stop = threading.Event()
            scrapes: list[float] = []

            def scrape() -> None:
                while not stop.wait(15.0):
                    scrapes.append(api(sock, "GET", "/metrics")[0])

            th = threading.Thread(target=scrape, daemon=True)
            th.start()
            bound = interval * fall + timeout + 0.05
            killed: dict[str, float] = {}
            for _svc, addr, port in lay.victims:
                killed[dest_str(addr, port)] = lst.close(port)
                time.sleep(max(0.2, 20.0 / max(1, len(lay.victims))))
            end = time.perf_counter() + bound * 2 + 5
            while time.perf_counter() < end and not all(k in watch.seen for k in killed):
                time.sleep(0.2)
            stop.set()
            det = sorted(watch.seen[k] - t for k, t in killed.items() if k in watch.seen)
            r["kills"] = len(killed)
            r["kills_seen"] = len(det)
            r["detect_bound"] = bound
            if det:
                r["detect_p50"] = statistics.median(det)
                r["detect_p99"] = det[min(len(det) - 1, int(round(0.99 * (len(det) - 1))))]
                r["detect_max"] = det[-1]
            r["scrape_max"] = max(scrapes) if scrapes else None
            say(f"kills: {len(det)}/{len(killed)} seen, p99 {r.get('detect_p99')}")

            # soak: only the checks run; RSS extrapolated to an hour of checks from its slope
            # (the API calls above allocate once: their growth is not a per-round cost)
            r["rss_end"] = rss0 = p.rss_mb()
            t0 = time.perf_counter()
            while time.perf_counter() < t0 + args.soak:
                time.sleep(1)
            r["soak_s"] = time.perf_counter() - t0
            if args.soak > 0:
                r["rss_end"] = p.rss_mb()
                slope = (r["rss_end"] - rss0) / r["soak_s"]
                gone = time.perf_counter() - t_settled
                r["rss_hour"] = r["rss_end"] + max(0.0, slope) * max(0.0, 3600 - gone)
            if watch.lines == 0:
                say("no log lines from the daemon")
            if len(det) < len(killed):
                say("last log lines:\n    " + "\n    ".join(watch.tail[-10:]))
    r["load_end"] = loadavg()
    return r


def _targets(lay: Layout) -> list[tuple[str, int]]:
    """Every (address, port) probed: shared targets once (one probe each), from the text."""
    out = []
    for sec in lay.sections:
        for m in re.finditer(r'address = "([^"]+)"\n\s*port = (\d+)', sec):
            out.append((m.group(1), int(m.group(2))))
    return out


# --- the table ----------------------------------------------------------------------------------

# (key, label, unit, floor): --check bounds the growth of the rows with a floor (CPU figures:
# wall times on a shared host measure the other tenants); figures below the floor count as it
ROWS: list[tuple[str, str, str, float]] = [
    ("plan_cpu", "parse+validate+plan+diff, CPU", "s", 0.05),
    ("plan_same_cpu", "  same, table already right, CPU", "s", 0.05),
    ("ready", "cold start to READY=1 (30 s interval)", "s", 0),
    ("ready_cpu", "  daemon CPU to READY", "s", 0.3),
    ("full", "  to every healthy server in the table", "s", 0),
    ("full_after_ready", "  table full after READY (target: timeout + 2 s)", "s", 0),
    ("full_cpu", "  daemon CPU to the table full", "s", 0.3),
    ("ready_5s", "cold start to READY=1 (5 s interval)", "s", 0),
    ("full_5s", "  to the table full", "s", 0),
    ("checks_expected", "checks a second due (distinct targets / 5 s)", "/s", 0),
    ("checks_per_s", "  checks the listener served a second", "/s", 0),
    ("cpu_cores", "  daemon CPU meanwhile (cores)", "", 0),
    ("reload_noop", "no-op reload (unchanged file)", "s", 0),
    ("reload_noop_cpu", "  daemon CPU", "s", 0.05),
    ("reload_noop_parse", "no-op reload (comment edit: full parse)", "s", 0),
    ("reload_noop_parse_cpu", "  daemon CPU", "s", 0.05),
    ("reload_noop_writes", "  backend writes of the no-op reloads", "", 0),
    ("reload_1pct", "reload changing 1% of weights", "s", 0),
    ("reload_1pct_cpu", "  daemon CPU", "s", 0.05),
    ("reload_1pct_writes", "  backend writes", "", 0),
    ("lvsctl_services", "lvsctl services (command)", "s", 0),
    ("lvsctl_services_own", "  lvsctl's own CPU", "s", 0),
    ("lvsctl_services_bytes", "  its output", "B", 0),
    ("lvsctl_service_one", "lvsctl services --service NAME", "s", 0),
    ("lvsctl_service_one_own", "  lvsctl's own CPU", "s", 0),
    ("lvsctl_service_one_bytes", "  its output", "B", 0),
    ("api_services", "GET /services", "s", 0),
    ("api_services_cpu", "  daemon CPU", "s", 0.05),
    ("api_services_bytes", "  its size", "B", 0),
    ("api_service_one", "GET /services?service=NAME", "s", 0),
    ("api_service_one_cpu", "  daemon CPU", "s", 0.05),
    ("api_service_one_bytes", "  its size", "B", 0),
    ("metrics", "GET /metrics", "s", 0),
    ("metrics_cpu", "  daemon CPU", "s", 0.05),
    ("metrics_bytes", "  its size", "B", 0),
    ("kills_seen", "kills timed (a listener port closed, 100 at most)", "", 0),
    ("detect_p50", "  detected and removed, p50", "s", 0),
    ("detect_p99", "  p99 (target: interval x fall + timeout + 50 ms)", "s", 0),
    ("scrape_max", "  slowest /metrics scrape meanwhile", "s", 0),
    ("rss_ready", "RSS at READY (30 s interval)", "MB", 0),
    ("rss_start", "RSS, table full (5 s interval)", "MB", 0),
    ("rss_end", "RSS after the run (API answers included)", "MB", 0),
    ("rss_hour", "  extrapolated to 1 h of checks", "MB", 0),
]
GROWTH_LIMIT_10_50 = 5.5
GROWTH_LIMIT_1_10 = 15.0


def fmt(v: Any, unit: str) -> str:
    """A figure for the table."""
    if v is None:
        return "-"
    if unit == "B":
        return f"{v / 1024:.0f} kB" if v >= 10240 else f"{v} B"
    if unit == "s":
        return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"
    if unit == "MB":
        return f"{v:.0f} MB"
    if unit == "/s":
        return f"{v:.0f}/s"
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def growth(res: dict[int, dict[str, Any]], key: str, a: int, b: int) -> float | None:
    """Figure at size b over figure at size a."""
    va, vb = res.get(a, {}).get(key), res.get(b, {}).get(key)
    if va is None or vb is None or not va:
        return None
    return float(vb) / float(va)


def table(res: dict[int, dict[str, Any]]) -> str:
    """The markdown table: a row per figure, a column per size, and the growth factors."""
    sizes = sorted(res)
    pairs = [(a, b) for a, b in ((1000, 10000), (10000, 50000)) if a in res and b in res]
    head = ["figure", *(f"{s:,}" for s in sizes), *(f"{b // 1000}k/{a // 1000}k" for a, b in pairs)]
    out = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for key, label, unit, _floor in ROWS:
        cells = [fmt(res[s].get(key), unit) for s in sizes]
        for a, b in pairs:
            g = growth(res, key, a, b) if unit in ("s", "MB", "B") else None
            cells.append("-" if g is None else f"{g:.1f}x")
        out.append("| " + " | ".join([label, *cells]) + " |")
    loads = ", ".join(f"{s:,}: {res[s]['load_start']}-{res[s]['load_end']}" for s in sizes)
    out.append(f"\nload average (1 min) during each size: {loads}")
    return "\n".join(out)


def check(res: dict[int, dict[str, Any]]) -> list[str]:
    """The generous bounds of --check: what a complexity regression or a broken part misses."""
    bad = []
    for s, r in res.items():
        if r.get("reload_noop_writes"):
            bad.append(f"{s}: a no-op reload wrote {r['reload_noop_writes']} ops (want 0)")
        if r.get("full") is None or r.get("full_5s") is None:
            bad.append(f"{s}: the table never held every healthy server")
        if r.get("reload_1pct_writes") != r.get("reload_1pct_wanted"):
            bad.append(f"{s}: the 1% reload wrote {r.get('reload_1pct_writes')} ops, "
                       f"want {r.get('reload_1pct_wanted')}")
        if r.get("kills_seen", 0) < r.get("kills", 0):
            bad.append(f"{s}: {r['kills'] - r['kills_seen']} of {r['kills']} kills never left the table")
        elif r.get("detect_max") is not None and r["detect_max"] > 2 * r["detect_bound"]:
            bad.append(f"{s}: a kill took {r['detect_max']:.1f} s, over twice its bound {r['detect_bound']:.2f} s")
    if 1000 in res and 10000 in res:
        for key, label, unit, floor in ROWS:
            if unit != "s" or not floor:
                continue
            a, b = res[1000].get(key), res[10000].get(key)
            if a is None or b is None:
                continue
            g = max(b, floor) / max(a, floor)
            if g > GROWTH_LIMIT_1_10:
                bad.append(f"{key} ({label.strip()}): 1k->10k grew {g:.1f}x (bound {GROWTH_LIMIT_1_10:g}x; 10x is linear)")
        per = (res[10000]["rss_start"] - res[1000]["rss_start"]) * 1024 / 9000
        if per > 6.0:
            bad.append(f"RSS per added server 1k->10k: {per:.1f} kB (bound 6 kB, twice the 3 kB target)")
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,50000", help="servers per run, comma-separated")
    ap.add_argument("--quick", action="store_true", help="fewer repeats and kills (CI's short form)")
    ap.add_argument("--check", action="store_true", help="exit 1 if a generous bound is missed")
    ap.add_argument("--kills", type=int, default=None, help="listener ports killed (default 100, 10 with --quick)")
    ap.add_argument("--soak", type=float, default=None, help="seconds of checks before the last RSS (default 120, 0 with --quick)")
    ap.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        serve(json.loads(args.serve))
        return 0
    if args.soak is None:
        args.soak = 0.0 if args.quick else 120.0
    sizes = [int(x) for x in args.sizes.split(",") if x]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the daemons inherit it
    commit = subprocess.run(["git", "-C", ROOT, "log", "-1", "--format=%h %cI"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "lvsd"], capture_output=True, text=True).stdout
    commit += " + uncommitted changes in lvsd/" if dirty.strip() else ""
    print(f"# scale benchmark: sizes {sizes}; commit {commit}; load {loadavg()}; {os.cpu_count()} CPUs", flush=True)
    res: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="lvsd-scale-") as tmp:
        for n in sizes:
            res[n] = measure(n, args, tmp)
    print(table(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"commit": commit, "results": res}, f, indent=1)
    if args.check:
        bad = check(res)
        for b in bad:
            print(f"scale: {b}")
        print(f"scale: {'FAILED' if bad else 'every bound held'}")
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
