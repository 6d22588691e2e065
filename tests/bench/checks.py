"""Benchmark: CPU cost of lvsd's TCP/HTTP checks, side by side with keepalived's TCP_CHECK/HTTP_GET.

One listener process serves N loopback addresses (127.1.x.y, one port), counts what it serves and
answers HTTP with a fixed 200. The checker under test probes every address each ``interval``; its
own process CPU time (user+sys) over a steady window, divided by the checks the listener counted,
gives CPU-seconds per 10,000 checks. keepalived (in the VM: ``VM_APT=keepalived``) is run the same
way against the same listener with one virtual server holding the N real servers.

    python tests/bench/checks.py lvsd --kind tcp -n 1000 --interval 0.1 --seconds 10
    python tests/bench/checks.py lvsd --kind https -n 200 --interval 0.1 --seconds 10  # TLS (trustme)
    python tests/bench/checks.py compare --kind tcp -n 200 --interval 1 --seconds 20    # needs keepalived+IPVS
    python tests/bench/checks.py latency -n 1000 --interval 0.1 --flips 300            # result->change p99
    python tests/bench/checks.py loop --rates 5000,10000,20000,30000 --seconds 10      # one loop's limit

``--kind https`` serves TLS (a trustme CA and an ECDSA certificate for ``bench.test``); the
checks verify the chain and the name (``ca``, ``sni``), each probe a full handshake, as a
production https check does. The listener's TLS work is its own process's, not counted.

Prints one line per run and, for ``compare``, the ratio lvsd/keepalived (target <= 1.5).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing import Process, Value

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import proc_cpu as _proc_cpu  # noqa: E402
from benchlib import proc_tree as _tree  # noqa: E402

HTTP_REPLY = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


def addrs(n: int) -> list[str]:
    """N distinct loopback addresses 127.1.x.y."""
    return [f"127.1.{(i // 250) % 250}.{i % 250 + 1}" for i in range(n)]


def _serve(port: int, http: bool, counter: Value, ready: Value, tls: tuple[str, str] | None = None) -> None:  # type: ignore[valid-type]
    """Listener process: accept on 0.0.0.0:port (so every 127.x address), count, answer, close;
    over TLS with ``tls`` = (certificate chain file, key file)."""
    # own session: with the kernel's autogroup scheduling the stand-in servers then do not share
    # the checker's CPU share on a busy machine (real servers are other machines)
    os.setsid()
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port))
    ls.listen(4096)
    ls.setblocking(False)
    ctx = None
    if tls:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*tls)
    shaking: set[int] = set()  # TLS connections still in their handshake
    ep = select.epoll()
    ep.register(ls.fileno(), select.EPOLLIN)
    conns: dict[int, socket.socket] = {}
    served = 0
    ready.value = 1
    linger0 = b"\x01\x00\x00\x00\x00\x00\x00\x00"
    while True:
        for fd, _ev in ep.poll(0.2):
            if fd == ls.fileno():
                while True:
                    try:
                        c, _ = ls.accept()
                    except BlockingIOError:
                        break
                    served += 1
                    if not http:
                        c.close()
                        continue
                    c.setblocking(False)
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger0)
                    if ctx is not None:
                        c = ctx.wrap_socket(c, server_side=True, do_handshake_on_connect=False)
                        shaking.add(c.fileno())
                    conns[c.fileno()] = c
                    ep.register(c.fileno(), select.EPOLLIN)
            else:
                c = conns[fd]
                try:
                    if fd in shaking:
                        c.do_handshake()
                        shaking.discard(fd)
                        continue  # the request follows
                    if c.recv(4096):
                        c.send(HTTP_REPLY)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as e:  # ssl.SSLWantRead/WriteError are OSErrors too
                    if type(e).__name__ in ("SSLWantReadError", "SSLWantWriteError"):
                        continue
                conns.pop(fd)
                shaking.discard(fd)
                ep.unregister(fd)
                c.close()
        counter.value = served


@dataclass
class Listener:
    port: int
    http: bool
    tls: tuple[str, str] | None = None

    def __enter__(self) -> Listener:
        self.counter = Value("q", 0, lock=False)
        ready = Value("i", 0, lock=False)
        self.proc = Process(target=_serve, args=(self.port, self.http, self.counter, ready, self.tls), daemon=True)
        self.proc.start()
        deadline = time.monotonic() + 10
        while not ready.value and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def count(self) -> int:
        return int(self.counter.value)

    def __exit__(self, *a: object) -> None:
        self.proc.terminate()
        self.proc.join(5)


def make_config(kind: str, targets: list[str], port: int, interval: float, timeout: float, ca: str | None = None):
    """A duck-typed Config with one service holding every target (what CheckManager reads)."""
    from lvsd.checks.registry import check_class
    from lvsd.ipvs.model import DestKey

    tls = {"ca": ca, "sni": TLS_NAME} if kind == "https" else {}
    http = {"type": kind, "path": "/"} if kind in ("http", "https") else {}
    spec = check_class(kind)(interval=interval, timeout=timeout, rise=1, fall=1, **http, **tls)

    class Srv:
        def __init__(self, a: str) -> None:
            self.key = DestKey.of(a, port)
            self.checks = (spec,)

    class Svc:
        name = "bench"
        servers = tuple(Srv(a) for a in targets)

    class Cfg:
        services = (Svc(),)

    return Cfg()


TLS_NAME = "bench.test"


def _tls_files(d: str) -> tuple[tuple[str, str], str]:
    """A trustme CA and a certificate for TLS_NAME, written to d: ((chain, key), CA file)."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert(TLS_NAME)
    chain, key, ca_file = (os.path.join(d, f) for f in ("chain.pem", "key.pem", "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(chain)
    cert.private_key_pem.write_to_path(key)
    ca.cert_pem.write_to_path(ca_file)
    return (chain, key), ca_file


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_lvsd(kind: str, n: int, interval: float, seconds: float, port: int, warm: float = 2.0) -> tuple[float, int]:
    """Run CheckManager over N targets; return (cpu seconds, checks served) over the window."""
    import logging

    from lvsd.checks.manager import CheckManager

    logging.getLogger("lvsd").addHandler(logging.NullHandler())
    logging.getLogger("lvsd").propagate = False
    changes: list[object] = []
    tmp = tempfile.TemporaryDirectory()
    tls, ca = _tls_files(tmp.name) if kind == "https" else (None, None)
    with tmp, Listener(port, kind != "tcp", tls) as lst:
        cfg = make_config(kind, addrs(n), port, interval, 1.0, ca)

        async def main() -> tuple[float, int]:
            m = CheckManager(lambda sid, h: changes.append((sid, h)))
            await m.start(cfg)
            await asyncio.sleep(warm + interval)
            c0, n0 = cpu_self(), lst.count()
            await asyncio.sleep(seconds)
            c1, n1 = cpu_self(), lst.count()
            await m.stop()
            down = sum(1 for s in m.snapshot().values() if s.state.name != "UP")
            if down:
                print(f"warning: {down} servers not UP", file=sys.stderr)
            return c1 - c0, n1 - n0

        return asyncio.run(main())


KEEPALIVED_CONF = """global_defs {{
    router_id bench
}}
virtual_server 10.9.9.9 {port} {{
    delay_loop {interval}
    lb_algo rr
    lb_kind NAT
    protocol TCP
{reals}}}
"""

REAL_TCP = """    real_server {addr} {port} {{
        weight 1
        TCP_CHECK {{
            connect_timeout {timeout}
        }}
    }}
"""

REAL_HTTP = """    real_server {addr} {port} {{
        weight 1
        HTTP_GET {{
            url {{
                path /
                status_code 200
            }}
            connect_timeout {timeout}
        }}
    }}
"""


def run_keepalived(kind: str, n: int, interval: float, seconds: float, port: int, warm: float = 3.0) -> tuple[float, int]:
    """Run keepalived's checker over the same N targets; return (cpu seconds, checks served)."""
    exe = shutil.which("keepalived") or "/usr/sbin/keepalived"
    tmpl = REAL_TCP if kind == "tcp" else REAL_HTTP
    reals = "".join(tmpl.format(addr=a, port=port, timeout=2) for a in addrs(n))
    with tempfile.TemporaryDirectory() as d, Listener(port, kind != "tcp") as lst:
        conf = os.path.join(d, "keepalived.conf")
        with open(conf, "w") as f:
            f.write(KEEPALIVED_CONF.format(port=port, interval=interval, reals=reals))
        p = subprocess.Popen(
            [exe, "-n", "-C", "-f", conf, "-p", f"{d}/k.pid", "-c", f"{d}/c.pid", "--no-syslog"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(warm + interval)
            pids = _tree(p.pid)
            c0, n0 = _proc_cpu(pids), lst.count()
            time.sleep(seconds)
            c1, n1 = _proc_cpu(pids), lst.count()
        finally:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        return c1 - c0, n1 - n0


def report(who: str, kind: str, n: int, interval: float, seconds: float, cpu: float, checks: int) -> float:
    per10k = cpu / checks * 10000 if checks else float("inf")
    rate = checks / seconds
    print(f"{who:10s} {kind:5s} n={n:<6d} interval={interval:<5g} {rate:8.0f} checks/s  "
          f"cpu {cpu:6.2f}s = {100 * cpu / seconds:5.1f}% of a core  {per10k:6.2f} cpu-s/10k checks", flush=True)
    return per10k


class _TableBackend:
    """Dict-backed stand-in for the kernel (this bench runs on hosts without IPVS): records when
    each op is applied so the verdict -> kernel-write latency can be measured."""

    name = "bench"

    def __init__(self) -> None:
        from lvsd.ipvs.model import Timeouts

        self.table: dict = {}
        self.applied: list[tuple[float, object]] = []
        self._timeouts = Timeouts()

    def dump(self) -> dict:
        from lvsd.ipvs.model import ServiceEntry

        return {k: ServiceEntry(e.service, dict(e.dests)) for k, e in self.table.items()}

    def service(self, key):
        from lvsd.ipvs.backend import IPVSError

        if key not in self.table:
            raise IPVSError("get-service", 3)
        return self.table[key].service

    def dests(self, key) -> list:
        return list(self.table[key].dests.values())

    def timeouts(self):
        return self._timeouts

    def daemons(self) -> list:
        return []

    def apply(self, ops) -> None:
        from lvsd.ipvs.backend import OpKind
        from lvsd.ipvs.model import ServiceEntry

        now = time.monotonic()
        for op in ops:
            k = op.kind
            if k in (OpKind.ADD_SERVICE, OpKind.EDIT_SERVICE):
                old = self.table.get(op.service.key)
                self.table[op.service.key] = ServiceEntry(op.service, old.dests if old else {})
            elif k is OpKind.DEL_SERVICE:
                self.table.pop(op.key, None)
            elif k in (OpKind.ADD_DEST, OpKind.EDIT_DEST):
                self.table[op.key].dests[op.dest.key] = op.dest
            elif k is OpKind.DEL_DEST:
                self.table[op.key].dests.pop(op.dest.key, None)
            self.applied.append((now, op))

    def close(self) -> None:
        pass


def latency_config(n: int, interval: float, port: int, flip_port: int):
    """n servers (10 per service) probed every interval, plus one 'flip' server on flip_port."""
    from lvsd.config.load import parse_config

    parts = [f'[daemon]\non_stop = "remove"\n[defaults]\nforward = "nat"\ncheck = {{ type = "tcp", interval = {interval}, timeout = 0.5, '
             f'rise = 1, fall = 1 }}\n']
    targets = addrs(n)
    for i in range(0, n, 10):
        parts.append(f'[[service]]\nname = "s{i // 10}"\nvip = "10.{i // 2500}.{(i // 10) % 250}.1:80"\n')
        for a in targets[i:i + 10]:
            parts.append(f'  [[service.server]]\n  address = "{a}"\n  port = {port}\n')
    parts.append('[[service]]\nname = "flip"\nvip = "10.200.0.1:80"\n'
                 f'check = {{ type = "tcp", interval = 0.05, timeout = 0.5, rise = 1, fall = 1 }}\n'
                 f'  [[service.server]]\n  address = "127.0.0.1"\n  port = {flip_port}\n')
    return parse_config("\n".join(parts))


def netlink_backend():
    """The real kernel (in the VM): NetlinkBackend whose apply() records when each op was done."""
    from lvsd.ipvs.netlink import NetlinkBackend

    class Timed(NetlinkBackend):
        applied: list[tuple[float, object]] = []

        def apply(self, ops) -> None:
            super().apply(ops)
            now = time.monotonic()
            self.applied.extend((now, op) for op in ops)

    return Timed()


def latency(n: int, interval: float, port: int, flips: int = 100, backend_name: str = "table") -> None:
    """Check verdict -> kernel write (Backend.apply) through the real Daemon, while n other
    targets are probed every interval: toggle one server's listener and time each transition."""
    import logging

    from lvsd.checks.manager import CheckManager
    from lvsd.daemon.daemon import Daemon

    logging.getLogger("lvsd").addHandler(logging.NullHandler())
    logging.getLogger("lvsd").propagate = False
    flip_port = port + 1
    cfg = latency_config(n, interval, port, flip_port)
    backend = _TableBackend() if backend_name == "table" else netlink_backend()
    lat: list[float] = []
    to_change: list[float] = []

    class NoHA:
        def __init__(self, *a: object) -> None: ...
        async def start(self) -> None: ...
        async def reload(self, c: object) -> None: ...
        async def stop(self, on_stop: str) -> None: ...
        def status(self) -> dict:
            return {}

    with Listener(port, False) as lst:
        async def main() -> None:
            d = Daemon(cfg, backend, checks_factory=CheckManager, ha_factory=NoHA, api=False, install_signals=False)
            runner = asyncio.get_running_loop().create_task(d.run())
            await asyncio.wait_for(d.running.wait(), 30)
            m = d.checks
            probe = next(p for p in m.probes.values() if p.key[2] == flip_port)
            verdicts: list[float] = []
            causes: list[float] = []
            orig_done = probe.checker.done

            def done(ok, detail, weight):
                verdicts.append(time.monotonic())
                orig_done(ok, detail, weight)

            probe.checker.done = done
            orig_change = d._on_health

            def on_health(sid, h):
                if sid[0] == "flip":
                    causes.append(verdicts[-1])
                    to_change.append(time.monotonic() - verdicts[-1])
                orig_change(sid, h)

            m.on_change = on_health
            ls = None
            lags: list[float] = []

            async def lag_monitor() -> None:
                # how late a 10 ms sleep wakes up: the event loop's own latency in this run
                lp = asyncio.get_running_loop()
                while True:
                    t = lp.time()
                    await asyncio.sleep(0.01)
                    lags.append(lp.time() - t - 0.01)

            mon = asyncio.get_running_loop().create_task(lag_monitor())
            await asyncio.sleep(1.0)
            c0, n0, t0 = cpu_self(), lst.count(), time.monotonic()
            for _i in range(flips):
                mark = len(backend.applied)
                if ls is None:
                    ls = socket.socket()
                    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    ls.bind(("127.0.0.1", flip_port))
                    ls.listen(64)
                else:
                    ls.close()
                    ls = None
                for _ in range(400):
                    await asyncio.sleep(0.005)
                    hit = [t for t, op in backend.applied[mark:] if op.dest is not None and op.dest.key.port == flip_port]
                    if hit:
                        lat.append(hit[0] - causes[-1])
                        break
                else:
                    raise SystemExit("no kernel change within 2 s")
            c1, n1, t1 = cpu_self(), lst.count(), time.monotonic()
            print(f"background: {(n1 - n0) / (t1 - t0):.0f} checks/s, daemon+checks cpu {100 * (c1 - c0) / (t1 - t0):.0f}% of a core")
            mon.cancel()
            lags.sort()
            print(f"event-loop lag (10 ms sleep wakes late by): p50 {lags[len(lags) // 2] * 1000:.2f} ms  "
                  f"p99 {lags[int(len(lags) * 0.99)] * 1000:.2f} ms")
            with open("/proc/pressure/cpu") as f:
                print("cpu pressure:", f.readline().strip())
            st = d.stats
            nrec = sum(st.reconciles.values())
            print(f"daemon: {nrec} reconciles, mean {1000 * st.reconcile_seconds / max(1, nrec):.2f} ms each")
            d.request_stop()
            await runner

        asyncio.run(main())
    for name, xs in (("verdict -> on_change", to_change), ("verdict -> Backend.apply", lat)):
        xs.sort()
        p50 = xs[len(xs) // 2] * 1000
        p99 = xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1000
        print(f"{name:26s} n={len(xs)}  p50 {p50:.2f} ms  p99 {p99:.2f} ms  max {xs[-1] * 1000:.2f} ms")
        if os.environ.get("BENCH_VERBOSE"):
            print("   ", " ".join(f"{x * 1000:.2f}" for x in xs[-10:]))


def loop_limit(rates: list[int], seconds: float, port: int, interval: float = 1.0, split: bool = False) -> None:
    """Where one event loop stops holding its checks: for each rate (checks/s, as N probes every
    ``interval``), the checks/s achieved against the nominal, the checker process's CPU, and how
    late a 10 ms sleep wakes (the loop lag a reconcile would see), p50/p99; rate 0 first, the
    host's own lag in the same run (other processes' load shows there too). ``split``: each rate
    again with the checks in a worker process and only the lag monitor here (row "N w")."""
    import logging

    from lvsd.checks import base, manager
    from lvsd.checks.manager import CheckManager

    logging.getLogger("lvsd").addHandler(logging.NullHandler())
    logging.getLogger("lvsd").propagate = False
    # the engine's own share of the lag, free of other processes' load: the CPU time (this
    # thread's, so time preempted by the host is not counted) of each callback the engine runs
    spans: list[float] = []

    def timed(fn):  # noqa: ANN001, ANN202
        def run(self):  # noqa: ANN001, ANN202
            t = time.thread_time()
            fn(self)
            spans.append(time.thread_time() - t)
        return run

    manager.Scheduler._tick = timed(manager.Scheduler._tick)  # type: ignore[method-assign]
    manager.Scheduler._drain = timed(manager.Scheduler._drain)  # type: ignore[method-assign]
    base.Poller.dispatch = timed(base.Poller.dispatch)  # type: ignore[method-assign]
    with Listener(port, False) as lst:
        print("lag: how late a 10 ms sleep wakes (wall clock, host load included); engine: CPU time of"
              " one engine callback (the part of the lag the check engine itself causes)")
        print(f"{'rate':>7} {'achieved':>9} {'cpu':>6} {'lag p50':>8} {'lag p99':>8} {'engine p99':>11} "
              f"{'max':>7}   load")
        for rate in [0, *rates]:
            n = int(rate * interval)
            cfg = make_config("tcp", addrs(n), port, interval, 1.0)

            async def main(cfg: object = cfg, n: int = n) -> tuple[float, float, list[float]]:
                m = CheckManager(lambda sid, h: None)
                if n:
                    await m.start(cfg)
                await asyncio.sleep(1.0 + interval)  # first runs and their spread
                lags: list[float] = []
                lp = asyncio.get_running_loop()
                c0, n0, t0 = cpu_self(), lst.count(), time.monotonic()
                spans.clear()
                while time.monotonic() - t0 < seconds:
                    t = lp.time()
                    await asyncio.sleep(0.01)
                    lags.append(lp.time() - t - 0.01)
                c1, n1, t1 = cpu_self(), lst.count(), time.monotonic()
                await m.stop()
                return (n1 - n0) / (t1 - t0), (c1 - c0) / (t1 - t0), sorted(lags)

            got, cpu, lags = asyncio.run(main())
            sp = sorted(spans) or [0.0]
            print(f"{rate:7d} {got:9.0f} {100 * cpu:5.0f}% {lags[len(lags) // 2] * 1000:7.2f}ms "
                  f"{lags[int(len(lags) * 0.99)] * 1000:7.2f}ms {sp[int(len(sp) * 0.99)] * 1000:9.2f}ms "
                  f"{sp[-1] * 1000:5.2f}ms   {os.getloadavg()[0]:.2f}", flush=True)
            if split and n:
                got, cpu, lags = _split_run(cfg, seconds, interval, lst)
                print(f"{str(rate) + ' w':>7} {got:9.0f} {100 * cpu:5.0f}% {lags[len(lags) // 2] * 1000:7.2f}ms "
                      f"{lags[int(len(lags) * 0.99)] * 1000:7.2f}ms {'':>11} {'':>7}   {os.getloadavg()[0]:.2f}",
                      flush=True)


def _split_worker(cfg: object, run_for: float, cpu: Value) -> None:  # type: ignore[valid-type]
    """The checks alone in a process of their own (what a check worker would run)."""
    from lvsd.checks.manager import CheckManager

    async def main() -> None:
        m = CheckManager(lambda sid, h: None)
        await m.start(cfg)
        await asyncio.sleep(run_for)
        await m.stop()

    asyncio.run(main())
    cpu.value = cpu_self()


def _split_run(cfg: object, seconds: float, interval: float, lst: Listener) -> tuple[float, float, list[float]]:
    """The same checks in a worker process; this process runs only the lag monitor (what the
    main loop of a sharded daemon would see). CPU: the worker's, averaged over its life."""
    warm = 1.0 + interval
    cpu = Value("d", 0.0, lock=False)
    t_start = time.monotonic()
    w = Process(target=_split_worker, args=(cfg, warm + seconds + 0.5, cpu))
    w.start()

    async def monitor() -> tuple[float, list[float]]:
        await asyncio.sleep(warm)
        lp = asyncio.get_running_loop()
        lags: list[float] = []
        n0, t0 = lst.count(), time.monotonic()
        while time.monotonic() - t0 < seconds:
            t = lp.time()
            await asyncio.sleep(0.01)
            lags.append(lp.time() - t - 0.01)
        return (lst.count() - n0) / (time.monotonic() - t0), sorted(lags)

    got, lags = asyncio.run(monitor())
    w.join()
    return got, cpu.value / (time.monotonic() - t_start), lags


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("lvsd", "keepalived", "compare", "latency", "loop"))
    ap.add_argument("--kind", choices=("tcp", "http", "https"), default="tcp")
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--port", type=int, default=18080)
    ap.add_argument("--flips", type=int, default=300,
                    help="latency: transitions timed (p99 of 100 is just the maximum)")
    ap.add_argument("--backend", choices=("table", "netlink"), default="table",
                    help="latency: dict stand-in (host) or the real kernel (VM; creates and removes services)")
    ap.add_argument("--split", action="store_true", help="loop: also run the checks in a worker process")
    ap.add_argument("--rates", default="5000,10000,20000,30000", help="loop: checks/s to try, comma-separated")
    a = ap.parse_args()
    if a.mode == "loop":
        loop_limit([int(x) for x in a.rates.split(",")], a.seconds, a.port, split=a.split)
        return
    if a.mode == "latency":
        latency(a.n, a.interval, a.port, flips=a.flips, backend_name=a.backend)
        return
    if a.kind == "https" and a.mode != "lvsd":
        raise SystemExit("--kind https: lvsd only (keepalived's SSL_GET is not set up by this bench)")
    res = {}
    if a.mode in ("lvsd", "compare"):
        cpu, checks = run_lvsd(a.kind, a.n, a.interval, a.seconds, a.port)
        res["lvsd"] = report("lvsd", a.kind, a.n, a.interval, a.seconds, cpu, checks)
    if a.mode in ("keepalived", "compare"):
        cpu, checks = run_keepalived(a.kind, a.n, a.interval, a.seconds, a.port + 2)
        res["keepalived"] = report("keepalived", a.kind, a.n, a.interval, a.seconds, cpu, checks)
    if len(res) == 2:
        print(f"ratio lvsd/keepalived ({a.kind}): {res['lvsd'] / res['keepalived']:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
