"""The abuse suite (issue 11): a real lvsd (memory backend) under hostile local users, check
targets, operators and hooks, with one server that dies while it happens. Each test states its
bound and measures it: a figure is printed (pytest -s shows it), the assertion is the bound.
Bounds are generous for a loaded 2-core machine: they catch "never", not noise. A quiet death is
decided in about 0.6 s (interval 0.2 s, fall 3).

Run: python -m pytest tests/abuse (part of .ci/run); the full 10,000-server scrape flood figure
is tests/bench/scrape_flood.py's.
"""

from __future__ import annotations

import resource
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from harness import PY, Lab, free_port, lab

#: a dead server is marked down within this, whatever else happens (quiet: ~0.6 s)
DOWN_BOUND = 10.0
#: ... and within this while a local user holds the listeners: five times the quiet figure
#: (measured 0.5-0.65 s; 3.4 s with the listeners' caps and descriptor reserve turned off)
EXHAUSTION_BOUND = 3.0


def _raise_own_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Hog(threading.Thread):
    """A local user keeping ``n`` connections open to a listener: each one lvsd closes is opened
    again at once, for as long as the test runs."""

    def __init__(self, family: int, where: object, n: int) -> None:
        super().__init__(daemon=True)
        self.family, self.where, self.n = family, where, n
        self.sel = selectors.DefaultSelector()
        self.stop = threading.Event()
        self.opened = 0

    def _open(self) -> None:
        s = socket.socket(self.family)
        s.setblocking(False)
        try:
            s.connect(self.where)  # type: ignore[arg-type]  # a path or an (address, port)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            s.close()
            return
        self.sel.register(s, selectors.EVENT_READ)
        self.opened += 1

    def run(self) -> None:
        while not self.stop.is_set():
            while len(self.sel.get_map()) < self.n and not self.stop.is_set():
                before = len(self.sel.get_map())
                self._open()
                if len(self.sel.get_map()) == before:
                    time.sleep(0.01)  # refused: the listener's backlog is full
                    break
            for key, _ in self.sel.select(0.05):  # readable: closed by lvsd (or an answer)
                self.sel.unregister(key.fileobj)
                key.fileobj.close()  # type: ignore[union-attr]
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]


@pytest.mark.parametrize("listener", ["control", "metrics"])
def test_descriptor_exhaustion_through_each_listener_while_a_server_dies(tmp_path: Path, listener: str) -> None:
    """Bound: while a local user keeps 3,000 connections open to the listener (each one lvsd
    closes is opened again at once; lvsd limited to 1,024 descriptors), the target is down within
    EXHAUSTION_BOUND and up again within DOWN_BOUND once revived, no healthy server is marked down for want of
    a descriptor, lvsctl status answers, and the exhaustion is logged in a few lines, not one per
    connection."""
    _raise_own_nofile()
    x = Lab(tmp_path, 20, bulk_interval="0.5s")
    orig = subprocess.Popen

    def popen(*a, **kw):  # type: ignore[no-untyped-def]  # lvsd with 1,024 descriptors
        if a and a[0][:3] == [PY, "-m", "lvsd.daemon.main"]:
            kw["preexec_fn"] = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
        return orig(*a, **kw)

    hog = None
    try:
        subprocess.Popen = popen  # type: ignore[misc]
        try:
            x.start()
        finally:
            subprocess.Popen = orig  # type: ignore[misc]
        if listener == "control":
            hog = Hog(socket.AF_UNIX, x.sock, 3000)
        else:
            hog = Hog(socket.AF_INET, ("127.0.0.1", x.metrics_port), 3000)
        hog.start()
        time.sleep(3)  # the hog at full strength, past lvsd's header timeout
        took = x.kill_target(DOWN_BOUND)
        print(f"\n{listener}: {hog.opened} connections opened by the hog; target down after {took:.3f}s "
              f"(bound {EXHAUSTION_BOUND}s)")
        assert took <= EXHAUSTION_BOUND
        x.revive_target(DOWN_BOUND)  # and a probe that passes still can (it needs a descriptor)
        time.sleep(2)  # the bulk's checks (every 0.5 s, fall 2) under the hog
        wrong = [ln for ln in x.log_text().splitlines() if " DOWN" in ln and Lab.TARGET not in ln]
        assert not wrong, f"healthy servers marked down: {wrong[:3]}"
        if listener == "metrics":
            assert x.get("/status", timeout=10).startswith(b"HTTP/1.0 200")  # lvsctl, during the hog
        hog.stop.set()
        hog.join(10)
        time.sleep(0.5)
        assert x.get("/status").startswith(b"HTTP/1.0 200")  # and the control socket answers again
        text = x.log_text()
        noisy = text.count("connections open, the cap") + text.count("descriptors within") + text.count("out of descriptors")
        assert "Traceback" not in text
        assert noisy <= 6, f"{noisy} exhaustion lines: throttling failed"
    finally:
        if hog is not None:
            hog.stop.set()
            hog.join(10)
        assert x.stop() == 0


