"""A config that would remove every managed service (an emptied or truncated file) is refused at
reload and at start unless it says ``[daemon] allow_empty = true``; an unexpected exception while
loading a reload is logged once and the running config stays (memory backend)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from lvsd.config import load_config, parse_config
from lvsd.config.load import refuse_empty
from lvsd.daemon import daemon as daemon_mod
from lvsd.daemon.daemon import Daemon, StartError
from lvsd.ipvs.memory import MemoryBackend
from lvsd.ipvs.model import ServiceKey

WEB = ServiceKey.inet("tcp", "10.0.0.1", 80)
DNS = ServiceKey.inet("udp", "10.0.0.2", 53)
HEAD = '[daemon]\nstate_file = "{state}"\n'
SERVICES = """
[[service]]
name = "web"
vip = "10.0.0.1:80"
  [[service.server]]
  address = "192.168.0.1"
[[service]]
name = "dns"
vip = "10.0.0.2:53"
protocol = "udp"
  [[service.server]]
  address = "192.168.0.1"
"""


class FakeHA:
    """No HA: the role is master at once."""

    def __init__(self, config: Any, backend: Any, on_role: Any) -> None:
        self.on_role = on_role

    async def start(self) -> None:
        self.on_role("master")

    async def reload(self, config: Any) -> None:
        pass

    async def stop(self, on_stop: str) -> None:
        pass


def daemon(cfg: Path, backend: MemoryBackend) -> Daemon:
    return Daemon(
        load_config(str(cfg)), backend, config_path=str(cfg), api=False, install_signals=False, ha_factory=FakeHA
    )


async def started(d: Daemon) -> asyncio.Task[int]:
    task = asyncio.create_task(d.run())
    waiter = asyncio.create_task(d.running.wait())
    done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        waiter.cancel()
        task.result()
        raise AssertionError("daemon exited during start")
    return task


async def finish(d: Daemon, task: asyncio.Task[int]) -> int:
    d.request_stop()
    return await task


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))


#: every way a file can end up meaning "no service": empty, blank, a comment, only [daemon], a cut
#: in the middle of a line that still parses, a BOM
EMPTIES = ["", "\n", "# lvsd\n", "[daemon]\n", '[daemon]\nlog_level = "info"\n', "\ufeff", "[api]\n", "[defaults]\n"]


@pytest.mark.parametrize("text", EMPTIES, ids=repr)
def test_empty_config_reload_is_refused_and_keeps_running_config(tmp_path: Path, text: str) -> None:
    cfg = tmp_path / "lvsd.toml"
    cfg.write_text(HEAD.format(state=tmp_path / "s.json") + SERVICES)
    b = MemoryBackend()

    async def main() -> None:
        d = daemon(cfg, b)
        t = await started(d)
        before = b.dump()
        cfg.write_text(text)
        ok, msg = await d.request_reload()
        assert not ok
        assert msg.startswith("reload refused, keeping the running config: ")
        assert "no [[service]]" in msg and "allow_empty = true" in msg and "\n" not in msg
        assert b.dump() == before and len(d.config.services) == 2
        assert d.stats.reloads["error"] == 1
        # said explicitly: applied, every managed service goes
        cfg.write_text(text.lstrip("\ufeff") + "\n[daemon]\nallow_empty = true\n" if "[daemon]" not in text else text + "allow_empty = true\n")
        ok, msg = await d.request_reload()
        assert ok, msg
        assert set(b.dump()) == set()
        await finish(d, t)

    run(main())


def test_start_with_an_empty_config_refuses_to_delete_recorded_services(tmp_path: Path) -> None:
    """At start, "managed" is what the state file records and the kernel still has."""
    state = tmp_path / "s.json"
    cfg = tmp_path / "lvsd.toml"
    cfg.write_text(HEAD.format(state=state) + SERVICES)
    b = MemoryBackend()

    async def first() -> None:
        d = daemon(cfg, b)
        await finish(d, await started(d))

    run(first())
    assert json.loads(state.read_text())["services"]
    cfg.write_text(HEAD.format(state=state))

    async def second() -> None:
        d = daemon(cfg, b)
        with pytest.raises(StartError, match=r"no \[\[service\]\]: applying it would remove every managed service \(2\)"):
            await started(d)

    run(second())
    assert set(b.dump()) == {WEB, DNS}
    cfg.write_text(HEAD.format(state=state) + "allow_empty = true\n")
    run(first())
    assert set(b.dump()) == set()


def test_fresh_start_with_no_service_and_nothing_recorded_is_fine(tmp_path: Path) -> None:
    """The Debian package's shipped config: no service, nothing recorded, nothing in the kernel."""
    cfg = tmp_path / "lvsd.toml"
    cfg.write_text(HEAD.format(state=tmp_path / "s.json"))
    b = MemoryBackend()

    async def main() -> None:
        d = daemon(cfg, b)
        assert await finish(d, await started(d)) == 0

    run(main())


