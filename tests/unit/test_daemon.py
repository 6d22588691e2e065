"""The daemon on the memory backend: start/adopt/flush, reload (valid, invalid, no-op), resync
repairing outside edits, health transitions, failure retry, stop keep/remove, sd_notify on a
real unix datagram socket, real SIGHUP, and the control API through lvsctl."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import socket
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeChecks

from lvsd.cli import lvsctl
from lvsd.config import load_config
from lvsd.core.health import Health, ServerHealth
from lvsd.daemon.daemon import Daemon
from lvsd.daemon.notify import Notifier
from lvsd.ipvs.backend import IPVSError, Op, OpKind
from lvsd.ipvs.memory import MemoryBackend
from lvsd.ipvs.model import Destination, DestKey, Forward, Service, ServiceKey

WEB = ServiceKey.inet("tcp", "10.0.0.1", 80)
DNS = ServiceKey.inet("udp", "10.0.0.2", 53)
OTHER = ServiceKey.inet("tcp", "10.9.9.9", 25)  # never in any config: lvsd must not touch it
A = DestKey.of("192.168.0.1", 80)
B = DestKey.of("192.168.0.2", 80)
C = DestKey.of("192.168.0.3", 80)
TIMEOUT = 10.0


class CountingBackend(MemoryBackend):
    """The memory backend, recording every batch written (a "kernel write") and able to fail."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[Op]] = []
        self.fail_next = 0

    def apply(self, ops):  # type: ignore[override]
        ops = list(ops)
        if self.fail_next:
            self.fail_next -= 1
            raise IPVSError(ops[0], errno.ENOMEM)
        self.batches.append(ops)
        super().apply(ops)

    @property
    def ops(self) -> list[Op]:
        return [op for b in self.batches for op in b]


class FakeHA:
    def __init__(self, config: Any, backend: Any, on_role: Callable[[str], None]) -> None:
        self.on_role = on_role
        self.stopped_with: str | None = None

    async def start(self) -> None:
        self.on_role("master")

    async def reload(self, config: Any) -> None:
        pass

    async def stop(self, on_stop: str) -> None:
        self.stopped_with = on_stop

    def set_role(self, role: str) -> None:
        self.on_role(role)

    def status(self) -> dict:
        return {"mode": "external"}


CONFIG = """
[daemon]
on_start = "{on_start}"
on_stop = "{on_stop}"
resync = "{resync}"

[api]
socket = "{sock}"

[[service]]
name = "web"
vip = "10.0.0.1:80"
scheduler = "wrr"
  [[service.server]]
  address = "192.168.0.1"
  weight = 3
  forward = "nat"
  [[service.server]]
  address = "192.168.0.2"
  weight = 2
  forward = "nat"

[[service]]
name = "dns"
vip = "10.0.0.2:53"
protocol = "udp"
scheduler = "rr"
  [[service.server]]
  address = "192.168.0.1"
  port = 53
"""


def write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(textwrap.dedent(text))
    os.replace(tmp, path)


@pytest.fixture
def env(tmp_path: Path):
    FakeChecks.instances.clear()
    cfg = tmp_path / "lvsd.toml"
    sock = tmp_path / "lvsd.sock"

    def make(on_start: str = "adopt", on_stop: str = "keep", resync: str = "30s", extra: str = "", body: str | None = None):
        text = (body or CONFIG).format(on_start=on_start, on_stop=on_stop, resync=resync, sock=sock) + extra
        write(cfg, text)
        return cfg

    return make, cfg, sock, tmp_path


def run(coro, timeout: float = TIMEOUT):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def started(d: Daemon) -> asyncio.Task:
    task = asyncio.create_task(d.run())
    waiter = asyncio.create_task(d.running.wait())
    done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises what start() raised
        raise AssertionError("daemon exited during start")
    return task


async def finish(d: Daemon, task: asyncio.Task) -> int:
    d.request_stop()
    return await task