def test_scrape_flood_does_not_slow_failure_detection(tmp_path: Path) -> None:
    """Bound: median detection under 4 scrapers in a loop <= max(1.5 x quiet, quiet + 0.5 s)
    (the 0.5 s absorbs the check's phase, up to one interval per probe). CI runs 2,000 servers;
    tests/bench/scrape_flood.py measures 10,000."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from scrape_flood import measure

    quiet, flood, cpu = measure(tmp_path, 2000, 4, 3)
    q, f = statistics.median(quiet), statistics.median(flood)
    print(f"\nquiet {q:.3f}s (cpu {cpu['quiet']:.0%}), flood {f:.3f}s (cpu {cpu['flood']:.0%}), ratio {f / q:.2f}")
    assert f <= max(1.5 * q, q + 0.5)


def test_reload_storm_while_a_server_dies(tmp_path: Path) -> None:
    """Bound: 200 SIGHUPs in 2 s, the target killed in the middle: down within DOWN_BOUND, lvsd
    alive and stopping with 0."""
    with lab(tmp_path, 200) as x:
        assert x.lvsd is not None
        took = None
        for i in range(200):
            x.lvsd.send_signal(signal.SIGHUP)
            if i == 100:
                assert x.target is not None
                x.target.kill()
                t0 = time.time()
            time.sleep(0.01)
        x.wait_for(lambda: bool(x.decisions("DOWN")), DOWN_BOUND, "the dead target was not marked down")
        took = x.decisions("DOWN")[-1] - t0
        print(f"\ntarget down after {took:.3f}s during the storm (bound {DOWN_BOUND}s)")
        assert took <= DOWN_BOUND and x.alive()
        assert x.get("/status").startswith(b"HTTP/1.0 200")


HOSTILE = r"""
import socket, sys, threading, time, os
kind, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port)); s.listen(512)
print("listening", flush=True)
def serve(c):
    try:
        if kind == "silent":
            time.sleep(3600)
        elif kind == "trickle":
            while True:
                c.send(b"H"); time.sleep(1)
        elif kind == "huge":
            c.recv(4096)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 104857600\r\n\r\n")
            chunk = b"x" * 65536
            for _ in range(1600):
                c.sendall(chunk)
        elif kind == "tls-garbage":
            c.sendall(os.urandom(4096)); time.sleep(3600)
    except OSError:
        pass
    finally:
        c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def test_hostile_check_targets_decide_within_their_timeout(tmp_path: Path) -> None:
    """Bound: a server that accepts and never answers, one that sends a byte a second, a 100 MB
    body (status 200: up, its body read only to max_body) and TLS garbage are each decided
    within 2 x (interval + timeout) + 3 s of lvsd's start-up (interval 0.5 s, timeout 1 s,
    fall/rise 1), and the target still dies within DOWN_BOUND."""
    kinds = {"silent": "http", "trickle": "http", "huge": "http", "tls-garbage": "https"}
    ports = {k: free_port() for k in kinds}
    procs = []
    extra = ""
    for i, (kind, ctype) in enumerate(kinds.items()):
        tls = ", verify = false" if ctype == "https" else ""
        p = subprocess.Popen([PY, "-c", HOSTILE, kind, str(ports[kind])], stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None and p.stdout.readline().strip() == "listening"
        procs.append(p)
        extra += (f'[[service]]\nname = "{kind}"\nvip = "10.254.0.{i + 1}:80"\n  [[service.server]]\n'
                  f'  address = "127.0.0.1"\n  port = {ports[kind]}\n  forward = "nat"\n'
                  f'  check = {{ type = "{ctype}", interval = "0.5s", timeout = "1s", fall = 1, rise = 1{tls} }}\n'
                  f'  notify_down = ["/bin/sh", "-c", "date +%s.%N >> {tmp_path}/decided-{kind}"]\n'
                  f'  notify_up = ["/bin/sh", "-c", "date +%s.%N >> {tmp_path}/decided-{kind}"]\n')
    bound = 2 * (0.5 + 1) + 3
    try:
        with lab(tmp_path, 20, extra=extra) as x:
            t0 = x.log_times("starting:")[0]  # checks start right after
            for kind in kinds:
                f = tmp_path / f"decided-{kind}"
                x.wait_for(lambda f=f: f.exists() and f.read_text().endswith("\n"), bound + 60, f"{kind} never decided")
                took = float(f.read_text().split()[0]) - t0
                assert took <= bound, f"{kind} decided after {took:.3f}s"
                print(f"\n{kind}: decided {took:.3f}s after start (bound {bound:g}s + start-up)")
            took = x.kill_target(DOWN_BOUND)
            assert took <= DOWN_BOUND
            assert "Traceback" not in x.log_text()
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_hooks_that_print_without_end_or_fork_and_hang(tmp_path: Path) -> None:
    """Bound: with a notify_down hook that prints without end and a notify_up hook that forks a
    child that hangs holding its output (hook_timeout 2 s), the target's deaths are still decided
    within DOWN_BOUND each, lvsd's RSS stays under 150 MB, and no hook process outlives its timeout."""
    x = Lab(tmp_path, 20)
    printer = tmp_path / "printer.sh"  # stamps the decision, then prints without end
    printer.write_text(f"#!/bin/sh\ndate +%s.%N >> {x.down}\nyes 'spam \033[2J'\n")
    forker = tmp_path / "forker.sh"  # stamps, then leaves a child holding its output
    forker.write_text(f"#!/bin/sh\ndate +%s.%N >> {x.up}\n(sleep 3600) &\necho forked\nexit 3\n")
    for f in (printer, forker):
        f.chmod(0o755)
    text = x.cfg.read_text()
    text = text.replace(f'notify_down = ["/bin/sh", "-c", "date +%s.%N >> {x.down}"]', f'notify_down = ["{printer}"]')
    text = text.replace(f'notify_up = ["/bin/sh", "-c", "date +%s.%N >> {x.up}"]', f'notify_up = ["{forker}"]')
    text = text.replace('hook_timeout = "5s"', 'hook_timeout = "2s"')
    x.cfg.write_text(text)
    try:
        x.start()
        assert x.lvsd is not None
        for _ in range(3):
            took = x.kill_target(DOWN_BOUND)
            print(f"\ntarget down after {took:.3f}s with hostile hooks (bound {DOWN_BOUND}s)")
            assert took <= DOWN_BOUND
            x.revive_target()
        time.sleep(2.5)  # every hook past its timeout
        rss = int(next(ln for ln in open(f"/proc/{x.lvsd.pid}/status") if ln.startswith("VmRSS")).split()[1]) // 1024
        print(f"lvsd RSS {rss} MB")
        assert rss < 150
        left = subprocess.run(["pgrep", "-f", f"{printer}|{forker}"], capture_output=True, text=True).stdout.split()
        assert not left, f"hook processes outlived their timeout: {left}"
        log = x.log_text()
        assert "killed after 2 s" in log and "\x1b" not in log
    finally:
        x.stop()