def test_refuse_empty_is_pure() -> None:
    empty = parse_config("")
    assert refuse_empty(empty, set()) is None
    assert refuse_empty(empty, {WEB}) == (
        "<string>: no [[service]]: applying it would remove every managed service (1); "
        "set [daemon] allow_empty = true if that is meant"
    )
    assert refuse_empty(parse_config("[daemon]\nallow_empty = true"), {WEB}) is None
    assert refuse_empty(parse_config('[[service]]\nvip = "10.0.0.9:80"'), {WEB}) is None


def test_unexpected_exception_in_reload_is_logged_once_and_keeps_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tmp_path / "lvsd.toml"
    cfg.write_text(HEAD.format(state="") + SERVICES)
    b = MemoryBackend()

    def broken(path: str) -> Any:
        raise RuntimeError("a loader bug")

    async def main() -> None:
        d = daemon(cfg, b)
        t = await started(d)
        before = b.dump()
        monkeypatch.setattr(daemon_mod, "load", broken)
        ok, msg = await d.request_reload()
        assert not ok and msg.endswith("RuntimeError: a loader bug") and "\n" not in msg
        assert b.dump() == before and d.state == "running"
        monkeypatch.undo()
        ok, msg = await d.request_reload()
        assert ok, msg
        assert await finish(d, t) == 0

    with caplog.at_level("ERROR", logger="lvsd"):
        run(main())
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and "unexpected error" in tracebacks[0].getMessage()


def test_unexpected_exception_past_the_loader_keeps_the_daemon_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug while deciding what a valid new file changes: logged once, the reload answers a
    failure, the loop and the running config go on (a later reload works)."""
    cfg = tmp_path / "lvsd.toml"
    cfg.write_text(HEAD.format(state="") + SERVICES)
    b = MemoryBackend()

    def broken(old: Any, new: Any) -> str:
        raise KeyError("a planner bug")

    async def main() -> None:
        d = daemon(cfg, b)
        t = await started(d)
        before = b.dump()
        cfg.write_text(HEAD.format(state="") + SERVICES.replace("10.0.0.2:53", "10.0.0.3:53"))
        monkeypatch.setattr(daemon_mod, "summarize_change", broken)
        ok, msg = await d.request_reload()
        assert not ok and msg == "reload failed: KeyError: 'a planner bug'"
        assert b.dump() == before and {s.name for s in d.config.services} == {"web", "dns"}
        assert not t.done()
        monkeypatch.undo()
        ok, msg = await d.request_reload()
        assert ok, msg
        assert DNS not in b.dump()
        assert await finish(d, t) == 0

    with caplog.at_level("ERROR", logger="lvsd"):
        run(main())
    assert len([r for r in caplog.records if r.exc_info]) == 1


def test_start_refusal_exits_ex_config(tmp_path: Path) -> None:
    """lvsd exits 78 (EX_CONFIG) on an empty file that would remove recorded services, so systemd
    (RestartPreventExitStatus=78) does not restart into the same refusal."""
    from lvsd.daemon.main import EX_CONFIG
    from lvsd.daemon.main import run as run_lvsd

    state, mem = tmp_path / "s.json", str(tmp_path / "mem.json")
    cfg = tmp_path / "lvsd.toml"
    cfg.write_text(HEAD.format(state=state) + SERVICES)
    b = MemoryBackend(mem)

    async def first() -> None:
        d = daemon(cfg, b)
        await finish(d, await started(d))

    run(first())
    b.close()
    cfg.write_text(HEAD.format(state=state) + '[api]\nsocket = "%s"\n' % (tmp_path / "sock"))
    assert run_lvsd(str(cfg), "memory", mem, None) == EX_CONFIG
    assert set(MemoryBackend(mem).dump()) == {WEB, DNS}