def daemon(cfg: Path, backend, **kw) -> Daemon:
    kw.setdefault("api", False)
    kw.setdefault("install_signals", False)
    kw.setdefault("checks_factory", FakeChecks)
    kw.setdefault("ha_factory", FakeHA)
    return Daemon(load_config(str(cfg)), backend, config_path=str(cfg), **kw)


def weights(backend, key=WEB) -> dict[str, int]:
    return {str(k): d.weight for k, d in backend.dump()[key].dests.items()}


# --- start -------------------------------------------------------------------------------------


def test_start_configures_an_empty_kernel(env) -> None:
    make, *_ = env
    b = CountingBackend()

    async def main():
        d = daemon(make(), b)
        t = await started(d)
        assert weights(b) == {"192.168.0.1:80": 3, "192.168.0.2:80": 2}
        assert b.dump()[WEB].service.scheduler == "wrr"
        assert b.dump()[WEB].dests[A].forward == Forward.MASQ
        assert weights(b, DNS) == {"192.168.0.1:53": 1}
        assert len(b.batches) == 1  # one batched write
        assert await finish(d, t) == 0

    run(main())


def test_start_adopts_the_running_table_and_leaves_other_services(env) -> None:
    make, *_ = env
    b = CountingBackend()
    b.apply(
        [
            Op.add_service(Service(WEB, "wrr")),
            Op.add_dest(WEB, Destination(A, Forward.MASQ, 3)),  # as configured
            Op.add_dest(WEB, Destination(C, Forward.MASQ, 1)),  # no longer configured
            Op.add_service(Service(OTHER, "rr")),
            Op.add_dest(OTHER, Destination(C, Forward.ROUTE, 1)),
        ]
    )
    other_before = b.dump()[OTHER]
    b.batches.clear()

    async def main():
        d = daemon(make(), b)
        t = await started(d)
        ops = b.ops
        # A untouched (never deleted or re-added), B added, C removed, OTHER left alone
        assert not [o for o in ops if o.dest is not None and o.dest.key == A]
        assert not [o for o in ops if o.kind is OpKind.DEL_SERVICE]
        assert {(o.kind, o.dest.key) for o in ops if o.key == WEB} == {(OpKind.ADD_DEST, B), (OpKind.DEL_DEST, C)}
        assert b.dump()[OTHER] == other_before
        await finish(d, t)

    run(main())


def test_unknown_adopted_server_keeps_its_kernel_weight_until_checks_decide(env) -> None:
    make, *_ = env
    extra = '\n[defaults]\ncheck = {{ type = "tcp" }}\n'
    body = CONFIG.replace("[api]", extra + "\n[api]")
    b = CountingBackend()
    b.apply([Op.add_service(Service(WEB, "wrr")), Op.add_dest(WEB, Destination(A, Forward.MASQ, 7))])

    async def main():
        d = daemon(make(body=body), b)
        t = await started(d)
        # A adopted at the kernel's weight; B (new, unchecked) gets no traffic yet; dns absent
        assert weights(b) == {"192.168.0.1:80": 7}
        checks = FakeChecks.instances[-1]
        checks.set(("web", B), ServerHealth(Health.UP, reason="connected"))
        assert await d.wait_reconciled()
        assert weights(b) == {"192.168.0.1:80": 7, "192.168.0.2:80": 2}
        checks.set(("web", A), ServerHealth(Health.UP))
        assert await d.wait_reconciled()
        assert weights(b) == {"192.168.0.1:80": 3, "192.168.0.2:80": 2}
        # a health transition re-reads and rewrites its own service only
        n = len(b.batches)
        checks.set(("web", A), ServerHealth(Health.DOWN, reason="refused"))
        assert await d.wait_reconciled()
        assert weights(b) == {"192.168.0.2:80": 2}
        assert [(o.kind, o.key, o.dest.key) for o in b.ops[-1:]] == [(OpKind.DEL_DEST, WEB, A)]
        assert len(b.batches) == n + 1
        await finish(d, t)

    run(main())


