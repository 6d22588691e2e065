"""File check: each mode's verdicts (file appears, disappears, content changes, garbage, a
directory, a FIFO, permission denied, too large), inotify-driven re-reads (no read without an
event), the poll fallback, and the config keys."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from lvsd.checks import file as filecheck
from lvsd.checks.file import FileCheck, judge
from lvsd.config import ConfigError, parse_config


def check(path: Path, mode: str = "presence") -> FileCheck:
    return FileCheck(path=str(path), mode=mode)


def test_presence_mode_file_present_is_down_absent_is_up(tmp_path: Path) -> None:
    f = tmp_path / "web1"
    ok, detail, w = judge(check(f))
    assert ok is True and "absent" in detail and w is None
    f.write_text("")
    ok, detail, _ = judge(check(f))
    assert ok is False and "present" in detail
    f.unlink()
    assert judge(check(f))[0] is True


def test_presence_mode_counts_a_directory_or_fifo_as_present(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    os.mkfifo(tmp_path / "p")
    assert judge(check(tmp_path / "d"))[0] is False
    assert judge(check(tmp_path / "p"))[0] is False


def test_weight_mode_content_is_the_weight(tmp_path: Path) -> None:
    f = tmp_path / "w"
    assert judge(check(f, "weight")) == (True, f"file {f}: absent", None)  # no override
    f.write_text("17\n")
    assert judge(check(f, "weight")) == (True, f"file {f}: weight 17", 17)
    f.write_text("0")
    ok, detail, w = judge(check(f, "weight"))
    assert ok is False and "weight 0" in detail and w is None
    f.write_text("-3")
    assert judge(check(f, "weight"))[0] is False
    f.write_text("  \n")
    assert judge(check(f, "weight")) == (True, f"file {f}: empty", None)
    f.write_text("99999999999")
    assert judge(check(f, "weight"))[0] is False


def test_status_mode_zero_is_up_anything_else_down(tmp_path: Path) -> None:
    f = tmp_path / "s"
    assert judge(check(f, "status"))[0] is True
    f.write_text("0\n")
    assert judge(check(f, "status"))[:2] == (True, f"file {f}: status 0")
    f.write_text("1\n")
    assert judge(check(f, "status"))[0] is False


@pytest.mark.parametrize("mode", ["status", "weight"])
def test_bad_content_is_down_with_a_reason(tmp_path: Path, mode: str) -> None:
    f = tmp_path / "g"
    f.write_bytes(b"\xff\xfegarbage")
    ok, detail, _ = judge(check(f, mode))
    assert ok is False and "not an integer" in detail
    f.write_bytes(b"1" * 5000)
    ok, detail, _ = judge(check(f, mode))
    assert ok is False and "larger than 4096 bytes" in detail


@pytest.mark.parametrize("mode", ["status", "weight"])
def test_directory_and_fifo_are_refused_without_blocking(tmp_path: Path, mode: str) -> None:
    (tmp_path / "d").mkdir()
    ok, detail, _ = judge(check(tmp_path / "d", mode))
    assert ok is False and "directory" in detail
    os.mkfifo(tmp_path / "p")  # no writer: a blocking open would hang here
    ok, detail, _ = judge(check(tmp_path / "p", mode))
    assert ok is False and "not a regular file" in detail


def _judge_as_nobody(cfg: FileCheck) -> tuple[bool, str, int | None]:
    """judge() in a forked child that dropped root (root reads any file), else here."""
    if os.geteuid() != 0:
        return judge(cfg)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no exec, so the interpreter needs no access to anything
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.write(w, repr(judge(cfg)).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return eval(out)  # noqa: S307 - our own child's repr of a tuple of bool, str, None


def test_permission_denied_is_down_with_the_reason(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    f = tmp_path / "secret"
    f.write_text("5")
    f.chmod(0)
    ok, detail, _ = _judge_as_nobody(check(f, "weight"))
    assert (ok, detail) == (False, f"file {f}: permission denied")


def test_an_open_error_is_down_with_its_reason(tmp_path: Path) -> None:
    """A symlink loop (ELOOP, which root gets too): the errno's text, no exception."""
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    ok, detail, _ = judge(check(tmp_path / "loop", "weight"))
    assert ok is False and "symbolic links" in detail