def test_on_start_flush_clears_managed_services_first(env) -> None:
    make, *_ = env
    b = CountingBackend()
    b.apply(
        [
            Op.add_service(Service(WEB, "wrr")),
            Op.add_dest(WEB, Destination(A, Forward.MASQ, 3)),
            Op.add_service(Service(OTHER, "rr")),
        ]
    )
    b.batches.clear()

    async def main():
        d = daemon(make(on_start="flush"), b)
        t = await started(d)
        assert b.batches[0] == [Op.del_service(WEB)]
        assert OTHER in b.dump()
        assert weights(b) == {"192.168.0.1:80": 3, "192.168.0.2:80": 2}
        await finish(d, t)

    run(main())


def test_state_file_deletes_services_removed_from_the_config_while_stopped(env, caplog) -> None:
    """daemon.state_file: run with web+dns, stop (keep), drop dns from the file, start again:
    dns is deleted; a service never recorded (OTHER) is left, as without a record."""
    make, cfg, _sock, tmp = env
    state = tmp / "state" / "managed.json"  # its directory is made on the first write
    body = CONFIG.replace('resync = "{resync}"', f'resync = "{{resync}}"\nstate_file = "{state}"')
    b = CountingBackend()
    b.apply([Op.add_service(Service(OTHER, "rr"))])

    async def first():
        d = daemon(make(body=body), b)
        t = await started(d)
        assert json.loads(state.read_text())["services"] == [
            [k.af, k.protocol, k.addr, k.port, k.fwmark] for k in sorted({WEB, DNS})
        ]
        await finish(d, t)

    run(first())
    assert {WEB, DNS, OTHER} <= set(b.dump())
    no_dns = body[: body.index("[[service]]\nname = \"dns\"")]
    b.batches.clear()

    async def second():
        d = daemon(make(body=no_dns), b)
        t = await started(d)
        assert set(b.dump()) == {WEB, OTHER}
        assert [o for o in b.ops if o.kind is OpKind.DEL_SERVICE] == [Op.del_service(DNS)]
        # recorded again without dns once it is gone
        assert json.loads(state.read_text())["services"] == [[WEB.af, WEB.protocol, WEB.addr, WEB.port, 0]]
        await finish(d, t)

    with caplog.at_level("INFO", logger="lvsd"):
        run(second())
    assert "removing 1 services the config no longer names (managed before): udp 10.0.0.2:53" in caplog.text


def test_state_file_unreadable_or_unwritable_deletes_nothing_and_runs_on(env, caplog) -> None:
    make, cfg, _sock, tmp = env
    bad = tmp / "managed.json"
    bad.write_text('{"services": [[2, 17, "10.0.0.2", 53]]}')  # a key with a field missing
    body = CONFIG.replace('resync = "{resync}"', f'resync = "{{resync}}"\nstate_file = "{bad}"')
    body = body[: body.index("[[service]]\nname = \"dns\"")]  # dns not configured
    b = CountingBackend()
    b.apply([Op.add_service(Service(DNS, "rr"))])

    async def main():
        d = daemon(make(body=body), b)
        t = await started(d)
        assert DNS in b.dump()  # not deleted on the strength of an unreadable record
        await finish(d, t)

    with caplog.at_level("WARNING", logger="lvsd"):
        run(main())
    assert "daemon.state_file" in caplog.text and "unreadable" in caplog.text
    # a record that cannot be written: logged once, the daemon runs on
    caplog.clear()
    blocked = tmp / "file-not-dir"
    blocked.write_text("")
    body2 = CONFIG.replace('resync = "{resync}"', f'resync = "{{resync}}"\nstate_file = "{blocked}/managed.json"')

    async def unwritable():
        d = daemon(make(body=body2), b)
        t = await started(d)
        assert WEB in b.dump()
        await finish(d, t)

    with caplog.at_level("WARNING", logger="lvsd"):
        run(unwritable())
    assert caplog.text.count("cannot write daemon.state_file") == 1


# --- reload ------------------------------------------------------------------------------------


def test_reload_valid_changes_only_what_changed(env) -> None:
    make, cfg, *_ = env
    b = CountingBackend()

    async def main():
        d = daemon(make(), b)
        t = await started(d)
        b.batches.clear()
        # web: B's weight 2 -> 5, add C; dns removed; new service "mail"
        text = CONFIG.format(on_start="adopt", on_stop="keep", resync="30s", sock="/nonexistent/s")
        text = text.replace("weight = 2", "weight = 5").split("[[service]]\nname = \"dns\"")[0]
        text += textwrap.dedent(
            """
              [[service.server]]
              address = "192.168.0.3"
              forward = "nat"

            [[service]]
            name = "mail"
            vip = "10.0.0.3:25"
              [[service.server]]
              address = "192.168.0.1"
            """
        )
        write(cfg, text)
        ok, msg = await d.request_reload()
        assert ok, msg
        kinds = [(o.kind, o.key, o.dest.key if o.dest else None) for o in b.ops]
        mail = ServiceKey.inet("tcp", "10.0.0.3", 25)
        assert sorted(kinds, key=str) == sorted(
            [
                (OpKind.ADD_SERVICE, mail, None),
                (OpKind.EDIT_DEST, WEB, B),
                (OpKind.ADD_DEST, WEB, C),
                (OpKind.ADD_DEST, mail, DestKey.of("192.168.0.1", 25)),  # port = the VIP's
                (OpKind.DEL_SERVICE, DNS, None),
            ],
            key=str,
        )
        assert len(b.batches) == 1
        assert weights(b) == {"192.168.0.1:80": 3, "192.168.0.2:80": 5, "192.168.0.3:80": 1}
        assert DNS not in b.dump()
        assert FakeChecks.instances == []  # no checks configured: no manager was started
        await finish(d, t)

    run(main())


def test_reload_invalid_keeps_running_config_and_writes_nothing(env, tmp_path) -> None:
    make, cfg, *_ = env
    b = CountingBackend()
    nsock = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(nsock))

    async def main():
        d = daemon(make(), b, notifier=Notifier(str(nsock)))
        t = await started(d)
        before = b.dump()
        b.batches.clear()
        write(cfg, CONFIG.format(on_start="adopt", on_stop="keep", resync="30s", sock="x").replace("weight = 2", "weight = -1"))
        ok, msg = await d.request_reload()
        assert not ok
        assert "service[web].server[1].weight" in msg and "running config" in msg
        assert b.batches == [] and b.dump() == before
        assert d.config.services[0].servers[1].dest.weight == 2
        assert d.stats.last_reload_error == msg
        # a file that cannot be read or parsed at all is refused the same way
        write(cfg, "[[service]\n")
        ok, msg = await d.request_reload()
        assert not ok and b.batches == []
        await finish(d, t)

    run(main())
    listener.setblocking(False)
    msgs = []
    while True:
        try:
            msgs.append(listener.recv(4096).decode())
        except BlockingIOError:
            break
    listener.close()
    failed = [m for m in msgs if "reload failed" in m]
    assert failed and all("READY=1" in m for m in failed)
    assert "weight" in failed[0] and "\n" not in failed[0].split("STATUS=", 1)[1]


def test_noop_reload_writes_nothing(env) -> None:
    make, cfg, *_ = env
    b = CountingBackend()

    async def main():
        d = daemon(make(), b)
        t = await started(d)
        b.batches.clear()
        cfg.write_text(cfg.read_text() + "\n# only a comment changed\n")
        ok, msg = await d.request_reload()
        assert ok and msg == "unchanged"
        assert b.batches == []
        assert d.stats.reloads["noop"] == 1
        await finish(d, t)

    run(main())


def test_reload_keeps_unchanged_servers_even_if_other_keys_change(env) -> None:
    make, cfg, *_ = env
    b = CountingBackend()

    async def main():
        d = daemon(make(), b)
        t = await started(d)
        b.batches.clear()
        write(cfg, cfg.read_text().replace('resync = "30s"', 'resync = "1m"'))
        ok, _ = await d.request_reload()
        assert ok and b.batches == []
        assert d._runner.max_interval == 60
        await finish(d, t)

    run(main())