class Probe:
    """A checker driven by hand on a running loop, counting file reads."""

    def __init__(self, cfg: FileCheck, loop: asyncio.AbstractEventLoop) -> None:
        self.results: list[tuple[Any, ...]] = []
        self.checker = cfg.checker("192.0.2.1", 80, loop, lambda *a: self.results.append(a))

    def probe(self) -> tuple[Any, ...]:
        self.checker.start()
        return self.results[-1]


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0.01)


def test_changes_are_seen_through_inotify_and_nothing_is_read_without_an_event(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []
    real = filecheck.judge

    def counting(cfg: FileCheck) -> tuple[bool, str, int | None]:
        reads.append(cfg.path)
        return real(cfg)

    monkeypatch.setattr(filecheck, "judge", counting)
    f = tmp_path / "web1"

    async def scenario() -> None:
        p = Probe(check(f, "weight"), asyncio.get_running_loop())
        assert p.checker.watch is not None  # inotify is in use
        assert p.probe()[0] is True and len(reads) == 1
        for _ in range(5):
            p.probe()
        assert len(reads) == 1  # answered from the last read
        f.write_text("0")
        await settle()
        assert p.probe()[0] is False and len(reads) == 2
        tmp = tmp_path / ".web1.tmp"
        tmp.write_text("42")
        os.replace(tmp, f)  # an atomic rename, as configuration management writes
        await settle()
        assert p.probe() == (True, f"file {f}: weight 42", 42)
        f.unlink()
        await settle()
        assert p.probe()[:2] == (True, f"file {f}: absent")
        p.checker.close()
        assert filecheck.watcher_for(asyncio.get_running_loop()).dirs == {}

    asyncio.run(scenario())


def test_a_missing_directory_falls_back_to_reading_at_every_probe(tmp_path: Path) -> None:
    d = tmp_path / "later"
    f = d / "web1"

    async def scenario() -> None:
        p = Probe(check(f), asyncio.get_running_loop())
        assert p.checker.watch is None  # nothing to watch yet: poll
        assert p.probe()[0] is True
        d.mkdir()
        f.write_text("")
        assert p.probe()[0] is False  # seen at the next probe without any event
        p.checker.close()

    asyncio.run(scenario())


def test_config_keys_and_errors() -> None:
    cfg = parse_config(
        '[[service]]\nvip = "192.0.2.1:80"\n[[service.server]]\naddress = "192.0.2.2"\n'
        'check = { type = "file", path = "/run/maint/web1", mode = "status" }\n', "t.toml")
    ck = cfg.services[0].servers[0].checks[0]
    assert isinstance(ck, FileCheck) and ck.path == "/run/maint/web1" and ck.mode == "status"
    with pytest.raises(ConfigError) as e:
        parse_config(
            '[[service]]\nvip = "192.0.2.1:80"\n[[service.server]]\naddress = "192.0.2.2"\n'
            'check = [{ type = "file", path = "maint/web1" }, { type = "file", path = "/x", mode = "size" }, '
            '{ type = "file" }]\n', "t.toml")
    errs = "\n".join(e.value.errors)
    assert "check[0].path: must be an absolute file path" in errs
    assert "check[1].mode" in errs and "check[2].path: missing" in errs


def test_a_watched_directory_that_goes_away_falls_back_to_reading(tmp_path: Path) -> None:
    d = tmp_path / "maint"
    d.mkdir()
    f = d / "web1"

    async def scenario() -> None:
        p = Probe(check(f), asyncio.get_running_loop())
        assert p.checker.watch is not None and p.probe()[0] is True
        d.rmdir()
        await settle()
        assert p.checker.watch is None  # the watch went with the directory: poll from now on
        d.mkdir()
        f.write_text("")
        assert p.probe()[0] is False  # seen without any event
        p.checker.close()

    asyncio.run(scenario())