def test_sighup_reloads(env) -> None:
    make, cfg, *_ = env
    b = CountingBackend()

    async def main():
        d = daemon(make(), b, install_signals=True)
        t = await started(d)
        write(cfg, cfg.read_text().replace("weight = 3", "weight = 4"))
        waiter = asyncio.ensure_future(d.wait_reconciled())
        os.kill(os.getpid(), signal.SIGHUP)
        assert await waiter
        assert weights(b)["192.168.0.1:80"] == 4
        os.kill(os.getpid(), signal.SIGTERM)
        assert await t == 0

    run(main())


# --- resync, failures --------------------------------------------------------------------------


def test_resync_repairs_outside_edits_but_not_unmanaged_services(env) -> None:
    make, *_ = env
    b = CountingBackend()

    async def main():
        d = daemon(make(resync="100ms"), b)
        t = await started(d)
        want = b.dump()
        # someone runs ipvsadm behind lvsd's back
        b.apply(
            [
                Op.edit_dest(WEB, Destination(A, Forward.MASQ, 9)),
                Op.del_dest(WEB, B),
                Op.add_dest(WEB, Destination(C, Forward.ROUTE, 1)),
                Op.edit_service(Service(DNS, "wlc")),
                Op.add_service(Service(OTHER, "rr")),
            ]
        )
        assert await d.wait_reconciled()
        after = b.dump()
        assert after[WEB] == want[WEB] and after[DNS] == want[DNS]
        assert OTHER in after
        assert d.stats.repairs == 1
        assert await d.wait_reconciled()  # the next resync finds nothing to do
        assert d.stats.repairs == 1
        await finish(d, t)

    run(main())


def test_failed_apply_is_retried_with_backoff_and_never_ends_the_loop(env, caplog) -> None:
    make, *_ = env
    b = CountingBackend()
    b.fail_next = 2

    async def main():
        d = daemon(make(), b)
        t = await started(d)  # the first apply fails: the daemon still starts
        assert b.dump() == {}
        assert not await d.wait_reconciled()  # retry 1 fails
        assert await d.wait_reconciled()  # retry 2 succeeds
        assert weights(b) == {"192.168.0.1:80": 3, "192.168.0.2:80": 2}
        assert d.stats.reconciles["error"] == 2
        await finish(d, t)

    with caplog.at_level("INFO", logger="lvsd"):
        run(main())
    # the whole batch was refused (not one op of it): one line per failed pass, no op blamed
    failed = [r.getMessage() for r in caplog.records if "reconcile failed" in r.getMessage()]
    assert len(failed) == 2 and "ENOMEM" in failed[0]
    assert not d_refused(caplog)


def d_refused(caplog) -> list[str]:
    """The log lines naming one refused op."""
    return [r.getMessage() for r in caplog.records if "kernel refused" in r.getMessage()]


# --- stop --------------------------------------------------------------------------------------


@pytest.mark.parametrize("on_stop", ["keep", "remove"])
def test_stop(env, on_stop: str) -> None:
    make, *_ = env
    b = CountingBackend()
    b.apply([Op.add_service(Service(OTHER, "rr"))])

    async def main():
        d = daemon(make(on_stop=on_stop), b)
        t = await started(d)
        full = b.dump()
        assert await finish(d, t) == 0
        assert FakeChecks.instances == [] or FakeChecks.instances[-1].stopped
        assert d.ha.stopped_with == on_stop
        return full

    full = run(main())
    after = b.dump()
    if on_stop == "keep":
        assert after == full
    else:
        assert set(after) == {OTHER}


# --- sd_notify ---------------------------------------------------------------------------------


def test_sd_notify_messages_on_a_real_socket(env, tmp_path, monkeypatch) -> None:
    make, cfg, *_ = env
    nsock = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(nsock))
    listener.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(nsock))
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # ping every 50 ms
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    b = CountingBackend()
    got: list[str] = []

    async def recv_until(pred) -> str:
        loop = asyncio.get_running_loop()
        while True:
            m = (await loop.sock_recv(listener, 4096)).decode()
            got.append(m)
            if pred(m):
                return m

    async def main():
        d = daemon(make(), b, notifier=Notifier())
        t = await started(d)
        ready = await recv_until(lambda m: "READY=1" in m)
        assert "STATUS=2 services, 3 servers" in ready
        await recv_until(lambda m: m == "WATCHDOG=1")
        await recv_until(lambda m: m == "WATCHDOG=1")
        write(cfg, cfg.read_text().replace("weight = 3", "weight = 4"))
        ok, _ = await d.request_reload()
        assert ok
        rel = await recv_until(lambda m: "RELOADING=1" in m)
        fields = dict(line.split("=", 1) for line in rel.split("\n"))
        assert 0 < int(fields["MONOTONIC_USEC"]) <= __import__("time").clock_gettime_ns(1) // 1000
        await recv_until(lambda m: "READY=1" in m)
        d.request_stop()
        stop = await recv_until(lambda m: "STOPPING=1" in m)
        assert "STATUS=stopping" in stop
        assert await t == 0

    run(main())
    listener.close()


def test_notify_abstract_socket_and_absent_socket(monkeypatch) -> None:
    name = f"lvsd-test-{os.getpid()}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    s.settimeout(2)
    n = Notifier("@" + name)
    assert n.ready("multi\nline status")
    assert s.recv(100) == b"READY=1\nSTATUS=multi line status"
    s.close()
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not Notifier().ready()


# --- control API and lvsctl --------------------------------------------------------------------


def test_control_api_with_lvsctl(env, capsys) -> None:
    make, cfg, sock, _ = env
    b = CountingBackend()

    async def ctl(*args: str) -> tuple[int, str, str]:
        rc = await asyncio.to_thread(lvsctl.main, ["-s", str(sock), *args])
        out, err = capsys.readouterr()
        return rc, out, err

    async def main():
        d = daemon(make(), b, api=True)
        t = await started(d)
        rc, out, _ = await ctl("status")
        assert rc == 0 and "2 services, 3 servers" in out and "role:     master" in out
        rc, out, _ = await ctl("--json", "services")
        data = json.loads(out)
        web = data["services"][0]
        assert web["name"] == "web" and web["in_kernel"]
        assert [(s["server"], s["weight"], s["kernel_weight"], s["health"]) for s in web["servers"]] == [
            ("192.168.0.1:80", 3, 3, "up"),
            ("192.168.0.2:80", 2, 2, "up"),
        ]
        rc, out, _ = await ctl("services")
        assert rc == 0 and "192.168.0.2:80" in out
        rc, out, _ = await ctl("role", "backup")
        assert rc == 0 and d.role == "backup"
        write(cfg, cfg.read_text().replace("weight = 3", "weight = 6"))
        rc, out, _ = await ctl("reload")
        assert rc == 0 and "reloaded" in out
        assert weights(b)["192.168.0.1:80"] == 6
        write(cfg, cfg.read_text().replace("weight = 6", 'weight = "six"'))
        rc, out, err = await ctl("reload")
        assert rc == 1 and "server[0].weight" in err
        rc, out, _ = await ctl("metrics")
        assert rc == 0
        assert 'lvsd_ipvs_server_weight{service="web",server="192.168.0.1:80"} 6' in out
        assert 'lvsd_reloads_total{result="error"} 1' in out
        assert 'lvsd_role{role="backup"} 1' in out
        assert "# TYPE lvsd_kernel_ops_total counter" in out
        await finish(d, t)
        assert not sock.exists()
        rc, _, err = await ctl("status")
        assert rc == 3 and "cannot reach lvsd" in err

    run(main())


def test_api_refuses_a_live_socket_and_replaces_a_stale_one(env) -> None:
    from lvsd.daemon.api import APIError, _bind_unix

    make, cfg, sock, _ = env
    live = _bind_unix(str(sock), 0o600)
    with pytest.raises(APIError, match="another daemon"):
        _bind_unix(str(sock), 0o600)
    live.close()  # the file stays: a stale socket from a crash
    s = _bind_unix(str(sock), 0o600)
    assert oct(os.stat(sock).st_mode & 0o777) == "0o600"
    s.close()


# --- hooks and quorum --------------------------------------------------------------------------


def test_server_hooks_quorum_and_sorry_server(env, tmp_path) -> None:
    make, *_ = env
    events = tmp_path / "events"
    hook = f'["/bin/sh", "-c", "echo $LVSD_EVENT $LVSD_SERVICE $LVSD_SERVER >> {events}"]'
    body = CONFIG.replace(
        'scheduler = "wrr"',
        'scheduler = "wrr"\nquorum = 3\nhysteresis = 1\n'
        'sorry_server = {{ address = "192.168.9.9", forward = "nat" }}\n'
        f"quorum_down = {hook.replace('{', '{{').replace('}', '}}')}\n"
        f"quorum_up = {hook.replace('{', '{{').replace('}', '}}')}\n"
        f"notify_up = {hook.replace('{', '{{').replace('}', '}}')}\n"
        f"notify_down = {hook.replace('{', '{{').replace('}', '}}')}\n"
        'check = {{ type = "tcp" }}',
        1,
    )
    b = CountingBackend()
    sorry = "192.168.9.9:80"

    async def hooks_done(d: Daemon) -> list[str]:
        await asyncio.gather(*d.hooks.tasks)
        return sorted(events.read_text().splitlines()) if events.exists() else []

    async def main():
        d = daemon(make(body=body), b)
        t = await started(d)
        checks = FakeChecks.instances[-1]
        assert weights(b) == {}  # nothing checked yet: no server, no sorry server, no hook
        checks.set(("web", A), ServerHealth(Health.UP))
        checks.set(("web", B), ServerHealth(Health.UP))
        assert await d.wait_reconciled()
        assert weights(b) == {"192.168.0.1:80": 3, "192.168.0.2:80": 2}
        assert await hooks_done(d) == ["up web 192.168.0.1:80", "up web 192.168.0.2:80"]
        events.unlink()
        checks.set(("web", A), ServerHealth(Health.DOWN, reason="refused"))  # 2 < 3: below quorum
        assert await d.wait_reconciled()
        assert weights(b) == {"192.168.0.2:80": 2, sorry: 1}
        assert d.quorum["web"] is True
        assert await hooks_done(d) == ["down web 192.168.0.1:80", "quorum_down web"]
        events.unlink()
        checks.set(("web", A), ServerHealth(Health.UP, weight=1))  # 3: not yet quorum + hysteresis
        assert await d.wait_reconciled()
        assert weights(b) == {"192.168.0.1:80": 1, "192.168.0.2:80": 2, sorry: 1}
        checks.set(("web", A), ServerHealth(Health.UP))  # 5 >= 4: quorum regained, sorry out
        assert await d.wait_reconciled()
        assert weights(b) == {"192.168.0.1:80": 3, "192.168.0.2:80": 2}
        assert await hooks_done(d) == ["quorum_up web", "up web 192.168.0.1:80"]
        await finish(d, t)

    run(main())


def test_metrics_on_tcp_serve_only_metrics(env) -> None:
    import urllib.error
    import urllib.request

    make, cfg, sock, _ = env
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    b = CountingBackend()

    def get(path: str, method: str = "GET") -> tuple[int, str]:
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=b"{}" if method == "POST" else None)
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, ""

    async def main():
        d = daemon(make(extra=f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n'), b, api=True)
        t = await started(d)
        code, text = await asyncio.to_thread(get, "/metrics")
        assert code == 200 and 'lvsd_server_health{service="web",server="192.168.0.1:80"} 1' in text
        assert (await asyncio.to_thread(get, "/reload", "POST"))[0] == 404
        assert (await asyncio.to_thread(get, "/status"))[0] == 404
        await finish(d, t)

    run(main())
